"""Validate parsed messages with a Great Expectations 1.x suite, row by row.

GX is called directly (``dagster-ge`` does not support GX 1.x). The suite runs
with ``result_format="COMPLETE"`` and an index column, so every failing row is
known and quarantined with the expectation that failed. After the suite, exact
duplicate texts and same-text rows with conflicting labels are resolved and
recorded, because a duplicate is valid input but must not be trained on twice.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from fraud_assets.readers import QUARANTINE_SCHEMA, IngestConfig, empty_quarantine
from fraud_assets.text import normalize_text, text_hash

SUITE_NAME = "validated_messages"
VALIDATED_SCHEMA: dict[str, pl.DataType] = {
    "message_id": pl.Utf8,
    "text": pl.Utf8,
    "text_hash": pl.Utf8,
    "label": pl.Int8,
    "sent_at": pl.Datetime("us", "UTC"),
    "fraud_type": pl.Utf8,
    "source_file": pl.Utf8,
    "source_row": pl.Int64,
}


@dataclass
class ValidationResult:
    """Accepted rows, quarantined rows and a per-expectation summary."""

    accepted: pl.DataFrame
    quarantine: pl.DataFrame
    expectations: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    conflicting: int = 0

    @property
    def suite_success(self) -> bool:
        return all(e["success"] for e in self.expectations)


@functools.lru_cache(maxsize=1)
def _batch_definition():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # older/newer GX without this variable: progress bars are cosmetic
        pass
    asset = context.data_sources.add_pandas("messages").add_dataframe_asset("partition")
    return asset.add_batch_definition_whole_dataframe("whole_partition")


def build_suite(config: IngestConfig, now: dt.datetime):
    """The expectation suite; each entry pairs an expectation with the reason shown in quarantine."""
    import great_expectations as gx

    E = gx.expectations
    max_epoch = (now + dt.timedelta(hours=config.future_tolerance_hours)).timestamp()
    min_epoch = dt.datetime(config.min_year, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    checks = [
        (E.ExpectColumnValuesToNotBeNull(column="text"), "text: missing"),
        (
            E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1, max_value=config.max_text_chars),
            f"text: empty or longer than {config.max_text_chars} characters",
        ),
        (E.ExpectColumnValuesToNotBeNull(column="label"), "label: missing or not a known label value"),
        (E.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]), "label: not 0 or 1"),
        (
            E.ExpectColumnValuesToBeBetween(column="sent_at_epoch", min_value=min_epoch, max_value=max_epoch),
            f"sent_at: before {config.min_year} or more than {config.future_tolerance_hours:g} h in the future",
        ),
    ]
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for expectation, _ in checks:
        suite.add_expectation(expectation)
    return suite, [reason for _, reason in checks]


def validate_messages(raw: pl.DataFrame, config: IngestConfig, *, now: dt.datetime | None = None) -> ValidationResult:
    """Run the suite on a raw_messages frame and split it into accepted and quarantined rows."""
    now = now or dt.datetime.now(dt.timezone.utc)
    frame = raw.with_columns(
        pl.col("text").map_elements(normalize_text, return_dtype=pl.Utf8, skip_nulls=True).alias("text"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"),
    ).with_columns(
        pl.col("text").map_elements(text_hash, return_dtype=pl.Utf8, skip_nulls=True).alias("text_hash"),
    )
    reasons: dict[int, list[str]] = {}
    expectations: list[dict[str, Any]] = []
    if frame.height:
        batch_definition = _batch_definition()  # creates the GX context the suite needs
        suite, messages = build_suite(config, now)
        gx_frame = frame.select(
            "_row",
            "text",
            pl.col("label").cast(pl.Float64),
            (pl.col("sent_at").dt.epoch("us").cast(pl.Float64) / 1e6).alias("sent_at_epoch"),
        ).to_pandas()
        batch = batch_definition.get_batch(batch_parameters={"dataframe": gx_frame})
        result = batch.validate(suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]})
        for outcome, message in zip(result.results, messages):
            cfg = outcome.expectation_config
            failed = [int(item["_row"]) for item in outcome.result.get("unexpected_index_list") or []]
            expectations.append(
                dict(
                    expectation=cfg.type,
                    column=cfg.kwargs.get("column"),
                    success=bool(outcome.success),
                    unexpected_count=len(failed),
                )
            )
            for row in failed:
                reasons.setdefault(row, []).append(f"{message} [{cfg.type}]")
    detail = _reason_details(frame, reasons, config)
    failed_rows = pl.DataFrame(
        {"_row": list(detail), "reason": list(detail.values())}, schema={"_row": pl.Int64, "reason": pl.Utf8}
    )
    passed = frame.join(failed_rows, on="_row", how="anti")
    passed, dup_quarantine, duplicates, conflicting = _resolve_duplicates(passed)
    quarantine = (
        pl.concat(
            [
                frame.join(failed_rows, on="_row").select(
                    "source_file", "source_row", pl.lit("validated_messages").alias("stage"), "reason", "raw"
                ),
                dup_quarantine,
            ]
        )
        .sort("source_row")
        .cast(QUARANTINE_SCHEMA)
    )
    accepted = passed.sort("_row").select(list(VALIDATED_SCHEMA)).cast(VALIDATED_SCHEMA)
    return ValidationResult(
        accepted, quarantine if quarantine.height else empty_quarantine(), expectations, duplicates, conflicting
    )


def _reason_details(frame: pl.DataFrame, reasons: dict[int, list[str]], config: IngestConfig) -> dict[int, str]:
    """Add the offending raw value to label/timestamp reasons so users can fix the source."""
    out: dict[int, str] = {}
    lookup = frame.select("_row", "label_raw", "text").rows_by_key("_row", unique=True) if reasons else {}
    for row, items in reasons.items():
        label_raw, text = lookup[row]
        parts = []
        for item in items:
            if item.startswith("label: missing") and label_raw is not None and config.is_placeholder(label_raw):
                item = f"label: missing (placeholder {label_raw!r}) [{item.rsplit('[', 1)[1]}"
            elif item.startswith("label: missing") and label_raw:
                item = f"label: unknown label value {label_raw!r} [{item.rsplit('[', 1)[1]}"
            elif item.startswith("text: empty") and text:
                item = f"text: {len(text)} characters, over the limit [{item.rsplit('[', 1)[1]}"
            parts.append(item)
        out[row] = "; ".join(parts)
    return out


def _resolve_duplicates(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int, int]:
    """Keep the first of exact duplicate texts; quarantine texts seen with both labels."""
    labels = frame.group_by("text_hash").agg(
        pl.col("label").n_unique().alias("n_labels"), pl.col("source_row").min().alias("first_row")
    )
    frame = frame.join(labels, on="text_hash", how="left")
    conflicting = frame.filter(pl.col("n_labels") > 1)
    rest = frame.filter(pl.col("n_labels") == 1)
    first_of_id = rest.group_by("message_id").agg(pl.col("source_row").min().alias("first_id_row"))
    rest = rest.join(first_of_id, on="message_id", how="left")
    duplicate_text = rest.filter(pl.col("source_row") != pl.col("first_row"))
    duplicate_id = rest.filter((pl.col("source_row") == pl.col("first_row")) & (pl.col("source_row") != pl.col("first_id_row")))
    keep = rest.filter((pl.col("source_row") == pl.col("first_row")) & (pl.col("source_row") == pl.col("first_id_row")))
    quarantine = pl.concat(
        [
            conflicting.select(
                "source_file",
                "source_row",
                pl.lit("validated_messages").alias("stage"),
                (
                    pl.lit("duplicate: same text appears with both labels in this file (first at source_row ")
                    + pl.col("first_row").cast(pl.Utf8)
                    + pl.lit(")")
                ).alias("reason"),
                "raw",
            ),
            duplicate_text.select(
                "source_file",
                "source_row",
                pl.lit("validated_messages").alias("stage"),
                (pl.lit("duplicate: same text as source_row ") + pl.col("first_row").cast(pl.Utf8)).alias("reason"),
                "raw",
            ),
            duplicate_id.select(
                "source_file",
                "source_row",
                pl.lit("validated_messages").alias("stage"),
                (pl.lit("duplicate: message_id already used at source_row ") + pl.col("first_id_row").cast(pl.Utf8)).alias(
                    "reason"
                ),
                "raw",
            ),
        ]
    )
    return keep, quarantine, duplicate_text.height + duplicate_id.height, conflicting.height
