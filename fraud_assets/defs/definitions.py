"""The one code location: assets, checks, jobs, sensor, schedule and resources."""

import dagster as dg

from fraud_assets.defs.assets import features, ingest, training
from fraud_assets.defs.jobs import ingest_job, retrain_job
from fraud_assets.defs.resources import EmbedderResource, FraudSettings
from fraud_assets.defs.schedules import nightly_retrain
from fraud_assets.defs.sensors import landing_sensor


def build_definitions(**resource_overrides: object) -> dg.Definitions:
    """Definitions with resources from the environment; tests pass overrides."""
    resources = {"fraud": FraudSettings.from_settings(), "embedder": EmbedderResource.from_settings()}
    resources.update(resource_overrides)
    return dg.Definitions(
        assets=dg.load_assets_from_modules([ingest, features, training]),
        asset_checks=dg.load_asset_checks_from_modules([ingest, features, training]),
        jobs=[ingest_job, retrain_job],
        sensors=[landing_sensor],
        schedules=[nightly_retrain],
        resources=resources,
    )


defs = build_definitions()
