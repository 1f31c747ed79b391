"""Code location entry point for `dagster dev -f definitions.py` and `dagster dev -w workspace.yaml`."""

from fraud_assets.definitions import defs

__all__ = ["defs"]
