"""Read one input file into the canonical message schema.

Every record of a file ends up in exactly one place: a canonical row, or a
quarantine row that says why. A file that cannot be read at all is reported
with a reason instead of raising, so one bad file never stops the others.

Formats: CSV, TSV (delimiter sniffed from the header), JSON Lines / JSON
arrays, Parquet, each also compressed with gzip, bzip2 or xz (``day.csv.gz``).
Encodings: UTF-8, UTF-8 with BOM, UTF-16 (with a BOM, or without one where its
NUL bytes show it), GB18030/GBK and Windows-1252, detected automatically.
"""

from __future__ import annotations

import bz2
import datetime as dt
import functools
import gzip
import hashlib
import json
import lzma
import math
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import tomllib

from fraud_assets.delimited import split_records
from fraud_assets.settings import ConfigError, check_timezone

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
JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | PARQUET_SUFFIXES
#: A file with one of these suffixes is read as the file inside it: ``day.csv.gz`` as a CSV.
COMPRESSED_SUFFIXES = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}
_DECOMPRESS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_DISK_RESERVE = 1 << 30  # bytes of the temporary folder's disk a decompressed file leaves free
_RAW_PREVIEW_CHARS = 2000
# Undecodable bytes survive decoding as lone surrogates (errors="surrogateescape").
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# Any lone surrogate; outside that range one comes from a JSON escape such as "\ud800", which is no
# character and cannot be stored (polars, Parquet and the UI take UTF-8 only).
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_A_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")  # the lone surrogates surrogateescape never makes
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])  # _CONTROL, as UTF-8 bytes


class UnreadableFile(Exception):
    """The whole file cannot be read; the message is the quarantine reason."""


COLUMN_NAMES = ("message_id", "text", "label", "sent_at", "fraud_type", "date", "time")
# [section] -> {key: (accepted types, description)}; anything else in the file is an error.
_CONFIG_SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "columns": {name: ((list,), "a list of column names") for name in COLUMN_NAMES},
    "labels": {
        "normal": ((list,), "a list of label values"),
        "fraud": ((list,), "a list of label values"),
        "missing": ((list,), "a list of placeholder values"),
        "other_values_are_fraud_categories": ((bool,), "true or false"),
    },
    "limits": {
        "max_text_chars": ((int,), "an integer"),
        "future_tolerance_hours": ((int, float), "a number"),
        "min_year": ((int,), "an integer"),
    },
}
#: Label values that mean "no label" whatever the config says; ``[labels] missing`` adds to them.
DEFAULT_MISSING_LABELS = ("", "nan", "null", "\\n", "none", "n/a", "na", "#n/a", "-", "--", "?")


def _check_config(data: dict[str, Any], path: Path) -> None:
    """Check a parsed TOML config against ``_CONFIG_SCHEMA``; raise ConfigError naming the setting."""
    for section, table in data.items():
        if section not in _CONFIG_SCHEMA or not isinstance(table, dict):
            raise ConfigError(f"ingest config {path}: unknown section [{section}]; expected {sorted(_CONFIG_SCHEMA)}")
        for key, value in table.items():
            if key not in _CONFIG_SCHEMA[section]:
                raise ConfigError(
                    f"ingest config {path}: unknown setting [{section}] {key} = {value!r}; expected one of {sorted(_CONFIG_SCHEMA[section])}"
                )
            types, expected = _CONFIG_SCHEMA[section][key]
            bad_type = not isinstance(value, types) or (bool not in types and isinstance(value, bool))
            bad_item = isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value)
            if bad_type or bad_item:
                raise ConfigError(
                    f"ingest config {path}: [{section}] {key} must be {expected}, not {value!r} ({type(value).__name__})"
                )


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
    missing_labels: frozenset[str] = frozenset(DEFAULT_MISSING_LABELS)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> "IngestConfig":
        """Read a TOML config (the bundled default when ``path`` is None); ConfigError names a bad setting."""
        path = Path(path) if path else DEFAULT_CONFIG_PATH
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read ingest config {path} (FRAUD_INGEST_CONFIG): {exc}") from exc
        _check_config(data, path)
        labels, limits = data.get("labels", {}), data.get("limits", {})
        values: dict[str, Any] = dict(
            columns={k: [str(a) for a in v] for k, v in data.get("columns", {}).items()},
            normal_labels=frozenset(_label_key(v) for v in labels.get("normal", [])),
            fraud_labels=frozenset(_label_key(v) for v in labels.get("fraud", [])),
            other_values_are_fraud_categories=labels.get("other_values_are_fraud_categories", False),
            max_text_chars=limits.get("max_text_chars", 200_000),
            future_tolerance_hours=float(limits.get("future_tolerance_hours", 24)),
            min_year=limits.get("min_year", 2000),
            missing_labels=frozenset(
                _label_key(v, keep_placeholders=True) for v in (*DEFAULT_MISSING_LABELS, *labels.get("missing", ()))
            ),
        )
        values.update(overrides)
        if "text" not in values["columns"] or "label" not in values["columns"]:
            raise ConfigError(f"ingest config {path}: [columns] must list aliases for 'text' and 'label'")
        return cls(**values)

    def is_placeholder(self, value: Any) -> bool:
        """True for values that mean "no label" (NaN, null, N/A, -, empty, ...) in every mode."""
        return _label_key(value, keep_placeholders=True) in self.missing_labels

    def map_label(self, value: Any) -> tuple[int | None, str | None]:
        """Return (label, fraud_type from the label) for a raw label value."""
        if self.is_placeholder(value):
            return None, None
        key = _label_key(value)
        if key in self.normal_labels:
            return 0, None
        if key in self.fraud_labels:
            return 1, None
        if self.other_values_are_fraud_categories:
            return 1, str(value).strip()
        return None, None

    def label_is_known(self, value: Any) -> bool:
        """A value that is a label of this config (used to tell whether a line is a plausible record)."""
        if self.is_placeholder(value):
            return True
        key = _label_key(value)
        if key in self.normal_labels or key in self.fraud_labels:
            return True
        text = str(value)
        # categories are short names; a fragment of a split sentence or quoted text is not one
        return self.other_values_are_fraud_categories and text == text.strip() and len(text) <= 40 and '"' not in text


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


def _label_key(value: Any, keep_placeholders: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip().lower()
    if keep_placeholders:
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


# ---------------------------------------------------------------------------
# decoding


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode file bytes, returning (text, encoding name).

    UTF-8 is tried first, then Windows-1252 for Western text (see
    :func:`looks_single_byte`), then GB18030 (a superset of GBK/GB2312). A file
    that is valid UTF-8 but for a few bytes (see :func:`fallback_encoding`)
    stays UTF-8. Otherwise, when neither decodes cleanly, the encoding with
    fewer undecodable bytes wins. Undecodable bytes are kept as surrogate
    escapes, so the affected records can be quarantined one by one instead of
    losing the whole file.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="surrogateescape"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:  # a lone surrogate (nvarchar cut inside an emoji) stays in its record, which is quarantined
            return data.decode("utf-16", errors="surrogatepass"), "utf-16"
        except UnicodeDecodeError as exc:
            raise UnreadableFile(f"invalid UTF-16: {exc}") from exc
    head = data[:65536]
    utf16 = nul_reading(head, even=len(data) % 2 == 0)
    if utf16 == "binary":
        raise UnreadableFile("binary content (NUL bytes), not a text file")
    if utf16 is not None:
        try:
            return data.decode(utf16, errors="surrogatepass"), utf16
        except UnicodeDecodeError as exc:
            raise UnreadableFile(f"binary content (NUL bytes), not a text file; not {utf16.upper()} either: {exc}") from exc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    utf8 = data.decode("utf-8", errors="surrogateescape")
    bad_utf8 = _count_undecodable(utf8)
    sample = NonAsciiLines()
    sample.add(data)
    guess = fallback_encoding(bad_utf8, _non_ascii(utf8) - bad_utf8, *lone_high_bytes(data), sample.sample())
    if guess == "utf-8":
        return utf8, guess
    if guess == "cp1252":  # Western single-byte text, which always decodes
        return data.decode(guess, errors="surrogateescape"), guess
    try:
        return data.decode(guess), guess
    except UnicodeDecodeError:
        decoded = data.decode(guess, errors="surrogateescape")
    bad, text, encoding = min((bad_utf8, utf8, "utf-8"), (_count_undecodable(decoded), decoded, guess), key=lambda t: t[0])
    if bad > max(16, len(data) // 20):
        raise UnreadableFile(f"not text in UTF-8 or {_ENCODING_NAMES[guess]} ({bad} undecodable bytes)")
    return text, encoding


def fallback_encoding(bad_utf8: int, valid_utf8: int, lone: int, high: int, sample: bytes) -> str:
    """The encoding of a file that is not valid UTF-8, from counts over the whole file.

    ``bad_utf8``: its bytes undecodable as UTF-8; ``valid_utf8``: its valid
    multi-byte UTF-8 sequences; ``lone``, ``high``: see :func:`lone_high_bytes`;
    ``sample``: its non-ASCII text (:class:`NonAsciiLines`). Still ``utf-8`` when
    its valid sequences clearly outnumber its bad bytes (see
    :data:`UTF8_SEQUENCES_PER_BAD_BYTE`; GB18030 would decode such a file
    "cleanly" into mojibake), else ``cp1252`` for Western text
    (:func:`looks_single_byte`), else the Chinese double-byte encoding
    (:func:`double_byte_encoding`). One decision for the whole-file reader and
    the streaming sniff, so both read a file the same way.
    """
    if valid_utf8 >= max(UTF8_MIN_SEQUENCES, UTF8_SEQUENCES_PER_BAD_BYTE * bad_utf8):
        return "utf-8"
    if looks_single_byte(lone, high):
        return "cp1252"
    return double_byte_encoding(sample)


#: A file with at least this many valid multi-byte UTF-8 sequences per undecodable byte is UTF-8 with
#: a few bad rows (a UTF-8 export with cp1252 rows appended: 2.8). Why 2: text that is not UTF-8 forms
#: such sequences only by chance. The shared CSVs re-encoded to GBK/GB18030, Big5 (cp950) and Shift-JIS
#: (cp932) have 0.09-0.30 per bad byte (real GBK label04-last.csv: 0.25), any 3 consecutive lines of
#: them below 1.5; French, German, Spanish, Italian, Portuguese and British English cp1252 text
#: (the system's message catalogues) at most 0.004.
UTF8_SEQUENCES_PER_BAD_BYTE = 2
#: ... and at least this many: one or two short lines of GBK or Big5 reach 2-4.5 per bad byte, with at
#: most 9 valid sequences.
UTF8_MIN_SEQUENCES = 16


#: Bytes of a file's non-ASCII text that decide between GB18030, Big5 and Shift-JIS (see :class:`NonAsciiLines`).
ENCODING_SAMPLE_BYTES = 1 << 18
#: ... of which each byte is at most this far from a byte >= 0x80: enough to keep every character
#: whole (a double-byte one's second byte can be ASCII; GB18030's four-byte ones alternate).
ENCODING_SAMPLE_CONTEXT = 16
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")
# bytes >= 0x80 with at most ENCODING_SAMPLE_CONTEXT ASCII bytes between each two
_HIGH_RUN = re.compile(rb"[\x80-\xff](?:[\x00-\x7f]{0,%d}[\x80-\xff])*" % ENCODING_SAMPLE_CONTEXT)


class NonAsciiLines:
    """The first :data:`ENCODING_SAMPLE_BYTES` of a file's bytes that are >= 0x80 or at most
    :data:`ENCODING_SAMPLE_CONTEXT` bytes from one, fed chunk by chunk, in memory bounded by that size.

    Why: the sample decides between the double-byte encodings by the characters it holds; the start
    of a file can be all ASCII (an English newsletter repeated for 256 KiB, then Big5 rows), which
    left nothing to score. Whole lines were kept once, and a file with ``\r`` line endings, or a
    minified JSON array on one line, is one line whose first 256 KiB can be ASCII. The result is
    the same bytes however the file is cut into chunks, so the whole-file reader and the streaming
    sniff decide alike.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._before = b""  # the last bytes not kept, which precede the next byte >= 0x80
        self._after = 0  # how many of the next bytes follow a byte >= 0x80 closely enough to be kept

    def add(self, chunk: bytes) -> None:
        start, context = 0, ENCODING_SAMPLE_CONTEXT
        while start < len(chunk) and self._size < ENCODING_SAMPLE_BYTES:
            found = _HIGH_BYTE.search(chunk, start, start + self._after if self._after else len(chunk))
            if found is None and self._after:
                stop = min(len(chunk), start + self._after)
                self._keep(chunk[start:stop])
                self._after, start = self._after - (stop - start), stop
                continue
            if found is None:
                self._before = (self._before + chunk[max(start, len(chunk) - context) :])[-context:]
                return
            run = _HIGH_RUN.match(chunk, found.start())
            assert run is not None  # it starts with the byte found
            before = (
                b"" if self._after else (self._before + chunk[max(start, found.start() - context) : found.start()])[-context:]
            )
            self._keep(before + chunk[start if self._after else found.start() : run.end()])
            self._before, self._after, start = b"", context, run.end()

    def _keep(self, piece: bytes) -> None:
        piece = piece[: ENCODING_SAMPLE_BYTES - self._size]
        self._parts.append(piece)
        self._size += len(piece)

    def sample(self) -> bytes:
        return b"".join(self._parts)


_ENCODING_NAMES = {"gb18030": "GB18030", "cp950": "Big5", "cp932": "Shift-JIS"}
_KANA = dict.fromkeys([*range(128), *range(0x3041, 0x3100)])  # deletion table: ASCII, full-width hiragana and katakana


def double_byte_encoding(sample: bytes) -> str:
    """``cp950`` (Big5, as Windows writes it), ``cp932`` (Shift-JIS, as Windows writes it) or
    ``gb18030`` for East Asian text that is not UTF-8.

    Why: Big5 files (Taiwan, Hong Kong) also decode as GB18030, without a
    single error, into rare characters: mojibake that was accepted as text
    and trained on. Each reading of ``sample`` is scored by the share of its
    non-ASCII characters that are its own encoding's frequent ones (the 7,445
    characters and symbols of GB2312; Big5's symbols and 5,401 frequent
    characters); the right reading scores 0.95-1.00 and the wrong one
    0.24-0.64 (the shared CSVs re-encoded both ways, traditional-Chinese
    messages). Big5 wins only by a clear margin, so a sample with few Chinese
    characters stays GB18030, as before.

    Japanese exports in Shift-JIS decode as GB18030 into mojibake too. Read as
    Shift-JIS, Japanese text is mostly kana (every sentence has particles), while
    Chinese text in GBK or Big5 read that way has next to none: its lead bytes
    fall on Shift-JIS's kanji and half-width katakana, not on the full-width
    kana rows. So a sample whose Shift-JIS reading is at least 20 % full-width
    kana is Shift-JIS. (Korean EUC-KR cannot be told this way: its Hangul rows
    are GB2312's frequent characters; it stays GB18030.)
    """
    japanese = sample.decode("cp932", errors="replace")
    if _non_ascii(japanese) >= 16 and _share_of(japanese, _KANA) >= 0.2:
        return "cp932"
    gb = sample.decode("gb18030", errors="replace")
    if _non_ascii(gb) < 16:
        return "gb18030"
    gb_table, big5_table = _frequent_characters()
    big5 = sample.decode("cp950", errors="replace")
    return "cp950" if _share_of(big5, big5_table) >= _share_of(gb, gb_table) + 0.25 else "gb18030"


def _share_of(text: str, frequent: dict[int, None]) -> float:
    """Share of the non-ASCII characters of ``text`` that ``frequent`` (a deletion table that also
    deletes ASCII) removes."""
    return 1.0 - len(text.translate(frequent)) / max(1, _non_ascii(text))


def _non_ascii(text: str) -> int:
    return len(text) - len(text.encode("ascii", "ignore"))


@functools.cache
def _frequent_characters() -> tuple[dict[int, None], dict[int, None]]:
    """Deletion tables (ASCII plus frequent characters) of GB2312 and of Big5's frequent area (lead bytes A1-C6)."""

    def table(encoding: str, leads: range, trails: list[int]) -> dict[int, None]:
        chars = dict.fromkeys(range(128))
        for lead in leads:
            for trail in trails:
                try:
                    chars[ord(bytes((lead, trail)).decode(encoding))] = None
                except UnicodeDecodeError:
                    pass
        return chars

    big5_trails = [*range(0x40, 0x7F), *range(0xA1, 0xFF)]
    return table("gb2312", range(0xA1, 0xF8), list(range(0xA1, 0xFF))), table("cp950", range(0xA1, 0xC7), big5_trails)


_LONE_HIGH_BYTE = re.compile(rb"(?<![\x80-\xff])[\x80-\xff](?![\x80-\xff])")
_GB18030_FOUR_BYTES = re.compile(rb"[\x81-\xfe][0-9][\x81-\xfe][0-9]")  # emoji, rare characters
_ASCII_BYTES = bytes(range(128))


def lone_high_bytes(data: bytes) -> tuple[int, int]:
    """(bytes >= 0x80 between two ASCII bytes, outside GB18030's four-byte characters; all bytes >= 0x80)."""
    return len(_LONE_HIGH_BYTE.findall(_GB18030_FOUR_BYTES.sub(b"\x80\x80", data))), len(data.translate(None, _ASCII_BYTES))


def looks_single_byte(lone: int, high: int) -> bool:
    """Whether a file that is not UTF-8 is Western text in Windows-1252 (or Latin-1) rather than GB18030.

    Why: an English SMS export saved by Excel or older tools (the SMS Spam
    Collection's common CSV among them) writes "£", "é" and curly quotes as
    single bytes. Read as GB18030 such a byte either fails, and the message
    was quarantined, or pairs with the next letter into a Chinese character.
    In Western text nearly every such byte stands alone between ASCII bytes;
    in GB18030 Chinese, characters are two or four bytes whose common ones
    are all >= 0x80, so almost none does.
    """
    return high > 0 and lone >= high / 2


def nul_reading(head: bytes, even: bool = True) -> str | None:
    """What the NUL bytes of a file's first 64 KiB (``head``) say: None when they are a stray few
    (which must not lose a whole export) or padding in text (:func:`_text_with_nuls`); else
    ``utf-16-le`` or ``utf-16-be`` for UTF-16 without a byte-order mark (which only a file of
    ``even`` length can be); else ``binary``. One decision for the whole-file reader and the
    streaming sniff."""
    if head.count(b"\x00") <= max(4, len(head) // 100):
        return None
    utf16 = _bomless_utf16(head) if even else None
    if utf16 is not None:
        return utf16
    return None if _text_with_nuls(head) else "binary"


def _text_with_nuls(head: bytes) -> bool:
    """Whether a file with more NUL bytes than a stray one or two is still text: at most one byte
    in ten a NUL (UTF-16 is half NULs) and nearly no other control bytes besides them.

    Why: an export whose every record carries a NUL (a C program's fixed-width field, a padded
    id) is text whose records go their own ways; binary formats (zip, images, compressed data)
    hold about one control byte in ten besides their NULs.
    """
    rest = head.replace(b"\x00", b"")
    controls = len(rest) - len(rest.translate(None, CONTROL_BYTES))
    return (len(head) - len(rest)) * 10 <= len(head) and controls * 100 <= len(rest)


def _bomless_utf16(head: bytes) -> str | None:
    """``utf-16-le`` or ``utf-16-be`` when a file without a byte-order mark looks like UTF-16, else None.

    Why: SQL Server's ``bcp -w`` and some Windows tools write UTF-16 without a
    BOM. There the high byte of every ASCII character (delimiters, digits,
    newlines) is a NUL, all on one side of the 16-bit units, while binary data
    has NULs on both sides. A CJK character can put a NUL on the other side
    (U+4E00 is 00 4E in little-endian), hence a ratio rather than zero.
    """
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if odd >= max(2, len(head) // 64) and even * 16 <= odd:
        return "utf-16-le"
    if even >= max(2, len(head) // 64) and odd * 16 <= even:
        return "utf-16-be"
    return None


def _count_undecodable(text: str) -> int:
    return len(_UNDECODABLE.findall(text))


def _has_undecodable(value: str) -> bool:
    return _UNDECODABLE.search(value) is not None


def _printable(value: str) -> str:
    """Make surrogate-escaped text safe to store (undecodable bytes shown as \\xNN, other lone surrogates as \\uXXXX)."""
    value = _NOT_A_BYTE.sub(lambda lone: f"\\u{ord(lone.group()):04x}", value)
    return value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")


def _control_share(text: str) -> float:
    sample = text[:65536]
    if not sample:
        return 0.0
    # NULs are left to decode_bytes, which tells padding in text from binary (:func:`_text_with_nuls`)
    bad = len(_CONTROL.findall(sample)) - sample.count("\x00") + _count_undecodable(sample)
    return bad / len(sample)


# ---------------------------------------------------------------------------
# records


def _iter_json(text: str) -> tuple[list[str], list[tuple[int, dict | None, str, str | None]]]:
    """JSON Lines (split on ``\\n`` only: U+2028 and U+0085 are valid inside JSON strings), a JSON
    array, or a stream of pretty-printed objects; keys are returned in order of first appearance.

    When some line does not parse, the text is also read as one value after another
    (:func:`_json_values`), and the reading that yields more objects wins: pretty-printed objects
    are fragments line by line, while in JSON Lines a broken line is best quarantined alone.
    """
    raws: list[tuple[Any, str]]
    array = text.lstrip().startswith("[")
    if array:
        raws = _json_values(text, array=True)
    else:
        raws = [(_loads(line), line) for line in text.split("\n") if line.strip()]
        if any(isinstance(item, Exception) for item, _ in raws):
            stream = _json_values(text, array=False)
            if _count_objects(stream) > _count_objects(raws):
                raws = stream
    out = [_json_record(index, item, raw) for index, (item, raw) in enumerate(raws)]
    keys: dict[str, None] = {}
    for _, record, _, _ in out:
        keys.update(dict.fromkeys(record or ()))
    failed = next((error for _, _, _, error in out if error and error.startswith("malformed JSON")), None)
    if not keys and failed:  # not one object read: say why, not "no text column: header []"
        raise UnreadableFile(f"invalid JSON{' array' if array else ''}: {failed.removeprefix('malformed JSON: ')}")
    return list(keys), out


def _count_objects(raws: list[tuple[Any, str]]) -> int:
    return sum(isinstance(item, dict) for item, _ in raws)


def _json_values(text: str, array: bool) -> list[tuple[Any, str]]:
    """(value or exception, its text) for each element of a JSON array, or each of several JSON
    values one after another (pretty-printed objects), read one at a time so that a bad one costs
    only itself (:func:`_decode_at`).

    Commas are not records: one missing or extra between elements costs nothing. Text after
    the array's ``]`` is one more malformed record.
    """
    values: list[tuple[Any, str]] = []
    source = _JsonText(text)
    pos, closed = _skip_space(text, text.index("[") + 1 if array else 0), False
    while pos < len(text):
        if array and text[pos] == "]":
            pos, closed = _skip_space(text, pos + 1), True
            if pos < len(text):
                values.append((json.JSONDecodeError("text after the end of the array", text, pos), text[pos:]))
            break
        item, end = _decode_at(source, pos)
        values.append((item, text[pos:end].rstrip()))
        pos = _skip_space(text, end)
        while array and text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
    if array and not values and not closed:  # "[" and nothing more: a truncated file, not an empty day
        values.append((json.JSONDecodeError("the array is never closed", text, len(text)), text.strip()))
    return values


def _skip_space(text: str, pos: int) -> int:
    return _JSON_SPACE.match(text, pos).end()  # type: ignore[union-attr]  # matches the empty string too


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


class _JsonText:
    """A text read value by value at increasing positions: the line of a position and where reading
    resumes after it, each found by scanning on from the last position asked.

    Why: counted from the start of the text each time (as a JSONDecodeError of the whole text counts
    its line), a file of many bad values took time growing with the square of its size.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._pos, self._line, self._start = 0, 1, 0
        self._resumes: dict[str, tuple[int, int]] = {}  # indent -> (searched from, first "\n" found or -1)

    def line_at(self, pos: int) -> tuple[int, int]:
        """(line number, where that line starts) of ``pos``."""
        if pos < self._pos:
            self._pos, self._line, self._start = 0, 1, 0
        newline = self.text.rfind("\n", self._pos, pos)
        if newline >= 0:
            self._line += self.text.count("\n", self._pos, pos)
            self._start = newline + 1
        self._pos = pos
        return self._line, self._start

    def resume(self, pos: int, after: int | None = None) -> int:
        """The start of the first line after ``after`` (default ``pos``) that starts with ``{``
        indented as the line of ``pos``; the end of the text without one."""
        start = self.line_at(pos)[1]
        indent = _JSON_SPACE.match(self.text, start, pos).group().lstrip("\r\n")  # type: ignore[union-attr]
        after = pos if after is None else after
        since, found = self._resumes.get(indent, (len(self.text) + 1, -1))
        if since > after or 0 <= found < after:
            match = re.compile("\n" + re.escape(indent) + "{").search(self.text, after)
            found = match.start() if match else -1
            self._resumes[indent] = (after, found)
        return found + 1 if found >= 0 else len(self.text)

    def error(self, problem: Exception, pos: int) -> Exception:
        """``problem`` of the text from ``pos`` on, as an error of the whole text (its line and column)."""
        if not isinstance(problem, json.JSONDecodeError):
            return problem
        line, start = self.line_at(pos)
        where = pos + problem.pos
        column = problem.colno if problem.lineno > 1 else where - start + 1
        moved = json.JSONDecodeError.__new__(json.JSONDecodeError)  # __init__ would count the lines again
        ValueError.__init__(moved, f"{problem.msg}: line {line + problem.lineno - 1} column {column} (char {where})")
        moved.msg, moved.doc, moved.pos, moved.lineno, moved.colno = (
            problem.msg,
            self.text,
            where,
            line + problem.lineno - 1,
            column,
        )
        return moved


def _decode_at(source: _JsonText, pos: int) -> tuple[Any, int]:
    """The JSON value at ``pos`` and where it ends; an exception in its place when it does not parse.

    When the syntax is broken, where the value ends is unknown: reading resumes at the next line
    that starts with ``{`` indented as the broken value's line (a pretty-printer indents a nested
    object deeper, and a line break cannot be inside a JSON string), and the text skipped is the
    one malformed record; without such a line, the rest of the text is. The value is parsed in the
    text up to that line, widened while it runs on past its end, so that an error costs its
    window, not the text before it.
    """
    text = source.text
    resume = end = source.resume(pos)
    while True:
        whole = end >= len(text)
        doc, at = (text, pos) if whole else (text[pos:end], 0)
        item, stop = _raw_decode(doc, at)
        if stop is not None:
            return item, pos + stop - at
        if whole:
            return item, resume
        if not isinstance(item, json.JSONDecodeError) or item.pos < len(doc.rstrip(" \t\n\r")):
            return source.error(item, pos), resume
        end = source.resume(pos, after=pos + 2 * (end - pos))  # cut short by the window: a wider one


def _raw_decode(doc: str, at: int) -> tuple[Any, int | None]:
    """(value, its end) at ``at``; (the exception, None) where it does not parse.

    A repeated key stops the parser at the key, so the value is read again without the check to
    find its end: (the repeated key's error, the end).
    """
    problem: Exception
    try:
        return _DECODER.raw_decode(doc, at)
    except (ValueError, RecursionError) as exc:
        problem = exc
    if isinstance(problem, _DuplicateKey):
        try:
            return problem, _PLAIN_DECODER.raw_decode(doc, at)[1]
        except (ValueError, RecursionError) as exc:  # the key was in a nested object; what follows is broken too
            problem = exc
    return problem, None


def _json_record(index: int, item: Any, raw: str) -> tuple[int, dict | None, str, str | None]:
    """One record of a JSON file: the object, or why the value (or the exception that stopped it) is not one.

    Keys are matched by their normalised name (:func:`normalize_header`), so one export whose
    lines spell a key two ways (``Text`` and ``text``) reads as one column; an object holding
    both spellings cannot say which to read and is quarantined alone.
    """
    if isinstance(item, dict):
        record: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, value in item.items():
            name = _json_key(key)
            if name in spelled:
                if not name:  # a key such as "" or "[]" names no column that is ever read
                    continue
                return index, None, raw, f"keys {spelled[name]!r} and {key!r} name the same column; keep one"
            spelled[name] = key
            record[name] = value
        return index, record, raw, None
    if isinstance(item, BaseException):
        return index, None, raw, _json_reason(item)
    return index, None, raw, f"expected a JSON object, found {type(item).__name__}"


def _json_reason(problem: BaseException) -> str:
    """The quarantine reason for a JSON value that did not parse (in a value read from a whole
    file, the position is the file's line and column)."""
    if isinstance(problem, json.JSONDecodeError):
        line = f"line {problem.lineno} " if "\n" in problem.doc else ""
        return f"malformed JSON: {problem.msg} at {line}column {problem.colno}"
    if isinstance(problem, RecursionError):
        return f"malformed JSON: nested too deeply (lists or objects inside each other more than about {sys.getrecursionlimit()} levels)"
    return f"malformed JSON: {problem}"


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _json_int(digits: str) -> int | str:
    """json int hook: an integer longer than Python converts (4300 digits) stays its digits, so that
    a huge number in a column that is not read costs its record nothing, and one that is read is
    judged as that text (an unknown label, an unreadable timestamp), never a crash."""
    try:
        return int(digits)
    except ValueError:
        return digits


# shared: the hooks keep no state, and json.loads with hooks would build a decoder per line
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_int=_json_int)
_PLAIN_DECODER = json.JSONDecoder(parse_int=_json_int)


def _loads(line: str) -> Any:
    """One JSON value, or the exception that says why the text is not one (returned, not raised: a
    malformed record is its own problem, not its file's). Deep nesting stops the parser with
    RecursionError; JSONDecodeError and _DuplicateKey are ValueErrors."""
    try:
        return _DECODER.decode(line)
    except (ValueError, RecursionError) as exc:
        return exc


_HEADER_SPACE = re.compile(r"\s+")
# spaces, quotes and brackets at either end, in any mix and one-sided too: a stray quote in the header
# line (`"text,label`) is read as a character
_HEADER_EDGES = re.compile(r"^[\s\"'`\[\]]+|[\s\"'`\[\]]+$")


def normalize_header(name: Any) -> str:
    """Header name for matching: no BOM, brackets, quotes or outer spaces; lower case; spaces collapsed.

    ``[id]`` (SQL Server), ``"Text"``, ``\\ufeffLabel`` and `` Sent At `` all match their aliases.
    """
    text = _HEADER_EDGES.sub("", str(name).replace("\ufeff", ""))
    return _HEADER_SPACE.sub(" ", text).lower()


# every record of a JSON file spells the same few keys: normalise each spelling once (1 µs a call)
_json_key = functools.lru_cache(maxsize=4096)(normalize_header)


def _check_header(header: list[str]) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(header):
        key = normalize_header(name)
        if key and key in seen:
            raise UnreadableFile(
                f"duplicate column name {key!r} (columns {seen[key] + 1} and {position + 1}: "
                f"{header[seen[key]]!r}, {name!r}); rename one so it is clear which to read"
            )
        seen.setdefault(key, position)


def _find_column(header: list[str], aliases: list[str]) -> str | None:
    cleaned = {normalize_header(h): h for h in header}
    for alias in aliases:
        if normalize_header(alias) in cleaned:
            return cleaned[normalize_header(alias)]
    return None


# ---------------------------------------------------------------------------
# timestamps


_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?$")
_CJK_DATE = str.maketrans({"年": "-", "月": "-", "日": " ", "时": ":", "分": ":", "秒": "", "点": ":"})
_EPOCH_UNITS = ((1e11, 1.0, "seconds"), (1e14, 1e3, "milliseconds"), (1e17, 1e6, "microseconds"), (1e20, 1e9, "nanoseconds"))
TIMESTAMP_FORMATS = (
    "ISO 8601 (2026-03-01 10:00:00, optional offset, / or 年月日 separators, AM/PM or 上午/下午), compact yyyyMMdd[HHmm[ss]], "
    "epoch seconds/milliseconds/microseconds/nanoseconds, or Excel serial days (46022.5)"
)


def parse_timestamp(value: Any, zone: ZoneInfo) -> dt.datetime | None:
    """Parse the timestamp formats real exports use to an aware UTC datetime.

    ISO 8601 (``/`` and Chinese 年月日 separators too; a 12-hour clock with AM/PM or 上午/下午), compact
    ``yyyyMMddHHmmss``/``yyyyMMddHHmm``/``yyyyMMdd``, epoch numbers whose
    unit (s, ms, µs, ns) follows from their magnitude, and Excel serial days. Naive values are read in
    ``zone``. Returns None for empty values and raises ValueError saying what
    was seen for values that cannot be parsed.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    stamp: dt.datetime | None
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        if not text or text.lower() in _NO_TIME:
            return None
        stamp = _compact(text)
        if stamp is None:
            number = _as_number(text)
            if number is not None and _EXCEL_DAYS[0] <= number < _EXCEL_DAYS[1]:
                stamp = _EXCEL_EPOCH + dt.timedelta(days=number)  # local time, like the sheet showed it
            elif number is not None:
                return _from_epoch(number, text)
            else:
                stamp = _from_text(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=zone)
    try:
        return stamp.astimezone(dt.timezone.utc)
    except (OverflowError, ValueError):  # Python says only "date value out of range"
        raise ValueError(
            f"{stamp.replace(tzinfo=None).isoformat(' ')} ({stamp.tzinfo}) is {'before 0001-01-01' if stamp.year == 1 else 'after 9999-12-31'} in UTC, "
            "out of the range of dates Python holds"
        ) from None


# How exports write a missing value (SQL Server and Oracle NULL, MySQL \N, pandas NaN/NaT, R NA, Excel #N/A):
# an empty time, as an empty field is, not an unreadable one.
_NO_TIME = frozenset({"null", "\\n", "nan", "nat", "none", "na", "n/a", "#n/a", "-", "--"})


# A date column of a spreadsheet saved as numbers holds days since 1899-12-30. Serials of 1970-2099
# (25,569-73,050) would be epoch seconds of the first day of 1970, which no message carries.
_EXCEL_EPOCH = dt.datetime(1899, 12, 30)
_EXCEL_DAYS = (25569, 73051)


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _compact(text: str) -> dt.datetime | None:
    """yyyyMMdd[HHmm[ss]] when the digits form a real date between 1900 and 2199."""
    match = _COMPACT.match(text)
    if not match or not ("1900" <= match.group(1) < "2200"):
        return None
    parts = [int(p) for p in match.groups(default="0")]
    try:
        return dt.datetime(*parts)
    except ValueError as exc:
        raise ValueError(f"cannot parse {text!r} as compact yyyyMMdd[HHmm[ss]]: {exc}") from None


def _from_epoch(number: float, text: str) -> dt.datetime:
    if not math.isfinite(number):
        raise ValueError(f"not a finite epoch: {text!r}")
    for limit, divisor, _ in _EPOCH_UNITS:
        if abs(number) < limit:
            try:
                return dt.datetime.fromtimestamp(number / divisor, tz=dt.timezone.utc)
            except (OverflowError, OSError, ValueError):
                break
    raise ValueError(f"epoch value {text!r} is out of range for seconds, milliseconds, microseconds or nanoseconds")


# A 12-hour clock: "2026-03-01 10:30 PM", "2026/3/1 下午3:05" (Chinese exports write the half of the day
# before the time). 中午 is around noon: 中午12:30 is 12:30, 中午1点 is 13:00.
_MERIDIEM = re.compile(
    r"^(?P<date>.*?[\d日号])(?:\s+|\s*(?P<zh>上午|早上|凌晨|下午|晚上|中午)\s*)"
    r"(?P<clock>\d{1,2}(?:[:时点](?:\d{1,2}(?:[:分](?:\d{1,2}(?:\.\d+)?秒?)?)?分?)?)?)\s*(?P<en>[AaPp]\.?\s?[Mm]\.?)?$"
)


# "10:30:00 +08:00", "10:30:00 +0800" (logs, mail headers), "10:30:00 UTC", "10:30 GMT+08:00": an
# offset (or zone UTC) after a space, which fromisoformat does not read
_SPACED_OFFSET = re.compile(r"(\d:\d\d(?::\d\d(?:\.\d+)?)?)\s+(?:(UTC|GMT|Z)\s*)?([+-]\d{2}:?\d{2})?$", re.IGNORECASE)
_SHORT_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?=$|[ T])")


def _iso_candidate(text: str) -> str:
    """``text`` in the shape fromisoformat reads, where it only differs in spelling: / and 年月日
    separators, a single-digit month or day, an offset after a space."""
    candidate = text.replace("/", "-").translate(_CJK_DATE).strip().rstrip(":")
    candidate = _SHORT_DATE.sub(lambda m: f"{m[1]}-{int(m[2]):02d}-{int(m[3]):02d}", candidate)
    offset = _SPACED_OFFSET.search(candidate)
    if offset and (offset[2] or offset[3]):
        candidate = candidate[: offset.start()] + offset[1] + (offset[3] or "+00:00")
    return candidate


def _from_text(text: str) -> dt.datetime:
    match = _MERIDIEM.match(text)
    if match and (match["zh"] or match["en"]) and not (match["zh"] and match["en"]):
        return _twelve_hour(text, match)
    candidate = _iso_candidate(text)
    try:
        return dt.datetime.fromisoformat(candidate)
    except ValueError:
        pass
    try:  # a single-digit month/day/hour ("2026-3-1 9:05") is common in hand-made exports
        date, _, clock = candidate.partition(" ")
        year, month, day = date.split("-")
        if len(year) != 4:  # 1/3/26 is not the year 1 (nor readable: month or day first?)
            raise ValueError
        y, m, d = int(year), int(month), int(day)
        hms = [int(p) for p in clock.split(":")] if clock else []
        return dt.datetime(y, m, d, *hms)
    except (ValueError, TypeError):
        raise ValueError(f"cannot parse {text!r} as a timestamp; expected {TIMESTAMP_FORMATS}") from None


def _twelve_hour(text: str, match: re.Match[str]) -> dt.datetime:
    try:
        stamp = _from_text(f"{match['date']} {match['clock']}")
    except ValueError:
        raise ValueError(f"cannot parse {text!r} as a timestamp; expected {TIMESTAMP_FORMATS}") from None
    marker = (match["en"] or "").lower().replace(".", "").replace(" ", "")
    afternoon = marker == "pm" or match["zh"] in ("下午", "晚上")
    if match["zh"] == "中午":
        hour = stamp.hour if stamp.hour >= 11 else stamp.hour + 12
    elif match["zh"] == "晚上" and stamp.hour == 12:  # 晚上12点 is midnight, the start of the next day
        return stamp.replace(hour=0) + dt.timedelta(days=1)
    elif 1 <= stamp.hour <= 12 or (stamp.hour == 0 and not afternoon):
        hour = stamp.hour % 12 + (12 if afternoon else 0)
    else:
        raise ValueError(f"cannot parse {text!r} as a timestamp: hour {stamp.hour} on a 12-hour clock")
    return stamp.replace(hour=hour)


def combine_date_time(date: Any, time: Any) -> Any:
    """Join separate date and time column values ("2026-03-01" + "10:00:00") into one timestamp value.

    A non-empty time is never dropped: what cannot be joined into a known form is
    passed on joined anyway, for the timestamp parser to read or quarantine with
    its reason (a time of day silently dropped would put the message at midnight).
    """
    if time is None or (isinstance(time, float) and math.isnan(time)) or not str(time).strip():
        return date
    if date is None or (isinstance(date, float) and math.isnan(date)) or not str(date).strip():
        return None if _looks_like_time(time) else time
    if isinstance(date, dt.datetime) and date.tzinfo is None and date.time() == dt.time(0):
        date = date.date()  # a date column exported as a datetime at midnight
    if isinstance(date, dt.datetime):
        return date  # the date column already holds a full timestamp
    if isinstance(date, dt.date) and isinstance(time, dt.time):
        return dt.datetime.combine(date, time)
    date_text, time_text = str(date).strip(), str(time).strip()
    midnight = _MIDNIGHT.fullmatch(date_text)
    if midnight:
        date_text = midnight.group(1)
    elif _looks_like_time(date_text) or " " in date_text or "T" in date_text:
        return date_text  # the date column holds a full timestamp (or no date): read on its own
    if _STARTS_WITH_DATE.match(time_text):
        return time_text  # the time column holds a full timestamp
    clock = _CLOCK.fullmatch(time_text)
    if _EXCEL_DAY.fullmatch(date_text) and clock:  # Excel serial day + time of day = serial day with a fraction
        h, m, sec = (float(v or 0) for v in clock.groups())
        return str(float(date_text) + (h * 3600 + m * 60 + sec) / 86400)
    return f"{date_text} {time_text}"


def _looks_like_time(value: Any) -> bool:
    return isinstance(value, dt.time) or bool(
        re.fullmatch(r"\d{1,2}[:时点]\d{1,2}(?:分|[:分]\d{1,2}(?:\.\d+)?秒?)?", str(value).strip())
    )


_MIDNIGHT = re.compile(r"(.+?)[ T]0?0:00(?::00(?:\.0+)?)?")
_STARTS_WITH_DATE = re.compile(r"\d{4}\s*[-/年.]\s*\d{1,2}")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d+)?))?")
_EXCEL_DAY = re.compile(r"\d{5}(?:\.0+)?")


# ---------------------------------------------------------------------------
# public entry point


def stable_message_id(source_file: str, index: int) -> str:
    return hashlib.blake2b(f"{source_file}\x00{index}".encode(), digest_size=8).hexdigest()


@dataclass
class MessageStream:
    """One file read batch by batch: iterate for (rows, quarantine) frames of at most ``batch_rows``
    records each; ``encoding``, ``file_format`` and ``error`` are known before the first batch,
    the counts and ``notes`` once the last one has been read."""

    source_file: str
    batches: Iterator[tuple[pl.DataFrame, pl.DataFrame]]
    encoding: str | None = None
    file_format: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    parsed: int = 0
    quarantined: int = 0

    def __iter__(self) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        for rows, quarantine in self.batches:
            self.parsed += rows.height
            self.quarantined += quarantine.height
            yield rows, quarantine
        if self.error is None and self.parsed + self.quarantined == 0:
            self.notes.append("header only: no records")

    @property
    def rows_read(self) -> int:
        return self.parsed + self.quarantined


def stream_messages(
    path: str | Path,
    config: IngestConfig,
    *,
    timezone: str = "Asia/Shanghai",
    source_file: str | None = None,
    require_label: bool = True,
    batch_rows: int | None = None,
) -> MessageStream:
    """Read one file into canonical rows (``RAW_SCHEMA``) and quarantine rows, batch by batch.

    CSV and TSV files are read in batches of ``batch_rows`` lines (default
    ``batches.DEFAULT_BATCH_ROWS``), so memory grows with the batch, not the
    file; clean batches take a vectorised path (see :mod:`fraud_assets.batches`).
    Parquet files are read ``batch_rows`` rows at a time, and so are plain
    JSON Lines files (see :func:`_stream_json_lines`); other JSON files (an
    array, pretty-printed objects, a malformed line, another encoding) are
    read whole and come as one batch. Row-level problems
    quarantine that record with a reason; file-level problems are in
    ``error``, with no batches.
    """
    from fraud_assets import batches

    path = Path(path)
    source = source_file or path.name
    if path.suffix.lower() in COMPRESSED_SUFFIXES:  # day.csv.gz: read as day.csv
        return _stream_compressed(path, config, source, timezone=timezone, require_label=require_label, batch_rows=batch_rows)
    opened = None
    try:
        zone = ZoneInfo(check_timezone(timezone, "timezone"))
        suffix = path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            return _stream_parquet(path, config, zone, source, require_label, batch_rows or batches.DEFAULT_BATCH_ROWS)
        if suffix in JSON_SUFFIXES:
            lines = _stream_json_lines(path, config, zone, source, require_label, batch_rows or batches.DEFAULT_BATCH_ROWS)
            if lines is not None:
                return lines
        if suffix in TEXT_SUFFIXES - JSON_SUFFIXES:
            opened = batches.DelimitedFile.open(path, suffix)
        if opened is None:
            parsed = _read(path, config, zone, source, require_label)
            return MessageStream(source, iter([(parsed.rows, parsed.quarantine)]), parsed.encoding, parsed.file_format)
        columns = _check_columns(opened.layout.header, [], "csv", config, require_label)
    except (UnreadableFile, OSError) as exc:
        if opened is not None:
            opened.close()
        reason = str(exc) if isinstance(exc, UnreadableFile) else f"cannot open file: {exc}"
        return MessageStream(source, iter(()), error=reason)
    shape = functools.partial(_record_shape, config=config, zone=zone)
    header = opened.layout.header

    def frames() -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        for first, clean, records in opened.batches(shape, batch_rows or batches.DEFAULT_BATCH_ROWS):
            if clean is not None:
                yield batches.fast_frames(clean, first, header, columns, config, zone, source)
            else:
                yield _as_frames(*_to_rows(records or [], header, columns, config, zone, source))

    return MessageStream(source, frames(), opened.encoding, "tsv" if suffix == ".tsv" else "csv")


def _stream_compressed(path: Path, config: IngestConfig, source_file: str, **options: Any) -> MessageStream:
    """:func:`stream_messages` of the file inside a gzip, bzip2 or xz file.

    It is decompressed into a temporary file first, so that the batch readers
    stream it as they stream any file (memory bounded by the batch, disk by the
    uncompressed size); the temporary file goes when the last batch has been read.
    """
    packing = path.suffix.lower()
    # archives of stop 19 and before kept only the last suffix (<key>.gz): the original name says what is inside
    inner = path.with_suffix("").suffix.lower() or Path(source_file).with_suffix("").suffix.lower()
    if inner not in SUPPORTED_SUFFIXES:
        kind = f"a {inner} file" if inner else "a file without a type suffix"
        error = f"unsupported file type: {kind} inside {packing}; expected a name such as day.csv{packing}"
        return MessageStream(source_file, iter(()), error=error)
    work = Path(tempfile.mkdtemp(prefix="fraud-assets-decompressed-"))
    target = work / f"data{inner}"
    room = shutil.disk_usage(work).free - _DISK_RESERVE  # a small file can unpack to more than the disk holds
    try:
        with _DECOMPRESS[packing](path, "rb") as packed, target.open("wb") as out:
            while block := packed.read(1 << 20):
                room -= out.write(block)
                if room < 0:
                    raise UnreadableFile(
                        f"the {COMPRESSED_SUFFIXES[packing]} file unpacks to more than {tempfile.gettempdir()} can hold "
                        f"(keeping {_DISK_RESERVE >> 30} GiB free); unpack it into the landing folder instead"
                    )
    except (UnreadableFile, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:  # corrupt, truncated, too large
        shutil.rmtree(work, ignore_errors=True)
        error = (
            str(exc) if isinstance(exc, UnreadableFile) else f"cannot decompress the {COMPRESSED_SUFFIXES[packing]} file: {exc}"
        )
        return MessageStream(source_file, iter(()), error=error)
    stream = stream_messages(target, config, source_file=source_file, **options)
    if stream.error:  # nothing to read: no batch would ever remove the copy
        shutil.rmtree(work, ignore_errors=True)
        return stream

    def batches_then_remove(batches: Iterator[tuple[pl.DataFrame, pl.DataFrame]]) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        try:
            yield from batches
        finally:
            shutil.rmtree(work, ignore_errors=True)

    stream.batches = batches_then_remove(stream.batches)
    if stream.file_format:
        stream.file_format += f" ({COMPRESSED_SUFFIXES[packing]})"
    return stream


def read_messages(
    path: str | Path,
    config: IngestConfig,
    *,
    timezone: str = "Asia/Shanghai",
    source_file: str | None = None,
    require_label: bool = True,
    batch_rows: int | None = None,
) -> ParsedFile:
    """Parse one file into canonical rows (``RAW_SCHEMA``) and quarantine rows, all in memory.

    Row-level problems (wrong field count, malformed JSON line, undecodable
    bytes, unparseable timestamp) quarantine that record with a reason; label
    and text checks are left to validation so they appear in the
    Great Expectations results. File-level problems are returned in
    ``error`` with empty frames. See :func:`stream_messages` for large files.
    """
    stream = stream_messages(
        path, config, timezone=timezone, source_file=source_file, require_label=require_label, batch_rows=batch_rows
    )
    parts = list(stream)
    rows = pl.concat([empty_raw()] + [r for r, _ in parts])
    quarantine = pl.concat([empty_quarantine()] + [q for _, q in parts])
    return ParsedFile(stream.source_file, rows, quarantine, stream.encoding, stream.file_format, stream.error, stream.notes)


_SPREADSHEET_SUFFIXES = {".xlsx", ".xls", ".xlsm", ".ods"}
_SPREADSHEET_HINT = "; save the sheet as CSV UTF-8 (Excel: File > Save As > CSV UTF-8) and drop that file instead"


def _read(path: Path, config: IngestConfig, zone: ZoneInfo, source: str, require_label: bool) -> ParsedFile:
    """The whole-file reader for text formats (JSON, and delimited files the batch reader declines): one batch."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnreadableFile(
            f"unsupported file type {suffix or '(none)'}; expected one of {sorted(SUPPORTED_SUFFIXES)}, "
            f"or one of those compressed ({', '.join(COMPRESSED_SUFFIXES)})"
            + (_SPREADSHEET_HINT if suffix in _SPREADSHEET_SUFFIXES else "")
        )
    header, records, file_format, encoding = _load_records(path, suffix, config, zone)
    if not header and not records:  # "[]": a JSON export of a day without messages, like a CSV of its header only
        return ParsedFile(source, empty_raw(), empty_quarantine(), encoding, file_format)
    columns = _check_columns(header, records, file_format, config, require_label)
    return ParsedFile(source, *_as_frames(*_to_rows(records, header, columns, config, zone, source)), encoding, file_format)


def _as_frames(rows: list[dict], quarantine: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The (rows, quarantine) frames of :func:`_to_rows`' dicts."""
    return (
        pl.DataFrame(rows, schema=RAW_SCHEMA) if rows else empty_raw(),
        pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA) if quarantine else empty_quarantine(),
    )


_ALIAS_HINT = (
    "; if one of the file's columns holds the {0}, add its name to [columns] {0} in a copy of "
    "ingest_config.toml and point FRAUD_INGEST_CONFIG at the copy"
)


def _check_columns(
    header: list[str], records: list, file_format: str, config: IngestConfig, require_label: bool
) -> dict[str, Any]:
    """The resolved columns of a header; UnreadableFile when names repeat or text/label are missing."""
    _check_header(header)
    columns = _resolve_columns(header, config)
    for role in ("text", "label") if require_label else ("text",):
        if columns.get(role) is None:
            hint = _json_wrapper_hint(records) if file_format == "jsonl" and role == "text" else ""
            raise UnreadableFile(
                f"no {role} column: header {header[:20]} has none of {config.columns[role]}{hint or _ALIAS_HINT.format(role)}"
            )
    return columns


def _load_records(path: Path, suffix: str, config: IngestConfig, zone: ZoneInfo) -> tuple[list[str], list, str, str | None]:
    """(header, records, format, encoding) of a text file; UnreadableFile when it cannot be read at all."""
    data = path.read_bytes()
    if not data.strip():
        raise UnreadableFile("empty file (0 bytes)" if not data else "empty file (only whitespace)")
    text, encoding = decode_bytes(data)
    if _control_share(text) > 0.05:
        raise UnreadableFile("binary content (control characters), not a text file")
    if suffix in JSON_SUFFIXES or _looks_like_json(text):
        return (*_iter_json(text), "jsonl", encoding)
    header, records = split_records(text, suffix, lambda h: _record_shape(h, config, zone))
    return header, records, "tsv" if suffix == ".tsv" else "csv", encoding


def _looks_like_json(text: str) -> bool:
    """A .csv/.txt holding JSON: its first line (or the whole text, for an array) parses as JSON.

    A header such as ``[id],text,label`` (SQL Server exports) starts with a
    bracket but is not JSON.
    """
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return False
    first = stripped.split("\n", 1)[0]
    return not isinstance(_loads(first), json.JSONDecodeError) or not isinstance(_loads(stripped), json.JSONDecodeError)


def _json_wrapper_hint(records: list) -> str:
    if len(records) == 1 and isinstance(records[0][1], dict):
        nested = [k for k, v in records[0][1].items() if isinstance(v, (list, dict))]
        if nested:
            return (
                f"; the file is one JSON object whose {nested[0]!r} holds nested records: "
                "expected JSON Lines (one object per line) or an array of objects"
            )
    return ""


def _resolve_columns(header: list[str], config: IngestConfig) -> dict[str, Any]:
    """Canonical name -> header column; ``sent_at`` may be a (date, time) pair of columns."""
    columns: dict[str, Any] = {name: _find_column(header, aliases) for name, aliases in config.columns.items()}
    date, time = columns.pop("date", None), columns.pop("time", None)
    if date is not None and time is not None and date != time and columns.get("sent_at") in (None, date, time):
        columns["sent_at"] = (date, time)
    return columns


_STRUCTURED = ("message_id", "label", "sent_at", "date", "time")


def _record_shape(header: list[str], config: IngestConfig, zone: ZoneInfo):
    """(plausible, text index) for the CSV splitter: does a list of fields read as a complete record
    of this file (field count, known label, readable timestamp)? The text column may take back
    unquoted delimiters only when every other column holds structured values (id, label, time)."""
    columns = _resolve_columns(header, config)
    label = header.index(columns["label"]) if columns.get("label") is not None else None
    stamp = header.index(columns["sent_at"]) if isinstance(columns.get("sent_at"), str) else None

    def plausible(fields: list[str]) -> bool:
        # A structured value must say that a line is a record of its own: a known label (an empty one
        # does not: a multi-line text as pandas and Excel write it has inner lines such as `Call us
        # now,`) or, in a file without labels (one to score), a readable time. With neither, nothing
        # tells a stray quote from a multi-line field, and the quotes are taken as written.
        if len(fields) != len(header):
            return False
        if label is not None and not (fields[label].strip() and config.label_is_known(fields[label])):
            return False
        if label is None and (stamp is None or not fields[stamp].strip()):
            return False
        try:
            return stamp is None or not fields[stamp].strip() or parse_timestamp(fields[stamp], zone) is not None
        except (ValueError, OverflowError, OSError):
            return False

    structured = {normalize_header(h) for name in _STRUCTURED for h in config.columns.get(name, [])}
    others = [h for h in header if h != columns.get("text") and normalize_header(h)]  # blank names: empty columns
    free_text = columns.get("text") is not None and label is not None and all(normalize_header(h) in structured for h in others)
    return plausible, header.index(columns["text"]) if free_text else None


REPEATED_HEADER = "the header line again (files joined one after another?): not a record"


def repeats_header(fields: list[str], header: list[str]) -> bool:
    """True for a record that is the header again, as ``cat a.csv b.csv`` leaves one. Where every
    other label value is a fraud category it would otherwise be read as a fraud message."""
    return len(fields) == len(header) and all(normalize_header(f) == normalize_header(h) for f, h in zip(fields, header))


def _to_rows(records: list, header: list[str], columns: dict[str, Any], config: IngestConfig, zone: ZoneInfo, source: str):
    positions = {h: i for i, h in enumerate(header)}
    rows: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    for index, record, raw, error in records:
        raw_text = _printable(raw.rstrip("\r\n"))[:_RAW_PREVIEW_CHARS]
        if error is None and record is not None:
            # used only within this iteration, so the late binding of record is harmless
            get = (lambda col: record.get(col)) if isinstance(record, dict) else (lambda col: record[positions[col]])  # noqa: B023
            values = {
                name: (
                    combine_date_time(get(col[0]), get(col[1]))
                    if isinstance(col, tuple)
                    else get(col)
                    if col is not None
                    else None
                )
                for name, col in columns.items()
            }
            values = {name: _decode_binary(value) for name, value in values.items()}
            error = REPEATED_HEADER if isinstance(record, list) and repeats_header(record, header) else _row_error(values)
        if error is not None:
            quarantine.append(dict(source_file=source, source_row=index, stage="raw_messages", reason=error, raw=raw_text))
            continue
        try:
            sent_at = parse_timestamp(values.get("sent_at"), zone)
        except (ValueError, OverflowError, OSError) as exc:
            quarantine.append(
                dict(source_file=source, source_row=index, stage="raw_messages", reason=f"sent_at: {exc}", raw=raw_text)
            )
            continue
        label, category = config.map_label(values.get("label"))
        fraud_type = None if config.is_placeholder(values.get("fraud_type")) else _as_text(values.get("fraud_type"))
        message_id = _as_text(values.get("message_id")) or stable_message_id(source, index)
        rows.append(
            dict(
                message_id=message_id,
                text=_as_text(values.get("text"), keep_empty=True),
                label=label,
                label_raw=_as_text(values.get("label")),
                sent_at=sent_at,
                fraud_type=(fraud_type or category) if label == 1 else None,
                source_file=source,
                source_row=index,
                raw=raw_text,
            )
        )
    return rows, quarantine


def _decode_binary(value: Any) -> Any:
    """Parquet binary text as UTF-8; undecodable bytes stay bytes (quarantined by ``_row_error``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    return value


def _row_error(values: dict[str, Any]) -> str | None:
    for name, value in values.items():
        if isinstance(value, str) and _has_undecodable(value):
            return f"{name}: undecodable bytes (not valid in the file's encoding)"
        if isinstance(value, str) and (lone := _SURROGATE.search(value)):
            return f"{name}: \\u{ord(lone.group()):04x} is half of a UTF-16 surrogate pair, not a character (a broken JSON escape, or UTF-16 text cut inside a character)"
        if isinstance(value, bytes):
            return f"{name}: binary value that is not valid UTF-8 text ({len(value)} bytes)"
        if isinstance(value, (dict, list, tuple)):
            kind = {"dict": "object", "list": "list", "tuple": "list"}[type(value).__name__]
            return f"{name}: expected a single value, found a nested {kind} ({_printable(json.dumps(value, ensure_ascii=False, default=_json_default))[:80]})"
    return None


def _as_text(value: Any, keep_empty: bool = False) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    if not keep_empty and not text.strip():
        return None
    return text if keep_empty else text.strip()


def _parquet_records(frame: pl.DataFrame, first: int, read: dict[str, str]) -> list[tuple[int, dict | None, str, str | None]]:
    """The records of Parquet rows numbered from ``first``: (row, values, raw JSON, error).

    A value Python cannot hold (a date after the year 9999, ...) is its text in the record, and
    the record's error when ``read`` (header name -> canonical name) says its column is read.
    """
    frame = frame.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.Utf8))
    frame, odd = _dates_beyond_python(frame)
    records: list[tuple[int, dict | None, str, str | None]] = []
    for i, row in enumerate(_python_rows(frame, odd)):
        problems = odd.get(i, {})
        row.update({name: text for name, (text, _) in problems.items()})
        error = next((f"{read[name]}: {text} {why}" for name, (text, why) in problems.items() if name in read), None)
        records.append((first + i, None if error else row, json.dumps(row, ensure_ascii=False, default=_json_default), error))
    return records


_PANIC = pl.exceptions.PanicException  # polars' Rust panics derive from BaseException, not Exception
_PYTHON_DAYS = (-719_162, 2_932_896)  # 0001-01-01 and 9999-12-31 in days since 1970
_UNIT_PER_DAY = {"ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
_INT64 = (-(1 << 63), (1 << 63) - 1)
_BEYOND_PYTHON = "is out of range: Python holds dates of the years 1 to 9999 only"
# Shown in its time zone, a timestamp moves up to a day, past the end of that range from inside it.
_NEAR_THE_EDGE = (
    "is within a day of the end of the dates Python holds (0001-01-01 to 9999-12-31): too near to convert to its time zone"
)


def _python_range(dtype: pl.DataType) -> tuple[int, int, int, str]:
    """(lowest, highest stored number Python can hold, stored units per day, unit name) of a date
    or timestamp column; a day narrower at each end for a timestamp with a time zone."""
    unit = dtype.time_unit if isinstance(dtype, pl.Datetime) else "days"
    per_day = _UNIT_PER_DAY.get(unit, 1)
    margin = 1 if isinstance(dtype, pl.Datetime) and dtype.time_zone else 0
    low = (_PYTHON_DAYS[0] + margin) * per_day
    high = (_PYTHON_DAYS[1] + 1 - margin) * per_day - 1  # the last instant of the last day
    return max(_INT64[0], low), min(_INT64[1], high), per_day, unit


def _dates_beyond_python(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[int, dict[str, tuple[str, str]]]]:
    """The frame with each date and timestamp outside the years 1-9999 set to null, and
    {row: {column: (the stored value as text, why)}} for them.

    Why: polars holds such values, but converting one to Python panics (a timestamp) or raises
    (a date), and for its whole batch; found by their stored numbers, they cost no panic.
    """
    odd: dict[int, dict[str, tuple[str, str]]] = {}
    for name, dtype in frame.schema.items():
        if dtype != pl.Date and not isinstance(dtype, pl.Datetime):
            continue
        low, high, per_day, unit = _python_range(dtype)
        stored = frame[name].to_physical()
        beyond = ((stored < low) | (stored > high)).fill_null(False)
        if not beyond.any():
            continue
        first, last = _PYTHON_DAYS[0] * per_day, (_PYTHON_DAYS[1] + 1) * per_day - 1
        for i in beyond.arg_true().to_list():
            year = 1970 + stored[i] / per_day / 365.2425
            text = f"{stored[i]} {unit} after 1970-01-01 (about the year {math.floor(year):,})"
            why = _NEAR_THE_EDGE if first <= stored[i] <= last else _BEYOND_PYTHON
            odd.setdefault(i, {})[name] = (text, why)
        frame = frame.with_columns(pl.when(beyond).then(None).otherwise(pl.col(name)).alias(name))
    return frame, odd


def _python_rows(frame: pl.DataFrame, odd: dict[int, dict[str, tuple[str, str]]]) -> list[dict[str, Any]]:
    """The rows as dicts of Python values. When the batch does not convert (a value that
    :func:`_dates_beyond_python` did not foresee), it is converted column by column, and a failing
    column value by value: a value that fails is None, with its text and the error in ``odd``."""
    try:
        return list(frame.iter_rows(named=True))
    except (Exception, _PANIC):
        pass
    columns: dict[str, list[Any]] = {}
    for name in frame.columns:
        try:
            columns[name] = frame[name].to_list()
        except (Exception, _PANIC):
            columns[name] = [_python_value(frame[name], i, odd) for i in range(frame.height)]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def _python_value(series: pl.Series, i: int, odd: dict[int, dict[str, tuple[str, str]]]) -> Any:
    try:
        return series.slice(i, 1).to_list()[0]
    except (Exception, _PANIC) as exc:
        try:
            text = str(series.slice(i, 1).cast(pl.Utf8)[0])
        except (Exception, _PANIC):
            text = f"a {series.dtype} value"
        odd.setdefault(i, {})[series.name] = (text, f"cannot be read ({type(exc).__name__}: {exc})")
        return None


def _for_polars(batch: Any, as_text: set[int]) -> Any:
    """The batch with each string column that holds bytes which are not UTF-8 read as binary,
    and the columns at the positions in ``as_text`` (:func:`_polars_cannot_take`) as text.

    Why: neither pyarrow nor polars checks a string column's bytes when
    reading, so a writer that did not check either left values that made
    polars panic when the rows were read. As binary, each such value
    quarantines its own record, as a binary column's do. A column polars
    cannot take at all (``decimal256``) made it panic for the whole file,
    mapped or not; as text it is read, and kept in ``raw``.
    """
    import pyarrow as pa

    columns = []
    for position, column in enumerate(batch.columns):
        if position in as_text:
            column = _arrow_text(column)
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                column = column.view(pa.binary() if pa.types.is_string(column.type) else pa.large_binary())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _polars_cannot_take(batch: Any) -> set[int]:
    """Positions of the batch's columns whose type polars cannot take (``decimal256``, a list of
    them, intervals, ...): whether it can depends on the type, so an empty slice tells."""
    cannot = set()
    for position, column in enumerate(batch.columns):
        try:
            pl.Series(column.slice(0, 0))
        except (Exception, _PANIC):
            cannot.add(position)
    return cannot


def _arrow_text(column: Any) -> Any:
    """A pyarrow column as strings: pyarrow's cast, or for nested types each value as JSON, or where
    even that fails (a time zone pyarrow does not know), each value on its own; a value that does not
    convert is the placeholder "a <type> value", so its column never costs the file."""
    import pyarrow as pa

    try:
        return column.cast(pa.string())
    except (Exception, _PANIC):
        pass
    try:
        values = column.to_pylist()
    except (Exception, _PANIC):
        return pa.array([_arrow_value_text(column[i]) for i in range(len(column))], pa.string())
    return pa.array(
        [None if v is None else json.dumps(v, ensure_ascii=False, default=_json_default) for v in values], pa.string()
    )


def _arrow_value_text(scalar: Any) -> str | None:
    if not scalar.is_valid:
        return None
    try:
        return json.dumps(scalar.as_py(), ensure_ascii=False, default=_json_default)
    except (Exception, _PANIC):
        return f"a {scalar.type} value"


def _stream_parquet(
    path: Path, config: IngestConfig, zone: ZoneInfo, source: str, require_label: bool, batch_rows: int
) -> MessageStream:
    """A Parquet file ``batch_rows`` rows at a time.

    A first pass reads (and discards) every batch, so a file that is corrupt
    in its last row group is quarantined whole, as the whole-file reader
    would, before any of its rows are written; decoding is cheap next to
    the per-row conversion that follows.
    """
    import pyarrow.parquet as pq

    def read() -> Iterator[pl.DataFrame]:
        as_text: set[int] | None = None
        with pq.ParquetFile(path) as handle:
            for batch in handle.iter_batches(batch_size=batch_rows):
                as_text = _polars_cannot_take(batch) if as_text is None else as_text
                yield pl.DataFrame(_for_polars(batch, as_text))

    try:
        if path.stat().st_size == 0:
            raise UnreadableFile("empty file (0 bytes)")
        try:
            header = pq.read_schema(path).names
            for _ in read():
                pass
        except (Exception, _PANIC) as exc:  # pyarrow and polars raise several error types for corrupt files
            raise UnreadableFile(f"cannot read Parquet: {exc}") from exc
        columns = _check_columns(header, [], "parquet", config, require_label)
        read_as = {part: name for name, col in columns.items() if col for part in (col if isinstance(col, tuple) else (col,))}
    except (UnreadableFile, OSError) as exc:
        reason = str(exc) if isinstance(exc, UnreadableFile) else f"cannot open file: {exc}"
        return MessageStream(source, iter(()), error=reason)

    def frames() -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        first = 0
        for frame in read():
            yield _as_frames(*_to_rows(_parquet_records(frame, first, read_as), header, columns, config, zone, source))
            first += frame.height

    return MessageStream(source, frames(), None, "parquet")


def _stream_json_lines(
    path: Path, config: IngestConfig, zone: ZoneInfo, source: str, require_label: bool, batch_rows: int
) -> MessageStream | None:
    """A plain JSON Lines file ``batch_rows`` records at a time; None when it needs the whole-file reader.

    Plain means: strict UTF-8 without a byte-order mark, no control
    characters, not an array, and every non-blank line one JSON value without
    repeated keys. Anything else (a GB18030 export, pretty-printed objects,
    one malformed line, ...) returns None, and the whole-file reader decides,
    as before: what a malformed line means can depend on the whole text (it
    may be part of a pretty-printed object). A first pass
    (:func:`_json_lines_header`) parses every line and keeps only the keys,
    so memory grows with the batch, not the file; the records then match the
    whole-file reader's exactly (same rows, ``source_row`` and quarantine).
    """
    try:
        header = _json_lines_header(path)
        if header is None:
            return None
        columns = _check_columns(header, [], "jsonl", config, require_label)
    except (UnicodeDecodeError, UnreadableFile, OSError):
        return None

    def frames() -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        records: list[tuple[int, dict | None, str, str | None]] = []
        first = 0
        for line in _json_lines(path):
            if not line.strip():
                continue
            records.append(_json_record(first + len(records), _loads(line), line))
            if len(records) == batch_rows:
                yield _as_frames(*_to_rows(records, header, columns, config, zone, source))
                first, records = first + len(records), []
        if records:
            yield _as_frames(*_to_rows(records, header, columns, config, zone, source))

    return MessageStream(source, frames(), "utf-8", "jsonl")


def _json_lines(path: Path) -> Iterator[str]:
    """Every line of a file, blank ones included, decoded as strict UTF-8 (UnicodeDecodeError otherwise).

    Split on ``\\n`` only, as the whole-file reader splits (U+2028 and U+0085
    are valid inside JSON strings).
    """
    with path.open("rb") as handle:
        for raw in handle:
            yield raw.removesuffix(b"\n").decode("utf-8")


def _json_lines_header(path: Path) -> list[str] | None:
    """The (normalised) keys of a plain JSON Lines file in order of first appearance; None when it is not plain.

    Control characters anywhere (blank lines included: the whole-file reader
    counts them), a byte-order mark, a leading ``[`` (an array), a line that
    does not parse or no line at all: None. Invalid UTF-8: UnicodeDecodeError.
    """
    keys: dict[str, None] = {}
    count = 0
    with path.open("rb") as handle:
        if handle.read(3).startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
            return None
    for line in _json_lines(path):
        if _CONTROL.search(line):
            return None
        if not line.strip():
            continue
        item = _loads(line)
        if isinstance(item, Exception) or (count == 0 and line.lstrip().startswith("[")):
            return None
        if isinstance(item, dict):
            keys.update(dict.fromkeys(_json_key(key) for key in item))  # as _json_record names them
        count += 1
    return list(keys) if count else None


def _json_default(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return _printable(bytes(value).decode("utf-8", errors="surrogateescape"))
    return str(value)


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
