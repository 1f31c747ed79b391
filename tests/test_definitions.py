"""The code location: what it holds, that it loads without the heavy stack, and `dg check defs`."""

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_import_defers_heavy_modules():
    code = (
        "import sys, time; t = time.perf_counter(); import definitions; "
        "print(round(time.perf_counter() - t, 3)); "
        "print(','.join(m for m in ('torch', 'sentence_transformers', 'great_expectations', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    print(f"import definitions: {out[0]} s")
    assert out[1] == ""


def test_code_location_contents():
    from definitions import defs

    repo = defs().get_repository_def()
    assets = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert assets == {
        "raw_messages",
        "validated_messages",
        "message_embeddings",
        "time_features",
        "training_dataset",
        "fraud_classifier",
        "evaluation_report",
        "production_model",
    }
    checks = {(k.asset_key.to_user_string(), k.name) for k in repo.asset_graph.asset_check_keys}
    assert {
        ("raw_messages", "file_readable"),
        ("validated_messages", "rejected_share"),
        ("validated_messages", "expectation_suite"),
        ("message_embeddings", "vocabulary_coverage"),
        ("production_model", "not_worse_than_champion"),
    } <= checks
    assert {"ingest_job", "retrain_job"} <= {job.name for job in repo.get_all_jobs()}
    sensor = repo.get_sensor_def("landing_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    schedule = repo.get_schedule_def("nightly_retrain")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "Asia/Shanghai"


@pytest.mark.skipif(shutil.which("dg", path=str(Path(sys.executable).parent)) is None, reason="dagster-dg-cli not installed")
def test_dg_check_defs():
    dg_cli = shutil.which("dg", path=str(Path(sys.executable).parent))
    result = subprocess.run([dg_cli, "check", "defs"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("target", [["-w", "workspace.yaml"], []], ids=["workspace", "pyproject"])
def test_plain_dagster_loads_the_one_code_location(target):
    """`dagster dev -w workspace.yaml` and plain `dagster dev` (via [tool.dagster]) load the same
    location as `dg dev`; `definitions validate` loads it the way they do."""
    dagster_cli = shutil.which("dagster", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [dagster_cli, "definitions", "validate", *target], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "Validation successful for code location fraud_assets" in output
    assert "WARNING" not in output, output[-2000:]


def test_embedding_and_training_steps_carry_gpu_placement_tags():
    """What a cluster executor reads: dagster-k8s asks for a GPU, dagster-celery routes to the gpu queue."""
    import json

    from fraud_assets.definitions import defs

    definitions = defs()
    placed = {}
    for job_name in ("ingest_job", "retrain_job"):
        for node in definitions.resolve_job_def(job_name).nodes:
            placed[node.name] = node.definition.tags
    for step in ("message_embeddings", "fraud_classifier"):
        tags = placed[step]
        k8s = tags["dagster-k8s/config"]
        k8s = json.loads(k8s) if isinstance(k8s, str) else k8s
        assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert tags["dagster-celery/queue"] == "gpu"
    for step in (
        "raw_messages",
        "validated_messages",
        "time_features",
        "training_dataset",
        "evaluation_report",
        "production_model",
    ):
        assert "dagster-k8s/config" not in placed[step] and "dagster-celery/queue" not in placed[step]


def test_retrains_are_limited_to_one_at_a_time_in_the_written_instance(tmp_path, monkeypatch):
    from fraud_assets.definitions import defs
    from fraud_assets.runs import get_instance

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert defs().resolve_job_def("retrain_job").tags["fraud/job"] == "retrain"
    limits = get_instance().get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": "fraud/job", "value": "retrain", "limit": 1} in limits


def test_classifier_config_is_generated_from_train_config():
    """One source of truth: every TrainConfig knob is a Launchpad field with the same default, and the
    Launchpad's values (lists for tuples) come back as the same TrainConfig."""
    import dataclasses

    from fraud_assets.defs.assets.training import ClassifierConfig
    from fraud_assets.model import TrainConfig

    launchpad = ClassifierConfig().model_dump()
    defaults = TrainConfig().to_dict()
    assert set(launchpad) == set(defaults)
    for name, value in defaults.items():
        assert launchpad[name] == (list(value) if isinstance(value, tuple) else value), name
    assert TrainConfig.from_dict(launchpad) == TrainConfig()
    changed = ClassifierConfig(max_epochs=3, wide_views=["plain"], time_columns=["hour_sin"]).model_dump()
    assert TrainConfig.from_dict(changed) == dataclasses.replace(
        TrainConfig(), max_epochs=3, wide_views=("plain",), time_columns=("hour_sin",)
    )


def test_asset_name_constants_match_the_location():
    from definitions import defs
    from fraud_assets import asset_names

    repo = defs().get_repository_def()
    assert set(asset_names.ALL) == {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}


def test_ingest_job_runs_every_registered_feature_group_with_its_checks():
    from definitions import defs
    from fraud_assets.asset_names import RAW_MESSAGES
    from fraud_assets.features import per_file_outputs

    job = defs().resolve_job_def("ingest_job")
    assets = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert assets == {RAW_MESSAGES, *per_file_outputs()}
    checks = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert {"file_readable", "expectation_suite", "rejected_share", "vocabulary_coverage"} <= checks
