"""End to end through the real `dagster dev` (webserver + daemon), the way users run it.

A file dropped into the landing folder must be picked up by the daemon's
``landing_sensor`` and ingested by an ``ingest_job`` run; ``retrain_job``
launched through the GraphQL API must train, evaluate and promote a model.
Everything is observed through GraphQL, as the UI sees it. The whole process
group of `dagster dev` (code server, webserver, daemon, run workers) is killed
at the end, whatever happens.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import job_assets
from dagster_graphql import DagsterGraphQLClient

from fraud_assets.landing import partition_key_for
from fraud_assets.runs import DAGSTER_YAML
from fraud_assets.sample import write_sample

INGEST_ASSETS, RETRAIN_ASSETS = job_assets("ingest_job"), job_assets("retrain_job")

PROJECT = Path(__file__).resolve().parents[1]
LOCATION = "fraud_assets"  # location_name in workspace.yaml
STARTUP_TIMEOUT = 120  # webserver answering and the code location loaded
INGEST_TIMEOUT = 180  # sensor tick (every 15 s) + queue + run
RETRAIN_TIMEOUT = 300
POLL = 2.0
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

WORKSPACE_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""
REPOSITORIES_QUERY = """
{ repositoriesOrError { __typename
    ... on RepositoryConnection { nodes { name location { name } } }
    ... on PythonError { message } } }
"""
RUNS_QUERY = """
query ($job: String!) { runsOrError(filter: {pipelineName: $job}) { __typename
    ... on Runs { results { runId status jobName tags { key value } } }
    ... on PythonError { message } } }
"""
SENSOR_QUERY = """
query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { __typename
    ... on Sensor { sensorState { status ticks(limit: 25) { status timestamp skipReason runIds error { message } } } }
    ... on PythonError { message } } }
"""
RUN_ERRORS_QUERY = """
query ($runId: ID!) { logsForRun(runId: $runId, limit: 2000) { __typename
    ... on EventConnection { events { __typename
        ... on ExecutionStepFailureEvent { stepKey error { ...Error } }
        ... on RunFailureEvent { message error { ...Error } }
        ... on EngineEvent { message error { ...Error } } } } } }
fragment Error on PythonError { message cause { message cause { message } } }
"""
SCHEDULE_QUERY = """
query ($selector: ScheduleSelector!) { scheduleOrError(scheduleSelector: $selector) { __typename
    ... on Schedule { scheduleState { status } }
    ... on PythonError { message } } }
"""
SCHEDULE_DRY_RUN = """
mutation ($selector: ScheduleSelector!, $timestamp: Float) { scheduleDryRun(selectorData: $selector, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick { evaluationResult { skipReason runRequests { runKey } error { ...Error } } }
    ... on PythonError { message } } }
fragment Error on PythonError { message cause { message cause { message } } }
"""
PARTITION_KEYS_QUERY = """
query ($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) { __typename ... on AssetNode { partitionKeys } } }
"""
MATERIALIZATIONS_QUERY = """
query ($path: [String!]!, $partitions: [String!]) { assetOrError(assetKey: {path: $path}) { __typename
    ... on Asset { assetMaterializations(partitions: $partitions, limit: 1) { runId partition } }
    ... on AssetNotFoundError { message } } }
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterDev:
    """A `fraud-assets dev` (dg dev) subprocess in its own session, its log file and a GraphQL view of it."""

    def __init__(self, tmp: Path):
        self.data = tmp / "data"
        self.home = tmp / "dagster_home"
        self.home.mkdir(parents=True)
        (self.home / "dagster.yaml").write_text(DAGSTER_YAML)  # exactly what `fraud-assets dev` writes
        self.log_path = tmp / "dagster_dev.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)
        self.repository = "__repository__"
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- process ------------------------------------------------------------
    def start(self) -> None:
        env = dict(os.environ)
        for name in list(env):  # only the settings below, never the user's FRAUD_* environment
            if name.startswith("FRAUD_"):
                del env[name]
        env.update(
            FRAUD_DATA_DIR=str(self.data),
            DAGSTER_HOME=str(self.home),
            TQDM_DISABLE="1",
            PYTHONUNBUFFERED="1",
        )
        # exactly what the README's quickstart runs: `fraud-assets dev` execs `dg dev`
        command = [sys.executable, "-m", "fraud_assets.cli", "dev", "--port", str(self.port)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        """SIGTERM to the whole process group, up to 20 s grace, then SIGKILL to whatever is left."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # session leader: its pid is the group id
        started = time.monotonic()
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        while time.monotonic() - started < 20 and _group_members(pgid):
            self.proc.poll()  # reap the leader so it does not linger as a zombie
            time.sleep(0.5)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        while time.monotonic() - started < 35 and _group_members(pgid):  # killed children are reaped by init
            time.sleep(0.2)
        if self._log:
            self._log.close()

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no dagster dev log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- GraphQL ------------------------------------------------------------
    def query(self, query: str, **variables) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def runs(self, job: str) -> list[dict]:
        result = self.query(RUNS_QUERY, job=job)["runsOrError"]
        assert result["__typename"] == "Runs", result
        return result["results"]

    def sensor_ticks(self, name: str) -> str:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": self.repository, "sensorName": name}
        try:
            sensor = self.query(SENSOR_QUERY, selector=selector)["sensorOrError"]
        except Exception as error:  # diagnostics only
            return f"(sensor state unavailable: {error})"
        if sensor["__typename"] != "Sensor":
            return str(sensor)
        state, lines = sensor["sensorState"], []
        for tick in state["ticks"]:  # newest first; repeats collapsed so the interesting tick stays visible
            error = (tick["error"] or {}).get("message", "").strip()
            line = f"{tick['status']}: " + (tick["skipReason"] or error or f"runs {tick['runIds']}")
            if lines and lines[-1][1] == line:
                lines[-1][0] += 1
            else:
                lines.append([1, line])
        ticks = "\n".join(f"  {line}" + (f"  (x{count})" if count > 1 else "") for count, line in lines)
        return f"{name} is {state['status']}, last ticks (newest first):\n" + (ticks or "  (no ticks)")

    def schedule(self, name: str) -> tuple[str, dict]:
        """(status, evaluation now): the schedule evaluated by the code server, as "Test schedule" in the UI."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": self.repository, "scheduleName": name}
        schedule = self.query(SCHEDULE_QUERY, selector=selector)["scheduleOrError"]
        assert schedule["__typename"] == "Schedule", schedule
        tick = self.query(SCHEDULE_DRY_RUN, selector=selector, timestamp=time.time())["scheduleDryRun"]
        assert tick["__typename"] == "DryRunInstigationTick", tick
        result = tick["evaluationResult"]
        assert not result["error"], f"{name} raised: {_root_cause(result['error'])}"
        return schedule["scheduleState"]["status"], result

    def registered_partitions(self) -> list[str] | str:
        try:
            node = self.query(PARTITION_KEYS_QUERY, path=[INGEST_ASSETS[0]])["assetNodeOrError"]
        except Exception as error:  # diagnostics only
            return f"(unavailable: {error})"
        return node.get("partitionKeys", str(node))

    def run_errors(self, run_id: str) -> str:
        try:
            logs = self.query(RUN_ERRORS_QUERY, runId=run_id)["logsForRun"]
        except Exception as error:  # diagnostics only
            return f"(run logs unavailable: {error})"
        messages = []
        for event in logs.get("events", []):
            error = _root_cause(event.get("error"))
            if event["__typename"] == "ExecutionStepFailureEvent":
                messages.append(f"step {event['stepKey']} failed: {error}")
            elif event["__typename"] == "RunFailureEvent":
                messages.append(f"run failed: {event['message']}")
            elif error:
                messages.append(f"{event.get('message', '')}: {error}")
        return "\n".join(messages) or "(no failure events)"

    def materialization(self, asset: str, partition: str | None = None) -> dict | None:
        result = self.query(MATERIALIZATIONS_QUERY, path=[asset], partitions=[partition] if partition else None)["assetOrError"]
        if result["__typename"] != "Asset" or not result["assetMaterializations"]:
            return None
        return result["assetMaterializations"][0]

    # -- waiting ------------------------------------------------------------
    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n\n--- tail of the dagster dev log ({self.log_path}) ---\n{self.log_tail()}", pytrace=False)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.fail(f"dagster dev exited early with code {self.proc.returncode}")

    def wait_until_loaded(self, timeout: float) -> None:
        deadline, last = time.monotonic() + timeout, "no answer yet"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                requests.get(f"{self.url}/server_info", timeout=5).raise_for_status()
                workspace = self.query(WORKSPACE_QUERY)["workspaceOrError"]
                entries = {e["name"]: e for e in workspace.get("locationEntries", [])}
                entry = entries.get(LOCATION)
                last = f"workspace: {workspace}"
                if entry and entry["loadStatus"] == "LOADED":
                    location = entry["locationOrLoadError"] or {}
                    if location.get("__typename") != "RepositoryLocation":
                        self.fail(f"code location {LOCATION!r} failed to load: {location.get('message', location)}")
                    repositories = self.query(REPOSITORIES_QUERY)["repositoriesOrError"]["nodes"]
                    names = [r["name"] for r in repositories if r["location"]["name"] == LOCATION]
                    assert len(names) == 1, f"expected one repository in {LOCATION!r}, got {names}"
                    self.repository = names[0]
                    return
            except requests.RequestException as error:
                last = f"{type(error).__name__}: {error}"
            time.sleep(POLL)
        self.fail(f"dagster dev did not serve a loaded {LOCATION!r} code location within {timeout:.0f} s (last: {last})")

    def wait_for_sensor_run(self, partition: str, timeout: float) -> dict:
        """The ingest_job run the sensor requests for ``partition``, once it has finished."""
        deadline, run = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            self.check_alive()
            for candidate in self.runs("ingest_job"):
                tags = {t["key"]: t["value"] for t in candidate["tags"]}
                if tags.get("dagster/partition") == partition:
                    run = candidate
            if run and run["status"] in FINISHED:
                return run
            time.sleep(POLL)
        if run is None:
            others = [
                (r["status"], {t["key"]: t["value"] for t in r["tags"]}.get("dagster/partition")) for r in self.runs("ingest_job")
            ]
            self.fail(
                f"landing_sensor requested no ingest_job run for partition {partition!r} within {timeout:.0f} s "
                f"(ingest_job runs seen: {others or 'none'}; registered partitions: {self.registered_partitions()})\n"
                f"{self.sensor_ticks('landing_sensor')}"
            )
        self.fail(f"ingest_job run {run['runId']} for {partition!r} still {run['status']} after {timeout:.0f} s")

    def wait_for_run(self, run_id: str, timeout: float) -> str:
        deadline, status = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            self.check_alive()
            status = self.client.get_run_status(run_id).value
            if status in FINISHED:
                return status
            time.sleep(POLL)
        self.fail(f"run {run_id} still {status} after {timeout:.0f} s")


def _root_cause(error: dict | None) -> str | None:
    """First line of the innermost error: "Error occurred while executing op ..." wraps the real one."""
    while error and error.get("cause"):
        error = error["cause"]
    return error["message"].strip().splitlines()[0] if error else None


def _group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of the group as "pid state cmd"; via /proc where there is one."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [f"(some process of group {pgid})"]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{entry.name} {fields[0]} {cmd[:160]}")
    return members


@pytest.fixture
def dagster_dev(tmp_path):
    server = DagsterDev(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
    survivors = _group_members(server.proc.pid)
    assert not survivors, "dagster dev processes survived SIGKILL:\n" + "\n".join(survivors)


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "ignore:Using variable_values and operation_name:DeprecationWarning"
)  # inside dagster_graphql's client
def test_dagster_dev_sensor_ingests_a_landed_file_and_retrain_job_promotes_a_model(dagster_dev):
    dev = dagster_dev
    dev.wait_until_loaded(STARTUP_TIMEOUT)
    notices = [line for line in dev.log_tail(200).splitlines() if "deprecat" in line.lower() or "supersede" in line.lower()]
    assert not notices, "`fraud-assets dev` (dg dev) printed deprecation notices:\n" + "\n".join(notices)

    # 1. A labelled file lands (Chinese and English, normal/defraud, with sent_at): the daemon's sensor ingests it.
    (path,) = write_sample(dev.data / "incoming", n_files=1, messages_per_file=120)
    partition = partition_key_for(path)
    run = dev.wait_for_sensor_run(partition, INGEST_TIMEOUT)
    tags = {t["key"]: t["value"] for t in run["tags"]}
    if run["status"] != "SUCCESS":
        dev.fail(f"ingest_job run {run['runId']} for {partition!r} ended {run['status']}:\n{dev.run_errors(run['runId'])}")
    assert tags.get("dagster/sensor_name") == "landing_sensor", tags
    assert tags.get("fraud/source_file") == path.name, tags
    status, evaluation = dev.schedule("nightly_retrain")  # RUNNING by default; a new partition means: retrain
    assert status == "RUNNING" and len(evaluation["runRequests"] or []) == 1, (status, evaluation)

    # 2. retrain_job launched through the GraphQL API, as the Launchpad does.
    retrain_id = dev.client.submit_job_execution("retrain_job", repository_location_name=LOCATION, repository_name=dev.repository)
    status = dev.wait_for_run(retrain_id, RETRAIN_TIMEOUT)
    if status != "SUCCESS":
        dev.fail(f"retrain_job run {retrain_id} ended {status}:\n{dev.run_errors(retrain_id)}")

    # 3. What the UI shows: one materialisation per asset, from these runs, and the public outputs on disk.
    missing = []
    for asset in INGEST_ASSETS:
        event = dev.materialization(asset, partition)
        if not event or event["runId"] != run["runId"] or event["partition"] != partition:
            missing.append(f"{asset}[{partition}]: {event}")
    for asset in RETRAIN_ASSETS:
        event = dev.materialization(asset)
        if not event or event["runId"] != retrain_id:
            missing.append(f"{asset}: {event}")
    assert not missing, "materialisations missing or from another run:\n" + "\n".join(missing)
    _, evaluation = dev.schedule("nightly_retrain")  # nothing new since this training: the schedule skips
    assert not evaluation["runRequests"] and evaluation["skipReason"], evaluation

    metrics = json.loads((dev.data / "reports" / "latest" / "metrics.json").read_text())
    assert 0.0 <= metrics["model"]["f1"] <= 1.0
    pointer = json.loads((dev.data / "models" / "production.json").read_text())
    card = json.loads((dev.data / "models" / pointer["model"] / "model_card.json").read_text())
    assert card["partitions"] == [partition]
