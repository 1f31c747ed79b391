"""The training dataset: every partition joined, de-duplicated and split.

Plain polars and numpy, no Dagster. :func:`ingested_partitions` says which
partitions are ready (every per-file output written) and :func:`load_partitions`
reads them back from storage. :func:`build_training_dataset` turns the
per-partition ``validated_messages``, ``message_embeddings`` and
``time_features`` frames into one ``training_dataset`` frame (one row per
unique text, with a ``split`` column) plus a summary dict for metadata.

Two rules matter for honest evaluation:

- **One row per text.** The same message often arrives in several files
  (re-exports, forwarded chains). Keeping copies would let the model see a
  test message during training. A text that carries both labels is dropped
  altogether: nobody can say which label is right, and either would teach the
  model something false.
- **Train on the past, test on the future** whenever timestamps allow it,
  because that is how the model will be used; otherwise a seeded split
  stratified by label. Either way the assignment depends only on the data
  and the seed, never on the order in which partitions arrive.

Split strategy (``summary["split_strategy"]``):

- ``"time"``: every row has a timestamp. Rows are ordered by sent_at
  (ties by text_hash); the oldest go to train, the next to validation,
  the newest to test, so the model is tested on a future it never saw.
- ``"time+stratified"``: at least 50 % of rows
  (:data:`TIME_SPLIT_MIN_TIMESTAMP_SHARE`) have a timestamp. Those are
  split by time as above; the rows without one cannot be placed in time
  and are split stratified (below) with the same shares.
- ``"stratified"``: fewer than 50 % of rows have a timestamp. Seeded
  shuffle within each label, so every split keeps the class balance.
  After de-duplication each text is one row, so the split is grouped by
  text hash: copies of a text never straddle splits.
- ``"stratified (time split had no fraud in ...)"`` (or ``no normal in
  ...``): the time split left a split with one class only (say all fraud is
  old, or all normal history predates the first fraud file), which cannot
  train or would make threshold choice or test recall meaningless, so the
  whole dataset is split stratified instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Sequence

import numpy as np
import polars as pl

from fraud_assets.features import JOIN_KEYS, feature_groups, per_file_outputs
from fraud_assets.storage import Storage

SPLITS: tuple[str, str, str] = ("train", "validation", "test")

# Use the time split when at least this share of rows has a timestamp.
TIME_SPLIT_MIN_TIMESTAMP_SHARE = 0.5

_MESSAGE_COLUMNS = ["message_id", "text", "text_hash", "label", "sent_at", "fraud_type", "source_file"]
_JOIN_KEYS = list(JOIN_KEYS)
#: what de-duplication and the split look at
_KEY_COLUMNS = ["text_hash", "label", "sent_at", "source_file", "message_id"]
_SENT_AT_DTYPE = pl.Datetime("us", "UTC")


# --------------------------------------------------------------------------- #
# partitions ready for training
# --------------------------------------------------------------------------- #
def ingested_partitions(storage: Storage, registered: Iterable[str]) -> list[str]:
    """Registered partitions whose per-file outputs all exist (fully ingested), sorted."""
    outputs = per_file_outputs()  # validated_messages and every registered feature group (fraud_assets.features)
    return sorted(k for k in registered if all(storage.exists(storage.asset_path(a, k)) for a in outputs))


def partitions_fingerprint(keys: Iterable[str]) -> str:
    """A short digest of a set of partition keys: equal sets give equal digests."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def load_partitions(storage: Storage, keys: list[str]) -> tuple[list[pl.DataFrame], ...]:
    """Per-partition frames, in key order: validated messages, then each registered feature group's."""
    return tuple([storage.read_parquet(storage.asset_path(asset, key)) for key in keys] for asset in per_file_outputs())


# --------------------------------------------------------------------------- #
# join
# --------------------------------------------------------------------------- #
def _join_partition(index: int, validated: pl.DataFrame, groups: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Join one partition's validated messages with its feature-group frames (registry order).

    The contract says the frames share row order, so the cheap path is a
    positional join, verified on (message_id, text_hash). When the order
    differs (an upstream asset sorted its output), fall back to a key join,
    which must match every row exactly once.
    """
    messages = validated.select(_MESSAGE_COLUMNS).with_columns(
        pl.col("sent_at").cast(_SENT_AT_DTYPE), pl.col("label").cast(pl.Int8)
    )
    parts = [messages]
    for group, other in zip(feature_groups(), groups):
        parts.append(_attach(index, group.asset, messages, other))
    return pl.concat(parts, how="horizontal")


def _attach(index: int, name: str, messages: pl.DataFrame, other: pl.DataFrame) -> pl.DataFrame:
    """``other``'s value columns in the row order of ``messages`` (positionally when aligned, else by key)."""
    keys = [k for k in _JOIN_KEYS if k in other.columns]
    value_cols = [c for c in other.columns if c not in _JOIN_KEYS]
    if other.height == messages.height and keys and other.select(keys).equals(messages.select(keys)):
        return other.select(value_cols)
    if other.height != messages.height or not keys:
        raise ValueError(
            f"partition {index}: {name} has {other.height} rows, validated_messages has "
            f"{messages.height}; they must describe the same rows"
        )
    joined = messages.select(keys).join(
        other.with_columns(pl.lit(True).alias("_matched")), on=keys, how="left", validate="1:1", maintain_order="left"
    )
    if joined.get_column("_matched").null_count():
        raise ValueError(f"partition {index}: {name} lacks rows for some messages (matched on {keys})")
    return joined.select(value_cols)


# --------------------------------------------------------------------------- #
# de-duplication
# --------------------------------------------------------------------------- #
def _deduplicate(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """One row per text_hash; texts seen with both labels are dropped.

    The kept copy is the earliest (sent_at, nulls last), ties broken by
    source_file then message_id: the first sighting is the most faithful
    timestamp for a time split, and the tie-break makes the choice independent
    of partition order.
    """
    label_counts = frame.group_by("text_hash").agg(pl.col("label").n_unique().alias("_labels"))
    conflicting = label_counts.filter(pl.col("_labels") > 1).get_column("text_hash")
    consistent = frame.filter(~pl.col("text_hash").is_in(conflicting.implode()))
    kept = consistent.sort(["text_hash", "sent_at", "source_file", "message_id"], nulls_last=True).unique(
        subset="text_hash", keep="first", maintain_order=True
    )
    stats = {
        "conflicting_label_texts_dropped": conflicting.len(),
        "conflicting_label_rows_dropped": frame.height - consistent.height,
        "duplicates_dropped": consistent.height - kept.height,
    }
    return kept, stats


# --------------------------------------------------------------------------- #
# split
# --------------------------------------------------------------------------- #
def _split_sizes(n: int, validation_share: float, test_share: float) -> tuple[int, int, int]:
    """(train, validation, test) sizes; each non-empty as soon as n >= 3.

    The minimum of one row keeps a rare class present in every split of a
    small dataset, so validation can choose a threshold and test can score it.
    """
    n_val = int(round(n * validation_share))
    n_test = int(round(n * test_share))
    if n >= 3:
        n_val = max(n_val, 1 if validation_share > 0 else 0)
        n_test = max(n_test, 1 if test_share > 0 else 0)
    while n_val + n_test > n - (1 if n >= 1 else 0) and (n_val or n_test):
        # Never leave train empty: trim the larger held-out split first.
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def _assign(n: int, validation_share: float, test_share: float) -> np.ndarray:
    """Split names for n ordered rows: first train, then validation, then test."""
    n_train, n_val, n_test = _split_sizes(n, validation_share, test_share)
    return np.array(["train"] * n_train + ["validation"] * n_val + ["test"] * n_test, dtype=object)


def _stratified(frame: pl.DataFrame, seed: int, validation_share: float, test_share: float) -> pl.Series:
    """Seeded split stratified by label, one rng stream per class.

    ``frame`` must be sorted by text_hash (it is, after de-duplication), so the
    permutation, and hence every row's split, depends only on the data and the
    seed. Each text_hash is a single row after de-duplication, so the split is
    automatically grouped by text: copies of a text can never straddle splits.
    """
    split = np.empty(frame.height, dtype=object)
    labels = frame.get_column("label").to_numpy()
    for label in (0, 1):
        idx = np.flatnonzero(labels == label)
        rng = np.random.default_rng([seed, label])
        split[idx[rng.permutation(idx.size)]] = _assign(idx.size, validation_share, test_share)
    return pl.Series("split", split.astype(str), dtype=pl.Utf8)


def _time(frame: pl.DataFrame, validation_share: float, test_share: float) -> pl.Series:
    """Chronological split of timestamped rows: oldest train, newest test.

    Rows are ordered by (sent_at, text_hash), so equal timestamps are broken
    by the content hash rather than by input order.
    """
    order = frame.with_row_index("_i").sort(["sent_at", "text_hash"]).get_column("_i").to_numpy()
    split = np.empty(frame.height, dtype=object)
    split[order] = _assign(frame.height, validation_share, test_share)
    return pl.Series("split", split.astype(str), dtype=pl.Utf8)


def _split_counts(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    counts: dict[str, dict[str, Any]] = {}
    for name in SPLITS:
        part = frame.filter(pl.col("split") == name)
        fraud = int(part.get_column("label").sum() or 0)
        counts[name] = {
            "rows": part.height,
            "fraud": fraud,
            "normal": part.height - fraud,
            "fraud_share": round(fraud / part.height, 4) if part.height else None,
        }
    return counts


def _split(frame: pl.DataFrame, seed: int, validation_share: float, test_share: float) -> tuple[pl.DataFrame, str]:
    """Add the ``split`` column; return the frame and the strategy used."""
    timed_mask = frame.get_column("sent_at").is_not_null()
    timed_share = timed_mask.mean() if frame.height else 0.0
    if not frame.height or timed_share < TIME_SPLIT_MIN_TIMESTAMP_SHARE:
        return frame.with_columns(_stratified(frame, seed, validation_share, test_share)), "stratified"

    timed = frame.filter(timed_mask)
    untimed = frame.filter(~timed_mask)
    parts = [timed.with_columns(_time(timed, validation_share, test_share))]
    if untimed.height:
        parts.append(untimed.with_columns(_stratified(untimed, seed, validation_share, test_share)))
    split_frame = pl.concat(parts).sort("text_hash")
    strategy = "time" if not untimed.height else "time+stratified"

    # A time split with one class in a split cannot train, choose a threshold or
    # measure recall (fraud often arrives in recent files only, normal history in
    # old ones); a dataset without both classes cannot do so either way.
    fraud = int(frame.get_column("label").sum() or 0)
    if 0 < fraud < frame.height:
        counts = _split_counts(split_frame)
        missing = [f"no {kind} in {name}" for name in SPLITS for kind in ("fraud", "normal") if counts[name][kind] == 0]
        if missing:
            stratified = frame.with_columns(_stratified(frame, seed, validation_share, test_share))
            return stratified, f"stratified (time split had {', '.join(missing)})"
    return split_frame, strategy


# --------------------------------------------------------------------------- #
# public entry point
# --------------------------------------------------------------------------- #
def build_training_dataset(
    validated: Sequence[pl.DataFrame],
    *group_frames: Sequence[pl.DataFrame],
    seed: int = 0,
    validation_share: float = 0.15,
    test_share: float = 0.15,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Join, de-duplicate and split all partitions into the training dataset.

    Args:
        validated: one validated_messages frame per partition.
        group_frames: for each registered feature group (:mod:`fraud_assets.features`,
            by default message_embeddings then time_features) one frame per
            partition, in the same partition order, each describing the same
            rows (see the data contract). Rows are matched by position,
            verified on (message_id, text_hash), else joined on those keys.
        seed: seeds the stratified shuffle; same input + seed, same split.
        validation_share, test_share: fractions of rows held out; train gets
            the rest. With three or more rows of a class, each split gets at
            least one row of it.

    Returns:
        ``(dataset, summary)``. ``dataset`` has one row per unique text_hash,
        sorted by text_hash, with the columns message_id, text, text_hash,
        label, sent_at, fraud_type, source_file, embedding, the time feature
        columns, the columns of any other registered group and ``split`` ("train" | "validation" | "test"). ``summary``
        holds rows_in, duplicates_dropped, conflicting_label_texts_dropped,
        conflicting_label_rows_dropped, rows_out, timestamp_share,
        split_strategy and ``splits``: {split: {rows, fraud, normal,
        fraud_share}}.

    De-duplication: one row per text_hash, the earliest copy (sent_at, nulls
    last; ties by source_file, then message_id). A text seen with both labels
    is dropped entirely and counted.

    Split strategy: see the module docstring.

    Rows are sorted by text_hash before any seeded shuffle, so the result does
    not depend on the order of the partitions.
    """
    _check_inputs(validated, group_frames, validation_share, test_share)
    joined = _join_all(validated, group_frames)
    # De-duplicate and split the rows' keys only, then gather the kept rows once: sorting the
    # whole frame (vectors included, 1.5 GB a million rows) would copy it twice more.
    keys = joined.select(_KEY_COLUMNS).with_row_index("_row")
    kept, dedup_stats = _deduplicate(keys)
    kept, strategy = _split(kept, seed, validation_share, test_share)
    kept = kept.sort("text_hash")
    dataset = joined[kept.get_column("_row").to_numpy()].with_columns(kept.get_column("split"))
    summary: dict[str, Any] = {
        "rows_in": keys.height,
        **dedup_stats,
        "rows_out": dataset.height,
        "timestamp_share": round(float(dataset.get_column("sent_at").is_not_null().mean() or 0.0), 4) if dataset.height else 0.0,
        "split_strategy": strategy,
        "seed": seed,
        "splits": _split_counts(dataset),
    }
    return dataset, summary


def _check_inputs(validated, group_frames, validation_share: float, test_share: float) -> None:
    names = [g.asset for g in feature_groups()]
    if len(group_frames) != len(names):
        raise ValueError(f"need one list of frames per feature group {names}, got {len(group_frames)} lists")
    if any(len(frames) != len(validated) for frames in group_frames):
        counts = ", ".join(f"{len(f)} {n}" for n, f in zip(names, group_frames))
        raise ValueError(f"need one frame per partition in each list, got {len(validated)} validated, {counts}")
    if not validated:
        raise ValueError("no partitions: ingest at least one file before building the training dataset")
    if not (0 <= validation_share < 1 and 0 <= test_share < 1 and validation_share + test_share < 1):
        raise ValueError(f"invalid shares: validation {validation_share}, test {test_share}")


def _join_all(validated, group_frames) -> pl.DataFrame:
    """Every partition joined (see :func:`_join_partition`), stacked."""
    parts = [_join_partition(i, v, [frames[i] for frames in group_frames]) for i, v in enumerate(validated)]
    try:
        return pl.concat(parts, how="vertical")
    except (pl.exceptions.SchemaError, pl.exceptions.ShapeError) as exc:
        # Typically partitions embedded with different models (vector sizes differ).
        raise ValueError(f"partitions do not share one schema; re-embed them with one model: {exc}") from exc


def resplit(
    dataset: pl.DataFrame, seed: int, *, validation_share: float = 0.15, test_share: float = 0.15
) -> tuple[pl.DataFrame, str]:
    """The same de-duplicated rows split again with another seed (for repeated evaluation).

    Same rules as :func:`build_training_dataset`; a pure time split does not
    depend on the seed, so it comes back unchanged (the strategy says so).
    """
    frame = dataset.drop("split") if "split" in dataset.columns else dataset
    out, strategy = _split(frame, seed, validation_share, test_share)
    return out.sort("text_hash"), strategy


def earlier_split(
    dataset: pl.DataFrame, windows: int, seed: int = 0, *, validation_share: float = 0.15, test_share: float = 0.15
) -> tuple[pl.DataFrame, str]:
    """The time split as it was ``windows`` test windows ago (a backtest, for repeated evaluation of timed data).

    A split by time does not depend on the seed, so re-splitting with other
    seeds would evaluate the same split again. Here the newest ``windows x
    test_share`` of the rows (by time) are left out and the rest is split by
    time under the same rules: the model as it would have been trained and
    tested earlier, never on a future it had seen. Rows without a timestamp
    cannot be placed in time and stay in (split stratified with ``seed``, as always).
    """
    frame = dataset.drop("split") if "split" in dataset.columns else dataset
    timed = frame.filter(pl.col("sent_at").is_not_null()).sort(["sent_at", "text_hash"])
    drop = min(round(windows * test_share * timed.height), timed.height)
    kept = pl.concat([timed.head(timed.height - drop), frame.filter(pl.col("sent_at").is_null())])
    out, strategy = _split(kept.sort("text_hash"), seed, validation_share, test_share)
    return out.sort("text_hash"), f"{strategy}, {windows} test window(s) earlier ({kept.height} of {frame.height} rows)"
