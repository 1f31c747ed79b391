"""The linear part (logistic regression fitted first), the blend / calibration, word n-grams, repeats.

Real sklearn / jieba / torch on small synthetic data: each test runs in well under a few seconds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from fraud_assets.model.calibration import expected_calibration_error, fit_blend
from fraud_assets.model.lexical import hash_word_groups, hash_word_ngrams, hour_blocks, tokenize
from fraud_assets.model.linear import fit_logreg, fit_prepared, fit_view, fit_wide, nb_ratio, prepare, refit, sample_rows
from fraud_assets.repeats import summarise, summary_markdown
from tests.test_model import FAST, make_dataset


def test_jieba_splits_chinese_words_and_plain_text_splits_on_word_characters():
    zh, en = tokenize(["请立即转账到安全账户", "Verify your ACCOUNT now!"])
    assert "安全" in zh or "安全账户" in zh
    assert en == ["verify", "your", "account", "now"]


def test_word_ngrams_are_stable_and_bigrams_are_counted():
    a = hash_word_ngrams(["hello big world", "hello"], 2**20)
    b = hash_word_ngrams(["hello big world", "hello"], 2**20)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    indptr, ids, _ = a
    assert list(np.diff(indptr)) == [5, 1]  # 3 words + 2 bigrams; 1 word
    assert set(ids[indptr[1] :]) <= set(ids[: indptr[1]])  # "hello" hashes the same in both texts


def test_hour_blocks_recover_every_hour_from_the_contract_columns():
    from datetime import datetime, timezone

    from fraud_assets.time_features import time_features

    sent = [datetime(2026, 3, 1 + h % 28, h, 59, tzinfo=timezone.utc) for h in range(24)] + [None]
    frame = pl.DataFrame(
        {
            "message_id": [str(i) for i in range(25)],
            "text_hash": ["h"] * 25,
            "sent_at": pl.Series(sent, dtype=pl.Datetime("us", "UTC")),
        }
    )
    features = time_features(frame, timezone="UTC")
    assert hour_blocks(features, 1).tolist() == [*range(24), -1]
    assert hour_blocks(features, 4).tolist() == [h // 4 for h in range(24)] + [-1]


def test_word_time_crosses_depend_on_the_block_and_only_timed_texts_have_them():
    texts = ["are you up", "are you up", "are you up", "are you up", "are you up"]
    words, crosses = hash_word_groups(texts, 2**20, blocks=np.array([0, 0, 5, -1, 5]), chunk_size=2)
    assert np.array_equal(words[0], hash_word_ngrams(texts, 2**20)[0])  # the word group is unchanged
    assert np.array_equal(words[1], hash_word_ngrams(texts, 2**20)[1])
    indptr, ids, _ = crosses
    rows = [set(ids[indptr[i] : indptr[i + 1]]) for i in range(5)]
    assert [len(r) for r in rows] == [3, 3, 3, 0, 3]  # one cross per word; none without a time
    assert rows[0] == rows[1] and rows[2] == rows[4] and not rows[0] & rows[2]
    assert not rows[0] & set(words[1])  # crosses never share a hash with the plain words on purpose
    with pytest.raises(ValueError, match="4 time-of-day blocks for 5 texts"):
        hash_word_groups(texts, 2**20, blocks=np.zeros(4, np.int64))


def test_the_rows_taken_from_a_lexical_group_are_those_rows_of_its_matrix():
    from fraud_assets.model.hashing import hash_char_ngrams
    from fraud_assets.model.lexical import tfidf_matrix
    from fraud_assets.model.train import _rows_of

    group = hash_char_ngrams(["a", "", "hello there", "fraud link", "x y z", "in 在吗"], 2**10)
    idf = np.ones(2**10, np.float32)
    rows = np.array([0, 1, 3, 5])
    whole, part = tfidf_matrix(*group, idf), tfidf_matrix(*_rows_of(group, rows), idf)
    assert (whole[rows] != part).nnz == 0


def _separable(n: int = 400, seed: int = 0):
    """Column 0 occurs mostly in fraud rows (noisily), the other columns are noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    x = rng.random((n, 20)) * (rng.random((n, 20)) < 0.2)
    present = np.where(y == 1, rng.random(n) < 0.8, rng.random(n) < 0.1)
    x[:, 0] = present * (0.5 + rng.random(n))
    return sp.csr_matrix(x), y


def test_c_is_chosen_on_a_sample_of_large_data_and_the_final_fit_sees_every_row():
    x, y = _separable(n=3000)
    xt, yt, xv, yv = x[:2400], y[:2400], x[2400:], y[2400:]
    cs = (0.01, 0.1, 1.0, 10.0, 100.0)
    exact = fit_logreg(xt, yt, xv, yv, cs)
    unchanged = fit_view(xt, yt, xv, yv, cs, select_rows=2400)  # not larger than the sample: the exact walk
    assert np.array_equal(unchanged[0], exact[0]) and unchanged[2] == exact[2]

    coef, intercept, info = fit_view(xt, yt, xv, yv, cs, seed=0, select_rows=1000)
    assert info["selected_on_rows"] == 1000 and info["C"] in cs
    assert [p["C"] for p in info["path"]] == [info["C"]]  # one final fit ...
    assert len(info["selection_path"]) >= 3  # ... after a walk on the sample
    on_all = fit_logreg(xt, yt, xv, yv, (info["C"],))  # the final fit is the full data's fit at that C
    assert np.array_equal(coef, on_all[0]) and intercept == on_all[1]
    again = fit_view(xt, yt, xv, yv, cs, seed=0, select_rows=1000)
    assert np.array_equal(again[0], coef)  # the sample is seeded


def test_a_c_chosen_before_is_one_fit_on_every_row_even_above_the_sample_size():
    x, y = _separable(n=3000)
    xt, yt, xv, yv = x[:2400], y[:2400], x[2400:], y[2400:]
    known = fit_prepared(prepare(xt, xv), yt, yv, views=("plain",), select_rows=1000, chosen_c={"plain": 10.0})
    info = known.report["plain"]
    assert info["C_chosen_before"] and "selected_on_rows" not in info and [p["C"] for p in info["path"]] == [10.0]
    on_all = fit_logreg(xt, yt, xv, yv, (10.0,))
    np.testing.assert_allclose(known.weight[prepare(xt, xv).used], on_all[0], rtol=1e-6, atol=1e-7)


def test_samples_keep_each_class_so_rare_fraud_is_never_left_out():
    y = np.zeros(30_000, np.int64)
    y[[5, 17_000, 29_999]] = 1  # 1 in 10,000: a uniform draw of 1,000 rows misses all three 9 times in 10
    rows = sample_rows(y, 1000, seed=0)
    assert len(rows) == 1000 and np.array_equal(rows, np.unique(rows))
    assert y[rows].sum() == 1  # its share rounds to 0; every class keeps at least one row
    assert np.array_equal(sample_rows(y, 1000, seed=0), rows) and not np.array_equal(sample_rows(y, 1000, seed=1), rows)
    common = (np.random.default_rng(0).random(3000) < 0.3).astype(np.int64)
    assert abs(common[sample_rows(common, 1000, seed=0)].mean() - common.mean()) < 1e-3  # each class keeps its share
    assert np.array_equal(sample_rows(common, 3000, seed=0), np.arange(3000))  # no larger than the data: every row

    x = sp.random(30_000, 50, density=0.1, format="lil", random_state=0)
    x[np.flatnonzero(y), 0] = 1.0
    x = x.tocsr()
    # a uniform sample held no fraud here, and liblinear failed on its one class
    coef, _, info = fit_view(x, y, x[:2000], y[:2000], (0.1, 1.0, 10.0), seed=0, select_rows=1000)
    assert info["selected_on_rows"] == 1000 and len(info["selection_path"]) >= 2 and np.isfinite(coef).all()


def test_refit_ships_the_fit_on_train_and_validation():
    x, y = _separable(n=600)
    xt, yt, xv, yv = x[:400], y[:400], x[400:], y[400:]
    coef, intercept, oof = refit(xt, yt, xv, yv, 1.0, folds=5)
    from sklearn.linear_model import LogisticRegression

    both = LogisticRegression(C=1.0, class_weight="balanced", solver="liblinear", random_state=0, max_iter=1000)
    both.fit(sp.vstack([xt, xv]), np.concatenate([yt, yv]))
    np.testing.assert_allclose(coef, both.coef_.ravel(), rtol=1e-6, atol=1e-9)
    assert intercept == pytest.approx(float(both.intercept_[0]))
    # the held-out logits are not the shipped model's own (in-sample ones would flatter the part the blend weighs)
    assert not np.allclose(oof, xv @ coef + intercept)
    assert np.array_equal(refit(xt, yt, xv, yv, 1.0, folds=5)[2], oof)  # seeded folds


@pytest.mark.parametrize("nb", [False, True])
def test_refit_scores_each_validation_row_with_a_model_that_never_saw_it(nb):
    """A column that only one validation row holds: the shipped model weighs it, while that row's
    held-out logit is exactly what it is without the column (the NB ratio too is counted without it)."""
    x, y = _separable(n=600)
    y[450] = 1
    plain = sp.hstack([x, sp.csr_matrix((600, 1))]).tocsr()
    marked = plain.tolil()
    marked[450, 20] = 1.0
    marked = marked.tocsr()
    coef, _, oof_marked = refit(marked[:400], y[:400], marked[400:], y[400:], 1.0, folds=5, nb=nb)
    _, _, oof_plain = refit(plain[:400], y[:400], plain[400:], y[400:], 1.0, folds=5, nb=nb)
    assert coef[20] > 0
    assert oof_marked[50] == pytest.approx(oof_plain[50], abs=1e-9)


def test_prepare_keeps_validation_only_buckets_for_a_refit():
    xt = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    xv = sp.csr_matrix(np.array([[0, 0, 1.0, 0]]))
    assert list(prepare(xt, xv).used) == [0, 1]
    kept = prepare(xt, xv, with_val_columns=True)
    assert list(kept.used) == [0, 1, 2] and kept.x_val.toarray().tolist() == [[0, 0, 1.0]]


def test_nb_ratio_points_to_the_class_a_feature_belongs_to():
    x, y = _separable()
    r = nb_ratio(x, y)
    assert r[0] > 0.5 and np.abs(r[1:]).max() < r[0]


def test_logreg_chooses_c_on_validation_and_records_the_path():
    x, y = _separable()
    coef, _, info = fit_logreg(x[:300], y[:300], x[300:], y[300:], cs=(0.01, 1.0, 100.0))
    assert [p["C"] for p in info["path"]] == [0.01, 1.0, 100.0]
    assert info["val_log_loss"] == min(p["val_log_loss"] for p in info["path"])
    assert coef[0] > 0 and coef.argmax() == 0


def test_wide_fit_folds_the_views_into_one_vector():
    x, y = _separable()
    fit = fit_wide(x[:300], y[:300], x[300:], y[300:], views=("plain", "nb"), cs=(1.0,))
    plain = fit_wide(x[:300], y[:300], x[300:], y[300:], views=("plain",), cs=(1.0,))
    nb = fit_wide(x[:300], y[:300], x[300:], y[300:], views=("nb",), cs=(1.0,))
    # averaging the views' logits == averaging their folded weight vectors
    np.testing.assert_allclose(fit.weight, (plain.weight + nb.weight) / 2, rtol=1e-5, atol=1e-6)
    assert fit.bias == pytest.approx((plain.bias + nb.bias) / 2)


def test_blend_drops_a_useless_part_and_calibrates():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.3).astype(np.int64)
    linear = 3.0 * (2 * y - 1) + rng.normal(scale=2.0, size=y.size) + 2.0  # informative, badly calibrated
    noise = rng.normal(scale=3.0, size=y.size)  # a deep part that learned nothing
    blend = fit_blend({"linear": linear, "deep": noise}, y)
    assert blend.chosen == "linear" and blend.weights["deep"] == 0.0
    # the deep part is a residual on top of the linear logit: never a candidate on its own
    assert set(blend.report["candidates"]) == {"linear", "fused"}
    raw = 1 / (1 + np.exp(-(linear + noise)))
    cal = 1 / (1 + np.exp(-(blend.weights["linear"] * linear + blend.bias)))
    assert np.mean((cal - y) ** 2) < np.mean((raw - y) ** 2)
    assert expected_calibration_error(y, cal) < expected_calibration_error(y, raw)


def test_without_a_linear_part_the_deep_part_alone_is_calibrated():
    rng = np.random.default_rng(2)
    y = (rng.random(1500) < 0.3).astype(np.int64)
    deep = 2.0 * (2 * y - 1) + rng.normal(size=y.size) + 1.5
    blend = fit_blend({"deep": deep}, y)
    assert blend.chosen == "deep" and set(blend.report["candidates"]) == {"deep"} and blend.weights["deep"] > 0


def test_too_few_validation_rows_leave_the_model_uncalibrated_without_the_dense_part():
    # 4 fraud rows cannot be cut into 5 folds. The dense part is a logistic regression of its
    # own: summed unweighted with the linear part it would count the same evidence twice.
    rng = np.random.default_rng(4)
    y = np.r_[np.ones(4, np.int64), np.zeros(200, np.int64)]
    parts = {name: rng.normal(size=y.size) for name in ("linear", "deep", "dense")}
    blend = fit_blend(parts, y)
    assert blend.chosen == "uncalibrated" and "too few validation rows" in blend.report["note"]
    assert blend.weights == {"linear": 1.0, "deep": 1.0, "dense": 0.0} and blend.bias == 0.0
    assert fit_blend({"dense": parts["dense"]}, y).weights == {"dense": 1.0}  # the only part stays


def test_an_uncalibrated_model_is_the_linear_plus_deep_model_and_its_report_claims_no_calibration():
    import torch

    torch.set_num_threads(1)
    from fraud_assets.evaluation import evaluate
    from fraud_assets.model import train_classifier

    data = make_dataset(600, seed=5)
    model = train_classifier(data, dataclasses.replace(FAST, calibrate=False))
    assert model.selection["blend"]["chosen"] == "uncalibrated" and float(model.module.dense_blend) == 0.0
    val, test = (data.filter(pl.col("split") == s) for s in ("validation", "test"))
    assert np.array_equal(model.predict_proba(val), model.predict_proba(val, calibrated=False))
    report = evaluate(data, model.validation_proba(val), model.predict_proba(test), include_baselines=False, plots=False)
    assert report.metrics["calibration"]["before"] is None and "calibrated on the validation" not in report.report_md


def test_logreg_walks_up_to_a_weak_penalty_on_separable_data():
    rng = np.random.default_rng(3)
    y = (rng.random(600) < 0.3).astype(np.int64)
    x = sp.csr_matrix(np.column_stack([y, rng.random(600)]).astype(float))
    _, _, info = fit_logreg(x[:400], y[:400], x[400:], y[400:])
    assert info["C"] >= 256 and info["path"][0]["C"] == 1.0  # started at 1, never looked below


def test_blend_keeps_both_parts_when_both_carry_signal():
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.4).astype(np.int64)
    a = (2 * y - 1) + rng.normal(size=y.size)
    b = (2 * y - 1) + rng.normal(size=y.size)  # independent evidence
    blend = fit_blend({"linear": a, "deep": b}, y)
    assert blend.chosen == "fused" and blend.weights["linear"] > 0.5 and blend.weights["deep"] > 0.5


def test_ece_of_a_perfectly_calibrated_constant_is_zero():
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0
    assert expected_calibration_error([1, 1], [0.0, 0.0]) == 1.0


def test_trained_model_is_never_worse_on_validation_than_its_linear_part():
    """The shipped model is chosen on validation among linear / deep / fused: its held-out
    validation log-loss is the minimum of the candidates, and calibration does not raise Brier."""
    import torch

    torch.set_num_threads(1)
    from fraud_assets.model import train_classifier

    data = make_dataset(800, seed=3)
    model = train_classifier(data, FAST)
    blend = model.selection["blend"]
    assert blend["candidates"][blend["chosen"]] == min(blend["candidates"].values())
    assert model.selection["linear"]["plain"]["C"] in FAST.wide_cs
    v = blend["validation"]
    assert v["brier_after"] <= v["brier_before"] + 1e-9
    # uncalibrated = the plain sum of the parts; calibrated = the blend
    val = data.filter(pl.col("split") == "validation")
    assert not np.allclose(model.predict_proba(val), model.predict_proba(val, calibrated=False))
    # the report's pair, from one featurisation, is the module's own forward with and without the blend
    from fraud_assets.model.featurize import _featurise
    from fraud_assets.model.network import _Inputs, _logits

    inputs = _Inputs(_featurise(val, model.spec), model.module)
    pair = model.predict_proba_before_after(val)
    for proba, raw in zip(pair, (False, True)):
        assert np.array_equal(
            proba, torch.sigmoid(torch.from_numpy(_logits(model.module, inputs, raw=raw))).numpy().astype(np.float64)
        )
    assert all(p.shape == (0,) for p in model.predict_proba_before_after(val.head(0)))
    # featurised a few rows at a time (bounded memory), the same bits as all at once
    whole = model.predict_proba_before_after(val, batch_size=16, batches_per_pass=val.height)
    for piecewise, at_once in zip(model.predict_proba_before_after(val, batch_size=16, batches_per_pass=1), whole):
        assert val.height > 16 and np.array_equal(piecewise, at_once)
    linear_only = train_classifier(data, dataclasses.replace(FAST, use_deep=False))
    assert linear_only.selection["blend"]["chosen"] == "linear" and not hasattr(linear_only.module, "head")


def test_repeats_summary_gives_mean_sd_and_the_paired_difference():
    runs = [
        {"seed": s, "scores": {"model": {"f1": m, "pr_auc": 0.9}, "tfidf_logreg": {"f1": t, "pr_auc": 0.8}}}
        for s, m, t in [(0, 0.90, 0.88), (1, 0.86, 0.85), (2, 0.88, 0.85)]
    ]
    s = summarise(runs)
    assert s["model"]["f1"]["mean"] == pytest.approx(0.88)
    assert s["model"]["f1"]["sd"] == pytest.approx(0.02)
    assert s["model_minus_tfidf"]["f1"]["mean"] == pytest.approx(0.02)
    assert s["model_minus_tfidf"]["f1"]["sd"] == pytest.approx(np.std([0.02, 0.01, 0.03], ddof=1))
    md = summary_markdown(s)
    assert "0.8800 ± 0.0200" in md and "Paired difference" in md


def test_memory_lean_matrices_equal_the_plain_scipy_formulas():
    """The chunked builders that keep a million-row training under 8 GB compute what the obvious
    scipy expressions compute, entry for entry (chunk sizes forced small)."""
    from fraud_assets.model.hashing import compute_idf, hash_char_ngrams
    from fraud_assets.model.lexical import tfidf_matrix, tfidf_matrix_of_groups
    from fraud_assets.model.linear import _columns, _scaled

    texts = [f"消息 {i} 请转账 verify {i % 7}" if i % 3 else "" for i in range(300)]
    buckets = 2**12  # small: char and word n-grams collide, so duplicates are summed
    groups = [hash_char_ngrams(texts, buckets, 1, 3, chunk_size=7), hash_word_ngrams(texts, buckets, chunk_size=11)]
    idf = compute_idf(groups[0][0], np.concatenate([g[1] for g in groups]), buckets)
    lean = tfidf_matrix_of_groups(groups, idf, chunk_rows=13)
    plain = sum(tfidf_matrix(*g, idf) for g in groups).tocsr()
    plain.sort_indices()
    assert (lean.indptr == plain.indptr).all() and (lean.indices == plain.indices).all() and (lean.data == plain.data).all()

    y = np.array([i % 4 == 0 for i in range(300)])
    present = (plain != 0).astype(np.float64)
    p, q = np.asarray(present[y].sum(axis=0)).ravel() + 1, np.asarray(present[~y].sum(axis=0)).ravel() + 1
    assert np.array_equal(nb_ratio(plain, y, chunk_rows=7), np.log(p / p.sum()) - np.log(q / q.sum()))

    used = np.unique(plain.indices)
    sliced = _columns(plain, used, every_entry=True)
    assert (sliced != plain[:, used].astype(np.float64)).nnz == 0
    scale = np.linspace(0.5, 2.0, len(used))
    assert (_scaled(sliced, scale, chunk=5) != sliced @ sp.diags(scale)).nnz == 0
    copy = sliced.copy()
    assert _scaled(copy, scale, in_place=True, chunk=5) is copy and (copy != sliced @ sp.diags(scale)).nnz == 0
