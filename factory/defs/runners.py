"""Where the train/eval job runs, as a Dagster resource chosen by the deployment: a local subprocess
(``PipesSubprocessClient``) on a laptop, a Kubernetes pod (``PipesK8sClient``) on a cluster. Locally the job
reads a folder of staged files (samples exported at the run's snapshot, test set, spec); a pod reads the
samples from the shared store itself, pinned at that snapshot (nothing is copied between pods). Either way
it reports its results through Pipes, and the launching run records them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, ConfigurableResource, PipesSubprocessClient

from factory.spec import Spec
from factory.store import StoreLocation


@dataclass(frozen=True)
class StagedJob:
    """What one train/eval job reads: the spec text and the staged files, as the launching process sees them."""

    spec_yaml: str  # the spec as parsed (paths in it are not resolved by the job: the files below are)
    samples: Path | None  # exported samples; None: the job reads ``store`` at ``snapshot``
    test_set: Path
    train_set: Path | None = None  # the real train set, for the gold comparisons
    snapshot_id: int | None = None  # the store snapshot the samples were exported at
    dataset_version: int | None = None  # the spec's dataset version at that snapshot
    store: StoreLocation | None = None  # the store the job reads (at ``snapshot``) when ``samples`` is None


@dataclass(frozen=True)
class JobOutcome:
    runner: str
    results: dict[str, Any]
    materialization: Any


def _outcome(runner: str, invocation: Any) -> JobOutcome:
    from factory.training.job import reported_results

    return JobOutcome(runner, reported_results(invocation), invocation.get_materialize_result())


class TrainJobRunner(ConfigurableResource):
    """Runs ``python -m factory.training.job`` on staged files and returns what it reported."""

    reads_store: bool = False  # the job reads the store at the snapshot (no exported samples are staged)

    def run(self, context: AssetExecutionContext, spec: Spec, job: StagedJob) -> JobOutcome:
        raise NotImplementedError


class LocalTrainRunner(TrainJobRunner):
    """The job as a subprocess of the Dagster run (a laptop, CI)."""

    def run(self, context: AssetExecutionContext, spec: Spec, job: StagedJob) -> JobOutcome:
        from factory.training.job import pipes_extras, train_job_command

        extras = pipes_extras(spec_yaml=job.spec_yaml, samples=job.samples, test_set=job.test_set,
                              train_set=job.train_set)
        invocation = PipesSubprocessClient().run(command=train_job_command(), context=context, extras=extras)
        return _outcome("local", invocation)


class KubernetesTrainRunner(TrainJobRunner):
    """The job as a pod (resources, GPU, image from the spec's ``training``; namespace, service account,
    placement, data volume and the API-key and store-password Secrets from ``FACTORY_*`` variables, see
    :meth:`factory.k8s.K8sSettings.from_env`). The pod reads the samples from the store at the run's snapshot
    (a PostgreSQL catalog with the data path every pod mounts, or an embedded store on the data volume), and
    is labelled with its spec and the pod that launched it."""

    reads_store: bool = True

    def run(self, context: AssetExecutionContext, spec: Spec, job: StagedJob) -> JobOutcome:
        from factory.k8s import K8sSettings, label_value, run_train_job_k8s

        settings = K8sSettings.from_env()
        if settings.data is None:
            raise RuntimeError("the kubernetes runner needs FACTORY_DATA_PVC or FACTORY_DATA_HOST_PATH for the "
                               "job's data")
        extras, env = pod_inputs(job, settings.data)
        labels = {"attrfactory.dev/spec": label_value(spec.name)}
        if os.environ.get("HOSTNAME"):  # in a run pod: the pod's name
            labels["attrfactory.dev/launched-by"] = label_value(os.environ["HOSTNAME"])
        invocation = run_train_job_k8s(context, spec.training, command=["python", "-m", "factory.training.job"],
                                       settings=settings, extras=extras, env=env, labels=labels)
        return _outcome("kubernetes", invocation)


def pod_inputs(job: StagedJob, data: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The Pipes extras and plain env of a job pod: paths as the pod sees them on the data volume
    (:class:`factory.k8s.DataVolume`); the store (at the job's snapshot) or the exported samples."""
    from factory.training.job import pipes_extras

    to_pod = data.pod_path
    env: dict[str, str] = {}
    if job.samples is not None:
        source: dict[str, Any] = {"samples": to_pod(job.samples)}
    elif job.store is not None and job.store.embedded:
        source = {"db_path": to_pod(job.store.root), "snapshot": job.snapshot_id}
    elif job.store is not None:
        source = {"db_path": job.store.url, "snapshot": job.snapshot_id}
        env["FACTORY_DATA_PATH"] = job.store.data_path  # the same path in every pod of the deployment
    else:
        raise ValueError("a staged job needs exported samples or the store to read")
    extras = pipes_extras(spec_yaml=job.spec_yaml, test_set=to_pod(job.test_set),
                          train_set=to_pod(job.train_set) if job.train_set else None, **source)
    return extras, env


RUNNERS: dict[str, type[TrainJobRunner]] = {"local": LocalTrainRunner, "kubernetes": KubernetesTrainRunner}


def runner_from_env(env: Mapping[str, str]) -> TrainJobRunner:
    """``FACTORY_RUNNER``: ``local`` (default) or ``kubernetes``."""
    name = env.get("FACTORY_RUNNER", "local") or "local"
    if name not in RUNNERS:
        raise ValueError(f"FACTORY_RUNNER={name!r}: use one of {', '.join(RUNNERS)}")
    return RUNNERS[name]()
