"""Where the train/eval job runs, as a Dagster resource chosen by the deployment: a local subprocess
(``PipesSubprocessClient``) on a laptop, a Kubernetes pod (``PipesK8sClient``) on a cluster. Either way the
job reads a folder of staged files (samples, test set, spec) and reports its results through Pipes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, ConfigurableResource, PipesSubprocessClient

from factory.spec import Spec


@dataclass(frozen=True)
class StagedJob:
    """What one train/eval job reads: the spec text and the staged files, as the launching process sees them."""

    spec_yaml: str  # the spec as parsed (paths in it are not resolved by the job: the files below are)
    samples: Path
    test_set: Path
    train_set: Path | None = None  # the real train set, for the gold comparisons
    snapshot_id: int | None = None  # the store snapshot the samples were exported at
    dataset_version: int | None = None  # the spec's dataset version at that snapshot


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
    placement, data volume and the API-key Secret from ``FACTORY_*`` variables, see
    :meth:`factory.k8s.K8sSettings.from_env`)."""

    def run(self, context: AssetExecutionContext, spec: Spec, job: StagedJob) -> JobOutcome:
        from factory.k8s import K8sSettings, run_train_job_k8s
        from factory.training.job import pipes_extras

        settings = K8sSettings.from_env()
        if settings.data is None:
            raise RuntimeError("the kubernetes runner needs FACTORY_DATA_PVC or FACTORY_DATA_HOST_PATH for the "
                               "job's data")
        to_pod = settings.data.pod_path
        extras = pipes_extras(spec_yaml=job.spec_yaml, samples=to_pod(job.samples), test_set=to_pod(job.test_set),
                              train_set=to_pod(job.train_set) if job.train_set else None)
        invocation = run_train_job_k8s(context, spec.training, command=["python", "-m", "factory.training.job"],
                                       settings=settings, extras=extras)
        return _outcome("kubernetes", invocation)


RUNNERS: dict[str, type[TrainJobRunner]] = {"local": LocalTrainRunner, "kubernetes": KubernetesTrainRunner}


def runner_from_env(env: Mapping[str, str]) -> TrainJobRunner:
    """``FACTORY_RUNNER``: ``local`` (default) or ``kubernetes``."""
    name = env.get("FACTORY_RUNNER", "local") or "local"
    if name not in RUNNERS:
        raise ValueError(f"FACTORY_RUNNER={name!r}: use one of {', '.join(RUNNERS)}")
    return RUNNERS[name]()
