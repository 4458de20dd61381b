"""Training and evaluation as Kubernetes pods: the pod-spec builder and the Dagster Pipes launcher.

``pod_spec`` turns a spec's ``training`` section (resources, image) plus the cluster's settings
(service account, node placement, the data volume, the API-key Secret) into a PodSpec dict.
``run_train_job_k8s`` launches ``python -m factory.training.job`` with that spec through
:class:`dagster_k8s.PipesK8sClient` from inside a Dagster asset: the job's logs and its reported
materialization (macro_f1, accuracy, ...) come back through Dagster Pipes, and a failing pod fails the
asset with the pod's log in the error message.

The API key only ever reaches a pod as a ``secretKeyRef`` environment variable: no function here takes
the key itself, and a plain ``env`` entry named like the key variable is refused.

Nothing heavy is imported at module level (kubernetes and dagster_k8s are imported when a job is run),
so building and testing pod specs needs neither a cluster nor the Kubernetes client.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from factory.spec import TrainingSpec

if TYPE_CHECKING:  # pragma: no cover
    from dagster import AssetExecutionContext, OpExecutionContext
    from dagster._core.pipes.client import PipesClientCompletedInvocation

CONTAINER_NAME = "train"
DEFAULT_IMAGE = "attrfactory:latest"
DEFAULT_MOUNT = "/data"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
GPU_RESOURCE = "nvidia.com/gpu"
INVOCATION_LABEL = "attrfactory.dev/invocation"
COMMON_LABELS = {"app.kubernetes.io/name": "attrfactory", "app.kubernetes.io/component": "train"}
LOG_TAIL_LINES = 200
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Environment variables every job pod gets: no model hub is reachable from a job, ever.
BASE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
# The image runs as uid/gid 10001 (see Dockerfile); fsGroup makes a PVC writable for it.
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}


class K8sJobError(RuntimeError):
    """A training/evaluation pod failed; the message carries the pod's log."""


@dataclass(frozen=True)
class DataVolume:
    """Where the job's inputs and outputs live: a PersistentVolumeClaim, or a hostPath (local cluster).

    ``mount_path`` is the directory inside the job pod; ``local_root`` is the same directory as the
    launching process sees it (the user-code pod's mount of the same claim, or the host directory of a
    hostPath), so that :meth:`pod_path` can translate the paths the asset wrote into pod paths.
    """

    claim_name: str | None = None
    host_path: str | None = None
    mount_path: str = DEFAULT_MOUNT
    local_root: str | None = None
    read_only: bool = False
    name: str = "data"

    def __post_init__(self) -> None:
        if (self.claim_name is None) == (self.host_path is None):
            raise ValueError("a DataVolume needs exactly one of claim_name or host_path")
        if not PurePosixPath(self.mount_path).is_absolute():
            raise ValueError(f"mount_path must be absolute, got {self.mount_path!r}")

    def volume(self) -> dict[str, Any]:
        if self.claim_name is not None:
            source: dict[str, Any] = {
                "persistentVolumeClaim": {"claimName": self.claim_name, "readOnly": self.read_only}
            }
        else:
            source = {"hostPath": {"path": self.host_path, "type": "Directory"}}
        return {"name": self.name, **source}

    def mount(self) -> dict[str, Any]:
        return {"name": self.name, "mountPath": self.mount_path, "readOnly": self.read_only}

    def pod_path(self, local: str | os.PathLike[str]) -> str:
        """The path inside the pod of a file the launcher sees at ``local`` (under ``local_root``)."""
        root = self.local_root or self.host_path or self.mount_path
        try:
            rel = Path(os.path.abspath(local)).relative_to(os.path.abspath(root))
        except ValueError:
            raise ValueError(f"{local} is not on the data volume (under {root}), so a job pod cannot read it: "
                             "keep the factory's files under the data mount (e.g. FACTORY_EXPORT_DIR)") from None
        return str(PurePosixPath(self.mount_path, *rel.parts))


@dataclass(frozen=True)
class K8sSettings:
    """The cluster side of a run: everything a spec does not say. ``from_env`` reads what the chart sets."""

    namespace: str = "default"
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    data: DataVolume | None = None
    api_key_secret: tuple[str, str] | None = None
    api_key_env: str = DEFAULT_API_KEY_ENV
    store_password_secret: tuple[str, str] | None = None  # the store's PGPASSWORD, for jobs that read the store
    env: Mapping[str, str] = field(default_factory=dict)
    kubeconfig: str | None = None
    in_cluster: bool = False
    poll_interval: float = 2.0
    pod_wait_timeout: float = 24 * 3600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> K8sSettings:
        """Settings from ``FACTORY_*`` variables (set by the Helm chart on the user-code deployment).

        FACTORY_NAMESPACE, FACTORY_IMAGE, FACTORY_IMAGE_PULL_POLICY, FACTORY_SERVICE_ACCOUNT,
        FACTORY_NODE_SELECTOR (JSON object), FACTORY_TOLERATIONS (JSON list), FACTORY_DATA_PVC or
        FACTORY_DATA_HOST_PATH, FACTORY_DATA_MOUNT (default /data), FACTORY_DATA_LOCAL_ROOT,
        FACTORY_API_KEY_SECRET ("secret-name" or "secret-name:key"; key defaults to api-key),
        FACTORY_API_KEY_ENV, FACTORY_STORE_PASSWORD_SECRET ("secret-name:key": the store's PGPASSWORD for
        jobs that read the store), FACTORY_JOB_ENV (JSON object of plain variables, e.g. OPENAI_BASE_URL),
        KUBECONFIG, and in-cluster config when KUBERNETES_SERVICE_HOST is set and KUBECONFIG is not.
        """
        env = os.environ if environ is None else environ
        data = None
        mount = env.get("FACTORY_DATA_MOUNT") or DEFAULT_MOUNT
        if env.get("FACTORY_DATA_PVC"):
            data = DataVolume(claim_name=env["FACTORY_DATA_PVC"], mount_path=mount,
                              local_root=env.get("FACTORY_DATA_LOCAL_ROOT") or mount)
        elif env.get("FACTORY_DATA_HOST_PATH"):
            data = DataVolume(host_path=env["FACTORY_DATA_HOST_PATH"], mount_path=mount,
                              local_root=env.get("FACTORY_DATA_LOCAL_ROOT") or env["FACTORY_DATA_HOST_PATH"])
        secret = _secret_ref(env.get("FACTORY_API_KEY_SECRET"), "api-key")
        kubeconfig = env.get("KUBECONFIG") or None
        return cls(
            namespace=env.get("FACTORY_NAMESPACE") or "default",
            image=env.get("FACTORY_IMAGE") or DEFAULT_IMAGE,
            image_pull_policy=env.get("FACTORY_IMAGE_PULL_POLICY") or "IfNotPresent",
            service_account=env.get("FACTORY_SERVICE_ACCOUNT") or None,
            node_selector=json.loads(env.get("FACTORY_NODE_SELECTOR") or "{}"),
            tolerations=tuple(json.loads(env.get("FACTORY_TOLERATIONS") or "[]")),
            data=data,
            api_key_secret=secret,
            api_key_env=env.get("FACTORY_API_KEY_ENV") or DEFAULT_API_KEY_ENV,
            store_password_secret=_secret_ref(env.get("FACTORY_STORE_PASSWORD_SECRET"), "password"),
            env=json.loads(env.get("FACTORY_JOB_ENV") or "{}"),
            kubeconfig=kubeconfig,
            in_cluster=kubeconfig is None and bool(env.get("KUBERNETES_SERVICE_HOST")),
        )

    def with_(self, **changes: Any) -> K8sSettings:
        return replace(self, **changes)


def _secret_ref(value: str | None, default_key: str) -> tuple[str, str] | None:
    """``"secret-name"`` or ``"secret-name:key"`` as (name, key)."""
    if not value:
        return None
    name, _, key = value.partition(":")
    return name, key or default_key


def label_value(text: str) -> str:
    """``text`` as a valid label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("-._") or "x"


def resources(training: TrainingSpec) -> dict[str, dict[str, str]]:
    """Requests = limits for cpu and memory (and ``nvidia.com/gpu`` when the spec asks for GPUs)."""
    res = {"cpu": str(training.resources.cpu), "memory": str(training.resources.memory)}
    if training.resources.gpu > 0:
        res[GPU_RESOURCE] = str(training.resources.gpu)
    return {"requests": dict(res), "limits": dict(res)}


def pod_spec(
    training: TrainingSpec,
    *,
    image: str | None = None,
    service_account: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    data: DataVolume | None = None,
    api_key_secret: tuple[str, str] | None = None,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, tuple[str, str]] | None = None,
    command: Sequence[str] | None = None,
    image_pull_policy: str = "IfNotPresent",
    container_name: str = CONTAINER_NAME,
    security_context: Mapping[str, Any] | None = POD_SECURITY_CONTEXT,
) -> dict[str, Any]:
    """A PodSpec (camelCase dict, as in a manifest) that runs one training/evaluation job.

    The image is ``image``, else the spec's ``training.image``, else :data:`DEFAULT_IMAGE`. A namespace is
    not part of a PodSpec: it goes on the Pod/Job (``job_manifest``) or to ``PipesK8sClient.run``.
    ``api_key_secret`` is ``(secret name, key)``: the key reaches the pod as a ``secretKeyRef``, never as a
    value; so does every ``secret_env`` variable (name -> (secret name, key)). GPU jobs get ``nvidia.com/gpu``
    requests/limits and, unless ``tolerations`` is given, the usual ``nvidia.com/gpu`` NoSchedule toleration.
    """
    if not _ENV_NAME.match(api_key_env):
        raise ValueError(f"api_key_env must be an environment variable NAME, got {api_key_env!r}")
    plain = {**BASE_ENV, **(env or {})}
    for name in plain:
        if not _ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name {name!r}")
    if api_key_env in plain:
        raise ValueError(
            f"{api_key_env} must not be passed as a plain value: give api_key_secret=(secret, key) instead"
        )
    env_list: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in plain.items()]
    secrets = {**(secret_env or {}), **({api_key_env: api_key_secret} if api_key_secret is not None else {})}
    for name, (secret_name, secret_key) in secrets.items():
        if not secret_name or not secret_key:
            raise ValueError(f"the Secret of {name} must be (secret name, key)")
        if name in plain:
            raise ValueError(f"{name} comes from a Secret: it must not be passed as a plain value too")
        env_list.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": secret_key}}})

    container: dict[str, Any] = {
        "name": container_name,
        "image": image or training.image or DEFAULT_IMAGE,
        "imagePullPolicy": image_pull_policy,
        "env": env_list,
        "resources": resources(training),
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if command:
        container["command"] = list(command)
    # The job never calls the API server: no token in the pod.
    spec: dict[str, Any] = {"restartPolicy": "Never", "automountServiceAccountToken": False,
                            "containers": [container]}
    if security_context:
        spec["securityContext"] = dict(security_context)
    if service_account:
        spec["serviceAccountName"] = service_account
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations is not None:
        if tolerations:
            spec["tolerations"] = [dict(t) for t in tolerations]
    elif training.resources.gpu > 0:
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    if data is not None:
        spec["volumes"] = [data.volume()]
        container["volumeMounts"] = [data.mount()]
    return spec


def pod_spec_from_settings(training: TrainingSpec, settings: K8sSettings,
                           command: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`pod_spec` with the cluster side taken from ``settings`` (the spec's image wins)."""
    return pod_spec(
        training,
        image=training.image or settings.image,
        service_account=settings.service_account,
        node_selector=settings.node_selector,
        tolerations=list(settings.tolerations) if settings.tolerations else None,
        data=settings.data,
        api_key_secret=settings.api_key_secret,
        api_key_env=settings.api_key_env,
        env=settings.env,
        secret_env={"PGPASSWORD": settings.store_password_secret} if settings.store_password_secret else None,
        command=command,
        image_pull_policy=settings.image_pull_policy,
    )


def job_manifest(training: TrainingSpec, *, name: str, namespace: str, command: Sequence[str],
                 backoff_limit: int = 0, ttl_seconds_after_finished: int | None = 3600,
                 **pod_kwargs: Any) -> dict[str, Any]:
    """A ``batch/v1`` Job running ``command`` with :func:`pod_spec` (for kubectl/GitOps use)."""
    labels = dict(COMMON_LABELS)
    spec: dict[str, Any] = {
        "backoffLimit": backoff_limit,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec(training, command=command, **pod_kwargs)},
    }
    if ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}


# --------------------------------------------------------------------------------------------------
# Launching through Dagster Pipes.


def _api_client(settings: K8sSettings) -> Any:
    import kubernetes

    if settings.in_cluster:
        kubernetes.config.load_incluster_config()
        return kubernetes.client.ApiClient()
    return kubernetes.config.new_client_from_config(config_file=settings.kubeconfig)


def _is_pipes_message(line: str) -> bool:
    return '"__dagster_pipes_version"' in line


def pod_log_tail(core_api: Any, namespace: str, label_selector: str, tail_lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of every pod matching ``label_selector``, without Dagster Pipes protocol lines."""
    chunks = []
    for pod in core_api.list_namespaced_pod(namespace, label_selector=label_selector).items:
        name = pod.metadata.name
        try:
            raw = core_api.read_namespaced_pod_log(name, namespace, tail_lines=tail_lines, _preload_content=False)
            text = raw.data.decode("utf-8", errors="replace")
        except Exception as exc:  # noqa: BLE001 - the log is best effort; the failure is reported anyway
            text = f"<log unavailable: {exc}>"
        lines = [ln for ln in text.splitlines() if not _is_pipes_message(ln)]
        state = pod.status.phase if pod.status else "?"
        for status in (pod.status.container_statuses or []) if pod.status else []:
            if status.state and status.state.terminated:
                state += f", {status.name} exit code {status.state.terminated.exit_code}"
            elif status.state and status.state.waiting:
                state += f", {status.name} waiting: {status.state.waiting.reason} {status.state.waiting.message or ''}"
        chunks.append(f"--- pod {name} ({state.strip()}), last {tail_lines} log lines ---\n" + "\n".join(lines))
    return "\n".join(chunks) if chunks else f"<no pod matched {label_selector}>"


def run_train_job_k8s(
    context: AssetExecutionContext | OpExecutionContext,
    training: TrainingSpec,
    *,
    command: Sequence[str],
    settings: K8sSettings | None = None,
    extras: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    client: Any | None = None,
) -> PipesClientCompletedInvocation:
    """Run ``command`` (e.g. ``python -m factory.training.job ...``) in a pod built by :func:`pod_spec`, via Pipes.

    Returns the completed invocation: ``.get_materialize_result()`` is the job's reported
    materialization (metadata macro_f1, accuracy, ...). A failing pod raises :class:`K8sJobError` whose
    message ends with the pod's log (its stderr carries the job's error), and the pod is deleted either
    way.
    """
    from dagster_k8s import PipesK8sClient

    settings = settings or K8sSettings.from_env()
    if env and settings.api_key_env in env:
        raise ValueError(f"{settings.api_key_env} must come from a Secret (K8sSettings.api_key_secret), not env")
    invocation = uuid.uuid4().hex[:16]
    selector = f"{INVOCATION_LABEL}={invocation}"
    if client is None:
        client = PipesK8sClient(
            load_incluster_config=settings.in_cluster,
            kubeconfig_file=None if settings.in_cluster else settings.kubeconfig,
            poll_interval=settings.poll_interval,
        )
    base_pod_spec = pod_spec_from_settings(training, settings)
    context.log.info(
        f"launching a training pod in namespace {settings.namespace} (image {base_pod_spec['containers'][0]['image']},"
        f" resources {base_pod_spec['containers'][0]['resources']['limits']}): {shlex.join(command)}"
    )
    api = None
    try:
        try:
            return client.run(
                context=context,
                image=base_pod_spec["containers"][0]["image"],
                command=list(command),
                namespace=settings.namespace,
                env=dict(env or {}),
                base_pod_meta={"labels": {**(labels or {}), **COMMON_LABELS, INVOCATION_LABEL: invocation}},
                base_pod_spec=base_pod_spec,
                extras=dict(extras or {}),
                pod_wait_timeout=settings.pod_wait_timeout,
                delete_pod_on_completion=False,  # read the log on failure first; deleted below
            )
        except Exception as exc:
            import kubernetes

            api = _api_client(settings)
            log = pod_log_tail(kubernetes.client.CoreV1Api(api), settings.namespace, selector)
            cause = "\n".join(ln for ln in str(exc).splitlines() if not _is_pipes_message(ln)).strip()
            raise K8sJobError(
                f"training job failed: {shlex.join(command)}\n{log}\n--- {type(exc).__name__} ---\n{cause}"
            ) from exc
    finally:
        _delete_pods(settings, selector, api)


def _delete_pods(settings: K8sSettings, selector: str, api: Any | None) -> None:
    import kubernetes

    try:
        api = api or _api_client(settings)
        kubernetes.client.CoreV1Api(api).delete_collection_namespaced_pod(
            settings.namespace, label_selector=selector
        )
    except Exception:  # noqa: BLE001 - cleanup must not hide the job's own outcome
        pass


def metrics_from_invocation(invocation: PipesClientCompletedInvocation) -> dict[str, Any]:
    """The job's reported materialization metadata as plain Python values (floats, ints, dicts, str)."""
    result = invocation.get_materialize_result()
    out: dict[str, Any] = {}
    for key, value in (result.metadata or {}).items():
        out[key] = getattr(value, "value", value)
    return out
