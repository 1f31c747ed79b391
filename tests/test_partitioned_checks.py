"""Per-file checks are partitioned: each file's result is kept and blocks only that file."""

import json

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from fraud_assets.cli import main

GOOD = "text,label\n您的验证码是4821,0\n【公安局】您涉嫌洗钱请转账至安全账户,1\nYour parcel is waiting,0\n"
MOSTLY_BAD = "text,label\n" + "".join(f"msg {i},{'x' if i % 2 else 0}\n" for i in range(10))
# one scam template sent to many people, and a notice: 16 of 20 rows repeat a text
TEMPLATES = "text,label\n" + "【ETC】您的卡已失效，请点击链接认证,1\n快递已放在门口,0\n" * 10


def _check_status(instance, asset: str, check: str, partition: str) -> AssetCheckExecutionRecordStatus:
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [key], partition_filter=PartitionKeyFilter(key=partition)
    )
    return records[key].status


def test_each_file_keeps_its_own_check_results(env, capsys):
    (env / "incoming" / "good.csv").write_text(GOOD)
    (env / "incoming" / "mostly_bad.csv").write_text(MOSTLY_BAD)
    (env / "incoming" / "templates.csv").write_text(TEMPLATES)
    assert main(["ingest", "--json"]) == 0
    files = {f["file"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    good, bad = files["good.csv"]["partition"], files["mostly_bad.csv"]["partition"]
    assert files["mostly_bad.csv"]["status"] == "blocked" and files["good.csv"]["status"] == "ingested"
    # repeated texts are kept once and recorded, but they are not rejections: the file is not blocked
    templates = files["templates.csv"]
    assert templates["status"] == "ingested"
    assert (templates["rows_read"], templates["accepted"], templates["quarantined"]) == (20, 2, 18)

    instance = dg.DagsterInstance.get()
    # the bad file was ingested second (sorted names): a single unpartitioned result would show its
    # failure for both, or hide it behind the next pass
    assert _check_status(instance, "validated_messages", "rejected_share", bad) == AssetCheckExecutionRecordStatus.FAILED
    assert _check_status(instance, "validated_messages", "rejected_share", good) == AssetCheckExecutionRecordStatus.SUCCEEDED
    assert (
        _check_status(instance, "validated_messages", "rejected_share", templates["partition"])
        == AssetCheckExecutionRecordStatus.SUCCEEDED
    )
    for partition in (good, bad):
        assert _check_status(instance, "raw_messages", "file_readable", partition) == AssetCheckExecutionRecordStatus.SUCCEEDED
    assert _check_status(instance, "message_embeddings", "vocabulary_coverage", good) in (
        AssetCheckExecutionRecordStatus.SUCCEEDED,
        AssetCheckExecutionRecordStatus.FAILED,  # a WARN: the default model reads little Chinese
    )
    # the blocked file's downstream assets were not built; the good file's were
    assert instance.get_materialized_partitions(dg.AssetKey("message_embeddings")) == {good, templates["partition"]}


def test_catalog_metadata_is_standard(env, capsys):
    (env / "incoming" / "good.csv").write_text(GOOD)
    main(["ingest", "--json"])
    key = json.loads(capsys.readouterr().out)["files"][0]["partition"]
    instance = dg.DagsterInstance.get()
    for asset, rows in (("raw_messages", 3), ("validated_messages", 3), ("message_embeddings", 3), ("time_features", 3)):
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        metadata = event.asset_materialization.metadata
        assert event.asset_materialization.partition == key
        assert metadata["dagster/partition_row_count"].value == rows
        columns = {c.name for c in metadata["dagster/column_schema"].value.columns}
        assert "message_id" in columns
        assert metadata["dagster/uri"].value.endswith(f"{asset}/{key}.parquet")
