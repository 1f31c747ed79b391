"""The bad inputs real exports contain: every record is accepted or quarantined with a reason."""

import datetime as dt
import json
import re
import tempfile
from pathlib import Path

import polars as pl
import pytest

from fraud_assets import readers
from fraud_assets.readers import IngestConfig, parse_timestamp, read_messages
from fraud_assets.validation import validate_messages

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)
CONFIG = IngestConfig.load()


def ingest(path, config=CONFIG):
    """Parse + validate one file; assert the accounting identity and return the parts."""
    parsed = read_messages(path, config)
    result = validate_messages(parsed.rows, config, now=NOW)
    quarantine = pl.concat([parsed.quarantine, result.quarantine])
    assert parsed.rows_read == result.accepted.height + quarantine.height
    assert quarantine["reason"].null_count() == 0 and (quarantine["reason"].str.len_chars() > 0).all()
    return parsed, result.accepted, quarantine


def reasons(quarantine: pl.DataFrame) -> dict[int, str]:
    return dict(zip(quarantine["source_row"].to_list(), quarantine["reason"].to_list()))


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def test_row_level_problems_are_quarantined_with_their_reason(tmp_path):
    path = write(
        tmp_path,
        "mixed.csv",
        "text,label,sent_at\n"
        "您的快递已到达驿站,0,2026-03-01 10:00:00\n"  # 0 valid
        ",1,2026-03-01 10:00:00\n"  # 1 empty text
        "hello there,,2026-03-01 10:00:00\n"  # 2 missing label
        "hello again,maybe,2026-03-01 10:00:00\n"  # 3 unknown label
        "bad time,0,yesterday\n"  # 4 unparseable timestamp
        "from the future,0,2099-01-01 00:00:00\n"  # 5 future timestamp
        "too,many,fields,here\n"  # 6 wrong field count
        '"quoted, with ""quotes""\nand a newline",1,2026-03-02 21:00:00\n'  # 7 valid
        "您的快递已到达驿站,0,2026-03-01 10:00:00\n"  # 8 duplicate of 0
        "   \t  ,0,\n",  # 9 whitespace-only text
    )
    parsed, accepted, quarantine = ingest(path)
    assert parsed.rows_read == 10
    assert sorted(accepted["source_row"].to_list()) == [0, 7]
    why = reasons(quarantine)
    assert "text" in why[1] and "empty" in why[1]
    assert why[2].startswith("label: missing")
    assert "'maybe'" in why[3]
    assert why[4].startswith("sent_at:") and "yesterday" in why[4]
    assert "future" in why[5]
    assert "expected 3 fields, found 4" in why[6]
    assert "duplicate" in why[8] and "source_row 0" in why[8]
    assert "empty" in why[9]
    quoted = accepted.filter(pl.col("source_row") == 7)
    assert quoted["text"][0] == 'quoted, with "quotes" and a newline'
    assert quoted["label"][0] == 1


def test_a_message_of_invisible_characters_is_quarantined_as_empty(tmp_path):
    # zero-width spaces render as nothing: such a "message" is empty, and one inside a text hides nothing
    path = write(tmp_path, "zw.csv", "text,label\n\u200b\u200b,1\n快递已放在门口,0\n快\u200b递已放在门口,0\n")
    _, accepted, quarantine = ingest(path)
    assert accepted["text"].to_list() == ["快递已放在门口"]
    assert reasons(quarantine)[0].startswith("text: empty")
    assert reasons(quarantine)[2] == "duplicate: same text as source_row 1"


def test_a_database_placeholder_is_not_a_message(tmp_path):
    # NULL (SQL), \N (MySQL), NaN (pandas), None (Python), #N/A (Excel): what an export writes for a
    # missing text; a text that only contains such a word, or NA, stays a message
    texts = ["NULL", "\\N", "nan", " None ", "n/a", "#N/A", "null pointer in my app", "NA", "hello"]
    path = write(tmp_path, "nulls.csv", "text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(texts)))
    _, accepted, quarantine = ingest(path)
    assert accepted["text"].to_list() == ["null pointer in my app", "NA", "hello"]
    assert sorted(reasons(quarantine)) == list(range(6))
    assert all(r.startswith("text: a placeholder for a missing value") for r in reasons(quarantine).values())


def test_a_config_listing_its_own_missing_labels_adds_to_the_built_in_placeholders(tmp_path):
    # Following the README's advice ("add 否 to [labels] missing") must not make \\N, NaN or empty
    # a fraud category when other label values are fraud categories.
    config_path = tmp_path / "ingest.toml"
    config_path.write_text(
        '[columns]\ntext = ["text"]\nlabel = ["label"]\n'
        '[labels]\nnormal = ["0"]\nfraud = ["1"]\nmissing = ["否"]\nother_values_are_fraud_categories = true\n'
    )
    minimal = tmp_path / "minimal.toml"
    minimal.write_text('[columns]\ntext = ["text"]\nlabel = ["label"]\n')
    for config in (IngestConfig.load(config_path), IngestConfig.load(minimal)):
        assert all(config.is_placeholder(v) for v in ("\\N", "NaN", "", "null", "-"))
    config = IngestConfig.load(config_path)
    assert config.is_placeholder("否") and config.map_label("刷单") == (1, "刷单")
    body = "text,label\nparcel held pay now,\\N\nno label here,\nanother,NaN\nmarked empty,否\nrefund scam,刷单\n"
    _, accepted, quarantine = ingest(write(tmp_path, "a.csv", body), config)
    assert accepted["text"].to_list() == ["refund scam"] and quarantine.height == 4
    assert all(r.startswith("label: missing") for r in reasons(quarantine).values())


def test_header_names_match_whatever_mix_of_spaces_quotes_and_brackets_surrounds_them(tmp_path):
    from fraud_assets.readers import normalize_header

    for name in ['"text\xa0"', "[ text\t]", '" Text\u3000"', '"text', 'text"', "\ufeff[text]"]:
        assert normalize_header(name) == "text", name
    assert normalize_header("' Sent  At '") == "sent at"
    _, accepted, _ = ingest(write(tmp_path, "nbsp.csv", "[text\xa0],[label]\nhello,1\n"))
    assert accepted["text"].to_list() == ["hello"]


INVISIBLE_ONLY = ["\u3164", "\u2800", "\ufe0f", "\u200d", "\u034f", "\U000e0020", "\u115f", "\u200c\u200d", "\u17b5"]
INVISIBLE_ONLY += ["\uffa0\u1160", "\U000e0100", "\ufe0e \u200d\u00ad", "\U000e0001\U000e007f"]


def test_texts_of_only_invisible_characters_or_joiners_are_empty_in_every_reader(tmp_path):
    # Hangul fillers, braille blank, variation selectors, tags and a lone joiner render as nothing:
    # such a message is empty. Joiners inside emoji and the tags of a subdivision flag are kept.
    family, scotland = (
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    )
    visible = [f"{family} 全家福", f"{scotland} trip", "转\u3164账到\u2800安全\ufe0f账户", "\u200d\u200c边缘\u200d"]
    texts = INVISIBLE_ONLY + visible
    csv = "text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(texts))
    array = json.dumps([{"text": t, "label": i % 2} for i, t in enumerate(texts)], ensure_ascii=False)
    dirty = csv + '"a stray quote,1\n'  # one dirty line: the record-by-record reader instead of the vectorised one
    for name, body in (("inv.csv", csv), ("dirty.csv", dirty), ("inv.json", array)):
        _, accepted, quarantine = ingest(write(tmp_path, name, body))
        why = reasons(quarantine)
        assert all(why[i].startswith("text: empty") for i in range(len(INVISIBLE_ONLY))), (name, why)
        assert accepted["text"].to_list()[:4] == [f"{family} 全家福", f"{scotland} trip", "转账到安全账户", "边缘"], name


def test_compressed_files_that_cannot_be_read_say_why(tmp_path, monkeypatch):
    import gzip
    import lzma

    from fraud_assets import readers

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the decompressed copies go
    body = "text,label\n您的账户异常请转账,1\n好的,0\n".encode()
    cases = {
        "ok.jsonl.xz": (lzma.compress(b'{"text": "x", "label": 1}\n'), None),
        "bad.csv.gz": (b"not gzip at all", "cannot decompress the gzip file"),
        "crc.csv.gz": (gzip.compress(body)[:-8] + b"\0" * 8, "cannot decompress the gzip file"),
        "day.gz": (gzip.compress(body), "unsupported file type: a file without a type suffix inside .gz"),
        "key-0123.gz": (gzip.compress(body), None),  # an archive that kept only .gz: its original name tells
        "book.xlsx.gz": (gzip.compress(b"PK"), "unsupported file type: a .xlsx file inside .gz"),
    }
    for name, (data, reason) in cases.items():
        original = "day.csv.gz" if name.startswith("key-") else None
        parsed = read_messages(write(tmp_path, name, data), CONFIG, source_file=original)
        assert (parsed.error or "").startswith(reason or "") and (parsed.error is None) == (reason is None), name
    stream = readers.stream_messages(write(tmp_path, "cols.csv.gz", gzip.compress(b"foo,bar\n1,2\n")), CONFIG)
    assert stream.error.startswith("no text column")  # never iterated: its copy must go at once
    monkeypatch.setattr(readers, "_DISK_RESERVE", 1 << 62)  # a "zip bomb": more than the disk can take
    parsed = read_messages(write(tmp_path, "big.csv.gz", gzip.compress(body)), CONFIG)
    assert "unpacks to more than" in parsed.error
    assert not list(Path(tmp_path / "tmp").iterdir())  # no decompressed copy left behind


def test_raw_column_keeps_the_original_record(tmp_path):
    path = write(tmp_path, "raw.csv", "text,label\nok text,0\na,b,c\n")
    _, _, quarantine = ingest(path)
    assert quarantine["raw"].to_list() == ["a,b,c"]


@pytest.mark.parametrize(
    "encoding,bom",
    # utf-16-le/-be without a BOM: what SQL Server's bcp -w writes
    [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("gb18030", b""), ("utf-16", b""), ("utf-16-le", b""), ("utf-16-be", b"")],
)
def test_encodings_are_detected(tmp_path, encoding, bom):
    text = "content,label\n冒充公检法：您的账户涉嫌洗钱，请转账到安全账户,诈骗\n您的验证码是123456,正常\n"
    path = tmp_path / "enc.csv"
    path.write_bytes(bom + text.encode(encoding))
    parsed, accepted, quarantine = ingest(path)
    assert parsed.error is None and quarantine.height == 0
    assert accepted["text"].to_list()[0].startswith("冒充公检法")
    assert accepted["label"].to_list() == [1, 0]


def test_western_single_byte_exports_are_read_as_windows_1252(tmp_path):
    # Excel's "CSV" of an English SMS export: £, é and curly quotes as single bytes. Read as GB18030
    # they were quarantined as undecodable, or merged with the next letter into a Chinese character.
    texts = ["WINNER!! You have won a £1000 prize, call 09061701461", "I’m at the café, don’t wait", "Ok lar... Joking wif u oni"]
    labels = ["spam", "ham", "ham"]
    csv = "label,text\n" + "".join(f'{label},"{text}"\n' for label, text in zip(labels, texts))
    array = json.dumps([{"text": t, "label": label} for t, label in zip(texts, labels)], ensure_ascii=False)
    for name, body in (("spam.csv", csv), ("spam.json", array)):  # the batch reader and the whole-file reader
        parsed, accepted, quarantine = ingest(write(tmp_path, name, body, "cp1252"))
        assert parsed.encoding == "cp1252" and quarantine.height == 0, name
        assert accepted["text"].to_list() == texts
    # GB18030 Chinese stays GB18030, four-byte characters (emoji) included
    chinese = "text,label\n" + "".join(f"恭喜您🎉中奖了，请点击链接领取{i},1\n" for i in range(20))
    parsed, accepted, _ = ingest(write(tmp_path, "gb.csv", chinese, "gb18030"))
    assert parsed.encoding == "gb18030" and accepted["text"][0] == "恭喜您🎉中奖了,请点击链接领取0"


def test_big5_exports_are_read_as_big5_not_as_gb18030_mojibake(tmp_path):
    # Taiwanese and Hong Kong exports are Big5. Every Big5 byte pair also decodes as GB18030, into
    # rare characters that were accepted as text: silent corruption, not an error.
    texts = [
        "您的帳戶已被凍結，請立即點擊連結驗證身份",
        "恭喜您獲得本期幸運大獎，請聯繫客服領取獎金",
        "媽，我換了新號碼，這個月的學費先轉帳給我",
        "明天下午三點開會，記得帶報告",
        "晚餐想吃什麼？我們在車站見面吧",
    ]
    labels = ["詐騙", "詐騙", "詐騙", "正常", "正常"]  # the traditional spelling of the label is known too
    csv = "內容,標籤\n" + "".join(f"{t},{label}\n" for t, label in zip(texts, labels))
    array = json.dumps([{"text": t, "label": label} for t, label in zip(texts, labels)], ensure_ascii=False)
    for name, body in (("tw.csv", csv), ("tw.json", array)):  # the batch reader and the whole-file reader
        parsed, accepted, quarantine = ingest(write(tmp_path, name, body, "cp950"))
        assert parsed.encoding == "cp950" and quarantine.height == 0, name
        assert accepted["text"].to_list() == [t.replace("，", ",").replace("？", "?") for t in texts]
        assert accepted["label"].to_list() == [1, 1, 1, 0, 0]
    # the same simplified-Chinese messages in GBK stay GB18030, and so does traditional Chinese written in GBK
    for text in ("您的账户已被冻结，请立即点击链接验证身份", texts[0]):
        body = "text,label\n" + "".join(f"{text}{i},1\n" for i in range(10))
        parsed, accepted, _ = ingest(write(tmp_path, "gbk.csv", body, "gb18030"))
        assert parsed.encoding == "gb18030" and accepted["text"][0].startswith(text.replace("，", ",")[:5])


def test_shift_jis_exports_are_read_as_shift_jis_not_as_gb18030_mojibake(tmp_path):
    texts = [
        "【重要】お客様のアカウントが一時停止されました。こちらから確認してください",
        "当選おめでとうございます！賞金の受け取りには手数料のお振込みが必要です",
        "明日の会議は十時からです。よろしくお願いします",
        "ご注文の商品を発送しました。配達予定日は三月五日です",
    ]
    labels = [1, 1, 0, 0]
    csv = "text,label\n" + "".join(f"{t},{label}\n" for t, label in zip(texts, labels))
    array = json.dumps([{"text": t, "label": label} for t, label in zip(texts, labels)], ensure_ascii=False)
    for name, body in (("jp.csv", csv), ("jp.json", array)):  # the batch reader and the whole-file reader
        parsed, accepted, quarantine = ingest(write(tmp_path, name, body, "cp932"))
        assert parsed.encoding == "cp932" and quarantine.height == 0, name
        assert accepted["text"].to_list() == [t.replace("！", "!") for t in texts]
    # Chinese in GBK or Big5 has no kana when read as Shift-JIS: it stays what it was
    for text, encoding in (
        ("您的账户已被冻结，请立即点击链接验证身份", "gb18030"),
        ("您的帳戶已被凍結，請立即點擊連結驗證身份", "cp950"),
    ):
        body = "text,label\n" + "".join(f"{text}{i},1\n" for i in range(10))
        assert ingest(write(tmp_path, "zh.csv", body, encoding))[0].encoding == encoding


def test_big5_and_shift_jis_rows_after_256_kib_of_ascii_are_still_detected(tmp_path):
    # The encoding used to be chosen on the first 256 KiB only: all ASCII here, so GB18030 by default,
    # and the Big5 or Shift-JIS rows at the end were accepted as mojibake.
    newsletter = "Hello this is an english newsletter message that repeats many times in this file, please ignore it,0\n"
    head = "text,label\n" + newsletter * 2800
    assert len(head) > readers.ENCODING_SAMPLE_BYTES
    for encoding, texts in (
        ("cp950", ["您的帳戶已被凍結請點擊連結驗證身份", "明天一起吃飯嗎記得帶傘"]),
        ("cp932", ["お客様のアカウントが停止されました確認してください", "明日の会議は十時からですよろしくお願いします"]),
    ):
        data = head.encode() + "".join(f"{t},{i}\n" for i, t in enumerate(texts)).encode(encoding)
        assert readers.decode_bytes(data)[1] == encoding  # the whole-file reader
        parsed, accepted, quarantine = ingest(write(tmp_path, f"late_{encoding}.csv", data))  # the batch reader
        assert parsed.encoding == encoding and accepted["text"].to_list()[1:] == texts
        assert quarantine.height == 2799 and set(quarantine["reason"].str.slice(0, 10)) == {"duplicate:"}


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
def test_big5_rows_after_256_kib_of_ascii_are_detected_whatever_the_line_endings(tmp_path, ending):
    # The sample kept whole lines, split on \n only: with \r endings the file was one line whose
    # first 256 KiB were ASCII, and the Big5 rows were read as GB18030 mojibake.
    text = "您的帳戶已被凍結，請點擊連結驗證身份"
    rows = [f"Hello newsletter number {i} about the weekly offers,0" for i in range(6000)] + [f"{text},1"] * 90
    data = ending.join(["text,label", *rows]).encode("cp950") + ending.encode()
    assert len(data) > readers.ENCODING_SAMPLE_BYTES
    assert readers.decode_bytes(data)[1] == "cp950"
    parsed = read_messages(write(tmp_path, "late.csv", data), CONFIG)
    assert parsed.encoding == "cp950" and parsed.rows["text"].to_list()[-90:] == [text] * 90


def test_big5_in_a_json_array_on_one_line_after_256_kib_of_ascii_is_detected(tmp_path):
    # A minified array is one line: the sample was its first 256 KiB, all ASCII here.
    items = [{"text": f"Hello newsletter number {i} about the weekly offers", "label": 0} for i in range(5000)]
    items += [{"text": f"您的帳戶已被凍結，請點擊連結驗證身份{i}", "label": 1} for i in range(90)]
    data = json.dumps(items, ensure_ascii=False).encode("cp950")
    assert b"\n" not in data and data.index(b"\xb1z") > readers.ENCODING_SAMPLE_BYTES
    assert readers.decode_bytes(data)[1] == "cp950"
    parsed = read_messages(write(tmp_path, "minified.json", data), CONFIG)
    assert parsed.encoding == "cp950" and parsed.rows["text"].to_list()[-1] == "您的帳戶已被凍結，請點擊連結驗證身份89"


@pytest.mark.parametrize("bom", [b"", b"\xff\xfe"])
def test_half_a_surrogate_pair_in_utf16_quarantines_only_its_record(tmp_path, bom):
    # SQL Server truncates nvarchar by 16-bit units, so a cut can fall inside an emoji; bcp -w and
    # Excel's "Unicode Text" then write the lone half
    body = "text\tlabel\r\nhello there friend\t0\r\n".encode("utf-16-le") + "cut emoji ".encode("utf-16-le") + b"\x3d\xd8"
    body += "\t1\r\nfine again\t0\r\n".encode("utf-16-le")
    for batch_rows in (1, 100_000):
        parsed = read_messages(write(tmp_path, "bcp.tsv", bom + body), CONFIG, batch_rows=batch_rows)
        assert parsed.error is None and parsed.rows_read == 3
        assert parsed.rows["text"].to_list() == ["hello there friend", "fine again"]
        assert parsed.quarantine["source_row"].to_list() == [1]
        assert "half of a UTF-16 surrogate pair" in parsed.quarantine["reason"][0]


def test_a_few_bad_bytes_in_a_utf8_file_quarantine_only_their_rows(tmp_path):
    rows = "".join(f"您的快递{i}号已到达驿站，请凭取件码取件,0\n" for i in range(30))
    data = ("text,label\n" + rows).encode() + b"bad \xff\xfe byte,1\n" + "最后一条消息,0\n".encode()
    path = tmp_path / "mostly_utf8.csv"
    path.write_bytes(data)
    parsed, accepted, quarantine = ingest(path)
    assert parsed.encoding == "utf-8"
    assert accepted.height == 31 and accepted["text"][0].startswith("您的快递0号")
    assert quarantine["source_row"].to_list() == [30] and "undecodable" in quarantine["reason"][0]
    assert "\\xff" in quarantine["raw"][0]


FRENCH = [
    "Félicitations vous avez gagné un séjour à Paris",
    "Déjà arrivé à la gare, à tout à l'heure",
    "Votre colis est bloqué, payez les frais",
    "Réunion déplacée à jeudi",
    "Votre compte a été suspendu, vérifiez-le",
    "Merci pour le café",
    "Vous êtes éligible à un remboursement",
    "À ce soir chérie",
    "Dernière chance: réclamez votre prix",
    "Le médecin a appelé",
]


def test_a_utf8_export_with_cp1252_rows_appended_stays_utf8(tmp_path):
    # Two exports concatenated: the cp1252 bytes were more than 2 % of the non-ASCII bytes, and the
    # whole file fell to GB18030, which read every UTF-8 "é" as "茅" and accepted the mojibake.
    utf8 = ("text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(FRENCH))).encode()
    cp1252 = "".join(f"{t} (export 2),{i % 2}\n" for i, t in enumerate(FRENCH[:2])).encode("cp1252")
    path = write(tmp_path, "mixed2.csv", utf8 + cp1252)
    parsed, accepted, quarantine = ingest(path)
    assert parsed.encoding == "utf-8" and readers.decode_bytes(utf8 + cp1252)[1] == "utf-8"
    assert accepted["text"].to_list() == FRENCH
    assert quarantine["source_row"].to_list() == [10, 11] and all("undecodable" in r for r in quarantine["reason"])


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("empty.csv", b"", "empty file"),
        ("junk.csv", bytes(range(256)) * 40, "binary"),
        ("sparse.csv", b"\x00\x01\x02\x03\x00\x00\x07" * 300, "binary"),  # NULs on both sides of 16-bit units
        ("odd16.csv", "text,label\nok,0\n".encode("utf-16-le") + b"\x00", "binary"),  # odd length: not UTF-16
        ("noheader.csv", b"\n\n", "empty file"),
        ("notext.csv", b"foo,bar\n1,2\n", "no text column"),
        ("nolabel.csv", b"text,foo\nhello,2\n", "no label column"),
        ("broken.parquet", b"PAR1 not really parquet", "Parquet"),
        ("data.xlsx", b"PK\x03\x04", "unsupported file type .xlsx; expected one of"),
        ("data.xls", b"\xd0\xcf\x11\xe0", "save the sheet as CSV UTF-8"),
    ],
)
def test_unreadable_files_are_reported_not_raised(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    parsed = read_messages(path, CONFIG)
    assert parsed.error and reason in parsed.error
    assert parsed.rows_read == 0


@pytest.mark.parametrize("name, body", [("header.csv", "text,label,sent_at\n"), ("day.json", "[]"), ("day2.json", " [ ]\n")])
def test_header_only_file_is_readable_and_empty(tmp_path, name, body):
    """A day without messages: a CSV of its header only, or an empty JSON array; not an unreadable file."""
    parsed, accepted, quarantine = ingest(write(tmp_path, name, body))
    assert parsed.error is None and parsed.rows_read == 0 and accepted.height == 0 and quarantine.height == 0


def test_one_malformed_json_line_is_quarantined_alone(tmp_path):
    lines = [
        json.dumps({"message": "Your parcel is out for delivery", "label": "ham"}),
        '{"message": "broken, "label": 1',
        json.dumps({"message": "URGENT: police case, transfer funds now", "label": "spam", "timestamp": 1767225600}),
        json.dumps(["not", "an", "object"]),
    ]
    parsed, accepted, quarantine = ingest(write(tmp_path, "m.jsonl", "\n".join(lines) + "\n"))
    assert accepted["source_row"].to_list() == [0, 2]
    assert accepted["label"].to_list() == [0, 1]
    assert accepted["sent_at"][1] == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    why = reasons(quarantine)
    assert "malformed JSON" in why[1] and "JSON object" in why[3]


@pytest.mark.parametrize("name", ["keys.jsonl", "keys.json"])  # streamed JSON Lines, and an array read whole
def test_a_json_key_spelled_two_ways_is_one_column_and_an_object_with_both_is_quarantined_alone(tmp_path, name):
    items = [
        {"Text": "您的验证码是 123456", "Label": 0},
        {"text": "恭喜中奖，请点击链接领取", "label": 1},
        {" TEXT ": "今晚一起吃饭吗", "label": "0"},
        {"Text": "安全账户转账", "text": "安全账户转账", "label": 1},  # which one to read: cannot say
        {"text": "退款请加客服QQ", "label": 1, "": "x", "[]": "y"},  # keys that name no column
    ]
    body = "\n".join(json.dumps(i, ensure_ascii=False) for i in items) if name.endswith("l") else json.dumps(items)
    parsed, accepted, quarantine = ingest(write(tmp_path, name, body))
    assert parsed.error is None and parsed.rows_read == 5
    assert accepted.sort("source_row")["label"].to_list() == [0, 1, 0, 1]
    assert reasons(quarantine) == {3: "keys 'Text' and 'text' name the same column; keep one"}


def test_extremely_long_text(tmp_path):
    long_ok = "长" * 150_000
    too_long = "x" * 250_000
    path = write(tmp_path, "long.csv", f"text,label\n{long_ok},0\n{too_long},1\n")
    _, accepted, quarantine = ingest(path)
    assert accepted["text"].str.len_chars().to_list() == [150_000]
    assert "250000 characters" in quarantine["reason"][0]


def test_conflicting_labels_for_the_same_text_are_quarantined(tmp_path):
    path = write(tmp_path, "c.csv", "text,label\nsame words,0\nsame  words,1\nother,0\n")
    _, accepted, quarantine = ingest(path)
    assert accepted["source_row"].to_list() == [2]
    assert all("both labels" in r for r in quarantine["reason"])


def test_label_vocabulary_and_fraud_categories(tmp_path):
    path = write(tmp_path, "t.tsv", "sms\tclass\nhi\tham\n中奖了\t诈骗\nok\t正常\nwin\tspam\nloan\t贷款类\n")
    _, accepted, quarantine = ingest(path)
    assert accepted["label"].to_list() == [0, 1, 0, 1]
    assert "'贷款类'" in quarantine["reason"][0]
    lenient = IngestConfig.load(other_values_are_fraud_categories=True)
    _, accepted, _ = ingest(path, lenient)
    assert accepted["label"].to_list() == [0, 1, 0, 1, 1]
    assert accepted["fraud_type"].to_list()[-1] == "贷款类"


def test_parquet_input(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame({"content": ["a message", "another"], "is_fraud": [0, 1], "id": ["x1", "x2"]}).write_parquet(path)
    _, accepted, _ = ingest(path)
    assert accepted["message_id"].to_list() == ["x1", "x2"]


def test_timestamps():
    shanghai = __import__("zoneinfo").ZoneInfo("Asia/Shanghai")
    utc = dt.timezone.utc
    assert parse_timestamp("2026-01-01 08:00:00", shanghai) == dt.datetime(2026, 1, 1, 0, 0, tzinfo=utc)
    assert parse_timestamp("2026/01/01 08:00", shanghai) == dt.datetime(2026, 1, 1, 0, 0, tzinfo=utc)
    assert parse_timestamp("2026-01-01T08:00:00+08:00", shanghai) == dt.datetime(2026, 1, 1, 0, 0, tzinfo=utc)
    assert parse_timestamp("2026-01-01T00:00:00Z", shanghai) == dt.datetime(2026, 1, 1, tzinfo=utc)
    assert parse_timestamp("1767225600", shanghai) == dt.datetime(2026, 1, 1, tzinfo=utc)
    assert parse_timestamp("1767225600000", shanghai) == dt.datetime(2026, 1, 1, tzinfo=utc)
    assert parse_timestamp("", shanghai) is None
    with pytest.raises(ValueError):
        parse_timestamp("31/31/2026", shanghai)


@pytest.mark.parametrize(
    "text, utc_hour",
    [
        ("2026/1/1 10:30:00.000 +08:00", 2),
        ("2026-01-01 10:30:00 +0800", 2),
        ("2026-01-01 10:30:00 -05:00", 15),
        ("2026-01-01 10:30 UTC", 10),
        ("2026-01-01 10:30:00 z", 10),
        ("2026-01-01 10:30 GMT+08:00", 2),
        ("2026-1-1T10:30:00+08:00", 2),
    ],
)
def test_an_offset_after_a_space_or_a_single_digit_month_is_still_an_offset(text, utc_hour):
    """Not read in FRAUD_TIMEZONE (here Asia/Shanghai): the text says its own offset."""
    shanghai = __import__("zoneinfo").ZoneInfo("Asia/Shanghai")
    assert parse_timestamp(text, shanghai) == dt.datetime(2026, 1, 1, utc_hour, 30, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    "text, hour, minute",
    [
        ("2026-01-01 10:30 PM", 22, 30),
        ("2026-01-01 10:30:00pm", 22, 30),
        ("2026/1/1 12:05 a.m.", 0, 5),
        ("2026-01-01 12:05 PM", 12, 5),
        ("2026-01-01 00:30 AM", 0, 30),
        ("2026-01-01 9 AM", 9, 0),
        ("2026/1/1 下午3:05", 15, 5),
        ("2026年1月1日 上午10时30分", 10, 30),
        ("2026年1月1日晚上8点", 20, 0),
        ("2026-01-01 中午12:30", 12, 30),
        ("2026-01-01 中午1:00", 13, 0),
        ("2026-01-01 凌晨0:30", 0, 30),
        ("2025年12月31日 晚上12:30", 0, 30),  # midnight: the next day
    ],
)
def test_twelve_hour_clocks(text, hour, minute):
    assert parse_timestamp(text, dt.timezone.utc) == dt.datetime(2026, 1, 1, hour, minute, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01 13:30 PM",
        "2026-01-01 00:30 PM",
        "2026-01-01 PM",
        "2026-01-11 PM",
        "2026/1/15 am",
        "2026-01-01 10:30 AM PM",
        "1/13/2026 10:30 PM",
        "1/3/26 10:30",
        "下午3:05",
        "2026-01-01 -0800",
    ],
)
def test_twelve_hour_clocks_that_cannot_be_read_say_so(text):
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_timestamp(text, dt.timezone.utc)


def test_telecom_files_are_all_accounted_for(telecom_dir):
    config = IngestConfig.load(other_values_are_fraud_categories=True)
    total_read = total_accepted = 0
    for path in sorted(telecom_dir.glob("*.csv")):
        parsed, accepted, quarantine = ingest(path, config)
        assert parsed.error is None
        assert set(quarantine["reason"].str.extract(r"^(\w+)")) <= {"duplicate"}  # only de-duplication
        total_read += parsed.rows_read
        total_accepted += accepted.height
        if path.name.startswith("label04"):
            assert parsed.encoding == "gb18030"
            assert accepted["text"].str.contains("祝桥光明学校").any()
            assert accepted["fraud_type"].unique().to_list() == ["冒充领导、熟人类"]
        if path.name.startswith("label00"):
            assert accepted["label"].unique().to_list() == [0]
    # 11,838 records (7,839 lines in label00 minus its header): a stray quote in label00 used to merge
    # lines 378-402 into one record, which the old count of 11,773 included
    assert total_read == 11_838
    assert 11_500 < total_accepted < total_read
