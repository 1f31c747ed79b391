"""Per-file feature groups: one declaration each, read by training and by serving.

A feature group is computed once per landed file by its own partitioned asset
(``defs/assets/features.py``) and, at scoring time, for the messages being
scored. The declaration below is the one place that says which asset holds
it, how its rows join to a message and how serving computes it, so the
training join (:mod:`fraud_assets.dataset`), the model's inputs
(:mod:`fraud_assets.model`) and scoring (:mod:`fraud_assets.scoring`) cannot
disagree. Adding a group is one module with its asset plus one
:func:`register` call.

Groups with ``model_input="dense"`` are read by the model as plain numeric
columns (standardised with the rest of the dense input); the embedding and
the time features have their own switches in ``TrainConfig``.

Plain Python; heavy imports happen inside the compute functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from fraud_assets.asset_names import MESSAGE_EMBEDDINGS, TIME_FEATURES, VALIDATED_MESSAGES

#: Every per-file output joins to its message on these columns.
JOIN_KEYS: tuple[str, ...] = ("message_id", "text_hash")


class FeatureUnavailable(Exception):
    """Serving cannot compute a group the way training did (e.g. another embedding model)."""


@dataclass(frozen=True)
class ServingContext:
    """What serving needs to compute a group as training did: the settings and the model card."""

    settings: Any  # fraud_assets.settings.Settings
    card: dict

    @property
    def timezone(self) -> str:
        """The zone the model's time features were computed in (cards before it was recorded: the setting)."""
        return self.card.get("timezone") or self.settings.timezone


@dataclass(frozen=True)
class FeatureGroup:
    """One per-file feature group.

    ``compute`` takes normalised messages (message_id, text_hash, text, sent_at)
    and returns the join keys plus the group's columns, one row per message in
    the same order: the same contract as the group's asset.
    """

    asset: str  # the partitioned asset that writes it (assets/<asset>/<partition>.parquet)
    columns: tuple[str, ...]  # the value columns it adds to a message row
    compute: Callable[[pl.DataFrame, ServingContext], pl.DataFrame]
    model_input: str = "dense"  # "embedding" | "time" | "dense"


def _embeddings_for_scoring(messages: pl.DataFrame, ctx: ServingContext) -> pl.DataFrame:
    """Vectors from the embedding model named in the card; refused when its fingerprint differs."""
    from fraud_assets.embeddings import Embedder, EmbeddingCache, embed_texts
    from fraud_assets.storage import Storage

    card, settings = ctx.card, ctx.settings
    embedder = Embedder(card["embedding_model"], device=settings.device, **card.get("embedding_settings", {}))
    if embedder.fingerprint != card["embedding_fingerprint"]:
        raise FeatureUnavailable(
            f"embedding model {card['embedding_model']!r} here has fingerprint {embedder.fingerprint}, but the model was "
            f"trained with {card['embedding_fingerprint']}: install the same embedding model or retrain"
        )
    cache = EmbeddingCache(Storage(settings.data_dir).embedding_cache_dir, embedder.fingerprint)
    vectors, _ = embed_texts(messages.select("text_hash", "text"), embedder, cache)
    return messages.select(*JOIN_KEYS).with_columns(vectors["embedding"])


def _time_features_for_scoring(messages: pl.DataFrame, ctx: ServingContext) -> pl.DataFrame:
    from fraud_assets.time_features import time_features

    return time_features(messages.select(*JOIN_KEYS, "sent_at"), timezone=ctx.timezone)


def _time_columns() -> tuple[str, ...]:
    from fraud_assets.time_features import TIME_FEATURE_COLUMNS

    return tuple(TIME_FEATURE_COLUMNS)


_GROUPS: list[FeatureGroup] = [
    FeatureGroup(MESSAGE_EMBEDDINGS, ("embedding",), _embeddings_for_scoring, model_input="embedding"),
    FeatureGroup(TIME_FEATURES, _time_columns(), _time_features_for_scoring, model_input="time"),
]


def feature_groups() -> tuple[FeatureGroup, ...]:
    """The registered groups, in registration order (the order of the training join's columns)."""
    return tuple(_GROUPS)


def per_file_outputs() -> tuple[str, ...]:
    """Every per-file asset a partition needs before it can be trained on."""
    return (VALIDATED_MESSAGES, *(g.asset for g in _GROUPS))


def dense_columns() -> tuple[str, ...]:
    """Columns of the ``dense`` groups, which the model reads as they are."""
    return tuple(c for g in _GROUPS if g.model_input == "dense" for c in g.columns)


def register(group: FeatureGroup) -> None:
    """Add a feature group (its asset must exist in ``defs/assets``)."""
    if any(g.asset == group.asset for g in _GROUPS):
        raise ValueError(f"a feature group for {group.asset!r} is already registered")
    _GROUPS.append(group)


@contextlib.contextmanager
def registered(group: FeatureGroup) -> Iterator[FeatureGroup]:
    """A group registered for the duration of a ``with`` block (tests, experiments)."""
    register(group)
    try:
        yield group
    finally:
        _GROUPS.remove(group)


def serving_features(messages: pl.DataFrame, ctx: ServingContext) -> pl.DataFrame:
    """``messages`` with every registered group's columns, computed as training's assets computed them."""
    parts = [messages]
    for group in _GROUPS:
        out = group.compute(messages, ctx)
        if out.height != messages.height or not out.select(JOIN_KEYS).equals(messages.select(JOIN_KEYS)):
            raise ValueError(f"feature group {group.asset} returned other rows than it was given")
        parts.append(out.drop(JOIN_KEYS))
    return pl.concat(parts, how="horizontal")
