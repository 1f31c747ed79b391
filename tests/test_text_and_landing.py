"""Text normalisation, PII masking and content-addressed partition keys."""

import os

from fraud_assets.landing import archive_file, archived_file, candidate_files, partition_key_for, register_files
from fraud_assets.storage import Storage
from fraud_assets.text import mask_pii, normalize_text, text_hash


def test_normalisation_makes_visually_equal_texts_hash_equal():
    assert normalize_text("  Ｈｅｌｌｏ，\u3000世界\n\t！ ") == "Hello, 世界 !"
    assert text_hash(normalize_text("ＡＢＣ  1")) == text_hash(normalize_text("ABC 1"))
    assert text_hash("a") != text_hash("b")
    # invisible characters inserted to slip past keyword filters change neither the text nor its hash
    assert normalize_text("转\u200b账到\u2060安全\ufeff账户\u202e \u00ad") == "转账到安全账户"
    assert normalize_text("\u200b\u200b \ufeff") == ""
    assert normalize_text("👨\u200d👩\u200d👧") == "👨\u200d👩\u200d👧"  # ZWJ shapes emoji: kept
    assert normalize_text(" \u200d\u3164\u200c ") == ""  # a joiner at an end joins nothing


def test_previews_mask_phones_cards_and_urls():
    masked = mask_pii("请拨打13812345678或致电010-12345678，卡号6222 0212 3456 7890 123，访问https://evil.cn/x?a=1 www.bad.com")
    assert "13812345678" not in masked and "010-12345678" not in masked
    assert "6222" not in masked and "evil.cn" not in masked and "bad.com" not in masked
    assert masked.count("<PHONE>") == 2 and "<CARD>" in masked and masked.count("<URL>") == 2
    assert mask_pii("验证码 4821，5分钟内有效") == "验证码 4821，5分钟内有效"  # short codes are not PII


def test_partition_keys_are_content_addressed_and_safe(tmp_path):
    a = tmp_path / "客户 消息 2026-01-05.csv"
    a.write_text("text,label\nhi,0\n")
    key = partition_key_for(a)
    assert key.startswith("2026-01-05-") and len(key.rsplit("-", 1)[1]) == 12
    assert all(c.isalnum() or c in "_-" for c in key)
    b = tmp_path / "copy.csv"
    b.write_bytes(a.read_bytes())
    assert partition_key_for(b).rsplit("-", 1)[1] == key.rsplit("-", 1)[1]
    a.write_text("text,label\nhi,1\n")
    assert partition_key_for(a) != key


def test_registration_archives_files_and_skips_unsettled_and_temporary_ones(tmp_path):
    storage = Storage(tmp_path / "root")
    storage.landing_dir.mkdir(parents=True)
    (storage.landing_dir / "day1.csv").write_text("text,label\nhi,0\n")
    (storage.landing_dir / ".day2.csv.x.tmp").write_text("partial")
    (storage.landing_dir / "day3.csv.part").write_text("partial")
    old = storage.landing_dir / "old.csv"
    old.write_text("text,label\nold,0\n")
    os.utime(old, (0, 0))
    assert [p.name for p in candidate_files(storage.landing_dir, settle_seconds=3600)] == ["old.csv"]

    new = register_files(storage, set()).new
    assert sorted(f.path.name for f in new) == ["day1.csv", "old.csv"]
    path, original = archived_file(storage, new[0].partition_key)
    assert path.read_bytes() == new[0].path.read_bytes() and original == new[0].path.name
    assert archive_file(storage, new[0]) == path  # idempotent

    (storage.landing_dir / "day1.csv").unlink()  # the archive keeps the partition reproducible
    assert archived_file(storage, new[0].partition_key)[0].exists()
    again = register_files(storage, {f.partition_key for f in new})
    assert again.new == [] and not again.issues


def test_vectorised_normalisation_and_hashing_equal_the_per_text_functions():
    import polars as pl

    from fraud_assets.text import normalize_text, normalize_texts, text_hash, text_hashes

    tricky = [
        "  全角ＡＢＣ１２３　和\u3000空格 ",
        "tab\tnew\nline\r\nand\x1c\x1d\x1e\x1fseparators",
        "\u00a0nbsp\u2028line\u2029para\x85nel\u200bzero-width",
        "\u200b\ufeff \u00ad",
        "转\u200b账 \u2060\u202e到\u2066安全\u2069账户\u200d\u200c",
        "ﬁ ligature ① circled ㍻ square",
        "",
        "   ",
        None,
        "plain ascii",
        "\u3164\u2800\ufe0f \u200d\u200c",
        "\u200d\u2764\ufe0f\u200d\U0001f525 \U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f\U000e0020",
    ]
    normalized = normalize_texts(pl.Series(tricky, dtype=pl.Utf8)).to_list()
    assert normalized == [None if t is None else normalize_text(t) for t in tricky]
    assert text_hashes(pl.Series(normalized, dtype=pl.Utf8)).to_list() == [
        None if t is None else text_hash(t) for t in normalized
    ]
