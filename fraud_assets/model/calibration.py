"""Stacking and calibration of the model's parts on the validation split.

The classifier has a linear part (a logistic regression over n-grams, fitted
first), a deep part (trained afterwards on top of it) and a dense part (a
logistic regression over the embedding, time and text statistics, fitted on
its own). Which parts to keep is decided here, on validation, among every
combination of the parts present that contains the linear part (without a
linear part, every combination: the deep part is a residual on top of the
linear logit, so beside a linear part it never stands alone), e.g.

- ``linear``:       ``a * z_linear + c``
- ``linear+dense``: ``a * z_linear + d * z_dense + c``
- ``fused``:        ``a * z_linear + b * z_deep + c``
- ``all``:          ``a * z_linear + b * z_deep + d * z_dense + c``

each a logistic regression on the parts' logits, i.e. Platt scaling; those
of several parts are stacked blends. Each candidate is scored by cross-fitted
log-loss (fitted on k-1 folds of validation, scored on the held-out fold), so
the comparison is not flattered by fitting and scoring on the same rows, and
the winner is refitted on the whole validation split. The shipped model is
therefore on validation at least as good (in held-out log-loss) as its linear part,
and its probabilities are calibrated: label smoothing and the balanced class
weights of training shift raw probabilities, which Platt scaling undoes.

Heavy imports (sklearn) happen inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

CANDIDATES: dict[str, tuple[str, ...]] = {
    "linear": ("linear",),
    "deep": ("deep",),
    "dense": ("dense",),
    "fused": ("linear", "deep"),
    "linear+dense": ("linear", "dense"),
    "dense+deep": ("dense", "deep"),
    "all": ("linear", "deep", "dense"),
}


@dataclass
class Blend:
    """Weights per part and a bias: ``logit = sum(weights[p] * z_p) + bias``."""

    weights: dict[str, float]
    bias: float
    chosen: str
    report: dict[str, Any] = field(default_factory=dict)


def expected_calibration_error(y_true: Any, proba: Any, bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of |mean predicted - observed rate| x share of rows."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(proba, dtype=np.float64).ravel()
    if y.size == 0:
        return 0.0
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    total = 0.0
    for b in np.unique(index):
        mask = index == b
        total += abs(p[mask].mean() - y[mask].mean()) * mask.sum()
    return float(total / y.size)


def _log_loss(y: np.ndarray, logits: np.ndarray) -> float:
    z = np.clip(logits, -30, 30)
    return float(np.mean(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y)))


def _platt(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    # Nearly unpenalised: a handful of coefficients on thousands of rows.
    return LogisticRegression(C=1e4, max_iter=1000).fit(x, y)


def _cross_fitted_loss(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> float:
    from sklearn.model_selection import StratifiedKFold

    held_out = np.zeros(len(y))
    for fit_rows, score_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        held_out[score_rows] = _platt(x[fit_rows], y[fit_rows]).decision_function(x[score_rows])
    return _log_loss(y, held_out)


def uncalibrated(parts: dict[str, Any], note: str) -> Blend:
    """The model without stacking or calibration: the linear part plus the deep part trained on top of it.

    The dense part is a logistic regression of its own, so adding its logit
    unweighted would count the same evidence twice; it gets weight 0 unless it
    is the only part there is. ``predict_proba(calibrated=False)`` is the same model.
    """
    alone = not ({"linear", "deep"} & parts.keys())
    weights = {p: 1.0 if p != "dense" or alone else 0.0 for p in parts}
    return Blend(weights, 0.0, "uncalibrated", {"note": note})


def fit_blend(parts: dict[str, np.ndarray], y_val: Any, *, folds: int = 5, seed: int = 0) -> Blend:
    """Choose and fit the blend of ``parts`` (validation logits per part) on validation.

    Candidates whose parts are not all present are skipped. With too few
    validation rows of a class to cross-fit, the model is left uncalibrated
    (:func:`uncalibrated`) and the report says so.
    """
    y = np.asarray(y_val).astype(np.int64).ravel()
    names = [c for c, needs in CANDIDATES.items() if all(p in parts for p in needs)]
    if "linear" in parts:
        names = [c for c in names if "linear" in CANDIDATES[c]]
    report: dict[str, Any] = {"raw_val_log_loss": _log_loss(y, sum(parts.values())), "candidates": {}}
    if min(np.bincount(y, minlength=2)) < folds:
        blend = uncalibrated(parts, f"too few validation rows per class to cross-fit {folds} folds")
        blend.report = {**report, **blend.report}
        return blend
    for name in names:
        x = np.column_stack([parts[p] for p in CANDIDATES[name]])
        report["candidates"][name] = _cross_fitted_loss(x, y, folds, seed)
    chosen = min(names, key=lambda n: (report["candidates"][n], len(CANDIDATES[n])))
    x = np.column_stack([parts[p] for p in CANDIDATES[chosen]])
    platt = _platt(x, y)
    weights = {p: 0.0 for p in parts}
    weights.update({p: float(w) for p, w in zip(CANDIDATES[chosen], platt.coef_.ravel())})
    return Blend(weights, float(platt.intercept_[0]), chosen, report)
