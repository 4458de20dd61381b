"""The real Dagster daemon over one shared store: `factory ui` (dagster dev: webserver, daemon, code server) runs
the top-up of three specs at once, each run in its own process, on the real offline model; a second run of
a spec waits in the queue (one run per partition) while the others go."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory.defs.instance import PARTITION_TAG, SHARD_TAG, ensure_instance_config, instance_config
from factory.generation.llm.server import free_port
from factory.store import Store
from graphql_ops import ADD_PARTITION, SENSOR, STOP_SENSOR, loaded_repository

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["daemon-a", "daemon-b", "daemon-c"]
SPEC = textwrap.dedent("""\
    name: NAME
    domain: short news headline
    classes: [sports, business]
    attributes:
      style: {values: [breaking news, analysis]}
    similar_classes: {k: 0}
    generation: {method: attrprompt, base_url: BASE_URL, max_tokens: 16}
    budget: {samples_per_class: 1}
    filters: {near_dup: null, min_words: 0}
    """)
RUN_TIMEOUT_S = 240
DONE = {"SUCCESS", "FAILURE", "CANCELED"}


# ---- the dagster.yaml `factory ui` writes (no Dagster processes: cheap) --------------------------------------


def _ui_env(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Run `factory ui` with dagster dev replaced: what it was started with, and the dagster.yaml it saw."""
    from typer.testing import CliRunner

    from factory.cli import app

    seen: list[dict[str, str]] = []

    class FakeDev:
        def __init__(self, command: list[str], env: dict[str, str]) -> None:
            home = Path(env["DAGSTER_HOME"]) if env.get("DAGSTER_HOME") else None
            seen.append({"command": " ".join(command), "home": str(home or ""),
                         "yaml": (home / "dagster.yaml").read_text() if home else ""})

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeDev)
    result = CliRunner().invoke(app, ["ui", "--specs", "specs", "--db", "store"])
    assert result.exit_code == 0, result.output
    return seen


def test_ui_makes_a_temporary_instance_with_one_run_per_partition(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.run_coordinator import QueuedRunCoordinator

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("FACTORY_MAX_CONCURRENT_RUNS", "3")
    (seen,) = _ui_env(monkeypatch)
    home = Path(seen["home"])
    assert home.parent == tmp_path and home.name.startswith(".tmp_dagster_home_") and not home.exists()
    assert "dagster dev -m factory.defs" in seen["command"]
    assert yaml.safe_load(seen["yaml"]) == instance_config(3)
    # Dagster itself reads it so: a queued run coordinator, at most 3 runs, one per partition tag value
    home.mkdir()
    (home / "dagster.yaml").write_text(seen["yaml"])
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        queue = coordinator.get_run_queue_config()
        assert queue.max_concurrent_runs == 3
        assert queue.tag_concurrency_limits == [{"key": tag, "value": {"applyLimitPerUniqueValue": True},
                                                 "limit": 1} for tag in (PARTITION_TAG, SHARD_TAG)]


def test_ui_leaves_a_users_instance_config_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    (seen,) = _ui_env(monkeypatch)
    assert seen["home"] == str(home) and seen["yaml"] == "telemetry:\n  enabled: false\n"
    assert not ensure_instance_config(home)
    # without $DAGSTER_HOME, a dagster.yaml in the current folder is the user's (dagster dev reads it there)
    monkeypatch.delenv("DAGSTER_HOME")
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (seen,) = _ui_env(monkeypatch)
    assert seen["home"] == "" and not list(tmp_path.glob(".tmp_dagster_home_*"))


def test_a_bad_run_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from factory.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACTORY_MAX_CONCURRENT_RUNS", "four")
    result = CliRunner().invoke(app, ["ui", "--specs", "specs", "--db", "store"])
    assert result.exit_code == 2 and "FACTORY_MAX_CONCURRENT_RUNS" in result.output
    assert not (tmp_path / "home" / "dagster.yaml").exists()


# ---- the real daemon -----------------------------------------------------------------------------------------


@dataclass
class Deployment:
    client: Any  # DagsterGraphQLClient
    home: Path
    specs: Path
    store: Path
    log: Path
    location: str
    repository: str

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        return self.client._execute(query, variables)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """`factory ui` as a user starts it, over an empty DAGSTER_HOME (it writes the dagster.yaml there), an empty
    specs folder and a fresh store; stopped, with every process it started, at the end."""
    from dagster_graphql import DagsterGraphQLClient

    home, specs, store, log = tmp_path / "home", tmp_path / "specs", tmp_path / "store", tmp_path / "dev.log"
    home.mkdir()
    specs.mkdir()
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "FACTORY_EXPORT_DIR": str(tmp_path / "exports"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("FACTORY_MAX_CONCURRENT_RUNS", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "factory.cli", "ui", "--port", str(port), "--specs", str(specs),
                                 "--db", str(store)], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for(lambda: _answers(f"http://127.0.0.1:{port}/server_info"), 180, "dagster dev did not start", log)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        location, repository = _wait_for(lambda: loaded_repository(client), 180, "the code location did not load", log)
        yield Deployment(client, home, specs, store, log, location, repository)
    finally:
        _stop(proc)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


def _wait_for(probe: Any, timeout_s: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = probe()
        except Exception:  # noqa: BLE001 - the server is still coming up
            found = None
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"{what} within {timeout_s:.0f} s:\n" + log.read_text(errors="replace")[-4000:])


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the whole session (factory ui, dagster dev, webserver, daemon, code server, runs), then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait_s  # the leader is gone: give its children the same time
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)




def _stop_spec_sensor(d: Deployment) -> None:
    """Stop the GitOps sensor (on by default) so that only the runs this test launches run."""
    selector = {"repositoryLocationName": d.location, "repositoryName": d.repository, "sensorName": "spec_sensor"}
    sensor = d.gql(SENSOR, selector=selector)["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    stopped = d.gql(STOP_SENSOR, id=sensor["sensorState"]["id"])["stopSensor"]
    assert stopped["__typename"] == "StopSensorMutationResult", stopped
    assert d.gql(SENSOR, selector=selector)["sensorOrError"]["sensorState"]["status"] == "STOPPED"


def _factory_status(d: Deployment) -> str:
    """``factory status`` as a user runs it next to the deployment (its DAGSTER_HOME, its store)."""
    env = {**os.environ, "DAGSTER_HOME": str(d.home), "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "factory.cli", "status", "--store", str(d.store)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _run_errors(instance: Any, run_id: str) -> str:
    """The failures a run logged (for the assertion message)."""
    lines = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if error is not None:
            lines.append(f"{event.event_type_value} {event.step_key or ''}:\n{error.to_string()}")
    return "\n".join(lines)[-6000:]


def _run_pid(instance: Any, run_id: str) -> int | None:
    """The process the run launcher started for the run (its engine event says so)."""
    for record in instance.all_logs(run_id):
        message = record.dagster_event.message if record.dagster_event else record.user_message
        found = re.search(r"Started process for run \(pid: (\d+)\)", message or "")
        if found:
            return int(found.group(1))
    return None


@pytest.mark.llm
@pytest.mark.timeout(720)
def test_the_daemon_tops_up_three_specs_at_once(llm_server, deployment: Deployment) -> None:
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.storage.dagster_run import RunsFilter

    d = deployment
    assert yaml.safe_load((d.home / "dagster.yaml").read_text()) == instance_config()  # written by `factory ui`
    _stop_spec_sensor(d)  # before any spec is there: the sensor has seen only an empty folder
    for key in KEYS:
        (d.specs / f"{key}.yaml").write_text(SPEC.replace("NAME", key).replace("BASE_URL", llm_server.base_url))
        added = d.gql(ADD_PARTITION, repo={"repositoryLocationName": d.location, "repositoryName": d.repository},
                      key=key)["addDynamicPartition"]
        assert added["__typename"] == "AddDynamicPartitionSuccess", added
    started = time.monotonic()
    runs = {key: d.client.submit_job_execution("top_up", tags={PARTITION_TAG: key}) for key in KEYS}
    again = d.client.submit_job_execution("top_up", tags={PARTITION_TAG: KEYS[0]})  # a second run of spec a

    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(d.home)))
    status: dict[str, str] = {}
    second: list[str] = []  # the second run's states while the first run of its spec was in progress
    a_seen = None
    listed = ""  # `factory status` while the runs are in progress
    while time.monotonic() - started < RUN_TIMEOUT_S:
        status = {key: d.client.get_run_status(run_id).value for key, run_id in runs.items()}
        if not listed and set(status.values()) == {"STARTED"}:
            listed = _factory_status(d)
            queued_then = d.client.get_run_status(again).value == "QUEUED"
        if status[KEYS[0]] == "STARTED" and (not second or second[-1] == "QUEUED"):
            a_seen = a_seen or time.monotonic()
            second.append(d.client.get_run_status(again).value)
            # queued through at least two of the daemon's dequeue ticks (5 s) with room under max_concurrent_runs
            # (3 of 4): held by the per-partition limit only. Cancel it (else it runs: a second version of a)
            if second[-1] == "QUEUED" and time.monotonic() - a_seen > 12:
                assert d.client.get_run_status(runs[KEYS[0]]).value == "STARTED"
                d.client.terminate_run(again)
                second.append(d.client.get_run_status(again).value)
        if set(status.values()) <= DONE:
            break
        time.sleep(2)
    elapsed = time.monotonic() - started
    assert second and set(second[:-1]) == {"QUEUED"} and second[-1] == "CANCELED", (second, status)
    # every spec's run, by spec, and a's second run waiting in the queue behind it
    assert all(f"{key} " in listed or f"{key}\n" in listed for key in KEYS) and "STARTED" in listed, listed
    assert ("QUEUED" in listed) == queued_then and "top_up" in listed, listed

    failed = {key: _run_errors(instance, runs[key]) for key, s in status.items() if s != "SUCCESS"}
    assert not failed, (f"after {elapsed:.0f} s: {status}\n" + "\n".join(f"--- {k}\n{v}" for k, v in failed.items())
                        + "\n--- dagster dev\n" + d.log.read_text(errors="replace")[-3000:])

    records = {r.dagster_run.tags[PARTITION_TAG]: r
               for r in instance.get_run_records(RunsFilter(run_ids=list(runs.values())))}
    assert set(records) == set(KEYS)
    windows = {k: (r.start_time, r.end_time) for k, r in records.items()}
    assert all(start and end for start, end in windows.values()), windows
    t0 = min(start for start, _ in windows.values())
    print(f"\nthree top-ups done {elapsed:.0f} s after submission; each run (start-end from the first start, s): "
          + ", ".join(f"{k}: {s - t0:.1f}-{e - t0:.1f} ({e - s:.1f})" for k, (s, e) in sorted(windows.items())))
    # all three in progress at one moment, each in a process of its own
    assert max(s for s, _ in windows.values()) < min(e for _, e in windows.values()), windows
    assert len({_run_pid(instance, run_id) for run_id in runs.values()} - {None}) == 3
    assert instance.get_run_record_by_id(again).start_time is None  # cancelled in the queue, never started
    instance.dispose()

    with Store(d.store, read_only=True) as store:
        overview = {row["name"]: row for row in store.overview()}
        for key in KEYS:
            assert key in overview and overview[key]["samples"] == 2, overview
            assert store.class_counts(overview[key]["spec_hash"]) == {"sports": 1, "business": 1}
            versions = store.versions(key)
            assert len(versions) == 1 and versions[0]["samples"] == 2, versions
        assert not [lease for lease in store.sql("SELECT spec_name FROM leases")]  # every lease released
