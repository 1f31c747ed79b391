"""The whole pipeline with the storage root in an object store: an S3 API served by moto on loopback,
and memory://. Same data and seed as on a local root must give the same metrics."""

import json
import os

import polars as pl
import pytest
from services.s3 import S3_ENV, s3_server

from fraud_assets.cli import main
from fraud_assets.sample import write_sample

pytest.importorskip("s3fs")
pytest.importorskip("moto")


@pytest.fixture
def s3_bucket(monkeypatch):
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    with s3_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("fraud")
        yield fs
        s3fs.S3FileSystem.clear_instance_cache()


def _run_pipeline(root: str, tmp_path, name: str, monkeypatch, capsys) -> tuple[dict, pl.DataFrame]:
    landing = tmp_path / f"{name}-incoming"
    write_sample(landing, n_files=2, messages_per_file=150)
    monkeypatch.setenv("FRAUD_DATA_DIR", root)
    monkeypatch.setenv("FRAUD_LANDING_DIR", str(landing))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / f"{name}-dagster_home"))
    monkeypatch.setenv("FRAUD_LANDING_SETTLE_SECONDS", "0")
    capsys.readouterr()
    assert main(["run", "--json"]) == 0, capsys.readouterr().err[-3000:]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scored = tmp_path / f"{name}-scored.csv"
    assert main(["score", str(sorted(landing.iterdir())[0]), "-o", str(scored)]) == 0, capsys.readouterr().err[-3000:]
    return summary, pl.read_csv(scored)


def test_s3_root_runs_end_to_end_with_the_same_metrics_as_a_local_root(s3_bucket, tmp_path, monkeypatch, capsys):
    local, local_scores = _run_pipeline(str(tmp_path / "local-root"), tmp_path, "local", monkeypatch, capsys)
    remote, remote_scores = _run_pipeline("s3://fraud/prod", tmp_path, "s3", monkeypatch, capsys)

    assert [f["status"] for f in remote["files"]] == ["ingested", "ingested"]
    assert remote["retrain"]["success"] and remote["retrain"]["promoted"]
    for key in ("f1", "precision", "recall", "pr_auc", "threshold"):
        assert remote["retrain"]["model"][key] == pytest.approx(local["retrain"]["model"][key], abs=1e-9), key
    assert remote["retrain"]["counts"] == local["retrain"]["counts"]
    assert remote_scores["probability"].to_list() == pytest.approx(local_scores["probability"].to_list(), abs=1e-6)

    # everything landed in the bucket, nothing in a local folder named after the URI
    keys = s3_bucket.find("fraud/prod")
    for expected in ("models/production.json", "reports/latest/metrics.json", "archive/", "embedding_cache/", "tensorboard/"):
        assert any(expected in k for k in keys), expected
    assert not os.path.exists("s3:") and not (tmp_path / "s3:").exists()
    pointer = json.loads(s3_bucket.cat("fraud/prod/models/production.json"))
    assert pointer["model"].startswith("candidates/") and set(pointer["files"]) == {
        "model.safetensors",
        "model_config.json",
        "model_card.json",
    }


def test_memory_root_runs_end_to_end(tmp_path, monkeypatch, capsys):
    summary, scores = _run_pipeline(f"memory://fraud-{tmp_path.name}", tmp_path, "memory", monkeypatch, capsys)
    assert summary["retrain"]["success"] and summary["retrain"]["promoted"]
    assert scores.height > 0 and scores["probability"].null_count() < scores.height


def test_a_run_killed_mid_write_leaves_nothing_that_reads_as_complete(s3_bucket, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from fraud_assets.dataset import ingested_partitions
    from fraud_assets.storage import Storage

    landing = tmp_path / "incoming"
    write_sample(landing, seed=11, n_files=1, messages_per_file=500)
    env = {
        **os.environ,
        "FRAUD_DATA_DIR": "s3://fraud/killed",
        "FRAUD_LANDING_DIR": str(landing),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "FRAUD_LANDING_SETTLE_SECONDS": "0",
        "TQDM_DISABLE": "1",
    }
    storage = Storage("s3://fraud/killed")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraud_assets.cli", "ingest"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not s3_bucket.glob("fraud/killed/embedding_cache/*/*.parquet"):  # the first embedding chunk is committed
        assert proc.poll() is None and time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.05)
        s3_bucket.invalidate_cache()
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    s3_bucket.invalidate_cache()
    objects = [k for k in s3_bucket.find("fraud/killed") if k.endswith(".parquet")]
    assert objects
    for key in objects:  # every object that exists is whole
        pl.read_parquet(s3_bucket.cat(key))
    (key,) = [p.name.removesuffix(".manifest.json") for p in storage.glob(storage.root / "archive", "*.manifest.json")]
    assert key not in ingested_partitions(storage, [key])

    rerun = subprocess.run(
        [sys.executable, "-m", "fraud_assets.cli", "ingest", "--json"], env=env, capture_output=True, timeout=900
    )
    (entry,) = json.loads(rerun.stdout.decode().strip().splitlines()[-1])["files"]
    assert entry["status"] == "ingested", rerun.stderr.decode()[-3000:]
    assert entry["rows_read"] == 500 == entry["accepted"] + entry["quarantined"]
