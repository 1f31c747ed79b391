"""Jobs: per-file ingest (its assets come from the feature registry) and the full retrain."""

import dagster as dg

from fraud_assets.asset_names import RAW_MESSAGES
from fraud_assets.features import per_file_outputs

# Step-level DEBUG events stay in the event log (the UI); the console gets INFO and up.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

# Parsing, validation and every registered per-file feature group (fraud_assets.features), with
# their checks: a new feature group is ingested for each file without touching this module.
INGEST_SELECTION = dg.AssetSelection.assets(RAW_MESSAGES, *per_file_outputs())
RETRAIN_SELECTION = dg.AssetSelection.groups("training")

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=INGEST_SELECTION,
    description="Parse, validate, embed and featurise one landed file (one partition).",
    config=RUN_CONFIG,
)
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=RETRAIN_SELECTION,
    description="Join every ingested file, train, evaluate and promote if not worse than production.",
    config=RUN_CONFIG,
    tags={"fraud/job": "retrain"},  # limited to one queued run at a time in dagster.yaml
)
