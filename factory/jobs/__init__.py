"""Jobs that run as their own process: locally, under Dagster Pipes, or as a Kubernetes pod's command.

``python -m factory.jobs.train`` trains and evaluates classifiers on a spec's generated data (see
:mod:`factory.jobs.train`). The names below are the building blocks an orchestrator needs; importing this
package imports neither torch nor dagster.
"""

from factory.jobs.train import pipes_extras, run_train_job_local, train_job_command

__all__ = ["pipes_extras", "run_train_job_local", "train_job_command"]
