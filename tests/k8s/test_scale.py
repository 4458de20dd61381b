"""The cluster path at scale, end to end on the real local cluster: Dagster's daemon and webserver with
``K8sRunLauncher`` launch every run as a pod; the runs launch their train/eval jobs as pods from inside the
cluster (``PipesK8sClient``, in-cluster credentials); everything shares one store (DuckLake on PostgreSQL,
data on a volume every pod mounts at the same path); the LLM is the offline model server on the host.

Layout (all addresses by IP: the cluster has no DNS):
- the host: PostgreSQL on 127.0.0.1 and the bridge 10.244.0.1 (databases ``dagster`` for the instance and
  ``lake`` for the store's catalog; pods log in with a password from a Secret), ``factory serve`` on
  10.244.0.1, ``dagster-webserver`` and ``dagster-daemon`` with the instance below;
- the cluster: this repository's Helm chart (the user-code gRPC server, its ServiceAccount and Role, the specs
  ConfigMap, the data PVC over a hostPath PV) and the run pods' instance ConfigMap.

Run by scripts/k8s-tier.sh (``pytest -m k8s``). The tests of this module share one deployment and run in order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from graphql_ops import ADD_PARTITION, SENSOR, STOP_SENSOR, loaded_repository
from journal_rows import journaled
from postgres import PostgresServer, find_tools
from .conftest import NODE, ROOT, SHARED_DATA, Cluster, helm_bin

pytestmark = pytest.mark.k8s

BRIDGE = "10.244.0.1"           # the cluster bridge's gateway: this machine, as pods see it
BRIDGE_CIDR = "10.244.0.0/24"
RELEASE = "scale"
DEPLOYMENT = "attrfactory"      # the chart's user deployment (and its Service)
RUN_TIMEOUT_S = 900
GPU_PATH = "/status/capacity/nvidia.com~1gpu"
SPEC = """\
name: NAME
domain: news headline
classes: [sports, business]
attributes:
  style:
    values: [breaking news, analysis]
similar_classes:
  given: {sports: [business], business: [sports]}
generation:
  max_tokens: MAX_TOKENS
  shards: SHARDS
budget:
  samples_per_class: PER_CLASS
training:
  trainer: linear_probe
  budget_fractions: [1.0]
  resources: {cpu: 200m, memory: 1536MiGPU}
"""
TOP_UP = ["alpha", "beta", "gamma"]   # gamma's training asks for a GPU
SHARDED, KILLED = "sharded", "killed"


def spec_text(name: str, data: Path, per_class: int = 3, max_tokens: int = 32, shards: int = 1, gpu: bool = False,
              test_set: bool = True) -> str:
    text = (SPEC.replace("NAME", name).replace("MAX_TOKENS", str(max_tokens)).replace("SHARDS", str(shards))
            .replace("PER_CLASS", str(per_class)).replace("GPU", ", gpu: 1" if gpu else ""))
    return text + (f"evaluation:\n  test_set: {data}/test/agnews.jsonl\n" if test_set else "")


# ---- the deployment -----------------------------------------------------------------------------------------


@dataclass
class PodSeen:
    name: str
    labels: dict[str, str]
    node: str | None
    limits: dict[str, str]
    phase: str


@dataclass
class Factory:
    cluster: Cluster
    ns: str
    data: Path
    home: Path
    store_url: str
    client: Any  # DagsterGraphQLClient
    location: str
    repository: str
    env: dict[str, str]
    logs: Path
    pods: dict[str, PodSeen] = field(default_factory=dict)

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        return self.client._execute(query, variables)

    @contextmanager
    def instance(self) -> Iterator[Any]:
        from dagster import DagsterInstance
        from dagster._core.instance.ref import InstanceRef

        with DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home))) as instance:
            yield instance

    def wait_runs(self, run_ids: list[str], timeout_s: float = RUN_TIMEOUT_S) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            status = {r: self.client.get_run_status(r).value for r in run_ids}
            if all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in status.values()):
                return status
            time.sleep(3)
        raise AssertionError(f"runs not done after {timeout_s:.0f} s: {status}\n{self.tail()}")

    def errors(self, run_id: str) -> str:
        lines = []
        with self.instance() as instance:
            for record in instance.all_logs(run_id):
                event = record.dagster_event
                error = getattr(event.event_specific_data, "error", None) if event else None
                if error is not None:
                    lines.append(f"{event.event_type_value} {event.step_key or ''}:\n{error.to_string()}")
                elif event is None and record.user_message:
                    lines.append(record.user_message)
        return "\n".join(lines)[-5000:]

    def materialization(self, run_id: str, asset: str) -> dict[str, Any]:
        with self.instance() as instance:
            for record in instance.all_logs(run_id):
                event = record.dagster_event
                if event and event.event_type_value == "ASSET_MATERIALIZATION" \
                        and event.asset_key.to_user_string() == asset:
                    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
        raise AssertionError(f"run {run_id} has no materialization of {asset}:\n{self.errors(run_id)}")

    def run_pods(self, run_id: str) -> list[PodSeen]:
        return [p for p in self.pods.values() if p.labels.get("dagster/run-id") == run_id]

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-2500:] for p in self.logs.glob("*.log"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, probe: Any, timeout_s: float, interval: float = 2) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as exc:  # noqa: BLE001 - still coming up
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def _instance_yaml(pg_port: int, data: Path, host: dict[str, Any] | None = None) -> str:
    """The Dagster instance: runs, events and schedules on PostgreSQL (reached at the bridge address by the
    host and the pods alike: the daemon hands its instance to the code server in a pod), compute logs on the
    shared volume. ``host``: the daemon's extras (run queue, run launcher, run monitoring)."""
    from factory.defs.instance import instance_config

    config: dict[str, Any] = {
        "storage": {"postgres": {"postgres_db": {"username": "factory", "password": {"env": "DAGSTER_PG_PASSWORD"},
                                                 "hostname": BRIDGE, "db_name": "dagster", "port": pg_port}}},
        "compute_logs": {"module": "dagster._core.storage.local_compute_log_manager",
                         "class": "LocalComputeLogManager", "config": {"base_dir": str(data / "compute-logs")}},
        "telemetry": {"enabled": False},
    }
    if host:
        config.update(instance_config(max_concurrent_runs=6), **host)
    return yaml.safe_dump(config, sort_keys=False)


def _chart_values(image: str, data: Path, store_url: str, llm_url: str, specs: dict[str, str]) -> dict[str, Any]:
    repo, _, tag = image.rpartition(":")
    return {
        "deployments": [{
            "name": DEPLOYMENT, "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
            "dagsterApiGrpcArgs": ["-m", "factory.defs"], "port": 3030,
            "env": [{"name": "FACTORY_LEASE_TTL_S", "value": "8"}],   # a deleted run pod's lease frees in 8 s
            "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "3Gi"}},
            "readinessProbe": {"enabled": True, "periodSeconds": 5, "timeoutSeconds": 30, "failureThreshold": 60},
        }],
        "persistence": {"storageClassName": f"manual-{RELEASE}", "size": "1Gi", "mountPath": str(data)},
        "store": {"url": store_url, "dataPath": str(data / "lake"),
                  "passwordSecret": {"name": "lake-pg", "key": "password"}},
        "postgresqlSecretName": "dagster-pg",
        "openai": {"baseUrl": llm_url},
        "runner": {"kind": "kubernetes"},
        "specs": {"files": {f"{k}.yaml": v for k, v in specs.items()}},
    }


def _stage_test_set(data: Path) -> None:
    rows = [json.loads(line) for line in (SHARED_DATA / "agnews" / "test.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["label"] in ("sports", "business")][:60]
    (data / "test" / "agnews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _watch_pods(f: Factory, stop: threading.Event) -> None:
    """Every pod of the namespace as last seen (labels, node, limits, phase): run pods and job pods come and go."""
    while not stop.wait(1.0):
        try:
            items = f.cluster.core.list_namespaced_pod(f.ns).items
        except Exception:  # noqa: BLE001 - the next round
            continue
        for pod in items:
            limits = dict((pod.spec.containers[0].resources.limits or {}) if pod.spec.containers[0].resources else {})
            f.pods[pod.metadata.name] = PodSeen(pod.metadata.name, dict(pod.metadata.labels or {}),
                                                pod.spec.node_name, limits, pod.status.phase or "?")


def _start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _quietly(fn: Any, *args: Any) -> None:
    """A teardown step that must not hide the test's own failure (nor stop the next step)."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        print(f"teardown: {getattr(fn, '__name__', fn)} failed: {exc}")


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    """Files the host writes on the shared volume stay writable for the pods' user (uid 10001)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def factory(cluster: Cluster, image: str) -> Iterator[Factory]:
    from dagster_graphql import DagsterGraphQLClient

    from factory.generation.llm.server import local_server

    tools = find_tools()
    if tools is None:
        pytest.fail("the cluster tier needs PostgreSQL's binaries (Debian's postgresql package)")
    if not (SHARED_DATA / "agnews").is_dir():
        pytest.fail("../shared/data/agnews is needed for the cluster tier's test set")
    password = uuid.uuid4().hex
    ns = f"attrfactory-scale-{uuid.uuid4().hex[:5]}"
    # mounted at the same path in every pod (DuckLake's data path is the same everywhere); the pods' user can
    # reach it: not under pytest's private temp folder
    data = Path(tempfile.mkdtemp(prefix="attrfactory-scale-", dir="/tmp"))
    home, logs = data / "dagster-home", data / "host-logs"
    for sub in (data, data / "lake", data / "test", data / "compute-logs", data / "exports"):
        sub.mkdir(exist_ok=True)
        sub.chmod(0o777)
    home.mkdir()
    logs.mkdir()
    _stage_test_set(data)
    stack = ExitStack()
    stop = threading.Event()
    try:
        pg = PostgresServer(tools, remote=(BRIDGE, BRIDGE_CIDR, password))
        pg.start()
        stack.callback(_quietly, pg.stop)
        for db in ("dagster", "lake"):
            pg.psql(f"CREATE DATABASE {db}")
        store_url = f"postgres:host={BRIDGE} port={pg.port} user=factory dbname=lake"
        llm = stack.enter_context(local_server(host=BRIDGE, parallel=4, threads=2, log_path=logs / "llm.log"))
        specs = {k: spec_text(k, data, gpu=(k == "gamma")) for k in TOP_UP}
        specs[SHARDED] = spec_text(SHARDED, data, per_class=4, shards=3, test_set=False)
        specs[KILLED] = spec_text(KILLED, data, per_class=14, max_tokens=48, test_set=False)

        cluster.kubectl("create", "namespace", ns)
        keep = os.environ.get("FACTORY_K8S_KEEP") == "1"
        # (callbacks run last first: the namespace, with the claim, goes before its volume)
        stack.callback(_quietly, lambda: keep or cluster.kubectl("delete", "pv", f"{ns}-data", "--ignore-not-found",
                                                                 "--wait=false", check=False))
        stack.callback(_quietly, lambda: keep or cluster.kubectl(
            "delete", "namespace", ns, "--ignore-not-found", "--wait=true", check=False, timeout=240))
        pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{ns}-data"},
              "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                       "persistentVolumeReclaimPolicy": "Retain", "storageClassName": f"manual-{RELEASE}",
                       "hostPath": {"path": str(data), "type": "Directory"}}}
        secrets = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                    "type": "Opaque", "stringData": {key: password}}
                   for name, key in (("lake-pg", "password"), ("dagster-pg", "postgresql-password"))]
        instance_cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dagster-instance", "namespace": ns},
                       "data": {"dagster.yaml": _instance_yaml(pg.port, data)}}
        cluster.apply([pv, *secrets, instance_cm])
        values = data / "values.yaml"
        values.write_text(yaml.safe_dump(_chart_values(image, data, store_url, llm.base_url, specs)))
        helm = helm_bin()
        proc = subprocess.run([helm, "install", RELEASE, str(ROOT / "helm" / "attrfactory"), "--namespace", ns,
                               "--kubeconfig", cluster.kubeconfig, "-f", str(values)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        service = cluster.core.read_namespaced_service(DEPLOYMENT, ns)

        def code_server_ready() -> bool:
            pods = cluster.core.list_namespaced_pod(ns, label_selector="component=user-deployments").items
            for pod in pods:
                for status in pod.status.container_statuses or []:
                    if status.restart_count or (status.state.waiting and status.state.waiting.reason in (
                            "CrashLoopBackOff", "ErrImageNeverPull", "CreateContainerConfigError", "ErrImagePull",
                            "ImagePullBackOff")):
                        pytest.fail("the user-code pod does not start:\n" + cluster.kubectl(
                            "describe", "pod", "-n", ns, pod.metadata.name, check=False)[-2500:] + cluster.kubectl(
                            "logs", "-n", ns, pod.metadata.name, "--previous", check=False)[-4000:])
            return any(s.ready for p in pods for s in (p.status.container_statuses or []))

        _wait("the user-code pod to be Ready", code_server_ready, 600, 3)

        # the daemon and the webserver on the host, on the same instance as the run pods
        (home / "dagster.yaml").write_text(_instance_yaml(pg.port, data, host={
            "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
                "load_incluster_config": False, "kubeconfig_file": cluster.kubeconfig, "job_namespace": ns,
                "instance_config_map": "dagster-instance", "dagster_home": "/opt/dagster/dagster_home",
                "postgres_password_secret": "dagster-pg", "image_pull_policy": "IfNotPresent",
                "service_account_name": f"{RELEASE}-attrfactory"}},
            "run_monitoring": {"enabled": True, "poll_interval_seconds": 5, "start_timeout_seconds": 600}}))
        (home / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
            "host": service.spec.cluster_ip, "port": 3030, "location_name": DEPLOYMENT}}]}))
        env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_PASSWORD": password, "PGPASSWORD": password,
               "FACTORY_DATA_PATH": str(data / "lake")}
        bindir = Path(sys.executable).parent
        port = _free_port()
        web = _start([str(bindir / "dagster-webserver"), "-w", str(home / "workspace.yaml"), "-h", "127.0.0.1",
                      "-p", str(port)], env, logs / "webserver.log", home)
        stack.callback(_quietly, _stop, web)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        location, repository = _wait("the code location (in its pod) to load", lambda: loaded_repository(client), 300)
        f = Factory(cluster, ns, data, home, store_url, client, location, repository,
                    {k: env[k] for k in ("DAGSTER_HOME", "DAGSTER_PG_PASSWORD", "PGPASSWORD", "FACTORY_DATA_PATH")},
                    logs)
        _stop_sensor(f, "spec_sensor")  # the runs here are launched by the schedules' ticks, one phase at a time
        for key in [*TOP_UP, SHARDED]:
            added = f.gql(ADD_PARTITION, repo=f.repo, key=key)["addDynamicPartition"]
            assert added["__typename"] == "AddDynamicPartitionSuccess", added
        daemon = _start([str(bindir / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")], env,
                        logs / "daemon.log", home)
        stack.callback(_quietly, _stop, daemon)
        watcher = threading.Thread(target=_watch_pods, args=(f, stop), daemon=True)
        watcher.start()
        stack.callback(stop.set)
        stack.enter_context(_env(f.env))  # the host test reads the store and the instance too
        yield f
    finally:
        stack.close()
        if os.environ.get("FACTORY_K8S_KEEP") != "1":
            subprocess.run(["rm", "-rf", str(data)], check=False)


Factory.repo = property(lambda self: {"repositoryLocationName": self.location,  # type: ignore[attr-defined]
                                      "repositoryName": self.repository})

SCHEDULE_TICK = """mutation ($selector: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $timestamp) { __typename
    ... on DryRunInstigationTick { evaluationResult { runRequests { runKey jobName runConfigYaml tags { key value } }
                                                      skipReason error { message } } }
    ... on PythonError { message } } }"""


def _stop_sensor(f: Factory, name: str) -> None:
    selector = {**f.repo, "sensorName": name}
    sensor = f.gql(SENSOR, selector=selector)["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    stopped = f.gql(STOP_SENSOR, id=sensor["sensorState"]["id"])["stopSensor"]
    assert stopped["__typename"] == "StopSensorMutationResult", stopped


def tick_schedule(f: Factory, schedule: str) -> list[str]:
    """A tick of ``schedule`` now, as the daemon makes it at its cron time: evaluate it in the code location
    (a dry run) and launch every run it requests, at once. Returns the run ids."""
    selector = {**f.repo, "scheduleName": schedule}
    tick = f.gql(SCHEDULE_TICK, selector=selector, timestamp=time.time())["scheduleDryRun"]
    assert tick["__typename"] == "DryRunInstigationTick", tick
    result = tick["evaluationResult"]
    assert not result["error"], result["error"]
    requests = result["runRequests"] or []
    assert requests, result
    default_job = {"nightly_top_up": "top_up", "nightly_shards": "generation_shard"}[schedule]
    run_ids = []
    for r in requests:
        job = r["jobName"] or default_job
        tags = {t["key"]: t["value"] for t in r["tags"]}
        if job == "top_up":  # a partition's run: its key (the factory's own tag names it too)
            tags.setdefault("dagster/partition", tags["factory/spec"])
        run_ids.append(f.client.submit_job_execution(job, run_config=yaml.safe_load(r["runConfigYaml"]) or {},
                                                     tags=tags))
    return run_ids


def _gpu(f: Factory, count: int | None) -> None:
    op = [{"op": "add", "path": GPU_PATH, "value": str(count)}] if count else [{"op": "remove", "path": GPU_PATH}]
    f.cluster.kubectl("patch", "node", NODE, "--subresource=status", "--type=json", "-p", json.dumps(op),
                      check=count is not None)


def _store(f: Factory, read_only: bool = True) -> Any:
    from factory.store import Store

    return Store(f.store_url, read_only=read_only)


# ---- the tests ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(1500)
def test_nightly_top_up_runs_three_specs_as_run_pods_that_train_in_job_pods(factory: Factory) -> None:
    """A tick of the nightly schedule launches three runs at once; each is a pod; each trains its classifier
    in a job pod it launched itself (in-cluster), reading the samples from the store at its snapshot; the GPU
    spec's job lands on the node that advertises nvidia.com/gpu; ``factory status`` lists the runs."""
    f = factory
    _gpu(f, 1)
    try:
        started = time.monotonic()
        run_ids = tick_schedule(f, "nightly_top_up")
        with f.instance() as instance:
            keys = {r: instance.get_run_by_id(r).tags.get("dagster/partition") for r in run_ids}
        assert sorted(keys.values()) == sorted(TOP_UP), keys  # every non-sharded spec, once
        status_out = _wait("factory status to list the three runs", lambda: _status_lists(f, TOP_UP), 300, 3)
        status = f.wait_runs(run_ids)
        elapsed = time.monotonic() - started
    finally:
        _gpu(f, None)
    failed = {keys[r]: f.errors(r) for r, s in status.items() if s != "SUCCESS"}
    assert not failed, f"{status}\n" + "\n".join(f"--- {k}\n{v}" for k, v in failed.items()) + f.tail()

    with f.instance() as instance:
        records = {keys[r.dagster_run.run_id]: r for r in instance.get_run_records()
                   if r.dagster_run.run_id in run_ids}
    windows = {k: (r.start_time, r.end_time) for k, r in records.items()}
    assert max(s for s, _ in windows.values()) < min(e for _, e in windows.values()), windows  # all at once
    run_pods = {keys[r]: f.run_pods(r) for r in run_ids}
    assert all(len(pods) == 1 for pods in run_pods.values()), run_pods  # each run its own pod
    jobs = {p.labels["attrfactory.dev/spec"]: p for p in f.pods.values() if "attrfactory.dev/spec" in p.labels}
    assert set(jobs) == set(TOP_UP), list(f.pods)
    for key, job in jobs.items():
        # launched from inside the cluster, by that spec's run pod
        assert job.labels["attrfactory.dev/launched-by"] == run_pods[key][0].name, (job, run_pods[key])
    assert jobs["gamma"].limits.get("nvidia.com/gpu") == "1" and jobs["gamma"].node == NODE, jobs["gamma"]
    assert "nvidia.com/gpu" not in jobs["alpha"].limits

    with _store(f) as store:
        overview = {row["name"]: row for row in store.overview()}
        for key in TOP_UP:
            spec_hash = overview[key]["spec_hash"]
            assert overview[key]["samples"] == 6, overview[key]
            assert store.class_counts(spec_hash) == {"sports": 3, "business": 3}
            evaluations = store.evaluations([spec_hash])
            assert evaluations and all(e["snapshot_id"] for e in evaluations), evaluations
            (version,) = store.versions(key)  # the run's one version; the job trained at a snapshot holding it
            assert all(e["dataset_version"] == version["version"] and e["snapshot_id"] >= version["snapshot_id"]
                       for e in evaluations), (evaluations, version)
            meta = f.materialization(next(r for r in run_ids if keys[r] == key), "classifier")
            assert meta["runner"] == "kubernetes" and meta["train_samples"] == 6, meta
    # the run pods' own log lines reached the run's event log (what the UI shows)
    messages = []
    with f.instance() as instance:
        for record in instance.all_logs(run_ids[0]):
            messages.append(record.user_message or "")
    assert any("samples" in m and "new" in m for m in messages), messages[-30:]
    assert any("launching a training pod" in m for m in messages), messages[-30:]
    assert "alpha" in status_out and "top_up" in status_out
    print(f"\nnightly top-up of 3 specs as run pods: {elapsed:.0f} s; runs (s): "
          + ", ".join(f"{k}: {e - s:.0f}" for k, (s, e) in sorted(windows.items())))


def _status_lists(f: Factory, keys: list[str]) -> str | None:
    proc = subprocess.run([sys.executable, "-m", "factory.cli", "status", "--store", f.store_url],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **f.env,
                                                                          "COLUMNS": "200"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out if all(k in out for k in keys) and "STARTED" in out else None


@pytest.mark.timeout(1500)
def test_a_sharded_spec_runs_as_three_shard_pods_with_the_rows_of_one_run(
    factory: Factory, tmp_path: Path
) -> None:
    """``generation.shards: 3``: the nightly shard schedule launches three shard runs (three pods, at once,
    one store); then the partition's top-up runs once and sends nothing. The rows are those of one unsharded
    run of the same spec into another store (same sample ids, request keys, seeds, attributes)."""
    f = factory
    started = time.monotonic()
    shard_runs = tick_schedule(f, "nightly_shards")
    assert len(shard_runs) == 3
    status = f.wait_runs(shard_runs)
    assert set(status.values()) == {"SUCCESS"}, f"{status}\n" + "\n".join(f.errors(r) for r in shard_runs)
    with f.instance() as instance:
        batch = instance.get_run_by_id(shard_runs[0]).tags["factory/shard-batch"]
        records = [r for r in instance.get_run_records() if r.dagster_run.run_id in shard_runs]
        windows = [(r.start_time, r.end_time) for r in records]
    assert max(s for s, _ in windows) < min(e for _, e in windows), windows  # the shards ran side by side
    assert all(len(f.run_pods(r)) == 1 for r in shard_runs)

    def after_run() -> str | None:
        from dagster import RunsFilter

        with f.instance() as instance:
            runs = instance.get_runs(filters=RunsFilter(tags={"factory/shard-batch": batch}))
        after = [r for r in runs if r.job_name == "top_up"]
        return after[0].run_id if after else None

    follow = _wait("the run after the shards (after_shards sensor)", after_run, 180, 3)
    assert f.wait_runs([follow]) == {follow: "SUCCESS"}, f.errors(follow)
    meta = f.materialization(follow, "generations")
    assert meta["requests_sent"] == 0 and meta["samples"] == 8, meta  # everything came from the shards
    time.sleep(8)  # the sensor's next ticks: still one run after the batch
    from dagster import RunsFilter

    with f.instance() as instance:
        assert len([r for r in instance.get_runs(filters=RunsFilter(tags={"factory/shard-batch": batch}))
                    if r.job_name == "top_up"]) == 1
    elapsed = time.monotonic() - started

    from factory.spec import parse_spec
    from factory.store import Store

    columns = "sample_id, request_key, class, seed, sample_index, choice_index, attributes, prompt_hash"
    spec = parse_spec(spec_text(SHARDED, f.data, per_class=4, shards=3, test_set=False))
    with _store(f) as store:
        sharded = sorted(store.sql(f"SELECT {columns} FROM samples WHERE spec_hash = ?", [spec.hash]))
        shard_run_rows = store.runs(SHARDED)
        versions = store.versions(SHARDED)
    assert len(sharded) == 8 and len({r[0] for r in sharded}) == 8, sharded
    assert sorted(r["message"] for r in shard_run_rows if "shard" in (r["message"] or "")) == \
        [f"shard {i} of 3" for i in (1, 2, 3)]
    assert len(versions) == 1 and versions[0]["samples"] == 8, versions  # one version: the run after the shards

    # the same spec, unsharded, on the host into a store of its own
    spec_path = tmp_path / f"{SHARDED}.yaml"
    spec_path.write_text(spec_text(SHARDED, f.data, per_class=4, shards=1, test_set=False))
    single = tmp_path / "single-store"
    llm_url = yaml.safe_load((f.data / "values.yaml").read_text())["openai"]["baseUrl"]
    env = {k: v for k, v in os.environ.items() if k not in ("FACTORY_STORE", "PGPASSWORD", "FACTORY_DATA_PATH")}
    proc = subprocess.run([sys.executable, "-m", "factory.cli", "run", str(spec_path), "--store", str(single),
                           "--no-progress"], capture_output=True, text=True, timeout=600,
                          env={**env, "OPENAI_BASE_URL": llm_url, "FACTORY_EXPORT_DIR": str(tmp_path / "exports")},
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with Store(single, read_only=True) as store:
        unsharded = sorted(store.sql(f"SELECT {columns} FROM samples WHERE spec_hash = ?", [spec.hash]))
    assert sharded == unsharded
    print(f"\nsharded spec: 3 shard pods + 1 run after them in {elapsed:.0f} s; 8 rows, identical to one run")


@pytest.mark.timeout(1500)
def test_a_run_pod_deleted_mid_generation_is_rerun_without_paying_twice(factory: Factory) -> None:
    """Delete a run pod while it generates: the run fails (run monitoring); a new run of the spec waits for
    the dead pod's lease to expire, publishes the journal the pod left on the volume, and sends only what
    was not persisted."""
    f = factory
    added = f.gql(ADD_PARTITION, repo=f.repo, key=KILLED)["addDynamicPartition"]
    assert added["__typename"] == "AddDynamicPartitionSuccess", added
    planned = 28
    # generation only (what the kill is about): the spec, its attribute set (one multi-asset), the plan, the texts
    selection = ["spec", "similar_classes", "attribute_values", "caf_filtered_values", "prompts", "generations"]
    first = f.client.submit_job_execution("build_dataset", tags={"dagster/partition": KILLED, "factory/spec": KILLED},
                                          asset_selection=selection)

    def persisted() -> int:  # a 28-request run publishes once, at its end: its journal shows it mid-way
        try:
            with _store(f) as store:
                published = store.sql("SELECT count(*) FROM samples WHERE spec_hash IN"
                                      " (SELECT spec_hash FROM specs WHERE name = ?)", [KILLED])[0][0]
        except Exception:  # noqa: BLE001 - the spec is not in the store yet
            published = 0
        return published + journaled(f.data / "lake-journals", "samples",
                                     lambda row: str(row.get("run_id", "")).startswith(f"{KILLED}-"))

    _wait("the run to persist its first samples", lambda: persisted() >= 4, 600, 0.5)
    (pod,) = f.run_pods(first)
    f.cluster.kubectl("delete", "pod", "-n", f.ns, pod.name, "--grace-period=0", "--force", check=False)
    status = f.wait_runs([first], timeout_s=300)
    assert status[first] == "FAILURE", status
    f.cluster.kubectl("delete", "job", "-n", f.ns, f"dagster-run-{first}", "--ignore-not-found", check=False)
    with _umask(0), _store(f, read_only=False) as store:  # a writer publishes what the dead pod journaled
        before = store.sql("SELECT count(*) FROM samples WHERE spec_hash IN (SELECT spec_hash FROM specs WHERE name = ?)",
                           [KILLED])[0][0]
    assert 0 < before < planned, before
    again = f.client.submit_job_execution("build_dataset", tags={"dagster/partition": KILLED, "factory/spec": KILLED},
                                          asset_selection=selection)
    assert f.wait_runs([again]) == {again: "SUCCESS"}, f.errors(again)
    meta = f.materialization(again, "generations")
    assert meta["requests_sent"] == planned - before, (meta, before)
    assert meta["requests_cached"] == before and meta["samples"] == planned, meta
    with _store(f) as store:
        rows = store.sql("SELECT count(*), count(DISTINCT request_key) FROM samples"
                         " WHERE spec_hash IN (SELECT spec_hash FROM specs WHERE name = ?)", [KILLED])[0]
    assert rows == (planned, planned), rows
    print(f"\nrun pod deleted after {before} of {planned} samples; the rerun sent {meta['requests_sent']}")
