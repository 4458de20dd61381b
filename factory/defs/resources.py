"""The factory's Dagster resource: the store, the specs folder and the runner, from the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource

from factory.spec import Spec, load_spec
from factory.store import Store

SPEC_SUFFIX = ".yaml"


def spec_files(specs_dir: Path) -> dict[str, Path]:
    """Partition key (the file stem) -> spec file, for every spec in the folder (lock files excluded)."""
    return {p.stem: p for p in sorted(specs_dir.glob(f"*{SPEC_SUFFIX}")) if not p.name.endswith(".lock.yaml")}


class FactoryResource(ConfigurableResource):
    """Where the factory keeps its data and finds its specs; the same code on a laptop and a cluster.

    ``db_path`` ($FACTORY_DB), ``specs_dir`` ($FACTORY_SPECS_DIR), ``runner`` ($FACTORY_RUNNER: local or
    kubernetes), ``export_dir`` ($FACTORY_EXPORT_DIR). The endpoint and the API key's variable name come from
    the spec, else $OPENAI_BASE_URL; the key itself is read from the environment only when a request is sent.
    """

    db_path: str = "factory.duckdb"
    specs_dir: str = "specs"
    export_dir: str = "exports"
    runner: str = "local"
    show_progress: bool = False
    refresh: bool = False

    def spec(self, key: str) -> Spec:
        path = spec_files(Path(self.specs_dir)).get(key)
        if path is None:
            raise FileNotFoundError(f"no spec {key}{SPEC_SUFFIX} in {self.specs_dir}")
        return load_spec(path)

    @contextmanager
    def store(self) -> Iterator[Store]:
        with Store(self.db_path) as store:
            yield store


def resource_from_env() -> FactoryResource:
    env = os.environ
    return FactoryResource(db_path=env.get("FACTORY_DB", "factory.duckdb"),
                           specs_dir=env.get("FACTORY_SPECS_DIR", "specs"),
                           export_dir=env.get("FACTORY_EXPORT_DIR", "exports"),
                           runner=env.get("FACTORY_RUNNER", "local"))
