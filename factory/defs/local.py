"""``factory run``: the same asset graph, materialized in-process for one spec's partition."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, materialize

from factory.defs.assets import ASSETS, SPECS
from factory.defs.resources import FactoryResource


def instance_for_cli() -> DagsterInstance:
    """The deployment's instance when ``$DAGSTER_HOME`` is set (runs show in the UI), else an ephemeral one."""
    return DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()


def materialize_spec(spec_path: Path, db_path: Path, *, show_progress: bool = False, refresh: bool = False,
                     instance: DagsterInstance | None = None, log_level: str = "WARNING",
                     export_dir: Path | None = None) -> ExecuteInProcessResult:
    """Materialize every asset of ``spec_path``'s partition (the file stem) into ``db_path``."""
    key = spec_path.stem
    instance = instance or instance_for_cli()
    if not instance.has_dynamic_partition(SPECS.name, key):
        instance.add_dynamic_partitions(SPECS.name, [key])
    factory = FactoryResource(db_path=str(db_path), specs_dir=str(spec_path.resolve().parent),
                              export_dir=str(export_dir or Path(os.environ.get("FACTORY_EXPORT_DIR", "exports"))),
                              runner=os.environ.get("FACTORY_RUNNER", "local"), show_progress=show_progress,
                              refresh=refresh)
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    return materialize(ASSETS, partition_key=key, instance=instance, resources={"factory": factory},
                       run_config=run_config)


def materialization_metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The plain values of an asset's metadata in a finished in-process run."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        if materialization.asset_key.to_user_string() == asset:
            return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return {}
