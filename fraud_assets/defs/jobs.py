"""Jobs: per-file ingest and the full retrain."""

import dagster as dg


INGEST_ASSETS = ["raw_messages", "validated_messages", "message_embeddings", "time_features"]
RETRAIN_ASSETS = ["training_dataset", "fraud_classifier", "evaluation_report", "production_model"]

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(*INGEST_ASSETS),
    description="Parse, validate, embed and featurise one landed file (one partition).",
)
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets(*RETRAIN_ASSETS),
    description="Join every ingested file, train, evaluate and promote if not worse than production.",
)
