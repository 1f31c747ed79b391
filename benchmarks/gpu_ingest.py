"""The embedding step of a full Dagster ingest on a CUDA GPU, against raw sentence-transformers encode in the same run.

    PYTHONPATH=. python benchmarks/gpu_ingest.py [--rows 100000] [--files 5] [--json results.json]

1. Writes ``--rows`` synthetic messages (``benchmarks/scale.py``'s generator:
   short, mostly Chinese) as ``--files`` daily CSV files into a fresh landing folder.
2. Raw reference: ``SentenceTransformer.encode`` of the same texts with the
   embedder's CUDA settings (fp16, batch 256, normalised), at max_seq_length 256
   (the embedder's default) and 128, each after a warm-up.
3. ``fraud-assets ingest --json`` in a child process against a fresh
   ``DAGSTER_HOME`` and data root: registration, parsing, Great Expectations
   validation, embedding and time features of every file, as users run it.
   Per partition it reads the ``message_embeddings`` materialisation's own
   figures: texts newly embedded, seconds inside ``encode`` and seconds of the
   whole step (cache lookups and shard writes included).
4. Prints messages/s of each and the ratios to raw encode at 256.

The model is loaded in the child process, so the ingest's first chunk also
pays CUDA's start-up (kernel selection, allocator warm-up); raw encode does
not, because it is warmed up first. ``--device cpu`` runs the same on a CPU
(slowly: use a few thousand rows) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import write_files  # noqa: E402


def raw_encode(texts: list[str], device: str, max_seq_length: int, batch_size: int) -> dict:
    """Messages/s of plain ``encode`` on the embedder's model, after a warm-up on the first 2,048 texts."""
    import torch
    from sentence_transformers import SentenceTransformer

    from fraud_assets.embeddings import resolve_model_source

    model = SentenceTransformer(resolve_model_source("all-MiniLM-L6-v2"), device=device, local_files_only=True)
    if device == "cuda":
        model.half()
    model.eval()
    model.max_seq_length = max_seq_length
    kwargs = dict(batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    model.encode(texts[:2048], **kwargs)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.encode(texts, **kwargs)
    seconds = time.perf_counter() - start
    return {
        "max_seq_length": max_seq_length,
        "texts": len(texts),
        "seconds": round(seconds, 3),
        "msg_per_s": round(len(texts) / seconds, 1),
    }


def embedding_steps(home: Path) -> list[dict]:
    """The figures each partition's latest ``message_embeddings`` materialisation recorded."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    records = instance.fetch_materializations(dg.AssetKey("message_embeddings"), limit=1000).records
    steps = []
    for record in records:
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        steps.append({k: meta.get(k) for k in ("rows", "newly_embedded", "encode_seconds", "seconds", "device")})
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256, help="the embedder's CUDA default")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rows": args.rows, "files": args.files}
    if args.device == "cuda":
        import torch

        results["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="fraud-gpu-") as tmp:
        root = Path(tmp) / "data"
        (root / "incoming").mkdir(parents=True)
        paths = write_files(root / "incoming", args.rows, args.files)
        texts = pl.concat([pl.read_csv(p, columns=["text"]) for p in paths])["text"].unique(maintain_order=True).to_list()
        results["unique_texts"] = len(texts)
        results["raw"] = [raw_encode(texts, args.device, n, args.batch_size) for n in (256, 128)]
        print(json.dumps(results["raw"]), flush=True)

        env = {
            **os.environ,
            "FRAUD_DATA_DIR": str(root),
            "DAGSTER_HOME": str(Path(tmp) / "home"),
            "FRAUD_LANDING_SETTLE_SECONDS": "0",
            "FRAUD_DEVICE": args.device,
        }
        Path(env["DAGSTER_HOME"]).mkdir()
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "fraud_assets.cli", "ingest", "--json"], env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"ingest failed ({done.returncode}): {done.stderr[-3000:]}")
        files = json.loads(done.stdout.strip().splitlines()[-1])["files"]
        steps = embedding_steps(Path(env["DAGSTER_HOME"]))
        embedded = sum(s["newly_embedded"] for s in steps)
        encode_s, step_s = sum(s["encode_seconds"] for s in steps), sum(s["seconds"] for s in steps)
        raw = results["raw"][0]["msg_per_s"]
        results["ingest"] = {
            "wall_seconds": round(wall, 1),
            "rows_read": sum(f["rows_read"] for f in files),
            "accepted": sum(f["accepted"] for f in files),
            "statuses": sorted({f["status"] for f in files}),
            "embedding_steps": steps,
            "newly_embedded": embedded,
            "encode_msg_per_s": round(embedded / encode_s, 1),
            "step_msg_per_s": round(embedded / step_s, 1),
            "encode_vs_raw": round(embedded / encode_s / raw, 3),
            "step_vs_raw": round(embedded / step_s / raw, 3),
        }
    print(json.dumps(results, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
