"""Throughput of `fraud-assets score` against raw sentence encoding of the same texts.

    python benchmarks/score_throughput.py --model data/models/production [--n 2000]

In one process: (1) raw ``SentenceTransformer.encode`` of n texts with the
model card's embedding settings, (2) ``score_file`` on a CSV of the same texts
into an empty embedding cache (read, normalise, embed, time features, predict,
write). Scoring should be about as fast as embedding alone: everything but
the encode is a small overhead. Prints messages/s for both and the ratio.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fraud_assets.settings import Settings  # noqa: E402


def texts(n: int, seed: int = 0) -> list[str]:
    from fraud_assets.sample import write_sample

    with tempfile.TemporaryDirectory() as folder:
        paths = write_sample(Path(folder), seed=seed, n_files=max(1, n // 400 + 1), messages_per_file=400)
        out: list[str] = []
        for path in paths:
            if path.suffix == ".csv":
                with path.open(encoding="utf-8") as handle:
                    out.extend(row["text"] for row in csv.DictReader(handle))
    return list(dict.fromkeys(out))[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a saved model folder (e.g. <root>/models/production)")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()

    from fraud_assets.embeddings import Embedder
    from fraud_assets.model.io import load_model
    from fraud_assets.model.lexical import tokenize
    from fraud_assets.scoring import score_file

    card = json.loads((Path(args.model) / "model_card.json").read_text())
    items = texts(args.n)
    embedder = Embedder(card["embedding_model"], **card.get("embedding_settings", {}))
    embedder.encode(items[:64])  # warm-up: model load and first-call costs out of both timings
    started = time.perf_counter()
    tokenize(["预热"])  # jieba loads its dictionary on first use, once per process: out of both timings too
    jieba_load = time.perf_counter() - started
    started = time.perf_counter()
    embedder.encode(items)
    raw = len(items) / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "messages.csv"
        with source.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text"])
            writer.writerows([t] for t in items)
        settings = Settings(data_dir=Path(folder) / "root", landing_dir=Path(folder) / "in")
        started = time.perf_counter()
        summary = score_file(source, Path(folder) / "scored.parquet", model_dir=Path(args.model), settings=settings)
        seconds = time.perf_counter() - started
    started = time.perf_counter()
    load_model(Path(args.model))  # the classifier's one-time load, like the embedding model's warm-up above
    load = time.perf_counter() - started
    steady = summary["scored"] / (seconds - load)
    print(f"texts            {len(items)}, device {embedder.device}, model {card['embedding_model']}")
    print(f"raw encode       {raw:10.1f} msg/s  (embedding model already loaded)")
    print(
        f"score            {summary['scored'] / seconds:10.1f} msg/s  (read, embed, features, predict, write; "
        f"includes the classifier's one-time load of {load:.2f} s)"
    )
    print(
        f"score, loaded    {steady:10.1f} msg/s  (the same, minus that load; jieba's dictionary, {jieba_load:.2f} s, loaded before)"
    )
    print(f"score/raw        {steady / raw:10.3f}  (loaded)")


if __name__ == "__main__":
    main()
