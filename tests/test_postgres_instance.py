"""The Dagster instance on a real PostgreSQL server: sensor, ingest and retrain, with the
dagster.yaml the README documents."""

import json
import re
from pathlib import Path

import dagster as dg
import pytest
from services.postgres import pg_bin, postgres_server

from fraud_assets.defs.partitions import message_files
from fraud_assets.defs.resources import FraudSettings
from fraud_assets.defs.sensors import landing_sensor
from fraud_assets.runs import get_instance, run_ingest, run_retrain
from fraud_assets.sample import write_sample

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.skipif(pg_bin("pg_ctl") is None, reason="PostgreSQL server not installed (.ci/run installs it)")


def documented_dagster_yaml() -> str:
    match = re.search(r"<!-- dagster.postgres.yaml -->\n```yaml\n(.*?)```", README.read_text(), re.S)
    assert match, "the README's Postgres dagster.yaml block is missing"
    return match.group(1)


@pytest.fixture
def pg_instance(tmp_path, monkeypatch):
    with postgres_server() as url:
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(documented_dagster_yaml())
        monkeypatch.setenv("DAGSTER_PG_URL", url)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "data"))
        instance = get_instance()
        try:
            yield instance, url, tmp_path / "data"
        finally:
            instance.dispose()


def test_sensor_ingest_and_retrain_on_postgres(pg_instance):
    import sqlalchemy as sa
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    instance, url, data = pg_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    write_sample(data / "incoming", n_files=2, messages_per_file=150)

    fraud = FraudSettings(data_dir=str(data), landing_dir=str(data / "incoming"), landing_settle_seconds=0)
    with dg.build_sensor_context(instance=instance, resources={"fraud": fraud}) as context:
        tick = landing_sensor(context)
    assert len(tick.run_requests) == 2
    for request in tick.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))

    files = run_ingest(instance, log=lambda m: None)
    assert [f["status"] for f in files] == ["ingested", "ingested"]
    assert all(f["rows_read"] == f["accepted"] + f["quarantined"] for f in files)
    summary = run_retrain(instance)
    assert summary["success"] and summary["promoted"], summary.get("error")

    # everything the UI would show lives in PostgreSQL, read back over a fresh connection
    engine = sa.create_engine(url)
    with engine.connect() as db:
        runs = dict(db.execute(sa.text("select status, count(*) from runs group by status")).all())
        partitions = db.execute(sa.text("select count(*) from dynamic_partitions")).scalar()
        checks = db.execute(sa.text("select count(*) from asset_check_executions")).scalar()
    engine.dispose()
    assert runs == {"SUCCESS": 3}  # two ingest runs and the retrain
    assert partitions == 2 and checks >= 2 * 4 + 1
    assert sorted(instance.get_dynamic_partitions(message_files.name)) == sorted(f["partition"] for f in files)

    # a second tick against the same instance: nothing new
    with dg.build_sensor_context(instance=instance, resources={"fraud": fraud}, cursor=tick.cursor) as context:
        again = landing_sensor(context)
    assert not again.run_requests and not again.dynamic_partitions_requests
    assert json.loads((data / "reports" / "latest" / "metrics.json").read_text())["model"]["f1"] > 0
