import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
TELECOM = SHARED / "datasets" / "telecom_fraud_texts"

# Tests never read the user's environment or write into the project's data/.
for name in ("FRAUD_DATA_DIR", "FRAUD_LANDING_DIR", "FRAUD_INGEST_CONFIG", "FRAUD_EMBEDDING_MODEL", "FRAUD_DEVICE"):
    os.environ.pop(name, None)
os.environ.setdefault("TQDM_DISABLE", "1")

# The longest files first (measured, --durations): CI runs two workers (pytest-xdist, whole files per
# worker), and the Telecom run alone takes 4-5 minutes; started last, it ran on after all the rest.
LONGEST_FIRST = ("test_telecom.py", "test_concurrency.py", "test_object_store.py", "test_dagster_dev_e2e.py", "test_faults.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    """A fresh storage root (with its landing folder) and DAGSTER_HOME for one test; returns the root."""
    data = tmp_path / "data"
    (data / "incoming").mkdir(parents=True)
    monkeypatch.setenv("FRAUD_DATA_DIR", str(data))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return data


@pytest.fixture
def telecom_dir() -> Path:
    if not TELECOM.is_dir():
        pytest.skip(f"shared Telecom dataset not found at {TELECOM}")
    return TELECOM


def job_assets(job_name: str) -> list[str]:
    """The asset names a job of the code location materialises, in topological order."""
    from fraud_assets.definitions import defs

    job = defs().resolve_job_def(job_name)
    graph = job.asset_layer.asset_graph
    selected = job.asset_layer.executable_asset_keys
    return [key.to_user_string() for level in graph.toposorted_asset_keys_by_level for key in sorted(level) if key in selected]
