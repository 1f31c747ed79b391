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
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fraud_assets.readers import QUARANTINE_SCHEMA, IngestConfig, empty_quarantine
from fraud_assets.text import normalize_texts, text_hashes

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
    duplicates: int = 0  # repeats of a text already accepted: valid input, kept once
    conflicting: int = 0
    duplicate_ids: int = 0  # another text under a message_id already used

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


# What database and spreadsheet exports write for a missing text (SQL NULL, MySQL \N, pandas NaN,
# Python None, Excel #N/A): a message made of one would teach the model a word, not a message.
TEXT_PLACEHOLDER = r"(?i)^(?:null|\\n|nan|none|n/a|#n/a)$"


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
        (
            E.ExpectColumnValuesToNotMatchRegex(column="text", regex=TEXT_PLACEHOLDER),
            "text: a placeholder for a missing value (NULL, \\N, NaN, None, N/A, #N/A), not a message",
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
    """Run the suite on a raw_messages frame and split it into accepted and quarantined rows (in memory;
    :class:`BatchValidator` does the same for a file read batch by batch)."""
    with tempfile.TemporaryDirectory(prefix="fraud-assets-validate-") as work:
        validator = BatchValidator(config, Path(work), now=now)
        validator.add(raw)
        summary = validator.finish()
        accepted = pl.concat([empty_validated(), *validator.accepted_batches()])
    return ValidationResult(
        accepted, summary.quarantine, summary.expectations, summary.duplicates, summary.conflicting, summary.duplicate_ids
    )


class BatchValidator:
    """Validate one file batch by batch: the suite runs on each batch, duplicates are resolved
    across the whole file.

    Rows that pass the suite wait in Parquet parts under ``workdir``; only their keys stay in memory
    as numpy arrays (49 bytes a row: row numbers, label, 128-bit text and id hashes), so memory
    grows with the batch size, not with the file (49 MB of keys for a million rows). Call
    :meth:`add` per batch, then :meth:`finish`, then read :meth:`accepted_batches`.
    """

    def __init__(self, config: IngestConfig, workdir: Path, *, now: dt.datetime | None = None):
        self.config, self.workdir = config, Path(workdir)
        self.now = now or dt.datetime.now(dt.timezone.utc)
        self.rows = 0
        self._parts: list[Path] = []
        self._keys: list[_Keys] = []
        self._failed: list[pl.DataFrame] = []
        self._expectations: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._keep: np.ndarray | None = None  # sorted _row numbers of the accepted rows

    def add(self, raw: pl.DataFrame) -> None:
        """Normalise and hash the texts of one batch, run the suite on it, set its passing rows aside."""
        text = normalize_texts(raw["text"])
        frame = raw.with_columns(
            text.alias("text"),
            text_hashes(text),
            pl.int_range(self.rows, self.rows + pl.len(), dtype=pl.Int64).alias("_row"),
        )
        self.rows += frame.height
        if not frame.height:
            return
        detail = _reason_details(frame, self._run_suite(frame), self.config)
        failed = pl.DataFrame(
            {"_row": list(detail), "reason": list(detail.values())}, schema={"_row": pl.Int64, "reason": pl.Utf8}
        )
        self._failed.append(
            frame.join(failed, on="_row").select(
                "source_file", "source_row", pl.lit("validated_messages").alias("stage"), "reason", "raw"
            )
        )
        # sorted by _row: the keys and accepted_batches() look rows up by binary search
        passed = frame.join(failed, on="_row", how="anti").sort("_row").select("_row", *VALIDATED_SCHEMA, "raw")
        part = self.workdir / f"passed_{len(self._parts):06d}.parquet"
        passed.write_parquet(part, compression="uncompressed")  # a local scratch file, read once
        self._parts.append(part)
        self._keys.append(_Keys.of(passed))

    def _run_suite(self, frame: pl.DataFrame) -> dict[int, list[str]]:
        """Failing rows of one batch and their reasons; the per-expectation summary adds up over batches."""
        batch_definition = _batch_definition()  # creates the GX context the suite needs
        suite, messages = build_suite(self.config, self.now)
        gx_frame = frame.select(
            "_row",
            "text",
            pl.col("label").cast(pl.Float64),
            (pl.col("sent_at").dt.epoch("us").cast(pl.Float64) / 1e6).alias("sent_at_epoch"),
        ).to_pandas()
        batch = batch_definition.get_batch(batch_parameters={"dataframe": gx_frame})
        result = batch.validate(suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]})
        reasons: dict[int, list[str]] = {}
        for outcome, message in zip(result.results, messages):
            cfg = outcome.expectation_config
            failed = [int(item["_row"]) for item in outcome.result.get("unexpected_index_list") or []]
            entry = self._expectations.setdefault(
                (cfg.type, cfg.kwargs.get("column")),
                dict(expectation=cfg.type, column=cfg.kwargs.get("column"), success=True, unexpected_count=0),
            )
            entry["success"] = entry["success"] and bool(outcome.success)
            entry["unexpected_count"] += len(failed)
            for row in failed:
                reasons.setdefault(row, []).append(f"{message} [{cfg.type}]")
        return reasons

    def finish(self) -> ValidationSummary:
        """Resolve duplicates over the whole file; the quarantine of every stage of validation."""
        keys = _Keys.concat(self._keys)
        self._keys = []
        keep, duplicate_reasons, (duplicates, duplicate_ids, conflicting) = _resolve_duplicates(keys)
        fraud = int(keys.label[np.searchsorted(keys.row, keep)].sum()) if len(keep) else 0
        self._keep = keep
        dup_quarantine = (
            [
                pl.scan_parquet(part)
                .join(duplicate_reasons.lazy(), on="_row")
                .select("source_file", "source_row", pl.lit("validated_messages").alias("stage"), "reason", "raw")
                .collect()
                for part in self._parts
            ]
            if duplicate_reasons.height
            else []
        )
        quarantine = pl.concat([empty_quarantine(), *self._failed, *dup_quarantine]).sort("source_row").cast(QUARANTINE_SCHEMA)
        self._failed = []
        return ValidationSummary(
            quarantine,
            list(self._expectations.values()),
            duplicates,
            conflicting,
            duplicate_ids,
            accepted=len(keep),
            fraud=fraud,
        )

    def accepted_batches(self) -> Iterator[pl.DataFrame]:
        """The accepted rows, in file order, one frame per batch added (after :meth:`finish`)."""
        if self._keep is None:
            raise RuntimeError("call finish() before reading the accepted rows")
        for part in self._parts:
            passed = pl.read_parquet(part, columns=["_row", *VALIDATED_SCHEMA])  # not the raw line
            if passed.height:
                rows = passed["_row"].to_numpy()
                kept = self._keep[np.searchsorted(self._keep, rows[0]) : np.searchsorted(self._keep, rows[-1], side="right")]
                passed = passed.filter(pl.Series(np.isin(rows, kept)))
            yield passed.select(list(VALIDATED_SCHEMA)).cast(VALIDATED_SCHEMA)


@dataclass
class ValidationSummary:
    """What :meth:`BatchValidator.finish` knows about a file: its quarantine and counts."""

    quarantine: pl.DataFrame
    expectations: list[dict[str, Any]]
    duplicates: int
    conflicting: int
    duplicate_ids: int
    accepted: int
    fraud: int

    @property
    def suite_success(self) -> bool:
        return all(e["success"] for e in self.expectations)


@dataclass
class _Keys:
    """What duplicate resolution needs of the passing rows, in numpy arrays (49 bytes a row)."""

    row: np.ndarray  # _row, increasing
    source_row: np.ndarray
    label: np.ndarray
    text: np.ndarray  # (n, 2) uint64: the 128-bit text_hash
    message: np.ndarray  # (n, 2) uint64: two 64-bit hashes of message_id

    @classmethod
    def of(cls, passed: pl.DataFrame) -> _Keys:
        ids = passed["message_id"]
        return cls(
            passed["_row"].to_numpy(),
            passed["source_row"].to_numpy(),
            passed["label"].to_numpy().astype(np.int8),
            np.frombuffer(bytes.fromhex("".join(passed["text_hash"].to_list())), dtype=">u8").reshape(-1, 2).astype(np.uint64),
            # two differently seeded 64-bit hashes: equality within this run is all that is needed
            np.column_stack([ids.hash(seed=0).to_numpy(), ids.hash(seed=1).to_numpy()]),
        )

    @classmethod
    def concat(cls, parts: list[_Keys]) -> _Keys:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty, empty.astype(np.int8), np.zeros((0, 2), np.uint64), np.zeros((0, 2), np.uint64))
        return cls(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in ("row", "source_row", "label", "text", "message"))
        )


def _first_in_group(key: np.ndarray, source_row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the smallest source_row among the rows of equal ``key`` (n x 2 array); plus the sort
    order and the group starts in that order, for per-group reductions."""
    order = np.lexsort((source_row, key[:, 1], key[:, 0]))
    sorted_key = key[order]
    new = np.r_[True, (sorted_key[1:] != sorted_key[:-1]).any(axis=1)] if len(order) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new)
    first = np.empty_like(source_row)
    first[order] = source_row[order][starts][np.cumsum(new) - 1]
    return first, order, starts


def empty_validated() -> pl.DataFrame:
    return pl.DataFrame(schema=VALIDATED_SCHEMA)


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


def _resolve_duplicates(keys: _Keys) -> tuple[np.ndarray, pl.DataFrame, tuple[int, int, int]]:
    """Keep the first of exact duplicate texts and of repeated message ids; quarantine every row of a
    text seen with both labels. Returns (sorted _row numbers kept, _row -> reason, and the counts of
    duplicate texts, repeated message ids and rows with conflicting labels)."""
    first_row, order, starts = _first_in_group(keys.text, keys.source_row)
    conflict = np.zeros(len(order), dtype=bool)
    if len(order):
        labels = keys.label[order]
        mixed = np.minimum.reduceat(labels, starts) != np.maximum.reduceat(labels, starts)
        conflict[order] = np.repeat(mixed, np.diff(np.r_[starts, len(order)]))
    rest = np.flatnonzero(~conflict)
    first_id_row = np.zeros_like(keys.source_row)
    first_id_row[rest] = _first_in_group(keys.message[rest], keys.source_row[rest])[0]
    first_text = keys.source_row == first_row
    duplicate_text = ~conflict & ~first_text
    duplicate_id = ~conflict & first_text & (keys.source_row != first_id_row)
    keep = ~conflict & first_text & (keys.source_row == first_id_row)

    def reasons(mask: np.ndarray, text: str, first: np.ndarray, suffix: str = "") -> pl.DataFrame:
        return pl.DataFrame(
            {"_row": keys.row[mask], "reason": [f"{text}{f}{suffix}" for f in first[mask].tolist()]},
            schema={"_row": pl.Int64, "reason": pl.Utf8},
        )

    reason_rows = pl.concat(
        [
            reasons(conflict, "duplicate: same text appears with both labels in this file (first at source_row ", first_row, ")"),
            reasons(duplicate_text, "duplicate: same text as source_row ", first_row),
            reasons(duplicate_id, "duplicate: message_id already used at source_row ", first_id_row),
        ]
    )
    return keys.row[keep], reason_rows, (int(duplicate_text.sum()), int(duplicate_id.sum()), int(conflict.sum()))
