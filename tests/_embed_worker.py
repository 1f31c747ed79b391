"""Subprocess helper for the resumability test: embed a Parquet of texts into a cache.

    python tests/_embed_worker.py INPUT.parquet CACHE_ROOT OUTPUT.parquet \
        [--chunk-size 100] [--sleep-per-chunk 0.0]

INPUT has text_hash and text. Writes the vectors to OUTPUT and the stats as JSON
next to it (OUTPUT + ".json"). ``--sleep-per-chunk`` pauses after each
committed chunk so the test can kill the process between chunks reliably.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402

from fraud_assets.embeddings import Embedder, EmbeddingCache, embed_texts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input", type=Path)
    parser.add_argument("cache_root", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--sleep-per-chunk", type=float, default=0.0)
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, flush=True)
        time.sleep(args.sleep_per_chunk)

    embedder = Embedder(device="cpu")
    cache = EmbeddingCache(args.cache_root, embedder.fingerprint)
    vectors, stats = embed_texts(pl.read_parquet(args.input), embedder, cache, chunk_size=args.chunk_size, log=log)
    vectors.write_parquet(args.output)
    Path(f"{args.output}.json").write_text(json.dumps(stats))


if __name__ == "__main__":
    main()
