"""`fraud-assets`: headless ingest, retrain, run, score, sample and dev.

Dagster and the model stack are imported inside each command so `--help`
stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fraud_assets.settings import PROJECT_ROOT, ConfigError, Settings


def _print_files(files: list[dict[str, Any]]) -> None:
    if not files:
        print("no files in the landing folder")
    for f in files:
        line = f"{f['status']:>11}  {f['file']}  rows_read={f['rows_read']} accepted={f['accepted']} quarantined={f['quarantined']}  [{f['partition']}]"
        print(line + (f"  reason: {f['reason']}" if f.get("reason") else ""))


def _print_retrain(summary: dict[str, Any]) -> None:
    if not summary["success"]:
        print(f"retrain failed: {summary.get('error')}", file=sys.stderr)
        return
    m, b = summary["model"], summary["baselines"]
    print(
        f"model      F1 {m['f1']:.4f}  precision {m['precision']:.4f}  recall {m['recall']:.4f}  PR-AUC {m['pr_auc']:.4f}  threshold {m['threshold']:.3f}"
    )
    for name, values in b.items():
        print(f"{name:<10} F1 {values['f1']:.4f}  PR-AUC {values['pr_auc']:.4f}")
    print(f"split      {summary['counts']}")
    print(("promoted: " if summary["promoted"] else "NOT promoted: ") + str(summary["promotion_reason"]))
    print(f"report     {summary['report']}")


def cmd_ingest(args: argparse.Namespace) -> int:
    from fraud_assets.runs import get_instance, run_ingest

    files = run_ingest(get_instance(), log=(lambda m: print(m, file=sys.stderr)) if args.json else print)
    print(json.dumps({"files": files}, ensure_ascii=False)) if args.json else _print_files(files)
    return 1 if any(f["status"] in ("quarantined", "failed") for f in files) else 0


def _positive_int(value: str) -> int:
    """argparse type: a count of at least 1, so ``--files 0`` is a usage error, not a traceback."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _run_config(path: str | None) -> dict[str, Any] | None:
    """Dagster run config from a YAML or JSON file, as the Launchpad takes it."""
    if path is None:
        return None
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())  # YAML errors span lines with a caret; the message is one line
        raise ConfigError(f"--config {path}: {detail}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--config {path}: expected a mapping of run config (ops: ...), got {type(config).__name__}")
    from fraud_assets.runs import retrain_run_config

    try:
        return retrain_run_config(config)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None


def cmd_retrain(args: argparse.Namespace) -> int:
    from fraud_assets.runs import get_instance, run_retrain

    run_config = _run_config(args.config)
    summary = run_retrain(get_instance(), run_config)
    print(json.dumps(summary, ensure_ascii=False, default=str)) if args.json else _print_retrain(summary)
    return 0 if summary["success"] else 1


def cmd_run(args: argparse.Namespace) -> int:
    from fraud_assets.runs import get_instance, run_ingest, run_retrain

    run_config = _run_config(args.config)
    instance = get_instance()
    files = run_ingest(instance, log=(lambda m: print(m, file=sys.stderr)) if args.json else print)
    summary = run_retrain(instance, run_config)
    if args.json:
        print(json.dumps({"files": files, "retrain": summary}, ensure_ascii=False, default=str))
    else:
        _print_files(files)
        _print_retrain(summary)
    return 0 if summary["success"] and not any(f["status"] in ("quarantined", "failed") for f in files) else 1


def cmd_score(args: argparse.Namespace) -> int:
    from fraud_assets.scoring import ScoringError, score_file
    from fraud_assets.storage import Storage

    settings = Settings.from_env()
    model_dir = args.model or str(Storage(settings.data_dir).production_pointer)
    try:
        summary = score_file(Path(args.input), Path(args.output), model_dir=model_dir, settings=settings)
    except ScoringError as exc:
        print(f"fraud-assets score: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from fraud_assets.sample import write_sample

    settings = Settings.from_env()
    target = Path(args.output) if args.output else settings.landing_dir
    paths = write_sample(target, seed=args.seed, n_files=args.files, messages_per_file=args.messages)
    for path in paths:
        print(path)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    import shutil

    from fraud_assets.runs import dagster_home

    # the `dg` of the interpreter running this command, so it works without an activated virtualenv
    dg_cli = shutil.which("dg", path=str(Path(sys.executable).parent)) or shutil.which("dg")
    if dg_cli is None:
        print("fraud-assets dev: `dg` not found; install dagster-dg-cli (a dependency of fraud_assets)", file=sys.stderr)
        return 2
    home = dagster_home()
    print(f"DAGSTER_HOME={home}", file=sys.stderr)
    # --use-active-venv: serve the code location from this interpreter, not a project .venv of dg's choosing
    command = [dg_cli, "dev", "--use-active-venv", "--port", str(args.port), *args.extra]
    os.chdir(PROJECT_ROOT)
    os.execv(command[0], command)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fraud-assets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="register new landed files and materialise their per-file assets")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_ingest)

    config_help = "YAML/JSON Dagster run config for the retrain, as in the Launchpad (ops: {fraud_classifier: {config: ...}})"
    p = sub.add_parser("retrain", help="train, evaluate and promote on every ingested file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--config", help=config_help)
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("run", help="ingest, then retrain")
    p.add_argument("--json", action="store_true")
    p.add_argument("--config", help=config_help)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("score", help="score a CSV/TSV/JSONL/Parquet file with the production model")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="output file (.csv, .jsonl or .parquet)")
    p.add_argument("--model", help="a model folder or pointer file (default: <root>/models/production.json, the promoted model)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("sample", help="write the demo dataset into the landing folder")
    p.add_argument("--output", help="folder (default: the landing folder)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--files", type=_positive_int, default=8)
    p.add_argument("--messages", type=_positive_int, default=400, help="messages per file")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("dev", help="start the Dagster UI (`dg dev`) with a persistent DAGSTER_HOME")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("extra", nargs=argparse.REMAINDER, help="more arguments for dg dev")
    p.set_defaults(func=cmd_dev)
    return parser


def check_configuration() -> Settings:
    """Read every setting and the ingest config now, so a mistake is one clear message, not a failed run."""
    from fraud_assets.readers import IngestConfig

    settings = Settings.from_env()
    IngestConfig.load(settings.ingest_config)
    return settings


def main(argv: list[str] | None = None) -> int:
    """Run one command; configuration mistakes print the setting and its value and exit with 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("ingest", "retrain", "run", "score"):
            check_configuration()
        return args.func(args)
    except ConfigError as exc:
        print(f"fraud-assets {args.command}: configuration error: {exc}", file=sys.stderr)
        if getattr(args, "json", False):  # scripts parse stdout, and must not get nothing
            print(json.dumps({"success": False, "error": f"configuration error: {exc}"}, ensure_ascii=False))
        return 2


if __name__ == "__main__":
    sys.exit(main())
