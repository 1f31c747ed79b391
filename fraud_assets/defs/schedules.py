"""The nightly retrain, skipped when nothing new arrived since the last training."""

import dagster as dg

from fraud_assets.asset_names import FRAUD_CLASSIFIER
from fraud_assets.dataset import ingested_partitions, partitions_fingerprint
from fraud_assets.defs import jobs
from fraud_assets.defs.resources import FraudSettings
from fraud_assets.settings import Settings

_settings = Settings.from_env()


@dg.schedule(
    cron_schedule=_settings.retrain_cron,
    execution_timezone=_settings.timezone,
    job=jobs.retrain_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def nightly_retrain(context: dg.ScheduleEvaluationContext, fraud: FraudSettings):
    """Retrain on all data (cron FRAUD_RETRAIN_CRON, default 02:00 in FRAUD_TIMEZONE)."""
    keys = ingested_partitions(fraud.storage, context.instance.get_dynamic_partitions("message_files"))
    if not keys:
        return dg.SkipReason("no ingested partitions yet: drop files into the landing folder first")
    last = context.instance.get_latest_materialization_event(dg.AssetKey(FRAUD_CLASSIFIER))
    if last is not None:
        previous = last.asset_materialization.metadata.get("partitions_fingerprint")
        run = context.instance.get_run_by_id(last.run_id)
        if previous is not None and previous.value == partitions_fingerprint(keys) and run is not None:
            # A retrain that failed after training (evaluation, promotion: killed, out of memory, the
            # object store down) is retried: skipping on the training alone would wait for another file.
            if run.status == dg.DagsterRunStatus.SUCCESS:
                return dg.SkipReason(f"no new partition since the last training ({len(keys)} partitions unchanged)")
            if not run.is_finished:
                return dg.SkipReason(f"the retrain of these {len(keys)} partitions is still running (run {run.run_id})")
    return dg.RunRequest(tags={"fraud/partitions": str(len(keys)), "fraud/partitions_fingerprint": partitions_fingerprint(keys)})
