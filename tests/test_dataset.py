"""build_training_dataset: join, cross-file de-duplication and the split rules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from fraud_assets.dataset import build_training_dataset, earlier_split, resplit
from fraud_assets.text import text_hash
from fraud_assets.time_features import TIME_FEATURE_COLUMNS, time_features

DIM = 4
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def partition(
    source: str,
    texts: list[str],
    labels: list[int],
    sent_at: list[datetime | None] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """One partition's (validated, embeddings, time_features) frames."""
    n = len(texts)
    validated = pl.DataFrame(
        {
            "message_id": [f"{source}-{i}" for i in range(n)],
            "text": texts,
            "text_hash": [text_hash(t) for t in texts],
            "label": labels,
            "sent_at": sent_at if sent_at is not None else [None] * n,
            "fraud_type": ["scam" if y else None for y in labels],
            "source_file": [source] * n,
            "source_row": list(range(n)),
        },
        schema_overrides={"label": pl.Int8, "sent_at": pl.Datetime("us", "UTC"), "fraud_type": pl.Utf8},
    )
    vectors = np.array([[len(t), y, 0.5, -0.5] for t, y in zip(texts, labels)], dtype=np.float32).reshape(n, DIM)
    embeddings = validated.select("message_id", "text_hash").with_columns(
        pl.Series("embedding", vectors, dtype=pl.Array(pl.Float32, DIM))
    )
    return validated, embeddings, time_features(validated, timezone="UTC")


def build(parts, **kwargs):
    return build_training_dataset([p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts], **kwargs)


def hourly(labels: list[int], timed: int | None = None):
    """One partition of distinct messages an hour apart, in label order; rows from ``timed`` on have no timestamp."""
    n = len(labels)
    stamps = [T0 + timedelta(hours=i) if timed is None or i < timed else None for i in range(n)]
    return partition("a.csv", [f"message number {i}" for i in range(n)], labels, stamps)


def labelled(n_normal: int, n_fraud: int, prefix: str = "") -> tuple[list[str], list[int]]:
    texts = [f"{prefix}normal message {i}" for i in range(n_normal)] + [f"{prefix}fraud message {i}" for i in range(n_fraud)]
    return texts, [0] * n_normal + [1] * n_fraud


def test_contract_columns_and_row_accounting():
    texts, labels = labelled(30, 10)
    dataset, summary = build([partition("a.csv", texts, labels)])
    expected = {"message_id", "text", "text_hash", "label", "sent_at", "fraud_type", "source_file", "embedding", "split"}
    assert expected | set(TIME_FEATURE_COLUMNS) <= set(dataset.columns)
    assert dataset.schema["embedding"] == pl.Array(pl.Float32, DIM)
    assert dataset.get_column("text_hash").is_unique().all()
    assert summary["rows_in"] == 40 and summary["rows_out"] == dataset.height == 40
    assert sum(s["rows"] for s in summary["splits"].values()) == dataset.height
    assert set(dataset.get_column("split").unique()) == {"train", "validation", "test"}


def test_duplicates_across_partitions_collapse_to_the_earliest_copy():
    shared = "your parcel is waiting, pay the fee here"
    a = partition("a.csv", [shared, "hello mum"], [1, 0], [T0 + timedelta(days=5), T0])
    b = partition("b.csv", [shared, "lunch at noon?"], [1, 0], [T0 + timedelta(days=1), T0 + timedelta(days=2)])
    dataset, summary = build([a, b])
    rows = dataset.filter(pl.col("text") == shared)
    assert rows.height == 1
    assert rows.get_column("source_file").item() == "b.csv"  # the earlier sighting wins
    assert summary["duplicates_dropped"] == 1
    assert dataset.height == summary["rows_in"] - 1 == 3


def test_text_with_conflicting_labels_is_dropped_and_counted():
    disputed = "please call me back"
    a = partition("a.csv", [disputed, "hello mum", "win a prize"], [0, 0, 1])
    b = partition("b.csv", [disputed, "see you"], [1, 0])
    dataset, summary = build([a, b])
    assert disputed not in dataset.get_column("text").to_list()
    assert summary["conflicting_label_texts_dropped"] == 1
    assert summary["conflicting_label_rows_dropped"] == 2
    assert dataset.height == 3


def test_time_split_tests_on_the_newest_and_trains_on_the_oldest():
    # Fraud and normal interleaved in time, so every split holds fraud.
    dataset, summary = build([hourly([int(i % 4 == 0) for i in range(40)])])
    assert summary["split_strategy"] == "time"
    by_split = {s: dataset.filter(pl.col("split") == s).get_column("sent_at") for s in ("train", "validation", "test")}
    assert by_split["train"].max() < by_split["validation"].min()
    assert by_split["validation"].max() < by_split["test"].min()
    assert by_split["test"].max() == T0 + timedelta(hours=39) and by_split["train"].min() == T0
    assert [summary["splits"][s]["rows"] for s in ("train", "validation", "test")] == [28, 6, 6]


def test_rows_without_timestamp_join_the_time_split_stratified():
    dataset, summary = build([hourly([int(i % 4 == 0) for i in range(40)], timed=30)])  # 75 % timed
    assert summary["split_strategy"] == "time+stratified"
    timed = dataset.filter(pl.col("sent_at").is_not_null())
    assert timed.filter(pl.col("split") == "train").get_column("sent_at").max() < (
        timed.filter(pl.col("split") == "test").get_column("sent_at").min()
    )
    assert dataset.filter(pl.col("sent_at").is_null()).height == 10
    assert dataset.height == 40


def test_without_timestamps_the_split_is_stratified_with_fraud_everywhere():
    texts, labels = labelled(80, 12)
    dataset, summary = build([partition("a.csv", texts, labels)])
    assert summary["split_strategy"] == "stratified"
    for name, counts in summary["splits"].items():
        assert counts["fraud"] >= 1, name
        assert counts["normal"] >= 1, name
    # The class balance is kept close to the overall 12/92 in every split.
    shares = [summary["splits"][s]["fraud_share"] for s in ("train", "validation", "test")]
    assert max(shares) - min(shares) < 0.06


def test_split_is_seeded_and_independent_of_partition_order():
    a = partition("a.csv", *labelled(40, 8, prefix="a "))
    b = partition("b.csv", *labelled(40, 8, prefix="b "))
    first, _ = build([a, b], seed=7)
    again, _ = build([a, b], seed=7)
    swapped, _ = build([b, a], seed=7)
    other_seed, _ = build([a, b], seed=8)
    key = ["text_hash", "split"]
    assert first.select(key).equals(again.select(key))
    assert first.select(key).equals(swapped.select(key))
    assert not first.select(key).equals(other_seed.select(key))


def test_time_split_without_fraud_in_test_falls_back_to_stratified():
    # All fraud is old: a time split would leave validation and test without fraud.
    dataset, summary = build([hourly([int(i < 8) for i in range(40)])])
    assert summary["split_strategy"].startswith("stratified (time split had no fraud in")
    assert "test" in summary["split_strategy"]
    assert all(summary["splits"][s]["fraud"] >= 1 for s in ("train", "validation", "test"))
    assert dataset.height == 40


def test_time_split_without_normal_rows_in_test_falls_back_to_stratified():
    # Normal history from an old export, fraud reports only in recent files: the newest
    # 15 % are all fraud, and a test split without normal rows cannot train the model.
    n = 60
    dataset, summary = build([hourly([int(i >= 40) for i in range(n)])])
    assert summary["split_strategy"].startswith("stratified (time split had")
    assert "no normal in test" in summary["split_strategy"]
    assert all(summary["splits"][s][kind] >= 1 for s in ("train", "validation", "test") for kind in ("fraud", "normal"))
    assert dataset.height == n


def test_an_earlier_split_leaves_out_the_newest_rows_and_splits_the_rest_by_time():
    dataset, summary = build([hourly([int(i % 4 == 0) for i in range(100)])])
    assert summary["split_strategy"] == "time" and resplit(dataset, 5)[0].equals(dataset)  # the seed changes nothing
    earlier, how = earlier_split(dataset, 1)
    assert how == "time, 1 test window(s) earlier (85 of 100 rows)" and earlier.height == 85
    newest = dataset.filter(pl.col("split") == "test")["sent_at"]
    assert earlier["sent_at"].max() < newest.min()  # the original test window is left out whole
    by_split = {s: earlier.filter(pl.col("split") == s)["sent_at"] for s in ("train", "validation", "test")}
    assert by_split["train"].max() < by_split["validation"].min() <= by_split["validation"].max() < by_split["test"].min()


def test_misaligned_partition_frames_are_joined_by_key():
    texts, labels = labelled(5, 3)
    validated, embeddings, times = partition("a.csv", texts, labels)
    dataset, _ = build([(validated, embeddings.reverse(), times.sample(fraction=1.0, shuffle=True, seed=1))])
    for row in dataset.iter_rows(named=True):
        assert row["embedding"][0] == len(row["text"])  # each vector stayed with its text


def test_mismatched_lists_are_rejected():
    part = partition("a.csv", ["x", "y", "z"], [0, 1, 0])
    with pytest.raises(ValueError):
        build_training_dataset([part[0]], [], [part[2]])
    with pytest.raises(ValueError):
        build_training_dataset([], [], [])
