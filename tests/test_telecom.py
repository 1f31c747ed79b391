"""The whole pipeline on the real Telecom_Fraud_Texts_5 files (skipped when ../shared is absent)."""

import json

from fraud_assets.cli import main
from fraud_assets.readers import DEFAULT_CONFIG_PATH

# The first lines of each file: every file's quirks (label00's stray quote at lines 378-402, label04's
# GB18030), at 40 % of the characters to embed. The whole set took 9 of CI's 24 minutes of tests;
# benchmarks/model_quality.py runs all of it, with 3 splits.
FIRST_LINES = {
    "label00-last.csv": 3000,
    "label01-last.csv": 400,
    "label02-last.csv": 400,
    "label03-last.csv": 400,
    "label04-last.csv": 400,
}


def test_telecom_end_to_end(telecom_dir, tmp_path, monkeypatch, capsys):
    config = tmp_path / "ingest_config.toml"
    config.write_text(
        DEFAULT_CONFIG_PATH.read_text(encoding="utf-8").replace(
            "other_values_are_fraud_categories = false", "other_values_are_fraud_categories = true"
        ),
        encoding="utf-8",
    )
    incoming = tmp_path / "data" / "incoming"
    incoming.mkdir(parents=True)
    records = 0
    for path in sorted(telecom_dir.glob("*.csv")):
        lines = path.read_bytes().split(b"\n")  # GB18030 never uses the byte 0x0A inside a character
        head = lines[: 1 + FIRST_LINES[path.name]]
        (incoming / path.name).write_bytes(b"\n".join(head) + b"\n")
        records += len(head) - 1  # every line after the header is one record, none spans lines
    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("FRAUD_INGEST_CONFIG", str(config))

    assert main(["run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    files = out["files"]
    assert records == 4600 and sum(f["rows_read"] for f in files) == records
    assert all(f["rows_read"] == f["accepted"] + f["quarantined"] and f["status"] == "ingested" for f in files)

    retrain = out["retrain"]
    assert retrain["success"] and retrain["promoted"]
    model_f1, tfidf_f1 = retrain["model"]["f1"], retrain["baselines"]["tfidf_logreg"]["f1"]
    print(f"Telecom test F1: model {model_f1:.4f}, tfidf_logreg {tfidf_f1:.4f}, counts {retrain['counts']}")
    assert model_f1 >= 0.995
    assert model_f1 >= tfidf_f1

    scored = tmp_path / "scored.jsonl"
    assert main(["score", str(telecom_dir / "label04-last.csv"), "-o", str(scored)]) == 0  # 600 of them never seen
    rows = [json.loads(line) for line in scored.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1000 and sum(r["label"] for r in rows) >= 990  # every label04 text is fraud
