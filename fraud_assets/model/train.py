"""Training: the linear part first, the deep part on top of it, then the blend and calibration."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from fraud_assets.features import dense_columns
from fraud_assets.model.calibration import expected_calibration_error, fit_blend, uncalibrated
from fraud_assets.model.config import TEXT_STAT_COLUMNS, FeatureSpec, TrainConfig, default_time_columns
from fraud_assets.model.featurize import _Features, _featurise
from fraud_assets.model.lexical import tfidf_matrix_of_groups
from fraud_assets.model.linear import fit_dense, fit_logreg, fit_prepared, prepare, sample_rows
from fraud_assets.model.network import _build_module, _Inputs, _logits, _RowAdam
from fraud_assets.model.trained import TrainedModel, rows_digest
from fraud_assets.thresholds import best_f1_threshold


def _smoothed_bce(logits, y, pos_weight, eps: float):
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, y * (1 - eps) + eps / 2, pos_weight=pos_weight)


def _make_spec(dataset: pl.LazyFrame, config: TrainConfig) -> FeatureSpec:
    deep = config.use_deep
    embedding_dim = 0
    if config.use_embedding and deep:
        dtype = dataset.collect_schema().get("embedding")
        if dtype is None:
            raise ValueError("use_embedding=True but the dataset has no 'embedding' column")
        if isinstance(dtype, pl.Array):
            embedding_dim = dtype.size
        else:
            embedding_dim = dataset.select(pl.col("embedding").first().list.len()).collect().item()
    time_columns = (config.time_columns or default_time_columns()) if config.use_time and deep else ()
    return FeatureSpec(
        embedding_dim=int(embedding_dim),
        time_columns=tuple(time_columns),
        text_stat_columns=TEXT_STAT_COLUMNS if config.use_text_stats and deep else (),
        ngram_min=config.ngram_min,
        ngram_max=config.ngram_max,
        ngram_buckets=config.ngram_buckets if config.use_ngrams and deep else 0,
        ngram_lowercase=config.ngram_lowercase,
        word_ngram_max=config.word_ngram_max if config.use_ngrams else 0,
        wide_buckets=config.wide_buckets if config.use_ngrams and config.use_wide else 0,
        group_columns=dense_columns() if deep else (),
        cross_hour_block=config.cross_hour_block if config.use_time and config.use_ngrams and config.word_ngram_max else 0,
    )


def _validate(dataset: pl.DataFrame, config: TrainConfig) -> tuple[pl.Series, pl.Series]:
    """Check the config and the dataset; the train and validation row masks."""
    if not (config.use_embedding or config.use_time or config.use_ngrams or config.use_text_stats):
        raise ValueError("TrainConfig switches off every feature group; keep at least one")
    if not (config.use_deep or (config.use_wide and config.use_ngrams)):
        raise ValueError("TrainConfig switches off both the deep part and the linear n-gram part; keep one")
    if not 1 <= config.ngram_min <= config.ngram_max:
        raise ValueError("need 1 <= ngram_min <= ngram_max")
    for name in ("wide_select_rows", "cross_select_rows"):
        if getattr(config, name) < 1000:
            raise ValueError(f"{name} must be at least 1000 (C or the crosses chosen on fewer rows is noise)")
    if config.epoch_rows < config.batch_size:
        raise ValueError("epoch_rows must be at least batch_size")
    if config.cross_hour_block not in (0, 1, 2, 3, 4, 6, 8, 12):
        raise ValueError("cross_hour_block must divide a day into whole blocks: 0 (none), 1, 2, 3, 4, 6, 8 or 12 hours")
    if config.wide_buckets % config.ngram_buckets:
        raise ValueError("wide_buckets must be a multiple of ngram_buckets (deep ids are wide ids modulo ngram_buckets)")
    for col in ("label", "split"):
        if col not in dataset.columns:
            raise ValueError(f"dataset lacks the column {col!r}")
    is_train, is_val = dataset["split"] == "train", dataset["split"] == "validation"
    train, val = dataset["label"].filter(is_train), dataset["label"].filter(is_val)
    if train.len() == 0 or val.len() == 0:
        raise ValueError(f"need train and validation rows, got {train.len()} train / {val.len()} validation")
    if train.null_count() or val.null_count():
        raise ValueError("labels must not be null")
    if train.n_unique() < 2:
        raise ValueError("the train split holds only one class")
    _check_both_classes(dataset)
    return is_train, is_val


def _check_both_classes(dataset: pl.DataFrame) -> None:
    """Validation and test (when there is one) must each hold fraud and normal rows.

    Without fraud in validation the threshold and early stopping have nothing
    to find (F1 0 at threshold 0.5), and without it in test the metrics the
    promotion gate compares mean nothing: such a model must not be promoted.
    """
    for split in ("validation", "test"):
        labels = dataset["label"].filter(dataset["split"] == split).cast(pl.Int64)
        if split == "test" and labels.len() == 0:
            continue
        fraud = int(labels.sum())
        if fraud == 0 or fraud == labels.len():
            raise ValueError(
                f"the {split} split holds only one class ({fraud} fraud, {labels.len() - fraud} normal rows): "
                "too few rows of one class to evaluate a model; add more labelled data"
            )


def _val_record(y_val: np.ndarray, logits: np.ndarray, loss: float) -> dict[str, float]:
    """Validation metrics of one epoch at the F1-maximising threshold (and at 0.5)."""
    proba = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -50, 50)))
    threshold, f1, precision, recall = best_f1_threshold(y_val, proba)
    pred = (proba >= threshold).astype(np.int64)
    pred05 = (proba >= 0.5).astype(np.int64)
    tp05 = int(((pred05 == 1) & (y_val == 1)).sum())
    return {
        "val_loss": loss,
        "val_accuracy": float((pred == y_val).mean()),
        "val_f1": f1,
        "val_precision": precision,
        "val_recall": recall,
        "val_threshold": threshold,
        "val_f1_at_0_5": 2 * tp05 / max(1, int(pred05.sum()) + int(y_val.sum())),
    }


def _init_idf(module, f_train: _Features, spec: FeatureSpec) -> None:
    """IDF from the train split's n-grams, into the module's buffer."""
    import torch

    if spec.hash_space:
        with torch.no_grad():
            module.idf.copy_(torch.from_numpy(f_train.idf(spec.hash_space)))


def _add_dense(module, spec: FeatureSpec, dataset: pl.LazyFrame, x_train: _Inputs, x_val: _Inputs, log) -> None:
    """Build the train and validation rows' dense matrices into their inputs; standardise on train."""
    t0 = time.perf_counter()
    present = set(dataset.collect_schema().names())
    needed = [c for c in spec.required_columns if c in present]  # _featurise names any that are missing
    for split, inputs in (("train", x_train), ("validation", x_val)):
        rows = dataset.filter(pl.col("split") == split).select(needed).collect()
        inputs.set_dense(_featurise(rows, spec, lexical=False).dense)
    _init_dense_statistics(module, x_train, spec)
    log(f"dense features in {time.perf_counter() - t0:.1f}s")


def _init_dense_statistics(module, x_train: _Inputs, spec: FeatureSpec) -> None:
    """Standardisation statistics of the train split's dense matrix, into the module's buffers."""
    import torch

    if spec.dense_dim:
        mean, std = _column_moments(x_train.dense.numpy())
        std[std < 1e-6] = 1.0  # constant columns (e.g. no timestamps) become 0
        with torch.no_grad():
            module.dense_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            module.dense_std.copy_(torch.from_numpy(std.astype(np.float32)))


def _column_moments(matrix: np.ndarray, chunk_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation in float64, a block of rows at a time (no float64 copy of
    the whole matrix, which at a million rows would be 3 GB)."""
    n = max(1, len(matrix))
    total = np.zeros(matrix.shape[1], np.float64)
    for start in range(0, len(matrix), chunk_rows):
        total += matrix[start : start + chunk_rows].sum(axis=0, dtype=np.float64)
    mean = total / n
    squares = np.zeros_like(mean)
    for start in range(0, len(matrix), chunk_rows):
        centred = matrix[start : start + chunk_rows].astype(np.float64) - mean
        squares += (centred * centred).sum(axis=0)
    return mean, np.sqrt(squares / n)


def _refit_folds(config: TrainConfig, y_train: np.ndarray, y_val: np.ndarray) -> int:
    """Validation folds for the refit: ``refit_folds``, fewer when a class has fewer validation rows
    (stratified folds need one of each per fold), 0 (no refit) above ``refit_max_rows`` train rows
    or below two rows of a class."""
    if len(y_train) > config.refit_max_rows:
        return 0
    folds = min(config.refit_folds, int(np.bincount(np.asarray(y_val, np.int64), minlength=2).min()))
    return folds if folds >= 2 else 0


def _fit_linear_part(module, x_train: _Inputs, x_val: _Inputs, y_train, y_val, config: TrainConfig, log, chosen_c=None):
    """Fit the wide part as a logistic regression (fraud_assets.model.linear) and fix it in the module.

    With a refit, the module gets the weights fitted on train alone (the deep part learns on top of
    those, early-stopped on validation rows they have not seen); :func:`_use_refit` swaps in the
    refitted ones afterwards. Returns (report, fit).
    """
    import torch

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fraud-assets-train-") as spill:
        folds = _refit_folds(config, y_train, y_val)
        prepared = prepare(x_train.matrix, x_val.matrix, with_val_columns=bool(folds))
        x_train.spill(Path(spill))  # liblinear adds its own copy: ours waits on disk meanwhile (1.2 GB at a million rows)
        fit = fit_prepared(
            prepared,
            y_train,
            y_val,
            views=config.wide_views,
            cs=config.wide_cs,
            seed=config.seed,
            select_rows=config.wide_select_rows,
            refit_folds=folds,
            chosen_c=chosen_c,
        )
        del prepared
        x_train.restore(Path(spill))
    weight, bias = fit.train_only or (fit.weight, fit.bias)
    with torch.no_grad():
        module.wide_weight.copy_(torch.from_numpy(weight))
        module.wide_bias.fill_(bias)
    chosen = ", ".join(f"{v} C={fit.report[v]['C']:g}" for v in config.wide_views)
    refitted = " and refitted on train + validation" if fit.train_only else ""
    log(
        f"linear part fitted{refitted} in {time.perf_counter() - t0:.1f}s ({chosen}), val log-loss {fit.report['val_log_loss']:.4f}"
    )
    return {**fit.report, "seconds": time.perf_counter() - t0}, fit


def _use_refit(module, fit, held_out: dict) -> None:
    """Put the linear part's refitted weights (train + validation) in place of those fitted on train
    alone, and its out-of-fold validation logits into ``held_out``."""
    import torch

    if fit is not None and fit.train_only is not None:
        with torch.no_grad():
            module.wide_weight.copy_(torch.from_numpy(fit.weight))
            module.wide_bias.fill_(fit.bias)
        held_out["linear"] = fit.val_logits


def _fit_dense_part(module, x_train: _Inputs, x_val: _Inputs, y_train, y_val, config: TrainConfig, held_out: dict, log) -> dict:
    """Fit the dense part (fraud_assets.model.linear.fit_dense) on the standardised dense features and fix it;
    with a refit, its out-of-fold validation logits go into ``held_out``."""
    import torch

    t0 = time.perf_counter()
    mean, std = module.dense_mean.numpy(), module.dense_std.numpy()
    coef, intercept, info = fit_dense(
        (x_train.dense.numpy() - mean) / std,
        y_train,
        (x_val.dense.numpy() - mean) / std,
        y_val,
        config.dense_cs,
        config.seed,
        config.dense_fit_rows,
        _refit_folds(config, y_train, y_val),
    )
    with torch.no_grad():
        module.dense_weight.copy_(torch.from_numpy(coef.astype(np.float32)))
        module.dense_bias.fill_(intercept)
    if "val_logits" in info:
        held_out["dense"] = info.pop("val_logits")
    log(f"dense part fitted in {time.perf_counter() - t0:.1f}s (C={info['C']:g}), val log-loss {info['val_log_loss']:.4f}")
    return {**info, "seconds": time.perf_counter() - t0}


def _fit_blend(module, x_val: _Inputs, y_val: np.ndarray, config: TrainConfig, fitted_dense: bool, held_out: dict, log):
    """Stack the parts and calibrate on validation (fraud_assets.model.calibration); record before/after.

    ``held_out`` holds the out-of-fold validation logits of refitted parts, used in place of
    their own (in-sample) ones: stacking is fitted on logits that have not seen the rows.
    Returns (report, the validation rows' P(fraud) through the blend from those logits).
    """
    import torch

    wide, deep, dense = (z.astype(np.float64) for z in _logits(module, x_val, parts=True))
    wide, dense = held_out.get("linear", wide), held_out.get("dense", dense)
    parts = {}
    if module.use_wide:
        parts["linear"] = wide
    if module.use_deep:
        parts["deep"] = deep
    if fitted_dense:
        parts["dense"] = dense
    raw = 1.0 / (1.0 + np.exp(-np.clip(wide + deep, -50, 50)))
    blend = fit_blend(parts, y_val, seed=config.seed) if config.calibrate else uncalibrated(parts, "calibrate: false")
    w = [blend.weights.get("linear", 0.0), blend.weights.get("deep", 0.0), blend.bias]
    module.blend.copy_(torch.tensor(w, dtype=torch.float32))
    module.dense_blend.fill_(blend.weights.get("dense", 0.0))
    report = {"chosen": blend.chosen, "weights": blend.weights, "bias": blend.bias, **blend.report}
    a, b, c = (float(v) for v in module.blend)  # what the module computes, on the held-out logits
    cal = 1.0 / (1.0 + np.exp(-np.clip(a * wide + b * deep + float(module.dense_blend) * dense + c, -50, 50)))
    report["validation"] = {
        "brier_before": float(np.mean((raw - y_val) ** 2)),
        "brier_after": float(np.mean((cal - y_val) ** 2)),
        "ece_before": expected_calibration_error(y_val, raw),
        "ece_after": expected_calibration_error(y_val, cal),
    }
    log(f"blend: {report['chosen']} (cross-fitted val log-loss {report.get('candidates')})")
    return report, cal


def _linear_only_history(module, x_val: _Inputs, y_val: np.ndarray) -> list[dict[str, Any]]:
    """A one-entry history (validation metrics of the linear part) for a model without a deep part."""
    logits = _logits(module, x_val, raw=True)
    nan = float("nan")
    return [
        {
            "epoch": 1,
            "train_loss": nan,
            "train_accuracy": nan,
            "learning_rate": 0.0,
            **_val_record(y_val, logits, nan),
            "seconds": 0.0,
        }
    ]


def _lexical_part(dataset: pl.LazyFrame, config: TrainConfig, log) -> tuple[FeatureSpec, tuple, tuple]:
    """Check the dataset; the feature spec and the (n-gram features, labels) of train and of validation,
    read from the split, label and text columns only."""
    columns = dataset.collect_schema().names()
    split_and_label = dataset.select(c for c in ("split", "label") if c in columns).collect()
    is_train, is_val = _validate(split_and_label, config)
    spec = _make_spec(dataset, config)
    t0 = time.perf_counter()
    missing = [c for c in spec.lexical_columns if c not in columns]
    if missing:
        raise ValueError(f"frame lacks the columns this model needs: {missing}")
    texts = dataset.select(spec.lexical_columns or [pl.lit(None, pl.Utf8).alias("text")]).collect()

    def part(mask: pl.Series) -> tuple[_Features, np.ndarray]:
        return _featurise(texts.filter(mask), spec, dense=False), split_and_label["label"].filter(mask).cast(pl.Int64).to_numpy()

    train, val = part(is_train), part(is_val)
    log(f"n-grams of {len(train[1])} train + {len(val[1])} validation rows in {time.perf_counter() - t0:.1f}s")
    return spec, train, val


def _choose_crosses(spec: FeatureSpec, train: tuple, val: tuple, config: TrainConfig, log) -> tuple[FeatureSpec, dict | None]:
    """Keep the word x time-of-day crosses (the last lexical group) only where they help on validation.

    Where the time of day says nothing a word does not, the crosses are noise features that the
    linear part's one L2 strength cannot turn off (measured with random hours on the Chinese
    proxies: -0.8 F1 points on chnsenticorp_htl). So the plain view's C walk is run with and without
    them, on at most ``cross_select_rows`` train and validation rows, and they stay only when their
    validation log-loss is lower. Without any timed train row there is nothing to decide: no crosses.
    When the sample is every row, the winning walk is the one the main fit's plain view would run,
    so its C goes there (``plain_C``) and that view fits once instead of walking again.
    Returns (the spec, without crosses when dropped; the decision for the model card, None if there
    were no crosses to decide on). Drops the group from the features in place.
    """
    (f_train, y_train), (f_val, y_val) = train, val
    if not spec.cross_hour_block:
        return spec, None
    if not len(f_train.lexical[-1][1]):
        for f in (f_train, f_val):
            f.lexical.pop()
        return dataclasses.replace(spec, cross_hour_block=0), {"used": False, "reason": "no train row has a timestamp"}
    t0 = time.perf_counter()
    rows_t, rows_v = (sample_rows(y, config.cross_select_rows, config.seed) for y in (y_train, y_val))
    sample_t = [_rows_of(g, rows_t) for g in f_train.lexical]
    sample_v = [_rows_of(g, rows_v) for g in f_val.lexical]
    walks: dict[bool, dict] = {}
    for used in (False, True):
        groups = slice(None) if used else slice(-1)
        # IDF of the sampled rows (the decision's cost does not grow with the data), over the groups
        # the main fit would have: with every row sampled, each walk here is the one it would run.
        idf = _Features(len(rows_t), None, sample_t[groups]).idf(spec.hash_space)
        x = prepare(*(tfidf_matrix_of_groups(g[groups], idf) for g in (sample_t, sample_v)))
        start = walks[False]["C"] if used else 1.0  # the crosses seldom move C far: fewer fits
        _, _, walks[used] = fit_logreg(
            x.x_train, y_train[rows_t], x.x_val, y_val[rows_v], config.wide_cs, config.seed, start_c=start
        )
    loss = {used: walk["val_log_loss"] for used, walk in walks.items()}
    report = {
        "used": bool(loss[True] < loss[False]),
        "val_log_loss_with": float(loss[True]),
        "val_log_loss_without": float(loss[False]),
        "rows": [len(rows_t), len(rows_v)],
    }
    if len(rows_t) == len(y_train) and len(rows_v) == len(y_val):
        report["plain_C"] = walks[report["used"]]["C"]  # the main fit's plain view takes it without a walk
    log(
        f"word x time-of-day crosses {'kept' if report['used'] else 'dropped'} in {time.perf_counter() - t0:.1f}s: plain view val log-loss {loss[True]:.4f} with, {loss[False]:.4f} without"
    )
    if report["used"]:
        return spec, report
    for f in (f_train, f_val):
        f.lexical.pop()
    return dataclasses.replace(spec, cross_hour_block=0), report


def _rows_of(group: tuple[np.ndarray, np.ndarray, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR triple of the texts ``rows`` of a lexical group."""
    indptr, ids, counts = group
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    first = np.concatenate(([0], np.cumsum(lengths)))
    take = np.repeat(starts - first[:-1], lengths) + np.arange(first[-1])  # no copy of the whole group
    return first, ids[take], counts[take]


def train_classifier(
    dataset: pl.DataFrame | pl.LazyFrame,
    config: TrainConfig = TrainConfig(),
    *,
    tensorboard_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainedModel:
    """Fit on ``split == "train"``; choose and calibrate on ``split == "validation"``, and refit on both.

    In stages, so the fused model can only add to its linear part:

    1. the linear part, a logistic regression over the TF-IDF n-grams (word x time-of-day crosses
       where validation keeps them: :func:`_choose_crosses`), fitted to convergence with its L2
       strength chosen on validation (:func:`fraud_assets.model.linear.fit_wide`), then fixed;
    2. the deep part, trained by mini-batch on top of the fixed linear logit
       (:func:`_train_deep`: it learns the residual), early-stopped on
       validation F1 with the best epoch restored;
    3. the linear part refitted on train + validation at its chosen C
       (:func:`fraud_assets.model.linear.refit`; ``refit_folds``, up to
       ``refit_max_rows`` train rows), with out-of-fold validation logits;
    4. the dense part, a logistic regression over the dense features (embedding,
       time, text statistics) fitted on its own (:func:`fraud_assets.model.linear.fit_dense`),
       refitted the same way;
    5. the blend: the combination of parts (always with the linear part
       when there is one) with the best cross-fitted validation log-loss,
       Platt-calibrated on the held-out logits (:func:`fraud_assets.model.calibration.fit_blend`).

    Deterministic: same data and seed give identical history and
    probabilities. Torch's global RNG state and thread count are left as found.

    ``dataset`` may be a ``LazyFrame`` (``pl.scan_parquet`` of the training
    dataset, as the ``fraud_classifier`` asset passes it): the embedding
    vectors are then read only for the deep part, after the linear part's
    copies are gone, instead of being held throughout (1.5 GB at a million rows).
    """
    import torch

    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    dataset = dataset.lazy()
    spec, (f_train, y_train), (f_val, y_val) = _lexical_part(dataset, config, log)
    spec, crosses = _choose_crosses(spec, (f_train, y_train), (f_val, y_val), config, log)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        module = _build_module(config, spec)
        _init_idf(module, f_train, spec)
        x_train, x_val = _Inputs(f_train, module), _Inputs(f_val, module)
        del f_train, f_val  # their n-gram triples are in the inputs' matrices now
        history, best_epoch, selection, val_proba = _fit_parts(
            module, spec, dataset, (x_train, y_train), (x_val, y_val), config, tensorboard_dir, log, crosses
        )
        module.eval()
    held = None
    if val_proba is not None:
        held = {"rows": rows_digest(dataset.filter(pl.col("split") == "validation")), "proba": val_proba.tolist()}
    log(f"best epoch {best_epoch} of {len(history)}, total {time.perf_counter() - t_start:.1f}s")
    return TrainedModel(module, config, spec, history, best_epoch, selection, held_out_validation=held)


def _fit_parts(
    module, spec: FeatureSpec, dataset: pl.LazyFrame, train: tuple, val: tuple, config: TrainConfig, tensorboard_dir, log, crosses
):
    """The stages of :func:`train_classifier` after the crosses decision (``crosses``, or None); returns
    (history, best epoch, selection report, the validation rows' held-out P(fraud) when parts were
    refitted, else None)."""
    (x_train, y_train), (x_val, y_val) = train, val
    selection: dict[str, Any] = {} if crosses is None else {"crosses": crosses}
    held_out: dict[str, np.ndarray] = {}  # out-of-fold validation logits of the refitted parts
    wide_fit = None
    if module.use_wide:
        chosen = {"plain": crosses["plain_C"]} if crosses and "plain_C" in crosses else None
        selection["linear"], wide_fit = _fit_linear_part(module, x_train, x_val, y_train, y_val, config, log, chosen)
    # The dense matrix (embeddings, time, statistics) only now: the linear part's float64 copies are gone.
    _add_dense(module, spec, dataset, x_train, x_val, log)
    if module.use_deep:
        history, best_epoch = _train_deep(module, x_train, x_val, y_train, y_val, config, tensorboard_dir, log)
    else:
        history, best_epoch = _linear_only_history(module, x_val, y_val), 1
    _use_refit(module, wide_fit, held_out)
    # after the deep part, so that it learns on top of the linear part alone, as before
    if config.use_dense_linear and spec.dense_dim:
        selection["dense"] = _fit_dense_part(module, x_train, x_val, y_train, y_val, config, held_out, log)
    selection["blend"], val_proba = _fit_blend(module, x_val, y_val, config, "dense" in selection, held_out, log)
    return history, best_epoch, selection, (val_proba.astype(np.float32) if held_out else None)


def _lr_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to 2% over ``max_epochs``."""
    total_steps = steps_per_epoch * config.max_epochs
    warmup = max(1, int(round(config.warmup_epochs * steps_per_epoch)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class _EarlyStopping:
    """Keeps the best epoch's weights and says when to stop.

    Better means higher validation F1 at its best threshold (the rule that picks
    the operating threshold); a tie counts as better only when validation loss
    dropped by more than ``min_loss_delta``, so noise does not move the choice.
    """

    def __init__(self, patience: int, min_loss_delta: float) -> None:
        self.patience, self.min_loss_delta = patience, min_loss_delta
        self.best_key: tuple[float, float] | None = None
        self.best_state: dict | None = None
        self.best_epoch, self.stale = 0, 0

    def update(self, epoch: int, f1: float, val_loss: float, module) -> bool:
        """Record one epoch; returns whether it is the new best (its weights are then kept)."""
        best = self.best_key
        improved = best is None or f1 > best[0] or (f1 == best[0] and val_loss < best[1] - self.min_loss_delta)
        if improved:
            self.best_key, self.best_epoch, self.stale = (f1, val_loss), epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            self.stale += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience


def _optimisation(module, x_train: _Inputs, y_train, config: TrainConfig, tensorboard_dir) -> dict:
    """Optimisers, loss weighting, LR schedule and TensorBoard writer shared by every step of the deep part."""
    import torch

    pos_weight = torch.tensor((len(y_train) - float(y_train.sum())) / float(y_train.sum()))
    writer = None
    if tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard_dir))
    dense_params = [p for p in module.parameters() if p.requires_grad]
    return {
        "adamw": torch.optim.AdamW(dense_params, lr=config.lr, weight_decay=config.weight_decay),
        "rows": _RowAdam(module.ngram_table.data) if module.deep_buckets else None,
        "params": dense_params,
        "pos_weight": pos_weight,
        "writer": writer,
        "step": 0,
        "factor": _lr_schedule(config, math.ceil(min(x_train.n, config.epoch_rows) / config.batch_size)),
    }


def _train_deep(module, x_train: _Inputs, x_val: _Inputs, y_train_np, y_val_np, config: TrainConfig, tensorboard_dir, log):
    """Mini-batch training of the deep part on top of the (fixed) linear logit; returns (history, best epoch).

    Loss: BCE with logits, label smoothing and ``pos_weight = n_neg / n_pos``.
    AdamW for dense parameters (clipped gradients), row-wise Adam for the
    n-gram table. Early stopping (:class:`_EarlyStopping`) on validation F1,
    with the best epoch's weights restored. An epoch visits at most
    ``config.epoch_rows`` train rows (measured at 700,000 rows: a full pass
    took 15 minutes on 2 busy cores, so early stopping alone took hours).
    """
    import torch

    y_train = torch.from_numpy(y_train_np.astype(np.float32))
    y_val = torch.from_numpy(y_val_np.astype(np.float32))
    opt = _optimisation(module, x_train, y_train, config, tensorboard_dir)
    shuffler = torch.Generator().manual_seed(config.seed)
    stopping = _EarlyStopping(config.patience, config.min_loss_delta)
    history = []
    for epoch in range(1, config.max_epochs + 1):
        t_epoch = time.perf_counter()
        lr_now = config.lr * opt["factor"](opt["step"])
        # an epoch visits at most epoch_rows rows: a fresh seeded sample each time on larger data
        order = torch.randperm(x_train.n, generator=shuffler)[: config.epoch_rows]
        loss, acc = _train_epoch(module, x_train, y_train, order, config, opt)
        val_logits = torch.from_numpy(_logits(module, x_val, raw=True))
        with torch.no_grad():
            val_loss = float(_smoothed_bce(val_logits, y_val, opt["pos_weight"], config.label_smoothing))
        record = {
            "epoch": epoch,
            "train_loss": loss,
            "train_accuracy": acc,
            "learning_rate": lr_now,
            **_val_record(y_val_np, val_logits.numpy(), val_loss),
            "seconds": time.perf_counter() - t_epoch,
        }
        history.append(record)
        _log_epoch(opt["writer"], record)
        improved = stopping.update(epoch, record["val_f1"], val_loss, module)
        log(
            f"epoch {epoch}/{config.max_epochs} loss {loss:.4f} val_loss {val_loss:.4f} val_f1 {record['val_f1']:.4f} "
            f"(p {record['val_precision']:.3f} r {record['val_recall']:.3f} @ {record['val_threshold']:.3f})"
            f"{' *' if improved else ''} {record['seconds']:.1f}s"
        )
        if stopping.should_stop:
            break
    module.load_state_dict(stopping.best_state)
    if opt["writer"] is not None:
        opt["writer"].flush()
        opt["writer"].close()
    return history, stopping.best_epoch


def _train_epoch(module, x_train: _Inputs, y_train, order, config: TrainConfig, opt: dict) -> tuple[float, float]:
    """One pass over the train rows in ``order``; returns (mean loss, accuracy)."""
    import torch

    module.train()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(order), config.batch_size):
        rows = order[start : start + config.batch_size]
        factor = opt["factor"](opt["step"])
        for group in opt["adamw"].param_groups:
            group["lr"] = config.lr * factor
        dense, ids, offsets, weights = x_train.batch(rows)
        table_rows = table = deep_ids = None
        if opt["rows"] is not None:
            # autograd over the touched rows only; deep ids re-indexed into that slice
            table_rows, deep_ids = torch.unique(torch.remainder(ids, module.deep_buckets), return_inverse=True)
            table = module.ngram_table.detach()[table_rows].requires_grad_()
        logits = module(dense, ids, offsets, weights, table=table, deep_ids=deep_ids, raw=True)
        yb = y_train[rows]
        loss = _smoothed_bce(logits, yb, opt["pos_weight"], config.label_smoothing)
        opt["adamw"].zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            # the n-gram rows are left out: Adam's per-row normalisation already bounds their steps
            torch.nn.utils.clip_grad_norm_(opt["params"], config.grad_clip)
        opt["adamw"].step()
        if opt["rows"] is not None:
            opt["rows"].step(table_rows, table.grad, config.sparse_lr * factor)
        batch_loss = float(loss.detach())
        loss_sum += batch_loss * len(rows)
        correct += int(((logits.detach() > 0).float() == yb).sum())
        if opt["writer"] is not None:
            opt["writer"].add_scalar("Train/BatchLoss", batch_loss, opt["step"])
        opt["step"] += 1
    return loss_sum / len(order), correct / len(order)


def _log_epoch(writer, record: dict) -> None:
    if writer is None:
        return
    for tag, key in (
        ("Train/EpochAccuracy", "train_accuracy"),
        ("Train/EpochLoss", "train_loss"),
        ("Train/LearningRate", "learning_rate"),
        ("Val/EpochAccuracy", "val_accuracy"),
        ("Val/EpochLoss", "val_loss"),
        ("Val/F1Score", "val_f1"),
        ("Val/Precision", "val_precision"),
        ("Val/Recall", "val_recall"),
    ):
        writer.add_scalar(tag, record[key], record["epoch"])
