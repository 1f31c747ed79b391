"""Inputs that used to merge, lose or corrupt records: each case with its exact accounting.

Every test goes through ``ingest`` (parse + Great Expectations validation),
which asserts ``rows_read == accepted + quarantined`` and that every
quarantined row has a reason.
"""

import datetime as dt
import decimal
import gzip
import json
import os
import random
import zoneinfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraud_assets.cli import main
from fraud_assets.readers import ConfigError, IngestConfig, parse_timestamp, read_messages
from tests.test_readers import CONFIG, ingest, reasons, write

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
UTC = dt.timezone.utc


def numbered(n: int, text=lambda i: f"message number {i} about a parcel") -> list[str]:
    return [f"{text(i)},{i % 2},2026-03-01 10:{i % 60:02d}:00" for i in range(n)]


# --------------------------------------------------------------------------- CSV / TSV quotes


def test_two_stray_quotes_in_1000_rows_never_merge_records(tmp_path):
    lines = numbered(1000)
    lines[100] = '"stray opening quote ' + lines[100]
    lines[600] = lines[600].replace("parcel", 'parcel closing" stray')  # the quote that would close the block
    parsed, accepted, quarantine = ingest(write(tmp_path, "stray.csv", "text,label,sent_at\n" + "\n".join(lines) + "\n"))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (1000, 1000, 0)
    assert accepted["source_row"].to_list() == list(range(1000))
    assert accepted["label"].to_list() == [i % 2 for i in range(1000)]  # each row keeps its own label
    assert accepted["text"][100] == '"stray opening quote message number 100 about a parcel'  # the quote is kept as text
    assert accepted["text"][600] == 'message number 600 about a parcel closing" stray'


def test_stray_quotes_on_adjacent_lines_stay_two_records(tmp_path):
    body = '"first half,1,2026-03-01 10:00:00\nsecond half",0,2026-03-01 10:01:00\nthird,1,2026-03-01 10:02:00\n'
    parsed, accepted, quarantine = ingest(write(tmp_path, "adjacent.csv", "text,label,sent_at\n" + body))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (3, 3, 0)
    assert accepted["text"].to_list() == ['"first half', 'second half"', "third"]
    assert accepted["label"].to_list() == [1, 0, 1]


def test_real_multi_line_quoted_fields_are_still_one_record(tmp_path):
    body = (
        '"Dear customer, your account\nwas frozen, call 95588\nnow",1,2026-03-01 10:00:00\n'
        '"line one\n\nline three",0,2026-03-01 10:01:00\n'
        "plain,0,2026-03-01 10:02:00\n"
    )
    parsed, accepted, quarantine = ingest(write(tmp_path, "multi.csv", "text,label,sent_at\n" + body))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (3, 3, 0)
    assert accepted["label"].to_list() == [1, 0, 0]
    assert accepted["text"][0] == "Dear customer, your account was frozen, call 95588 now"  # normalised whitespace


def test_multi_line_fields_as_pandas_and_excel_write_them_stay_one_record(tmp_path):
    # two columns: inner lines such as `Call us now,` read as a text with an empty label, which
    # used to count as a record of their own and cut the quoted field into accepted fragments
    body = (
        'text,label\n"Dear customer,\nYour account is locked.\nCall us now,\nBank",1\n'
        '"Hi John,\nsee you at 5",0\nplain message,0\n'
    )
    for batch_rows in (1, 100_000):
        parsed = read_messages(write(tmp_path, "pandas.csv", body), CONFIG, batch_rows=batch_rows)
        assert parsed.rows_read == 3 and parsed.quarantine.height == 0
        assert parsed.rows["text"].to_list() == [
            "Dear customer,\nYour account is locked.\nCall us now,\nBank",
            "Hi John,\nsee you at 5",
            "plain message",
        ]
        assert parsed.rows["label"].to_list() == [1, 0, 0]


def test_excel_empty_rows_of_delimiters_are_blank_lines_not_records(tmp_path):
    body = (
        ",,,\r\ntext,label,,\r\n" + "".join(f"message number {i},{i % 2},,\r\n" for i in range(8)) + ",,,\r\n" * 3 + ' , ,"",\r\n'
    )
    for batch_rows in (1, 3, 100_000):
        parsed = read_messages(write(tmp_path, "excel_rows.csv", body), CONFIG, batch_rows=batch_rows)
        assert (parsed.rows_read, parsed.quarantine.height) == (8, 0)
        assert parsed.rows["text"].to_list() == [f"message number {i}" for i in range(8)]


def test_database_nulls_are_missing_values_not_unreadable_ones(tmp_path):
    # SQL Server / Oracle NULL, MySQL \N, pandas NaT: a missing time is accepted like an empty one;
    # a missing label is quarantined as missing, not as an unknown label value
    body = "text,label,sent_at\nhello,0,NULL\nwin a prize,1,\\N\nlunch?,0,NaT\nno label,\\N,2026-03-01 10:00:00\n"
    for batch_rows in (1, 100_000):
        parsed = read_messages(write(tmp_path, "nulls.csv", body), CONFIG, batch_rows=batch_rows)
        assert (parsed.rows_read, parsed.quarantine.height) == (4, 0)
        assert parsed.rows["sent_at"].null_count() == 3
    parsed, accepted, quarantine = ingest(tmp_path / "nulls.csv")
    assert accepted["text"].to_list() == ["hello", "win a prize", "lunch?"]
    assert reasons(quarantine)[3].startswith("label: missing (placeholder '\\\\N')")


def test_a_multi_line_text_in_a_file_to_score_stays_one_record(tmp_path):
    # no label column: only a readable time can say that a line is a record of its own
    bodies = {
        "id_text.csv": 'message_id,text\nq1,"Dear customer,\nyour account is locked, call now"\nq2,ok\n',
        "text.csv": 'text\n"Dear customer\nyour account is locked"\nok\n',
        "id_text_time.csv": 'id,text,sent_at\nq1,"Dear customer,\nlocked, call",2026-03-01 10:00:00\nq2,ok,\n',
    }
    for name, body in bodies.items():
        for batch_rows in (1, 100_000):
            parsed = read_messages(write(tmp_path, name, body), CONFIG, require_label=False, batch_rows=batch_rows)
            assert parsed.rows_read == 2 and parsed.rows["text"][1] == "ok", name
            assert parsed.rows["text"][0].startswith("Dear customer") and "locked" in parsed.rows["text"][0], name
    # with a time column a stray quote still cannot swallow the records after it
    body = 'id,text,sent_at\nq1,"stray,2026-03-01 10:00:00\nq2,ok,2026-03-01 10:00:00\nq3,end" here,2026-03-01 10:00:00\n'
    parsed = read_messages(write(tmp_path, "stray.csv", body), CONFIG, require_label=False)
    assert parsed.rows["text"].to_list() == ['"stray', "ok", 'end" here']


@pytest.mark.parametrize("batch_rows", [1, 100_000])
def test_the_header_repeated_by_joining_two_exports_is_not_a_fraud_message(tmp_path, batch_rows):
    export = lambda kind: "\ufefftext,label\n" + "".join(f"{kind} message {i},{kind}\n" for i in range(4))  # noqa: E731
    path = write(tmp_path, "joined.csv", export("loan_scam") + export("impersonation"))  # cat a.csv b.csv
    categories = IngestConfig.load(other_values_are_fraud_categories=True)
    parsed = read_messages(path, categories, batch_rows=batch_rows)
    assert (parsed.rows_read, parsed.rows.height, parsed.quarantine.height) == (9, 8, 1)
    assert "text" not in parsed.rows["text"].to_list() and set(parsed.rows["fraud_type"]) == {"loan_scam", "impersonation"}
    assert parsed.quarantine["source_row"].to_list() == [4]
    assert "header line again" in parsed.quarantine["reason"][0]
    # the batched reader's filter in polars must agree with the header matching (BOM anywhere, spaces)
    body = "text,label\n" + "".join(f"text number {i},label\n" for i in range(3)) + "text,la\ufeffbel\n [Text] , LABEL \n"
    parsed = read_messages(write(tmp_path, "joined2.csv", body), categories, batch_rows=batch_rows)
    assert parsed.quarantine["source_row"].to_list() == [3, 4] and parsed.rows.height == 3


@pytest.mark.parametrize("header", ['"text,label', 'text",label', 'text,"label'])
def test_a_stray_quote_in_the_header_line_does_not_lose_the_file(tmp_path, header):
    body = header + '\nhello,0\n"multi\nline",1\nbye,0\n'
    for batch_rows in (1, 100_000):
        parsed = read_messages(write(tmp_path, "header.csv", body), CONFIG, batch_rows=batch_rows)
        assert parsed.error is None and parsed.rows["text"].to_list() == ["hello", "multi\nline", "bye"]
        assert parsed.rows["label"].to_list() == [0, 1, 0]


def test_a_stray_quote_on_an_unreadable_line_quarantines_only_that_line(tmp_path):
    body = 'ok one,0\n"broken, line, with, commas\nok two,1\nok three,0\n'
    parsed, accepted, quarantine = ingest(write(tmp_path, "broken.csv", "text,label\n" + body))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (4, 3, 1)
    assert accepted["text"].to_list() == ["ok one", "ok two", "ok three"]
    assert quarantine["source_row"].to_list() == [1]
    assert quarantine["raw"][0] == '"broken, line, with, commas'
    assert "quote" in quarantine["reason"][0] or "fields" in quarantine["reason"][0]


def test_tsv_quotes_are_text_unless_the_file_quotes_its_fields(tmp_path):
    literal = 'text\tlabel\n"Urgent" call now\t1\nhe said "hi\t0\nplain\t0\n'
    parsed, accepted, quarantine = ingest(write(tmp_path, "literal.tsv", literal))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (3, 3, 0)
    assert accepted["text"].to_list() == ['"Urgent" call now', 'he said "hi', "plain"]

    quoted = '"text"\t"label"\n"tab\tinside"\t"1"\n"a ""quote"""\t"0"\n'
    parsed, accepted, quarantine = ingest(write(tmp_path, "quoted.tsv", quoted))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (2, 2, 0)
    assert accepted["text"].to_list() == ["tab inside", 'a "quote"']
    assert accepted["label"].to_list() == [1, 0]


# --------------------------------------------------------------------------- JSON


def test_json_lines_split_on_newline_only(tmp_path):
    records = [
        {"text": "line\u2028separator inside", "label": 1},
        {"text": "next\u0085line inside", "label": 0},
        {"text": "paragraph\u2029separator", "label": 1},
    ]
    path = tmp_path / "seps.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    parsed, accepted, quarantine = ingest(path)
    assert (parsed.rows_read, accepted.height, quarantine.height) == (3, 3, 0)
    assert accepted["label"].to_list() == [1, 0, 1]


@pytest.mark.parametrize("layout", ["lines", "array"])  # streamed in batches / read whole
def test_json_escapes_of_lone_surrogates_quarantine_their_record_only(tmp_path, layout):
    """``"\\ud800"`` is valid JSON but no character: it cannot be stored, and once failed the whole file."""
    lines = [
        r'{"text": "hello \ud800 world", "label": 1}',
        r'{"text": "a plain message about a parcel", "label": 0}',
        r'{"text": "a valid pair \ud83d\ude00 stays", "label": 1}',
        r'{"text": "a broken label", "label": "1\udfff"}',
        r'{"text": "an extra key is not read", "label": 0, "x\udc00": 1}',
    ]
    body = "\n".join(lines) + "\n" if layout == "lines" else "[" + ",\n".join(lines) + "]\n"
    path = write(tmp_path, "escapes.jsonl" if layout == "lines" else "escapes.json", body)
    parsed, accepted, quarantine = ingest(path)
    assert (parsed.rows_read, accepted.height, quarantine.height) == (5, 3, 2)
    why = reasons(quarantine)
    assert sorted(why) == [0, 3]
    assert why[0].startswith("text: \\ud800 is half of a UTF-16 surrogate pair") and why[3].startswith("label: \\udfff")
    assert "a valid pair \U0001f600 stays" in accepted["text"].to_list()


def test_pretty_printed_json_objects_and_nested_values(tmp_path):
    pretty = (
        json.dumps({"text": "one object", "label": "spam"}, indent=2)
        + "\n"
        + json.dumps({"text": "two", "label": "ham"}, indent=4)
    )
    parsed, accepted, quarantine = ingest(write(tmp_path, "pretty.json", pretty))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (2, 2, 0)
    assert accepted["label"].to_list() == [1, 0]

    wrapper = json.dumps({"data": [{"text": "a", "label": 0}]}, indent=2)
    parsed = read_messages(write(tmp_path, "wrapper.json", wrapper), CONFIG)
    assert parsed.rows_read == 0 and "'data' holds nested records" in parsed.error

    lines = [
        json.dumps({"text": {"body": "nested"}, "label": 1}),
        json.dumps({"text": ["a", "list"], "label": 0}),
        '{"text": "first", "text": "second", "label": 1}',
        json.dumps({"text": "fine", "label": 0, "meta": {"nested": "ignored"}}),
    ]
    parsed, accepted, quarantine = ingest(write(tmp_path, "nested.jsonl", "\n".join(lines)))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (4, 1, 3)
    why = reasons(quarantine)
    assert "nested object" in why[0] and "nested list" in why[1] and "appears twice" in why[2]
    assert accepted["text"].to_list() == ["fine"]


@pytest.mark.parametrize("name", ["deep.jsonl", "deep.csv", "deep.json"])  # JSON Lines; in a .csv; an array
def test_json_nested_too_deeply_or_huge_integers_cost_at_most_their_record(tmp_path, name):
    """A line nested deeper than the parser recurses, or an integer longer than Python converts
    (4300 digits), once failed the whole file (RecursionError, ValueError)."""
    lines = [
        '{"text": "ok one", "label": 0}',
        '{"text": "too deep", "label": 0, "meta": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"text": "a huge number in a column not read", "label": 1, "n": ' + "1" * 5000 + "}",
        '{"text": "a huge label", "label": ' + "7" * 5000 + "}",
        '{"text": "ok two", "label": 1}',
    ]
    body = "[" + ",\n".join(lines) + "]" if name.endswith(".json") else "\n".join(lines) + "\n"
    parsed, accepted, quarantine = ingest(write(tmp_path, name, body))
    assert parsed.error is None and (parsed.rows_read, accepted.height, quarantine.height) == (5, 3, 2)
    assert accepted["text"].to_list() == ["ok one", "a huge number in a column not read", "ok two"]
    why = reasons(quarantine)
    assert sorted(why) == [1, 3]
    assert why[1].startswith("malformed JSON: nested too deeply")
    assert why[3].startswith("label: unknown label value '7777")


@pytest.mark.parametrize("layout", ["array", "pretty"])
def test_one_bad_object_in_a_json_array_or_pretty_printed_objects_costs_only_itself(tmp_path, layout):
    """A repeated key in one element once quarantined a whole array ("invalid JSON array"), and any
    bad object among pretty-printed ones the whole file, as "no text column: header []"."""
    records = [{"text": f"pretty message {i}", "label": i % 2} for i in range(6)]
    body = json.dumps(records, indent=2) if layout == "array" else "\n".join(json.dumps(r, indent=2) for r in records)
    body = body.replace('"text": "pretty message 2"', '"text": "pretty message 2", "text": "again"')
    body = body.replace('"text": "pretty message 4"', '"text": "pretty message 4",,')
    parsed, accepted, quarantine = ingest(write(tmp_path, f"{layout}.json", body))
    assert parsed.error is None and (parsed.rows_read, accepted.height, quarantine.height) == (6, 4, 2)
    assert accepted["text"].to_list() == [f"pretty message {i}" for i in (0, 1, 3, 5)]
    assert accepted["source_row"].to_list() == [0, 1, 3, 5]
    why = reasons(quarantine)
    assert why[2] == "malformed JSON: key 'text' appears twice in one object"
    assert why[4].startswith("malformed JSON: Expecting property name enclosed in double quotes at line ")
    assert '"pretty message 4",,' in quarantine.filter(source_row=4)["raw"][0]


@pytest.mark.parametrize("layout", ["lines", "pretty"])
def test_many_bad_json_values_cost_time_in_proportion_to_the_file(tmp_path, monkeypatch, layout):
    """Every JSON error of a value read from the whole text counted the lines before it: 80,000 bad
    values took 64 s. Errors are now found in a window of the text, so the characters they count
    add up to about the file's size, and their lines and columns are still the file's."""
    from fraud_assets import readers

    def value(i):
        record = json.dumps({"text": f"message {i}", "label": i % 2}, indent=2 if layout == "pretty" else None)
        return record.replace("}", ",}") if i % 2 else record  # every other one broken by a trailing comma

    extra = '{"text": "wide", "label": 0, "meta":\n{"nested": true}}'  # runs past its first window
    body = "\n".join([value(i) for i in range(400)] + [extra]) + "\n"
    counted = []

    class Counting:
        def raw_decode(self, doc, at):
            try:
                return decoder.raw_decode(doc, at)
            except json.JSONDecodeError as exc:
                counted.append(exc.pos)
                raise

        def decode(self, doc):
            return decoder.decode(doc)

    decoder = readers._DECODER
    monkeypatch.setattr(readers, "_DECODER", Counting())
    parsed = read_messages(write(tmp_path, f"{layout}.json", body), CONFIG)
    assert parsed.error is None and parsed.rows["text"].to_list() == [f"message {i}" for i in range(0, 400, 2)] + ["wide"]
    assert len(counted) >= 200 and sum(counted) < 2 * len(body)
    why = reasons(parsed.quarantine)
    assert sorted(why) == list(range(1, 400, 2))
    line = "line 1600 column 2" if layout == "pretty" else "line 400 column 36"  # value 399's closing brace
    assert why[399] == f"malformed JSON: Expecting property name enclosed in double quotes at {line}"


def test_a_json_array_broken_past_repair_keeps_the_records_before_it(tmp_path):
    """On one line, where the broken element ends is unknown: the rest is one quarantined record."""
    body = '[{"text": "first", "label": 0}, {"text": "second", "label": 1}, {"text": "broken" "label": 1}, {"text": "cut", "label": 0}]'
    parsed, accepted, quarantine = ingest(write(tmp_path, "oneline.json", body))
    assert parsed.error is None and (parsed.rows_read, accepted.height, quarantine.height) == (3, 2, 1)
    assert accepted["text"].to_list() == ["first", "second"]
    assert reasons(quarantine) == {2: "malformed JSON: Expecting ',' delimiter at column 83"}
    assert quarantine["raw"][0].startswith('{"text": "broken" "label": 1}, {"text": "cut"')


# --------------------------------------------------------------------------- Parquet


def test_parquet_binary_dictionary_and_nested_columns(tmp_path):
    table = pa.table(
        {
            "content": pa.array(["您好，快递到了".encode(), b"\xff\xfe not utf-8", "正常消息".encode()], type=pa.binary()),
            "label": pa.array(["0", "1", "0"]).dictionary_encode(),
            "extra": pa.array([{"a": 1}, {"a": 2}, {"a": 3}]),
        }
    )
    path = tmp_path / "binary.parquet"
    pq.write_table(table, path)
    parsed, accepted, quarantine = ingest(path)
    assert (parsed.rows_read, accepted.height, quarantine.height) == (3, 2, 1)
    assert parsed.rows["text"].to_list() == ["您好，快递到了", "正常消息"]  # decoded, not "b'\\xe6...'"
    assert quarantine["source_row"].to_list() == [1] and "not valid UTF-8" in quarantine["reason"][0]

    large = pa.table({"text": pa.array([b"large binary text"], type=pa.large_binary()), "label": [1]})
    pq.write_table(large, tmp_path / "large.parquet")
    parsed, accepted, _ = ingest(tmp_path / "large.parquet")
    assert accepted["text"].to_list() == ["large binary text"]

    nested = pa.table({"text": pa.array([["a", "b"]]), "label": [1]})
    pq.write_table(nested, tmp_path / "nested.parquet")
    parsed, accepted, quarantine = ingest(tmp_path / "nested.parquet")
    assert (parsed.rows_read, accepted.height, quarantine.height) == (1, 0, 1)
    assert "nested list" in quarantine["reason"][0]


def test_parquet_strings_that_are_not_utf8_quarantine_their_records(tmp_path):
    # a writer that did not check: neither pyarrow nor polars checks when reading, and polars panicked
    # (PanicException, not an Exception) when the rows were read, failing the whole run
    def unchecked(values):
        return pa.array(values, type=pa.binary()).view(pa.string())

    table = pa.table(
        {
            "text": unchecked([b"ok text", b"bad \xff\xfe", "中文".encode(), b"fine"]),
            "label": unchecked([b"0", b"1", b"0", b"\xc3"]),
        }
    )
    pq.write_table(table, tmp_path / "unchecked.parquet")
    parsed, accepted, quarantine = ingest(tmp_path / "unchecked.parquet")
    assert (parsed.rows_read, accepted["text"].to_list()) == (4, ["ok text", "中文"])
    assert reasons(quarantine)[1].startswith("text: binary value that is not valid UTF-8")
    assert reasons(quarantine)[3].startswith("label: binary value that is not valid UTF-8")


@pytest.mark.parametrize("far", ["timestamp", "date"])  # which of the two is in the sent_at column
def test_parquet_values_python_cannot_hold_cost_at_most_their_record(tmp_path, far):
    """A timestamp or date after the year 9999 once crashed the run (a polars panic; "year 15659 is
    out of range"), and so did a decimal256 column (a panic), although it is not even read."""
    day, far_ms, far_day = 20_513, 300_000 * 365 * 86_400_000, 5_000_000  # 2026-03-01; the years 301770 and 15659

    def column(kind, far_row):
        if kind == "timestamp":
            return pa.array([far_ms if i == far_row else day * 86_400_000 for i in range(3)], pa.timestamp("ms"))
        return pa.array([far_day if i == far_row else day for i in range(3)], pa.date32())

    table = pa.table(
        {
            "text": ["ok one", "far", "ok two"],
            "label": [0, 1, 0],
            "sent_at": column(far, 1),
            "extra": column("date" if far == "timestamp" else "timestamp", 2),  # not read: kept as text in raw
            "amount": pa.array([decimal.Decimal("1.50")] * 3, pa.decimal256(40, 2)),
        }
    )
    pq.write_table(table, tmp_path / "far.parquet")
    parsed, accepted, quarantine = ingest(tmp_path / "far.parquet")
    assert parsed.error is None and (parsed.rows_read, accepted.height, quarantine.height) == (3, 2, 1)
    assert accepted["text"].to_list() == ["ok one", "ok two"]
    assert accepted["sent_at"].to_list() == [dt.datetime(2026, 3, 1, tzinfo=UTC) - dt.timedelta(hours=8)] * 2
    stored = "9460800000000000 ms after 1970-01-01 (about the year 301,770)" if far == "timestamp" else "5000000 days"
    assert reasons(quarantine)[1].startswith(f"sent_at: {stored}")
    assert reasons(quarantine)[1].endswith("is out of range: Python holds dates of the years 1 to 9999 only")
    assert '"amount": "1.50"' in parsed.rows["raw"][0]  # the decimal256 column, as text
    extra = "5000000 days after" if far == "timestamp" else "9460800000000000 ms after"
    assert f'"extra": "{extra} 1970-01-01 (about the year ' in parsed.rows["raw"][1]


def test_the_first_and_last_dates_python_holds_are_dates_like_any_other(tmp_path):
    """9999-12-31 (SQL's "no end") was called out of range, "(about the year 9,999) is out of range: Python
    holds dates of the years 1 to 9999 only"; only a timestamp with a time zone keeps a day's margin."""
    last, first = dt.date(9999, 12, 31), dt.date(1, 1, 1)
    edge_ms = 2_932_896 * 86_400_000  # 9999-12-31 00:00 UTC: in its zone (+08:00) no longer a Python datetime
    table = pa.table(
        {
            "text": ["no end", "no start", "in a zone"],
            "label": [0, 1, 0],
            "sent_at": pa.array([last, last, last], pa.date32()),
            "valid_until": pa.array([last, first, last], pa.date32()),
            "stamp": pa.array([dt.datetime(9999, 12, 31, 23, 59, 59), dt.datetime(1, 1, 1), None], pa.timestamp("us")),
            "zoned": pa.array([None, None, edge_ms], pa.timestamp("ms", tz="Asia/Shanghai")),
        }
    )
    pq.write_table(table, tmp_path / "edges.parquet")
    parsed = read_messages(tmp_path / "edges.parquet", CONFIG)
    assert parsed.error is None and parsed.quarantine.height == 0 and parsed.rows.height == 3
    first_day = read_messages(write(tmp_path, "first.csv", "text,label,sent_at\nfirst day,0,0001-01-01\n"), CONFIG)
    assert first_day.quarantine["reason"].to_list() == [
        "sent_at: 0001-01-01 00:00:00 (Asia/Shanghai) is before 0001-01-01 in UTC, out of the range of dates Python holds"
    ]
    assert parsed.rows["sent_at"].to_list()[0] == dt.datetime(9999, 12, 31, tzinfo=UTC) - dt.timedelta(hours=8)
    assert '"valid_until": "9999-12-31"' in parsed.rows["raw"][0] and '"valid_until": "0001-01-01"' in parsed.rows["raw"][1]
    assert '"stamp": "9999-12-31 23:59:59"' in parsed.rows["raw"][0] and '"stamp": "0001-01-01 00:00:00"' in parsed.rows["raw"][1]
    assert f'"zoned": "{edge_ms} ms after 1970-01-01 (about the year 9,999)"' in parsed.rows["raw"][2]
    table = table.set_column(2, "sent_at", table["zoned"])
    pq.write_table(table, tmp_path / "zoned.parquet")
    parsed = read_messages(tmp_path / "zoned.parquet", CONFIG)
    assert parsed.quarantine["reason"].to_list() == [
        f"sent_at: {edge_ms} ms after 1970-01-01 (about the year 9,999) is within a day of the end of the dates "
        "Python holds (0001-01-01 to 9999-12-31): too near to convert to its time zone"
    ]


def test_a_parquet_value_that_does_not_convert_otherwise_spares_the_rest_of_its_batch(tmp_path):
    """A value nested in a column that is not read (a far timestamp inside a struct) is not caught by
    its type, so the batch is converted value by value: only that value is lost, to its type's name."""
    nested = pa.array([{"t": 0}, {"t": 300_000 * 365 * 86_400_000}, None], pa.struct([("t", pa.timestamp("ms"))]))
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 0], "meta": nested}), tmp_path / "nested.parquet")
    parsed, accepted, quarantine = ingest(tmp_path / "nested.parquet")
    assert parsed.error is None and (parsed.rows_read, accepted.height, quarantine.height) == (3, 3, 0)
    assert accepted["text"].to_list() == ["a", "b", "c"]
    assert '"meta": "a Struct(' in parsed.rows["raw"][1] and '"meta": {"t": "1970-01-01 00:00:00"}' in parsed.rows["raw"][0]


def test_a_parquet_column_neither_polars_nor_pyarrow_converts_costs_at_most_its_records(tmp_path):
    """A time zone no database knows: polars rejects the column, pyarrow can neither cast nor convert
    it, and the whole file was quarantined ("cannot read Parquet: 'Mars/Olympus'")."""
    mars = pa.array([1, None, 2], pa.timestamp("us", tz="Mars/Olympus"))
    base = {"text": ["a", "b", "c"], "label": [0, 1, 0]}
    pq.write_table(pa.table({**base, "landed_at": mars}), tmp_path / "unmapped.parquet")
    parsed, accepted, quarantine = ingest(tmp_path / "unmapped.parquet")
    assert parsed.error is None and (accepted.height, quarantine.height) == (3, 0)
    assert '"landed_at": "a timestamp[us, tz=Mars/Olympus] value"' in parsed.rows["raw"][0]
    assert '"landed_at": null' in parsed.rows["raw"][1]
    pq.write_table(pa.table({**base, "sent_at": mars}), tmp_path / "mapped.parquet")
    parsed, accepted, quarantine = ingest(tmp_path / "mapped.parquet")
    assert parsed.error is None and accepted["text"].to_list() == ["b"]
    assert [
        r.startswith("sent_at: cannot parse 'a timestamp[us, tz=Mars/Olympus] value'") for r in reasons(quarantine).values()
    ] == [True, True]


# --------------------------------------------------------------------------- headers, labels, timestamps


@pytest.mark.parametrize(
    "header",
    ["[id],[text],[label]", '"ID","Text","Label"', "\ufeff Id , TEXT ,  Label ", "`id`,`text`,`label`"],
)
def test_header_names_are_normalised(tmp_path, header):
    parsed, accepted, quarantine = ingest(write(tmp_path, "h.csv", f"{header}\nm1,hello,0\nm2,转账到安全账户,1\n"))
    assert parsed.error is None and (parsed.rows_read, accepted.height, quarantine.height) == (2, 2, 0)
    assert accepted["message_id"].to_list() == ["m1", "m2"] and accepted["label"].to_list() == [0, 1]


def test_duplicate_header_names_quarantine_the_whole_file(tmp_path):
    parsed = read_messages(write(tmp_path, "dup.csv", "text,label,Text\na,0,b\n"), CONFIG)
    assert parsed.rows_read == 0 and "duplicate column name 'text'" in parsed.error and "columns 1 and 3" in parsed.error


def test_separate_date_and_time_columns_are_combined(tmp_path):
    body = "date,time,text,label\n2026-03-01,10:15:00,a,0\n2026/03/02,9:05,b,1\n2026-03-03,,c,0\n2026-03-04,25:99,d,1\n"
    parsed, accepted, quarantine = ingest(write(tmp_path, "dt.csv", body))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (4, 3, 1)
    assert accepted["sent_at"].to_list() == [
        dt.datetime(2026, 3, 1, 2, 15, tzinfo=UTC),
        dt.datetime(2026, 3, 2, 1, 5, tzinfo=UTC),
        dt.datetime(2026, 3, 2, 16, 0, tzinfo=UTC),  # date only: midnight in Asia/Shanghai
    ]
    assert quarantine["source_row"].to_list() == [3] and "'2026-03-04 25:99'" in quarantine["reason"][0]


def test_a_time_of_day_is_never_dropped_for_a_date_alone(tmp_path):
    # Each time below once fell back to the date alone: the message was put at midnight, nothing quarantined.
    rows = [
        "2026年3月1日,10时30分,a",  # Chinese time ending in 分
        "2026-03-01 00:00:00,10:30:00,b",  # a date column exported as a datetime at midnight
        "2026-03-01,2026-03-01 10:30:00,c",  # the time column holds the whole timestamp
        "46022,10:30,d",  # an Excel serial day and a time (46022 = 2025-12-31)
        "2026-03-01,10:30 PM,e",  # a 12-hour clock
        "2026年3月1日,下午3点05分,f",  # the half of the day first, as Chinese exports write it
        "2026-03-01,13:30 PM,g",  # no such time: quarantined, with the value
        "2026/3/1,10:30:00.000 +08:00,h",  # an offset after a space
        "2026-03-01,25:00,i",  # no such time
    ]
    body = "日期,时间,内容,标签\n" + "".join(f"{r},{i % 2}\n" for i, r in enumerate(rows))
    parsed, accepted, quarantine = ingest(write(tmp_path, "dt.csv", body))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (9, 7, 2)
    assert accepted["sent_at"].to_list() == [
        dt.datetime(2026, 3, 1, 2, 30, tzinfo=UTC),
        dt.datetime(2026, 3, 1, 2, 30, tzinfo=UTC),
        dt.datetime(2026, 3, 1, 2, 30, tzinfo=UTC),
        dt.datetime(2025, 12, 31, 2, 30, tzinfo=UTC),
        dt.datetime(2026, 3, 1, 14, 30, tzinfo=UTC),  # 22:30 in Asia/Shanghai
        dt.datetime(2026, 3, 1, 7, 5, tzinfo=UTC),
        dt.datetime(2026, 3, 1, 2, 30, tzinfo=UTC),
    ]
    assert "hour 13 on a 12-hour clock" in quarantine["reason"][0] and "'2026-03-01 25:00'" in quarantine["reason"][1]
    for batch_rows in (1, 4):  # the batched reader combines the columns the same way
        batched = read_messages(write(tmp_path, "dt.csv", body), CONFIG, batch_rows=batch_rows)
        assert batched.rows["sent_at"].to_list()[:7] == parsed.rows["sent_at"].to_list()[:7]


@pytest.mark.parametrize("categories", [False, True])
def test_placeholder_labels_are_missing_in_every_mode(tmp_path, categories):
    config = IngestConfig.load(other_values_are_fraud_categories=categories)
    rows = ["real fraud,诈骗", "a,NaN", "b,null", "c,N/A", "d,None", "e,-", "f,", "g,否", "ok,0"]
    parsed, accepted, quarantine = ingest(write(tmp_path, "p.csv", "text,label\n" + "\n".join(rows) + "\n"), config)
    # 否 is not a placeholder by default: an unknown label, or a fraud category where categories are on
    expected_accepted = [0, 7, 8] if categories else [0, 8]
    assert accepted["source_row"].to_list() == expected_accepted
    assert parsed.rows_read == 9 and quarantine.height == 9 - len(expected_accepted)
    why = reasons(quarantine)
    assert all(why[i].startswith("label: missing") for i in range(1, 7))
    assert "placeholder 'NaN'" in why[1]
    assert accepted["fraud_type"].to_list() == ([None, "否", None] if categories else [None, None])

    custom = IngestConfig.load(other_values_are_fraud_categories=categories, missing_labels=config.missing_labels | {"否"})
    _, accepted, quarantine = ingest(tmp_path / "p.csv", custom)
    assert accepted["source_row"].to_list() == [0, 8] and reasons(quarantine)[7].startswith("label: missing")


def test_timestamp_formats_of_real_exports():
    expected = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_timestamp("20260101080000", SHANGHAI) == expected  # compact yyyyMMddHHmmss, local time
    assert parse_timestamp("202601010800", SHANGHAI) == expected
    assert parse_timestamp("1767225600000000", SHANGHAI) == expected  # microseconds
    assert parse_timestamp("1767225600000000000", SHANGHAI) == expected  # nanoseconds
    assert parse_timestamp("2026年1月1日 08:00", SHANGHAI) == expected
    assert parse_timestamp("46023.3333333333", SHANGHAI) - expected < dt.timedelta(seconds=1)  # Excel serial days
    assert parse_timestamp(46023, SHANGHAI) == dt.datetime(2025, 12, 31, 16, tzinfo=UTC)  # a date alone: local midnight
    with pytest.raises(ValueError, match=r"'1e30' is out of range"):
        parse_timestamp("1e30", SHANGHAI)
    with pytest.raises(ValueError, match=r"cannot parse '20261399' as compact yyyyMMdd.*month must be in 1..12"):
        parse_timestamp("20261399", SHANGHAI)


def test_rejected_timestamps_say_what_was_seen(tmp_path):
    body = "text,label,sent_at\na,0,20260301101500\nb,1,1772331300000000\nc,0,next tuesday\n"
    parsed, accepted, quarantine = ingest(write(tmp_path, "ts.csv", body))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (3, 2, 1)
    assert accepted["sent_at"].to_list() == [
        dt.datetime(2026, 3, 1, 2, 15, tzinfo=UTC),
        dt.datetime(2026, 3, 1, 2, 15, tzinfo=UTC),
    ]
    assert "'next tuesday'" in quarantine["reason"][0] and "epoch" in quarantine["reason"][0]


# --------------------------------------------------------------------------- configuration mistakes


@pytest.mark.parametrize(
    "toml,needle",
    [
        ('[columns]\ntext = "text"\nlabel = ["label"]\n', "[columns] text must be a list of column names, not 'text' (str)"),
        (
            '[columns]\ntext = ["text"]\nlabel = ["label"]\n[labels]\nother_values_are_fraud_categories = "yes"\n',
            "must be true or false, not 'yes'",
        ),
        (
            '[columns]\ntext = ["text"]\nlabel = ["label"]\n[limits]\nmax_text_chars = "200000"\n',
            "max_text_chars must be an integer",
        ),
        ('[columns]\ntext = ["text"]\nlabel = ["label"]\ntxet = ["x"]\n', "unknown setting [columns] txet"),
        ('[colums]\ntext = ["text"]\n', "unknown section [colums]"),
    ],
)
def test_ingest_config_types_are_checked(tmp_path, toml, needle):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        IngestConfig.load(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_configuration_mistakes_exit_2_naming_the_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FRAUD_TIMEZONE", "Mars/Olympus_Mons")
    assert main(["ingest"]) == 2
    err = capsys.readouterr().err
    assert "FRAUD_TIMEZONE must be an IANA time zone" in err and "'Mars/Olympus_Mons'" in err
    # names the system's zone files hold but polars cannot use: the same clear error, not a polars one
    monkeypatch.setenv("FRAUD_TIMEZONE", "localtime")
    assert main(["ingest"]) == 2
    assert "FRAUD_TIMEZONE must be an IANA time zone" in capsys.readouterr().err
    monkeypatch.setenv("FRAUD_TIMEZONE", "Asia/Shanghai")
    bad = tmp_path / "bad.toml"
    bad.write_text('[columns]\ntext = "text"\nlabel = ["label"]\n')
    monkeypatch.setenv("FRAUD_INGEST_CONFIG", str(bad))
    assert main(["score", "in.csv", "-o", "out.csv"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "text must be a list" in err
    monkeypatch.delenv("FRAUD_INGEST_CONFIG")
    monkeypatch.setenv("FRAUD_MAX_REJECTED_SHARE", "twenty percent")
    assert main(["retrain"]) == 2
    assert "FRAUD_MAX_REJECTED_SHARE must be a number, not 'twenty percent'" in capsys.readouterr().err
    monkeypatch.delenv("FRAUD_MAX_REJECTED_SHARE")
    monkeypatch.setenv("FRAUD_SEED", "1.5")
    assert main(["retrain"]) == 2
    assert "FRAUD_SEED must be a whole number, not '1.5'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ("ops: {fraud_classifier: {config: {max_epochz: 10}}}\n", "did you mean 'max_epochs'"),
        ('ops: {production_model: {config: {tolerance: "abc"}}}\n', 'Value "abc"'),
        ("ops: {fraud_classifier: [\n", "while parsing"),
        ("- just\n- a list\n", "expected a mapping"),
        (None, "No such file"),
    ],
)
def test_run_config_mistakes_exit_2_before_any_work(tmp_path, monkeypatch, capsys, yaml_text, needle):
    # they gave a DagsterInvalidConfigError traceback (or a bare SystemExit message) and exit code 1
    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    path = tmp_path / "run_config.yaml"
    if yaml_text is not None:
        path.write_text(yaml_text)
    for command in ("retrain", "run"):
        assert main([command, "--json", "--config", str(path)]) == 2
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and needle in captured.err and str(path) in captured.err
        document = json.loads(captured.out)
        assert document["success"] is False and needle in document["error"]
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("value", ["ten", "-1", "2.5"])
def test_a_bad_keep_models_stops_retrain_before_any_work(tmp_path, monkeypatch, capsys, value):
    # it was read only when pruning, after training and promotion had already run
    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FRAUD_KEEP_MODELS", value)
    for command in (["retrain", "--json"], ["run", "--json"]):
        assert main(command) == 2
        captured = capsys.readouterr()
        assert "FRAUD_KEEP_MODELS must be a whole number" in captured.err and repr(value) in captured.err
        assert "FRAUD_KEEP_MODELS" in json.loads(captured.out)["error"]
    assert not (tmp_path / "home").exists() and not (tmp_path / "data" / "models").exists()


# --------------------------------------------------------------------------- shapes of real exports


def test_trailing_delimiters_unquoted_commas_and_excel_sep_lines(tmp_path):
    body = "text;label;sent_at\nhello;0;2026-03-01 10:00:00;\nbye;1;2026-03-01 11:00:00\n"
    for hint in ("sep=;\n", '"sep=;"\n', '"sep=;";;\r\n'):  # the last two: a sheet holding the hint, saved again
        parsed, accepted, quarantine = ingest(write(tmp_path, "excel.csv", hint + body))
        assert (parsed.rows_read, accepted.height, quarantine.height) == (2, 2, 0)
        assert accepted["text"].to_list() == ["hello", "bye"]

    body = "text,label,\n您好,我是客服,退款请点链接,1,\n正常通知,0\n"  # unquoted commas in the text; a missing blank column
    parsed, accepted, quarantine = ingest(write(tmp_path, "commas.csv", body))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (2, 2, 0)
    assert accepted["text"].to_list() == ["您好,我是客服,退款请点链接", "正常通知"]
    assert accepted["label"].to_list() == [1, 0]

    # with a second free-text column it is unknowable which column the comma belongs to: quarantined
    body = "text,fraud_type,label\na,b,c,1\n"
    parsed, accepted, quarantine = ingest(write(tmp_path, "ambiguous.csv", body))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (1, 0, 1)
    assert "expected 3 fields, found 4" in quarantine["reason"][0]


def test_a_stray_nul_byte_does_not_lose_the_file(tmp_path):
    path = tmp_path / "nul.csv"
    path.write_bytes(b"text,label\nfine,0\nbro\x00ken,1\nalso fine,0\n")
    parsed, accepted, quarantine = ingest(path)
    assert parsed.error is None and (parsed.rows_read, accepted.height + quarantine.height) == (3, 3)
    assert accepted["label"].to_list() == [0, 1, 0]


@pytest.mark.parametrize("pad", [b"\x00", b"\x00\x00"])
def test_a_nul_in_every_record_does_not_make_the_file_binary(tmp_path, pad):
    # a fixed-width field padded by a C program: 3 or 7 % of the bytes are NULs, nothing else is binary
    from fraud_assets.batches import DelimitedFile

    body = b"id,text,label\n" + b"".join(b"%05d%s,hello there %05d,%d\n" % (i, pad, i, i % 2) for i in range(500))
    path = write(tmp_path, "nul.csv", body)
    for batch_rows in (1, 100_000):
        parsed = read_messages(path, CONFIG, batch_rows=batch_rows)
        assert parsed.error is None and (parsed.rows_read, parsed.rows.height) == (500, 500)
        assert parsed.rows["label"].to_list() == [i % 2 for i in range(500)]
    opened = DelimitedFile.open(path, ".csv")  # read in batches, not whole
    assert opened is not None
    opened.close()


def test_a_quoted_tsv_keeps_its_multi_line_fields(tmp_path):
    body = 'text\tlabel\n"line one\nline two"\t1\nplain\t0\n'
    parsed, accepted, quarantine = ingest(write(tmp_path, "multi.tsv", body))
    assert (parsed.rows_read, accepted.height, quarantine.height) == (2, 2, 0)
    assert accepted["text"].to_list() == ["line one line two", "plain"] and accepted["label"].to_list() == [1, 0]


# --------------------------------------------------------------------------- byte mutations

MUTATION_ROUNDS = int(os.environ.get("FRAUD_FUZZ_SEEDS", "12")) * 10  # 1,000 rounds passed when this was written (76 s)


def _mutation_bases() -> dict[str, bytes]:
    rows = [("您的账户存在异常请点击链接验证 http://x.cn", 1, "2026-03-01 10:00:00"), ('He said "hi", ok', 0, "1772331300")]
    rows = [(f"{t} {i}", y, s) for i, (t, y, s) in enumerate(rows * 15)]
    csv = "id,text,label,sent_at\n" + "".join(
        f'{i},"{t.replace(chr(34), chr(34) * 2)}",{y},{s}\n' for i, (t, y, s) in enumerate(rows)
    )
    lines = "".join(
        json.dumps({"id": i, "text": t, "label": y, "sent_at": s}, ensure_ascii=False) + "\n" for i, (t, y, s) in enumerate(rows)
    )
    table = pa.table({"text": [t for t, _, _ in rows], "label": [y for _, y, _ in rows]})
    parquet = pa.BufferOutputStream()
    pq.write_table(table, parquet)
    big5 = "id,內容,標籤\n" + "".join(  # a Taiwanese export: traditional characters, Big5 bytes
        f"{i},您的帳戶{i}已被凍結，請立即點擊連結驗證,詐騙\n{i}b,明天下午三點開會，記得帶報告,正常\n" for i in range(15)
    )
    sjis = "id,text,label\n" + "".join(  # a Japanese export in Shift-JIS
        f"{i},お客様のアカウント{i}が停止されました。確認してください,1\n{i}b,明日の会議は十時からです,0\n" for i in range(15)
    )
    return {
        ".csv": csv.encode(),
        ".tsv": csv.replace(",", "\t").encode(),
        ".jsonl": lines.encode(),
        ".json": ("[" + ",".join(lines.splitlines()) + "]").encode(),
        ".parquet": parquet.getvalue().to_pybytes(),
        ".csv.gz": gzip.compress(csv.encode()),
        "-gb.csv": csv.encode("gb18030"),
        "-utf16.csv": csv.encode("utf-16"),
        "-big5.csv": big5.encode("cp950"),
        "-sjis.csv": sjis.encode("cp932"),
    }


def test_byte_mutations_of_every_format_never_crash_and_account_for_every_record(tmp_path):
    """Flipped, inserted, deleted and truncated bytes in every format and encoding: each file is read
    or refused with a reason, and every record it yields is accepted or quarantined with one."""
    rng = random.Random(0)
    bases = _mutation_bases()
    for round_ in range(MUTATION_ROUNDS):
        suffix, data = rng.choice(sorted(bases.items()))
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            at, kind = rng.randrange(len(mutated) or 1), rng.random()
            if kind < 0.35:
                mutated[at : at + 1] = bytes([rng.randrange(256)])
            elif kind < 0.55:
                mutated[at:at] = rng.choice([b'"', b"\n", b"\r", b",", b"\t", b"\x00", b"{", "\u2028".encode(), b"\xe4\xbd"])
            elif kind < 0.75:
                del mutated[at : at + rng.randint(1, 20)]
            elif kind < 0.85:
                del mutated[at:]
            else:
                mutated[at:at] = data[rng.randrange(len(data)) :][: rng.randint(1, 60)]
        path = tmp_path / f"m{round_}{suffix}"
        path.write_bytes(bytes(mutated))
        parsed = read_messages(path, CONFIG, batch_rows=rng.choice([None, 1, 7]))
        assert parsed.error is None or parsed.rows_read == 0, path
        ingest(path)  # parse + validate again: rows_read == accepted + quarantined, every reason given
