"""Headless runs against a Dagster instance: what `fraud-assets ingest/retrain/run` execute.

The jobs, checks, resources and file registration of the one code location
(``fraud_assets.definitions``), executed in-process, so runs, partitions and
checks appear in the instance (and in the UI pointed at the same DAGSTER_HOME).
"""

import difflib
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from fraud_assets.asset_names import EVALUATION_REPORT, RAW_MESSAGES, VALIDATED_MESSAGES
from fraud_assets.dataset import ingested_partitions
from fraud_assets.definitions import defs as load_definitions
from fraud_assets.defs.jobs import RUN_CONFIG, ingest_job, retrain_job
from fraud_assets.defs.partitions import message_files
from fraud_assets.features import per_file_outputs
from fraud_assets.landing import LandedFile, candidate_files, register_files, registered_name
from fraud_assets.settings import ConfigError, Settings
from fraud_assets.storage import Storage, as_path

DAGSTER_YAML = """\
# Written by fraud-assets on first use. Embedding and training share the "gpu"
# pool; one step at a time holds it, so two runs never load two models at once.
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 4
    # retrains queued through the UI, the schedule or the daemon run one at a time
    tag_concurrency_limits:
      - key: fraud/job
        value: retrain
        limit: 1
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
    # the instance is local (or Postgres, see the README); with an object-store root it defaults to ~/.fraud_assets
    local_root = settings.data_dir if isinstance(settings.data_dir, Path) else Path.home() / ".fraud_assets"
    home = Path(os.environ.get("DAGSTER_HOME") or local_root / "dagster_home").resolve()
    config, local = home / "dagster.yaml", Storage(home)
    if not local.exists(config):
        local.write_text(DAGSTER_YAML, config)
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
    """rows_read / accepted / quarantined for one partition, from what is in storage."""
    raw = storage.height(storage.asset_path(RAW_MESSAGES, key))
    raw_q = storage.height(storage.quarantine_path(RAW_MESSAGES, key))
    accepted = storage.height(storage.asset_path(VALIDATED_MESSAGES, key))
    val_q = storage.height(storage.quarantine_path(VALIDATED_MESSAGES, key))
    whole = raw == 0 and _file_reason(storage, key) is not None
    return {
        "rows_read": 0 if whole else raw + raw_q,
        "accepted": accepted,
        "quarantined": 0 if whole else raw_q + val_q,
        "whole_file_quarantined": whole,
    }


def wait_until_settled(landing_dir: Path, settle_seconds: float, *, max_wait: float = 60.0, log=print) -> None:
    """Wait (up to ``max_wait``) until no file in the landing folder changed in the last ``settle_seconds``.

    Like the sensor, `fraud-assets ingest` must not register a file that a
    non-atomic copy is still writing; files still changing after ``max_wait``
    are left for the next run.
    """
    deadline = time.monotonic() + max_wait
    while settle_seconds > 0 and time.monotonic() < deadline:
        newest = max((p.stat().st_mtime for p in candidate_files(landing_dir)), default=0.0)
        remaining = newest + settle_seconds - time.time()
        if remaining <= 0:
            return
        log(f"waiting {remaining:.1f} s for files in {landing_dir} to settle")
        time.sleep(min(remaining + 0.05, max(deadline - time.monotonic(), 0.0)))


def run_ingest(instance: dg.DagsterInstance, *, log=print) -> list[dict[str, Any]]:
    """Register new landed files and materialise the per-file assets of every incomplete one.

    Every file in the landing folder gets one entry: ingested, unchanged,
    duplicate, blocked, quarantined or failed (with ``reason``), or skipped /
    retry for files that were not registered (links, folders, files that
    vanished or could not be opened, files still being written).
    """
    reap_dead_runs(instance)
    definitions = load_definitions()
    job = definitions.resolve_job_def(ingest_job.name)
    fraud = definitions.resources["fraud"]
    storage = fraud.storage
    wait_until_settled(storage.landing_dir, fraud.landing_settle_seconds, log=log)
    existing = set(instance.get_dynamic_partitions(message_files.name))
    registration = register_files(
        storage, existing, settle_seconds=fraud.landing_settle_seconds, max_new_files=1_000_000, time_budget=float("inf")
    )
    if registration.new:
        instance.add_dynamic_partitions(message_files.name, [f.partition_key for f in registration.new])
    complete = set(ingested_partitions(storage, {f.partition_key for f in registration.landed}))
    results: list = []
    owners = _partition_owners(storage, registration.landed)
    for item in registration.landed:
        key, reason = item.partition_key, None
        if owners.get(key) is not item:
            status, reason = "duplicate", f"same content as partition {key}"
        elif key in complete:
            status = "unchanged"
        else:
            log(f"ingesting {item.name} as partition {key}")
            result = job.execute_in_process(
                partition_key=key,
                instance=instance,
                raise_on_error=False,
                run_config=RUN_CONFIG,
                tags=_headless_tags(**{"fraud/source_file": item.name[:200]}),
            )
            status, reason = _ingest_status(result, storage, key, blocking_checks(job))
        counts = file_summary(storage, key)
        if counts.pop("whole_file_quarantined"):
            status, reason = "quarantined", _file_reason(storage, key)
        results.append({"file": item.name, "partition": key, **counts, "status": status, "reason": reason})
    for issue in registration.issues:
        results.append(
            {
                "file": issue.name,
                "partition": None,
                "rows_read": 0,
                "accepted": 0,
                "quarantined": 0,
                "status": issue.status,
                "reason": issue.reason,
            }
        )
    return results


def _partition_owners(storage, landed: list[LandedFile]) -> dict[str, LandedFile]:
    """The landed file that is each partition's own, the others being duplicates of it.

    Several names can hold one partition's bytes (``day.csv`` and ``day (1).csv``), and a copy can
    sort before the original, so the first one listed is not necessarily the partition's file: the
    name in the archive manifest is. Without it among them, the first not registered as a duplicate.
    """
    by_key: dict[str, list[LandedFile]] = {}
    for item in landed:
        by_key.setdefault(item.partition_key, []).append(item)
    owners = {}
    for key, items in by_key.items():
        candidates = [item for item in items if item.duplicate_of is None]
        if len(items) > 1:
            name = registered_name(storage, key)
            candidates = [item for item in items if os.fsencode(item.path.name) == name] + candidates
        if candidates:
            owners[key] = candidates[0]
    return owners


def _file_reason(storage, key: str) -> str | None:
    path = storage.quarantine_path(RAW_MESSAGES, key)
    frame = storage.read_parquet(path).filter(pl.col("stage") == "file") if storage.exists(path) else pl.DataFrame()
    return frame["reason"][0] if frame.height else None


def _ingest_status(result: dg.ExecuteInProcessResult, storage, key: str, blocking: set[str]) -> tuple[str, str | None]:
    if all(storage.exists(storage.asset_path(asset, key)) for asset in per_file_outputs()):
        return "ingested", None
    failed = [e for e in result.get_asset_check_evaluations() if e.check_name in blocking and not e.passed]
    if failed:  # unreadable file, or too many rejected rows: nothing downstream was built
        check = failed[0]
        detail = check.description or (check.metadata.get("reason").value if check.metadata.get("reason") else "")
        return "blocked", f"{check.check_name} failed: {detail}"
    return "failed", failure_reason(result)


def failure_reason(result: dg.ExecuteInProcessResult) -> str:
    """What made a failed run fail: the error the first failed step raised, not Dagster's "Steps failed: [...]"."""
    errors = [e.message for e in result.all_events if e.is_failure and e.message]
    step = next((e for e in result.all_events if e.is_step_failure), None)
    cause = step.step_failure_data.error.cause if step and step.step_failure_data.error else None
    return (
        cause.message.strip()
        if cause
        else step.step_failure_data.error.message.strip()
        if step
        else errors[-1]
        if errors
        else "run failed"
    )


def retrain_run_config(run_config: dict[str, Any] | None = None, job: dg.JobDefinition | None = None) -> dict[str, Any]:
    """The retrain's full run config, checked against the job (resolved from the definitions unless
    given), so a mistake stops it before any work.

    Raises ConfigError with one line per mistake (Dagster's own message lists
    the whole config schema, hundreds of characters, on each).
    """
    full = {**RUN_CONFIG, **(run_config or {})}
    try:
        dg.validate_run_config(job or load_definitions().resolve_job_def(retrain_job.name), full)
    except dg.DagsterInvalidConfigError as exc:
        raise ConfigError("run config: " + "; ".join(_config_mistake(e.message) for e in exc.errors)) from None
    return full


def _config_mistake(message: str) -> str:
    head, _, expected = message.partition(" Expected: ")
    entry = re.search(r'unexpected config entry "([^"]+)"', head)
    names = re.findall(r"(\w+)\??:", expected)
    close = difflib.get_close_matches(entry.group(1), names, n=1) if entry else []
    return head.rstrip(".") + (f" (did you mean {close[0]!r}?)" if close else "")


def run_retrain(instance: dg.DagsterInstance, run_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Materialise training_dataset -> production_model; returns a summary for the CLI.

    ``run_config`` is Dagster run config as in the Launchpad (for example
    ``{"ops": {"fraud_classifier": {"config": {"max_epochs": 10}}}}``). A refused
    promotion is a successful run with ``promoted: False`` and the reason.
    """
    reap_dead_runs(instance)
    definitions = load_definitions()
    storage = definitions.resources["fraud"].storage
    job = definitions.resolve_job_def(retrain_job.name)
    result = job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config=retrain_run_config(run_config, job),
        tags=_headless_tags(),
    )
    summary: dict[str, Any] = {"success": result.success, "run_id": result.run_id}
    if not result.success:
        summary["error"] = failure_reason(result)
        return summary
    report = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(EVALUATION_REPORT))
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
