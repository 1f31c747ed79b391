"""One dynamic partition per landed file, keyed by content (see fraud_assets.landing)."""

import warnings

import dagster as dg

message_files = dg.DynamicPartitionsDefinition(name="message_files")


def file_check(name: str, asset: str, *, blocking: bool = False) -> dg.AssetCheckSpec:
    """A per-file asset check: partitioned like its asset, so every file keeps its own result
    in the UI and a failure blocks only that file's downstream assets."""
    with warnings.catch_warnings():
        # Partitioned checks are a preview feature in Dagster 1.13; the warning would print on
        # every code-location load without telling the user anything actionable.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, partitions_def=message_files)
