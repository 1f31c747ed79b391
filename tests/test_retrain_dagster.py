"""Retrain, evaluate, promote and the nightly schedule, as real Dagster runs on the demo data."""

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fraud_assets.cli import main
from fraud_assets.defs.resources import default_resources
from fraud_assets.defs.schedules import nightly_retrain
from fraud_assets.evaluation import choose_threshold
from fraud_assets.model.calibration import CANDIDATES
from fraud_assets.model.io import load_model
from fraud_assets.runs import get_instance, run_ingest, run_retrain
from fraud_assets.sample import write_sample
from fraud_assets.settings import DEFAULT_EMBEDDING_MODEL

TAGS = {
    "Train/BatchLoss",
    "Train/EpochAccuracy",
    "Train/EpochLoss",
    "Train/LearningRate",
    "Val/EpochAccuracy",
    "Val/EpochLoss",
    "Val/F1Score",
    "Val/Precision",
    "Val/Recall",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Ingest three demo files and retrain once; shared by the tests below (read-only)."""
    root = tmp_path_factory.mktemp("retrain")
    mp = pytest.MonkeyPatch()
    mp.setenv("FRAUD_DATA_DIR", str(root / "data"))
    mp.setenv("DAGSTER_HOME", str(root / "dagster_home"))
    write_sample(root / "data" / "incoming", n_files=3, messages_per_file=160)
    instance = get_instance()
    files = run_ingest(instance, log=lambda m: None)
    assert [f["status"] for f in files] == ["ingested"] * 3
    schedule_before = _evaluate_schedule(instance)
    summary = run_retrain(instance)
    yield {"root": root / "data", "instance": instance, "summary": summary, "schedule_before": schedule_before}
    mp.undo()


def _evaluate_schedule(instance):
    with dg.build_schedule_context(instance=instance, resources={"fraud": default_resources()["fraud"]}) as context:
        return nightly_retrain(context)


def test_retrain_writes_report_metrics_and_promotes_the_first_model(trained):
    summary, root = trained["summary"], trained["root"]
    assert summary["success"] and summary["promoted"]
    assert "first model" in summary["promotion_reason"]
    metrics = json.loads((root / "reports" / "latest" / "metrics.json").read_text())
    for key in ("f1", "precision", "recall", "pr_auc", "roc_auc", "threshold"):
        assert 0.0 <= metrics["model"][key] <= 1.0, (key, metrics["model"])
    for name in ("tfidf_logreg", "embedding_logreg"):
        assert 0.0 <= metrics["baselines"][name]["f1"] <= 1.0 and 0.0 <= metrics["baselines"][name]["pr_auc"] <= 1.0
    counts = metrics["counts"]
    assert counts["train"] > counts["validation"] > 0 and counts["test"] > 0
    pointer = json.loads((root / "models" / "production.json").read_text())
    production = root / "models" / pointer["model"]
    card = json.loads((production / "model_card.json").read_text())
    # the run's own split: assets/training_dataset/<run name>.parquet, named in the card
    assert card["training_dataset"] == str(root / "assets" / "training_dataset" / f"{card['run_name']}.parquet")
    dataset = pl.read_parquet(card["training_dataset"])
    assert counts["train"] + counts["validation"] + counts["test"] == dataset.height
    assert metrics["model"]["f1"] > 0.8  # the demo data is learnable (though no longer trivially: hard negatives, noise)
    calibration = metrics["calibration"]
    assert calibration["before"] is not None and {"brier", "ece", "reliability"} <= set(calibration["before"])
    assert calibration["brier"] == pytest.approx(metrics["model"]["brier"])
    report = (root / "reports" / "latest" / "report.md").read_text()
    assert "tfidf" in report.lower() and (root / "reports" / "latest" / "pr_curve.png").read_bytes()[:4] == b"\x89PNG"

    assert card["threshold"] == metrics["model"]["threshold"] and summary["candidate"] == str(production)
    assert card["embedding_model"] == DEFAULT_EMBEDDING_MODEL and card["embedding_fingerprint"]
    # how the parts were chosen and calibrated travels with the model
    assert "linear" in CANDIDATES[card["selection"]["blend"]["chosen"]]  # with a linear part, always in the blend
    assert card["metrics"]["calibration"]["before"]["brier"] is not None
    assert "before calibration" in report
    # The parts were refitted on validation, so the report chose the threshold on the held-out
    # validation probabilities recorded at training (the rows matched), not on the model's own.
    model, _ = load_model(production)
    val = dataset.filter(pl.col("split") == "validation")
    held = model.validation_proba(val)
    assert model.held_out_validation is not None and not np.array_equal(held, model.predict_proba(val))
    assert card["threshold"] == choose_threshold(val["label"].to_numpy(), held)
    assert len(card["partitions"]) == 3
    assert list(production.glob("*.safetensors")) and not list(production.glob("*.pt")) and not list(production.glob("*.pkl"))

    runs = list((root / "tensorboard").iterdir())
    assert len(runs) == 1
    accumulator = EventAccumulator(str(runs[0]))
    accumulator.Reload()
    assert TAGS <= set(accumulator.Tags()["scalars"])


def test_worse_challenger_is_refused_and_the_run_still_succeeds(trained, tmp_path, capsys, monkeypatch):
    root, instance = trained["root"], trained["instance"]
    production = root / "models"
    champion_files = {p.relative_to(production): p.read_bytes() for p in production.rglob("*") if p.is_file()}
    champion_pointer = (production / "production.json").read_bytes()
    # a candidate refused long ago: a refusal prunes too (a streak of them must not fill the disk)
    stale = production / "candidates" / "20200101T000000Z-stale"
    stale.mkdir()
    (stale / "model_card.json").write_text("{}")
    monkeypatch.setenv("FRAUD_KEEP_MODELS", "1")
    promoted_before = instance.get_latest_materialization_event(dg.AssetKey("production_model")).run_id

    # A challenger that only sees the time of day for one epoch: clearly worse on the same split.
    # Left uncalibrated, so its report must not claim a calibration that never ran.
    weak = {"use_embedding": False, "use_ngrams": False, "use_text_stats": False, "max_epochs": 1, "calibrate": False}
    config = tmp_path / "weak.yaml"
    config.write_text(json.dumps({"ops": {"fraud_classifier": {"config": weak}}}))
    assert main(["retrain", "--json", "--config", str(config)]) == 0  # refusal is an outcome, not a failure
    summary = json.loads(capsys.readouterr().out)
    assert summary["success"] and summary["promoted"] is False
    assert "worse than champion" in summary["promotion_reason"]
    weak_card = json.loads((Path(summary["candidate"]) / "model_card.json").read_text())
    assert weak_card["selection"]["blend"]["chosen"] == "uncalibrated"
    assert weak_card["metrics"]["calibration"]["before"] is None
    assert instance.get_run_by_id(summary["run_id"]).status == dg.DagsterRunStatus.SUCCESS

    key = dg.AssetCheckKey(dg.AssetKey("production_model"), "not_worse_than_champion")
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    evaluation = record.event.dagster_event.event_specific_data
    assert record.run_id == summary["run_id"] and not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert (production / "production.json").read_bytes() == champion_pointer
    assert champion_files == {name: (production / name).read_bytes() for name in champion_files}
    assert instance.get_latest_materialization_event(dg.AssetKey("production_model")).run_id == promoted_before
    assert not stale.exists() and Path(summary["candidate"]).is_dir()  # the refused one is the newest: kept

    capsys.readouterr()
    assert main(["retrain", "--config", str(config)]) == 0
    assert "NOT promoted: challenger F1" in capsys.readouterr().out


def test_the_champion_is_not_judged_on_rows_it_was_trained_on(trained, tmp_path):
    # New data re-draws a stratified split: the challenger's test split can hold rows of the
    # champion's train split, where the champion looks perfect. The gate leaves them out.
    from fraud_assets.promotion import compare_with_champion

    production = trained["root"] / "models" / "production.json"
    card = json.loads((production.parent / json.loads(production.read_text())["model"] / "model_card.json").read_text())
    split = pl.read_parquet(card["training_dataset"])
    test_rows = int((split["split"] == "test").sum())
    moved = split.filter(pl.col("split") == "train").head(test_rows // 2)["text_hash"]
    leaky = split.with_columns(
        pl.when(pl.col("text_hash").is_in(moved.implode())).then(pl.lit("test")).otherwise("split").alias("split")
    )
    decision = compare_with_champion(production.parent / json.loads(production.read_text())["model"], production, leaky)
    assert decision.metadata["test_rows"] == test_rows + moved.len()
    assert decision.metadata["test_rows_compared"] == test_rows  # the champion's own train rows left out
    assert f"the {test_rows} of {test_rows + moved.len()} test rows the champion did not train on" in decision.reason
    # the same model on both sides: equal F1 on the rows compared, so it is promoted
    assert decision.promote and decision.metadata["challenger_f1_compared"] == decision.metadata["champion_f1"]
    plain = compare_with_champion(production.parent / json.loads(production.read_text())["model"], production, split)
    assert plain.metadata["test_rows_compared"] == test_rows and "same test split" in plain.reason


def test_scoring_computes_time_features_in_the_zone_the_model_was_trained_in(trained, tmp_path, monkeypatch):
    pointer = trained["root"] / "models" / "production.json"
    card = json.loads((pointer.parent / json.loads(pointer.read_text())["model"] / "model_card.json").read_text())
    assert card["timezone"] == "Asia/Shanghai"  # the default FRAUD_TIMEZONE the fixture trained under
    source = tmp_path / "in.csv"
    source.write_text(
        "text,sent_at\nare you up? can you talk,2026-03-01T01:30:00+08:00\nare you up? can you talk,2026-03-01 13:30:00\n"
        "lunch at noon?,1772330400\n"
    )
    outputs = []
    for zone in ("Asia/Shanghai", "UTC", "America/New_York"):
        monkeypatch.setenv("FRAUD_TIMEZONE", zone)
        out = tmp_path / f"scored-{zone.replace('/', '_')}.csv"
        assert main(["score", str(source), "-o", str(out)]) == 0
        outputs.append(pl.read_csv(out)["probability"].to_list())
    assert outputs[0] == outputs[1] == outputs[2]


def test_nightly_schedule_runs_only_when_new_data_arrived(trained):
    assert isinstance(trained["schedule_before"], dg.RunRequest)
    after = _evaluate_schedule(trained["instance"])
    assert isinstance(after, dg.SkipReason) and "no new partition" in after.skip_message
    incoming = trained["root"] / "incoming"
    (incoming / "late.csv").write_text("text,label\nA late message about your parcel,0\nTransfer now to the safe account,1\n")
    run_ingest(trained["instance"], log=lambda m: None)
    assert isinstance(_evaluate_schedule(trained["instance"]), dg.RunRequest)
    # a retrain that trains, then fails (here: a precision target missing): the next night tries again
    failed = run_retrain(trained["instance"], {"ops": {"evaluation_report": {"config": {"threshold_strategy": "precision"}}}})
    assert not failed["success"]
    assert trained["instance"].get_latest_materialization_event(dg.AssetKey("fraud_classifier")).run_id == failed["run_id"]
    assert isinstance(_evaluate_schedule(trained["instance"]), dg.RunRequest)


def test_evaluation_report_repeats_gives_mean_and_sd_over_splits(trained):
    root, instance = trained["root"], trained["instance"]
    summary = run_retrain(instance, {"ops": {"evaluation_report": {"config": {"repeats": 2}}}})
    assert summary["success"]
    metrics = json.loads((root / "reports" / "latest" / "metrics.json").read_text())
    repeated = metrics["repeated"]
    assert repeated["runs"] == 2 and repeated["seeds"] == [0, 1]
    for name in ("model", "tfidf_logreg"):
        assert 0.0 <= repeated[name]["f1"]["mean"] <= 1.0 and repeated[name]["f1"]["sd"] >= 0.0
    assert repeated["model_minus_tfidf"]["f1"]["sd"] is not None
    report = (root / "reports" / "latest" / "report.md").read_text()
    assert "Repeated evaluation (2 splits" in report and "±" in report
    # the demo data is split by time, which no seed changes: the second split is a test window earlier
    first, second = repeated["split_strategies"]
    assert first.startswith("time") and second.startswith(f"{first}, 1 test window(s) earlier")
    assert "a test window earlier" in report


def test_evaluation_report_alone_never_changes_the_model_in_production(trained):
    """Run alone, evaluation_report evaluates the latest candidate; when that one is in production,
    writing its card would break the hashes production.json pins (and so `score`, and the next gate)."""
    from fraud_assets.defs.assets.training import evaluation_report
    from fraud_assets.model.io import promote

    instance, pointer = trained["instance"], trained["root"] / "models" / "production.json"
    event = instance.get_latest_materialization_event(dg.AssetKey("fraud_classifier"))
    latest = Path(str(event.asset_materialization.metadata["dagster/uri"].value))
    promote(latest, pointer)  # the latest candidate in production, as after any promoted retrain
    files = {p.name: p.read_bytes() for p in latest.iterdir()}
    result = dg.materialize([evaluation_report], instance=instance, resources=default_resources(), raise_on_error=False)
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert not result.success and "is the model in production" in str(failure.step_failure_data.user_failure_data.description)
    assert {p.name: p.read_bytes() for p in latest.iterdir()} == files
    load_model(pointer)  # the pinned hashes still match


def test_a_champion_promoted_during_the_comparison_is_compared_with_again(trained, monkeypatch):
    """Two retrains overlap: the other one promotes while this one is comparing with the old champion."""
    from fraud_assets.defs.assets import training
    from fraud_assets.model.io import promote, update_card

    instance, models = trained["instance"], trained["root"] / "models"
    pointer = models / "production.json"
    in_production = json.loads(pointer.read_text())["model"]
    other = models / "candidates" / "20000101T000000Z-other"  # another run's evaluated candidate
    shutil.copytree(pointer.parent / in_production, other)
    update_card(other, run_name="other")
    real, calls = training.compare_with_champion, []

    def compare_while_another_run_promotes(*args, **kwargs):
        decision = real(*args, **kwargs)
        calls.append(decision.metadata.get("champion"))
        if len(calls) == 1:
            promote(other, pointer)  # the other retrain's promotion lands now
        return decision

    monkeypatch.setattr(training, "compare_with_champion", compare_while_another_run_promotes)
    result = dg.materialize([training.production_model], instance=instance, resources=default_resources())
    assert result.success and len(calls) == 2
    assert calls[1] == "other" != calls[0]  # the second comparison is with the model promoted meanwhile
    [check] = result.get_asset_check_evaluations()
    assert check.metadata["champion"].value == "other"
