"""Read one input file into the canonical message schema.

Every record of a file ends up in exactly one place: a canonical row, or a
quarantine row that says why. A file that cannot be read at all is reported
with a reason instead of raising, so one bad file never stops the others.

Formats: CSV, TSV (delimiter sniffed from the header), JSON Lines / JSON
arrays, Parquet. Encodings: UTF-8, UTF-8 with BOM, UTF-16 with BOM and
GB18030/GBK, detected automatically.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

DEFAULT_CONFIG_PATH = Path(__file__).with_name("ingest_config.toml")

RAW_SCHEMA: dict[str, pl.DataType] = {
    "message_id": pl.Utf8,
    "text": pl.Utf8,
    "label": pl.Int8,
    "label_raw": pl.Utf8,
    "sent_at": pl.Datetime("us", "UTC"),
    "fraud_type": pl.Utf8,
    "source_file": pl.Utf8,
    "source_row": pl.Int64,
    "raw": pl.Utf8,
}
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.Utf8,
    "source_row": pl.Int64,
    "stage": pl.Utf8,
    "reason": pl.Utf8,
    "raw": pl.Utf8,
}
TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | PARQUET_SUFFIXES
_RAW_PREVIEW_CHARS = 2000
# Undecodable bytes survive decoding as lone surrogates (errors="surrogateescape").
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


class UnreadableFile(Exception):
    """The whole file cannot be read; the message is the quarantine reason."""


@dataclass(frozen=True)
class IngestConfig:
    """Column aliases, label vocabulary and limits (see ``ingest_config.toml``)."""

    columns: dict[str, list[str]]
    normal_labels: frozenset[str]
    fraud_labels: frozenset[str]
    other_values_are_fraud_categories: bool = False
    max_text_chars: int = 200_000
    future_tolerance_hours: float = 24.0
    min_year: int = 2000

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> "IngestConfig":
        """Read a TOML config (the bundled default when ``path`` is None)."""
        path = Path(path) if path else DEFAULT_CONFIG_PATH
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read ingest config {path}: {exc}") from exc
        labels, limits = data.get("labels", {}), data.get("limits", {})
        values: dict[str, Any] = dict(
            columns={k: [str(a) for a in v] for k, v in data.get("columns", {}).items()},
            normal_labels=frozenset(_label_key(v) for v in labels.get("normal", [])),
            fraud_labels=frozenset(_label_key(v) for v in labels.get("fraud", [])),
            other_values_are_fraud_categories=bool(labels.get("other_values_are_fraud_categories", False)),
            max_text_chars=int(limits.get("max_text_chars", 200_000)),
            future_tolerance_hours=float(limits.get("future_tolerance_hours", 24)),
            min_year=int(limits.get("min_year", 2000)),
        )
        values.update(overrides)
        if "text" not in values["columns"] or "label" not in values["columns"]:
            raise ValueError(f"ingest config {path} must list aliases for 'text' and 'label'")
        return cls(**values)

    def map_label(self, value: Any) -> tuple[int | None, str | None]:
        """Return (label, fraud_type from the label) for a raw label value."""
        key = _label_key(value)
        if not key:
            return None, None
        if key in self.normal_labels:
            return 0, None
        if key in self.fraud_labels:
            return 1, None
        if self.other_values_are_fraud_categories:
            return 1, str(value).strip()
        return None, None


@dataclass
class ParsedFile:
    """Result of reading one file: canonical rows plus quarantined records."""

    source_file: str
    rows: pl.DataFrame
    quarantine: pl.DataFrame
    encoding: str | None = None
    file_format: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return self.rows.height + self.quarantine.height


def _label_key(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip().lower()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


# ---------------------------------------------------------------------------
# decoding


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode file bytes, returning (text, encoding name).

    UTF-8 is tried first, then GB18030 (a superset of GBK/GB2312). A file that
    is valid UTF-8 but for a few bytes (at most 2% of its non-ASCII bytes)
    stays UTF-8. Otherwise, when neither decodes cleanly, the encoding with
    fewer undecodable bytes wins. Undecodable bytes are kept as surrogate
    escapes, so the affected records can be quarantined one by one instead of
    losing the whole file.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="surrogateescape"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise UnreadableFile(f"invalid UTF-16: {exc}") from exc
    if b"\x00" in data[:65536]:
        raise UnreadableFile("binary content (NUL bytes), not a text file")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # GB18030 accepts most byte sequences, so a UTF-8 export with a few bad bytes would
    # decode "cleanly" into mojibake: a file that is overwhelmingly valid UTF-8 stays UTF-8.
    utf8 = data.decode("utf-8", errors="surrogateescape")
    bad_utf8 = _count_undecodable(utf8)
    if bad_utf8 <= 0.02 * sum(1 for b in data if b >= 0x80):
        return utf8, "utf-8"
    try:
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        gb = data.decode("gb18030", errors="surrogateescape")
    bad, text, encoding = min((bad_utf8, utf8, "utf-8"), (_count_undecodable(gb), gb, "gb18030"), key=lambda t: t[0])
    if bad > max(16, len(data) // 20):
        raise UnreadableFile(f"not text in UTF-8 or GB18030 ({bad} undecodable bytes)")
    return text, encoding


def _count_undecodable(text: str) -> int:
    return len(_UNDECODABLE.findall(text))


def _has_undecodable(value: str) -> bool:
    return _UNDECODABLE.search(value) is not None


def _printable(value: str) -> str:
    """Make surrogate-escaped text safe to store (undecodable bytes shown as \\xNN)."""
    return value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")


def _control_share(text: str) -> float:
    sample = text[:65536]
    if not sample:
        return 0.0
    bad = len(_CONTROL.findall(sample)) + _count_undecodable(sample)
    return bad / len(sample)


# ---------------------------------------------------------------------------
# records


class _Lines:
    """A line iterator whose position can be rewound when a record is malformed."""

    def __init__(self, lines: list[str]):
        self.lines, self.pos = lines, 0

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1]


def _iter_delimited(text: str, suffix: str) -> tuple[list[str], list[tuple[int, list[str] | None, str, str | None]]]:
    """Split delimited text into (header, [(index, fields, raw_text, error)]).

    Quoted fields may hold delimiters, quotes and newlines. A malformed record
    is first re-read leniently (stray quotes are common in real exports); if
    that does not give the header's field count, only its first line is
    quarantined and reading resumes on the next line, so one unbalanced quote
    cannot swallow the rest of the file.
    """
    lines = io.StringIO(text, newline="").readlines()
    first = next((line for line in lines if line.strip()), "")
    if suffix == ".tsv":
        delimiter = "\t"
    else:
        counts = {d: first.count(d) for d in (",", "\t", ";", "|")}
        delimiter = max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","
    csv.field_size_limit(sys.maxsize)
    source = _Lines(lines)
    reader = csv.reader(source, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    records: list[tuple[int, list[str] | None, str, str | None]] = []
    while True:
        start = source.pos
        try:
            fields: list[str] | None = next(reader)
            error = None
        except StopIteration:
            break
        except csv.Error as exc:
            fields, error = None, f"malformed record: {exc}"
        end = max(source.pos, start + 1)
        raw = "".join(lines[start:end])
        if fields is not None and not any(f.strip() for f in fields) and len(fields) <= 1:
            continue  # blank line: not a record
        if header is None:
            if fields is None:
                raise UnreadableFile(f"cannot parse header: {error}")
            header = fields
            continue
        if fields is not None and len(fields) != len(header):
            error = f"expected {len(header)} fields, found {len(fields)}"
            fields = None
        if fields is None:
            lenient = list(csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter))
            if len(lenient) == 1 and len(lenient[0]) == len(header):
                fields, error = lenient[0], None
            elif end - start > 1:
                raw = lines[start]
                source.pos = start + 1
                reader = csv.reader(source, delimiter=delimiter, strict=True)
        records.append((len(records), fields, raw, error))
    if header is None:
        raise UnreadableFile("no header row (file has no records)")
    return header, records


def _iter_json(text: str) -> tuple[list[str], list[tuple[int, dict | None, str, str | None]]]:
    stripped = text.lstrip()
    out: list[tuple[int, dict | None, str, str | None]] = []
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise UnreadableFile(f"invalid JSON array: {exc}") from exc
        raws = [(item, json.dumps(item, ensure_ascii=False)) for item in items]
    else:
        raws = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                raws.append((json.loads(line), line))
            except json.JSONDecodeError as exc:
                raws.append((exc, line))
    keys: list[str] = []
    for index, (item, raw) in enumerate(raws):
        if isinstance(item, json.JSONDecodeError):
            out.append((index, None, raw, f"malformed JSON: {item.msg} at column {item.colno}"))
        elif not isinstance(item, dict):
            out.append((index, None, raw, f"expected a JSON object, found {type(item).__name__}"))
        else:
            keys.extend(k for k in item if k not in keys)
            out.append((index, item, raw, None))
    return keys, out


def _find_column(header: list[str], aliases: list[str]) -> str | None:
    cleaned = {str(h).strip().lstrip("\ufeff").lower(): h for h in header}
    for alias in aliases:
        if alias.lower() in cleaned:
            return cleaned[alias.lower()]
    return None


# ---------------------------------------------------------------------------
# timestamps


def parse_timestamp(value: Any, zone: ZoneInfo) -> dt.datetime | None:
    """Parse ISO 8601 or epoch seconds/milliseconds to an aware UTC datetime.

    Naive values are read in ``zone``. Returns None for empty values and raises
    ValueError for values that cannot be parsed.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None:
            if not math.isfinite(number):
                raise ValueError(f"not a finite epoch: {text!r}")
            magnitude = abs(number)
            seconds = number / 1e6 if magnitude >= 1e14 else number / 1e3 if magnitude >= 1e11 else number
            return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
        candidate = text.replace("/", "-")
        try:
            stamp = dt.datetime.fromisoformat(candidate)
        except ValueError:
            raise ValueError(f"cannot parse {text!r} as ISO 8601 or epoch seconds/milliseconds") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=zone)
    return stamp.astimezone(dt.timezone.utc)


# ---------------------------------------------------------------------------
# public entry point


def stable_message_id(source_file: str, index: int) -> str:
    return hashlib.blake2b(f"{source_file}\x00{index}".encode(), digest_size=8).hexdigest()


def read_messages(
    path: str | Path,
    config: IngestConfig,
    *,
    timezone: str = "Asia/Shanghai",
    source_file: str | None = None,
    require_label: bool = True,
) -> ParsedFile:
    """Parse one file into canonical rows (``RAW_SCHEMA``) and quarantine rows.

    Row-level problems (wrong field count, malformed JSON line, undecodable
    bytes, unparseable timestamp) quarantine that record with a reason; label
    and text checks are left to validation so they appear in the
    Great Expectations results. File-level problems are returned in
    ``error`` with empty frames.
    """
    path = Path(path)
    source = source_file or path.name
    try:
        return _read(path, config, ZoneInfo(timezone), source, require_label)
    except UnreadableFile as exc:
        return ParsedFile(source, empty_raw(), empty_quarantine(), error=str(exc))
    except OSError as exc:
        return ParsedFile(source, empty_raw(), empty_quarantine(), error=f"cannot open file: {exc}")


def _read(path: Path, config: IngestConfig, zone: ZoneInfo, source: str, require_label: bool) -> ParsedFile:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnreadableFile(f"unsupported file type {suffix or '(none)'}; expected one of {sorted(SUPPORTED_SUFFIXES)}")
    data = path.read_bytes()
    if not data.strip():
        raise UnreadableFile("empty file (0 bytes)" if not data else "empty file (only whitespace)")
    encoding: str | None = None
    if suffix in PARQUET_SUFFIXES:
        header, records, file_format = _read_parquet(path)
    else:
        text, encoding = decode_bytes(data)
        if _control_share(text) > 0.05:
            raise UnreadableFile("binary content (control characters), not a text file")
        if suffix in {".jsonl", ".ndjson", ".json"} or text.lstrip().startswith(("{", "[")):
            header, records = _iter_json(text)
            file_format = "jsonl"
        else:
            header, records = _iter_delimited(text, suffix)
            file_format = "tsv" if suffix == ".tsv" else "csv"
    columns = {name: _find_column(header, aliases) for name, aliases in config.columns.items()}
    if columns.get("text") is None:
        raise UnreadableFile(f"no text column: header {header[:20]} has none of {config.columns['text']}")
    if require_label and columns.get("label") is None:
        raise UnreadableFile(f"no label column: header {header[:20]} has none of {config.columns['label']}")
    positions = {h: i for i, h in enumerate(header)}

    rows: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    for index, record, raw, error in records:
        raw_text = _printable(raw.rstrip("\r\n"))[:_RAW_PREVIEW_CHARS]
        if error is None and record is not None:
            get = (lambda col: record.get(col)) if isinstance(record, dict) else (lambda col: record[positions[col]])
            values = {name: (get(col) if col is not None else None) for name, col in columns.items()}
            error = _row_error(values)
        if error is not None:
            quarantine.append(dict(source_file=source, source_row=index, stage="raw_messages", reason=error, raw=raw_text))
            continue
        try:
            sent_at = parse_timestamp(values.get("sent_at"), zone)
        except (ValueError, OverflowError, OSError) as exc:
            quarantine.append(dict(source_file=source, source_row=index, stage="raw_messages", reason=f"sent_at: {exc}", raw=raw_text))
            continue
        label, category = config.map_label(values.get("label"))
        fraud_type = _as_text(values.get("fraud_type")) or category
        message_id = _as_text(values.get("message_id")) or stable_message_id(source, index)
        rows.append(
            dict(
                message_id=message_id,
                text=_as_text(values.get("text"), keep_empty=True),
                label=label,
                label_raw=_as_text(values.get("label")),
                sent_at=sent_at,
                fraud_type=fraud_type if label == 1 else None,
                source_file=source,
                source_row=index,
                raw=raw_text,
            )
        )
    parsed = ParsedFile(
        source,
        pl.DataFrame(rows, schema=RAW_SCHEMA) if rows else empty_raw(),
        pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA) if quarantine else empty_quarantine(),
        encoding=encoding,
        file_format=file_format,
    )
    if not records:
        parsed.notes.append("header only: no records")
    return parsed


def _row_error(values: dict[str, Any]) -> str | None:
    for name, value in values.items():
        if isinstance(value, str) and _has_undecodable(value):
            return f"{name}: undecodable bytes (not valid UTF-8 or GB18030)"
        if isinstance(value, (dict, list)):
            return f"{name}: expected a scalar, found a JSON {type(value).__name__}"
    return None


def _as_text(value: Any, keep_empty: bool = False) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    if not keep_empty and not text.strip():
        return None
    return text if keep_empty else text.strip()


def _read_parquet(path: Path) -> tuple[list[str], list[tuple[int, dict | None, str, str | None]], str]:
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for corrupt files
        raise UnreadableFile(f"cannot read Parquet: {exc}") from exc
    records = [
        (i, row, json.dumps(row, ensure_ascii=False, default=str), None)
        for i, row in enumerate(frame.iter_rows(named=True))
    ]
    return frame.columns, records, "parquet"


def empty_raw() -> pl.DataFrame:
    return pl.DataFrame(schema=RAW_SCHEMA)


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def file_quarantine(source_file: str, reason: str, path: Path | None = None) -> pl.DataFrame:
    """One quarantine row for a file that could not be read at all (source_row is null)."""
    preview = ""
    if path is not None and path.exists():
        with path.open("rb") as handle:
            preview = _printable(handle.read(_RAW_PREVIEW_CHARS).decode("utf-8", errors="surrogateescape"))
    return pl.DataFrame(
        [dict(source_file=source_file, source_row=None, stage="file", reason=reason, raw=preview)],
        schema=QUARANTINE_SCHEMA,
    )
