"""Ablations of the classifier on datasets already ingested by benchmarks/model_quality.py.

Reads the newest ``assets/training_dataset/<run>.parquet`` (texts, labels, embeddings, time features)
from each scratch root, re-splits it with each seed (stratified 70/15/15, the
same for every configuration), trains each configuration with
``train_classifier`` directly and prints test F1 (threshold chosen on
validation) next to the char 1-3-gram TF-IDF + logistic regression baseline of
the report, as mean over seeds and mean paired difference; the results file
also holds each run's test PR-AUC and the baseline's.

``--legacy`` runs the configurations of the previous model code: run it with
PYTHONPATH pointing at a checkout of that code (its TrainConfig has no
``use_deep``).

    PYTHONPATH=. python benchmarks/ablation.py --sets waimai_10k chnsenticorp_htl [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

CONFIGS = {
    "default (linear first + deep + blend)": {},
    "linear part only": {"use_deep": False},
    "deep part only (no linear part)": {"use_wide": False},
    "linear: plain view only": {"wide_views": ("plain",)},
    "linear: NB view only": {"wide_views": ("nb",)},
    "char 1-3 only (no words)": {"ngram_max": 3, "word_ngram_max": 0},
    "char 1-4 only (no words)": {"word_ngram_max": 0},
    "char 1-5 + words": {"ngram_max": 5},
    "wide hash 2^18 (collisions)": {"wide_buckets": 2**18},
    "linear only, char 1-3 + words": {"use_deep": False, "ngram_max": 3},
    "linear only, char 1-5 + words": {"use_deep": False, "ngram_max": 5},
    "linear only, NB view only": {"use_deep": False, "wide_views": ("nb",)},
    "linear only, plain view only": {"use_deep": False, "wide_views": ("plain",)},
    "linear only, no words": {"use_deep": False, "word_ngram_max": 0},
    "no embedding in the deep part": {"use_embedding": False},
    "deep part without label smoothing": {"label_smoothing": 0.0},
    "no calibration / blend (raw sum)": {"calibrate": False},
}
LEGACY = {
    "previous default (joint training, char 1-3, 2^18)": {},
    "previous, n-grams only": {"use_embedding": False, "use_time": False, "use_text_stats": False},
    "previous, no label smoothing": {"label_smoothing": 0.0},
    "previous, 2^20 buckets": {"ngram_buckets": 2**20},
    "previous, constant LR (no warm-up/cosine: warmup 0)": {"warmup_epochs": 0.0},
}


def stratified_split(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    split = np.empty(frame.height, dtype=object)
    y = frame["label"].to_numpy()
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = n_test = round(0.15 * idx.size)
        split[idx[:n_test]] = "test"
        split[idx[n_test : n_test + n_val]] = "validation"
        split[idx[n_test + n_val :]] = "train"
    return frame.with_columns(pl.Series("split", split.astype(str)))


def latest_training_dataset(root: Path) -> Path:
    """The newest run's training dataset under a scratch root (one file per retrain run)."""
    files = sorted((root / "assets" / "training_dataset").glob("*.parquet"))
    if not files:
        raise SystemExit(f"no training dataset under {root}: run benchmarks/model_quality.py first")
    return files[-1]


def test_metrics(frame: pl.DataFrame, val_p, test_p) -> dict:
    """The report's test metrics (F1, PR-AUC, ...) at the threshold chosen on validation."""
    from fraud_assets.evaluation import binary_metrics, choose_threshold

    val, test = (frame.filter(pl.col("split") == s) for s in ("validation", "test"))
    t = choose_threshold(val["label"].to_numpy(), val_p)
    return binary_metrics(test["label"].to_numpy(), test_p, t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["waimai_10k", "chnsenticorp_htl", "telecom_fraud_texts"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root-prefix", default="/tmp/mq_root_")
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--configs", nargs="*", help="names of configurations to run (default: all)")
    parser.add_argument("--results", default="/tmp/ablation.jsonl")
    args = parser.parse_args()

    import torch

    from fraud_assets.evaluation import baseline_scores
    from fraud_assets.model import TrainConfig, train_classifier

    torch.set_num_threads(2)
    configs = LEGACY if args.legacy else CONFIGS
    names = args.configs or list(configs)
    for name in args.sets:
        data = pl.read_parquet(latest_training_dataset(Path(args.root_prefix + name))).drop("split")
        for seed in args.seeds:
            frame = stratified_split(data, seed)
            base = baseline_scores(frame)["tfidf_logreg"]
            tfidf = test_metrics(frame, base["val"], base["test"])
            for cname in names:
                t0 = time.perf_counter()
                model = train_classifier(frame, TrainConfig(seed=seed, **configs[cname]))
                val, test = (frame.filter(pl.col("split") == s) for s in ("validation", "test"))
                scores = test_metrics(frame, model.validation_proba(val), model.predict_proba(test))
                row = {
                    "set": name,
                    "seed": seed,
                    "config": cname,
                    "f1": scores["f1"],
                    "tfidf_f1": tfidf["f1"],
                    "pr_auc": scores["pr_auc"],
                    "tfidf_pr_auc": tfidf["pr_auc"],
                    "seconds": time.perf_counter() - t0,
                }
                print(json.dumps(row, ensure_ascii=False), flush=True)
                with open(args.results, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(table([json.loads(line) for line in Path(args.results).read_text(encoding="utf-8").splitlines()]))


def table(rows: list[dict]) -> str:
    sets = list(dict.fromkeys(r["set"] for r in rows))
    lines = [
        "| configuration | " + " | ".join(f"{s} F1 (Δ vs TF-IDF+LR)" for s in sets) + " |",
        "| --- | " + " | ".join("---" for _ in sets) + " |",
    ]
    for cname in dict.fromkeys(r["config"] for r in rows):
        cells = []
        for s in sets:
            rs = [r for r in rows if r["set"] == s and r["config"] == cname]
            if not rs:
                cells.append("")
                continue
            f1 = np.mean([r["f1"] for r in rs])
            d = np.mean([r["f1"] - r["tfidf_f1"] for r in rs])
            cells.append(f"{f1:.4f} ({d:+.4f}, n={len(rs)})")
        lines.append(f"| {cname} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
