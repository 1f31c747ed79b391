"""Jobs: per-file ingest and the full retrain."""

import dagster as dg


# Step-level DEBUG events stay in the event log (the UI); the console gets INFO and up.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

INGEST_ASSETS = ["raw_messages", "validated_messages", "message_embeddings", "time_features"]
RETRAIN_ASSETS = ["training_dataset", "fraud_classifier", "evaluation_report", "production_model"]

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(*INGEST_ASSETS),
    description="Parse, validate, embed and featurise one landed file (one partition).",
    config=RUN_CONFIG,
)
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets(*RETRAIN_ASSETS),
    description="Join every ingested file, train, evaluate and promote if not worse than production.",
    config=RUN_CONFIG,
)
