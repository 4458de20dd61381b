"""Dagster definitions: ``dagster dev -m factory.defs`` (or ``factory ui``) shows and drives the factory."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from factory.defs.assets import ASSETS, SPECS
from factory.defs.automation import build_job, nightly_top_up, spec_sensor, top_up_job
from factory.defs.resources import FactoryResource, resource_from_env

defs = Definitions(
    assets=ASSETS,
    jobs=[build_job, top_up_job],
    sensors=[spec_sensor],
    schedules=[nightly_top_up],
    resources={"factory": resource_from_env()},
    executor=in_process_executor,  # one DuckDB writer at a time
)

__all__ = ["ASSETS", "SPECS", "FactoryResource", "defs"]
