"""The feature registry: a per-file feature group declared once is joined for training, read by the
model and computed again by `score`, so training and serving cannot skew.

The toy group (whether a text has an odd number of characters) is registered in this test only. The
toy label is that parity, which n-grams and the built-in text statistics cannot see, so only the
group's column can carry it.
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from fraud_assets.dataset import build_training_dataset, per_file_outputs
from fraud_assets.features import JOIN_KEYS, FeatureGroup, registered
from fraud_assets.model import TrainConfig, train_classifier
from fraud_assets.model.io import save_model
from fraud_assets.scoring import ScoringError, score_file
from fraud_assets.settings import Settings
from tests.test_dataset import partition

SMALL = TrainConfig(
    use_embedding=False, ngram_buckets=2**12, wide_buckets=2**14, hidden=16, ngram_dim=8, max_epochs=8, patience=3, batch_size=64
)


def odd_length(messages: pl.DataFrame, _ctx) -> pl.DataFrame:
    parity = (pl.col("text").str.len_chars() % 2).cast(pl.Float32)
    return messages.select(*JOIN_KEYS, parity.alias("odd_length"))


TOY = FeatureGroup("length_parity", ("odd_length",), odd_length)


def toy_partition(n: int = 300):
    rng = random.Random(0)
    texts, labels = [], []
    for i in range(n):
        label = int(rng.random() < 0.4)
        words = rng.sample(["hello", "parcel", "lunch", "account", "friday", "photos", "prize", "code"], 3)
        text = " ".join(words) + f" {i}"
        texts.append(text if len(text) % 2 == label else text + ".")
        labels.append(label)
    validated, embeddings, times = partition("toy.csv", texts, labels)
    return validated, embeddings, times


@pytest.fixture(scope="module")
def trained():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with registered(TOY):
        validated, embeddings, times = toy_partition()
        toy = odd_length(validated.select(*JOIN_KEYS, "text", "sent_at"), None)  # what its asset writes
        dataset, _ = build_training_dataset([validated], [embeddings], [times], [toy])
        model = train_classifier(dataset, SMALL)
    torch.set_num_threads(threads)
    return dataset, model


def test_training_joins_the_group_and_the_model_reads_it(trained):
    dataset, model = trained
    assert "odd_length" in dataset.columns
    assert model.spec.group_columns == ("odd_length",)
    with registered(TOY):
        assert per_file_outputs()[-1] == "length_parity"
    test = dataset.filter(pl.col("split") == "test")
    flipped = test.with_columns(pl.lit(0.0, pl.Float32).alias("odd_length"))
    assert (model.predict_proba(test) != model.predict_proba(flipped)).any()  # the column matters
    with pytest.raises(ValueError, match="odd_length"):
        model.predict_proba(test.drop("odd_length"))  # never scored without it


def test_score_computes_the_group_as_training_did(trained, tmp_path: Path):
    from fraud_assets.embeddings import Embedder

    _, model = trained
    settings = Settings(data_dir=tmp_path / "data", landing_dir=tmp_path / "incoming", device="cpu")
    embedder = Embedder(settings.embedding_model, device="cpu")
    card = {"embedding_model": embedder.model_name, "embedding_fingerprint": embedder.fingerprint, "threshold": 0.5}
    folder = save_model(model, tmp_path / "model", card)
    source = tmp_path / "in.csv"
    source.write_text(
        "text,sent_at\nprize code lunch 17,2026-03-01 10:00:00\nhello parcel friday 12.,2026-03-01 11:00:00\n", encoding="utf-8"
    )

    with registered(TOY):
        score_file(source, tmp_path / "with.csv", model_dir=folder, settings=settings)
    quiet = FeatureGroup(
        TOY.asset, TOY.columns, lambda m, ctx: odd_length(m, ctx).with_columns(pl.lit(0.0, pl.Float32).alias("odd_length"))
    )
    with registered(quiet):
        score_file(source, tmp_path / "quiet.csv", model_dir=folder, settings=settings)
    with_group = pl.read_csv(tmp_path / "with.csv")["probability"].to_list()
    quieted = pl.read_csv(tmp_path / "quiet.csv")["probability"].to_list()
    assert with_group != quieted  # score took the column from the registered group's compute

    with pytest.raises((ScoringError, ValueError), match="odd_length"):
        score_file(source, tmp_path / "without.csv", model_dir=folder, settings=settings)  # group not registered
