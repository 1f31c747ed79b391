"""Per-file features: sentence embeddings (cached, resumable) and time features."""

import dagster as dg
import polars as pl

from fraud_assets.asset_names import MESSAGE_EMBEDDINGS, TIME_FEATURES, VALIDATED_MESSAGES
from fraud_assets.defs.partitions import file_check, message_files
from fraud_assets.defs.resources import EmbedderResource, FraudSettings
from fraud_assets.metadata import table_metadata
from fraud_assets.placement import GPU_OP_TAGS

# Above this share of [UNK] tokens the embedding model does not know the language.
UNK_WARN_SHARE = 0.10
UNK_SAMPLE = 500
VOCABULARY_COVERAGE = file_check("vocabulary_coverage", MESSAGE_EMBEDDINGS)


@dg.asset(
    partitions_def=message_files,
    group_name="features",
    deps=[VALIDATED_MESSAGES],
    kinds={"pytorch", "parquet"},
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    check_specs=[VOCABULARY_COVERAGE],
)
def message_embeddings(
    context: dg.AssetExecutionContext, fraud: FraudSettings, embedder: EmbedderResource
) -> dg.MaterializeResult:
    """One sentence-transformers vector per message, cached by (model fingerprint, text hash)."""
    from fraud_assets.embeddings import BatchEmbedder, EmbeddingCache

    storage, key = fraud.storage, context.partition_key
    validated_path, path = storage.asset_path(VALIDATED_MESSAGES, key), storage.asset_path(MESSAGE_EMBEDDINGS, key)
    model = embedder.get_embedder()
    embedding = BatchEmbedder(
        model,
        EmbeddingCache(storage.embedding_cache_dir, model.fingerprint),
        chunk_size=embedder.chunk_size,
        log=context.log.info,
    )
    schema = {"message_id": pl.Utf8, "text_hash": pl.Utf8, "embedding": pl.Array(pl.Float32, model.dimension)}
    sample: list[str] = []  # texts for the vocabulary check, from the first batch
    with storage.parquet_writer(path, schema) as write:
        for batch in storage.iter_parquet(validated_path, fraud.ingest_batch_rows, columns=["message_id", "text_hash", "text"]):
            embeddings = batch.select("message_id", "text_hash").with_columns(embedding.embed(batch)["embedding"])
            write(embeddings)
            sample = sample or batch["text"].head(UNK_SAMPLE).to_list()
            context.log.info(f"embedded {embedding.stats()['rows']:,} messages")
    stats = embedding.stats()
    unk = model.unk_share(sample) if sample else 0.0
    return dg.MaterializeResult(
        metadata={
            **table_metadata(pl.DataFrame(schema=schema), path, partitioned=True, rows=stats["rows"]),
            **stats,
            "unk_share": round(unk, 4),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=VOCABULARY_COVERAGE.name,
                passed=unk <= UNK_WARN_SHARE,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"unk_share": round(unk, 4), "limit": UNK_WARN_SHARE, "model": model.model_name},
                description=(
                    f"{unk:.0%} of tokens are [UNK] for {model.model_name}: the model does not cover this "
                    "language. Set FRAUD_EMBEDDING_MODEL to one that does: the default "
                    "multilingual-e5-small-q4 (about 100 languages) or a model of that language such as "
                    "BAAI/bge-small-zh-v1.5 for Chinese; see the README."
                    if unk > UNK_WARN_SHARE
                    else f"{unk:.1%} of tokens are [UNK]"
                ),
            )
        ],
    )


@dg.asset(partitions_def=message_files, group_name="features", deps=[VALIDATED_MESSAGES], kinds={"polars", "parquet"})
def time_features(context: dg.AssetExecutionContext, fraud: FraudSettings) -> dg.MaterializeResult:
    """Hour, weekday, month, day of month, ISO week and season in the configured zone, cyclically encoded."""
    from fraud_assets.time_features import time_features as compute_time_features

    storage, key = fraud.storage, context.partition_key
    validated = storage.read_parquet(storage.asset_path(VALIDATED_MESSAGES, key))
    features = compute_time_features(validated.select("message_id", "text_hash", "sent_at"), timezone=fraud.timezone)
    storage.write_parquet(features, storage.asset_path(TIME_FEATURES, key))
    with_time = int(features["has_timestamp"].sum() or 0)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(features, storage.asset_path(TIME_FEATURES, key), partitioned=True),
            "rows": features.height,
            "with_timestamp": with_time,
            "timestamp_share": round(with_time / features.height, 4) if features.height else 0.0,
            "timezone": fraud.timezone,
        }
    )
