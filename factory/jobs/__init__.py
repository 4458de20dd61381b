"""Jobs that run as their own process: locally, under Dagster Pipes, or as a Kubernetes pod's command.

``python -m factory.jobs.train`` trains and evaluates classifiers on a spec's generated data (see
:mod:`factory.jobs.train`). The names below are the building blocks an orchestrator needs; they are
imported lazily, so that ``python -m factory.jobs.train`` does not find its module already imported, and
importing this package imports neither torch nor dagster.
"""

from typing import Any

__all__ = ["pipes_extras", "run_train_job_local", "train_job_command"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from factory.jobs import train

        return getattr(train, name)
    raise AttributeError(f"module 'factory.jobs' has no attribute {name!r}")
