"""Dagster definitions: ``dagster dev -m factory.defs`` (or ``factory ui``) shows and drives the factory.

The asset graph (:mod:`~factory.defs.assets`), its checks, the GitOps sensor and the nightly schedule
(:mod:`~factory.defs.automation`), and the services as resources (:mod:`~factory.defs.resources`), with
stage results handed on through the store (:mod:`~factory.defs.io`).
"""

from __future__ import annotations

from typing import Any

from dagster import Definitions, in_process_executor

from factory.defs.assets import ASSETS, SPECS
from factory.defs.automation import after_shards, build_job, nightly_shards, nightly_top_up, spec_sensor, top_up_job
from factory.defs.io import StoreIOManager
from factory.defs.shards import shard_job
from factory.defs.resources import resources_from_env


def with_io(resources: dict[str, Any]) -> dict[str, Any]:
    """``resources`` plus the IO manager that hands stage results on through the same store."""
    return {**resources, "io_manager": StoreIOManager(store=resources["store"])}


defs = Definitions(
    assets=ASSETS,
    jobs=[build_job, top_up_job, shard_job],
    sensors=[spec_sensor, after_shards],
    schedules=[nightly_top_up, nightly_shards],
    resources=with_io(resources_from_env()),
    executor=in_process_executor,  # one DuckDB writer at a time
)

__all__ = ["ASSETS", "SPECS", "defs", "with_io"]
