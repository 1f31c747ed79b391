"""The torch classifier: training, determinism, TensorBoard, ablations, model files.

Real torch training on a few hundred synthetic rows (seconds each). The
synthetic label is carried by character n-grams only (the embeddings are
pure noise), which is the situation the model is built for: a frozen
embedding that knows nothing about the language.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fraud_assets.model import (
    HISTORY_KEYS,
    TENSORBOARD_TAGS,
    TrainConfig,
    best_f1_threshold,
    hash_char_ngrams,
    train_classifier,
)
from fraud_assets.model.io import ModelLoadError, load_model, save_model

TIME_COLUMNS = (
    "hour_sin", "hour_cos", "dow_sin", "dow_cos", "month_sin", "month_cos",
    "dom_sin", "dom_cos", "week_sin", "week_cos", "season_sin", "season_cos",
    "has_timestamp",
)  # fmt: skip
TELECOM = Path(__file__).resolve().parents[2] / "shared/datasets/telecom_fraud_texts"

FRAUD_PHRASES = [
    "您的账户涉嫌洗钱", "请立即转账到安全账户", "点击链接领取补贴", "公安局通知您配合调查", "刷单返利日赚千元",
    "verify your account now", "you won a cash prize", "send the code to claim", "urgent wire transfer",
]  # fmt: skip
NORMAL_PHRASES = [
    "明天下午开会", "快递已放在门口", "晚上一起吃饭吗", "您的话费账单已出", "周末去爬山",
    "see you at lunch", "the meeting moved to friday", "thanks for the photos", "your parcel was delivered",
]  # fmt: skip
FILLER = ["好的", "谢谢", "今天", "请", "您好", "ok", "please", "today", "hello", "的", "了"]

# Small model so each training run takes a second or two on a shared 2-core box.
# Small and quick; the linear part is held to strong penalties (C <= 1) so that on this easy data it
# stays imperfect and the deep part's training loop (early stopping, best-epoch restore) has work to do.
FAST = TrainConfig(
    ngram_buckets=2**14,
    wide_buckets=2**16,
    hidden=32,
    ngram_dim=16,
    max_epochs=10,
    patience=3,
    batch_size=64,
    wide_cs=(0.0625, 0.125, 0.25, 0.5, 1.0),
)


def make_dataset(n: int = 600, seed: int = 0, emb_dim: int = 16) -> pl.DataFrame:
    """A training_dataset-shaped frame (shared data contract) with an n-gram-learnable label."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = int(rng.random() < 0.35)
        phrases = FRAUD_PHRASES if label else NORMAL_PHRASES
        words = [rng.choice(phrases)] + [rng.choice(FILLER) for _ in range(rng.randint(1, 5))]
        rng.shuffle(words)
        text = " ".join(words)
        rows.append((f"m{i}", text, label))
    frame = pl.DataFrame(
        {
            "message_id": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "text_hash": [f"h{i}" for i in range(n)],
            "label": pl.Series([r[2] for r in rows], dtype=pl.Int8),
            "sent_at": pl.Series([None] * n, dtype=pl.Datetime("us", "UTC")),
            "fraud_type": pl.Series([None] * n, dtype=pl.Utf8),
            "source_file": ["synthetic.csv"] * n,
            "embedding": pl.Series(nprng.normal(size=(n, emb_dim)).astype(np.float32)),
        }
    )
    hours = nprng.integers(0, 24, size=n)
    time_cols = {c: np.zeros(n, np.float32) for c in TIME_COLUMNS if c != "has_timestamp"}
    time_cols["hour_sin"] = np.sin(2 * np.pi * hours / 24).astype(np.float32)
    time_cols["hour_cos"] = np.cos(2 * np.pi * hours / 24).astype(np.float32)
    frame = frame.with_columns(
        *(pl.Series(c, v) for c, v in time_cols.items()),
        pl.Series("has_timestamp", nprng.random(n) < 0.5),
    )
    split = np.where(np.arange(n) % 10 < 7, "train", np.where(np.arange(n) % 10 < 9, "validation", "test"))
    return frame.with_columns(pl.Series("split", split))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny batches on a shared 2-core box run faster (and without spin-waiting) on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset() -> pl.DataFrame:
    return make_dataset()


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    tb = tmp_path_factory.mktemp("tb")
    logs: list[str] = []
    model = train_classifier(dataset, FAST, tensorboard_dir=tb, log=logs.append)
    return model, tb, logs


def test_learns_from_ngrams_and_restores_best_epoch(trained, dataset):
    model, _, logs = trained
    assert model.best["val_f1"] > 0.9
    for record in model.history:
        assert set(HISTORY_KEYS) <= set(record)
    assert model.best["val_f1"] == max(h["val_f1"] for h in model.history)
    # the returned weights are the best epoch's, not the last epoch's: the validation
    # scores reproduce that epoch's F1 and its exact threshold (a score value that
    # changes every epoch)
    assert model.best_epoch < len(model.history)
    val = dataset.filter(pl.col("split") == "validation")
    # History is recorded before the validation-fitted blend and before the linear part is refitted on
    # validation, so compare the raw (uncalibrated) scores of a model without the refit.
    plain = train_classifier(dataset, dataclasses.replace(FAST, refit_folds=0))
    timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in m.history] for m in (plain, model)]
    assert timeless[0] == timeless[1]  # the refit comes after the deep part's epochs
    threshold, f1, _, _ = best_f1_threshold(val["label"].to_numpy(), plain.predict_proba(val, calibrated=False))
    assert f1 == pytest.approx(model.best["val_f1"], abs=1e-12)
    assert threshold == pytest.approx(model.best["val_threshold"], abs=1e-7)
    assert threshold != pytest.approx(model.history[-1]["val_threshold"], abs=1e-7)
    assert any(line.startswith("epoch 1/") for line in logs)
    test = dataset.filter(pl.col("split") == "test")
    proba = model.predict_proba(test)
    assert proba.shape == (test.height,) and np.all((proba >= 0) & (proba <= 1))


def test_early_stopping_stops_before_max_epochs(dataset):
    config = dataclasses.replace(FAST, max_epochs=40, patience=2)
    model = train_classifier(dataset, config)
    assert len(model.history) < 40
    assert len(model.history) - model.best_epoch == 2


def test_same_seed_same_result_different_seed_different(trained, dataset, tmp_path):
    model, _, _ = trained
    # the second run reads the same rows lazily from Parquet, as the fraud_classifier asset does
    dataset.write_parquet(tmp_path / "dataset.parquet")
    again = train_classifier(pl.scan_parquet(tmp_path / "dataset.parquet"), FAST)
    assert again.history == [{**h, "seconds": again.history[i]["seconds"]} for i, h in enumerate(model.history)]
    np.testing.assert_array_equal(model.predict_proba(dataset), again.predict_proba(dataset))
    other = train_classifier(dataset, dataclasses.replace(FAST, seed=1))
    # the seed drives the deep part; the blend may keep only the (seed-free) linear part, so compare raw sums
    assert not np.array_equal(model.predict_proba(dataset, calibrated=False), other.predict_proba(dataset, calibrated=False))


def test_shuffled_labels_score_clearly_worse(trained, dataset):
    model, _, _ = trained
    labels = dataset["label"].to_numpy().copy()
    np.random.default_rng(0).shuffle(labels)
    shuffled = train_classifier(dataset.with_columns(pl.Series("label", labels, dtype=pl.Int8)), FAST)
    assert shuffled.best["val_f1"] < model.best["val_f1"] - 0.2


def test_tensorboard_has_every_tag(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, tb, _ = trained
    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert set(TENSORBOARD_TAGS) <= tags
    assert len(acc.Scalars("Val/F1Score")) == len(trained[0].history)


def test_an_epoch_visits_at_most_epoch_rows_and_small_data_trains_as_before(dataset, trained, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    n_train = int((dataset["split"] == "train").sum())
    same = train_classifier(dataset, dataclasses.replace(FAST, epoch_rows=n_train))  # not fewer rows: the full pass
    np.testing.assert_array_equal(same.predict_proba(dataset), trained[0].predict_proba(dataset))

    config = dataclasses.replace(FAST, epoch_rows=128, max_epochs=3, patience=3)
    sampled = train_classifier(dataset, config, tensorboard_dir=tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert len(events.Scalars("Train/BatchLoss")) == len(sampled.history) * 2  # 128 rows in batches of 64
    again = train_classifier(dataset, config)
    np.testing.assert_array_equal(again.predict_proba(dataset), sampled.predict_proba(dataset))  # seeded samples


@pytest.mark.parametrize(
    "groups",
    [
        dict(use_embedding=False, use_time=False, use_text_stats=False),  # n-grams only
        dict(use_ngrams=False, use_time=False, use_text_stats=False),  # embedding only
    ],
)
def test_feature_groups_can_be_switched_off(dataset, groups):
    config = dataclasses.replace(FAST, max_epochs=3, **groups)
    model = train_classifier(dataset, config)
    needed = model.spec.required_columns
    frame = dataset.select(needed)  # disabled groups' columns are not required
    proba = model.predict_proba(frame)
    assert proba.shape == (dataset.height,) and np.isfinite(proba).all()
    if not config.use_embedding:
        assert "embedding" not in needed
    else:
        assert needed == ("embedding",)


def test_all_groups_off_is_rejected(dataset):
    off = dataclasses.replace(FAST, use_embedding=False, use_time=False, use_ngrams=False, use_text_stats=False)
    with pytest.raises(ValueError, match="feature group"):
        train_classifier(dataset, off)
    with pytest.raises(ValueError, match="wide_select_rows"):
        train_classifier(dataset, dataclasses.replace(FAST, wide_select_rows=10))
    with pytest.raises(ValueError, match="cross_select_rows"):
        train_classifier(dataset, dataclasses.replace(FAST, cross_select_rows=999))


def test_missing_column_is_a_clear_error(trained, dataset):
    model, _, _ = trained
    with pytest.raises(ValueError, match="embedding"):
        model.predict_proba(dataset.drop("embedding"))


def test_ngram_hash_is_stable_and_separates_texts():
    a = hash_char_ngrams(["转账到安全账户", "hello"], buckets=2**18)
    b = hash_char_ngrams(["转账到安全账户", "hello"], buckets=2**18)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    indptr, ids, counts = a
    # "转账到安全账户": 7 unigrams (账 twice -> 6 distinct), 8 bigrams, 7 trigrams incl. the edge marks
    assert indptr[1] == 6 + 8 + 7
    assert counts[: indptr[1]].sum() == 7 + 8 + 7
    # pinned: the hash must never change between releases, or saved models would silently break
    assert hash_char_ngrams(["Ab"], buckets=2**18)[1].tolist() == [14022, 49069, 56834, 115220, 169742, 206543, 226175]


def test_save_load_round_trip(trained, dataset, tmp_path):
    model, _, _ = trained
    card = {"embedding_model": "synthetic", "embedding_fingerprint": "abc", "threshold": 0.5, "metrics": {"f1": 1.0}}
    folder = save_model(model, tmp_path / "model", card)
    names = {p.name for p in folder.iterdir()}
    assert "model_card.json" in names and any(n.endswith(".safetensors") for n in names)
    assert not any(n.endswith((".pt", ".pth", ".pkl", ".pickle", ".bin")) for n in names)
    assert not [p for p in tmp_path.iterdir() if p.name != "model"] and not [
        p for p in folder.iterdir() if p.name.startswith(".")
    ]
    loaded, loaded_card = load_model(folder)
    np.testing.assert_array_equal(loaded.predict_proba(dataset), model.predict_proba(dataset))
    assert loaded.config == model.config and loaded.spec == model.spec
    assert loaded.best_epoch == model.best_epoch
    assert loaded.held_out_validation == model.held_out_validation is not None
    assert loaded_card["threshold"] == 0.5 and loaded_card["embedding_fingerprint"] == "abc"
    assert {"feature_config", "code_version", "created_at"} <= set(loaded_card)
    # saving again over an existing model replaces it
    save_model(model, folder, {**card, "threshold": 0.7})
    assert load_model(folder)[1]["threshold"] == 0.7


def test_an_unfinished_save_never_loads(trained, dataset, tmp_path):
    model, _, _ = trained
    folder = save_model(model, tmp_path / "model", {"threshold": 0.5})

    class Unserialisable:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_model(model, folder, {"threshold": 0.9, "bad": Unserialisable()})
    # the card is written last: without it the folder is incomplete, never a mix of two saves
    with pytest.raises(ModelLoadError, match="incomplete"):
        load_model(folder)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_production_pointer_pins_one_model_whole(trained, dataset, tmp_path):
    from fraud_assets.model.io import promote, prune_candidates, read_pointer, update_card

    model, _, _ = trained
    models = tmp_path / "models"
    first = save_model(model, models / "candidates" / "20260101T000000Z-aaaa", {"threshold": 0.2, "run_name": "a"})
    second = save_model(model, models / "candidates" / "20260102T000000Z-bbbb", {"threshold": 0.8, "run_name": "b"})
    pointer = models / "production.json"
    promote(first, pointer)
    assert load_model(pointer)[1]["run_name"] == "a"
    promote(second, pointer)
    document = read_pointer(pointer)
    assert document["model"] == "candidates/20260102T000000Z-bbbb" and document["previous"] == "candidates/20260101T000000Z-aaaa"
    assert load_model(pointer)[1]["threshold"] == 0.8

    update_card(second, threshold=0.99)  # a promoted model changed behind the pointer's back
    with pytest.raises(ModelLoadError, match="does not match the hash"):
        load_model(pointer)
    update_card(second, threshold=0.8)

    for day in range(3, 7):
        save_model(model, models / "candidates" / f"2026010{day}T000000Z-cccc", {"threshold": 0.5})
    # newer than the model in production: another retrain may still be evaluating them
    early = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)  # within the evaluation grace of each
    assert prune_candidates(models / "candidates", pointer, keep=0, now=early) == []  # the older one is production's predecessor
    assert sorted(p.name for p in (models / "candidates").iterdir())[-4:] == [f"2026010{d}T000000Z-cccc" for d in range(3, 7)]
    promote(models / "candidates" / "20260106T000000Z-cccc", pointer)
    removed = prune_candidates(models / "candidates", pointer, keep=2, now=early)
    left = sorted(p.name for p in (models / "candidates").iterdir())
    assert left == ["20260102T000000Z-bbbb", "20260105T000000Z-cccc", "20260106T000000Z-cccc"]  # newest 2, the one replaced
    assert sorted(removed) == ["20260101T000000Z-aaaa", "20260103T000000Z-cccc", "20260104T000000Z-cccc"]
    assert load_model(pointer)[1]["threshold"] == 0.5


def test_a_streak_of_refused_candidates_is_pruned_once_past_the_evaluation_grace(trained, tmp_path):
    from fraud_assets.model.io import promote, prune_candidates

    model, _, _ = trained
    candidates = tmp_path / "models" / "candidates"
    pointer = tmp_path / "models" / "production.json"
    promote(save_model(model, candidates / "20260101T020000Z-prod", {"threshold": 0.5}), pointer)
    nights = [f"202601{day:02d}T020000Z-n{day:03d}" for day in range(2, 10)]  # each refused
    for name in ["0-manual", "20260105-manual", *nights, "hand-made"]:  # not named by a run: never removed
        save_model(model, candidates / name, {"threshold": 0.5})
    now = dt.datetime(2026, 1, 9, 12, tzinfo=dt.timezone.utc)
    removed = prune_candidates(candidates, pointer, keep=3, now=now)
    assert sorted(removed) == nights[:6]  # older than two days and not among the newest 3
    left = ["0-manual", "20260101T020000Z-prod", "20260105-manual", *nights[6:], "hand-made"]
    assert sorted(p.name for p in candidates.iterdir()) == sorted(left)
    # a day later, keep=0: the night of the 8th is past the grace, the 9th's may still be under evaluation
    assert prune_candidates(candidates, pointer, keep=0, now=now + dt.timedelta(days=1)) == [nights[6]]
    assert load_model(pointer)[1]["threshold"] == 0.5


def test_loading_while_promotions_happen_never_mixes_two_models(trained, dataset, tmp_path):
    """What `fraud-assets score` does on every call, in a loop, while another thread promotes."""
    import threading

    import torch

    from fraud_assets.model.io import promote, prune_candidates

    model, _, _ = trained
    models = tmp_path / "models"
    sample = dataset.head(32)
    expected = {}
    for name, threshold, scale in (("20260101T000000Z-aaaa", 0.25, 1.0), ("20260102T000000Z-bbbb", 0.75, 2.0)):
        # a second model with other weights: every parameter and the blend weights scaled
        tensors = [*model.module.parameters(), model.module.blend]
        with torch.no_grad():
            for tensor in tensors:
                tensor.mul_(scale)
            save_model(model, models / "candidates" / name, {"threshold": threshold, "run_name": name})
            expected[threshold] = model.predict_proba(sample)
            for tensor in tensors:
                tensor.div_(scale)
    assert not np.allclose(expected[0.25], expected[0.75])
    pointer = models / "production.json"
    promote(models / "candidates" / "20260101T000000Z-aaaa", pointer)
    stop = threading.Event()

    def promoter() -> None:
        names = ["20260102T000000Z-bbbb", "20260101T000000Z-aaaa"]
        i = 0
        while not stop.is_set():
            promote(models / "candidates" / names[i % 2], pointer)
            prune_candidates(models / "candidates", pointer, keep=0)  # never removes what is in use
            i += 1

    thread = threading.Thread(target=promoter)
    thread.start()
    try:
        for _ in range(150):
            loaded, card = load_model(pointer)  # must never fail
            np.testing.assert_allclose(loaded.predict_proba(sample), expected[card["threshold"]], rtol=1e-5)
    finally:
        stop.set()
        thread.join()


def test_load_errors_are_clear(trained, tmp_path):
    model, _, _ = trained
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    folder = save_model(model, tmp_path / "m", {"threshold": 0.5})
    weights = next(folder.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=str(folder).replace("\\", "\\\\")) as err:
        load_model(folder)
    assert "weights" in str(err.value)
    weights.unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load_model(folder)


def _with_embedding_signal(frame: pl.DataFrame, seed: int = 1) -> pl.DataFrame:
    """Half the labels flipped in the text and carried by the embedding alone (as when the embedding
    reads what n-grams cannot: negation, sarcasm)."""
    rng = np.random.default_rng(seed)
    n = frame.height
    hidden = rng.random(n) < 0.5
    label = frame["label"].to_numpy().astype(np.int64)
    label = np.where(hidden, rng.random(n) < 0.35, label).astype(np.int8)
    embedding = rng.normal(size=(n, 16)).astype(np.float32)
    embedding[:, 0] += np.where(hidden, 2.5 * (2 * label - 1), 0.0)
    return frame.with_columns(pl.Series("label", label, dtype=pl.Int8), pl.Series("embedding", embedding))


def test_dense_part_adds_what_only_the_embedding_knows():
    frame = _with_embedding_signal(make_dataset(1200, seed=3))
    model = train_classifier(frame, FAST)
    dense, blend = model.selection["dense"], model.selection["blend"]
    assert blend["chosen"] in ("linear+dense", "all") and blend["weights"]["dense"] > 0
    assert dense["C"] in FAST.dense_cs and dense["rows"] == int((frame["split"] == "train").sum())
    test = frame.filter(pl.col("split") == "test")
    y = test["label"].to_numpy()
    without = train_classifier(frame, dataclasses.replace(FAST, use_dense_linear=False))
    assert "dense" not in without.selection and without.selection["blend"]["weights"].get("dense", 0.0) == 0.0
    from sklearn.metrics import average_precision_score

    gain = average_precision_score(y, model.predict_proba(test)) - average_precision_score(y, without.predict_proba(test))
    assert gain > 0.03, gain  # measured 0.046 (0.897 against 0.850; the linear part alone 0.598)


def test_validation_rows_teach_the_shipped_model():
    """A fraud wording that only validation (and test) rows hold: the linear part refitted on train +
    validation scores it as fraud; fitted on train alone it cannot (its n-grams have no weight)."""
    frame = make_dataset(900, seed=5)
    split, label = frame["split"].to_numpy(), frame["label"].to_numpy()
    new = np.isin(split, ["validation", "test"]) & (label == 1) & (np.arange(len(split)) // 10 % 2 == 0)
    frame = frame.with_columns(pl.Series("text", np.where(new, "晴雨表温度计 qqv 好的", frame["text"].to_numpy())))
    refitted = train_classifier(frame, FAST)
    train_only = train_classifier(frame, dataclasses.replace(FAST, refit_folds=0))
    assert refitted.selection["linear"]["refit"]["folds"] == FAST.refit_folds
    assert "refit" not in train_only.selection["linear"] and "refit" not in train_only.selection["dense"]
    rows = frame.filter(pl.Series(new & (split == "test")))
    assert rows.height >= 10
    # Before the blend (linear + deep; the deep parts are the same, both trained on the train-only fit):
    # the blend, fitted on validation, can read even "no known n-gram" as a signal on this synthetic data.
    before = train_only.predict_proba(rows, calibrated=False)
    after = refitted.predict_proba(rows, calibrated=False)
    assert before.mean() < 0.7 and after.mean() > 0.9 and (after > before).all(), (before.mean(), after.mean())


@pytest.mark.parametrize("fraud_in_validation, folds", [(3, 3), (1, 0)])
def test_a_validation_split_with_few_fraud_rows_refits_with_fewer_folds_or_not_at_all(fraud_in_validation, folds):
    frame = make_dataset(600, seed=7)
    is_val = (frame["split"] == "validation").to_numpy()
    label = frame["label"].to_numpy().copy()
    label[is_val] = 0
    label[np.flatnonzero(is_val)[:fraud_in_validation]] = 1
    model = train_classifier(frame.with_columns(pl.Series("label", label, dtype=pl.Int8)), FAST)
    assert model.selection["linear"].get("refit", {}).get("folds", 0) == folds
    assert (model.held_out_validation is not None) == bool(folds)


def test_the_threshold_is_chosen_on_held_out_validation_probabilities(trained, dataset):
    """Refitted on validation, the model is too sure of itself there; validation_proba gives the
    probabilities of the parts' out-of-fold twins for exactly the rows it was trained with."""
    from sklearn.metrics import log_loss

    model, _, _ = trained
    val = dataset.filter(pl.col("split") == "validation")
    held, own = model.validation_proba(val), model.predict_proba(val)
    y = val["label"].to_numpy()
    assert held.shape == own.shape and log_loss(y, held) > log_loss(y, own)
    # other rows, or the same rows in another order: the model's own probabilities
    reordered = val.reverse()
    np.testing.assert_array_equal(model.validation_proba(reordered), model.predict_proba(reordered))
    test = dataset.filter(pl.col("split") == "test")
    np.testing.assert_array_equal(model.validation_proba(test), model.predict_proba(test))
    # without a refit there is nothing held out to record
    plain = train_classifier(dataset, dataclasses.replace(FAST, refit_folds=0))
    assert plain.held_out_validation is None
    np.testing.assert_array_equal(plain.validation_proba(val), plain.predict_proba(val))


def test_a_model_saved_before_the_dense_part_loads_and_scores_as_before(dataset, tmp_path):
    """Format 2 had no dense part: a champion trained before the upgrade keeps scoring, unchanged."""
    import json

    from safetensors.torch import load, save

    model = train_classifier(dataset, dataclasses.replace(FAST, use_dense_linear=False))  # what version 2 trained
    folder = save_model(model, tmp_path / "v2", {"threshold": 0.5})
    weights, config_file = folder / "model.safetensors", folder / "model_config.json"
    state = {k: v for k, v in load(weights.read_bytes()).items() if k not in ("dense_weight", "dense_bias", "dense_blend")}
    weights.write_bytes(save(state, metadata={"format_version": "2"}))
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "format_version": 2}))
    loaded, _ = load_model(folder)
    assert float(loaded.module.dense_blend) == 0.0 and not loaded.module.dense_weight.any()
    np.testing.assert_array_equal(loaded.predict_proba(dataset), model.predict_proba(dataset))
    config_file.write_text(json.dumps({**config, "format_version": 1}))
    with pytest.raises(ModelLoadError, match="format version 1; this code reads versions 2, 3, 4"):
        load_model(folder)


def _with_hour_interaction(frame: pl.DataFrame, seed: int = 2) -> pl.DataFrame:
    """A third of the rows become openers whose label only word and hour together give: "are you up"
    is fraud at night and normal at noon, "got a minute" the other way round (an XOR: neither the
    words nor the hour carry it on their own)."""
    rng = np.random.default_rng(seed)
    n = frame.height
    opener = rng.random(n) < 1 / 3
    which = rng.random(n) < 0.5
    night = rng.random(n) < 0.5
    label = np.where(opener, which == night, frame["label"].to_numpy()).astype(np.int8)
    names = rng.choice(["amy", "bo", "chen", "dev", "eli", "fay"], n)
    text = np.where(opener, np.char.add(np.where(which, "are you up ", "got a minute "), names), frame["text"].to_numpy())
    hour = np.where(night, rng.integers(0, 4, n), rng.integers(12, 16, n))
    angle = 2 * np.pi * np.where(opener, hour, rng.integers(0, 24, n)) / 24
    return frame.with_columns(
        pl.Series("text", text),
        pl.Series("label", label, dtype=pl.Int8),
        pl.Series("hour_sin", np.sin(angle).astype(np.float32)),
        pl.Series("hour_cos", np.cos(angle).astype(np.float32)),
        pl.Series("has_timestamp", np.ones(n, bool)),
        pl.Series("opener", opener),
    )


def test_words_crossed_with_the_hour_catch_what_neither_carries_alone():
    from sklearn.metrics import roc_auc_score

    frame = _with_hour_interaction(make_dataset(1500, seed=9))
    openers = frame.filter((pl.col("split") == "test") & pl.col("opener"))
    y = openers["label"].to_numpy()
    # without the deep part, whose MLP over [time features ; word bag] can learn an interaction too
    linear = dataclasses.replace(FAST, use_deep=False)
    crossed = train_classifier(frame, linear)
    plain = train_classifier(frame, dataclasses.replace(linear, cross_hour_block=0))
    assert crossed.spec.cross_hour_block == FAST.cross_hour_block and plain.spec.cross_hour_block == 0
    kept = crossed.selection["crosses"]
    assert kept["used"] and kept["val_log_loss_with"] < kept["val_log_loss_without"] and "crosses" not in plain.selection
    auc_crossed = roc_auc_score(y, crossed.predict_proba(openers))
    auc_plain = roc_auc_score(y, plain.predict_proba(openers))
    assert auc_crossed > 0.95 and auc_plain < 0.8, (auc_crossed, auc_plain)  # measured 1.0 and 0.42
    # The decision saw every row, so the plain view took its C instead of walking again; a decision
    # on a sample (1,000 of the 1,050 train rows) leaves the main fit to walk: the same model.
    assert crossed.selection["linear"]["plain"]["C"] == kept["plain_C"]
    assert crossed.selection["linear"]["plain"]["C_chosen_before"]
    walked = train_classifier(frame, dataclasses.replace(linear, cross_select_rows=1000))
    assert walked.selection["crosses"]["used"] and "plain_C" not in walked.selection["crosses"]
    assert "C_chosen_before" not in walked.selection["linear"]["plain"]
    np.testing.assert_array_equal(walked.predict_proba(frame), crossed.predict_proba(frame))


def test_crosses_that_do_not_help_on_validation_are_dropped_and_the_model_is_the_one_without():
    """The same openers with their hours shuffled: the crosses are noise, so they go, and what is left
    is exactly the model trained without them."""
    frame = _with_hour_interaction(make_dataset(1500, seed=9), seed=9)
    shuffle = np.random.default_rng(9).permutation(frame.height)
    frame = frame.with_columns(pl.col("hour_sin").gather(shuffle), pl.col("hour_cos").gather(shuffle))
    linear = dataclasses.replace(FAST, use_deep=False)
    dropped = train_classifier(frame, linear)
    decision = dropped.selection["crosses"]
    assert not decision["used"] and decision["val_log_loss_with"] > decision["val_log_loss_without"]
    assert dropped.spec.cross_hour_block == 0  # scoring computes no crosses either
    assert dropped.selection["linear"]["plain"]["C_chosen_before"]  # the decision's walk, not a second one
    plain = train_classifier(frame, dataclasses.replace(linear, cross_hour_block=0))
    np.testing.assert_array_equal(dropped.predict_proba(frame), plain.predict_proba(frame))


def test_without_timestamps_the_crosses_change_nothing(dataset):
    """Sets without timestamps (the shared Chinese proxies, Telecom) train exactly the model they did before."""
    untimed = dataset.with_columns(pl.lit(False).alias("has_timestamp"), pl.lit(0.0, pl.Float32).alias("hour_sin"))
    crossed = train_classifier(untimed, FAST)
    assert crossed.spec.cross_hour_block == 0 and crossed.selection["crosses"] == {
        "used": False,
        "reason": "no train row has a timestamp",
    }
    plain = train_classifier(untimed, dataclasses.replace(FAST, cross_hour_block=0))
    np.testing.assert_array_equal(crossed.predict_proba(untimed), plain.predict_proba(untimed))


def test_a_model_saved_before_the_crosses_loads_and_scores_as_before(dataset, tmp_path):
    """Format 3 had no word x time-of-day crosses: its spec lacks the key and it loads without them."""
    import json

    model = train_classifier(dataset, dataclasses.replace(FAST, cross_hour_block=0))  # what version 3 trained
    folder = save_model(model, tmp_path / "v3", {"threshold": 0.5})
    config_file = folder / "model_config.json"
    config = json.loads(config_file.read_text())
    assert config["format_version"] == 4 and config["feature_spec"]["cross_hour_block"] == 0
    del config["feature_spec"]["cross_hour_block"]
    config_file.write_text(json.dumps({**config, "format_version": 3}))
    loaded, _ = load_model(folder)
    assert loaded.spec.cross_hour_block == 0
    np.testing.assert_array_equal(loaded.predict_proba(dataset), model.predict_proba(dataset))


def _read_telecom() -> pl.DataFrame:
    import csv

    frames = []
    for path in sorted(TELECOM.glob("label0*.csv")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("gb18030")
        rows = [r for r in csv.reader(io.StringIO(text))][1:]
        frames.append(pl.DataFrame({"text": [r[0] for r in rows if r], "raw_label": [r[-1] for r in rows if r]}))
    frame = pl.concat(frames).unique("text", keep="first", maintain_order=True)
    return frame.with_columns((pl.col("raw_label") != "0").cast(pl.Int8).alias("label"))


@pytest.mark.skipif(not TELECOM.is_dir(), reason="real Telecom data set not present")
def test_real_telecom_ngrams_only_quick():
    """Char n-grams alone separate the real Chinese set (no embeddings needed)."""
    frame = _read_telecom()
    rng = np.random.default_rng(0)
    frame = frame.sample(fraction=1.0, shuffle=True, seed=0).head(3000)
    u = rng.random(frame.height)
    frame = frame.with_columns(pl.Series("split", np.where(u < 0.7, "train", np.where(u < 0.85, "validation", "test"))))
    config = TrainConfig(use_embedding=False, use_time=False, max_epochs=6, patience=2)
    model = train_classifier(frame, config)
    test = frame.filter(pl.col("split") == "test")
    threshold = model.best["val_threshold"]
    pred = model.predict_proba(test) >= threshold
    y = test["label"].to_numpy() == 1
    f1 = 2 * (pred & y).sum() / (pred.sum() + y.sum())
    assert f1 > 0.97
