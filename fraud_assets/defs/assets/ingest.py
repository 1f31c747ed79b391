"""Per-file assets: the landed file parsed (raw_messages) and validated (validated_messages)."""

import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from fraud_assets.asset_names import RAW_MESSAGES, VALIDATED_MESSAGES
from fraud_assets.defs.partitions import file_check, message_files
from fraud_assets.defs.resources import FraudSettings
from fraud_assets.landing import archived_file
from fraud_assets.metadata import label_balance, preview_markdown, table_metadata
from fraud_assets.readers import QUARANTINE_SCHEMA, RAW_SCHEMA, empty_quarantine, empty_raw, file_quarantine, stream_messages
from fraud_assets.validation import VALIDATED_SCHEMA, BatchValidator, empty_validated

FILE_READABLE = file_check("file_readable", RAW_MESSAGES, blocking=True)
EXPECTATION_SUITE = file_check("expectation_suite", VALIDATED_MESSAGES)
REJECTED_SHARE = file_check("rejected_share", VALIDATED_MESSAGES, blocking=True)


@dg.asset(
    partitions_def=message_files,
    group_name="ingest",
    kinds={"polars", "parquet"},
    check_specs=[FILE_READABLE],
)
def raw_messages(context: dg.AssetExecutionContext, fraud: FraudSettings) -> dg.MaterializeResult:
    """The landed file parsed into the canonical schema; unparseable records quarantined with a reason."""
    storage, key = fraud.storage, context.partition_key
    path, original_name = archived_file(storage, key)
    rows_path, quarantine_path = storage.asset_path(RAW_MESSAGES, key), storage.quarantine_path(RAW_MESSAGES, key)
    with storage.local_copy(path) as local:  # the readers need a local file; the archive may be in a bucket
        stream = stream_messages(
            local,
            fraud.load_ingest_config(),
            timezone=fraud.timezone,
            source_file=original_name,
            batch_rows=fraud.ingest_batch_rows,
        )
        with (
            storage.parquet_writer(rows_path, RAW_SCHEMA) as write_rows,
            storage.parquet_writer(quarantine_path, QUARANTINE_SCHEMA) as write_quarantine,
        ):
            head, reasons = empty_raw(), empty_quarantine()
            if stream.error:
                reasons = file_quarantine(original_name, stream.error, local)
                write_quarantine(reasons)
            for rows, quarantine in stream:
                write_rows(rows)
                write_quarantine(quarantine)
                head, reasons = _keep_head(head, rows), _keep_head(reasons, quarantine)
                context.log.info(f"{original_name}: {stream.rows_read:,} records read")
    if stream.error:
        context.log.error(f"{original_name}: quarantined whole file: {stream.error}")
    return dg.MaterializeResult(
        metadata={
            **table_metadata(head, rows_path, partitioned=True, rows=stream.parsed),
            "source_file": original_name,
            "format": stream.file_format or "unknown",
            "encoding": stream.encoding or "n/a",
            "rows_read": stream.rows_read,
            "parsed": stream.parsed,
            "quarantined": stream.quarantined,
            "status": "quarantined" if stream.error else "ok",
            "quarantine_reasons": dg.MetadataValue.md(preview_markdown(reasons, ["source_row", "reason", "raw"])),
            "preview": dg.MetadataValue.md(preview_markdown(head, ["source_row", "label_raw", "sent_at", "text"])),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=FILE_READABLE.name,
                passed=stream.error is None,
                metadata={"reason": stream.error or "readable", "notes": "; ".join(stream.notes) or "none"},
            )
        ],
    )


def _keep_head(head: pl.DataFrame, batch: pl.DataFrame, rows: int = 10) -> pl.DataFrame:
    """The first ``rows`` rows of a file read in batches, for the preview."""
    return head if head.height >= rows else pl.concat([head, batch.head(rows - head.height)])


@dg.asset(
    partitions_def=message_files,
    group_name="ingest",
    deps=[raw_messages],
    kinds={"great_expectations", "parquet"},
    check_specs=[EXPECTATION_SUITE, REJECTED_SHARE],
)
def validated_messages(context: dg.AssetExecutionContext, fraud: FraudSettings) -> dg.MaterializeResult:
    """Rows that pass the Great Expectations suite, text normalised and hashed, duplicates resolved."""
    storage, key = fraud.storage, context.partition_key
    raw_path, accepted_path = storage.asset_path(RAW_MESSAGES, key), storage.asset_path(VALIDATED_MESSAGES, key)
    raw_rows, raw_quarantined = storage.height(raw_path), storage.height(storage.quarantine_path(RAW_MESSAGES, key))
    with tempfile.TemporaryDirectory(prefix="fraud-assets-validate-") as work:
        validator = BatchValidator(fraud.load_ingest_config(), Path(work))
        for batch in storage.iter_parquet(raw_path, fraud.ingest_batch_rows):
            validator.add(batch)
            context.log.info(f"validated {validator.rows:,} of {raw_rows:,} rows")
        result = validator.finish()
        storage.write_parquet(result.quarantine, storage.quarantine_path(VALIDATED_MESSAGES, key))
        head = empty_validated()
        with storage.parquet_writer(accepted_path, VALIDATED_SCHEMA) as write:
            for accepted in validator.accepted_batches():
                write(accepted)
                head = _keep_head(head, accepted)

    rows_read = raw_rows + raw_quarantined
    quarantined = raw_quarantined + result.quarantine.height
    # a repeated text is valid input (a scam template sent to many people), kept once, not a rejection
    rejected = quarantined - result.duplicates
    share = rejected / rows_read if rows_read else 0.0
    failed = {f"{e['expectation']}({e['column']})": e["unexpected_count"] for e in result.expectations if not e["success"]}
    return dg.MaterializeResult(
        metadata={
            **table_metadata(head, accepted_path, partitioned=True, rows=result.accepted),
            "rows_read": rows_read,
            "accepted": result.accepted,
            "quarantined": quarantined,
            "duplicates": result.duplicates,
            "duplicate_ids": result.duplicate_ids,
            "conflicting_labels": result.conflicting,
            **label_balance(result.accepted, result.fraud),
            "preview": dg.MetadataValue.md(preview_markdown(head, ["message_id", "label", "sent_at", "text"])),
            "quarantine_reasons": dg.MetadataValue.md(preview_markdown(result.quarantine, ["source_row", "reason", "raw"])),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=EXPECTATION_SUITE.name,
                passed=result.suite_success,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"expectations": len(result.expectations), "failed": dg.MetadataValue.json(failed)},
            ),
            dg.AssetCheckResult(
                check_name=REJECTED_SHARE.name,
                passed=share <= fraud.max_rejected_share,
                metadata={
                    "rejected_share": round(share, 4),
                    "limit": fraud.max_rejected_share,
                    "rejected": rejected,
                    "duplicates_not_counted": result.duplicates,
                    "rows_read": rows_read,
                },
                description=f"{share:.1%} of rows rejected (limit {fraud.max_rejected_share:.0%}); "
                f"{result.duplicates:,} repeated texts kept once, not counted",
            ),
        ],
    )
