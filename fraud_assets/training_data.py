"""Which partitions are ready for training, and reading them back from storage."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import polars as pl

from fraud_assets.storage import Storage

PER_FILE_OUTPUTS = ("validated_messages", "message_embeddings", "time_features")


def ingested_partitions(storage: Storage, registered: Iterable[str]) -> list[str]:
    """Registered partitions whose per-file outputs all exist (fully ingested), sorted."""
    return sorted(k for k in registered if all(storage.exists(storage.asset_path(a, k)) for a in PER_FILE_OUTPUTS))


def partitions_fingerprint(keys: Iterable[str]) -> str:
    """A short digest of a set of partition keys: equal sets give equal digests."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def load_partitions(storage: Storage, keys: list[str]) -> tuple[list[pl.DataFrame], list[pl.DataFrame], list[pl.DataFrame]]:
    """Per-partition (validated, embeddings, time features) frames, in key order."""
    return tuple(  # type: ignore[return-value]
        [storage.read_parquet(storage.asset_path(asset, key)) for key in keys] for asset in PER_FILE_OUTPUTS
    )
