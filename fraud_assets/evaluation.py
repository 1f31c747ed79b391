"""Evaluation of the fraud classifier: threshold, metrics, baselines, plots, report.

Plain Python, no Dagster and no torch: the model's scores come in as
probability arrays, so the same code evaluates any model (and the baselines).
Heavy imports (sklearn, matplotlib) happen inside functions.

The protocol, identical for the model and every baseline:

1. fit on the ``train`` split (baselines here; the model elsewhere);
2. choose the decision threshold on ``validation`` (:func:`choose_threshold`);
3. score the ``test`` split once, at that threshold (:func:`binary_metrics`).

Fraud (label 1) is the positive class throughout.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from fraud_assets.text import inert
from fraud_assets.thresholds import threshold_table

THRESHOLD_STRATEGIES = ("max_f1", "precision", "recall")
BASELINE_DESCRIPTIONS = {
    "tfidf_logreg": "char 1-3-gram TF-IDF + logistic regression (balanced)",
    "embedding_logreg": "logistic regression on the sentence embedding alone (balanced)",
    "length_logreg": "logistic regression on log(text length) alone (balanced)",
}
PLOT_FILES = ("pr_curve.png", "confusion_matrix.png", "reliability.png", "training_curves.png")


# --------------------------------------------------------------------------- #
# threshold and metrics
# --------------------------------------------------------------------------- #
def _as_arrays(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(proba, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values, proba has {p.size}")
    return y, p


def choose_threshold(y_true: Any, proba: Any, *, strategy: str = "max_f1", target: float | None = None) -> float:
    """Decision threshold (predict fraud when ``proba >= threshold``) chosen on validation.

    Strategies:

    - ``"max_f1"`` (default): the threshold with the highest F1; among equal
      F1 the highest threshold (fewest alerts for the same quality).
    - ``"precision"``: the lowest threshold whose precision is >= ``target``,
      which is the best recall at that precision. If no threshold reaches the
      target, the one with the highest precision (lowest among ties).
    - ``"recall"``: the highest threshold whose recall is >= ``target`` (the
      fewest alerts that still catch that share of fraud).

    The threshold returned is halfway between the chosen validation score and
    the next lower distinct score: validation metrics are the same as at the
    score itself, but unseen scores close to the boundary are not decided by
    a hair. If validation holds a single class nothing can be chosen and the
    neutral 0.5 is returned.
    """
    if strategy not in THRESHOLD_STRATEGIES:
        raise ValueError(f"unknown threshold strategy {strategy!r}; use one of {THRESHOLD_STRATEGIES}")
    if strategy != "max_f1":
        if target is None or not 0.0 <= target <= 1.0:
            raise ValueError(f"strategy {strategy!r} needs a target between 0 and 1, got {target!r}")
    y, p = _as_arrays(y_true, proba)
    if y.size == 0 or np.unique(y).size < 2:
        return 0.5

    thresholds, precision, recall, f1 = threshold_table(y, p)
    # Candidates run from the highest threshold to the lowest; np.argmax
    # returns the first maximum, i.e. the highest threshold among ties.
    if strategy == "max_f1":
        k = int(np.argmax(f1))
    elif strategy == "precision":
        reaching = np.flatnonzero(precision >= target - 1e-12)
        k = int(reaching[-1]) if reaching.size else int(np.flatnonzero(precision == precision.max())[-1])
    else:
        k = int(np.flatnonzero(recall >= target - 1e-12)[0])
    if k + 1 < thresholds.size:
        return float((thresholds[k] + thresholds[k + 1]) / 2.0)
    return float(thresholds[k])


def binary_metrics(y_true: Any, proba: Any, threshold: float) -> dict[str, Any]:
    """Fraud-as-positive metrics at ``threshold`` plus threshold-free ones.

    Returns precision, recall, f1, accuracy (0 where undefined), pr_auc
    (average precision; None without any fraud), roc_auc (None with a single
    class), brier (mean squared error of the probability), confusion_matrix
    {tn, fp, fn, tp}, support {fraud, normal, total} and the threshold.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, p = _as_arrays(y_true, proba)
    pred = (p >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both_classes = np.unique(y).size == 2
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / y.size if y.size else 0.0,
        # clipped: sklearn's sum of recall steps can exceed 1 by an ulp on a perfect ranking (9 fraud rows)
        "pr_auc": min(1.0, float(average_precision_score(y, p))) if tp + fn else None,
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else None,
        "brier": float(np.mean((p - y) ** 2)) if y.size else None,
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "support": {"fraud": tp + fn, "normal": tn + fp, "total": int(y.size)},
        "threshold": float(threshold),
    }


def per_fraud_type_recall(fraud_type: Sequence[str | None], y_true: Any, pred: Any) -> dict[str, dict[str, Any]]:
    """Recall per fraud type over the fraud rows (missing type -> "unknown").

    Shows which scams the model misses, which one global recall hides.
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    pred = np.asarray(pred).astype(np.int64).ravel()
    types = np.array(["unknown" if t is None else str(t) for t in fraud_type], dtype=object)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(types[y == 1])):
        mask = (y == 1) & (types == name)
        out[name] = {"recall": float(pred[mask].mean()), "support": int(mask.sum())}
    return out


# --------------------------------------------------------------------------- #
# baselines
# --------------------------------------------------------------------------- #
def _split(dataset: pl.DataFrame, name: str) -> pl.DataFrame:
    return dataset.filter(pl.col("split") == name)


def _fit_predict(make_model, x_train, y_train: np.ndarray, x_eval: list) -> list[np.ndarray]:
    """Fit on train, return P(fraud) for each x in x_eval; constant prior if train has one class."""
    x_eval_sizes = [_n_rows(x) for x in x_eval]
    if np.unique(y_train).size < 2:
        prior = float(y_train.mean()) if y_train.size else 0.0
        return [np.full(n, prior) for n in x_eval_sizes]
    model = make_model().fit(x_train, y_train)
    return [model.predict_proba(x)[:, 1] if n else np.zeros(0) for x, n in zip(x_eval, x_eval_sizes)]


def _standardised_embeddings(frames: list[pl.DataFrame], chunk_rows: int = 65536) -> list[np.ndarray]:
    """The frames' embeddings as float32 matrices, standardised with the first frame's column mean and sd.

    What scikit-learn's StandardScaler does (population sd, a constant column
    left unscaled), without its float64 temporaries: on 700,000 train rows of
    384-d vectors its fit held several 2 GB float64 copies and made this
    baseline the peak of a 1M-row evaluation (10.7 GiB). Here the statistics
    are summed in float64 over chunks of ``chunk_rows`` rows (two passes: the
    mean, then squared deviations from it) and the matrices scaled in place.
    """
    matrices = [np.array(f.get_column("embedding").to_numpy(), dtype=np.float32).reshape(f.height, -1) for f in frames]
    train = matrices[0]
    n = max(train.shape[0], 1)
    chunks = [slice(start, start + chunk_rows) for start in range(0, train.shape[0], chunk_rows)]
    mean = sum((train[c].sum(axis=0, dtype=np.float64) for c in chunks), np.zeros(train.shape[1])) / n
    variance = sum((((train[c] - mean) ** 2).sum(axis=0) for c in chunks), np.zeros(train.shape[1])) / n
    scale = np.sqrt(variance)
    eps = np.finfo(np.float64).eps  # StandardScaler's constant-column rule (sklearn.preprocessing._is_constant_feature)
    scale[variance <= n * eps * variance + (n * mean * eps) ** 2] = 1.0
    for matrix in matrices:
        matrix -= mean.astype(np.float32)
        matrix /= scale.astype(np.float32)
    return matrices


def _n_rows(x) -> int:
    return x.shape[0] if hasattr(x, "shape") else len(x)


def baseline_scores(dataset: pl.DataFrame, *, c: float = 10.0, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Validation and test P(fraud) of the baselines, each fitted on the train split.

    - ``tfidf_logreg``: char 1-3-gram TF-IDF (sublinear tf) + logistic
      regression with balanced class weights. Character n-grams need no
      tokenizer and work for Chinese; this is the bar the model must clear.
    - ``embedding_logreg``: logistic regression on the embedding column alone
      (skipped when the dataset has none): what the frozen encoder gives
      without the model's extra features.
    - ``length_logreg``: logistic regression on log(1 + text length) alone.
      Fraud texts tend to be much longer than normal ones, so this shows how
      much of the task is solved by length.

    Returns ``{name: {"val": proba, "test": proba}}`` in dataset row order
    within each split.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train, val, test = (_split(dataset, s) for s in ("train", "validation", "test"))
    y_train = train.get_column("label").to_numpy().astype(np.int64)

    def logreg(**kw):
        return LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed, **kw)

    scores: dict[str, dict[str, np.ndarray]] = {}

    def add(name: str, make_model, x_of) -> None:
        v, t = _fit_predict(make_model, x_of(train), y_train, [x_of(val), x_of(test)])
        scores[name] = {"val": v, "test": t}

    add(
        "tfidf_logreg",
        lambda: make_pipeline(
            TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1),
            logreg(C=c, solver="liblinear"),
        ),
        lambda f: f.get_column("text").to_list(),
    )
    if "embedding" in dataset.columns:
        x_train, x_val, x_test = _standardised_embeddings([train, val, test])
        v, t = _fit_predict(lambda: logreg(C=1.0), x_train, y_train, [x_val, x_test])
        scores["embedding_logreg"] = {"val": v, "test": t}
    add(
        "length_logreg",
        lambda: logreg(C=1.0),
        lambda f: np.log1p(f.get_column("text").str.len_chars().to_numpy().astype(np.float64)).reshape(-1, 1),
    )
    return scores


# --------------------------------------------------------------------------- #
# plots (matplotlib, Agg, no pyplot global state)
# --------------------------------------------------------------------------- #
def _figure(width: float = 6.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # No timestamp metadata: the same evaluation gives the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _plot_pr_curves(y: np.ndarray, curves: dict[str, np.ndarray]) -> bytes:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = _figure()
    ax = fig.add_subplot()
    for name, proba in curves.items():
        if y.sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(y, proba)
        ap = average_precision_score(y, proba)
        is_model = name == "model"
        ax.step(
            recall,
            precision,
            where="post",
            label=f"{name} (AP={ap:.3f})",
            lw=2.2 if is_model else 1.2,
            zorder=3 if is_model else 2,
        )
    ax.set_xlabel("Recall (fraud)")
    ax.set_ylabel("Precision (fraud)")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall on the test split")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _plot_confusion(cm: dict[str, int], threshold: float) -> bytes:
    fig = _figure(4.5, 4.0)
    ax = fig.add_subplot()
    grid = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    ax.imshow(grid, cmap="Blues")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="black",
            fontsize=12,
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none"},
        )
    ax.set_xticks([0, 1], ["normal", "fraud"])
    ax.set_yticks([0, 1], ["normal", "fraud"])
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    ax.set_title(f"Confusion matrix (test, threshold {threshold:.3f})")
    fig.tight_layout()
    return _png(fig)


def _reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Per probability bin: mean predicted, observed fraud rate, count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            rows.append(
                {
                    "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                    "mean_predicted": float(p[mask].mean()),
                    "observed_fraud_rate": float(y[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return rows


def _plot_reliability(table: list[dict[str, Any]], brier: float | None, before: dict[str, Any] | None = None) -> bytes:
    fig = _figure(5.5, 6.0)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfectly calibrated")
    if before and before["reliability"]:
        ax.plot(
            [r["mean_predicted"] for r in before["reliability"]],
            [r["observed_fraud_rate"] for r in before["reliability"]],
            marker="x",
            ls=":",
            color="tab:orange",
            label=f"before calibration (Brier {before['brier']:.4f})",
        )
    if table:
        ax.plot(
            [r["mean_predicted"] for r in table],
            [r["observed_fraud_rate"] for r in table],
            marker="o",
            label="model (calibrated)" if before else "model",
        )
        # Rows per bin: a point resting on 2 rows says little, one on 1,000 a lot.
        hist.bar([r["mean_predicted"] for r in table], [r["count"] for r in table], width=0.06, color="tab:blue")
        hist.set_yscale("log")
    hist.set_xlabel("Mean predicted P(fraud)")
    hist.set_ylabel("Rows")
    hist.grid(alpha=0.3)
    ax.set_ylabel("Observed fraud rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    brier_text = f"{brier:.4f}" if brier is not None else "n/a"
    ax.set_title(f"Reliability on the test split (Brier {brier_text})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _plot_training_curves(history: list[dict[str, Any]]) -> bytes:
    from matplotlib.ticker import MaxNLocator

    fig = _figure(10.0, 4.0)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]

    def series(key: str) -> list[float] | None:
        values = [h.get(key) for h in history]
        if all(v is None for v in values):
            return None
        return [float("nan") if v is None else float(v) for v in values]

    for position, keys, title in (
        (1, ("train_loss", "val_loss"), "Loss"),
        (2, ("val_f1", "val_precision", "val_recall", "train_accuracy", "val_accuracy"), "Metrics per epoch"),
    ):
        ax = fig.add_subplot(1, 2, position)
        for key in keys:
            values = series(key)
            if values is not None:
                ax.plot(epochs, values, marker=".", label=key)
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------- #
# evaluate and report
# --------------------------------------------------------------------------- #
@dataclass
class EvaluationResult:
    """What :func:`evaluate` produces; :func:`write_report` puts it on disk."""

    metrics: dict[str, Any]
    report_md: str
    plots: dict[str, bytes] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    """Plain Python for json.dumps: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate(
    dataset: pl.DataFrame,
    val_proba: Any,
    test_proba: Any,
    *,
    history: list[dict[str, Any]] | None = None,
    strategy: str = "max_f1",
    target: float | None = None,
    include_baselines: bool = True,
    raw_test_proba: Any = None,
    plots: bool = True,
) -> EvaluationResult:
    """Score the model on the test split and compare it with the baselines.

    Args:
        dataset: the training_dataset frame (label, text, split, fraud_type, embedding).
        val_proba, test_proba: the model's P(fraud) for the validation and
            test rows, in the order those rows appear in ``dataset``.
        history: the model's per-epoch log; drawn as training_curves.png when given.
        strategy, target: how the threshold is chosen on validation (see
            :func:`choose_threshold`); the baselines get the same rule.
        include_baselines: fit the baselines (a few seconds on 10k texts).
        raw_test_proba: the model's test probabilities before its
            post-hoc calibration (optional): the report then gives Brier and
            ECE before and after, and the reliability plot shows both.
        plots: draw the PNGs (repeated evaluations skip them).

    Returns an :class:`EvaluationResult`: metrics.json content, markdown report, PNG plots.
    """
    val, test = _split(dataset, "validation"), _split(dataset, "test")
    val_p, test_p = _checked_probabilities(val_proba, test_proba, val.height, test.height)
    y_val = val.get_column("label").to_numpy().astype(np.int64)
    y_test = test.get_column("label").to_numpy().astype(np.int64)

    threshold = choose_threshold(y_val, val_p, strategy=strategy, target=target)
    model = binary_metrics(y_test, test_p, threshold)
    baselines = _baselines(dataset, y_val, y_test, strategy, target) if include_baselines else {}
    reliability = _reliability_table(y_test, test_p)
    calibration = _calibration_section(y_test, test_p, reliability, raw_test_proba)
    metrics = _metrics_document(
        dataset,
        test,
        y_test,
        (test_p >= threshold).astype(np.int64),
        model=model,
        model_validation=binary_metrics(y_val, val_p, threshold),
        baselines=baselines,
        calibration=calibration,
        strategy=strategy,
        target=target,
        history=history,
    )
    figures = {}
    if plots:
        curves = {"model": test_p, **{name: b["test_scores"] for name, b in baselines.items()}}
        figures = _figures(y_test, curves, model, threshold, reliability, calibration, history)
    return EvaluationResult(
        metrics=metrics, report_md=_report_markdown(metrics, [f for f in PLOT_FILES if f in figures]), plots=figures
    )


def _checked_probabilities(val_proba: Any, test_proba: Any, n_val: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    val_p = np.asarray(val_proba, dtype=np.float64).ravel()
    test_p = np.asarray(test_proba, dtype=np.float64).ravel()
    if val_p.size != n_val or test_p.size != n_test:
        raise ValueError(
            f"got {val_p.size} validation and {test_p.size} test probabilities for {n_val} validation and {n_test} test rows"
        )
    return val_p, test_p


def _baselines(dataset: pl.DataFrame, y_val: np.ndarray, y_test: np.ndarray, strategy: str, target: float | None) -> dict:
    """Each baseline's test metrics at its own validation-chosen threshold (same rule as the model).

    ``test_scores`` rides along for the PR curves and is dropped from the metrics document.
    """
    baselines: dict[str, dict[str, Any]] = {}
    for name, scores in baseline_scores(dataset).items():
        t = choose_threshold(y_val, scores["val"], strategy=strategy, target=target)
        baselines[name] = {
            **binary_metrics(y_test, scores["test"], t),
            "description": BASELINE_DESCRIPTIONS[name],
            "test_scores": scores["test"],
        }
    return baselines


def _class_balance(dataset: pl.DataFrame) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """Rows per split, and fraud / normal counts and fraud share per split."""
    counts, balance = {}, {}
    for name in ("train", "validation", "test"):
        labels = _split(dataset, name).get_column("label")
        fraud = int(labels.sum() or 0)
        counts[name] = labels.len()
        balance[name] = {
            "fraud": fraud,
            "normal": labels.len() - fraud,
            "fraud_share": fraud / labels.len() if labels.len() else None,
        }
    return counts, balance


def _metrics_document(
    dataset, test, y_test, test_pred, *, model, model_validation, baselines, calibration, strategy, target, history
) -> dict:
    """The metrics.json content (JSON-safe)."""
    from sklearn.metrics import classification_report

    baselines = {name: {k: v for k, v in b.items() if k != "test_scores"} for name, b in baselines.items()}
    counts, class_balance = _class_balance(dataset)
    fraud_types = test.get_column("fraud_type").to_list() if "fraud_type" in test.columns else [None] * test.height
    tfidf, length = baselines.get("tfidf_logreg"), baselines.get("length_logreg")
    return _jsonable(
        {
            "model": model,
            "model_validation": model_validation,
            "baselines": baselines,
            "counts": counts,
            "class_balance": class_balance,
            "per_fraud_type_recall": per_fraud_type_recall(fraud_types, y_test, test_pred),
            "classification_report": classification_report(
                y_test, test_pred, labels=[0, 1], target_names=["normal", "fraud"], output_dict=True, zero_division=0
            ),
            "threshold_strategy": strategy,
            "threshold_target": target,
            "threshold_chosen_on": "validation",
            "calibration": calibration,
            "repeated": None,
            "beats_tfidf_baseline": None if tfidf is None else bool(model["f1"] >= tfidf["f1"]),
            "length_only": None
            if length is None
            else {
                "f1": length["f1"],
                "pr_auc": length["pr_auc"],
                "note": "logistic regression on log(text length) alone, same split and threshold rule",
            },
            "epochs_trained": len(history) if history else None,
        }
    )


def _figures(y_test, curves, model, threshold, reliability, calibration, history) -> dict[str, bytes]:
    figures = {
        "pr_curve.png": _plot_pr_curves(y_test, curves),
        "confusion_matrix.png": _plot_confusion(model["confusion_matrix"], threshold),
        "reliability.png": _plot_reliability(reliability, model["brier"], calibration["before"]),
    }
    if history:
        figures["training_curves.png"] = _plot_training_curves(history)
    return figures


def with_repeats(result: EvaluationResult, summary: dict[str, Any]) -> EvaluationResult:
    """The same result with a repeated-evaluation summary (:func:`fraud_assets.repeats.summarise`) added."""
    metrics = {**result.metrics, "repeated": _jsonable(summary)}
    plot_files = [f for f in PLOT_FILES if f in result.plots]
    return EvaluationResult(metrics=metrics, report_md=_report_markdown(metrics, plot_files), plots=result.plots)


def _calibration_section(y: np.ndarray, p: np.ndarray, reliability: list, raw_test_proba: Any) -> dict[str, Any]:
    """Brier, ECE and reliability on test; the same ``before`` calibration when raw scores are given."""
    from fraud_assets.model.calibration import expected_calibration_error

    section: dict[str, Any] = {
        "brier": float(np.mean((p - y) ** 2)) if y.size else None,
        "ece": expected_calibration_error(y, p),
        "reliability": reliability,
        "before": None,
    }
    if raw_test_proba is not None:
        raw = np.asarray(raw_test_proba, dtype=np.float64).ravel()
        section["before"] = {
            "brier": float(np.mean((raw - y) ** 2)) if y.size else None,
            "ece": expected_calibration_error(y, raw),
            "reliability": _reliability_table(y, raw),
        }
    return section


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _report_markdown(metrics: dict[str, Any], plot_files: list[str]) -> str:
    lines = ["# Fraud classifier evaluation", ""]
    for section in (_md_headline, _md_threshold_and_data, _md_confusion_and_report, _md_per_type, _md_calibration, _md_extras):
        lines += section(metrics)
    lines += _md_plots(plot_files)
    lines.append("")
    return "\n".join(lines)


def _md_headline(metrics: dict[str, Any]) -> list[str]:
    model, baselines = metrics["model"], metrics["baselines"]
    lines = []
    tfidf = baselines.get("tfidf_logreg")
    if tfidf is not None and model["f1"] < tfidf["f1"]:
        lines += [
            f"> **Warning:** the model (F1 {_fmt(model['f1'])}) is below the TF-IDF baseline "
            f"(F1 {_fmt(tfidf['f1'])}) on the same test split.",
            "",
        ]
    lines += [
        "## Headline (test split)",
        "",
        "| | F1 | precision | recall | PR-AUC | ROC-AUC | threshold |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in [("**model**", model), *baselines.items()]:
        lines.append(
            f"| {name} | {_fmt(m['f1'])} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | "
            f"{_fmt(m['pr_auc'])} | {_fmt(m['roc_auc'])} | {_fmt(m['threshold'], 3)} |"
        )
    lines.append("")
    for name, m in baselines.items():
        lines.append(f"- `{name}`: {m.get('description', '')}")
    if tfidf is not None:
        lines.append("- The TF-IDF baseline is the bar to clear: a model that cannot beat it is not worth its cost.")
    lines.append("")
    return lines


def _md_threshold_and_data(metrics: dict[str, Any]) -> list[str]:
    strategy = metrics["threshold_strategy"]
    rule = {
        "max_f1": "the threshold with the highest F1",
        "precision": f"the lowest threshold with precision >= {metrics['threshold_target']} (best recall there)",
        "recall": f"the highest threshold with recall >= {metrics['threshold_target']}",
    }.get(strategy, strategy)
    lines = [
        "## Threshold",
        "",
        f"Fraud is predicted when P(fraud) >= **{_fmt(metrics['model']['threshold'])}**, chosen on the validation split as "
        f"{rule} (strategy `{strategy}`). Each baseline's threshold is chosen the same way on the same validation "
        f"split. Validation F1 at this threshold: {_fmt(metrics['model_validation']['f1'])}.",
        "",
        "## Data",
        "",
        "| split | rows | fraud | normal | fraud share |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, rows in metrics["counts"].items():
        cb = metrics["class_balance"][name]
        lines.append(f"| {name} | {rows} | {cb['fraud']} | {cb['normal']} | {_fmt(cb['fraud_share'], 3)} |")
    return lines


def _md_confusion_and_report(metrics: dict[str, Any]) -> list[str]:
    cm = metrics["model"]["confusion_matrix"]
    lines = [
        "",
        "## Confusion matrix (test)",
        "",
        "| actual \\ predicted | normal | fraud |",
        "| --- | --- | --- |",
        f"| normal | {cm['tn']} | {cm['fp']} |",
        f"| fraud | {cm['fn']} | {cm['tp']} |",
        "",
        "## Classification report (test)",
        "",
        "| class | precision | recall | f1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in metrics["classification_report"].items():
        if isinstance(row, dict):
            lines.append(
                f"| {name} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | {_fmt(row['f1-score'])} | "
                f"{_fmt(row['support'], 0)} |"
            )
        else:
            lines.append(f"| {name} | | | {_fmt(row)} | |")
    return lines


def _md_per_type(metrics: dict[str, Any]) -> list[str]:
    lines = ["", "## Recall per fraud type (test)", ""]
    per_type = metrics["per_fraud_type_recall"]
    if per_type:
        lines += ["| fraud type | recall | support |", "| --- | --- | --- |"]
        lines += [
            f"| {inert(name)} | {_fmt(v['recall'])} | {v['support']} |" for name, v in per_type.items()
        ]  # names come from input
    else:
        lines.append("No fraud rows in the test split.")
    return lines


def _md_calibration(metrics: dict[str, Any]) -> list[str]:
    calibration = metrics["calibration"]
    lines = [
        "",
        "## Calibration",
        "",
        f"Brier score {_fmt(metrics['model']['brier'])}, ECE {_fmt(calibration['ece'])} (0 is perfect; always predicting the "
        f"test fraud share would score Brier {_fmt(_prior_brier(metrics))}).",
        "",
    ]
    before = calibration.get("before")
    if before is not None:
        lines += [
            "Probabilities are calibrated on the validation split (Platt scaling of the stacked parts), because "
            "label smoothing and class weighting in training distort them. On the test split:",
            "",
            "| | Brier | ECE |",
            "| --- | --- | --- |",
            f"| before calibration | {_fmt(before['brier'])} | {_fmt(before['ece'])} |",
            f"| after calibration | {_fmt(calibration['brier'])} | {_fmt(calibration['ece'])} |",
            "",
        ]
    if calibration["reliability"]:
        lines += ["| P(fraud) bin | mean predicted | observed fraud rate | rows |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {r['bin']} | {_fmt(r['mean_predicted'], 3)} | {_fmt(r['observed_fraud_rate'], 3)} | {r['count']} |"
            for r in calibration["reliability"]
        ]
    return lines


def _md_extras(metrics: dict[str, Any]) -> list[str]:
    """Repeated evaluation and the length-only line, when present."""
    lines = []
    if metrics.get("repeated"):
        from fraud_assets.repeats import summary_markdown

        lines += ["", summary_markdown(metrics["repeated"])]
    length = metrics.get("length_only")
    if length is not None:
        lines += [
            "",
            "## Text length alone",
            "",
            f"A logistic regression on log(text length) alone reaches F1 {_fmt(length['f1'])} "
            f"(PR-AUC {_fmt(length['pr_auc'])}) on the same test split. Fraud texts are often much longer than "
            "normal ones, so part of any model's score comes from length; the gap between this line and the "
            "model is what the content adds.",
        ]
    return lines


def _md_plots(plot_files: list[str]) -> list[str]:
    if not plot_files:
        return []
    titles = {
        "pr_curve.png": "Precision-recall curves",
        "confusion_matrix.png": "Confusion matrix",
        "reliability.png": "Reliability diagram",
        "training_curves.png": "Training curves",
    }
    return ["", "## Plots", "", *(f"![{titles.get(f, f)}]({f})" for f in plot_files)]


def _prior_brier(metrics: dict[str, Any]) -> float | None:
    share = metrics["class_balance"]["test"]["fraud_share"]
    return None if share is None else share * (1 - share)


def write_report(result: EvaluationResult, out_dir: Path, storage) -> None:
    """Write metrics.json, report.md and the PNGs into ``out_dir``, each atomically.

    The plots go first and metrics.json last, so a reader that polls for
    metrics.json finds the rest of the report already in place.
    """
    for stale in set(PLOT_FILES) - set(result.plots):
        # A plot this run did not draw (e.g. no history) must not linger from an older run.
        storage.remove(out_dir / stale)
    for name, data in result.plots.items():
        storage.write_bytes(data, out_dir / name)
    storage.write_text(result.report_md, out_dir / "report.md")
    storage.write_json(result.metrics, out_dir / "metrics.json")
