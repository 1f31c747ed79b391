"""Split CSV/TSV text into records without ever merging two records into one.

A quote that opens a field may legitimately hold delimiters and newlines, but
in real exports it is as often a stray character (``"urgent`` typed by a
user, an unescaped quote from a naive export). A stray opening quote makes a
standard CSV parser swallow every following line up to the next quote, so a
block of valid records becomes one record carrying the label of its last line.

The rule here: a multi-line quoted record is accepted only when none of the
lines it would swallow (its first line and every line before the closing one),
read with quotes as literal characters, is itself a plausible record (the
header's field count and a known, non-empty label; see ``plausible``). Otherwise the
quote is taken as a literal character for that line, or only that line is
quarantined, and reading resumes on the next line.

TSV files use quotes as literal text unless the file consistently quotes its
fields (every field that contains a quote is a well-formed quoted field).
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Record = tuple[int, list[str] | None, str, str | None]  # (index, fields, raw text, error)
# Excel's delimiter hint; quoted, and followed by empty cells, when the sheet that held it was saved again
_EXCEL_SEP = re.compile(r'^\ufeff?"?sep=([^"\r\n])"?\1*\s*$')


def sniff_delimiter(first_line: str, suffix: str) -> str:
    if suffix == ".tsv":
        return "\t"
    counts = {d: first_line.count(d) for d in (",", "\t", ";", "|")}
    return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


def quotes_fields(lines: list[str], delimiter: str, sample: int = 2000) -> bool:
    """True when the first ``sample`` lines read cleanly with quoted fields, every record as wide
    as the header, and at least one field is quoted: the file consistently quotes its fields."""
    head = lines[:sample]
    if not any(_opens_quote(line, delimiter) for line in head):
        return False
    try:
        rows = [row for row in csv.reader(head, delimiter=delimiter, strict=True) if any(f.strip() for f in row)]
    except csv.Error:
        return False
    if len(head) == sample and rows:
        rows = rows[:-1]  # the sample may end inside a record
    return bool(rows) and all(len(row) == len(rows[0]) for row in rows)


def is_blank(fields: list[str]) -> bool:
    """A line with nothing but delimiters and spaces: not a record. Excel writes its empty rows
    as ``,,,`` (one delimiter fewer than the sheet's used columns), not as empty lines."""
    return not any(field.strip() for field in fields)


def _opens_quote(line: str, delimiter: str) -> bool:
    return line.lstrip().startswith('"') or f'{delimiter}"' in line


def _parse(chunk: str, delimiter: str, quoting: int, strict: bool = True) -> list[list[str]]:
    return list(csv.reader(io.StringIO(chunk, newline=""), delimiter=delimiter, quoting=quoting, strict=strict))


def _literal(line: str, delimiter: str) -> list[str]:
    """The line's fields with every quote taken as a literal character."""
    rows = _parse(line.rstrip("\r\n"), delimiter, csv.QUOTE_NONE, strict=False)
    return rows[0] if rows else [""]


@dataclass(frozen=True)
class Layout:
    """What the head of a file says about all of it: delimiter, quoting, header and where records begin."""

    delimiter: str
    quoting: int
    header: list[str]
    body_start: int  # index of the first line after the header


def detect_layout(lines: list[str], suffix: str) -> Layout:
    """The layout of delimited text from its lines (all of them, or the first few thousand).

    The Excel ``sep=;`` line names the delimiter (and is not the header);
    otherwise it is sniffed from the first non-blank line. Blank lines before
    the header are skipped. UnreadableFile when no header can be read.
    """
    from fraud_assets.readers import UnreadableFile

    csv.field_size_limit(sys.maxsize)
    lines = list(lines)
    first_index = next((i for i, line in enumerate(lines) if line.strip()), 0)
    first = lines[first_index] if lines else ""
    excel = _EXCEL_SEP.match(first)
    if excel:
        lines[first_index] = ""
        first = next((line for line in lines if line.strip()), "")
    delimiter = excel.group(1) if excel else sniff_delimiter(first, suffix)
    quoting = csv.QUOTE_MINIMAL
    if delimiter == "\t" and not quotes_fields(lines, delimiter):
        quoting = csv.QUOTE_NONE  # TSV: quotes are text unless the file consistently quotes its fields
    feed = _Feed(lines, delimiter)
    reader = csv.reader(feed, delimiter=delimiter, quoting=quoting, strict=True)
    while feed.pos < len(lines):
        fields, error = _next_fields(reader, feed)
        if fields is None or feed.pos - feed.start > 1:
            # A header is one line: a quote that does not close on it is a stray one (`"text,label`),
            # which would otherwise swallow the file up to the next quote.
            fields, feed.pos = _literal(lines[feed.start], delimiter), feed.start + 1
        if not is_blank(fields):
            return Layout(delimiter, quoting, fields, feed.pos)
    raise UnreadableFile("no header row (file has no records)")


def split_records(
    text: str,
    suffix: str,
    shape_for: Callable[[list[str]], tuple[Callable[[list[str]], bool], int | None]],
) -> tuple[list[str], list[Record]]:
    """Split delimited text into (header, records); see the module docstring for the quote rule.

    ``shape_for(header)`` returns a predicate telling whether a list of fields
    looks like a complete, valid record of this file, and the index of the
    free-text column when unquoted delimiters may be joined back into it (see
    :func:`_fitter`), else None.
    """
    lines = io.StringIO(text, newline="").readlines()
    layout = detect_layout(lines, suffix)
    records = [
        (index, fields, raw, error)
        for index, (_, _, _, fields, raw, error) in enumerate(body_records(lines, layout, shape_for, layout.body_start))
    ]
    return layout.header, records


def body_records(
    lines: list[str],
    layout: Layout,
    shape_for: Callable[[list[str]], tuple[Callable[[list[str]], bool], int | None]],
    start: int = 0,
) -> Iterator[tuple[int, int, int, list[str] | None, str, str | None]]:
    """(first line, end line, furthest line read, fields, raw text, error) of each record from
    ``lines[start]``, which must begin a record; blank lines are skipped.

    A record depends only on the lines up to the furthest one read for it, so reading from a record
    boundary gives the records a whole-file read gives, as long as no record's reading reached the
    end of ``lines`` before the file's end (see :mod:`fraud_assets.batches`).
    """
    delimiter, quoting, header = layout.delimiter, layout.quoting, layout.header
    plausible, text_index = shape_for(header)
    fit = _fitter(header, delimiter, plausible, text_index)
    feed = _Feed(lines, delimiter)
    feed.pos = start
    feed.plausible = lambda f: (fitted := fit(f)) is not None and plausible(fitted)
    reader = csv.reader(feed, delimiter=delimiter, quoting=quoting, strict=True)
    while feed.pos < len(lines):
        fields, error = _next_fields(reader, feed)
        if error is not None:
            reader = csv.reader(feed, delimiter=delimiter, quoting=quoting, strict=True)  # a fresh state after an error
        begin, end = feed.start, max(feed.pos, feed.start + 1)
        reached = end
        fields, end, error = _settle(lines, begin, end, fields, error, delimiter, quoting, fit, len(header))
        feed.pos = end
        if fields is not None and is_blank(fields):
            continue  # blank line: not a record
        yield begin, end, reached, fields, "".join(lines[begin:end]), error


class _Swallows(Exception):
    """Raised while reading a multi-line record as soon as it would swallow a plausible record."""


class _Feed:
    """Lines for one csv.reader, one at a time, remembering where the current record started.

    Before the reader gets line k of a record that started earlier, line k-1
    is known not to close it; if that line reads as a plausible record on its
    own, the record is abandoned at once (which also bounds the work per stray
    quote to the distance to the next plausible line).
    """

    def __init__(self, lines: list[str], delimiter: str):
        self.lines, self.delimiter, self.pos, self.start = lines, delimiter, 0, 0
        self.plausible: Callable[[list[str]], bool] = lambda fields: False

    def __iter__(self) -> "_Feed":
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        if self.pos > self.start and self.plausible(_literal(self.lines[self.pos - 1], self.delimiter)):
            raise _Swallows
        self.pos += 1
        return self.lines[self.pos - 1]


def _next_fields(reader, feed: _Feed) -> tuple[list[str] | None, str | None]:
    feed.start = feed.pos
    try:
        return next(reader), None
    except StopIteration:
        return [], None
    except _Swallows:
        return None, "swallows"
    except csv.Error as exc:
        return None, f"malformed record: {exc}"


def _fitter(header: list[str], delimiter: str, plausible: Callable[[list[str]], bool], text_index: int | None):
    """fields -> fields of the header's width, or None when they cannot be one record of this file.

    Real exports add or drop empty trailing fields (``a,0,`` under ``text,label``;
    ``a,0`` under ``text,label,``): blank surplus fields are dropped and
    missing fields under blank header names are added. A text holding unquoted
    delimiters (``你好,世界,0`` under ``text,label``) is joined back into the
    text column, but only when that is the one free-text column and the
    result is a plausible record.
    """
    width = len(header)

    def fit(fields: list[str]) -> list[str] | None:
        if len(fields) == width:
            return fields
        if len(fields) > width and not any(f.strip() for f in fields[width:]):
            return fields[:width]
        if len(fields) < width and not any(h.strip() for h in header[len(fields) :]):
            return fields + [""] * (width - len(fields))
        if len(fields) > width and text_index is not None:
            end = text_index + len(fields) - width + 1
            joined = fields[:text_index] + [delimiter.join(fields[text_index:end])] + fields[end:]
            if plausible(joined):
                return joined
        return None

    return fit


def _settle(
    lines: list[str],
    start: int,
    end: int,
    fields: list[str] | None,
    error: str | None,
    delimiter: str,
    quoting: int,
    fit: Callable[[list[str]], list[str] | None],
    width: int,
) -> tuple[list[str] | None, int, str | None]:
    """The record read from ``start``: kept, or re-read as its first line alone; (fields, end, error)."""
    if error is None and is_blank(fields):
        return fields, end, None  # a blank line (skipped by the caller)
    fitted = fit(fields) if error is None else None
    if fitted is not None:
        return fitted, end, None
    if error is None and end - start == 1:
        return None, end, f"expected {width} fields, found {len(fields)}"
    # A quote that does not close on a plausible record boundary: read this one line alone.
    line = lines[start]
    if end - start == 1 and error != "swallows":  # e.g. `"abc"x,1`: a lenient read of that line
        lenient = _parse(line, delimiter, quoting, strict=False)
        if len(lenient) == 1 and (fitted := fit(lenient[0])) is not None:
            return fitted, start + 1, None
    literal = fit(_literal(line, delimiter))
    if literal is not None:
        return literal, start + 1, None
    if error == "swallows":
        return None, start + 1, "unbalanced quote: the quote opened on this line would swallow the following records"
    reason = error or f"expected {width} fields, found {len(fields)}"
    if end - start > 1:
        reason = f"unbalanced quote: {reason} (the quote opened on this line does not close on a record boundary)"
    return None, start + 1, reason
