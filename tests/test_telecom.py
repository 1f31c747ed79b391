"""The whole pipeline on the real Telecom_Fraud_Texts_5 files (skipped when ../shared is absent)."""

import json
import shutil

from fraud_assets.cli import main
from fraud_assets.readers import DEFAULT_CONFIG_PATH


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
    for path in telecom_dir.glob("*.csv"):
        shutil.copy(path, incoming / path.name)
    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("FRAUD_INGEST_CONFIG", str(config))

    assert main(["run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    files = out["files"]
    assert sum(f["rows_read"] for f in files) == 11_838  # 7,838 + 4 x 1,000: every line of label00 is a record
    assert all(f["rows_read"] == f["accepted"] + f["quarantined"] and f["status"] == "ingested" for f in files)

    retrain = out["retrain"]
    assert retrain["success"] and retrain["promoted"]
    model_f1, tfidf_f1 = retrain["model"]["f1"], retrain["baselines"]["tfidf_logreg"]["f1"]
    print(f"Telecom test F1: model {model_f1:.4f}, tfidf_logreg {tfidf_f1:.4f}, counts {retrain['counts']}")
    assert model_f1 >= 0.995
    assert model_f1 >= tfidf_f1

    scored = tmp_path / "scored.jsonl"
    assert main(["score", str(incoming / "label04-last.csv"), "-o", str(scored)]) == 0
    rows = [json.loads(line) for line in scored.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1000 and sum(r["label"] for r in rows) >= 990  # every label04 text is fraud
