"""How one stage hands its result to the next: an IO manager that keeps each asset's output (the spec,
the attribute set, the plan) in the store, so a later stage, in this run or a later one, in this process
or another pod, is handed exactly what the earlier stage produced instead of recomputing it."""

from __future__ import annotations

import pickle
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext

from factory.defs.resources import StoreResource


class StageOutputMissing(RuntimeError):
    """A stage needs an upstream result that was never materialized for its partition."""


class StoreIOManager(ConfigurableIOManager):
    """Pickles asset outputs into the store's ``asset_values`` table, keyed by asset and partition.
    ``None`` outputs (stages whose data is the store's own tables) are not written."""

    store: StoreResource

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        with self.store.open() as store:
            store.save_asset_value(context.asset_key.to_user_string(), context.partition_key,
                                   pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def load_input(self, context: InputContext) -> Any:
        asset = context.asset_key.to_user_string()
        with self.store.open() as store:
            blob = store.asset_value(asset, context.partition_key)
        if blob is None:
            raise StageOutputMissing(f"{asset} has no stored result for {context.partition_key!r}: materialize "
                                     f"{asset} (or the whole partition) first")
        try:
            return pickle.loads(blob)
        except Exception as exc:  # written by another version of the factory
            raise StageOutputMissing(f"{asset} for {context.partition_key!r} was stored by another version of "
                                     f"attrfactory ({type(exc).__name__}): materialize it again") from exc
