"""Headless runs against a Dagster instance: what `fraud-assets ingest/retrain/run` execute.

The jobs, checks, resources and file registration of the one code location
(``fraud_assets.definitions``), executed in-process, so runs, partitions and
checks appear in the instance (and in the UI pointed at the same DAGSTER_HOME).
"""

import os
import socket
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from fraud_assets.definitions import defs as load_definitions
from fraud_assets.defs.jobs import RUN_CONFIG, ingest_job, retrain_job
from fraud_assets.defs.partitions import message_files
from fraud_assets.landing import register_files
from fraud_assets.settings import Settings
from fraud_assets.storage import as_path
from fraud_assets.training_data import ingested_partitions

DAGSTER_YAML = """\
# Written by fraud-assets on first use. Embedding and training share the "gpu"
# pool; one step at a time holds it, so two runs never load two models at once.
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 4
# The daemon marks runs whose worker died as failed and frees their pool slots.
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 60
telemetry:
  enabled: false
"""


def dagster_home(settings: Settings | None = None) -> Path:
    """$DAGSTER_HOME, defaulting to <storage root>/dagster_home (created with a dagster.yaml)."""
    settings = settings or Settings.from_env()
    home = Path(os.environ.get("DAGSTER_HOME") or settings.data_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance() -> dg.DagsterInstance:
    dagster_home()
    return dg.DagsterInstance.get()


def _headless_tags(**extra: str) -> dict[str, str]:
    return {"fraud/headless_pid": str(os.getpid()), "fraud/headless_host": socket.gethostname(), **extra}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark headless runs whose process died (SIGKILL, OOM) as failed and free their pool slots.

    An in-process run that is killed never reports its end, so it would hold
    its `gpu` pool slot forever and every later embedding or training step
    would wait for it. Only runs started by this CLI on this host are touched.
    """
    reaped = []
    host = socket.gethostname()
    filters = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
    for run in instance.get_runs(filters=filters):
        pid = run.tags.get("fraud/headless_pid")
        if pid is None or run.tags.get("fraud/headless_host") != host or _pid_alive(int(pid)):
            continue
        instance.report_run_failed(run, message=f"the fraud-assets process (pid {pid}) running it is gone")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped


def blocking_checks(job: dg.JobDefinition) -> set[str]:
    """Names of the blocking checks in a job: a failure of one stops that partition's downstream."""
    graph = job.asset_layer.asset_graph
    return {spec.name for assets_def in graph.assets_defs for spec in assets_def.check_specs if spec.blocking}


def file_summary(storage, key: str) -> dict[str, int]:
    """rows_read / accepted / quarantined for one partition, from what is on disk."""

    def height(path: Path) -> int:
        return pl.scan_parquet(path).select(pl.len()).collect().item() if path.exists() else 0

    raw = height(storage.asset_path("raw_messages", key))
    raw_q = height(storage.quarantine_path("raw_messages", key))
    accepted = height(storage.asset_path("validated_messages", key))
    val_q = height(storage.quarantine_path("validated_messages", key))
    file_q = storage.quarantine_path("raw_messages", key)
    whole = file_q.exists() and raw == 0 and pl.read_parquet(file_q).filter(pl.col("stage") == "file").height > 0
    return {
        "rows_read": 0 if whole else raw + raw_q,
        "accepted": accepted,
        "quarantined": 0 if whole else raw_q + val_q,
        "whole_file_quarantined": whole,
    }


def run_ingest(instance: dg.DagsterInstance, *, log=print) -> list[dict[str, Any]]:
    """Register new landed files and materialise the per-file assets of every incomplete one."""
    reap_dead_runs(instance)
    definitions = load_definitions()
    job = definitions.resolve_job_def(ingest_job.name)
    storage = definitions.resources["fraud"].storage
    existing = set(instance.get_dynamic_partitions(message_files.name))
    new, landed, _ = register_files(storage, existing)
    if new:
        instance.add_dynamic_partitions(message_files.name, [f.partition_key for f in new])
    complete = set(ingested_partitions(storage, {f.partition_key for f in landed}))
    results, statuses = [], {}
    for item in landed:
        key = item.partition_key
        if key in statuses:
            status = "duplicate"  # same content as another file in the landing folder
        elif key in complete:
            status = "unchanged"
        else:
            log(f"ingesting {item.path.name} as partition {key}")
            result = job.execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False,
                run_config=RUN_CONFIG, tags=_headless_tags(**{"fraud/source_file": item.path.name}),
            )
            status = _ingest_status(result, storage, key, blocking_checks(job))
        statuses.setdefault(key, status)
        counts = file_summary(storage, key)
        if counts.pop("whole_file_quarantined"):
            status = "quarantined"
        results.append({"file": item.path.name, "partition": key, **counts, "status": status})
    return results


def _ingest_status(result: dg.ExecuteInProcessResult, storage, key: str, blocking: set[str]) -> str:
    if storage.asset_path("message_embeddings", key).exists() and storage.asset_path("time_features", key).exists():
        return "ingested"
    if any(not e.passed for e in result.get_asset_check_evaluations() if e.check_name in blocking):
        return "blocked"  # unreadable file, or too many rejected rows: nothing downstream was built
    return "failed"


def run_retrain(instance: dg.DagsterInstance, run_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Materialise training_dataset -> production_model; returns a summary for the CLI.

    ``run_config`` is Dagster run config as in the Launchpad (for example
    ``{"ops": {"fraud_classifier": {"config": {"max_epochs": 10}}}}``). A refused
    promotion is a successful run with ``promoted: False`` and the reason.
    """
    reap_dead_runs(instance)
    definitions = load_definitions()
    storage = definitions.resources["fraud"].storage
    result = definitions.resolve_job_def(retrain_job.name).execute_in_process(
        instance=instance, raise_on_error=False, run_config={**RUN_CONFIG, **(run_config or {})}, tags=_headless_tags(),
    )
    summary: dict[str, Any] = {"success": result.success, "run_id": result.run_id}
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        summary["error"] = failures[-1] if failures else "retrain failed"
        return summary
    report = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("evaluation_report"))
    report_dir = as_path(report.materialization.metadata["dagster/uri"].value)  # this run's report, not the latest
    metrics = storage.read_json(report_dir / "metrics.json")
    gate = next((e for e in result.get_asset_check_evaluations() if e.check_name == "not_worse_than_champion"), None)
    summary.update(
        model=metrics["model"],
        baselines=metrics["baselines"],
        counts=metrics["counts"],
        promoted=bool(gate and gate.passed),
        promotion_reason=gate.description if gate else None,
        report=str(report_dir / "report.md"),
        candidate=str(report.materialization.metadata["candidate"].value),
        production_model=str(storage.production_pointer),
    )
    return summary
