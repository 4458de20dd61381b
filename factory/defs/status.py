"""What is running: the Dagster instance's queued and in-progress runs, by spec (``factory status``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from factory.defs.tags import PARTITION_TAG, SHARD_TAG, SHARDS_TAG, SPEC_TAG

IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


@dataclass(frozen=True)
class RunLine:
    """One queued or running Dagster run, as ``factory status`` shows it."""

    spec: str
    job: str
    status: str
    run_id: str
    shard: str
    since: datetime  # started, else created (queued)


class NoInstance(RuntimeError):
    """No Dagster instance to read ($DAGSTER_HOME unset or without a dagster.yaml)."""


@contextmanager
def dagster_instance(home: str | None = None) -> Iterator[Any]:
    """The Dagster instance at ``home`` (default ``$DAGSTER_HOME``): the one the daemon and the UI use."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    home = home or os.environ.get("DAGSTER_HOME")
    if not home:
        raise NoInstance("$DAGSTER_HOME is not set: point it at the Dagster instance (the folder of its "
                         "dagster.yaml) to see its runs")
    if not (Path(home) / "dagster.yaml").is_file():
        raise NoInstance(f"{home} has no dagster.yaml: not a Dagster instance")
    with DagsterInstance.from_ref(InstanceRef.from_dir(home)) as instance:
        yield instance


def _shard(tags: dict[str, str]) -> str:
    shard = tags.get(SHARD_TAG)
    if not shard:
        return ""
    index = shard.rsplit("/", 1)[-1]
    return f"{int(index) + 1} of {tags.get(SHARDS_TAG, '?')}" if index.isdigit() else shard


def runs_in_flight(instance: Any) -> list[RunLine]:
    """Queued and in-progress runs, oldest first, each with the spec it is for."""
    from dagster import DagsterRunStatus, RunsFilter

    records = instance.get_run_records(filters=RunsFilter(statuses=[DagsterRunStatus[s] for s in IN_FLIGHT]))
    lines = []
    for record in records:
        run = record.dagster_run
        tags = dict(run.tags)
        started = record.start_time or record.create_timestamp.timestamp()
        lines.append(RunLine(spec=tags.get(SPEC_TAG) or tags.get(PARTITION_TAG) or "-", job=run.job_name,
                             status=run.status.value, run_id=run.run_id, shard=_shard(tags),
                             since=datetime.fromtimestamp(started, timezone.utc)))
    return sorted(lines, key=lambda line: (line.spec, line.since))
