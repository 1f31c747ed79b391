"""No file in the landing folder can stop registration of the others, on a sensor tick or in `ingest`."""

import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from fraud_assets import landing
from fraud_assets.cli import main
from fraud_assets.defs.partitions import message_files
from fraud_assets.defs.resources import FraudSettings
from fraud_assets.landing import archived_file, landing_quarantine_path, load_index, register_files
from fraud_assets.runs import get_instance, wait_until_settled
from fraud_assets.storage import Storage
from tests.test_ingest_dagster import GOOD, evaluate_sensor

GBK_NAME = os.fsdecode("客户短信".encode("gbk") + b".csv")  # a name from an unzipped Windows archive


@pytest.fixture
def env(env, monkeypatch):
    """conftest's storage root, with no settle wait, and FraudSettings for the sensor."""
    monkeypatch.setenv("FRAUD_LANDING_SETTLE_SECONDS", "0")
    return env, FraudSettings(data_dir=str(env), landing_dir=str(env / "incoming"), landing_settle_seconds=0)


def content(n: int) -> str:
    return GOOD.replace("4821", f"{n:04d}")


def test_duplicate_under_a_second_name_plus_a_new_file(env):
    data, fraud = env
    instance = dg.DagsterInstance.ephemeral()
    (data / "incoming" / "day1.csv").write_text(content(1))
    [first] = evaluate_sensor(instance, fraud).run_requests

    shutil.copy(data / "incoming" / "day1.csv", data / "incoming" / "day1.csv.done")  # same bytes, second name
    (data / "incoming" / "day2.csv").write_text(content(2))
    tick = evaluate_sensor(instance, fraud)
    [added] = tick.dynamic_partitions_requests[0].partition_keys
    assert added.startswith("day2-")
    assert {r.partition_key for r in tick.run_requests} == {first.partition_key, added}  # day1 not yet ingested: asked again
    assert sorted(instance.get_dynamic_partitions(message_files.name)) == sorted([first.partition_key, added])

    registration = register_files(Storage(data), set(instance.get_dynamic_partitions(message_files.name)))
    duplicates = [(f.path.name, f.duplicate_of) for f in registration.landed if f.duplicate_of]
    assert duplicates == [("day1.csv.done", first.partition_key)] and not registration.issues and not registration.new
    assert sorted(p.name for p in (data / "archive").glob("day1*")) == [
        f"{first.partition_key}.csv",
        f"{first.partition_key}.manifest.json",
    ]


def test_same_bytes_under_two_names_that_clean_to_one_key_are_one_partition(env):
    """`day 1.csv` and `day_1.csv` (or x.csv and x.CSV) both clean to the key day_1-<hash>: asked to add
    that key twice, the instance's storage refused the whole request, on every pass, for every file."""
    data, fraud = env
    instance = dg.DagsterInstance.ephemeral()
    (data / "incoming" / "day 1.csv").write_text(content(1))
    (data / "incoming" / "day_1.csv").write_text(content(1))
    (data / "incoming" / "other.csv").write_text(content(2))
    tick = evaluate_sensor(instance, fraud)
    added = tick.dynamic_partitions_requests[0].partition_keys
    assert len(added) == len(set(added)) == 2 and sorted(k.split("-")[0] for k in added) == ["day_1", "other"]
    assert sorted(instance.get_dynamic_partitions(message_files.name)) == sorted(added)
    assert sorted(r.partition_key for r in tick.run_requests) == sorted(added)

    registration = register_files(Storage(data), set(added))
    assert not registration.new and [f.path.name for f in registration.landed if f.duplicate_of] in (
        ["day 1.csv"],
        ["day_1.csv"],
    )
    # `fraud-assets ingest` adds registration.new the same way (runs.run_ingest)


def test_a_json_file_is_archived_beside_its_manifest_and_old_archives_still_read(env, capsys):
    """A landed .json file and its manifest once shared <key>.json: the file was overwritten and never ingested."""
    data, _ = env
    rows = [{"text": f"message {i} about a parcel", "label": i % 2, "sent_at": f"2026-03-01 10:0{i}:00"} for i in range(3)]
    (data / "incoming" / "export.json").write_text(json.dumps(rows, ensure_ascii=False))
    (data / "incoming" / "day.csv").write_text(content(8))
    assert main(["ingest", "--json"]) == 0
    files = {f["file"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    assert (files["export.json"]["status"], files["export.json"]["accepted"]) == ("ingested", 3)
    key, csv_key = files["export.json"]["partition"], files["day.csv"]["partition"]
    path, original = archived_file(Storage(data), key)
    assert path.name == f"{key}.json" and json.loads(path.read_text()) == rows and original == "export.json"

    # an archive written before the manifest had its own suffix: <key>.json next to <key>.csv
    archive = data / "archive"
    (archive / f"{csv_key}.manifest.json").rename(archive / f"{csv_key}.json")
    path, original = archived_file(Storage(data), csv_key)
    assert path.name == f"{csv_key}.csv" and original == "day.csv"
    assert main(["ingest", "--json"]) == 0
    again = {f["file"]: f["status"] for f in json.loads(capsys.readouterr().out)["files"]}
    assert again == {"export.json": "unchanged", "day.csv": "unchanged"}


def test_a_non_utf8_name_plus_a_good_file(env):
    data, fraud = env
    instance = dg.DagsterInstance.ephemeral()
    (data / "incoming" / GBK_NAME).write_text(content(3))
    (data / "incoming" / "good.csv").write_text(content(4))
    tick = evaluate_sensor(instance, fraud)
    keys = sorted(r.partition_key for r in tick.run_requests)
    assert len(keys) == 2 and keys[0].startswith("file-") and keys[1].startswith("good-")
    assert all(k.replace("-", "").replace("_", "").isalnum() and k.isascii() for k in keys)
    tags = {r.partition_key: r.tags["fraud/source_file"] for r in tick.run_requests}
    shown = tags[keys[0]]  # printable and encodable: undecodable bytes as \xNN
    assert shown.startswith("\\xbf") and shown.endswith("\\xd0\\xc5.csv") and shown.isprintable() and shown.encode("utf-8")
    manifest = json.loads((data / "archive" / f"{keys[0]}.manifest.json").read_text())
    assert bytes.fromhex(manifest["original_name_hex"]) == os.fsencode(GBK_NAME)
    path, original = archived_file(Storage(data), keys[0])
    assert path.read_text() == content(3) and original == manifest["original_name"]


def test_very_long_names_and_names_with_newlines_get_safe_keys(env):
    data, fraud = env
    instance = dg.DagsterInstance.ephemeral()
    long_name = "x" * 240 + ".csv"
    (data / "incoming" / long_name).write_text(content(5))
    (data / "incoming" / "two\nlines.csv").write_text(content(6))
    (data / "incoming" / ("y" * 200 + "." + "z" * 50)).write_text(content(7))  # a 50-character "suffix"
    tick = evaluate_sensor(instance, fraud)
    keys = sorted(r.partition_key for r in tick.run_requests)
    assert len(keys) == 3 and all(len(k) <= 61 and "\n" not in k for k in keys)
    names = sorted(json.loads((data / "archive" / f"{k}.manifest.json").read_text())["original_name"] for k in keys)
    assert names == sorted([long_name, "two\\nlines.csv", "y" * 200 + "." + "z" * 50])
    assert all(len(p.name) < 100 for p in (data / "archive").iterdir())


def test_a_symlink_to_a_file_outside_the_landing_folder_is_never_read(env, tmp_path, capsys):
    data, fraud = env
    secret = tmp_path / "outside" / "secret_target_file.csv"
    secret.parent.mkdir()
    secret.write_text("text,label\nSECRET-TARGET-7f3a private text,0\n")
    (data / "incoming" / "link.csv").symlink_to(secret)
    (data / "incoming" / "folder.csv").mkdir()
    os.mkfifo(data / "incoming" / "pipe.csv")  # opening a FIFO would block the tick forever
    (data / "incoming" / "empty.csv").write_bytes(b"")

    instance = get_instance()
    tick = evaluate_sensor(instance, fraud)
    assert [r.partition_key.split("-")[0] for r in tick.run_requests] == ["empty"]
    assert main(["ingest", "--json"]) == 1  # empty.csv is quarantined whole
    files = {f["file"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    assert files["link.csv"]["status"] == "skipped" and "symbolic link" in files["link.csv"]["reason"]
    assert files["folder.csv"]["status"] == "skipped" and "folder" in files["folder.csv"]["reason"]
    assert files["pipe.csv"]["status"] == "skipped" and "not a regular file" in files["pipe.csv"]["reason"]
    assert files["empty.csv"]["status"] == "quarantined" and files["empty.csv"]["reason"] == "empty file (0 bytes)"

    needles = [b"SECRET-TARGET-7f3a", b"secret_target_file", str(secret.parent).encode()]
    home = Path(os.environ["DAGSTER_HOME"])
    for root in (data, home):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                blob = path.read_bytes()
                assert not any(n in blob for n in needles), f"{path} holds data of the symlink target"
    runs = instance.get_runs()
    assert runs and all("secret" not in json.dumps(run.tags) for run in runs)


def test_a_file_that_vanishes_mid_tick_is_retried_and_the_others_registered(env, monkeypatch):
    data, fraud = env
    (data / "incoming" / "a.csv").write_text(content(8))
    (data / "incoming" / "vanish.csv").write_text(content(9))
    original = landing._open_regular

    def vanish_first(path, info):
        if path.name == "vanish.csv":
            path.unlink()  # deleted between the listing and the open
        return original(path, info)

    monkeypatch.setattr(landing, "_open_regular", vanish_first)
    first = register_files(Storage(data), set())
    assert [f.path.name for f in first.new] == ["a.csv"]
    assert [(i.name, i.status) for i in first.issues] == [("vanish.csv", "retry")] and "FileNotFoundError" in first.issues[
        0
    ].reason
    monkeypatch.setattr(landing, "_open_regular", original)
    (data / "incoming" / "vanish.csv").write_text(content(9))  # dropped again
    second = register_files(Storage(data), {f.partition_key for f in first.new})
    assert [f.path.name for f in second.new] == ["vanish.csv"] and not second.issues


def test_an_exception_on_one_file_is_quarantined_and_the_others_registered(env, monkeypatch):
    data, fraud = env
    for name in ("a.csv", "boom.csv", "c.csv"):
        (data / "incoming" / name).write_text(content(len(name) + ord(name[0])))
    original = landing._register_one

    def explode(storage, path, info, by_hash):
        if path.name == "boom.csv":
            raise ValueError("something unexpected")
        return original(storage, path, info, by_hash)

    monkeypatch.setattr(landing, "_register_one", explode)
    registration = register_files(Storage(data), set())
    assert sorted(f.path.name for f in registration.new) == ["a.csv", "c.csv"]
    [issue] = registration.issues
    assert (issue.name, issue.status) == ("boom.csv", "failed") and "ValueError: something unexpected" in issue.reason
    record = pl.read_parquet(landing_quarantine_path(Storage(data), "boom.csv"))
    assert (
        record.select("source_file", "stage").row(0) == ("boom.csv", "landing") and "something unexpected" in record["reason"][0]
    )


def test_work_per_pass_is_bounded_and_the_cursor_does_not_grow(env):
    data, fraud = env
    for i in range(7):
        (data / "incoming" / f"f{i}.csv").write_text(content(100 + i))
    instance = dg.DagsterInstance.ephemeral()
    small = FraudSettings(data_dir=str(data), landing_dir=str(data / "incoming"), landing_settle_seconds=0, landing_batch_size=3)
    cursors, added = [], []
    for _ in range(4):
        tick = evaluate_sensor(instance, small)
        added.append(len(tick.dynamic_partitions_requests[0].partition_keys) if tick.dynamic_partitions_requests else 0)
        cursors.append(json.loads(tick.cursor))
    assert added == [3, 3, 1, 0]
    assert [c["deferred"] for c in cursors] == [4, 1, 0, 0]
    assert {len(c) for c in cursors} == {4}  # a few counters, whatever the folder size
    assert len(load_index(Storage(data))) == 7
    (data / "incoming" / "f0.csv").unlink()
    evaluate_sensor(instance, small)
    assert len(load_index(Storage(data))) == 6  # names no longer in the folder leave the index


def test_ingest_waits_for_files_to_settle(env):
    data, _ = env
    path = data / "incoming" / "fresh.csv"
    path.write_text(content(11))
    started, messages = time.monotonic(), []
    wait_until_settled(data / "incoming", 1.5, log=messages.append)
    assert time.monotonic() - started >= 1.0 and messages and "settle" in messages[0]
    assert time.time() - path.stat().st_mtime >= 1.5
    assert [p.name for p in landing.candidate_files(data / "incoming", settle_seconds=1.5)] == ["fresh.csv"]


def test_files_are_fsynced_before_the_rename_that_publishes_them(env, monkeypatch):
    data, _ = env
    (data / "incoming" / "day.csv").write_text(content(12))
    events = []
    real_fsync, real_replace, real_open = os.fsync, os.replace, os.open
    names: dict[int, str] = {}

    def opening(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        names[fd] = os.fspath(path)
        return fd

    monkeypatch.setattr(os, "open", opening)
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", names.get(fd, "?"))), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append(("replace", os.fspath(a), os.fspath(b))), real_replace(a, b))[1]
    )
    [item] = register_files(Storage(data), set()).new
    archived = str(data / "archive" / f"{item.partition_key}.csv")
    [publish] = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == archived]
    tmp = events[publish][1]
    assert ("fsync", tmp) in events[:publish], "data must reach the disk before the rename publishes it"
    assert ("fsync", str(data / "archive")) in events[publish + 1 :], "the folder entry must reach the disk too"
    assert os.path.getsize(archived) == len(content(12).encode())


@pytest.mark.parametrize("damage", ["{not json", '{"a.csv": [1, 2]}', "[1, 2, 3]"])
def test_a_damaged_index_only_costs_a_re_hash(env, damage):
    data, _ = env
    (data / "incoming" / "a.csv").write_text(content(13))
    first = register_files(Storage(data), set())
    (data / "archive" / landing.INDEX_NAME).write_text(damage)
    again = register_files(Storage(data), {f.partition_key for f in first.new})
    assert [f.partition_key for f in again.landed] == [first.new[0].partition_key] and not again.new and not again.issues


def test_compressed_files_are_read_as_the_file_inside(env, capsys):
    """Daily exports often arrive gzipped: day.csv.gz is archived under <key>.csv.gz and read as a CSV."""
    import bz2
    import gzip

    data, _ = env
    (data / "incoming" / "day.csv.gz").write_bytes(gzip.compress(content(1).encode()))
    (data / "incoming" / "day2.tsv.bz2").write_bytes(bz2.compress(content(2).replace(",", "\t").encode()))
    (data / "incoming" / "cut.csv.gz").write_bytes(gzip.compress(content(3).encode())[:-12])  # a transfer cut short
    assert main(["ingest", "--json"]) == 1  # the cut file is quarantined whole
    files = {f["file"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    for name in ("day.csv.gz", "day2.tsv.bz2"):
        assert (files[name]["status"], files[name]["rows_read"], files[name]["accepted"]) == ("ingested", 3, 3)
    key = files["day.csv.gz"]["partition"]
    path, original = archived_file(Storage(data), key)
    assert path.name == f"{key}.csv.gz" and original == "day.csv.gz"
    cut = files["cut.csv.gz"]
    assert cut["status"] == "quarantined" and cut["reason"].startswith("cannot decompress the gzip file")
    assert pl.read_parquet(data / "quarantine" / "raw_messages" / f"{cut['partition']}.parquet")["stage"].to_list() == ["file"]


def test_a_copy_that_sorts_first_is_the_duplicate_and_the_original_stays_unchanged(env, capsys):
    """`day (1).csv` sorts before `day.csv`: the copy was listed first and made the original a duplicate of itself."""
    data, _ = env
    original = data / "incoming" / "day.csv"
    original.write_text(content(14))
    assert main(["ingest", "--json"]) == 0
    [first] = json.loads(capsys.readouterr().out)["files"]
    assert first["status"] == "ingested"
    shutil.copy(original, data / "incoming" / "day (1).csv")  # same bytes, a browser's second download
    os.utime(original, (time.time() - 60, time.time() - 60))  # touched: the index misses, the file is hashed again
    main(["ingest", "--json"])
    files = {f["file"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    assert sorted(files) == ["day (1).csv", "day.csv"]
    assert files["day.csv"]["status"] == "unchanged" and files["day.csv"]["partition"] == first["partition"]
    assert files["day (1).csv"]["status"] == "duplicate" and files["day (1).csv"]["partition"] == first["partition"]
