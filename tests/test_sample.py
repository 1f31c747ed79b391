"""The demo dataset: deterministic, realistic proportions, parseable, class-dependent timing."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from fraud_assets.sample import write_sample

CJK = re.compile("[\u4e00-\u9fff]")
FRAUD_TYPES = {"impersonate_police", "refund_scam", "loan_scam", "fake_boss_friend", "investment_scam", "part_time_job"}


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def parse_sent_at(value: str) -> datetime:
    """Only the two formats the generator promises: naive 'YYYY-MM-DD HH:MM:SS' or ISO with offset."""
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        ts = datetime.fromisoformat(value)
        assert ts.tzinfo is not None and "T" in value, value
        return ts


def is_night(ts: datetime) -> bool:
    return ts.hour >= 19 or ts.hour < 6


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[Path, list[dict]]:
    paths = write_sample(tmp_path_factory.mktemp("landing") / "incoming")  # folder is created
    return {p: read_rows(p) for p in paths}


@pytest.fixture(scope="module")
def rows(sample) -> list[dict]:
    return [r for rs in sample.values() for r in rs]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = write_sample(tmp_path / "a", n_files=3, messages_per_file=60)
    b = write_sample(tmp_path / "b", n_files=3, messages_per_file=60)
    c = write_sample(tmp_path / "c", n_files=3, messages_per_file=60, seed=8)
    assert [p.name for p in a] == [p.name for p in b] == [p.name for p in c]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert [p.read_bytes() for p in a] != [p.read_bytes() for p in c]


def test_files_layout_and_formats(sample):
    paths = list(sample)
    assert paths == sorted(paths) and len(paths) == 8
    assert all(re.fullmatch(r"messages_\d{4}-\d{2}-\d{2}\.(csv|jsonl)", p.name) for p in paths)
    assert sum(p.suffix == ".jsonl" for p in paths) == 1
    assert paths[-1].name == "messages_2026-11-15.csv"
    assert not [p for p in paths[0].parent.iterdir() if p not in sample]  # no temp files left behind
    for rs in sample.values():
        assert len(rs) == 400 and all(set(r) == {"message_id", "text", "label", "sent_at", "fraud_type"} for r in rs)


def test_csv_quoting_survives_commas_quotes_newlines(rows):
    texts = [r["text"] for r in rows]
    assert any("\n" in t for t in texts) and any("," in t for t in texts) and any('"' in t for t in texts)


def test_labels_ids_and_fraud_types(rows):
    assert {r["label"] for r in rows} == {"normal", "defraud"}
    ids = [r["message_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    for r in rows:
        if r["label"] == "defraud":
            assert r["fraud_type"] in FRAUD_TYPES
        else:
            assert not r["fraud_type"]  # "" in CSV, null in JSON Lines
    assert {r["fraud_type"] for r in rows if r["label"] == "defraud"} == FRAUD_TYPES


def test_fraud_share_per_file_and_overall(sample, rows):
    share = lambda rs: sum(r["label"] == "defraud" for r in rs) / len(rs)  # noqa: E731
    for path, rs in sample.items():
        assert 0.15 <= share(rs) <= 0.25, path.name
    assert 0.15 <= share(rows) <= 0.25


def test_mostly_chinese_with_some_english(rows):
    zh = sum(bool(CJK.search(r["text"])) for r in rows) / len(rows)
    assert 0.6 <= zh <= 0.9


def test_a_few_exact_duplicates_across_files(sample):
    files_by_text: dict[str, set] = {}
    for path, rs in sample.items():
        for r in rs:
            files_by_text.setdefault(r["text"], set()).add(path)
    n_rows = sum(len(rs) for rs in sample.values())
    assert any(len(files) > 1 for files in files_by_text.values())
    assert len(files_by_text) > 0.9 * n_rows  # varied texts, duplicates stay "a few"


def test_sent_at_formats_and_window(sample):
    offset_files = 0
    for path, rs in sample.items():
        export = date.fromisoformat(path.stem.removeprefix("messages_"))
        stamps = [parse_sent_at(r["sent_at"]) for r in rs]
        aware = {ts.tzinfo is not None for ts in stamps}
        assert len(aware) == 1, path.name  # one convention per file
        if aware == {True}:
            offset_files += 1
            assert {ts.utcoffset() for ts in stamps} == {timedelta(hours=8)}
        days = {ts.date() for ts in stamps}
        assert min(days) >= export - timedelta(days=46) and max(days) < export, path.name
        assert stamps == sorted(stamps)  # a daily export is chronological
    assert offset_files == 1


def test_timing_differs_by_class(rows):
    by_label: dict[str, list[datetime]] = {"normal": [], "defraud": []}
    for r in rows:
        by_label[r["label"]].append(parse_sent_at(r["sent_at"]))
    night = {k: sum(map(is_night, v)) / len(v) for k, v in by_label.items()}
    weekend = {k: sum(ts.weekday() >= 5 for ts in v) / len(v) for k, v in by_label.items()}
    assert night["defraud"] > night["normal"] + 0.2
    assert weekend["defraud"] > weekend["normal"] + 0.1


def test_seasonal_campaigns(rows):
    fraud = [(parse_sent_at(r["sent_at"]), r["fraud_type"]) for r in rows if r["label"] == "defraud"]

    def share(ftype: str, during) -> tuple[float, float]:
        inside = [t for ts, t in fraud if during(ts)]
        outside = [t for ts, t in fraud if not during(ts)]
        return Counter(inside)[ftype] / len(inside), Counter(outside)[ftype] / len(outside)

    # The campaign windows themselves (11.11 is Nov 1-20, not all of November): with the harder
    # sample (hard negatives, label noise) a whole month holds too few campaign rows to test reliably.
    for ftype, during in [
        ("refund_scam", lambda ts: ts.month == 11 and ts.day <= 20),
        ("loan_scam", lambda ts: ts.month in (1, 2)),
        ("part_time_job", lambda ts: ts.month in (6, 7, 8)),
    ]:
        inside, outside = share(ftype, during)
        assert inside > 1.5 * outside, ftype


def test_rewrite_is_noop_when_identical_and_overwrites_when_changed(tmp_path):
    paths = write_sample(tmp_path, n_files=2, messages_per_file=30)
    before = [p.stat().st_mtime_ns for p in paths]
    paths[0].write_text("stale", encoding="utf-8")
    again = write_sample(tmp_path, n_files=2, messages_per_file=30)
    assert again == paths
    assert paths[1].stat().st_mtime_ns == before[1]  # identical content: not touched
    assert paths[0].read_text(encoding="utf-8") != "stale"
    assert sorted(tmp_path.iterdir()) == paths


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_sample(tmp_path, n_files=0)


@pytest.mark.parametrize("flag", ["--files", "--messages"])
@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_cli_rejects_counts_below_one_with_a_usage_error(tmp_path, capsys, flag, value):
    from fraud_assets.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["sample", "--output", str(tmp_path), flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_writes_the_requested_files(tmp_path, capsys):
    from fraud_assets.cli import main

    assert main(["sample", "--output", str(tmp_path), "--files", "2", "--messages", "5"]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 and sorted(printed) == [str(p) for p in sorted(tmp_path.iterdir())]
