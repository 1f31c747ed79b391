"""The landing-folder sensor: one partition and one ingest run per new file."""


import json

import dagster as dg

from fraud_assets.defs import jobs
from fraud_assets.defs.partitions import message_files
from fraud_assets.defs.resources import FraudSettings
from fraud_assets.landing import register_files
from fraud_assets.training_data import ingested_partitions


@dg.sensor(job=jobs.ingest_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, fraud: FraudSettings) -> dg.SensorResult:
    """Register new files in the landing folder and request one ingest run per file.

    The partition key is content-addressed, so a re-dropped identical file
    maps to an existing partition and requests nothing new; ``run_key`` (the
    partition key) makes Dagster launch at most one run per partition, however
    often a tick asks. The cursor remembers (size, mtime, key) per
    path so unchanged files are not hashed on every tick.
    """
    known = json.loads(context.cursor) if context.cursor else {}
    existing = set(context.instance.get_dynamic_partitions(message_files.name))
    storage = fraud.storage
    new, landed, cursor = register_files(storage, existing, settle_seconds=fraud.landing_settle_seconds, known=known)
    new_keys = [item.partition_key for item in new]
    # Registered partitions that never finished ingesting (a run request lost with a crashed
    # daemon, a partition added by hand) are requested again; run_key keeps it to one run each.
    pending = sorted(existing.difference(ingested_partitions(storage, existing)))
    if not new_keys and not pending:
        return dg.SensorResult(
            skip_reason=f"no new files in {fraud.landing_dir} ({len(landed)} already registered)",
            cursor=json.dumps(cursor),
        )
    if new:
        context.log.info(f"registering {len(new)} new file(s): " + ", ".join(f"{i.path.name} -> {i.partition_key}" for i in new))
    names = {item.partition_key: item.path.name for item in landed}
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=key, run_key=key, tags={"fraud/source_file": names.get(key, key)})
            for key in new_keys + pending
        ],
        dynamic_partitions_requests=[message_files.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(cursor),
    )
