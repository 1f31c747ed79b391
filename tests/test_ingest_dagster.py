"""Sensor, partitions and `fraud-assets ingest` against a real Dagster instance."""

import json
import shutil

import dagster as dg
import numpy as np
import polars as pl

from fraud_assets.cli import main
from fraud_assets.defs.partitions import message_files
from fraud_assets.defs.resources import FraudSettings
from fraud_assets.defs.sensors import landing_sensor
from fraud_assets.runs import get_instance

GOOD = "text,label,sent_at\n您的验证码是4821,0,2026-03-01 10:00:00\n【公安局】您涉嫌洗钱请转账至安全账户,1,2026-03-01 23:10:00\nYour parcel is waiting,0,2026-03-02 09:00:00\n"


def evaluate_sensor(instance, fraud, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"fraud": fraud})
    result = landing_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_sensor_adds_one_partition_and_run_per_new_file(env):
    instance = dg.DagsterInstance.ephemeral()
    fraud = FraudSettings(data_dir=str(env), landing_dir=str(env / "incoming"), landing_settle_seconds=0)
    (env / "incoming" / "day1.csv").write_text(GOOD)
    (env / "incoming" / "day2.csv").write_text(GOOD.replace("4821", "9999"))
    (env / "incoming" / ".day3.csv.tmp").write_text(GOOD)  # still being written

    first = evaluate_sensor(instance, fraud)
    keys = sorted(r.partition_key for r in first.run_requests)
    assert len(keys) == 2 and all(k.startswith("day") for k in keys)
    assert [r.run_key for r in first.run_requests] == [r.partition_key for r in first.run_requests]
    assert sorted(instance.get_dynamic_partitions(message_files.name)) == keys
    assert (env / "archive" / f"{keys[0]}.csv").read_text() in (GOOD, GOOD.replace("4821", "9999"))

    # Not ingested yet (no runs in this test), so the same run keys are asked again: Dagster
    # launches one run per run_key, so nothing new is launched.
    second = evaluate_sensor(instance, fraud, first.cursor)
    assert not second.dynamic_partitions_requests
    assert {r.run_key for r in second.run_requests} == set(keys)

    shutil.copy(env / "incoming" / "day1.csv", env / "incoming" / "day1_again.csv")  # identical re-drop
    third = evaluate_sensor(instance, fraud, second.cursor)
    assert not third.dynamic_partitions_requests
    assert {r.run_key for r in third.run_requests} == set(keys)

    (env / "incoming" / "day1.csv").write_text(GOOD + "new line of text,0,2026-03-03 10:00:00\n")  # changed file
    fourth = evaluate_sensor(instance, fraud, third.cursor)
    [added] = fourth.dynamic_partitions_requests[0].partition_keys
    assert added.startswith("day1-") and added not in keys
    assert {r.run_key for r in fourth.run_requests} == {*keys, added}
    assert len(instance.get_dynamic_partitions(message_files.name)) == 3


def test_sensor_retries_a_registered_partition_until_it_is_ingested(env, capsys):
    from fraud_assets.landing import partition_key_for

    landed = env / "incoming" / "day1.csv"
    landed.write_text(GOOD)
    fraud = FraudSettings(data_dir=str(env), landing_dir=str(env / "incoming"), landing_settle_seconds=0)
    instance = get_instance()
    # registered, but its run request was lost (the daemon died mid-tick, or it was added by hand)
    key = partition_key_for(landed)
    instance.add_dynamic_partitions(message_files.name, [key])
    result = evaluate_sensor(instance, fraud)
    assert [r.run_key for r in result.run_requests] == [key]

    assert main(["ingest"]) == 0
    done = evaluate_sensor(instance, fraud, result.cursor)
    assert not done.run_requests and "no new files" in done.skip_reason.skip_message


def test_sensor_waits_for_files_to_settle(env):
    instance = dg.DagsterInstance.ephemeral()
    fraud = FraudSettings(data_dir=str(env), landing_dir=str(env / "incoming"), landing_settle_seconds=60)
    (env / "incoming" / "fresh.csv").write_text(GOOD)
    assert not evaluate_sensor(instance, fraud).run_requests


def test_ingest_cli_end_to_end(env, capsys):
    incoming = env / "incoming"
    (incoming / "good.csv").write_text(GOOD)
    (incoming / "junk.csv").write_bytes(bytes(range(256)) * 50)
    bad_rows = "text,label\n" + "".join(f"msg {i},{'x' if i % 2 else 0}\n" for i in range(10))
    (incoming / "mostly_bad.csv").write_text(bad_rows)

    assert main(["ingest", "--json"]) == 1  # junk.csv was quarantined whole
    files = {f["file"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    for f in files.values():
        assert f["rows_read"] == f["accepted"] + f["quarantined"]
    assert files["good.csv"]["status"] == "ingested" and files["good.csv"]["accepted"] == 3
    assert files["junk.csv"]["status"] == "quarantined"
    assert files["mostly_bad.csv"]["status"] == "blocked"  # 50% rejected > 20% limit
    assert files["mostly_bad.csv"]["quarantined"] == 5

    key = files["good.csv"]["partition"]
    embeddings = pl.read_parquet(env / "assets" / "message_embeddings" / f"{key}.parquet")
    assert embeddings.height == 3 and embeddings["embedding"].dtype.size == 384
    junk_q = pl.read_parquet(env / "quarantine" / "raw_messages" / f"{files['junk.csv']['partition']}.parquet")
    assert junk_q["stage"].to_list() == ["file"] and "binary" in junk_q["reason"][0]

    instance = dg.DagsterInstance.get()
    materialized = instance.get_materialized_partitions(dg.AssetKey("message_embeddings"))
    assert materialized == {key}
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("validated_messages"), "rejected_share")]
    )
    assert checks, "asset check results are recorded in the instance"
    runs_before = len(instance.get_runs())

    # identical re-drop and a second ingest: nothing new is materialised
    shutil.copy(incoming / "good.csv", incoming / "good_copy.csv")
    main(["ingest", "--json"])
    again = {f["file"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    assert again["good.csv"]["status"] == "unchanged"
    assert again["good_copy.csv"]["status"] == "duplicate"
    assert again["good_copy.csv"]["partition"] == key
    # the junk and blocked files are retried (2 runs), the good ones are not
    assert len(instance.get_runs()) - runs_before == 2
    assert len(instance.get_dynamic_partitions(message_files.name)) == 3


def _latest_embedding_metadata(instance):
    event = instance.get_latest_materialization_event(dg.AssetKey("message_embeddings"))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_known_texts_are_not_embedded_again_and_model_settings_never_mix(env, capsys):
    from fraud_assets.defs.assets import features
    from fraud_assets.defs.jobs import RUN_CONFIG
    from fraud_assets.defs.resources import EmbedderResource, default_resources

    incoming = env / "incoming"
    (incoming / "first.csv").write_text(GOOD)
    main(["ingest", "--json"])
    instance = dg.DagsterInstance.get()
    first = _latest_embedding_metadata(instance)
    assert first["newly_embedded"] == 3 and first["reused"] == 0

    # another file with the same texts (other ids and times): nothing new to embed
    (incoming / "second.csv").write_text(GOOD.replace("2026-03-0", "2026-04-0"))
    main(["ingest", "--json"])
    files = {f["file"]: f for f in json.loads(capsys.readouterr().out.splitlines()[-1])["files"]}
    assert files["second.csv"]["status"] == "ingested"
    second = _latest_embedding_metadata(instance)
    assert second["newly_embedded"] == 0 and second["reused"] == 3

    # a different model setting re-embeds everything and replaces the partition's vectors whole
    key = files["first.csv"]["partition"]
    path = env / "assets" / "message_embeddings" / f"{key}.parquet"
    before = pl.read_parquet(path)
    resources = {**default_resources(), "embedder": EmbedderResource(max_seq_length=8)}
    result = dg.materialize(
        [features.message_embeddings], partition_key=key, instance=instance, resources=resources, run_config=RUN_CONFIG
    )
    metadata = result.asset_materializations_for_node("message_embeddings")[0].metadata
    assert metadata["newly_embedded"].value == 3
    assert metadata["fingerprint"].value != first["fingerprint"]
    after = pl.read_parquet(path)
    assert after.height == before.height
    assert all(a != b for a, b in zip(after["embedding"].to_list(), before["embedding"].to_list()))

    # the two partitions now hold vectors of two settings: training refuses to mix them, naming the stale one
    from fraud_assets.defs.assets.training import training_dataset

    other = files["second.csv"]["partition"]
    for setting, stale in ((default_resources(), key), (resources, other)):
        result = dg.materialize([training_dataset], instance=instance, resources=setting, raise_on_error=False)
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.message
        assert "message_embeddings of 1 of 2 partitions were computed with another embedding" in message and stale in message
    dg.materialize(
        [features.message_embeddings], partition_key=other, instance=instance, resources=resources, run_config=RUN_CONFIG
    )
    assert dg.materialize([training_dataset], instance=instance, resources=resources).success  # one setting again

    # time features of one partition computed in another zone: the same refusal, naming it
    from fraud_assets.defs.resources import FraudSettings

    utc = {**resources, "fraud": FraudSettings.from_settings(timezone="UTC")}
    assert resources["fraud"].timezone != "UTC"
    dg.materialize([features.time_features], partition_key=key, instance=instance, resources=utc)
    result = dg.materialize([training_dataset], instance=instance, resources=resources, raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "time_features of 1 of 2 partitions were computed with another FRAUD_TIMEZONE" in message and key in message


def test_a_file_ingested_in_small_batches_gives_the_tables_of_one_batch(env):
    """Parse, validate and embed a batch of 2 rows at a time: the same tables as in one batch."""
    from fraud_assets.defs.assets import features, ingest
    from fraud_assets.defs.jobs import RUN_CONFIG
    from fraud_assets.defs.resources import default_resources

    lines = [f"message number {i} about parcel {i * 7},{i % 2},2026-03-0{1 + i % 9} 1{i % 10}:00:00" for i in range(11)]
    lines += ["message number 3 about parcel 21,1,2026-03-05 10:00:00", "no label here,maybe,2026-03-05 10:00:00"]
    lines += ['"a quoted message\nover two lines",1,2026-03-06 08:00:00']
    (env / "incoming" / "batched.csv").write_text("text,label,sent_at\n" + "\n".join(lines) + "\n")
    instance = get_instance()
    fraud = FraudSettings.from_settings(landing_settle_seconds=0)
    evaluate_sensor(instance, fraud)
    (key,) = instance.get_dynamic_partitions(message_files.name)
    assets = [ingest.raw_messages, ingest.validated_messages, features.message_embeddings, features.time_features]

    tables = {}
    for batch_rows in (2, 100_000):
        resources = {**default_resources(), "fraud": FraudSettings.from_settings(ingest_batch_rows=batch_rows)}
        result = dg.materialize(assets, partition_key=key, instance=instance, resources=resources, run_config=RUN_CONFIG)
        assert result.success
        metadata = {
            name: result.asset_materializations_for_node(name)[0].metadata
            for name in ("validated_messages", "message_embeddings")
        }
        tables[batch_rows] = {
            name: pl.read_parquet(env / "assets" / name / f"{key}.parquet")
            for name in ("raw_messages", "validated_messages", "message_embeddings", "time_features")
        }
        accepted = metadata["validated_messages"]["accepted"].value
        embedded = metadata["message_embeddings"]
        assert accepted == 12 and embedded["rows"].value == accepted  # 14 records: a duplicate text, a bad label
        assert embedded["newly_embedded"].value + embedded["reused"].value == accepted
        assert embedded["newly_embedded"].value == (accepted if batch_rows == 2 else 0)  # the second run reuses the cache

    for name in ("raw_messages", "validated_messages", "time_features"):
        assert tables[2][name].equals(tables[100_000][name]), name
    small, whole = tables[2]["message_embeddings"], tables[100_000]["message_embeddings"]
    assert small.drop("embedding").equals(whole.drop("embedding"))
    direct = default_resources()["embedder"].get_embedder().encode(tables[2]["validated_messages"]["text"].to_list())
    assert np.allclose(small["embedding"].to_numpy(), direct, atol=1e-5)
