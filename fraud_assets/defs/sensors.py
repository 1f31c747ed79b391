"""The landing-folder sensor: one partition and one ingest run per new file."""


import json

import dagster as dg

from fraud_assets.defs.jobs import ingest_job
from fraud_assets.defs.partitions import message_files
from fraud_assets.defs.resources import FraudSettings
from fraud_assets.landing import register_files


@dg.sensor(job=ingest_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, fraud: FraudSettings) -> dg.SensorResult:
    """Register new files in the landing folder and request one ingest run per file.

    The partition key is content-addressed, so a re-dropped identical file
    maps to an existing partition and requests nothing; ``run_key`` makes a
    repeated tick idempotent too. The cursor remembers (size, mtime, key) per
    path so unchanged files are not hashed on every tick.
    """
    known = json.loads(context.cursor) if context.cursor else {}
    existing = set(context.instance.get_dynamic_partitions(message_files.name))
    new, landed, cursor = register_files(
        fraud.storage, existing, settle_seconds=fraud.landing_settle_seconds, known=known
    )
    if not new:
        return dg.SensorResult(
            skip_reason=f"no new files in {fraud.landing_dir} ({len(landed)} already registered)",
            cursor=json.dumps(cursor),
        )
    keys = [item.partition_key for item in new]
    context.log.info(f"registering {len(keys)} new file(s): " + ", ".join(f"{i.path.name} -> {i.partition_key}" for i in new))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=key, tags={"fraud/source_file": item.path.name}) for key, item in zip(keys, new)],
        dynamic_partitions_requests=[message_files.build_add_request(keys)],
        cursor=json.dumps(cursor),
    )
