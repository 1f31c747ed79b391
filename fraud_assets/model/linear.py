"""The wide (linear) part of the classifier, fitted to convergence before anything else.

Why: trained jointly with the deep part by mini-batch Adam and early-stopped
on validation F1, the linear term over n-grams never got close to the
logistic-regression optimum (the deep table learns faster and over-fits by
epoch 2), so the fused model scored below a plain TF-IDF + logistic
regression. Here the linear part *is* a logistic regression: L2-penalised,
fitted to convergence on the train split, with its
strength C chosen on validation (log-loss), exactly what a careful baseline
would do (liblinear, the baseline's own solver).

Two views of the same hashed features are fitted and averaged (their logits,
which is the same as averaging their weight vectors, so the result is still
one vector over the buckets):

- ``plain``: TF-IDF features;
- ``nb``: TF-IDF scaled by the naive-Bayes log-count ratio of each bucket
  (Wang & Manning 2012, "NBSVM"), which up-weights features that separate
  the classes. Averaging the two was the most stable choice across splits.

Heavy imports (scipy, sklearn) happen inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Candidate L2 strengths (sklearn's C, inverse regularisation), chosen on validation.
DEFAULT_CS: tuple[float, ...] = tuple(2.0**k for k in range(-4, 11))  # 1/16 ... 1024
#: Above this many train rows, C is chosen on a sample of this size and only the final fit sees them all.
DEFAULT_SELECT_ROWS = 100_000
VIEWS: tuple[str, ...] = ("plain", "nb")


@dataclass
class WideFit:
    """One weight vector over the hashed buckets plus bias, and how it was chosen."""

    weight: np.ndarray  # float32 [buckets]
    bias: float
    report: dict[str, Any] = field(default_factory=dict)
    #: With a refit (``refit_folds``): the weights fitted on train alone, which the deep part is trained
    #: on top of, and the validation logits of the refitted model's out-of-fold twins, for the blend.
    train_only: tuple[np.ndarray, float] | None = None
    val_logits: np.ndarray | None = None


def nb_ratio(x_train, y_train: np.ndarray, alpha: float = 1.0, chunk_rows: int = 65536) -> np.ndarray:
    """Naive-Bayes log-count ratio per column: log(p/|p|) - log(q/|q|), smoothed by ``alpha``.

    Counted on binarised features (in how many texts of each class a bucket
    occurs), as in NBSVM: measured on chnsenticorp_htl (3 splits), the NB
    view alone gained +0.8 F1 points over the TF-IDF baseline on the
    project's hashed features and +1.8 with scikit-learn's vocabulary, where
    ratios of summed TF-IDF values had gained +0.2.
    """
    y = np.asarray(y_train).astype(bool)
    width, indptr = x_train.shape[1], x_train.indptr
    p, q = np.full(width, alpha), np.full(width, alpha)
    for start in range(0, len(y), chunk_rows):  # counted from the CSR arrays, a block of rows at a time
        end = min(start + chunk_rows, len(y))
        lo, hi = indptr[start], indptr[end]
        present = x_train.data[lo:hi] != 0
        ids = x_train.indices[lo:hi][present]
        fraud = np.repeat(y[start:end], np.diff(indptr[start : end + 1]))[present]
        p += np.bincount(ids[fraud], minlength=width)
        q += np.bincount(ids[~fraud], minlength=width)
    return np.log(p / p.sum()) - np.log(q / q.sum())


def _balanced_log_loss(y: np.ndarray, logits: np.ndarray) -> float:
    """Log-loss with each class weighted to half the total, matching the balanced training objective."""
    z = np.clip(logits, -30, 30)
    loss = np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y)
    w = np.where(y == 1, 0.5 / max(1, y.sum()), 0.5 / max(1, (1 - y).sum()))
    return float((loss * w).sum())


def _logreg(c: float, seed: int, solver: str):
    """The estimator every fit here uses: the baseline's, balanced, fitted to convergence."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", solver=solver, random_state=seed, max_iter=1000)


def fit_logreg(
    x_train, y_train, x_val, y_val, cs=DEFAULT_CS, seed: int = 0, solver: str = "liblinear", start_c: float = 1.0
) -> tuple[np.ndarray, float, dict]:
    """L2 logistic regression (balanced classes) with C chosen by validation log-loss.

    Exactly scikit-learn's ``LogisticRegression(C, class_weight="balanced",
    solver="liblinear")``, the baseline's estimator, fitted to liblinear's
    convergence for each C tried. The walk starts at the C of the grid nearest
    ``start_c`` (1 unless a near C is known), goes up while validation loss improves and, when going up did not
    help, down; in each direction it stops once the loss has risen for two Cs
    in a row past its best (the loss is unimodal in C in practice). So only
    the neighbourhood of the optimum is paid for, whether the data wants
    strong regularisation (hard, noisy text) or almost none (easy sets such
    as Telecom, whose optimum lies near the top of the grid).
    Returns ``(coef, intercept, {"C", "val_log_loss", "path"})``, the path sorted by C.
    """
    grid, y_val, fitted = sorted(cs), np.asarray(y_val), {}

    def fit(i: int) -> float:
        model = _logreg(grid[i], seed, solver)
        model.fit(x_train, np.asarray(y_train))
        loss = _balanced_log_loss(y_val, model.decision_function(x_val))
        fitted[i] = (loss, model.coef_.ravel().copy(), float(model.intercept_[0]), int(model.n_iter_.max()))
        return loss

    start = int(np.argmin([abs(np.log(c / start_c)) for c in grid]))
    fit(start)
    for step in (1, -1):
        best, rises, i = fitted[start][0], 0, start + step
        while 0 <= i < len(grid) and rises < 2:
            loss = fit(i)
            rises = 0 if loss < best else rises + 1
            best, i = min(best, loss), i + step
        if step == 1 and min(fitted, key=lambda i: (fitted[i][0], i)) > start:
            break  # going up found a better C: no need to look below
    i_best = min(fitted, key=lambda i: (fitted[i][0], i))
    loss, coef, intercept, _ = fitted[i_best]
    path = [{"C": grid[i], "val_log_loss": fitted[i][0], "iterations": fitted[i][3]} for i in sorted(fitted)]
    return coef, intercept, {"C": grid[i_best], "val_log_loss": loss, "path": path}


def _columns(x, used: np.ndarray, every_entry: bool):
    """``x[:, used]`` as a float64 CSR (what liblinear is given in any case). When every entry of
    ``x`` lies in a ``used`` column, its indices are renumbered instead of sliced: one copy less
    of the largest matrix of training."""
    import scipy.sparse as sp

    if not every_entry:
        return x[:, used].astype(np.float64)
    remap = np.zeros(x.shape[1], np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return sp.csr_matrix((x.data.astype(np.float64), remap[x.indices], x.indptr), shape=(x.shape[0], len(used)))


def _scaled(x, scale: np.ndarray, in_place: bool = False, chunk: int = 1 << 24):
    """``x @ diag(scale)`` for a float64 CSR: a copy of its values, or ``x`` itself rescaled."""
    import scipy.sparse as sp

    data = x.data if in_place else np.empty_like(x.data)
    for start in range(0, len(data), chunk):
        end = start + chunk
        np.multiply(x.data[start:end], scale[x.indices[start:end]], out=data[start:end])
    return x if in_place else sp.csr_matrix((data, x.indices, x.indptr), shape=x.shape)


def fit_wide(
    x_train,
    y_train: np.ndarray,
    x_val,
    y_val: np.ndarray,
    *,
    views=VIEWS,
    cs=DEFAULT_CS,
    seed: int = 0,
    select_rows: int | None = DEFAULT_SELECT_ROWS,
) -> WideFit:
    """Fit each view to convergence and average them into one weight vector.

    ``x_*`` are scipy CSR TF-IDF matrices over the hashed buckets. The NB
    view's per-bucket scale is folded into its weights, so at scoring time
    the model only needs the TF-IDF features and one vector. With more than
    ``select_rows`` train rows, C is chosen on a seeded sample of that many
    (see :func:`fit_view`).
    """
    return fit_prepared(prepare(x_train, x_val), y_train, y_val, views=views, cs=cs, seed=seed, select_rows=select_rows)


@dataclass
class Prepared:
    """What liblinear is given: float64 copies restricted to the buckets seen in training."""

    x_train: Any
    x_val: Any
    used: np.ndarray
    width: int


def prepare(x_train, x_val, *, with_val_columns: bool = False) -> Prepared:
    """The working copies :func:`fit_prepared` needs; after this the caller may set its own matrices
    aside (training spills them to disk: liblinear adds its own copy, 16 bytes per entry).
    ``with_val_columns``: keep the buckets seen only in validation too, for a refit to weigh them."""
    # Only buckets seen in training (and a refit's validation) can get a weight; fitting over those
    # alone (a few hundred thousand instead of millions) makes every solver iteration cheaper.
    used = np.union1d(x_train.indices, x_val.indices) if with_val_columns else np.unique(x_train.indices)
    return Prepared(
        _columns(x_train, used, every_entry=True),
        _columns(x_val, used, every_entry=with_val_columns),
        used,
        x_train.shape[1],
    )


def sample_rows(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``size`` rows, stratified by label.

    Why not a uniform sample: fits on a sample choose C and the crosses, and a
    uniform draw of 10,000 rows from data with fraud rarer than 1 in 10,000 can
    hold no fraud at all, where the fit would fail. Each class keeps its share
    (rounded) and at least one row; the largest class takes what is left, so
    the sample has exactly ``size`` rows. ``size`` at or above the row count
    gives every row.
    """
    y = np.asarray(y)
    if size >= len(y):
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    takes = np.minimum(counts, np.maximum(1, np.round(counts * size / len(y)).astype(np.int64)))
    largest = int(np.argmax(counts))
    takes[largest] = size - (takes.sum() - takes[largest])
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c, k in zip(classes, takes)]))


def fit_view(x_train, y_train, x_val, y_val, cs=DEFAULT_CS, seed: int = 0, select_rows: int | None = None, start_c: float = 1.0):
    """:func:`fit_logreg`, with C chosen on at most ``select_rows`` train rows.

    Why: the C walk fits four to ten models, each costing time linear in the
    rows or worse (measured on synthetic messages: 10 s a fit at 100,000 rows,
    a walk still unfinished after 45 minutes at 700,000). On larger data the walk runs on a
    seeded sample of ``select_rows`` rows (stratified, :func:`sample_rows`) and one model is then
    fitted on all of them at the chosen C. sklearn's C multiplies a sum
    over rows, so the same C on more rows already means relatively less
    regularisation, the usual direction as data grows. Smaller data, every
    shared set included, is fitted exactly as before.
    """
    n = x_train.shape[0]
    if select_rows is None or n <= select_rows:
        return fit_logreg(x_train, y_train, x_val, y_val, cs, seed, start_c=start_c)
    rows = sample_rows(y_train, select_rows, seed)
    _, _, walk = fit_logreg(x_train[rows], np.asarray(y_train)[rows], x_val, y_val, cs, seed, start_c=start_c)
    coef, intercept, final = fit_logreg(x_train, y_train, x_val, y_val, (walk["C"],), seed)
    return coef, intercept, {**final, "selected_on_rows": select_rows, "selection_path": walk["path"]}


def _fit_at(x, y, c: float, seed: int, solver: str, nb: bool) -> tuple[np.ndarray, float]:
    """One logistic regression at strength ``c`` (NB-scaled when ``nb``, the scale counted on ``x``
    itself); the weights returned apply to the unscaled features."""
    scale = nb_ratio(x, y) if nb else None
    model = _logreg(c, seed, solver)
    model.fit(x if scale is None else _scaled(x, scale), y)
    coef = model.coef_.ravel()
    return (coef if scale is None else coef * scale), float(model.intercept_[0])


def refit(x_train, y_train, x_val, y_val, c: float, *, folds: int, seed: int = 0, solver: str = "liblinear", nb: bool = False):
    """Refit at the chosen strength on train and validation together; out-of-fold validation logits.

    Why: C is chosen on validation, after which its rows are one more sample
    of the data; leaving them out of the shipped model wastes a sixth of the
    labels. Refitted so, the shipped model's PR-AUC and test log-loss rose on
    every split of the Chinese proxies measured, its F1 on most (README, "Ablations").
    The blend that stacks the parts must still see held-out logits (stacked on
    in-sample logits it lost about 3 points), so validation is cut into ``folds`` folds and
    each fold is scored by a model fitted on train plus the other folds, at
    the same C: one as large as the shipped model, less a fold.
    Returns ``(coef, intercept, val_logits)``.
    """
    x_all, y_all = _stacked(x_train, y_train, x_val, y_val)
    return _refit_stacked(x_all, y_all, x_train.shape[0], c, folds=folds, seed=seed, solver=solver, nb=nb)


def _stacked(x_train, y_train, x_val, y_val):
    """Train rows then validation rows, as one float64 matrix (CSR when sparse) and one label vector."""
    import scipy.sparse as sp

    x_all = sp.vstack([x_train, x_val], format="csr") if sp.issparse(x_train) else np.vstack([x_train, x_val])
    return x_all.astype(np.float64, copy=False), np.concatenate([np.asarray(y_train), np.asarray(y_val)])


def _refit_stacked(x_all, y_all, n_train: int, c: float, *, folds: int, seed: int, solver: str, nb: bool):
    """:func:`refit` on :func:`_stacked` rows (the first ``n_train`` are train)."""
    val_logits = np.zeros(len(y_all) - n_train)
    for held in _folds(y_all[n_train:], folds, seed):
        keep = np.ones(len(y_all), bool)
        keep[n_train + held] = False
        coef, intercept = _fit_at(x_all[keep], y_all[keep], c, seed, solver, nb)
        val_logits[held] = x_all[n_train + held] @ coef + intercept
    coef, intercept = _fit_at(x_all, y_all, c, seed, solver, nb)
    return coef, intercept, val_logits


def _folds(y: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Stratified, seeded folds of ``y``'s positions."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros(len(y)), y)]


def fit_prepared(
    prepared: Prepared,
    y_train: np.ndarray,
    y_val: np.ndarray,
    *,
    views=VIEWS,
    cs=DEFAULT_CS,
    seed: int = 0,
    select_rows: int | None = DEFAULT_SELECT_ROWS,
    refit_folds: int = 0,
    chosen_c: dict[str, float] | None = None,
) -> WideFit:
    """:func:`fit_wide` on :func:`prepare`'s copies (rescaled in place by the last view: used up).

    With ``refit_folds`` the shipped weights are each view's :func:`refit` on
    train and validation at its chosen C, and ``train_only`` keeps those fitted
    on train alone. ``chosen_c``: views whose C a walk on these same rows and
    features has already chosen (training's crosses decision); they are fitted
    once at it instead of walking again.
    """
    y_train = np.asarray(y_train).astype(np.int64)
    y_val = np.asarray(y_val).astype(np.int64)
    x_train, x_val, used, full_width = prepared.x_train, prepared.x_val, prepared.used, prepared.width
    prepared.x_train = None  # the last view rescales it in place: nothing else may use it afterwards
    prepared.x_val = None  # likewise
    weight, val_logits = np.zeros(len(used), np.float64), np.zeros(x_val.shape[0], np.float64)
    bias, report = 0.0, dict[str, Any]()
    for i, view in enumerate(views):
        scale = nb_ratio(x_train, y_train) if view == "nb" else None
        # the last view may scale the matrices in place (at a million rows: 2.2 GB), unless a refit needs them
        last = i == len(views) - 1 and not refit_folds
        xt, xv = (x_train, x_val) if scale is None else (_scaled(x_train, scale, last), _scaled(x_val, scale, last))
        # Each view walks its own C path: the NB view's scaled features want a different strength.
        known = (chosen_c or {}).get(view)
        # the NB view's walk starts near its usual C, half the plain view's (measured on both Chinese
        # proxies): on easy data, where both climb to C = 1024, that saves most of its fits
        start = report["plain"]["C"] / 2 if view == "nb" and "plain" in report else 1.0
        grid, sample = (cs, select_rows) if known is None else ((known,), None)  # a known C: one fit on every row
        coef, intercept, info = fit_view(xt, y_train, xv, y_val, grid, seed, sample, start)
        if known is not None:
            info["C_chosen_before"] = True
        val_logits += xv @ coef + intercept
        del xt, xv
        weight += coef if scale is None else coef * scale
        bias += intercept
        report[view] = info
    k = len(views)
    report["val_log_loss"] = _balanced_log_loss(y_val, val_logits / k)
    report["buckets_used"] = int(len(used))
    full = np.zeros(full_width, np.float32)
    full[used] = weight / k
    if not refit_folds:
        return WideFit(full, bias / k, report)
    refitted, refit_bias, oof = _refit_views(x_train, y_train, x_val, y_val, views, report, refit_folds, seed)
    report["refit"] = {"folds": refit_folds, "val_log_loss_out_of_fold": _balanced_log_loss(y_val, oof)}
    shipped = np.zeros(full_width, np.float32)
    shipped[used] = refitted
    return WideFit(shipped, refit_bias, report, train_only=(full, bias / k), val_logits=oof)


def _refit_views(x_train, y_train, x_val, y_val, views, report: dict, folds: int, seed: int):
    """Each view's :func:`refit` at its chosen C, averaged as the views are: (weight, bias, val logits)."""
    weight, bias, val_logits = np.zeros(x_train.shape[1]), 0.0, np.zeros(x_val.shape[0])
    x_all, y_all = _stacked(x_train, y_train, x_val, y_val)  # once for every view
    for view in views:
        coef, intercept, logits = _refit_stacked(
            x_all, y_all, x_train.shape[0], report[view]["C"], folds=folds, seed=seed, solver="liblinear", nb=view == "nb"
        )
        weight, bias, val_logits = weight + coef, bias + intercept, val_logits + logits
    k = len(views)
    return weight / k, bias / k, val_logits / k


def fit_dense(
    x_train: np.ndarray,
    y_train,
    x_val: np.ndarray,
    y_val,
    cs=DEFAULT_CS,
    seed: int = 0,
    max_rows: int | None = None,
    refit_folds: int = 0,
):
    """The dense part: :func:`fit_logreg` over standardised dense features (embedding, time, text statistics).

    Why a part of its own: as the deep part's input, trained on top of the
    fitted linear logit, a multilingual embedding added nothing on the Chinese
    proxies (on its own train rows the linear part is nearly always right, so
    the residual has little to learn), while a logistic regression on the
    embedding fitted on its own and stacked with the linear part on validation
    added 1-3 F1 points (README, "Model quality"). lbfgs: a few hundred dense
    columns, where liblinear's coordinate descent is slow. With more than
    ``max_rows`` train rows it is fitted on a seeded, stratified sample of that many (a
    few hundred weights do not need more, and the float64 copy stays bounded).
    With ``refit_folds``, the returned weights are :func:`refit` on those rows
    and validation, and ``info["val_logits"]`` holds the out-of-fold validation logits.
    """
    rows = np.arange(len(x_train)) if max_rows is None else sample_rows(y_train, max_rows, seed)
    x, y = x_train[rows], np.asarray(y_train)[rows]
    coef, intercept, info = fit_logreg(x, y, x_val, y_val, cs, seed, solver="lbfgs")
    info["rows"] = int(len(rows))
    if refit_folds:
        coef, intercept, val_logits = refit(x, y, x_val, y_val, info["C"], folds=refit_folds, seed=seed, solver="lbfgs")
        info.update(
            val_logits=val_logits,
            refit={"folds": refit_folds, "val_log_loss_out_of_fold": _balanced_log_loss(np.asarray(y_val), val_logits)},
        )
    return coef, intercept, info
