"""Read a large delimited file in batches of lines, in memory that grows with the batch, not the file.

A batch that reads cleanly (valid text, no control characters, one record
per line, every record as wide as the header) is split by the C ``csv``
module and converted to canonical rows with vectorised polars expressions.
Any other batch is read by the record-by-record reader of
:mod:`fraud_assets.delimited` on a window that starts on the same record
boundary, so the records, their ``source_row`` numbers and every quarantine
reason are exactly those of reading the whole file at once
(``tests/test_batches.py`` compares the two on every corpus).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from fraud_assets import readers
from fraud_assets.delimited import Layout, Record, body_records, detect_layout, is_blank

ShapeFor = Callable[[list[str]], tuple[Callable[[list[str]], bool], int | None]]
Batch = tuple[int, pl.DataFrame | None, list[Record] | None]

DEFAULT_BATCH_ROWS = 100_000
HEAD_LINES = 2000  # what ``detect_layout`` reads (``quotes_fields`` samples 2000 lines)
_CHUNK_BYTES = 1 << 23
# A header whose first column is bracketed (SQL Server's "[id],[text],[label]"): a text that is JSON
# never has a top-level ']' followed by a delimiter, so such a file is delimited, not JSON.
_BRACKETED_HEADER = re.compile(r'\s*\[[^\[\]{}"\r\n]*\]\s*[,\t;|]')
_LOOKAHEAD_LINES = 1000
# the ISO timestamps polars parses exactly as ``datetime.fromisoformat`` does; anything else goes to Python
_ISO = r"^(?:19[7-9]\d|2[01]\d\d)-\d\d-\d\d[ T](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?$"


def sniff_encoding(path: Path) -> str | None:
    """The encoding :func:`readers.decode_bytes` would choose for the whole file, in one streaming
    pass; None when only a whole-file read can tell (UTF-16 without a byte-order mark or not valid,
    binary content, or neither UTF-8 nor the Chinese encoding decodes cleanly), or when the file is empty."""
    with path.open("rb") as handle:
        head = handle.read(65536)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode Text": read in batches like UTF-8
        return "utf-16" if head[2:].strip(b"\x00 \t\r\n") and _decodes(path, "utf-16") else None
    if not head.strip():
        return None
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if readers.nul_reading(head) is not None:  # UTF-16 or binary: the whole-file reader decides
        return None
    if _decodes(path, "utf-8"):
        return "utf-8"
    encoding = readers.fallback_encoding(*_byte_counts(path))
    return encoding if encoding in ("utf-8", "cp1252") or _decodes(path, encoding) else None


def _byte_counts(path: Path) -> tuple[int, int, int, int, bytes]:
    """(undecodable bytes and valid multi-byte sequences when read as UTF-8, then
    :func:`readers.lone_high_bytes`, then the lines with non-ASCII bytes of
    :class:`readers.NonAsciiLines`) of a whole file in one streamed pass (a lone byte at a chunk's
    edge may count wrongly, which a share over the file does not notice)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    bad = valid = lone = high = 0
    sample = readers.NonAsciiLines()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            counts = readers.lone_high_bytes(chunk)
            lone, high = lone + counts[0], high + counts[1]
            text = decoder.decode(chunk)
            undecodable = readers._count_undecodable(text)
            bad, valid = bad + undecodable, valid + readers._non_ascii(text) - undecodable
            sample.add(chunk)
        bad += readers._count_undecodable(decoder.decode(b"", final=True))
    return bad, valid, lone, high, sample.sample()


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


class DelimitedFile:
    """A CSV/TSV file opened for batched reading: its encoding is known from a first pass and its
    layout from its head; :meth:`batches` reads the rest.

    :meth:`open` returns None when the file needs the whole-file reader (see :func:`sniff_encoding`,
    a header that does not end within the first ``HEAD_LINES`` lines, a head that is mostly control
    characters or starts like JSON).
    """

    def __init__(self, path: Path, encoding: str, layout: Layout, head: list[str], lines: io.TextIOBase):
        self.path, self.encoding, self.layout = path, encoding, layout
        self._pending: deque[str] = deque(head[layout.body_start :])
        self._lines = lines
        self.records = 0

    @classmethod
    def open(cls, path: Path, suffix: str) -> DelimitedFile | None:
        encoding = sniff_encoding(path)
        if encoding is None:
            return None
        # newline="" splits lines exactly as the whole-file reader does (\r, \n and \r\n)
        with path.open(encoding=encoding, errors="surrogateescape", newline="") as start:
            sample = start.read(65536)  # the sample the whole-file reader checks (binary content, JSON)
        json_like = sample.lstrip().startswith(("{", "[")) and not _BRACKETED_HEADER.match(sample)
        if readers._control_share(sample) > 0.05 or json_like:
            return None
        handle = path.open(encoding=encoding, errors="surrogateescape", newline="")
        head = list(itertools.islice(handle, HEAD_LINES))
        try:
            layout = detect_layout(head, suffix)
        except readers.UnreadableFile:
            if len(head) < HEAD_LINES:
                handle.close()
                raise
            layout = None
        if layout is None or (layout.body_start >= len(head) and len(head) == HEAD_LINES):
            handle.close()
            return None
        return cls(path, encoding, layout, head, handle)

    def close(self) -> None:
        """Close the file without reading it (:meth:`batches` closes it when done)."""
        self._lines.close()

    def batches(self, shape_for: ShapeFor, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Batch]:
        """Yield (first record index, clean fields or None, records or None) per batch of
        ``batch_rows`` lines: clean fields (see :func:`clean_fields`) for a clean batch, else the records as the whole-file
        reader makes them (``shape_for`` is its record predicate, see ``delimited.split_records``)."""
        with self._lines:
            yield from self._batches(shape_for, batch_rows)

    def _batches(self, shape_for: ShapeFor, batch_rows: int) -> Iterator[Batch]:
        while batch := self._take(batch_rows):
            first, clean = self.records, clean_fields(batch, self.layout)
            if clean is not None:
                self.records += clean.height
                yield first, clean, None
            else:
                records = self._careful(batch, shape_for)
                self.records += len(records)
                yield first, None, records

    def _take(self, count: int) -> list[str]:
        out = [self._pending.popleft() for _ in range(min(count, len(self._pending)))]
        out.extend(itertools.islice(self._lines, count - len(out)))
        return out

    def _careful(self, batch: list[str], shape_for: ShapeFor) -> list[Record]:
        """The records that start in ``batch``, read with enough following lines that none was cut
        short by the end of the window; lines after the last of them go back to the queue."""
        lookahead: list[str] = []
        want = _LOOKAHEAD_LINES
        while True:
            lookahead.extend(self._take(want - len(lookahead)))
            window = batch + lookahead
            at_end = len(lookahead) < want
            taken: list[Record] = []
            end = furthest = 0
            for begin, stop, reached, fields, raw, error in body_records(window, self.layout, shape_for):
                if begin >= len(batch):
                    break
                taken.append((self.records + len(taken), fields, raw, error))
                end, furthest = stop, max(furthest, reached)
            if at_end or furthest < len(window):
                break
            want *= 2  # a record was read up to the end of the window: it may go on
        self._pending.extendleft(reversed(window[max(end, len(batch)) :]))
        return taken


def clean_fields(lines: list[str], layout: Layout, chunk: int = 10_000) -> pl.DataFrame | None:
    """The fields of the non-blank lines (columns ``"0"``, ``"1"``, ... of the header's width) and the
    line itself (``raw``), when every line is one record of the header's width and the text has no
    undecodable bytes or control characters; None otherwise. Lines are split ``chunk`` at a time,
    so few Python objects are alive at once."""
    width = len(layout.header)
    names = [str(i) for i in range(width)]
    frames = []
    for start in range(0, len(lines), chunk):
        part = lines[start : start + chunk]
        joined = "".join(part)
        try:
            encoded = joined.encode("utf-8")  # fails on undecodable bytes (kept as surrogates)
        except UnicodeEncodeError:
            return None
        if len(encoded.translate(None, readers.CONTROL_BYTES)) != len(encoded):
            return None
        if layout.quoting == csv.QUOTE_NONE or '"' not in joined:
            plain = _split_unquoted(part, layout.delimiter, names)
            if plain is None:
                return None
            frames.append(plain)
            continue
        try:
            parsed = list(csv.reader(part, delimiter=layout.delimiter, quoting=layout.quoting, strict=True))
        except csv.Error:
            return None
        if len(parsed) != len(part):  # a record spans lines
            return None
        if width > 1 and set(map(len, parsed)) == {width} and not any(map(is_blank, parsed)):  # every record complete
            columns, raws = list(zip(*parsed)), part
        else:
            rows = []
            for fields, line in zip(parsed, part):
                if is_blank(fields):
                    continue  # blank line
                if len(fields) != width:
                    return None
                rows.append((fields, line))
            columns = list(zip(*(fields for fields, _ in rows))) or [()] * width
            raws = [line for _, line in rows]
        series = [pl.Series(name, values, dtype=pl.Utf8) for name, values in zip(names, columns)]
        frames.append(pl.DataFrame([*series, pl.Series("raw", raws, dtype=pl.Utf8)]))
    return pl.concat(frames) if frames else pl.DataFrame(schema={name: pl.Utf8 for name in [*names, "raw"]})


def _split_unquoted(lines: list[str], delimiter: str, names: list[str]) -> pl.DataFrame | None:
    """:func:`clean_fields` of lines without a quote character, split by polars instead of the csv
    module (the same fields: without quotes a record is its line, and a field what lies between
    delimiters); None when a non-blank line has another number of fields than the header."""
    raw = pl.Series("raw", lines, dtype=pl.Utf8)
    body = raw.str.strip_chars_end("\r\n")
    delimiters = body.str.count_matches(delimiter, literal=True)
    keep = body.str.replace_all(delimiter, "", literal=True).str.strip_chars() != ""  # not a blank line (is_blank)
    if not (delimiters.filter(keep) == len(names) - 1).all():
        return None
    body, raw = body.filter(keep), raw.filter(keep)
    if len(names) == 1:
        return pl.DataFrame([body.alias(names[0]), raw])
    fields = body.str.split_exact(delimiter, len(names) - 1).struct.rename_fields(names).struct.unnest()
    return fields.with_columns(raw)


def fast_frames(
    fields: pl.DataFrame,
    first_index: int,
    header: list[str],
    columns: dict[str, Any],
    config: readers.IngestConfig,
    zone: ZoneInfo,
    source: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Canonical rows and quarantine rows of clean records (see :func:`clean_fields`), as
    :func:`readers._to_rows` makes them."""
    n = fields.height
    if not n:
        return readers.empty_raw(), readers.empty_quarantine()
    positions = {h: str(i) for i, h in enumerate(header)}

    def column(name: str) -> pl.Series | None:
        col = columns.get(name)
        if col is None:
            return None
        if isinstance(col, tuple):
            dates, times = fields[positions[col[0]]].to_list(), fields[positions[col[1]]].to_list()
            return pl.Series(name, [readers.combine_date_time(d, t) for d, t in zip(dates, times)], dtype=pl.Utf8)
        return fields[positions[col]].alias(name)

    index = pl.int_range(first_index, first_index + n, dtype=pl.Int64, eager=True)
    raw = fields["raw"].str.strip_chars_end("\r\n").str.slice(0, readers._RAW_PREVIEW_CHARS)
    sent_at, errors = parse_timestamps(column("sent_at"), zone, n)
    label, category, label_raw = _labels(column("label"), config, n)
    frame = pl.DataFrame(
        {
            "message_id": _message_ids(column("message_id"), index, source),
            "text": column("text") if columns.get("text") is not None else pl.Series([None] * n, dtype=pl.Utf8),
            "label": label,
            "label_raw": label_raw,
            "sent_at": sent_at,
            "fraud_type": _fraud_types(column("fraud_type"), category, label, config),
            "source_file": pl.Series([source], dtype=pl.Utf8).extend_constant(source, n - 1),
            "source_row": index,
            "raw": raw,
            "_error": pl.select(
                pl.when(_repeated_headers(fields, header)).then(pl.lit(readers.REPEATED_HEADER)).otherwise("sent_at: " + errors)
            ).to_series(),
        }
    )
    bad = frame["_error"].is_not_null()
    quarantine = frame.filter(bad).select(
        "source_file",
        "source_row",
        pl.lit("raw_messages").alias("stage"),
        pl.col("_error").alias("reason"),
        "raw",
    )
    return frame.filter(~bad).drop("_error").cast(readers.RAW_SCHEMA), quarantine.cast(readers.QUARANTINE_SCHEMA)


def _repeated_headers(fields: pl.DataFrame, header: list[str]) -> pl.Series:
    """Per row, :func:`readers.repeats_header`: checked in Python only on the rows where every
    column holds (the longest word of) its column's name, a filter polars runs on whole columns."""
    candidate = pl.lit(True)
    for i, name in enumerate(readers.normalize_header(h) for h in header):
        if name:  # a normalised name is in the lower-cased field, BOM removed, when the two match
            word = max(name.split(" "), key=len)
            field = pl.col(str(i)).str.replace_all("\ufeff", "", literal=True).str.to_lowercase()
            candidate = candidate & field.str.contains(word, literal=True)
    flags = [False] * fields.height
    for row in fields.select(candidate.alias("_candidate")).to_series().arg_true().to_list():
        flags[row] = readers.repeats_header(list(fields.row(row)[: len(header)]), header)
    return pl.Series(flags, dtype=pl.Boolean)


def parse_timestamps(values: pl.Series | None, zone: ZoneInfo, n: int) -> tuple[pl.Series, pl.Series]:
    """(UTC timestamps, error messages) as :func:`readers.parse_timestamp` gives them: plain ISO
    values in polars, every other distinct value once in Python."""
    if values is None:
        return pl.Series("sent_at", [None] * n, dtype=readers.RAW_SCHEMA["sent_at"]), pl.Series([None] * n, dtype=pl.Utf8)
    iso = values.str.contains(_ISO)
    plain = values.str.replace("T", " ", literal=True)
    local = pl.select(
        pl.coalesce(
            plain.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us"),
            plain.str.to_datetime("%Y-%m-%d %H:%M", strict=False, time_unit="us"),
        )
    ).to_series()
    fast = local.dt.replace_time_zone(zone.key, ambiguous="null", non_existent="null").dt.convert_time_zone("UTC")
    fast = pl.select(pl.when(iso).then(fast)).to_series()
    rest = values.filter(fast.is_null() & values.is_not_null()).unique().to_list()
    parsed: dict[str, dt.datetime | None] = {}
    failed: dict[str, str] = {}
    for value in rest:
        try:
            parsed[value] = readers.parse_timestamp(value, zone)
        except (ValueError, OverflowError, OSError) as exc:
            failed[value] = str(exc)
    slow = values.replace_strict(list(parsed), list(parsed.values()), default=None, return_dtype=fast.dtype)
    errors = values.replace_strict(list(failed), list(failed.values()), default=None, return_dtype=pl.Utf8)
    return pl.select(pl.coalesce(fast, slow)).to_series().alias("sent_at"), errors


def _labels(values: pl.Series | None, config: readers.IngestConfig, n: int) -> tuple[pl.Series, pl.Series, pl.Series]:
    """(label, fraud category from the label, label as written) per row, mapped once per distinct value."""
    if values is None:
        none = pl.Series([None] * n, dtype=pl.Utf8)
        return none.cast(pl.Int8), none, none
    distinct = values.unique().to_list()
    mapped = [config.map_label(v) for v in distinct]
    label = values.replace_strict(distinct, [m[0] for m in mapped], return_dtype=pl.Int8)
    category = values.replace_strict(distinct, [m[1] for m in mapped], return_dtype=pl.Utf8)
    written = values.replace_strict(distinct, [readers._as_text(v) for v in distinct], return_dtype=pl.Utf8)
    return label, category, written


def _fraud_types(values: pl.Series | None, category: pl.Series, label: pl.Series, config: readers.IngestConfig) -> pl.Series:
    if values is None:
        given = pl.Series([None] * len(label), dtype=pl.Utf8)
    else:
        distinct = values.unique().to_list()
        kept = [None if config.is_placeholder(v) else readers._as_text(v) for v in distinct]
        given = values.replace_strict(distinct, kept, return_dtype=pl.Utf8)
    return pl.select(pl.when(label == 1).then(pl.coalesce(given, category))).to_series()


def _message_ids(values: pl.Series | None, index: pl.Series, source: str) -> pl.Series:
    """The id as written (stripped), or the stable id of (file, record) when there is none."""
    if values is None:
        ids = pl.Series([None] * len(index), dtype=pl.Utf8)
    else:
        ids = values.str.strip_chars()  # the same characters as str.strip once control characters are excluded
        ids = pl.select(pl.when(ids != "").then(ids)).to_series()
    missing = ids.is_null()
    if missing.any():
        fill = [readers.stable_message_id(source, i) for i in index.filter(missing).to_list()]
        ids = ids.scatter(missing.arg_true(), fill)
    return ids.alias("message_id")
