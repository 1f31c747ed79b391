"""Reading a file in batches gives exactly what reading it whole gives.

The batched reader (``fraud_assets.batches``) takes a vectorised path for
clean batches and the record-by-record reader for dirty ones. These tests
compare every row, quarantine reason and ``source_row`` with the whole-file
reader on randomly assembled hostile files, on every batch size down to one
line, and on the shared real datasets.
"""

import os
import random
import zoneinfo
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraud_assets import readers
from fraud_assets.batches import DelimitedFile, parse_timestamps, sniff_encoding
from fraud_assets.readers import IngestConfig, read_messages, stream_messages
from tests.conftest import SHARED

CONFIG = IngestConfig.load()
ZONE = zoneinfo.ZoneInfo("Asia/Shanghai")
FUZZ_SEEDS = int(os.environ.get("FRAUD_FUZZ_SEEDS", "12"))  # 400 pass too (3.5 min)

# Pieces real exports are made of; a file is a random sequence of them.
CLEAN = [
    "message {i} about a parcel,{y},2026-03-01 10:{m:02d}:00",
    '"quoted, with a comma {i}",{y},2026-03-01T10:{m:02d}:05',
    '"a ""doubled"" quote {i}",{y},2026-03-01 10:{m:02d}',
    "您的快递{i}已到，请取件,{y},2026-10-25 01:{m:02d}:00",
    "no time {i},{y},",
    "  spaced id text {i} ,{y},2026-03-01 10:00:00",
]
DIRTY = [
    '"stray opening quote {i},{y},2026-03-01 10:00:00',
    'closing" stray {i},{y},2026-03-01 10:00:00',
    '"multi line {i}\ncontinued, still quoted\nend",{y},2026-03-01 10:00:00',
    "trailing comma {i},{y},2026-03-01 10:00:00,",
    "unquoted,commas,in text {i},{y},2026-03-01 10:00:00",
    "bad time {i},{y},2026-02-30 10:00:00",
    "epoch {i},{y},1772330400",
    "compact {i},{y},20260301101500",
    "placeholder label {i},N/A,2026-03-01 10:00:00",
    "unknown label {i},maybe,2026-03-01 10:00:00",
    "too,many,fields,here {i},{y},x,y",
    "",
    "   ",
    "control\x07char {i},{y},2026-03-01 10:00:00",
    "bare\rreturn {i},{y},2026-03-01 10:00:00",
    '"never closed {i},{y},2026-03-01 10:00:00\nnext line {i},{y},2026-03-01 10:00:00',
    "年月日 {i},{y},2026年3月1日 10时05分",
    "offset {i},{y},2026-03-01T10:00:00+08:00",
    "leap second {i},{y},2026-03-01 10:00:60",
    ",,",
    " , ,",
    "text,label,sent_at",
    '"pandas multi line {i},\ninner line,,\nend",{y},2026-03-01 10:00:00',
]


def hostile_file(rng: random.Random, rows: int, dirty_share: float) -> str:
    header = rng.choice(["text,label,sent_at", "Text,Label,Sent At", "content,is_fraud,timestamp"])
    lines = [header]
    for i in range(rows):
        pool = DIRTY if rng.random() < dirty_share else CLEAN
        lines.append(rng.choice(pool).format(i=i, y=rng.choice(["0", "1", "normal", "defraud"]), m=i % 60))
    newline = rng.choice(["\n", "\r\n"])
    return newline.join(lines) + rng.choice([newline, ""])


def whole(path: Path, config: IngestConfig = CONFIG) -> readers.ParsedFile:
    try:
        return readers._read(path, config, ZONE, path.name, True)
    except readers.UnreadableFile as exc:
        return readers.ParsedFile(path.name, readers.empty_raw(), readers.empty_quarantine(), error=str(exc))


def assert_same(batched: readers.ParsedFile, reference: readers.ParsedFile) -> None:
    assert batched.error == reference.error
    assert_frame_equal(batched.rows, reference.rows)
    assert_frame_equal(batched.quarantine, reference.quarantine)
    assert batched.encoding == reference.encoding


@pytest.mark.parametrize("seed", range(FUZZ_SEEDS))
def test_batches_of_any_size_read_hostile_files_exactly_as_a_whole_file_read(tmp_path, seed):
    rng = random.Random(seed)
    text = hostile_file(rng, rows=rng.randint(20, 120), dirty_share=rng.choice([0.0, 0.05, 0.3]))
    encoding = rng.choice(["utf-8", "utf-8-sig", "gb18030", "utf-16"])
    path = tmp_path / f"hostile_{seed}.{rng.choice(['csv', 'txt'])}"
    path.write_bytes(text.encode(encoding))
    reference = whole(path)
    assert reference.rows_read > 0
    for batch_rows in (1, 2, 3, 7, 50, 100_000):
        assert_same(read_messages(path, CONFIG, batch_rows=batch_rows), reference)


def test_a_clean_file_takes_the_vectorised_path_and_counts_every_record(tmp_path):
    lines = [c.format(i=i, y=i % 2, m=i % 60) for i, c in zip(range(3000), CLEAN * 500)]
    path = tmp_path / "clean.csv"
    path.write_text("text,label,sent_at\n" + "\n".join(lines) + "\n", encoding="utf-8")
    opened = DelimitedFile.open(path, ".csv")
    assert opened is not None and opened.encoding == "utf-8"
    shape = lambda header: (lambda fields: True, None)  # noqa: E731 (never consulted on a clean file)
    kinds = [(first, clean is not None) for first, clean, _ in opened.batches(shape, batch_rows=1000)]
    assert kinds == [(0, True), (1000, True), (2000, True)]
    stream = stream_messages(path, CONFIG, batch_rows=1000)
    heights = [rows.height + quarantine.height for rows, quarantine in stream]
    assert heights == [1000, 1000, 1000] and stream.rows_read == 3000
    assert_same(read_messages(path, CONFIG, batch_rows=1000), whole(path))


@pytest.mark.parametrize("header", ["[id],[text],[label]", "\ufeff[text]\t[label]", " [text] ;label"])
def test_a_bracketed_sql_server_header_is_read_in_batches_not_whole(tmp_path, header):
    delimiter = "\t" if "\t" in header else ";" if ";" in header else ","
    first = header.lstrip("\ufeff ").split(delimiter)[0]
    rows = [delimiter.join(([str(i)] if first == "[id]" else []) + [f"message {i}", str(i % 2)]) for i in range(250)]
    path = tmp_path / "export.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    opened = DelimitedFile.open(path, ".csv")
    assert opened is not None  # None sends a file to the reader that holds it whole
    opened.close()
    heights = [rows.height + quarantine.height for rows, quarantine in stream_messages(path, CONFIG, batch_rows=100)]
    assert heights == [100, 100, 50]
    assert_same(read_messages(path, CONFIG, batch_rows=100), whole(path))


@pytest.mark.parametrize(
    "text", ['[{"text": "a", "label": 1}]', '[\n  {"text": "a", "label": 1}\n]', '{"text": "a", "label": 1}']
)
def test_json_still_goes_to_the_whole_file_reader(tmp_path, text):
    path = tmp_path / "export.csv"
    path.write_text(text + "\n", encoding="utf-8")
    assert DelimitedFile.open(path, ".csv") is None


@pytest.mark.parametrize("delimiter,width", [(",", 3), ("\t", 2), (";", 1)])
def test_lines_without_quotes_split_as_the_csv_module_splits_them(delimiter, width):
    import csv

    from fraud_assets.batches import clean_fields
    from fraud_assets.delimited import Layout

    d = delimiter
    pieces = [f"a{d}b{d}c", f" x {d}{d}", f"{d}{d}", "", "   ", "\u3000", f"中文{d}1{d}2026", f"tail{d}{d}\r", f"end {d}1{d}x\r"]
    lines = [p + "\n" for p in pieces if p.count(d) in (0, width - 1)]
    lines = [line for line in lines if line.count(d) == width - 1 or not line.strip()] + ["last" + f"{d}x" * (width - 1)]
    layout = Layout(d, csv.QUOTE_MINIMAL, [f"c{i}" for i in range(width)], 1)
    got = clean_fields(lines, layout)
    expected = [
        (fields, line)
        for fields, line in zip(csv.reader(lines, delimiter=d, strict=True), lines)
        if any(f.strip() for f in fields)  # a blank line: no field, one blank field, or only delimiters (is_blank)
    ]
    assert got is not None and got["raw"].to_list() == [line for _, line in expected]
    assert got.drop("raw").rows() == [tuple(fields) for fields, _ in expected]
    # a line of another width sends the batch to the record-by-record reader
    assert clean_fields(lines + [f"x{d}" * width + "\n"], layout) is None


def test_a_multi_line_record_across_a_batch_boundary_stays_one_record(tmp_path):
    body = [f"row {i},0,2026-03-01 10:00:00" for i in range(9)]
    body.insert(
        5, '"one record over\n' + "\n".join(f"line {k}, with a comma" for k in range(3000)) + '\nend",1,2026-03-01 10:00:00'
    )
    path = tmp_path / "long_record.csv"
    path.write_text("text,label,sent_at\n" + "\n".join(body) + "\n", encoding="utf-8")
    batched = read_messages(path, CONFIG, batch_rows=4)
    assert batched.rows.height == 10 and batched.rows["label"].to_list() == [0] * 5 + [1] + [0] * 4
    assert_same(batched, whole(path))


@pytest.mark.parametrize(
    "data,expected",
    [
        (b"text,label\n\xe4\xbd\xa0\xe5\xa5\xbd,0\n", "utf-8"),
        (b"\xef\xbb\xbftext,label\nx,0\n", "utf-8-sig"),
        ("text,label\n你好,0\n".encode("gb18030"), "gb18030"),
        ("text,label\nWin £100 at the café,1\n".encode("cp1252"), "cp1252"),
        ("text,label\n中奖🎉请点击,1\n".encode("gb18030"), "gb18030"),
        ("text,label\n您的帳戶已被凍結，請立即點擊連結驗證身份,1\n".encode("cp950"), "cp950"),  # Big5
        ("text,label\n您的账户已被冻结，请立即点击链接验证身份,1\n".encode("gb18030"), "gb18030"),
        ("text,label\nお客様のアカウントが停止されました。確認してください,1\n".encode("cp932"), "cp932"),  # Shift-JIS
        ("text,label\nx,0\n".encode("utf-16-le"), None),  # whole-file reader
        ("text,label\nx,0\n".encode("utf-16"), "utf-16"),  # with its BOM: streamed too
        ("text,label\nx,0\n".encode("utf-16") + b"\x00\xd8", None),  # not valid UTF-16: the whole-file reader says so
        (b"", None),
        ("text,label\nRéunion déplacée à jeudi déjà vérifié,0\n".encode() * 2 + "café,1\n".encode("cp1252"), "utf-8"),
    ],
)
def test_the_streaming_encoding_sniff_agrees_with_the_whole_file_decode(tmp_path, data, expected):
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    assert sniff_encoding(path) == expected
    if expected is not None:
        assert readers.decode_bytes(data)[1] == expected


def test_the_encoding_sample_is_the_non_ascii_text_however_the_file_is_chunked(tmp_path, monkeypatch):
    # The double-byte encodings are told apart on the non-ASCII bytes and their context, wherever they are;
    # the streaming sniff gathers them chunk by chunk and must decide exactly as the whole-file decode.
    from fraud_assets import batches

    monkeypatch.setattr(readers, "ENCODING_SAMPLE_BYTES", 700)
    monkeypatch.setattr(batches, "_CHUNK_BYTES", 97)
    rng = random.Random(7)
    pieces = {
        "ascii": "plain english text number {i},0",
        "cp950": "您的帳戶已被凍結請點擊連結驗證身份{i},1",
        "cp932": "お客様のアカウントが停止されました{i},1",
        "gb18030": "您的账户已被冻结请立即点击链接验证身份{i},1",
    }
    for trial in range(40):
        encoding = rng.choice(["cp950", "cp932", "gb18030"])
        kinds = rng.choices(["ascii", encoding], [rng.choice([1, 5, 30]), 1], k=rng.randint(5, 120))
        lines = [pieces[k].format(i=i).encode(k if k != "ascii" else "utf-8") for i, k in enumerate(kinds)]
        data = b"text,label\n" + rng.choice([b"\n", b"\r\n", b"\r", b""]).join(lines)
        path = tmp_path / f"f{trial}.csv"
        path.write_bytes(data)
        whole = readers.NonAsciiLines()
        whole.add(data)
        near = readers.ENCODING_SAMPLE_CONTEXT
        high = [i for i, byte in enumerate(data) if byte >= 0x80]
        kept = {p for h in high for p in range(max(0, h - near), min(len(data), h + near + 1))}
        wanted = bytes(data[p] for p in sorted(kept))
        assert whole.sample() == wanted[: readers.ENCODING_SAMPLE_BYTES]
        assert batches._byte_counts(path)[4] == whole.sample()
        try:
            decoded = readers.decode_bytes(data)[1]
        except readers.UnreadableFile:
            decoded = None
        assert sniff_encoding(path) in (decoded, None)
        if encoding in kinds:
            assert decoded == encoding, (trial, kinds)


def test_vectorised_timestamps_equal_python_parsing():
    values = [
        "2026-03-01 10:00:00",
        "2026-03-01T23:59:59",
        "2026-03-01 10:00",
        "1991-09-15 01:30:00",  # Shanghai's last DST change
        "2026-02-30 10:00:00",
        "2026-03-01 24:00:00",
        "2026-03-01 10:00:60",
        "20260301",
        "1772330400000",
        " 2026-03-01 10:00:00 ",
        None,
        "",
    ]
    parsed, errors = parse_timestamps(pl.Series(values, dtype=pl.Utf8), ZONE, len(values))
    for value, got, error in zip(values, parsed.to_list(), errors.to_list()):
        try:
            assert (got, error) == (readers.parse_timestamp(value, ZONE), None), value
        except ValueError as exc:
            assert (got, error) == (None, str(exc)), value


@pytest.mark.parametrize("name", ["chinese_reviews", "telecom_fraud_texts"])
def test_shared_datasets_read_the_same_in_batches(name):
    folder = SHARED / "datasets" / name
    if not folder.is_dir():
        pytest.skip(f"shared dataset not found at {folder}")
    for path in sorted(folder.glob("*.csv")):
        batched = read_messages(path, CONFIG, batch_rows=5000)
        assert batched.rows.height >= 1000
        assert_same(batched, whole(path))


def reference_duplicates(passed: pl.DataFrame) -> tuple[list[int], dict[int, str]]:
    """The rule as first written, in polars over a whole frame: (source rows kept, source row -> reason)."""
    labels = passed.group_by("text_hash").agg(pl.col("label").n_unique().alias("n"), pl.col("source_row").min().alias("first"))
    frame = passed.join(labels, on="text_hash")
    rest = frame.filter(pl.col("n") == 1)
    rest = rest.join(rest.group_by("message_id").agg(pl.col("source_row").min().alias("first_id")), on="message_id")
    reasons = {
        r: f"duplicate: same text appears with both labels in this file (first at source_row {f})"
        for r, f in frame.filter(pl.col("n") > 1).select("source_row", "first").rows()
    }
    kept = []
    for row, first, first_id in rest.select("source_row", "first", "first_id").rows():
        if row != first:
            reasons[row] = f"duplicate: same text as source_row {first}"
        elif row != first_id:
            reasons[row] = f"duplicate: message_id already used at source_row {first_id}"
        else:
            kept.append(row)
    return sorted(kept), reasons


@pytest.mark.parametrize("batch_rows", [9, 64, 1000])
def test_duplicates_across_batches_follow_the_whole_file_rule(tmp_path, batch_rows):
    import datetime as dt

    from fraud_assets.validation import BatchValidator

    rng = random.Random(batch_rows)
    n = 400
    raw = pl.DataFrame(
        {
            "message_id": [f"id{rng.randint(0, 300)}" for _ in range(n)],
            "text": [f"text {rng.randint(0, 150)}" + rng.choice(["", " ", "\u3000"]) for _ in range(n)],
            "label": [rng.choice([0, 0, 0, 1]) for _ in range(n)],
            "label_raw": ["x"] * n,
            "sent_at": [dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)] * n,
            "fraud_type": [None] * n,
            "source_file": ["f.csv"] * n,
            "source_row": list(range(n)),
            "raw": ["r"] * n,
        },
        schema=readers.RAW_SCHEMA,
    )
    validator = BatchValidator(CONFIG, tmp_path, now=dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc))
    for start in range(0, n, batch_rows):
        validator.add(raw.slice(start, batch_rows))
    summary = validator.finish()
    accepted = pl.concat(list(validator.accepted_batches()))
    from fraud_assets.text import normalize_texts, text_hashes

    texts = normalize_texts(raw["text"])
    kept, reasons = reference_duplicates(raw.with_columns(text_hashes(texts)))
    assert accepted["source_row"].to_list() == kept
    assert dict(summary.quarantine.select("source_row", "reason").rows()) == reasons
    assert summary.accepted == len(kept) and summary.fraud == int(accepted["label"].sum())
    assert len(kept) + summary.quarantine.height == n


def test_parquet_is_read_in_batches_with_the_rows_and_reasons_of_one_batch(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 23
    table = pa.table(
        {
            "id": [f"m{i}" for i in range(n)],
            "content": pa.array(
                [b"\xff not utf-8" if i == 9 else f"消息 {i} about a parcel".encode() for i in range(n)], type=pa.binary()
            ),
            "label": pa.array([["0", "1", "defraud", "maybe"][i % 4] for i in range(n)]).dictionary_encode(),
            "sent_at": [None if i % 5 == 0 else f"2026-03-01 10:{i:02d}:00" for i in range(n)],
        }
    )
    path = tmp_path / "export.parquet"
    pq.write_table(table, path, row_group_size=5)
    reference = read_messages(path, CONFIG, batch_rows=100_000)
    assert (reference.rows.height, reference.quarantine.height) == (22, 1) and reference.quarantine["source_row"].to_list() == [9]
    for batch_rows in (1, 2, 7):
        assert_same(read_messages(path, CONFIG, batch_rows=batch_rows), reference)
        assert stream_messages(path, CONFIG, batch_rows=batch_rows).file_format == "parquet"


def test_a_parquet_file_corrupt_in_its_last_row_group_is_quarantined_whole_before_any_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "torn.parquet"
    texts = [f"message {i} " + "x" * (i % 50) for i in range(400)]
    pq.write_table(pa.table({"text": texts, "label": [i % 2 for i in range(400)]}), path, row_group_size=100, compression="zstd")
    last = pq.ParquetFile(path).metadata.row_group(3).column(0)
    data = bytearray(path.read_bytes())
    start = last.data_page_offset + 8
    data[start : start + 64] = bytes(range(64))  # garbage inside the last row group's text pages; the footer is intact
    path.write_bytes(bytes(data))

    stream = stream_messages(path, CONFIG, batch_rows=50)
    assert stream.error is not None and "cannot read Parquet" in stream.error
    assert list(stream) == [] and stream.rows_read == 0


# Pieces of JSON Lines exports: every one parses on its own line, so a file of them is streamed.
JSON_PLAIN = [
    '{{"text": "message {i} about a parcel", "label": "{y}", "sent_at": "2026-03-01 10:{m:02d}:00"}}',
    '{{"label": "{y}", "text": "您的快递{i}已到，请取件", "id": "m{i}"}}',
    '{{"text": "line sep \u2028 and nel \u0085 inside {i}", "label": "{y}", "channel": "sms"}}',
    '  {{"text": "spaced {i}", "label": "{y}", "sent_at": "not a time"}}  ',
    '{{"text": "nested {i}", "label": {{"value": "{y}"}}}}',
    '{{"text": "no label {i}"}}',
    "5",
    '"a bare string {i}"',
    "null",
    "",
    "   ",
]
# Pieces that send a file to the whole-file reader (which decides, as before).
JSON_ODD = [
    '{{"text": "broken {i}", "label": "{y}"',
    '{{"text": "twice", "text": "keys {i}", "label": "{y}"}}',
    '{{\n  "text": "pretty {i}",\n  "label": "{y}"\n}}',
    '{{"text": "form\x0cfeed {i}", "label": "{y}"}}',
]


def json_lines_file(rng: random.Random, rows: int, odd: bool) -> str:
    lines = [rng.choice(JSON_PLAIN).format(i=i, y=rng.choice(["0", "1", "normal", "defraud"]), m=i % 60) for i in range(rows)]
    if odd:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(JSON_ODD).format(i=rows, y="1"))
    newline = rng.choice(["\n", "\r\n"])
    return newline.join(lines) + rng.choice([newline, ""])


@pytest.mark.parametrize("seed", range(FUZZ_SEEDS))
def test_json_lines_are_streamed_in_batches_exactly_as_a_whole_file_read(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / f"export_{seed}.{rng.choice(['jsonl', 'ndjson', 'json'])}"
    path.write_text(json_lines_file(rng, rows=rng.randint(20, 80), odd=False), encoding="utf-8")
    reference = whole(path)
    assert reference.error is None and reference.rows_read > 0
    for batch_rows in (1, 2, 7, 100_000):
        stream = stream_messages(path, CONFIG, batch_rows=batch_rows)
        sizes = [rows.height + quarantine.height for rows, quarantine in stream]
        assert stream.file_format == "jsonl" and stream.encoding == "utf-8"
        assert max(sizes) <= batch_rows and sum(sizes) == reference.rows_read  # streamed: batches, nothing lost
        assert_same(read_messages(path, CONFIG, batch_rows=batch_rows), reference)


@pytest.mark.parametrize("seed", range(FUZZ_SEEDS))
def test_json_that_is_not_plain_lines_is_read_whole_as_before(tmp_path, seed):
    rng = random.Random(seed)
    text = json_lines_file(rng, rows=rng.randint(5, 30), odd=True)
    if seed % 3 == 0:  # an array, a byte-order mark, another encoding
        text = "[" + ",".join(line for line in JSON_PLAIN[:2] for _ in range(3)).format(i=1, y="1", m=5) + "]"
    encoding = ["utf-8", "utf-8-sig", "gb18030"][seed % 3] if seed % 2 else "utf-8"
    path = tmp_path / f"odd_{seed}.jsonl"
    path.write_bytes(text.encode(encoding))
    reference = whole(path)
    for batch_rows in (1, 3, 100_000):
        stream = stream_messages(path, CONFIG, batch_rows=batch_rows)
        assert len(list(stream)) <= 1  # one batch: the whole-file reader
        assert_same(read_messages(path, CONFIG, batch_rows=batch_rows), reference)
