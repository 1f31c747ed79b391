"""Evaluation: threshold choice, metrics, baselines, report and plots."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fraud_assets.evaluation import (
    EvaluationResult,
    baseline_scores,
    binary_metrics,
    choose_threshold,
    evaluate,
    per_fraud_type_recall,
    write_report,
)
from fraud_assets.storage import Storage

TELECOM = Path(__file__).resolve().parents[2] / "shared/datasets/telecom_fraud_texts"

# Sorted by score: 0.9(1) 0.8(1) 0.6(0) 0.4(0) 0.35(1) 0.1(0).
# threshold  precision  recall  F1
#   0.9        1         1/3    0.5
#   0.8        1         2/3    0.8   <- max F1
#   0.6        2/3       2/3    0.667
#   0.4        1/2       2/3    0.571
#   0.35       3/5       1      0.75
#   0.1        1/2       1      0.667
Y = np.array([0, 0, 1, 1, 0, 1])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.6, 0.9])


def test_max_f1_threshold_sits_between_the_best_score_and_the_next_lower():
    t = choose_threshold(Y, P)
    assert t == pytest.approx(0.7)  # halfway between 0.8 and 0.6
    assert binary_metrics(Y, P, t)["f1"] == pytest.approx(0.8)


def test_precision_target_takes_the_lowest_threshold_reaching_it():
    # Precision is not monotonic: 0.4 gives 0.5 but 0.35 gives 0.6 again.
    assert choose_threshold(Y, P, strategy="precision", target=0.6) == pytest.approx(0.225)
    assert choose_threshold(Y, P, strategy="precision", target=0.9) == pytest.approx(0.7)


def test_precision_target_out_of_reach_falls_back_to_the_best_precision():
    y, p = np.array([0, 1, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6])  # best precision 0.5 at 0.8 and 0.6
    assert choose_threshold(y, p, strategy="precision", target=0.9) == pytest.approx(0.6)


def test_recall_target_takes_the_highest_threshold_reaching_it():
    assert choose_threshold(Y, P, strategy="recall", target=0.3) == pytest.approx(0.85)
    assert choose_threshold(Y, P, strategy="recall", target=0.6) == pytest.approx(0.7)
    assert choose_threshold(Y, P, strategy="recall", target=1.0) == pytest.approx(0.225)


def test_threshold_choice_is_deterministic_and_order_free():
    order = np.random.default_rng(0).permutation(Y.size)
    assert choose_threshold(Y[order], P[order]) == choose_threshold(Y, P)


def test_single_class_validation_gives_the_neutral_threshold():
    assert choose_threshold([0, 0, 0], [0.2, 0.9, 0.4]) == 0.5
    assert choose_threshold([1, 1], [0.2, 0.9], strategy="recall", target=0.9) == 0.5
    m = binary_metrics([0, 0, 0], [0.2, 0.9, 0.4], 0.5)
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 0, "tp": 0}


def test_bad_strategy_or_missing_target_is_rejected():
    with pytest.raises(ValueError):
        choose_threshold(Y, P, strategy="youden")
    with pytest.raises(ValueError):
        choose_threshold(Y, P, strategy="precision")


def test_binary_metrics_on_a_hand_computed_example():
    y = [1, 1, 0, 0, 1]
    p = [0.9, 0.4, 0.6, 0.1, 0.8]
    m = binary_metrics(y, p, 0.5)  # predictions 1 0 1 0 1
    assert m["confusion_matrix"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["brier"] == pytest.approx(0.78 / 5)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of 6 (fraud, normal) pairs ranked right
    assert m["pr_auc"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert m["support"] == {"fraud": 3, "normal": 2, "total": 5}
    assert m["threshold"] == 0.5


def test_pr_auc_of_a_perfect_ranking_is_exactly_one():
    """scikit-learn's average precision sums 9 recall steps of 1/9 to 1.0000000000000002 here."""
    y = [1] * 9 + [0] * 5
    p = list(np.linspace(0.9, 0.6, 9)) + list(np.linspace(0.4, 0.1, 5))
    assert binary_metrics(y, p, 0.5)["pr_auc"] == 1.0


def test_per_fraud_type_recall_on_a_crafted_case():
    types = ["loan", "loan", "police", None, None]
    y = [1, 1, 1, 1, 0]
    pred = [1, 0, 1, 0, 1]
    assert per_fraud_type_recall(types, y, pred) == {
        "loan": {"recall": 0.5, "support": 2},
        "police": {"recall": 1.0, "support": 1},
        "unknown": {"recall": 0.0, "support": 1},
    }


# --------------------------------------------------------------------------- #
# evaluate() on a small synthetic dataset
# --------------------------------------------------------------------------- #
def synthetic_dataset(n: int = 150, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(np.int8)  # one third fraud
    texts = [
        f"urgent: transfer the deposit to the safe account {i} today or your card is frozen" if y else f"see you at lunch {i}"
        for i, y in enumerate(labels)
    ]
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    emb[:, 0] += 2.0 * labels
    split = np.array(["train"] * n, dtype=object)
    split[np.arange(n) % 5 == 3] = "validation"
    split[np.arange(n) % 5 == 4] = "test"
    return pl.DataFrame(
        {
            "text": texts,
            "label": labels,
            "fraud_type": [("loan" if i % 2 else "police") if y else None for i, y in enumerate(labels)],
            "embedding": emb,
            "split": split.astype(str),
        },
        schema_overrides={"embedding": pl.Array(pl.Float32, 8), "fraud_type": pl.Utf8},
    )


def model_proba(dataset: pl.DataFrame, split: str, noise: float, seed: int = 1) -> np.ndarray:
    y = dataset.filter(pl.col("split") == split).get_column("label").to_numpy()
    rng = np.random.default_rng(seed)
    return np.clip(0.15 + 0.7 * y + rng.normal(scale=noise, size=y.size), 0.0, 1.0)


HISTORY = [
    {
        "epoch": e,
        "train_loss": 1 / e,
        "val_loss": 1.2 / e,
        "val_f1": 0.5 + e / 10,
        "val_precision": 0.6,
        "val_recall": 0.7,
        "train_accuracy": 0.9,
        "val_accuracy": 0.88,
        "lr": 1e-3,
    }
    for e in range(1, 4)
]


@pytest.fixture(scope="module")
def result() -> tuple[pl.DataFrame, EvaluationResult]:
    dataset = synthetic_dataset()
    return dataset, evaluate(dataset, model_proba(dataset, "validation", 0.1), model_proba(dataset, "test", 0.1), history=HISTORY)


def test_metrics_have_the_contract_keys_and_sane_values(result):
    dataset, res = result
    m = json.loads(json.dumps(res.metrics))  # must be JSON-serialisable as is
    for key in ("f1", "precision", "recall", "pr_auc", "roc_auc", "threshold", "brier", "accuracy", "confusion_matrix"):
        assert key in m["model"], key
    assert set(m["baselines"]) == {"tfidf_logreg", "embedding_logreg", "length_logreg"}
    for baseline in m["baselines"].values():
        for key in ("f1", "pr_auc", "precision", "recall"):
            assert 0.0 <= baseline[key] <= 1.0
    for split in ("train", "validation", "test"):
        assert m["counts"][split] == dataset.filter(pl.col("split") == split).height
    assert 0.0 <= m["model"]["f1"] <= 1.0 and m["model"]["f1"] > 0.9  # well-separated scores
    assert sum(m["model"]["confusion_matrix"].values()) == m["counts"]["test"]
    assert set(m["per_fraud_type_recall"]) == {"loan", "police"}
    assert {"normal", "fraud", "accuracy"} <= set(m["classification_report"])
    assert m["threshold_strategy"] == "max_f1"
    assert m["baselines"]["tfidf_logreg"]["f1"] == 1.0  # the texts are trivially separable by words
    assert m["length_only"]["f1"] == m["baselines"]["length_logreg"]["f1"]


def test_plots_are_png_and_report_references_them(result):
    _, res = result
    assert set(res.plots) == {"pr_curve.png", "confusion_matrix.png", "reliability.png", "training_curves.png"}
    for name, data in res.plots.items():
        assert data.startswith(b"\x89PNG"), name
        assert f"({name})" in res.report_md
    assert "tfidf_logreg" in res.report_md and "TF-IDF" in res.report_md
    assert "log(text length)" in res.report_md


def test_report_warns_when_the_model_is_below_the_tfidf_baseline(result):
    dataset, good = result
    assert "Warning" not in good.report_md
    weak = evaluate(dataset, model_proba(dataset, "validation", 0.6), model_proba(dataset, "test", 0.6, seed=2))
    assert weak.metrics["model"]["f1"] < weak.metrics["baselines"]["tfidf_logreg"]["f1"]
    assert "below the TF-IDF baseline" in weak.report_md
    assert weak.metrics["beats_tfidf_baseline"] is False
    assert "training_curves.png" not in weak.plots  # no history, no curves


def test_write_report_puts_every_file_in_place(result, tmp_path):
    _, res = result
    out = tmp_path / "reports" / "latest"
    (out.mkdir(parents=True))
    (out / "training_curves.png").write_bytes(b"stale")
    write_report(
        EvaluationResult(res.metrics, res.report_md, {k: v for k, v in res.plots.items() if k != "training_curves.png"}),
        out,
        Storage(tmp_path),
    )
    assert json.loads((out / "metrics.json").read_text())["counts"] == res.metrics["counts"]
    assert (out / "report.md").read_text(encoding="utf-8") == res.report_md
    assert (out / "pr_curve.png").read_bytes().startswith(b"\x89PNG")
    assert not (out / "training_curves.png").exists()  # a stale plot from an older run is removed
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_baselines_fit_on_train_only():
    dataset = synthetic_dataset()
    # Flip every training label: a baseline fitted on train must now be wrong on test.
    flipped = dataset.with_columns(
        pl.when(pl.col("split") == "train").then(1 - pl.col("label")).otherwise(pl.col("label")).alias("label")
    )
    scores = baseline_scores(flipped)
    y_test = flipped.filter(pl.col("split") == "test").get_column("label").to_numpy()
    assert binary_metrics(y_test, scores["tfidf_logreg"]["test"], 0.5)["f1"] == 0.0


# --------------------------------------------------------------------------- #
# real data (skipped when the shared data set is absent)
# --------------------------------------------------------------------------- #
def _read_telecom() -> pl.DataFrame:
    from fraud_assets.text import normalize_text, text_hash

    rows = []
    for path in sorted(TELECOM.glob("label*.csv")):
        encoding = "gb18030" if path.name.startswith("label04") else "utf-8-sig"
        for record in csv.DictReader(io.StringIO(path.read_bytes().decode(encoding))):
            text = normalize_text(record["content"] or "")
            if text:
                fraud = record["label"].strip() != "0"
                rows.append(
                    (f"{path.name}:{len(rows)}", text, text_hash(text), int(fraud), record["label"] if fraud else None, path.name)
                )
    return pl.DataFrame(
        rows,
        schema={
            "message_id": pl.Utf8,
            "text": pl.Utf8,
            "text_hash": pl.Utf8,
            "label": pl.Int8,
            "fraud_type": pl.Utf8,
            "source_file": pl.Utf8,
        },
        orient="row",
    ).with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("sent_at"))


@pytest.mark.skipif(not TELECOM.is_dir(), reason="shared Telecom data set not present")
def test_tfidf_baseline_on_real_telecom_data():
    from fraud_assets.dataset import build_training_dataset
    from fraud_assets.time_features import time_features

    validated = _read_telecom()
    embeddings = validated.select("message_id", "text_hash").with_columns(
        pl.Series("embedding", np.zeros((validated.height, 1), dtype=np.float32), dtype=pl.Array(pl.Float32, 1))
    )
    dataset, summary = build_training_dataset([validated], [embeddings], [time_features(validated)])
    assert summary["split_strategy"] == "stratified"
    assert summary["duplicates_dropped"] > 100  # the set has ~200 duplicated normal texts

    scores = baseline_scores(dataset.drop("embedding"))["tfidf_logreg"]
    y_val = dataset.filter(pl.col("split") == "validation").get_column("label").to_numpy()
    y_test = dataset.filter(pl.col("split") == "test").get_column("label").to_numpy()
    threshold = choose_threshold(y_val, scores["val"])
    assert binary_metrics(y_test, scores["test"], threshold)["f1"] >= 0.99


def test_calibration_before_and_after_in_metrics_and_report():
    dataset = synthetic_dataset()
    calibrated = model_proba(dataset, "test", 0.1)
    y = dataset.filter(pl.col("split") == "test")["label"].to_numpy()
    squashed = 0.5 + (calibrated - 0.5) * 0.1  # same ranking, poorly calibrated
    res = evaluate(
        dataset,
        model_proba(dataset, "validation", 0.1),
        calibrated,
        raw_test_proba=squashed,
    )
    cal = res.metrics["calibration"]
    assert cal["before"]["brier"] == pytest.approx(float(np.mean((squashed - y) ** 2)))
    assert cal["brier"] < cal["before"]["brier"] and cal["ece"] < cal["before"]["ece"]
    assert "| before calibration |" in res.report_md and "| after calibration |" in res.report_md
    plain = evaluate(dataset, model_proba(dataset, "validation", 0.1), calibrated, include_baselines=False, plots=False)
    assert plain.metrics["calibration"]["before"] is None and plain.plots == {}


def test_with_repeats_adds_the_summary_to_metrics_and_report(result):
    from fraud_assets.evaluation import with_repeats
    from fraud_assets.repeats import scores_of, summarise

    _, res = result
    runs = [{"seed": s, "scores": scores_of(res.metrics)} for s in (0, 1)]
    out = with_repeats(res, summarise(runs))
    assert out.metrics["repeated"]["runs"] == 2 and out.metrics["repeated"]["model"]["f1"]["sd"] == 0.0
    assert "## Repeated evaluation (2 splits" in out.report_md and out.plots == res.plots
    assert res.metrics["repeated"] is None  # the original is left alone


def test_embedding_baseline_standardises_as_standard_scaler_does_in_chunks():
    from sklearn.preprocessing import StandardScaler

    from fraud_assets.evaluation import _standardised_embeddings

    rng = np.random.default_rng(0)
    frames = []
    for rows in (50, 20, 9):
        x = rng.normal(0.1, 0.05, size=(rows, 6)).astype(np.float32)
        x[:, 2] = 0.25  # constant: left unscaled
        x[:, 4] = rng.normal(0, 1e-32, size=rows)  # tiny but not constant: scaled, as StandardScaler does
        frames.append(pl.DataFrame({"embedding": pl.Series(x, dtype=pl.Array(pl.Float32, 6))}))
    scaler = StandardScaler().fit(frames[0]["embedding"].to_numpy().astype(np.float64))
    for chunk_rows in (7, 65536):
        for frame, got in zip(frames, _standardised_embeddings(frames, chunk_rows=chunk_rows)):
            expected = scaler.transform(frame["embedding"].to_numpy().astype(np.float64))
            assert got.dtype == np.float32 and got.shape == expected.shape
            np.testing.assert_allclose(got, expected, atol=1e-5)
