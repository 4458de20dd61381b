"""The cluster tier: training/evaluation as real pods on a real Kubernetes, launched from Dagster.

Run with scripts/k8s-tier.sh (or ``pytest -m k8s`` with the local cluster up and the image imported).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory.k8s import (
    COMMON_LABELS,
    GPU_RESOURCE,
    DataVolume,
    K8sJobError,
    K8sSettings,
    metrics_from_invocation,
    pod_spec,
    run_train_job_k8s,
)
from factory.spec import ResourcesSpec, TrainingSpec, load_spec

from .conftest import JOB_SA, NAMESPACE, NODE, ROOT, Cluster, helm_bin, use_real_job

pytestmark = pytest.mark.k8s
MOUNT = "/data"


def _settings(kubeconfig: str, image: str, data_dir: Path) -> K8sSettings:
    return K8sSettings(namespace=NAMESPACE, image=image, service_account=JOB_SA, kubeconfig=kubeconfig,
                       data=DataVolume(host_path=str(data_dir), mount_path=MOUNT), poll_interval=1.0,
                       pod_wait_timeout=900)


def _command(samples: str, out: str) -> list[str]:
    cmd = ["python", "-m", "factory.training.job", "--spec", f"{MOUNT}/specs/k8s-tier.yaml",
           "--samples", f"{MOUNT}/exports/{samples}", "--test-set", f"{MOUNT}/test/k8s-tier.jsonl",
           "--out", f"{MOUNT}/results/{out}", "--trainer", "linear_probe"]
    if not use_real_job():
        cmd[:3] = ["python", f"{MOUNT}/standin_train.py"]
    return cmd


def _train_asset(training: TrainingSpec, command: list[str], settings: K8sSettings, db: Path, spec_path: Path):
    """A tiny asset like the factory's train asset: the job runs in a pod, its metrics land in DuckDB."""
    import dagster as dg

    @dg.asset(name="k8s_train_eval")
    def k8s_train_eval(context):  # noqa: ANN001, ANN202 - dagster resolves annotations at definition
        invocation = run_train_job_k8s(context, training, command=command, settings=settings)
        result = invocation.get_materialize_result()
        metrics = metrics_from_invocation(invocation)
        messages = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "results" in m]
        _record_evaluations(db, spec_path, metrics, messages[-1]["results"] if messages else None)
        return result

    return k8s_train_eval


def _record_evaluations(db: Path, spec_path: Path, metrics: dict[str, Any], results: dict[str, Any] | None) -> None:
    """Write the job's evaluation into the store: its own rows when it sent them (the real job's
    ``{"results": ...}`` message), else one row from the reported metrics (the stand-in)."""
    from factory.store import Store

    spec = load_spec(spec_path)
    if results is not None:
        rows = results["evaluations"]
    else:
        rows = [{"eval_id": uuid.uuid4().hex[:16], "spec_hash": spec.hash, "method": spec.generation.method,
                 "trainer": metrics["trainer"], "train_source": "synthetic", "test_set": "k8s-tier.jsonl",
                 "n_train": metrics["n_train"], "budget_fraction": 1.0, "accuracy": metrics["accuracy"],
                 "macro_f1": metrics["macro_f1"], "micro_f1": metrics["micro_f1"],
                 "details": {"runner": "kubernetes"}}]
    with Store(db) as store:
        store.record_spec(spec, spec_path.read_text())
        if hasattr(store, "save_evaluations"):
            store.save_evaluations(rows)
        else:  # pragma: no cover - older store
            raise AssertionError("Store.save_evaluations is missing")


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def test_train_job_through_pipes_in_a_dagster_materialize(
    cluster: Cluster, image: str, data_dir: Path, launcher_kubeconfig: str, tmp_path: Path
) -> None:
    import dagster as dg

    from factory.store import Store

    spec_path = data_dir / "specs" / "k8s-tier.yaml"
    spec = load_spec(spec_path)
    db = tmp_path / "store"
    settings = _settings(launcher_kubeconfig, image, data_dir)  # as the launcher SA: the Role is enough
    asset = _train_asset(spec.training, _command("k8s-tier.parquet", "pipes.json"), settings, db, spec_path)
    started = time.time()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([asset], instance=instance, raise_on_error=True)
    assert result.success
    (event,) = result.asset_materializations_for_node("k8s_train_eval")
    meta = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
    assert 0.0 <= meta["macro_f1"] <= 1.0 and 0.0 <= meta["accuracy"] <= 1.0
    assert meta["accuracy"] > 0.6, meta  # sports vs business with 80 real examples: well above chance
    # the job's own log lines came back through Pipes into the run's event log
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("k8s-tier" in m and "samples" in m for m in messages) or any("stand-in" in m for m in messages), \
        [m for m in messages if m][:40]
    # the results file landed on the data volume, and the evaluation in DuckDB
    on_volume = json.loads((data_dir / "results" / "pipes.json").read_text())
    with Store(db, read_only=True) as store:
        rows = store.evaluations([spec.hash])
    assert rows, "no evaluations row written"
    best = max(rows, key=lambda r: (r["budget_fraction"], r["n_train"]))
    assert best["macro_f1"] == pytest.approx(meta["macro_f1"], abs=1e-6)
    assert best["n_train"] == 80
    assert on_volume.get("n_test", 60) == 60
    # the pod is gone
    assert not cluster.core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/component=train,"
                                                "attrfactory.dev/invocation").items
    print(f"pipes train job: {time.time() - started:.1f}s, macro_f1={meta['macro_f1']:.3f}")


def test_failing_job_fails_the_asset_with_the_pod_log(
    cluster: Cluster, image: str, data_dir: Path, launcher_kubeconfig: str, tmp_path: Path
) -> None:
    import dagster as dg

    spec_path = data_dir / "specs" / "k8s-tier.yaml"
    spec = load_spec(spec_path)
    settings = _settings(launcher_kubeconfig, image, data_dir)
    asset = _train_asset(spec.training, _command("missing.parquet", "fail.json"), settings,
                         tmp_path / "store", spec_path)
    with pytest.raises(Exception) as info:
        dg.materialize([asset], instance=dg.DagsterInstance.ephemeral(), raise_on_error=True)
    chain = _cause_chain(info.value)
    job_error = next((e for e in chain if isinstance(e, K8sJobError)), None)
    assert job_error is not None, f"expected a K8sJobError in {[type(e).__name__ for e in chain]}"
    message = str(job_error)
    # the job's own error (stderr of the pod) is in the message, with the pod's name
    assert "missing.parquet" in message, message
    assert "--- pod dagster-" in message
    assert not (data_dir / "results" / "fail.json").exists()
    assert not cluster.core.list_namespaced_pod(NAMESPACE, label_selector="attrfactory.dev/invocation").items


def test_gpu_pod_schedules_once_the_node_advertises_gpus(cluster: Cluster, image: str, manifests: Any) -> None:
    name = f"gpu-{uuid.uuid4().hex[:6]}"
    training = TrainingSpec(resources=ResourcesSpec(cpu="100m", memory="256Mi", gpu=1))
    spec = pod_spec(training, image=image, service_account=JOB_SA,
                    command=["python", "-c", "import os; print('gpu pod ran', os.environ.get('HF_HUB_OFFLINE'))"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE,
                                                           "labels": dict(COMMON_LABELS)}, "spec": spec}
    patch_path = "/status/capacity/nvidia.com~1gpu"
    try:
        cluster.kubectl("patch", "node", NODE, "--subresource=status", "--type=json",
                        "-p", json.dumps([{"op": "remove", "path": patch_path}]), check=False)
        cluster.apply([pod])

        def unschedulable() -> str | None:
            p = cluster.core.read_namespaced_pod(name, NAMESPACE)
            for cond in p.status.conditions or []:
                if cond.type == "PodScheduled" and cond.status == "False" and "nvidia.com/gpu" in (cond.message or ""):
                    return cond.message
            return None

        message = cluster.wait("the GPU pod to be unschedulable", unschedulable, timeout=60)
        assert "Insufficient nvidia.com/gpu" in message
        cluster.kubectl("patch", "node", NODE, "--subresource=status", "--type=json",
                        "-p", json.dumps([{"op": "add", "path": patch_path, "value": "1"}]))
        phase = cluster.wait("the GPU pod to run", lambda: (
            cluster.core.read_namespaced_pod(name, NAMESPACE).status.phase in ("Succeeded", "Failed")
            and cluster.core.read_namespaced_pod(name, NAMESPACE).status.phase), timeout=300)
        p = cluster.core.read_namespaced_pod(name, NAMESPACE)
        assert phase == "Succeeded", cluster.core.read_namespaced_pod_log(name, NAMESPACE)
        assert p.spec.node_name == NODE
        assert p.spec.containers[0].resources.limits[GPU_RESOURCE] == "1"
        assert "gpu pod ran 1" in cluster.core.read_namespaced_pod_log(name, NAMESPACE)
    finally:
        cluster.kubectl("delete", "pod", name, "-n", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
        cluster.kubectl("patch", "node", NODE, "--subresource=status", "--type=json",
                        "-p", json.dumps([{"op": "remove", "path": patch_path}]), check=False)


def test_kustomize_example_job_runs_on_the_pvc(cluster: Cluster, manifests: Any, data_dir: Path) -> None:
    """k8s/ as applied: the example Job trains on the PVC (bound to the hostPath PV) and writes its result."""
    job = manifests["job"]["metadata"]["name"]

    def finished() -> str | None:
        status = cluster.batch.read_namespaced_job(job, NAMESPACE).status
        return "Complete" if status.succeeded else "Failed" if status.failed else None

    outcome = cluster.wait(f"job {job}", finished, timeout=600, interval=3)
    log = cluster.pod_logs(NAMESPACE, f"job-name={job}")
    assert outcome == "Complete", log
    results = json.loads((data_dir / "results" / "example-minimal.json").read_text())
    top = results.get("headline", results)
    assert 0.0 <= top["macro_f1"] <= 1.0
    pvc = cluster.core.read_namespaced_persistent_volume_claim("attrfactory-data", NAMESPACE)
    assert pvc.status.phase == "Bound"


def test_helm_chart_installs_and_its_user_code_pod_serves(cluster: Cluster, image: str, tmp_path: Path) -> None:
    """helm install with the local image: the user-code pod runs `dagster api grpc -m factory.defs` and its
    readiness probe (dagster api grpc-health-check) passes; the data PVC binds to a hostPath PV."""
    helm = helm_bin()
    ns = f"attrfactory-helm-{uuid.uuid4().hex[:5]}"
    release = "tier"
    pv_name = f"{ns}-data"
    data = tmp_path / "helm-data"
    data.mkdir()
    data.chmod(0o777)
    repo, _, tag = image.rpartition(":")
    deployment: dict[str, Any] = {
        "name": "attrfactory", "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
        "dagsterApiGrpcArgs": ["-m", "factory.defs"], "port": 3030,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
        "readinessProbe": {"enabled": True, "periodSeconds": 5, "timeoutSeconds": 30, "failureThreshold": 60},
    }
    extra_docs: list[dict[str, Any]] = []
    if not (ROOT / "factory" / "defs").exists() and not (ROOT / "factory" / "defs.py").exists():
        # factory.defs not written yet: a placeholder code location through the chart's volumes
        extra_docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "placeholder-defs",
                           "namespace": ns}, "data": {"defs.py": "import dagster as dg\n\n@dg.asset\ndef placeholder():\n"
                                                                 "    return 1\n\ndefs = dg.Definitions(assets=[placeholder])\n"}})
        deployment.update(dagsterApiGrpcArgs=["-f", "/opt/placeholder/defs.py"],
                          volumes=[{"name": "placeholder", "configMap": {"name": "placeholder-defs"}}],
                          volumeMounts=[{"name": "placeholder", "mountPath": "/opt/placeholder"}])
    spec_text = (ROOT / "specs" / "example-minimal.yaml").read_text()
    values = {
        "deployments": [deployment],
        "persistence": {"storageClassName": f"manual-{ns}", "size": "1Gi"},
        "specs": {"files": {"example-minimal.yaml": spec_text}},
        "apiKey": {"existingSecret": "attrfactory-openai"},
        "openai": {"baseUrl": "http://llm.invalid:8000/v1"},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                   "persistentVolumeReclaimPolicy": "Retain", "storageClassName": f"manual-{ns}",
                   "hostPath": {"path": str(data), "type": "Directory"}}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "attrfactory-openai", "namespace": ns},
              "type": "Opaque", "stringData": {"api-key": "sk-local-test-not-real"}}
    cluster.kubectl("create", "namespace", ns)
    started = time.time()
    try:
        cluster.apply([pv, secret, *extra_docs])
        proc = subprocess.run(
            [helm, "install", release, str(ROOT / "helm" / "attrfactory"), "--namespace", ns,
             "--kubeconfig", cluster.kubeconfig, "-f", str(values_file)],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        selector = f"app.kubernetes.io/instance={release},component=user-deployments"

        def ready() -> Any:
            pods = cluster.core.list_namespaced_pod(ns, label_selector=selector).items
            for p in pods:
                for status in p.status.container_statuses or []:
                    if status.state.terminated or (status.state.waiting and status.state.waiting.reason in (
                            "CrashLoopBackOff", "ErrImageNeverPull", "ErrImagePull", "CreateContainerConfigError")):
                        raise AssertionError(f"user-code pod failed: {status.state}\n"
                                             + cluster.kubectl("logs", "-n", ns, p.metadata.name, check=False))
                    if status.ready:
                        return p
            return None

        pod = cluster.wait("the user-code pod to be Ready", ready, timeout=420, interval=3)
        elapsed = time.time() - started
        container = pod.spec.containers[0]
        env = {e.name: e for e in container.env}
        assert env["FACTORY_RUNNER"].value == "kubernetes"
        assert env["FACTORY_NAMESPACE"].value == ns
        assert env["FACTORY_IMAGE"].value == image
        assert env["FACTORY_DATA_PVC"].value == f"{release}-attrfactory-data"
        assert env["OPENAI_API_KEY"].value is None
        assert env["OPENAI_API_KEY"].value_from.secret_key_ref.name == "attrfactory-openai"
        pvc = cluster.core.read_namespaced_persistent_volume_claim(f"{release}-attrfactory-data", ns)
        assert pvc.status.phase == "Bound"
        # the specs ConfigMap is what the pod mounts
        cm = cluster.core.read_namespaced_config_map(f"{release}-attrfactory-specs", ns)
        assert cm.data["example-minimal.yaml"] == spec_text
        # the code location really loaded (a health check passes even when the definitions fail to load):
        # ask the gRPC server itself, from the host, on the pod's address
        from dagster._grpc.client import DagsterGrpcClient
        from dagster._grpc.types import ListRepositoriesResponse
        from dagster._serdes import deserialize_value

        client = DagsterGrpcClient(host=pod.status.pod_ip, port=3030)
        response = deserialize_value(client.list_repositories())
        log = cluster.kubectl("logs", "-n", ns, pod.metadata.name, check=False)
        assert isinstance(response, ListRepositoriesResponse), f"{response}\n{log}"
        assert response.repository_symbols, response
        assert response.container_image == image
        # the chart's container context reaches Dagster: runs launched from here get the same volumes/env
        context = response.container_context["k8s"]
        assert {v["name"] for v in context["volumes"]} == {"data", "specs"}
        assert context["service_account_name"] == f"{release}-attrfactory"
        assert any(e["name"] == "FACTORY_STORE" for e in context["env"])
        print(f"helm install -> user-code pod Ready in {elapsed:.0f}s")
    finally:
        if os.environ.get("FACTORY_K8S_KEEP") != "1":
            subprocess.run([helm, "uninstall", release, "--namespace", ns, "--kubeconfig", cluster.kubeconfig],
                           capture_output=True, timeout=120)
            cluster.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", check=False, timeout=180)
            cluster.kubectl("delete", "pv", pv_name, "--ignore-not-found", check=False)


def _seed_store(db: Path, spec_path: Path, data_dir: Path) -> int:
    """Samples in the store as the generator writes them (AG News train rows stand in for generated text)."""
    from datetime import datetime, timedelta, timezone

    import pyarrow.parquet as pq

    from factory.store import PromptRecord, RequestRecord, SampleRecord, Store

    spec = load_spec(spec_path)
    table = pq.read_table(data_dir / "exports" / "k8s-tier.parquet").to_pylist()
    t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
    requests, samples = [], []
    with Store(db) as store:
        store.record_spec(spec, spec_path.read_text())
        run_id = store.start_run(spec)
        for n, row in enumerate(table):
            key = f"req-{n:04d}"
            requests.append(RequestRecord(request_key=key, model="smollm2", params="{}", prompt_hash="ph",
                                          purpose="generation", choices=json.dumps([row["text"]]), prompt_tokens=10,
                                          completion_tokens=20, cost_usd=0.001, latency_s=0.1, attempts=1))
            samples.append(SampleRecord(
                sample_id=f"s-{n:04d}", spec_hash=spec.hash, run_id=run_id, class_=row["label"], text=row["text"],
                attributes="{}", seed=n, sample_index=n, choice_index=0, method=spec.generation.method,
                prompt_hash="ph", request_key=key, model="smollm2", params="{}", prompt_tokens=10,
                completion_tokens=20, cost_usd=0.001, is_refusal=False, generated_at=t0 + timedelta(seconds=n)))
        store.save_completions([PromptRecord(prompt_hash="ph", method=spec.generation.method, messages="[]"),
                                *requests, *samples])
        store.finish_run(run_id, "done")
    return len(samples)


def test_factory_classifier_asset_runs_its_job_on_the_cluster(
    cluster: Cluster, image: str, data_dir: Path, launcher_kubeconfig: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The factory's own `classifier` asset with FACTORY_RUNNER=kubernetes: it launches the train/eval job as
    a pod (factory.k8s) that reads the samples from the store (on the data volume) at the asset's snapshot,
    and saves the evaluations the job reports in the store."""
    import dagster as dg

    try:
        from factory.defs import with_io
        from factory.defs.assets import SPECS, classifier
        from factory.defs.assets import spec as spec_asset
        from factory.defs.resources import RunOptions, SpecCatalog, StoreResource, resources_from_env
        from factory.defs.runners import KubernetesTrainRunner
    except ImportError as exc:  # pragma: no cover - the Dagster asset graph is not there yet
        pytest.skip(f"factory.defs has no classifier asset yet: {exc}")
    if not use_real_job():
        pytest.skip("the classifier asset runs the real factory.training.job")
    from factory.store import Store

    specs_dir = data_dir / "asset-specs"
    specs_dir.mkdir(exist_ok=True)
    spec_path = specs_dir / "k8s-tier.yaml"
    spec_path.write_text((data_dir / "specs" / "k8s-tier.yaml").read_text()
                         + "evaluation:\n  test_set: ../test/k8s-tier.jsonl\n")
    db = data_dir / "asset-store"  # on the data volume: the job pod reads it there
    n = _seed_store(db, spec_path, data_dir)
    for path in [db, *db.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the image runs as uid 10001
    for key, value in {"FACTORY_NAMESPACE": NAMESPACE, "FACTORY_IMAGE": image, "FACTORY_SERVICE_ACCOUNT": JOB_SA,
                       "FACTORY_DATA_HOST_PATH": str(data_dir), "FACTORY_DATA_MOUNT": MOUNT,
                       "KUBECONFIG": launcher_kubeconfig}.items():
        monkeypatch.setenv(key, value)
    resources = with_io(resources_from_env(
        specs=SpecCatalog(specs_dir=str(specs_dir)), store=StoreResource(location=str(db)),
        options=RunOptions(export_dir=str(data_dir / "exports")), train_runner=KubernetesTrainRunner()))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SPECS.name, ["k8s-tier"])
    result = dg.materialize([spec_asset, classifier], partition_key="k8s-tier", resources=resources,
                            instance=instance, raise_on_error=True)
    (event,) = result.asset_materializations_for_node("classifier")
    meta = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
    assert meta["runner"] == "kubernetes"
    assert meta["train_samples"] == n and meta["evaluations_saved"] >= 1
    assert meta["accuracy"] > 0.6, meta
    with Store(db, read_only=True) as store:
        rows = store.evaluations([load_spec(spec_path).hash])
    assert len(rows) == meta["evaluations_saved"]
    assert not cluster.core.list_namespaced_pod(NAMESPACE, label_selector="attrfactory.dev/invocation").items
