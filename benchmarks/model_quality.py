"""Model quality on every dataset under ../shared/datasets/ (and the demo sample), 3 splits each.

Runs the real pipeline through the commands users run: the files are landed
in a scratch storage root and ingested by `fraud-assets ingest` (parse, Great
Expectations, embedding with the configured model, time features), then
`fraud-assets retrain` (training_dataset -> fraud_classifier ->
evaluation_report -> production_model) runs once per seed, with FRAUD_SEED
and the classifier's seed set to it; each seed is a different stratified split. Per set it prints the model and every baseline as mean ± sd
of test F1 and PR-AUC, the paired difference model − TF-IDF with its sd, and
Brier / ECE before and after calibration.

Datasets: each folder under the shared datasets folder is one dataset when
its CSVs are category files (Telecom: ``label00-last.csv`` ...; those need
``other_values_are_fraud_categories = true``), otherwise each CSV is its own
dataset (chinese_reviews). ``sample`` is the generated demo data. ``--datasets DIR``
reads another folder laid out the same way (your own labelled exports, say).

Scratch roots are reused (``--root-prefix``), so embeddings are computed once
per dataset (cached by model fingerprint) and repeated runs only retrain.

    PYTHONPATH=. python benchmarks/model_quality.py [--seeds 0 1 2] [--only waimai_10k ...] [--datasets DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MODEL_NAMES = ("model", "tfidf_logreg", "embedding_logreg", "length_logreg")


def discover(shared: Path) -> dict[str, dict]:
    """``{name: {"files": [...], "fraud_categories": bool}}`` for every dataset found, plus the sample."""
    sets: dict[str, dict] = {}
    for folder in sorted(p for p in shared.glob("*") if p.is_dir()):
        csvs = sorted(folder.glob("*.csv"))
        if csvs and all(p.name.startswith("label") for p in csvs):
            sets[folder.name] = {"files": [str(p) for p in csvs], "fraud_categories": True}
        else:
            for p in csvs:
                sets[p.stem] = {"files": [str(p)], "fraud_categories": False}
    sets["sample"] = {"files": [], "fraud_categories": False}
    return sets


def _prepare_root(root: Path, spec: dict) -> None:
    """Land the files (or the demo sample) and write the ingest config once."""
    from fraud_assets.readers import DEFAULT_CONFIG_PATH

    incoming = root / "incoming"
    if incoming.exists():
        return
    incoming.mkdir(parents=True)
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    if spec["fraud_categories"]:
        text = text.replace("other_values_are_fraud_categories = false", "other_values_are_fraud_categories = true")
    (root / "ingest_config.toml").write_text(text, encoding="utf-8")
    if spec["files"]:
        for f in spec["files"]:
            shutil.copy(f, incoming / Path(f).name)
    else:
        from fraud_assets.sample import write_sample

        write_sample(incoming)


def _cli(args: list[str], env: dict[str, str]) -> dict:
    """Run ``fraud-assets ARGS --json`` (the command users run) and return its JSON summary."""
    cmd = [sys.executable, "-m", "fraud_assets.cli", *args, "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def run_one(name: str, spec: dict, root: Path, seeds: list[int]) -> list[dict]:
    """Ingest (cached after the first time) and retrain once per seed with `fraud-assets`; metrics per seed."""
    env = {
        **os.environ,
        "FRAUD_DATA_DIR": str(root),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "FRAUD_INGEST_CONFIG": str(root / "ingest_config.toml"),
        "FRAUD_LANDING_SETTLE_SECONDS": "0",
    }
    _prepare_root(root, spec)
    t0 = time.perf_counter()
    files = _cli(["ingest"], env)["files"]
    print(
        f"  [{name}] ingest {time.perf_counter() - t0:.0f}s, rows accepted {sum(f.get('accepted') or 0 for f in files)}",
        flush=True,
    )
    results = []
    for seed in seeds:
        t0 = time.perf_counter()
        # Each seed is a fresh model on a fresh split: a champion from another seed was trained on
        # rows of this split's test set, so the promotion gate would compare against a leaked model.
        (root / "models" / "production.json").unlink(missing_ok=True)
        config = root / f"seed{seed}.yaml"
        config.write_text(json.dumps({"ops": {"fraud_classifier": {"config": {"seed": seed}}}}), encoding="utf-8")
        summary = _cli(["retrain", "--config", str(config)], {**env, "FRAUD_SEED": str(seed)})
        if not summary.get("success"):
            raise SystemExit(f"[{name}] seed {seed}: the retrain run failed: {summary.get('error')}")
        metrics = json.loads((Path(summary["report"]).parent / "metrics.json").read_text(encoding="utf-8"))
        results.append(_row(name, seed, metrics, time.perf_counter() - t0))
        print(
            f"  [{name}] seed {seed}: model F1 {results[-1]['model']['f1']:.4f} "
            f"tfidf {results[-1]['tfidf_logreg']['f1']:.4f} ({results[-1]['seconds']:.0f}s)",
            flush=True,
        )
    return results


def _row(name: str, seed: int, metrics: dict, seconds: float) -> dict:
    row = {
        "dataset": name,
        "seed": seed,
        "seconds": seconds,
        "counts": metrics["counts"],
        "model": {k: metrics["model"][k] for k in ("f1", "pr_auc")},
    }
    for b, m in metrics["baselines"].items():
        row[b] = {k: m[k] for k in ("f1", "pr_auc")}
    cal = metrics["calibration"]
    before = cal.get("before") or {}
    row["calibration"] = {
        "brier_before": before.get("brier"),
        "brier_after": cal["brier"],
        "ece_before": before.get("ece"),
        "ece_after": cal["ece"],
    }
    return row


def summary_table(rows: list[dict]) -> str:
    """Markdown table: per dataset, mean ± sd of F1 and PR-AUC per model, paired difference, calibration."""
    from fraud_assets.repeats import summarise

    lines = [
        "| dataset | rows (train/val/test) | model F1 | TF-IDF+LR F1 | embedding LR F1 | length LR F1 | "
        "model − TF-IDF F1 (paired) | model PR-AUC | TF-IDF PR-AUC | Brier before → after | ECE before → after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        runs = [r for r in rows if r["dataset"] == name]
        s = summarise([{"seed": r["seed"], "scores": {m: r[m] for m in MODEL_NAMES if m in r}} for r in runs])

        # the helpers are called within this iteration only, so late binding of s / runs is harmless
        def ms(model: str, metric: str) -> str:
            if model not in s:  # noqa: B023
                return "n/a"
            d = s[model][metric]  # noqa: B023
            return f"{d['mean']:.4f} ± {d['sd']:.4f}"

        def cal(key: str) -> str:
            vals = [(r["calibration"][f"{key}_before"], r["calibration"][f"{key}_after"]) for r in runs]  # noqa: B023
            if any(v[0] is None for v in vals):
                return "n/a"
            return f"{sum(v[0] for v in vals) / len(vals):.4f} → {sum(v[1] for v in vals) / len(vals):.4f}"

        c = runs[0]["counts"]
        d = s["model_minus_tfidf"]["f1"]
        lines.append(
            f"| {name} ({len(runs)} seeds) | {c['train']}/{c['validation']}/{c['test']} | **{ms('model', 'f1')}** | "
            f"{ms('tfidf_logreg', 'f1')} | {ms('embedding_logreg', 'f1')} | {ms('length_logreg', 'f1')} | "
            f"{d['mean']:+.4f} ± {d['sd']:.4f} | {ms('model', 'pr_auc')} | {ms('tfidf_logreg', 'pr_auc')} | "
            f"{cal('brier')} | {cal('ece')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="dataset names (default: all)")
    parser.add_argument("--root-prefix", default="/tmp/mq_root_", help="scratch storage root per dataset: PREFIX<name>")
    parser.add_argument("--results", default="/tmp/model_quality.jsonl", help="one JSON line per (dataset, seed)")
    parser.add_argument("--datasets", type=Path, default=SHARED, help="folder of dataset folders (default: ../shared/datasets)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one dataset in this process
    args = parser.parse_args()

    sets = discover(args.datasets)
    if args.one:
        rows = run_one(args.one, sets[args.one], Path(args.root_prefix + args.one), args.seeds)
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        return
    names = args.only or list(sets)
    Path(args.results).unlink(missing_ok=True)
    for name in names:
        # one process per dataset: its own FRAUD_DATA_DIR / DAGSTER_HOME / ingest config
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--seeds",
            *map(str, args.seeds),
            "--root-prefix",
            args.root_prefix,
            "--results",
            args.results,
            "--datasets",
            str(args.datasets),
        ]
        subprocess.run(cmd, check=True)
    rows = [json.loads(line) for line in Path(args.results).read_text(encoding="utf-8").splitlines()]
    import platform

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads default; seeds {args.seeds}\n")
    print(summary_table(rows))


if __name__ == "__main__":
    main()
