"""Code location entry point for `dagster dev` and `dagster dev -w workspace.yaml`."""

from fraud_assets.defs.definitions import defs

__all__ = ["defs"]
