"""``factory run``: the same asset graph, materialized in-process for one spec's partition."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagster import AssetSelection, DagsterInstance, ExecuteInProcessResult, materialize

from factory.defs import with_io
from factory.defs.assets import ASSETS, SPECS
from factory.spec import Spec, load_spec
from factory.store import Lease, Store, StoreLocation
from factory.defs.resources import RunOptions, SpecCatalog, StoreResource, resources_from_env, spec_key


def instance_for_cli() -> DagsterInstance:
    """The deployment's instance when ``$DAGSTER_HOME`` is set (runs show in the UI), else an ephemeral one."""
    return DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()


def materialize_spec(spec_path: Path, db_path: str | Path | StoreLocation, *, spec: Spec | None = None, show_progress: bool = False, refresh: bool = False,
                     instance: DagsterInstance | None = None, log_level: str = "WARNING",
                     export_dir: Path | None = None, resources: dict[str, Any] | None = None,
                     through: str | None = None, lease_wait_s: float | None = 0.0,
                     on_lease_wait: Callable[[Exception], None] | None = None) -> ExecuteInProcessResult:
    """Materialize the assets of ``spec_path``'s partition (its file name without the suffix) into
    the store ``db_path``: all of them, or ``through`` an asset (it and everything upstream of it, e.g.
    ``"generations"``). ``spec``: the file already parsed (the run parses it no more). ``resources``
    replace the deployment's (e.g. a test's own LLM endpoint). The run holds the spec's lease throughout;
    ``lease_wait_s``: how long to wait for another run of the same spec (0: refuse with
    :class:`~factory.store.LeaseHeld`, None: wait as long as it takes)."""
    key = spec_key(spec_path)
    name = (spec or load_spec(spec_path)).name
    holder = f"factory-run-{uuid.uuid4().hex[:12]}"
    location = db_path if isinstance(db_path, StoreLocation) else StoreLocation.parse(db_path)
    instance = instance or instance_for_cli()
    if not instance.has_dynamic_partition(SPECS.name, key):
        instance.add_dynamic_partitions(SPECS.name, [key])
    export = str(export_dir or Path(os.environ.get("FACTORY_EXPORT_DIR", "exports")))
    chosen = resources_from_env(
        specs=SpecCatalog(specs_dir=str(spec_path.resolve().parent), files={key: str(spec_path.resolve())},
                          preloaded={key: spec} if spec is not None else {}),
        store=StoreResource(location=location.url, data_path=location.data_path, lease_wait_s=lease_wait_s,
                            holder=holder),
        options=RunOptions(export_dir=export, show_progress=show_progress, refresh=refresh))
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    selection = AssetSelection.assets(through).upstream().required_multi_asset_neighbors() if through else None
    with Store(location) as store, Lease(store, name, holder, wait_s=lease_wait_s, on_wait=on_lease_wait):
        return materialize(ASSETS, partition_key=key, instance=instance,
                           resources=with_io({**chosen, **(resources or {})}), run_config=run_config,
                           raise_on_error=True, selection=selection)


def materialization_metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The plain values of an asset's metadata in a finished in-process run."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        if materialization.asset_key.to_user_string() == asset:
            return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return {}


def check_names() -> set[str]:
    """Every asset check of the graph (a check missing from a run's evaluations was skipped)."""
    return {key.name for a in ASSETS for key in a.check_keys}
