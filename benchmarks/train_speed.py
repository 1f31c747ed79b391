"""Training speed on 100,000 synthetic rows with the default TrainConfig.

Rows carry a 384-d class-dependent random embedding (like all-MiniLM-L6-v2's
size), the 13 time feature columns, and short synthetic Chinese/English texts,
so every feature group, the n-gram hashing included, is exercised.
Requirement: under 2 minutes in total on a 2-core CPU machine.

    PYTHONPATH=. .venv/bin/python benchmarks/train_speed.py [--rows 100000] [--threads N] [--refit-folds K]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import polars as pl

FRAUD = ["安全账户", "转账", "验证码", "公安局", "中奖", "刷单返利", "verify account", "prize", "urgent", "click link"]
NORMAL = ["开会", "快递", "吃饭", "账单", "周末", "lunch", "meeting", "thanks", "photos", "delivered"]
FILLER = ["好的", "谢谢", "今天", "请", "您好", "ok", "please", "today", "hello", "的", "了", "明天", "我们"]


def synthetic_dataset(rows: int, dim: int = 384, seed: int = 0) -> pl.DataFrame:
    from fraud_assets.model import default_time_columns

    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    labels = (rng.random(rows) < 0.2).astype(np.int8)
    texts = []
    for y in labels:
        # a third of each class borrows a word of the other class: not trivially separable
        vocab = FRAUD if (y == 1) != (prng.random() < 0.3) else NORMAL
        words = [prng.choice(vocab)] + [prng.choice(FILLER) for _ in range(prng.randint(2, 12))]
        prng.shuffle(words)
        texts.append(" ".join(words))
    centre = rng.normal(size=dim).astype(np.float32) * 0.04  # weak, like a poor embedding
    emb = rng.normal(size=(rows, dim)).astype(np.float32) + np.where(labels[:, None] == 1, centre, -centre)
    u = rng.random(rows)
    split = np.where(u < 0.7, "train", np.where(u < 0.85, "validation", "test"))
    frame = pl.DataFrame(
        {
            "message_id": [f"m{i}" for i in range(rows)],
            "text": texts,
            "label": labels,
            "embedding": emb,
            "split": split,
        }
    )
    time_cols = {}
    for c in default_time_columns():
        if c == "has_timestamp":
            time_cols[c] = pl.Series(c, rng.random(rows) < 0.8)
        else:
            time_cols[c] = pl.Series(c, np.sin(rng.random(rows) * 6.283).astype(np.float32))
    return frame.with_columns(*time_cols.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument(
        "--refit-folds", type=int, default=None, help="TrainConfig.refit_folds (default: its default; 0 = no refit)"
    )
    args = parser.parse_args()

    import torch

    from fraud_assets.model import TrainConfig, hash_char_ngrams, train_classifier
    from fraud_assets.model.lexical import hash_word_ngrams

    if args.threads:
        torch.set_num_threads(args.threads)
    frame = synthetic_dataset(args.rows)
    config = TrainConfig() if args.refit_folds is None else TrainConfig(refit_folds=args.refit_folds)

    t0 = time.perf_counter()
    hash_char_ngrams(frame["text"], config.wide_buckets, config.ngram_min, config.ngram_max)
    hash_word_ngrams(frame["text"], config.wide_buckets, config.word_ngram_max)
    featurise_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = train_classifier(frame, config, log=lambda msg: print("  " + msg, flush=True))
    total_s = time.perf_counter() - t0
    epochs = len(model.history)
    epoch_s = float(np.mean([h["seconds"] for h in model.history]))

    from fraud_assets.evaluation import choose_threshold

    test = frame.filter(pl.col("split") == "test")
    val = frame.filter(pl.col("split") == "validation")
    t0 = time.perf_counter()
    proba = model.predict_proba(test)
    score_s = time.perf_counter() - t0
    pred = proba >= choose_threshold(val["label"].to_numpy(), model.validation_proba(val))
    y = test["label"].to_numpy() == 1
    f1 = 2 * (pred & y).sum() / max(1, pred.sum() + y.sum())

    print(f"rows                {args.rows}")
    print(f"torch threads       {torch.get_num_threads()}")
    print(f"featurisation s     {featurise_s:.2f}  (char + word n-gram hashing of all rows)")
    linear = model.selection.get("linear", {})
    print(f"linear part s       {linear.get('seconds', 0.0):.1f}  (logistic regression per view and C, liblinear)")
    refit = f"{linear['refit']['folds']} folds" if "refit" in linear else "none"
    print(f"refit               {refit}  (linear and dense parts on train + validation)")
    print(f"blend               {model.selection['blend']['chosen']}")
    print(f"epochs run          {epochs} (best {model.best_epoch})")
    print(f"seconds total       {total_s:.1f}  (featurisation + training + validation)")
    print(f"seconds / epoch     {epoch_s:.2f}")
    print(f"scoring rows / s    {test.height / score_s:,.0f}")
    print(f"test F1             {f1:.4f}")
    print(f"under 2 minutes     {'yes' if total_s < 120 else 'NO'}")


if __name__ == "__main__":
    main()
