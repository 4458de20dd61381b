"""The cluster tier: a real Kubernetes (../shared/k8s-local) with the attrfactory image imported.

These tests run only when asked for: ``pytest -m k8s`` or ``FACTORY_K8S_TIER=1`` (``scripts/k8s-tier.sh``
does install/up, the image build and import, the run and the teardown). Asked for but without a cluster or
image, they fail with what to run; otherwise they are skipped, so ``make test`` never needs a cluster.

Layout on the cluster: the k8s/ manifests are applied as they are (namespace ``attrfactory``, the launcher
and job service accounts, the Role, the PVC, the example Job), the PVC is bound to a hostPath
PersistentVolume over a host directory (single node), and the Pipes tests launch pods in that namespace
with the launcher service account's own token, so the Role is what is tested.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_LOCAL = Path(os.environ.get("K8S_LOCAL", ROOT.parent / "shared" / "k8s-local" / "k8s-local.sh"))
SHARED_DATA = ROOT.parent / "shared" / "data"
IMAGE = os.environ.get("FACTORY_TEST_IMAGE", "localhost/attrfactory:dev")
NAMESPACE = "attrfactory"          # the k8s/ kustomization's namespace
LAUNCHER_SA = "attrfactory"        # k8s/rbac.yaml
JOB_SA = "attrfactory-job"
NODE = "node1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: needs the real local Kubernetes cluster (scripts/k8s-tier.sh)")


def _requested(config: pytest.Config) -> bool:
    return os.environ.get("FACTORY_K8S_TIER") == "1" or "k8s" in (config.getoption("-m") or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    if _requested(config):
        return
    skip = pytest.mark.skip(reason="cluster tier: run scripts/k8s-tier.sh, or pytest -m k8s with the cluster up")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def kubectl_bin() -> str:
    for candidate in (os.environ.get("KUBECTL"), str(Path.home() / ".cache" / "helm-bin" / "kubectl")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("kubectl")
    if not found or "google-cloud-sdk" in os.path.realpath(found):
        pytest.fail("kubectl not found: run `bash ../shared/tools/get-helm.sh`")
    return found


def helm_bin() -> str:
    for candidate in (os.environ.get("HELM"), str(Path.home() / ".cache" / "helm-bin" / "helm")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("helm")
    if not found:
        pytest.fail("helm not found: run `bash ../shared/tools/get-helm.sh`")
    return found


class Cluster:
    """kubectl and the Python client against the local cluster, as admin."""

    def __init__(self, kubeconfig: str):
        import kubernetes

        self.kubeconfig = kubeconfig
        self.kubectl_path = kubectl_bin()
        self.api_client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.batch = kubernetes.client.BatchV1Api(self.api_client)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 180) -> str:
        proc = subprocess.run([self.kubectl_path, "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stdout}\n{proc.stderr}")
        return proc.stdout + proc.stderr

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def wait(self, what: str, predicate: Any, timeout: float = 300, interval: float = 2) -> Any:
        deadline = time.time() + timeout
        last: Any = None
        while time.time() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    def sa_kubeconfig(self, namespace: str, name: str, path: Path) -> str:
        """A kubeconfig that authenticates as a service account (its token Secret, Kubernetes 1.20)."""

        def token() -> str | None:
            sa = self.core.read_namespaced_service_account(name, namespace)
            for ref in sa.secrets or []:
                secret = self.core.read_namespaced_secret(ref.name, namespace)
                if secret.data and secret.data.get("token"):
                    return base64.b64decode(secret.data["token"]).decode()
            return None

        value = self.wait(f"the token of {namespace}/{name}", token, timeout=60)
        admin = yaml.safe_load(Path(self.kubeconfig).read_text())
        cluster = admin["clusters"][0]
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
            "users": [{"name": name, "user": {"token": value}}],
            "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name,
                                                     "namespace": namespace}}],
            "current-context": name,
        }))
        return str(path)

    def pod_logs(self, namespace: str, selector: str) -> str:
        out = []
        for pod in self.core.list_namespaced_pod(namespace, label_selector=selector).items:
            try:
                out.append(self.core.read_namespaced_pod_log(pod.metadata.name, namespace))
            except Exception as exc:  # noqa: BLE001
                out.append(f"<{exc}>")
        return "\n".join(out)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if not K8S_LOCAL.is_file():
        pytest.fail(f"{K8S_LOCAL} is missing")
    kubeconfig = subprocess.run(["bash", str(K8S_LOCAL), "kubeconfig"], capture_output=True, text=True,
                                check=True).stdout.strip()
    if not Path(kubeconfig).is_file():
        pytest.fail(f"no cluster: run `bash {K8S_LOCAL} install && bash {K8S_LOCAL} up` (or scripts/k8s-tier.sh)")
    c = Cluster(kubeconfig)
    ready = c.kubectl("get", "--raw", "/readyz", check=False, timeout=20)
    if "ok" not in ready:
        pytest.fail(f"the cluster is not up ({ready.strip()[:200]}): run `bash {K8S_LOCAL} up`")
    return c


@pytest.fixture(scope="session")
def image(cluster: Cluster) -> str:
    """The attrfactory image, built and imported by scripts/build-image.sh."""
    sock = Path(os.environ.get("K8S_LOCAL_DIR", Path.home() / ".cache" / "k8s-local")) / "run" / "containerd" / "containerd.sock"
    proc = subprocess.run(["ctr", "--address", str(sock), "-n", "k8s.io", "images", "ls", "-q"],
                          capture_output=True, text=True)
    if proc.returncode == 0 and IMAGE not in proc.stdout.split():
        pytest.fail(f"{IMAGE} is not in the cluster: run scripts/build-image.sh {IMAGE}")
    return IMAGE


def use_real_job() -> bool:
    """The real ``python -m factory.training.job`` when the image has it (it is built from this tree)."""
    return (ROOT / "factory" / "training" / "job.py").is_file() and os.environ.get("FACTORY_K8S_STANDIN") != "1"


SPEC_YAML = """\
name: k8s-tier
domain: news headline and short summary
classes: [sports, business]
attributes:
  style:
    values: [breaking news, analysis]
training:
  trainer: linear_probe
  budget_fractions: [0.5, 1.0]
  resources: {cpu: "1", memory: 2Gi}
"""


def _stage_data(root: Path) -> None:
    """The job's inputs: a spec, 'generated' samples (AG News train rows) and a real test set."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (SHARED_DATA / "agnews" / "train.jsonl").read_text().splitlines()]
    picked = [r for r in rows if r["label"] == "sports"][:40] + [r for r in rows if r["label"] == "business"][:40]
    test = [json.loads(line) for line in (SHARED_DATA / "agnews" / "test.jsonl").read_text().splitlines()]
    test = [r for r in test if r["label"] in ("sports", "business")][:60]
    for sub in ("specs", "exports", "test", "results"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "specs" / "k8s-tier.yaml").write_text(SPEC_YAML)
    # the k8s/ example Job's paths
    (root / "specs" / "example-minimal.yaml").write_text(SPEC_YAML.replace("name: k8s-tier", "name: example-minimal"))
    table = pa.table({"text": [r["text"] for r in picked], "label": [r["label"] for r in picked]})
    pq.write_table(table, root / "exports" / "k8s-tier.parquet")
    pq.write_table(table, root / "exports" / "example-minimal.parquet")
    # a broken export for the failure test: one class only
    pq.write_table(table.slice(0, 40), root / "exports" / "one-class.parquet")
    text = "".join(json.dumps(r) + "\n" for r in test)
    (root / "test" / "k8s-tier.jsonl").write_text(text)
    (root / "test" / "example-minimal.jsonl").write_text(text)
    shutil.copy(Path(__file__).parent / "standin_train.py", root / "standin_train.py")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the image runs as uid 10001


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SHARED_DATA / "agnews").is_dir():
        pytest.fail("../shared/data/agnews is needed for the cluster tier's data")
    root = tmp_path_factory.mktemp("k8s-data")
    _stage_data(root)
    return root


@pytest.fixture(scope="session")
def manifests(cluster: Cluster, image: str, data_dir: Path) -> Iterator[dict[str, Any]]:
    """k8s/ applied (kustomize) with the local image, its PVC bound to a hostPath PV over ``data_dir``."""
    pv_name = f"attrfactory-tier-{uuid.uuid4().hex[:6]}"
    docs = [d for d in yaml.safe_load_all(cluster.kubectl("kustomize", str(ROOT / "k8s"))) if d]
    job = next(d for d in docs if d["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["image"] = image
    container["imagePullPolicy"] = "IfNotPresent"
    if not use_real_job():
        container["command"] = ["python", "/data/standin_train.py"]
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    pv = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": {"app.kubernetes.io/name": "attrfactory-tier"}},
        "spec": {"capacity": {"storage": pvc["spec"]["resources"]["requests"]["storage"]},
                 "accessModes": pvc["spec"]["accessModes"], "persistentVolumeReclaimPolicy": "Retain",
                 "storageClassName": "",
                 "claimRef": {"namespace": NAMESPACE, "name": pvc["metadata"]["name"]},
                 "hostPath": {"path": str(data_dir), "type": "Directory"}},
    }
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=180)
    cluster.apply([pv])
    cluster.apply(docs)
    try:
        yield {"docs": docs, "job": job, "pv": pv_name}
    finally:
        if os.environ.get("FACTORY_K8S_KEEP") != "1":
            cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", check=False,
                            timeout=180)
            cluster.kubectl("delete", "pv", pv_name, "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def launcher_kubeconfig(cluster: Cluster, manifests: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    """Authenticates as the launcher service account of k8s/rbac.yaml: only its Role's permissions."""
    return cluster.sa_kubeconfig(NAMESPACE, LAUNCHER_SA, tmp_path_factory.mktemp("sa") / "kubeconfig")
