"""Faults with real processes: SIGKILL during retrain and ingest, broken production models."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from fraud_assets.cli import main
from fraud_assets.dataset import ingested_partitions
from fraud_assets.landing import partition_key_for
from fraud_assets.model.io import load_model
from fraud_assets.runs import get_instance, run_ingest, run_retrain
from fraud_assets.sample import write_sample
from fraud_assets.storage import Storage


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    env = {"FRAUD_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home"), "TQDM_DISABLE": "1"}
    mp = pytest.MonkeyPatch()
    for name, value in env.items():
        mp.setenv(name, value)
    write_sample(root / "data" / "incoming", n_files=2, messages_per_file=200)
    instance = get_instance()
    run_ingest(instance, log=lambda m: None)
    assert run_retrain(instance)["promoted"]
    yield {"root": root, "data": root / "data", "env": {**os.environ, **env}}
    mp.undo()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fraud_assets.cli", *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"process ended (rc={proc.returncode}) before the kill point:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"kill point not reached in {timeout}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def all_parquet_readable(root: Path) -> int:
    files = [p for p in root.rglob("*.parquet")]
    for path in files:
        pl.read_parquet(path)  # raises on a truncated file
    return len(files)


def test_killed_retrain_keeps_the_champion_intact(project, tmp_path):
    data, production = project["data"], project["data"] / "models" / "production.json"
    champion = production.read_bytes()
    champion_files = snapshot(production.parent / json.loads(champion)["model"])
    runs_before = set((data / "tensorboard").iterdir())
    log = tmp_path / "retrain.log"
    proc = spawn(["retrain"], project["env"], log)

    def mid_epoch() -> bool:
        new = [p for p in (data / "tensorboard").iterdir() if p not in runs_before]
        return bool(new) and any(f.stat().st_size > 2000 for f in new[0].glob("events.*"))

    wait_for(mid_epoch, proc, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert production.read_bytes() == champion
    assert snapshot(production.parent / json.loads(champion)["model"]) == champion_files
    assert all_parquet_readable(data) > 0
    assert main(["score", str(next((data / "incoming").iterdir())), "-o", str(tmp_path / "scored.csv")]) == 0

    rerun = subprocess.run(
        [sys.executable, "-m", "fraud_assets.cli", "retrain", "--json"], env=project["env"], capture_output=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    summary = json.loads(rerun.stdout.decode().strip().splitlines()[-1])
    assert summary["success"]
    # the killed run no longer looks alive and released its `gpu` pool slot
    killed = [r for r in get_instance().get_runs() if r.tags.get("fraud/headless_pid") == str(proc.pid)]
    assert killed and all(r.status.value == "FAILURE" for r in killed)
    assert load_model(production)[1]["threshold"] > 0


def test_killed_ingest_leaves_no_partial_output_and_resumes(project, tmp_path):
    data = project["data"]
    staging = tmp_path / "staging"
    [big] = write_sample(staging, seed=11, n_files=1, messages_per_file=500)
    shutil.copy(big, data / "incoming" / "big.csv")
    key = partition_key_for(data / "incoming" / "big.csv")
    storage = Storage(data)
    log = tmp_path / "ingest.log"
    proc = spawn(["ingest"], project["env"], log)

    wait_for(lambda: storage.asset_path("validated_messages", key).exists(), proc, log)
    time.sleep(1.0)  # into the embedding step
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert all_parquet_readable(data) > 0
    assert key not in ingested_partitions(storage, [key])

    rerun = subprocess.run(
        [sys.executable, "-m", "fraud_assets.cli", "ingest", "--json"], env=project["env"], capture_output=True, timeout=600
    )
    files = {f["file"]: f for f in json.loads(rerun.stdout.decode().strip().splitlines()[-1])["files"]}
    assert files["big.csv"]["status"] == "ingested", rerun.stderr.decode()[-3000:]
    assert files["big.csv"]["rows_read"] == 500 == files["big.csv"]["accepted"] + files["big.csv"]["quarantined"]
    assert pl.read_parquet(storage.asset_path("message_embeddings", key)).height == files["big.csv"]["accepted"]


def test_missing_or_corrupt_model_gives_a_clear_error(project, tmp_path, capsys):
    sample_file = str(next((project["data"] / "incoming").iterdir()))
    out = str(tmp_path / "out.csv")
    assert main(["score", sample_file, "-o", out, "--model", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err

    broken = tmp_path / "broken"
    models = project["data"] / "models"
    shutil.copytree(models / json.loads((models / "production.json").read_text())["model"], broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["score", sample_file, "-o", out, "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "fraud-assets score:" in err
    assert not Path(out).exists()

    (broken / "model_card.json").write_text("{not json")
    assert main(["score", sample_file, "-o", out, "--model", str(broken)]) == 2


def test_score_keeps_every_input_row_and_says_why_one_was_not_scored(project, tmp_path, capsys):
    source = tmp_path / "to_score.csv"
    source.write_text(
        "text,sent_at\n"
        "您的快递已到达驿站，请凭取件码取件,2026-03-01 10:00:00\n"  # 0 scored
        "【公安局】您涉嫌洗钱，请立即转账到安全账户,next tuesday\n"  # 1 bad timestamp
        ",2026-03-01 11:00:00\n"  # 2 empty text
        "too,many,fields\n"  # 3 malformed line
        "Your parcel is waiting at the locker,20260301120000\n",  # 4 scored (compact timestamp)
        encoding="utf-8",
    )
    out = tmp_path / "scored.csv"
    assert main(["score", str(source), "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows_read"], summary["scored"], summary["not_scored"]) == (5, 2, 3)
    scored = pl.read_csv(out)
    assert scored["source_row"].to_list() == [0, 1, 2, 3, 4]
    assert scored["probability"].is_null().to_list() == [False, True, True, True, False]
    reasons = scored["reason"].to_list()
    assert reasons[0] is None and reasons[4] is None
    assert "next tuesday" in reasons[1] and "empty" in reasons[2] and "expected 2 fields, found 3" in reasons[3]


def test_score_csv_cannot_carry_a_spreadsheet_formula_and_jsonl_keeps_the_text(project, tmp_path, capsys):
    texts = ['=HYPERLINK("http://x.example/pay","退款")', "+86 138 0000 0000 中奖", "@客服 请回复", "-1 元 领取", "正常的消息 =1"]
    source = tmp_path / "formulas.jsonl"
    source.write_text(
        "".join(json.dumps({"text": t, "sent_at": "2026-03-01 10:00:00"}, ensure_ascii=False) + "\n" for t in texts)
    )
    for out in (tmp_path / "scored.csv", tmp_path / "scored.jsonl"):
        assert main(["score", str(source), "-o", str(out)]) == 0
    capsys.readouterr()
    as_csv = pl.read_csv(tmp_path / "scored.csv")["text"].to_list()
    assert as_csv == ["'" + t for t in texts[:4]] + [texts[4]]  # shown as text, not run
    assert pl.read_ndjson(tmp_path / "scored.jsonl")["text"].to_list() == texts  # exact


def test_a_model_card_without_its_fields_gives_a_clear_error(project, tmp_path, capsys):
    sample_file = str(next((project["data"] / "incoming").iterdir()))
    broken = tmp_path / "card"
    models = project["data"] / "models"
    shutil.copytree(models / json.loads((models / "production.json").read_text())["model"], broken)
    card = json.loads((broken / "model_card.json").read_text())
    del card["embedding_fingerprint"]
    (broken / "model_card.json").write_text(json.dumps(card))
    assert main(["score", sample_file, "-o", str(tmp_path / "o.csv"), "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "embedding_fingerprint" in err and str(broken) in err


def test_a_corrupt_production_pointer_is_replaced_by_the_next_retrain(project, capsys):
    # the gate decides to replace a champion it cannot load; promotion must then carry that out
    pointer = project["data"] / "models" / "production.json"
    pointer.write_text("garbage{")
    assert main(["retrain", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["promoted"] and "cannot be loaded" in summary["promotion_reason"]
    document = json.loads(pointer.read_text())
    assert document["previous"] is None and "not valid JSON" in document["replaced_unreadable"]
    load_model(pointer)


TINY = "text,label\n您的快递已到达驿站请取件,0\n明天下午三点开会,0\n晚饭吃什么,0\n【公安局】您涉嫌洗钱请立即转账到安全账户,1\n恭喜中奖请点击链接领取退款,1\n"
ONE_FRAUD = "text,label\n【公安局】您涉嫌洗钱请立即转账到安全账户,1\n" + "".join(
    f"第{i}号会议通知，请准时参加,0\n" for i in range(200)
)


@pytest.mark.parametrize("body", [TINY, ONE_FRAUD], ids=["5_rows", "1_fraud_200_normal"])
def test_a_split_without_fraud_fails_the_retrain_and_promotes_nothing(env, monkeypatch, capsys, body):
    # validation and test without fraud gave F1 0 at threshold 0.5, and that model was promoted as the first
    monkeypatch.setenv("FRAUD_LANDING_SETTLE_SECONDS", "0")
    (env / "incoming" / "tiny.csv").write_text(body, encoding="utf-8")
    assert main(["run", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)["retrain"]
    assert not summary["success"]
    assert not (env / "models" / "production.json").exists()
    dataset = pl.read_parquet(next((env / "assets" / "training_dataset").rglob("*.parquet")))
    assert dataset.filter(pl.col("split") == "validation")["label"].n_unique() < 2


def test_a_failed_retrain_says_why_in_its_summary(env, monkeypatch, capsys):
    # the summary said only "Steps failed: ['fraud_classifier']"; the cause was in Dagster's traceback alone
    monkeypatch.setenv("FRAUD_LANDING_SETTLE_SECONDS", "0")
    body = "text,label\n" + "".join(f"第{i}号会议通知，请准时参加,0\n" for i in range(20))
    (env / "incoming" / "normal.csv").write_text(body, encoding="utf-8")
    assert main(["ingest"]) == 0
    capsys.readouterr()
    assert main(["retrain", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert not summary["success"] and "the train split holds only one class" in summary["error"]
    assert "Steps failed" not in summary["error"]
    assert main(["retrain"]) == 1
    assert "retrain failed: ValueError: the train split holds only one class" in capsys.readouterr().err


def test_score_refuses_its_input_or_a_folder_as_the_output(project, tmp_path, capsys):
    # the input was silently overwritten; a folder failed with IsADirectoryError after all the scoring
    source = tmp_path / "in.csv"
    source.write_text("text,sent_at\n您的快递已到达驿站,2026-03-01 10:00:00\n", encoding="utf-8")
    before = source.read_bytes()
    (tmp_path / "link.csv").symlink_to(source)
    for output in (source, tmp_path / "." / "in.csv", tmp_path / "link.csv"):
        assert main(["score", str(source), "-o", str(output)]) == 2
        assert "is the input file" in capsys.readouterr().err
    assert source.read_bytes() == before
    folder = tmp_path / "out.csv"
    folder.mkdir()
    assert main(["score", str(source), "-o", str(folder)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert list(folder.iterdir()) == []
