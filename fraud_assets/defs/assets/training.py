"""Training assets: dataset, classifier, evaluation report and the promoted production model."""


import base64
import datetime as dt
import json

import dagster as dg
import polars as pl

from fraud_assets.defs.partitions import message_files
from fraud_assets.defs.resources import EmbedderResource, FraudSettings
from fraud_assets.promotion import compare_with_champion, promote
from fraud_assets.training_data import ingested_partitions, load_partitions, partitions_fingerprint


class ClassifierConfig(dg.Config):
    """Feature groups and the main training knobs (see fraud_assets.model.TrainConfig)."""

    use_embedding: bool = True
    use_time: bool = True
    use_ngrams: bool = True
    use_text_stats: bool = True
    max_epochs: int = 40
    patience: int = 5
    seed: int = 0


class EvaluationConfig(dg.Config):
    """How the decision threshold is chosen on validation (max_f1, precision or recall with target),
    and on how many splits to evaluate: ``repeats`` > 1 re-splits the data with the next seeds, retrains
    the same configuration on each and reports mean ± sd (the candidate itself is the first split)."""

    threshold_strategy: str = "max_f1"
    target: float | None = None
    repeats: int = 1


class PromotionConfig(dg.Config):
    """The challenger may be this much worse in test F1 than the champion and still be promoted."""

    tolerance: float = 0.0


@dg.asset(group_name="training", deps=["message_embeddings", "time_features", "validated_messages"], kinds={"polars"})
def training_dataset(context: dg.AssetExecutionContext, fraud: FraudSettings) -> dg.MaterializeResult:
    """All ingested partitions joined, de-duplicated across files and split train/validation/test."""
    from fraud_assets.dataset import build_training_dataset

    storage = fraud.storage
    keys = ingested_partitions(storage, context.instance.get_dynamic_partitions(message_files.name))
    if not keys:
        raise dg.Failure("no ingested partitions: drop files into the landing folder and run ingest first")
    dataset, summary = build_training_dataset(*load_partitions(storage, keys), seed=fraud.seed)
    storage.write_parquet(dataset, storage.asset_path("training_dataset"))
    storage.write_json({"partitions": keys, "summary": summary}, storage.asset_path("training_dataset").with_suffix(".json"))
    return dg.MaterializeResult(
        metadata={
            "rows": dataset.height,
            "partitions": len(keys),
            "partitions_fingerprint": partitions_fingerprint(keys),
            "summary": dg.MetadataValue.json(summary),
        }
    )


@dg.asset(group_name="training", deps=[training_dataset], kinds={"pytorch"}, pool="gpu")
def fraud_classifier(
    context: dg.AssetExecutionContext, config: ClassifierConfig, fraud: FraudSettings, embedder: EmbedderResource
) -> dg.MaterializeResult:
    """The torch classifier (embedding + time + n-gram + text statistics), with TensorBoard logs."""
    from fraud_assets.model import TrainConfig, train_classifier
    from fraud_assets.registry import save_model

    storage = fraud.storage
    dataset = pl.read_parquet(storage.asset_path("training_dataset"))
    lineage = json.loads(storage.asset_path("training_dataset").with_suffix(".json").read_text())
    run_name = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{context.run.run_id[:8]}"
    train_config = TrainConfig(**config.model_dump())
    model = train_classifier(dataset, train_config, tensorboard_dir=storage.tensorboard_dir / run_name, log=context.log.info)
    embedding = embedder.get_embedder()
    card = {
        "run_name": run_name,
        "embedding_model": embedding.model_name,
        "embedding_fingerprint": embedding.fingerprint,
        "embedding_settings": {"max_seq_length": embedder.max_seq_length, "normalize": embedder.normalize},
        "partitions": lineage["partitions"],
        "dataset_summary": lineage["summary"],
        "history": model.history,
        "best_epoch": model.best_epoch,
        "selection": model.selection,
    }
    folder = save_model(model, storage.models_dir / "candidates" / run_name, card)
    storage.write_json({"run_name": run_name, "path": str(folder)}, storage.models_dir / "latest_candidate.json")
    best = model.history[model.best_epoch - 1] if model.history else {}
    return dg.MaterializeResult(
        metadata={
            "run_name": run_name,
            "partitions_fingerprint": partitions_fingerprint(lineage["partitions"]),
            "epochs": len(model.history),
            "best_epoch": model.best_epoch,
            "val_f1": float(best.get("val_f1", float("nan"))),
            "blend": model.selection.get("blend", {}).get("chosen", "n/a"),
            "model_path": dg.MetadataValue.path(str(folder)),
            "tensorboard": dg.MetadataValue.path(str(storage.tensorboard_dir / run_name)),
        }
    )


@dg.asset(group_name="training", deps=[fraud_classifier], kinds={"scikitlearn"})
def evaluation_report(context: dg.AssetExecutionContext, config: EvaluationConfig, fraud: FraudSettings) -> dg.MaterializeResult:
    """Test metrics at a validation-chosen threshold, baselines on the same split, plots and report."""
    from fraud_assets.evaluation import evaluate, with_repeats, write_report
    from fraud_assets.registry import load_model

    storage = fraud.storage
    dataset = pl.read_parquet(storage.asset_path("training_dataset"))
    candidate_dir = json.loads((storage.models_dir / "latest_candidate.json").read_text())["path"]
    model, card = load_model(candidate_dir)
    val, test = (dataset.filter(pl.col("split") == s) for s in ("validation", "test"))
    result = evaluate(
        dataset,
        model.predict_proba(val),
        model.predict_proba(test),
        history=card.get("history"),
        strategy=config.threshold_strategy,
        target=config.target,
        raw_val_proba=model.predict_proba(val, calibrated=False),
        raw_test_proba=model.predict_proba(test, calibrated=False),
    )
    if config.repeats > 1:
        result = with_repeats(result, _repeated(dataset, result, seed=fraud.seed, model=model, config=config, log=context.log.info))
    for folder in (storage.reports_dir / card["run_name"], storage.reports_dir / "latest"):
        write_report(result, folder, storage)
    card.update(threshold=result.metrics["model"]["threshold"], metrics=result.metrics)
    storage.write_json(card, f"{candidate_dir}/model_card.json")
    model_metrics, baselines = result.metrics["model"], result.metrics["baselines"]
    images = "\n\n".join(
        f"**{name}**\n\n![{name}](data:image/png;base64,{base64.b64encode(png).decode()})" for name, png in result.plots.items()
    )
    return dg.MaterializeResult(
        metadata={
            **{k: model_metrics[k] for k in ("f1", "precision", "recall", "pr_auc", "roc_auc", "threshold")},
            "tfidf_logreg_f1": baselines["tfidf_logreg"]["f1"],
            "embedding_logreg_f1": baselines["embedding_logreg"]["f1"],
            "report": dg.MetadataValue.md(result.report_md),
            "plots": dg.MetadataValue.md(images),
            "report_path": dg.MetadataValue.path(str(storage.reports_dir / card["run_name"] / "report.md")),
        }
    )


def _repeated(dataset: pl.DataFrame, first, *, seed: int, model, config: EvaluationConfig, log) -> dict:
    """Mean ± sd over ``config.repeats`` splits: the candidate's own, plus retrains on re-splits with the next seeds."""
    from fraud_assets.repeats import repeated_evaluation, scores_of, summarise

    seeds = [seed + i for i in range(1, config.repeats)]
    runs = repeated_evaluation(dataset, model.config, seeds, strategy=config.threshold_strategy, target=config.target, log=log)
    return summarise([{"seed": seed, "scores": scores_of(first.metrics)}, *runs])


@dg.asset(
    group_name="training",
    deps=[evaluation_report],
    output_required=False,
    check_specs=[dg.AssetCheckSpec("not_worse_than_champion", asset="production_model", blocking=True)],
)
def production_model(context: dg.AssetExecutionContext, config: PromotionConfig, fraud: FraudSettings):
    """The promoted model. Promotion is refused when the challenger is worse than the champion
    re-scored on the same test split; then the champion stays and the check says why."""
    storage = fraud.storage
    dataset = pl.read_parquet(storage.asset_path("training_dataset"))
    candidate_dir = json.loads((storage.models_dir / "latest_candidate.json").read_text())["path"]
    decision = compare_with_champion(candidate_dir, storage.production_model_dir, dataset, tolerance=config.tolerance)
    yield dg.AssetCheckResult(
        check_name="not_worse_than_champion",
        passed=decision.promote,
        description=decision.reason,
        metadata=decision.metadata,
    )
    if not decision.promote:
        context.log.warning(f"promotion refused: {decision.reason}")
        return
    promote(candidate_dir, storage.production_model_dir)
    yield dg.MaterializeResult(metadata={"promoted": decision.metadata.get("challenger"), "reason": decision.reason, **decision.metadata})
