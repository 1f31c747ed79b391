"""How each stage's time and memory grow with the number of messages.

    PYTHONPATH=. .venv/bin/python benchmarks/scale.py [--rows 100000 300000 1000000] [--files 5]
        [--stages register parse_validate embed time_features training_dataset train evaluate | prefill ingest]

For each N it writes N synthetic messages (about 165 bytes a row, mostly
Chinese, 20 % fraud, 2 % of labels flipped) as ``--files`` daily CSV files into a fresh landing
folder and runs each stage in its own process, printing its wall time and
the peak RSS of that process, so a stage's memory is its own:

- register: the landing sensor's registration (hash, durable copy to the archive);
- parse_validate: the real ``raw_messages`` and ``validated_messages`` assets,
  materialised per file through Dagster (Great Expectations included);
- embed: the real default embedder (torch, CPU unless CUDA is present) on a
  sample of ``--embed-sample`` messages; the time for all N is EXTRAPOLATED
  from that rate and printed as such. So that later stages can run, the
  embedding cache then gets random unit vectors of the model's dimension for
  every text (which makes the model's scores meaningless but its time and
  memory real) and the real ``message_embeddings`` asset runs per file, every
  text found in the cache (``asset_s_all_cached``);
- time_features: the real asset, per file;
- training_dataset: the join and split the asset runs (``build_training_dataset``);
- train: ``train_classifier`` with the default ``TrainConfig``;
- evaluate: ``evaluate`` on the test split, baselines included.

Two more stages, not run by default, measure the whole ``fraud-assets ingest``
process instead of one stage at a time (``--stages prefill ingest``):

- prefill: placeholder vectors in the embedding cache for every text of the
  landing files (hashed as validation hashes them), so that embedding is
  cache lookups: encoding 1M messages on a CPU takes hours, and its memory is
  bounded by the chunk of texts encoded at a time anyway;
- ingest: ``fraud-assets ingest --json`` in the stage's own process:
  registration, parsing, validation, embedding and time features of every file.

The reference in the same run is reading the CSV bytes from disk (``cat``-like).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("register", "parse_validate", "embed", "time_features", "training_dataset", "train", "evaluate", "prefill", "ingest")
DEFAULT_STAGES = STAGES[:7]
FRAUD = "您的账户存在异常 请立即点击链接 验证身份 安全账户 转账 公安局 冻结 中奖 刷单返利 客服退款 贷款额度 验证码".split()
NORMAL = "今天 晚上 一起吃饭 快递 已放在 门口 开会 改到 明天 周末 带孩子 去公园 谢谢 好的 收到 账单".split()
FILLER = "的 了 我们 您 请 在 和 是 hello ok 123 哦 吧 呢".split()


def write_files(landing: Path, rows: int, files: int, seed: int = 0) -> list[Path]:
    """``files`` daily CSV exports holding ``rows`` messages in all (message_id, text, label, sent_at)."""
    rng = np.random.default_rng(seed)
    paths = []
    for f in range(files):
        n = rows // files + (1 if f < rows % files else 0)
        fraud = rng.random(n) < 0.2
        lengths = rng.integers(14, 30, n)
        vocab_f, vocab_n, filler = np.array(FRAUD), np.array(NORMAL), np.array(FILLER)
        words = np.where(rng.random(lengths.sum()) < 0.5, filler[rng.integers(0, len(filler), lengths.sum())], "")
        # topical words come from the message's class 70 % of the time: separable, but not trivially
        topical = np.repeat(fraud, lengths) != (rng.random(lengths.sum()) < 0.3)
        words = np.where(
            words == "",
            np.where(
                topical,
                vocab_f[rng.integers(0, len(vocab_f), lengths.sum())],
                vocab_n[rng.integers(0, len(vocab_n), lengths.sum())],
            ),
            words,
        )
        cuts = np.cumsum(lengths)[:-1]
        texts = ["".join(chunk) for chunk in np.split(words, cuts)]
        day = np.datetime64("2026-03-01") + f
        stamps = (day + rng.integers(0, 86_400, n).astype("timedelta64[s]")).astype(str)
        frame = pl.DataFrame(
            {
                "message_id": [f"d{f:02d}-{i:08d}" for i in range(n)],
                "text": texts,
                "label": np.where(fraud != (rng.random(n) < 0.02), "defraud", "normal"),  # 2 % label noise
                "sent_at": [s.replace("T", " ") for s in stamps],
            }
        )
        path = landing / f"export_{day}.csv"
        frame.write_csv(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- stages (run in a child process)


def _partitions(instance) -> list[str]:
    from fraud_assets.defs.partitions import message_files

    return sorted(instance.get_dynamic_partitions(message_files.name))


def stage_register(instance, storage) -> dict:
    from fraud_assets.defs.partitions import message_files
    from fraud_assets.landing import register_files

    registration = register_files(storage, set(), max_new_files=1_000_000, time_budget=float("inf"))
    instance.add_dynamic_partitions(message_files.name, [f.partition_key for f in registration.new])
    return {"files": len(registration.new)}


def stage_parse_validate(instance, storage) -> dict:
    import dagster as dg

    from fraud_assets.defs.assets.ingest import raw_messages, validated_messages
    from fraud_assets.defs.resources import default_resources
    from fraud_assets.runs import file_summary

    totals = {"rows_read": 0, "accepted": 0, "quarantined": 0}
    for key in _partitions(instance):
        result = dg.materialize(
            [raw_messages, validated_messages], partition_key=key, instance=instance, resources=default_resources()
        )
        assert result.success, key
        for name, value in file_summary(storage, key).items():
            if name in totals:
                totals[name] += value
    return totals


def _placeholder_cache(storage, embedder, hashes: pl.Series, chunk: int = 2048) -> int:
    """Random unit vectors for ``hashes`` committed to the embedding cache, one shard per ``chunk`` texts
    as real embedding commits them, so that the embedding asset finds every text cached."""
    from fraud_assets.embeddings import EmbeddingCache

    cache, rng = EmbeddingCache(storage.embedding_cache_dir, embedder.fingerprint), np.random.default_rng(0)
    hashes = hashes.unique(maintain_order=True)
    for start in range(0, hashes.len(), chunk):
        part = hashes.slice(start, chunk)
        vectors = rng.normal(size=(part.len(), embedder.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        cache.add(pl.DataFrame({"text_hash": part, "embedding": pl.Series(vectors)}))
    return hashes.len()


def stage_embed(instance, storage, sample: int) -> dict:
    import dagster as dg

    from fraud_assets.asset_names import VALIDATED_MESSAGES
    from fraud_assets.defs.assets.features import message_embeddings
    from fraud_assets.defs.resources import EmbedderResource, default_resources

    keys = _partitions(instance)
    texts = storage.read_parquet(storage.asset_path(VALIDATED_MESSAGES, keys[0]), columns=["text"])["text"].head(sample).to_list()
    embedder = EmbedderResource.from_settings().get_embedder()
    embedder.encode(texts[:64])  # warm-up: model load and first-batch costs are not per message
    start = time.perf_counter()
    embedder.encode(texts)
    rate = len(texts) / (time.perf_counter() - start)
    embedder.release()
    # placeholder vectors so that the real asset and later stages run at full size (see the module docstring)
    hashes = pl.concat([storage.read_parquet(storage.asset_path(VALIDATED_MESSAGES, k), columns=["text_hash"]) for k in keys])
    total = _placeholder_cache(storage, embedder, hashes["text_hash"])
    start = time.perf_counter()
    for key in keys:
        assert dg.materialize([message_embeddings], partition_key=key, instance=instance, resources=default_resources()).success
    return {
        "messages_per_s": round(rate, 1),
        "extrapolated_s_for_all": round(total / rate, 1),
        "asset_s_all_cached": round(time.perf_counter() - start, 1),
    }


def stage_prefill(instance, storage, sample: int) -> dict:
    from fraud_assets.defs.resources import EmbedderResource
    from fraud_assets.text import normalize_texts, text_hashes

    texts = pl.concat([pl.read_csv(p, columns=["text"]) for p in sorted(storage.landing_dir.glob("*.csv"))])["text"]
    embedder = EmbedderResource.from_settings().get_embedder()
    return {"cached_texts": _placeholder_cache(storage, embedder, text_hashes(normalize_texts(texts)))}


def stage_ingest(instance, storage, sample: int) -> dict:
    import contextlib
    import io

    from fraud_assets.cli import main as fraud_assets

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = fraud_assets(["ingest", "--json"])
    files = json.loads(out.getvalue().strip().splitlines()[-1])["files"]
    return {"exit": code, **{k: sum(f[k] for f in files) for k in ("rows_read", "accepted", "quarantined")}}


def stage_time_features(instance, storage) -> dict:
    import dagster as dg

    from fraud_assets.defs.assets.features import time_features
    from fraud_assets.defs.resources import default_resources

    for key in _partitions(instance):
        assert dg.materialize([time_features], partition_key=key, instance=instance, resources=default_resources()).success
    return {}


def stage_training_dataset(instance, storage) -> dict:
    from fraud_assets.dataset import build_training_dataset, ingested_partitions, load_partitions

    keys = ingested_partitions(storage, _partitions(instance))
    dataset, _ = build_training_dataset(*load_partitions(storage, keys))
    storage.write_parquet(dataset, storage.root / "scale_dataset.parquet")
    return {"rows": dataset.height}


def stage_train(instance, storage) -> dict:
    from fraud_assets.model import TrainConfig, train_classifier
    from fraud_assets.model.io import save_model

    # as the fraud_classifier asset passes it: lazily, so the vectors are read only for the deep part
    dataset = pl.scan_parquet(storage.root / "scale_dataset.parquet")
    model = train_classifier(dataset, TrainConfig(), log=lambda message: print(message, file=sys.stderr))
    save_model(model, storage.root / "scale_model", {"run_name": "scale"})
    return {"epochs": len(model.history), "blend": model.selection.get("blend", {}).get("chosen")}


def stage_evaluate(instance, storage) -> dict:
    from fraud_assets.evaluation import evaluate
    from fraud_assets.model.io import load_model

    dataset = storage.read_parquet(storage.root / "scale_dataset.parquet")
    model, _ = load_model(storage.root / "scale_model")
    val, test = (dataset.filter(pl.col("split") == s) for s in ("validation", "test"))
    result = evaluate(dataset, model.validation_proba(val), model.predict_proba(test), plots=False)
    return {"test_rows": test.height, "f1": round(result.metrics["model"]["f1"], 4)}


def run_stage(name: str, root: Path, embed_sample: int) -> dict:
    from fraud_assets.runs import get_instance
    from fraud_assets.storage import Storage

    instance = get_instance()
    storage = Storage(root)
    start = time.perf_counter()
    stage = globals()[f"stage_{name}"]
    extra = stage(instance, storage, embed_sample) if name in ("embed", "prefill", "ingest") else stage(instance, storage)
    return {
        "stage": name,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mib": peak_rss_mib(),
        **extra,
    }


def peak_rss_mib() -> int:
    """This process's peak RSS. VmHWM, because ru_maxrss survives exec and would report the parent's."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) // 1024
    except (OSError, StopIteration):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


# --------------------------------------------------------------------------- driver


def read_reference(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(1 << 24):
                pass
    return time.perf_counter() - start


def benchmark(rows: int, files: int, stages: list[str], embed_sample: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fraud-scale-") as tmp:
        root = Path(tmp) / "data"
        (root / "incoming").mkdir(parents=True)
        paths = write_files(root / "incoming", rows, files)
        size = sum(p.stat().st_size for p in paths)
        print(f"\n## {rows:,} messages in {files} files, {size / 1e6:.0f} MB; reading the bytes: {read_reference(paths):.2f} s")
        env = {
            **os.environ,
            "FRAUD_DATA_DIR": str(root),
            "DAGSTER_HOME": str(Path(tmp) / "home"),
            "FRAUD_LANDING_SETTLE_SECONDS": "0",
        }
        print("| stage | wall s | peak RSS MiB | notes |\n|---|---|---|---|")
        for stage in stages:
            command = [sys.executable, __file__, "--stage", stage, "--root", str(root), "--embed-sample", str(embed_sample)]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(
                    f"| {stage} | failed | | {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode} |"
                )
                break
            result = json.loads(done.stdout.strip().splitlines()[-1])
            notes = ", ".join(f"{k}={v}" for k, v in result.items() if k not in ("stage", "seconds", "peak_rss_mib"))
            if stage == "embed":
                notes = f"measured on {embed_sample:,} messages, time for all EXTRAPOLATED: {notes}"
            print(f"| {stage} | {result['seconds']} | {result['peak_rss_mib']} | {notes} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--stages", nargs="+", default=list(DEFAULT_STAGES), choices=STAGES)
    parser.add_argument("--embed-sample", type=int, default=2000)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, Path(args.root), args.embed_sample)))
        return
    import platform

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    for rows in args.rows:
        benchmark(rows, args.files, args.stages, args.embed_sample)


if __name__ == "__main__":
    main()
