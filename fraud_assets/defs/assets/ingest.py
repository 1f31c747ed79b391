"""Per-file assets: the landed file parsed (raw_messages) and validated (validated_messages)."""

import dagster as dg

from fraud_assets.asset_names import RAW_MESSAGES, VALIDATED_MESSAGES
from fraud_assets.defs.partitions import file_check, message_files
from fraud_assets.defs.resources import FraudSettings
from fraud_assets.landing import archived_file
from fraud_assets.metadata import label_balance, preview_markdown, table_metadata
from fraud_assets.readers import file_quarantine, read_messages
from fraud_assets.validation import validate_messages

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
    with storage.local_copy(path) as local:  # the readers need a local file; the archive may be in a bucket
        parsed = read_messages(local, fraud.load_ingest_config(), timezone=fraud.timezone, source_file=original_name)
        quarantine = file_quarantine(original_name, parsed.error, local) if parsed.error else parsed.quarantine
    storage.write_parquet(quarantine, storage.quarantine_path(RAW_MESSAGES, key))
    storage.write_parquet(parsed.rows, storage.asset_path(RAW_MESSAGES, key))
    if parsed.error:
        context.log.error(f"{original_name}: quarantined whole file: {parsed.error}")
    return dg.MaterializeResult(
        metadata={
            **table_metadata(parsed.rows, storage.asset_path(RAW_MESSAGES, key), partitioned=True),
            "source_file": original_name,
            "format": parsed.file_format or "unknown",
            "encoding": parsed.encoding or "n/a",
            "rows_read": parsed.rows_read,
            "parsed": parsed.rows.height,
            "quarantined": parsed.quarantine.height,
            "status": "quarantined" if parsed.error else "ok",
            "quarantine_reasons": dg.MetadataValue.md(preview_markdown(quarantine, ["source_row", "reason", "raw"])),
            "preview": dg.MetadataValue.md(preview_markdown(parsed.rows, ["source_row", "label_raw", "sent_at", "text"])),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=FILE_READABLE.name,
                passed=parsed.error is None,
                metadata={"reason": parsed.error or "readable", "notes": "; ".join(parsed.notes) or "none"},
            )
        ],
    )


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
    raw = storage.read_parquet(storage.asset_path(RAW_MESSAGES, key))
    raw_quarantined = storage.height(storage.quarantine_path(RAW_MESSAGES, key))
    result = validate_messages(raw, fraud.load_ingest_config())
    storage.write_parquet(result.quarantine, storage.quarantine_path(VALIDATED_MESSAGES, key))
    storage.write_parquet(result.accepted, storage.asset_path(VALIDATED_MESSAGES, key))

    rows_read = raw.height + raw_quarantined
    quarantined = raw_quarantined + result.quarantine.height
    share = quarantined / rows_read if rows_read else 0.0
    failed = {f"{e['expectation']}({e['column']})": e["unexpected_count"] for e in result.expectations if not e["success"]}
    return dg.MaterializeResult(
        metadata={
            **table_metadata(result.accepted, storage.asset_path(VALIDATED_MESSAGES, key), partitioned=True),
            "rows_read": rows_read,
            "accepted": result.accepted.height,
            "quarantined": quarantined,
            "duplicates": result.duplicates,
            "conflicting_labels": result.conflicting,
            **label_balance(result.accepted),
            "preview": dg.MetadataValue.md(preview_markdown(result.accepted, ["message_id", "label", "sent_at", "text"])),
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
                    "quarantined": quarantined,
                    "rows_read": rows_read,
                },
                description=f"{share:.1%} of rows rejected (limit {fraud.max_rejected_share:.0%})",
            ),
        ],
    )
