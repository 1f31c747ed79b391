"""Jobs: per-file ingest and the full retrain, selected by asset group."""

import dagster as dg

# Step-level DEBUG events stay in the event log (the UI); the console gets INFO and up.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

INGEST_SELECTION = dg.AssetSelection.groups("ingest", "features")
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
