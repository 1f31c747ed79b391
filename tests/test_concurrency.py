"""Several ingest runs at once (multiprocess executor, as under `dagster dev`) while a retrain runs."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl

from fraud_assets.runs import get_instance, run_ingest, run_retrain
from conftest import job_assets
from fraud_assets.defs.partitions import message_files
from fraud_assets.landing import register_files
from fraud_assets.sample import write_sample
from fraud_assets.storage import Storage
from fraud_assets.training_data import ingested_partitions

DAGSTER = str(Path(sys.executable).with_name("dagster"))


class ParquetReader(threading.Thread):
    """Reads every Parquet file under the root in a loop; any read failure is a half-written file."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.stop, self.errors, self.reads = root, threading.Event(), [], 0

    def run(self) -> None:
        while not self.stop.is_set():
            for path in self.root.rglob("*.parquet"):
                try:
                    pl.read_parquet(path)
                    self.reads += 1
                except FileNotFoundError:
                    pass  # replaced between listing and reading: fine, never partial
                except Exception as exc:  # noqa: BLE001 - any other error is what we are looking for
                    self.errors.append(f"{path}: {exc}")


def test_parallel_ingest_runs_during_a_retrain(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("FRAUD_DATA_DIR", str(data))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    env = {**os.environ, "TQDM_DISABLE": "1"}
    incoming = data / "incoming"
    write_sample(incoming, n_files=4, messages_per_file=150)
    first, *rest = sorted(incoming.iterdir())

    # one file ingested and trained on, so the retrain has data while the others arrive
    staging = tmp_path / "later"
    staging.mkdir()
    for path in rest:
        path.rename(staging / path.name)
    instance = get_instance()
    run_ingest(instance, log=lambda m: None)
    for path in staging.iterdir():
        path.rename(incoming / path.name)
    storage = Storage(data)
    new = register_files(storage, set(instance.get_dynamic_partitions(message_files.name))).new
    instance.add_dynamic_partitions(message_files.name, [f.partition_key for f in new])
    assert len(new) == 3

    reader = ParquetReader(data)
    reader.start()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [
        subprocess.Popen(
            [DAGSTER, "asset", "materialize", "-m", "fraud_assets.definitions",
             "--select", ",".join(job_assets("ingest_job")), "--partition", item.partition_key],
            env=env, stdout=(logs / f"{item.partition_key}.log").open("wb"), stderr=subprocess.STDOUT,
        )
        for item in new
    ]
    retrain = subprocess.Popen(
        [sys.executable, "-m", "fraud_assets.cli", "retrain", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=(logs / "retrain.log").open("wb"),
    )
    deadline = time.monotonic() + 600
    for proc in procs:
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    out, _ = retrain.communicate(timeout=max(1, deadline - time.monotonic()))
    reader.stop.set()
    reader.join()

    failures = {p.name: p.read_text()[-2000:] for p in logs.iterdir() if p.suffix == ".log"}
    assert all(p.returncode == 0 for p in procs), failures
    assert retrain.returncode == 0, failures["retrain.log"]
    assert json.loads(out.decode().strip().splitlines()[-1])["success"]
    assert not reader.errors, reader.errors[:5]
    assert reader.reads > 0

    # no partition lost: all four are complete, with every row accounted for
    keys = instance.get_dynamic_partitions(message_files.name)
    assert len(keys) == 4 and ingested_partitions(storage, keys) == sorted(keys)
    for key in keys:
        raw = pl.read_parquet(storage.asset_path("raw_messages", key)).height
        quarantined = sum(pl.read_parquet(storage.quarantine_path(s, key)).height for s in ("raw_messages", "validated_messages"))
        accepted = pl.read_parquet(storage.asset_path("validated_messages", key)).height
        assert raw + pl.read_parquet(storage.quarantine_path("raw_messages", key)).height == accepted + quarantined == 150
        assert pl.read_parquet(storage.asset_path("message_embeddings", key)).height == accepted
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    assert len(runs) >= 5

    # the next retrain sees every partition
    summary = run_retrain(instance)
    assert summary["success"]
    lineage = json.loads(storage.asset_path("training_dataset").with_suffix(".json").read_text())
    assert sorted(lineage["partitions"]) == sorted(keys)
