"""The landing-folder sensor: one partition and one ingest run per new file."""

import json

import dagster as dg

from fraud_assets.dataset import ingested_partitions
from fraud_assets.defs import jobs
from fraud_assets.defs.partitions import message_files
from fraud_assets.defs.resources import FraudSettings
from fraud_assets.landing import Registration, register_files

MAX_RETRIED_PER_TICK = 100


def log_registration(log, registration: Registration) -> None:
    """One line per file that was not registered, and per duplicate, with the reason."""
    for issue in registration.issues:
        (log.error if issue.status == "failed" else log.warning)(f"{issue.name}: {issue.status}: {issue.reason}")
    for item in registration.landed:
        if item.duplicate_of:
            log.info(f"{item.name}: duplicate of partition {item.duplicate_of} (same content), not registered again")
    if registration.deferred:
        log.info(f"{registration.deferred} new file(s) left for the next pass (work per pass is bounded)")


@dg.sensor(job=jobs.ingest_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, fraud: FraudSettings) -> dg.SensorResult:
    """Register new files in the landing folder and request one ingest run per file.

    The partition key is content-addressed, so a re-dropped identical file
    maps to an existing partition and requests nothing new; ``run_key`` (the
    partition key) makes Dagster launch at most one run per partition, however
    often a tick asks. Each file is handled on its own (a bad file is logged
    and quarantined, the others are registered), and the work per tick is
    bounded (``landing_batch_size`` new files): a backlog is taken up over the
    next ticks. Per-file state lives in an index under the storage root, so the
    cursor stays a few counters whatever the size of the folder.
    """
    existing = set(context.instance.get_dynamic_partitions(message_files.name))
    storage = fraud.storage
    registration = register_files(
        storage, existing, settle_seconds=fraud.landing_settle_seconds, max_new_files=fraud.landing_batch_size
    )
    log_registration(context.log, registration)
    new_keys = [item.partition_key for item in registration.new]
    # Registered partitions that never finished ingesting (a run request lost with a crashed
    # daemon, a partition added by hand) are requested again; run_key keeps it to one run each.
    pending = sorted(existing.difference(ingested_partitions(storage, existing)))[:MAX_RETRIED_PER_TICK]
    cursor = json.dumps(
        {
            "files": len(registration.landed),
            "new": len(new_keys),
            "deferred": registration.deferred,
            "issues": len(registration.issues),
        }
    )
    if not new_keys and not pending:
        return dg.SensorResult(
            skip_reason=f"no new files in {fraud.landing_dir} ({len(registration.landed)} already registered, "
            f"{len(registration.issues)} skipped or failed, {registration.unsettled} still being written)",
            cursor=cursor,
        )
    if new_keys:
        context.log.info(
            f"registering {len(new_keys)} new file(s): " + ", ".join(f"{i.name} -> {i.partition_key}" for i in registration.new)
        )
    names = {item.partition_key: item.name for item in registration.landed if not item.duplicate_of}
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=key, run_key=key, tags={"fraud/source_file": names.get(key, key)[:200]})
            for key in new_keys + [k for k in pending if k not in new_keys]
        ],
        dynamic_partitions_requests=[message_files.build_add_request(new_keys)] if new_keys else [],
        cursor=cursor,
    )
