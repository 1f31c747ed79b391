"""The one threshold sweep: precision, recall and F1 at every distinct score.

Used by training (the epoch's validation F1 and early stopping,
:func:`best_f1_threshold`) and by evaluation (the operating threshold,
:func:`fraud_assets.evaluation.choose_threshold`), so both read the same
numbers. numpy only. Fraud (label 1) is the positive class.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def threshold_table(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate thresholds (distinct scores, descending) with precision, recall and F1.

    Candidate k predicts fraud for every score >= ``thresholds[k]``. Cuts fall
    only where the score changes, so equal scores land on the same side. F1 is
    computed from counts (``2 tp / (predicted + positives)``), so equal F1s
    are exactly equal and ties resolve the same way everywhere.
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(proba, dtype=np.float64).ravel()
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    last_of_run = np.r_[p_sorted[1:] != p_sorted[:-1], True] if p.size else np.zeros(0, bool)
    tp = np.cumsum(y_sorted)[last_of_run]
    predicted = (np.arange(p.size) + 1)[last_of_run]
    positives = int(y.sum())
    precision = tp / predicted
    recall = tp / positives if positives else np.zeros(tp.size)
    f1 = 2 * tp / (predicted + positives)
    return p_sorted[last_of_run], precision, recall, f1


def best_f1_threshold(y_true: Any, proba: Any) -> tuple[float, float, float, float]:
    """Threshold maximising F1: ``(threshold, f1, precision, recall)``.

    Predict fraud when ``proba >= threshold``. Ties go to the higher threshold
    (fewer false alarms). Returns F1 0 when there is no fraud.
    """
    y = np.asarray(y_true).astype(np.int64)
    if len(y) == 0 or int(y.sum()) == 0:
        return 1.0, 0.0, 0.0, 0.0
    thresholds, precision, recall, f1 = threshold_table(y, proba)
    i = int(np.argmax(f1))  # first max = highest threshold
    return float(thresholds[i]), float(f1[i]), float(precision[i]), float(recall[i])
