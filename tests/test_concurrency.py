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
from conftest import job_assets

from fraud_assets.dataset import ingested_partitions
from fraud_assets.defs.partitions import message_files
from fraud_assets.landing import register_files
from fraud_assets.runs import get_instance, run_ingest, run_retrain
from fraud_assets.sample import write_sample
from fraud_assets.storage import Storage

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
            [
                DAGSTER,
                "asset",
                "materialize",
                "-m",
                "fraud_assets.definitions",
                "--select",
                ",".join(job_assets("ingest_job")),
                "--partition",
                item.partition_key,
            ],
            env=env,
            stdout=(logs / f"{item.partition_key}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for item in new
    ]
    retrain = subprocess.Popen(
        [sys.executable, "-m", "fraud_assets.cli", "retrain", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=(logs / "retrain.log").open("wb"),
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
    card = json.loads((Path(summary["candidate"]) / "model_card.json").read_text())
    assert sorted(card["partitions"]) == sorted(keys)


def _run_materialization(instance, run_id: str, asset: str):
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    found = [
        r.event_log_entry.asset_materialization
        for r in records
        if r.event_log_entry.dagster_event.asset_key == dg.AssetKey(asset)
    ]
    return found[-1] if found else None


def test_two_retrains_at_once_never_use_each_others_candidate(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("FRAUD_DATA_DIR", str(data))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    write_sample(data / "incoming", n_files=2, messages_per_file=150)
    instance = get_instance()
    assert [f["status"] for f in run_ingest(instance, log=lambda m: None)] == ["ingested"] * 2

    env = {**os.environ, "TQDM_DISABLE": "1"}
    configs = {"a": {"seed": 1}, "b": {"seed": 2, "use_text_stats": False}}  # two different candidates
    procs = {}
    for name, config in configs.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"ops": {"fraud_classifier": {"config": config}}}))
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "fraud_assets.cli", "retrain", "--json", "--config", str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / f"{name}.log").open("wb"),
        )
    summaries = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        summaries[name] = json.loads(out.decode().strip().splitlines()[-1])

    for name, summary in summaries.items():
        run_id = summary["run_id"]
        candidate = Path(summary["candidate"])
        card = json.loads((candidate / "model_card.json").read_text())
        assert candidate.name.endswith(run_id[:8]) and card["run_name"] == candidate.name
        assert card["feature_config"]["train_config"]["seed"] == configs[name]["seed"]
        assert Path(card["training_dataset"]).stem == candidate.name  # trained on its own run's split
        evaluated = _run_materialization(instance, run_id, "evaluation_report")
        assert evaluated.metadata["candidate"].value == str(candidate)
        assert Path(summary["report"]).parent.name == candidate.name
        assert (
            json.loads(Path(summary["report"]).with_name("metrics.json").read_text())["model"]["threshold"] == card["threshold"]
        )
        promoted = _run_materialization(instance, run_id, "production_model")
        if promoted is not None:  # a run promotes only the candidate it trained and evaluated itself
            assert promoted.metadata["model"].value == f"candidates/{candidate.name}"
    assert summaries["a"]["candidate"] != summaries["b"]["candidate"]
    pointer = json.loads((data / "models" / "production.json").read_text())
    assert pointer["model"] in {f"candidates/{Path(s['candidate']).name}" for s in summaries.values()}
