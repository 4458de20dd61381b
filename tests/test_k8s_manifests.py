"""Kubernetes artefacts without a cluster: pod specs, the Helm chart and the kustomize manifests.

The chart is linted (``helm lint --strict``) and rendered (``helm template``) with the default values and
with the GPU model server; the rendered output and ``kubectl kustomize k8s/`` are validated against the
Kubernetes 1.30 schemas with ``kubernetes-validate --strict``. helm and kubectl come from
``bash ../shared/tools/get-helm.sh`` (found via $HELM / $KUBECTL, ~/.cache/helm-bin, or PATH).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory.k8s import (
    GPU_RESOURCE,
    DataVolume,
    K8sJobError,
    K8sSettings,
    job_manifest,
    pod_spec,
    pod_spec_from_settings,
    run_train_job_k8s,
)
from factory.spec import ResourcesSpec, TrainingSpec

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "attrfactory"
K8S_VERSION = "1.30.0"
SECRET_VALUE = "sk-test-never-in-a-manifest-123"


def _tool(name: str) -> str | None:
    env = os.environ.get(name.upper())
    candidates = [env] if env else []
    candidates.append(str(Path.home() / ".cache" / "helm-bin" / name))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    # /usr/bin/kubectl may be gcloud's dispatcher, which needs gcloud components: only a real binary
    if found and name == "kubectl" and "google-cloud-sdk" in os.path.realpath(found):
        return None
    return found


@pytest.fixture(scope="module")
def helm() -> str:
    path = _tool("helm")
    if not path:
        pytest.skip("helm not found: run `bash ../shared/tools/get-helm.sh` (or set $HELM)")
    return path


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = _tool("kubectl")
    if not path:
        pytest.skip("kubectl not found: run `bash ../shared/tools/get-helm.sh` (or set $KUBECTL)")
    return path


@pytest.fixture(scope="module")
def validator() -> list[str]:
    import importlib.util

    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    return [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION]


def _run(cmd: list[str], **kw: Any) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _validate(validator: list[str], text: str, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    out = _run(validator + [str(path)])
    assert "passed" in out or not out.strip() or "INFO" in out


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


GPU_VALUES = [
    "--set", "modelServer.enabled=true",
    "--set", "modelServer.gpus=2",
    "--set", "apiKey.existingSecret=attrfactory-openai",
    "--set-json", 'runner.nodeSelector={"nvidia.com/gpu.present":"true"}',
    "--set-json", 'runner.tolerations=[{"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"}]',
    "--set-json", 'modelServer.nodeSelector={"nvidia.com/gpu.present":"true"}',
]


# ---- pod_spec -----------------------------------------------------------------------------------


def _training(**resources: Any) -> TrainingSpec:
    return TrainingSpec(resources=ResourcesSpec(**resources)) if resources else TrainingSpec()


def test_pod_spec_cpu_resources_and_no_gpu() -> None:
    spec = pod_spec(_training(cpu="2", memory="3Gi"), image="img:1")
    (container,) = spec["containers"]
    assert container["image"] == "img:1"
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "3Gi"}
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "3Gi"}
    assert GPU_RESOURCE not in json.dumps(spec)
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert "tolerations" not in spec


def test_pod_spec_gpu_requests_nvidia_gpu_and_tolerates_the_taint() -> None:
    spec = pod_spec(_training(gpu=2), image="img:1", node_selector={"nvidia.com/gpu.present": "true"})
    res = spec["containers"][0]["resources"]
    assert res["limits"][GPU_RESOURCE] == "2" and res["requests"][GPU_RESOURCE] == "2"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    # explicit tolerations replace the default one
    custom = [{"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert pod_spec(_training(gpu=1), tolerations=custom)["tolerations"] == custom


def test_pod_spec_api_key_only_as_secret_key_ref() -> None:
    spec = pod_spec(_training(), image="img:1", api_key_secret=("attrfactory-openai", "api-key"))
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["OPENAI_API_KEY"] == {
        "name": "OPENAI_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "attrfactory-openai", "key": "api-key"}},
    }
    assert "value" not in env["OPENAI_API_KEY"]
    # another variable name (generation.api_key_env) works the same way
    spec = pod_spec(_training(), api_key_secret=("s", "k"), api_key_env="MY_KEY")
    assert {e["name"] for e in spec["containers"][0]["env"] if "valueFrom" in e} == {"MY_KEY"}


def test_a_job_that_reads_the_store_gets_its_password_from_the_secret_only() -> None:
    settings = K8sSettings.from_env({"FACTORY_STORE_PASSWORD_SECRET": "lake-pg:password",
                                     "FACTORY_DATA_HOST_PATH": "/srv/data"})
    assert settings.store_password_secret == ("lake-pg", "password")
    spec = pod_spec_from_settings(_training(), settings)
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["PGPASSWORD"] == {"name": "PGPASSWORD",
                                 "valueFrom": {"secretKeyRef": {"name": "lake-pg", "key": "password"}}}
    assert K8sSettings.from_env({"FACTORY_STORE_PASSWORD_SECRET": "lake-pg"}).store_password_secret == \
        ("lake-pg", "password")
    with pytest.raises(ValueError, match="PGPASSWORD comes from a Secret"):
        pod_spec(_training(), env={"PGPASSWORD": "x"}, secret_env={"PGPASSWORD": ("s", "k")})


def test_a_job_pod_reads_the_store_at_the_runs_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the kubernetes runner hands a job pod: the store (not exported files) and the snapshot; paths as
    the pod mounts them; a PostgreSQL store's shared data path as plain env (its password is a Secret)."""
    from factory.defs.runners import StagedJob, pod_inputs
    from factory.store import StoreLocation

    data = DataVolume(claim_name="data", mount_path="/data", local_root=str(tmp_path))
    (tmp_path / "store").mkdir()
    embedded = StagedJob("name: x", None, tmp_path / "test.jsonl", None, snapshot_id=7,
                         store=StoreLocation.parse(tmp_path / "store"))
    extras, env = pod_inputs(embedded, data)
    assert extras["db"] == "/data/store" and extras["snapshot"] == 7 and extras["test_set"] == "/data/test.jsonl"
    assert "samples" not in extras and env == {}
    monkeypatch.delenv("FACTORY_JOURNAL_DIR", raising=False)
    lake = StoreLocation.parse("postgres:host=10.0.0.5 dbname=lake", "/data/lake")
    extras, env = pod_inputs(StagedJob("name: x", None, tmp_path / "test.jsonl", None, 9, store=lake), data)
    assert extras["db"] == "postgres:host=10.0.0.5 dbname=lake" and extras["snapshot"] == 9
    assert env == {"FACTORY_DATA_PATH": "/data/lake/"}
    exported = StagedJob("name: x", tmp_path / "s.parquet", tmp_path / "test.jsonl", None, 9)
    assert pod_inputs(exported, data)[0]["samples"] == "/data/s.parquet"
    with pytest.raises(ValueError, match="not on the data volume"):
        pod_inputs(StagedJob("name: x", None, Path("/elsewhere/t.jsonl"), None, 9, store=lake), data)


def test_pod_spec_refuses_a_literal_key() -> None:
    os.environ.setdefault("OPENAI_API_KEY", SECRET_VALUE)
    with pytest.raises(ValueError, match="api_key_secret"):
        pod_spec(_training(), env={"OPENAI_API_KEY": SECRET_VALUE})
    with pytest.raises(ValueError, match="NAME"):
        pod_spec(_training(), api_key_env="sk-abc def")
    spec = pod_spec(_training(), api_key_secret=("s", "k"), env={"OPENAI_BASE_URL": "http://m:8000/v1"})
    assert SECRET_VALUE not in json.dumps(spec)


def test_pod_spec_data_volume_pvc_and_host_path() -> None:
    pvc = pod_spec(_training(), data=DataVolume(claim_name="attrfactory-data"))
    assert pvc["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "attrfactory-data",
                                                                          "readOnly": False}}]
    assert pvc["containers"][0]["volumeMounts"][0]["mountPath"] == "/data"
    host = DataVolume(host_path="/srv/factory", mount_path="/work")
    spec = pod_spec(_training(), data=host)
    assert spec["volumes"][0]["hostPath"] == {"path": "/srv/factory", "type": "Directory"}
    assert host.pod_path("/srv/factory/run1/samples.parquet") == "/work/run1/samples.parquet"
    with pytest.raises(ValueError, match="not on the data volume"):
        host.pod_path("/tmp/elsewhere/samples.parquet")
    with pytest.raises(ValueError):
        DataVolume()
    with pytest.raises(ValueError):
        DataVolume(claim_name="a", host_path="/b")


def test_pod_spec_image_precedence_and_service_account() -> None:
    training = TrainingSpec(image="registry/attrfactory:from-spec")
    assert pod_spec(training)["containers"][0]["image"] == "registry/attrfactory:from-spec"
    settings = K8sSettings(image="registry/attrfactory:settings", service_account="attrfactory-job")
    spec = pod_spec_from_settings(TrainingSpec(), settings)
    assert spec["containers"][0]["image"] == "registry/attrfactory:settings"
    assert spec["serviceAccountName"] == "attrfactory-job"
    assert pod_spec_from_settings(training, settings)["containers"][0]["image"] == "registry/attrfactory:from-spec"


def test_settings_from_env_as_the_chart_sets_them() -> None:
    env = {
        "FACTORY_NAMESPACE": "factory", "FACTORY_IMAGE": "attrfactory:0.1.0",
        "FACTORY_SERVICE_ACCOUNT": "rel-attrfactory-job", "FACTORY_DATA_PVC": "rel-attrfactory-data",
        "FACTORY_DATA_MOUNT": "/data", "FACTORY_API_KEY_SECRET": "attrfactory-openai:api-key",
        "FACTORY_NODE_SELECTOR": '{"pool": "gpu"}',
        "FACTORY_TOLERATIONS": '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
        "FACTORY_JOB_ENV": '{"OPENAI_BASE_URL": "http://m:8000/v1"}', "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    }
    s = K8sSettings.from_env(env)
    assert (s.namespace, s.image, s.service_account) == ("factory", "attrfactory:0.1.0", "rel-attrfactory-job")
    assert s.data == DataVolume(claim_name="rel-attrfactory-data", mount_path="/data", local_root="/data")
    assert s.api_key_secret == ("attrfactory-openai", "api-key") and s.in_cluster
    spec = pod_spec_from_settings(TrainingSpec(), s)
    assert spec["nodeSelector"] == {"pool": "gpu"} and spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    env_out = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env_out["OPENAI_BASE_URL"]["value"] == "http://m:8000/v1"
    assert "secretKeyRef" in env_out["OPENAI_API_KEY"]["valueFrom"]
    assert K8sSettings.from_env({"FACTORY_API_KEY_SECRET": "only-name"}).api_key_secret == ("only-name", "api-key")
    assert not K8sSettings.from_env({"KUBECONFIG": "/k", "KUBERNETES_SERVICE_HOST": "x"}).in_cluster


def test_pod_spec_is_valid_for_kubernetes_and_for_pipes_k8s_client(tmp_path: Path, validator: list[str]) -> None:
    from dagster_k8s.pipes import build_pod_body
    from kubernetes.client import ApiClient

    spec = pod_spec(_training(gpu=1), image="img:1", service_account="sa", data=DataVolume(claim_name="c"),
                    api_key_secret=("s", "k"), node_selector={"a": "b"})
    # what PipesK8sClient.run builds from it: the first container gets image, command and Pipes env
    body = ApiClient().sanitize_for_serialization(
        build_pod_body("p", "img:2", ["python", "-m", "factory.training.job"], {"DAGSTER_PIPES_CONTEXT": "x"},
                       {"labels": {"a": "b"}}, spec))
    container = body["spec"]["containers"][0]
    assert container["image"] == "img:2" and container["command"][0] == "python"
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    assert {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"key": "k", "name": "s"}}} in container["env"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    job = job_manifest(_training(), name="train", namespace="ns", command=["python", "-m", "factory.training.job",
                       "--spec", "/d/s.yaml", "--samples", "/d/x.parquet"], data=DataVolume(claim_name="c"))
    _validate(validator, yaml.safe_dump_all([pod, job]), tmp_path, "pod")


def test_a_failing_pod_fails_with_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher's error handling, without a cluster (the cluster tier runs the real thing)."""
    import factory.k8s as k8s

    class FailingClient:
        def run(self, **kwargs: Any) -> None:
            assert kwargs["base_pod_meta"]["labels"][k8s.INVOCATION_LABEL]
            assert kwargs["delete_pod_on_completion"] is False
            raise RuntimeError("Pod dagster-x terminated but some containers exited with errors")

    class Log:
        def info(self, msg: str) -> None:
            pass

    class Context:
        log = Log()

    seen: dict[str, str] = {}
    monkeypatch.setattr(k8s, "_api_client", lambda settings: object())
    monkeypatch.setattr(k8s, "pod_log_tail", lambda api, ns, sel, **kw: seen.setdefault("sel", sel) and
                        "Traceback (most recent call last):\nValueError: no samples for class 'world'")
    monkeypatch.setattr(k8s, "_delete_pods", lambda settings, sel, api: seen.setdefault("deleted", sel))
    monkeypatch.setattr("kubernetes.client.CoreV1Api", lambda api=None: object())
    with pytest.raises(K8sJobError, match="no samples for class 'world'") as info:
        run_train_job_k8s(Context(), TrainingSpec(), command=["python", "-m", "factory.training.job"],
                          settings=K8sSettings(), client=FailingClient())
    assert "exited with errors" in str(info.value)
    assert seen["deleted"] == seen["sel"]
    with pytest.raises(ValueError, match="Secret"):
        run_train_job_k8s(Context(), TrainingSpec(), command=["x"], settings=K8sSettings(),
                          env={"OPENAI_API_KEY": SECRET_VALUE}, client=FailingClient())


# ---- the Helm chart -------------------------------------------------------------------------------


def test_helm_lint_strict(helm: str) -> None:
    _run([helm, "lint", "--strict", str(CHART)])
    _run([helm, "lint", "--strict", str(CHART), *GPU_VALUES])


def test_helm_template_default_values(helm: str, validator: list[str], tmp_path: Path) -> None:
    text = _run([helm, "template", "rel", str(CHART), "--namespace", "factory"])
    _validate(validator, text, tmp_path, "default")
    docs = _docs(text)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Role", "RoleBinding", "Service",
                     "ServiceAccount"]
    (deploy,) = _by_kind(docs, "Deployment")  # no model server by default
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "factory.defs"]
    env = {e["name"]: e for e in container["env"]}
    assert env["FACTORY_RUNNER"]["value"] == "kubernetes"
    assert env["FACTORY_NAMESPACE"]["value"] == "factory"
    assert env["FACTORY_IMAGE"]["value"] == "attrfactory:0.1.0"
    assert env["FACTORY_DATA_PVC"]["value"] == "rel-attrfactory-data"
    assert env["FACTORY_STORE"]["value"] == "/data/factory-store"
    assert "PGPASSWORD" not in env and "FACTORY_DATA_PATH" not in env
    assert env["FACTORY_SPECS_DIR"]["value"] == "/opt/attrfactory/specs"
    assert "OPENAI_BASE_URL" not in env and "OPENAI_API_KEY" not in env
    context = json.loads(env["DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT"]["value"])["k8s"]
    assert {v["name"] for v in context["volumes"]} == {"data", "specs"}
    assert context["service_account_name"] == pod["serviceAccountName"] == "rel-attrfactory"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"data": "/data", "specs": "/opt/attrfactory/specs"}
    (service,) = _by_kind(docs, "Service")
    assert service["metadata"]["name"] == "attrfactory" and service["spec"]["ports"][0]["port"] == 3030
    (role,) = _by_kind(docs, "Role")
    rules = {(r["resources"][0], v) for r in role["rules"] for v in r["verbs"]}
    assert {("pods", "create"), ("pods", "watch"), ("pods", "delete"), ("pods/log", "get")} <= rules
    job_sa = [sa for sa in _by_kind(docs, "ServiceAccount") if sa["metadata"]["name"] == "rel-attrfactory-job"]
    assert job_sa and job_sa[0]["automountServiceAccountToken"] is False


def test_helm_template_gpu_model_server(helm: str, validator: list[str], tmp_path: Path) -> None:
    spec_file = ROOT / "specs" / "agnews.yaml"
    extra = ["--set-file", f"specs.files.agnews\\.yaml={spec_file}"] if spec_file.is_file() else []
    text = _run([helm, "template", "rel", str(CHART), "--namespace", "factory", *GPU_VALUES, *extra])
    _validate(validator, text, tmp_path, "gpu")
    assert SECRET_VALUE not in text
    docs = _docs(text)
    server = next(d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"] == "rel-attrfactory-model-server")
    pod = server["spec"]["template"]["spec"]
    (vllm,) = pod["containers"]
    assert vllm["resources"]["limits"][GPU_RESOURCE] == "2" and vllm["resources"]["requests"][GPU_RESOURCE] == "2"
    assert "--tensor-parallel-size" in vllm["args"] and "--model" in vllm["args"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == GPU_RESOURCE
    assert vllm["startupProbe"]["httpGet"]["path"] == "/health"
    svc = next(d for d in _by_kind(docs, "Service") if d["metadata"]["name"] == "rel-attrfactory-model-server")
    assert svc["spec"]["ports"][0]["port"] == 8000
    user = next(d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"] == "rel-attrfactory-attrfactory")
    env = {e["name"]: e for e in user["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OPENAI_BASE_URL"]["value"] == "http://rel-attrfactory-model-server.factory.svc:8000/v1"
    assert json.loads(env["FACTORY_JOB_ENV"]["value"])["OPENAI_BASE_URL"] == env["OPENAI_BASE_URL"]["value"]
    assert env["OPENAI_API_KEY"] == {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "attrfactory-openai", "key": "api-key"}}}
    assert env["FACTORY_API_KEY_SECRET"]["value"] == "attrfactory-openai:api-key"
    assert json.loads(env["FACTORY_NODE_SELECTOR"]["value"]) == {"nvidia.com/gpu.present": "true"}
    settings = K8sSettings.from_env({k: v["value"] for k, v in env.items() if "value" in v})
    job = pod_spec_from_settings(TrainingSpec(resources=ResourcesSpec(gpu=1)), settings)
    assert job["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert job["volumes"][0]["persistentVolumeClaim"]["claimName"] == "rel-attrfactory-data"
    if extra:
        (cm,) = _by_kind(docs, "ConfigMap")
        assert cm["data"]["agnews.yaml"] == spec_file.read_text()


def test_helm_template_existing_claim_and_no_rbac(helm: str, validator: list[str], tmp_path: Path) -> None:
    text = _run([helm, "template", "rel", str(CHART), "--set", "persistence.existingClaim=shared-data",
                 "--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                 "--set", "serviceAccount.name=existing", "--set", "persistence.storageClassName=-"])
    _validate(validator, text, tmp_path, "existing")
    docs = _docs(text)
    assert not _by_kind(docs, "PersistentVolumeClaim") and not _by_kind(docs, "Role")
    (deploy,) = _by_kind(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "existing"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "shared-data"


def test_helm_template_postgres_store(helm: str, validator: list[str], tmp_path: Path) -> None:
    """A cluster store: the catalog URL, the shared data path, the password from a Secret (for the user code,
    the runs it launches and, named, for their job pods), never a literal."""
    text = _run([helm, "template", "rel", str(CHART), "--set", "store.url=postgres:host=10.0.0.5 dbname=lake",
                 "--set", "store.dataPath=/data/lake", "--set", "store.passwordSecret.name=lake-pg"])
    _validate(validator, text, tmp_path, "postgres")
    (deploy,) = _by_kind(_docs(text), "Deployment")
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FACTORY_STORE"]["value"] == "postgres:host=10.0.0.5 dbname=lake"
    assert env["FACTORY_DATA_PATH"]["value"] == "/data/lake"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "lake-pg", "key": "password"}
    assert env["FACTORY_STORE_PASSWORD_SECRET"]["value"] == "lake-pg:password"
    context = json.loads(env["DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT"]["value"])["k8s"]
    run_env = {e["name"]: e for e in context["env"]}
    assert run_env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "lake-pg"  # the run pods' too
    assert {"FACTORY_STORE", "FACTORY_DATA_PATH", "FACTORY_STORE_PASSWORD_SECRET"} <= set(run_env)


def test_helm_values_schema_rejects_wrong_shapes(helm: str) -> None:
    for bad in (["--set", "modelServer.gpus=-1"], ["--set", "apiKey.envName=sk-not a name"],
                ["--set", "deployments[0].port=0"], ["--set", "runner.kind=slurm"]):
        proc = subprocess.run([helm, "template", "rel", str(CHART), *bad], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "schema" in proc.stderr, (bad, proc.stderr)


# ---- k8s/ (kustomize) -----------------------------------------------------------------------------


def test_kustomize_manifests_validate(kubectl: str, validator: list[str], tmp_path: Path) -> None:
    text = _run([kubectl, "kustomize", str(ROOT / "k8s")])
    _validate(validator, text, tmp_path, "kustomize")
    docs = _docs(text)
    assert {d["kind"] for d in docs} == {"Namespace", "ServiceAccount", "Role", "RoleBinding",
                                         "PersistentVolumeClaim", "Job"}
    assert all(d["metadata"].get("namespace") == "attrfactory" for d in docs if d["kind"] != "Namespace")
    (job,) = _by_kind(docs, "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "factory.training.job"]
    assert container["image"] == "attrfactory:0.1.0"
    key = next(e for e in container["env"] if e["name"] == "OPENAI_API_KEY")
    assert "secretKeyRef" in key["valueFrom"] and "value" not in key
    (binding,) = _by_kind(docs, "RoleBinding")
    assert binding["subjects"][0]["namespace"] == "attrfactory"


def test_validator_catches_a_broken_manifest(validator: list[str], tmp_path: Path) -> None:
    """The schema check is real: an unknown field fails --strict validation."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                                    "spec": {"containers": [{"name": "c", "image": "i", "resourcez": {}}]}}))
    proc = subprocess.run(validator + [str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout + proc.stderr
