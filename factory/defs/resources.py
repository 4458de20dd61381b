"""The factory's services as Dagster resources: where specs come from, the store, the LLM endpoint, the
embedder and the train/eval job runner. A deployment (or a test) swaps a resource, not the code.

``resources_from_env`` builds the set a deployment uses from the environment: ``FACTORY_SPECS_DIR``,
``FACTORY_STORE`` (``FACTORY_DB``), ``FACTORY_DATA_PATH``, ``FACTORY_LEASE_WAIT_S``, ``FACTORY_EXPORT_DIR``, ``OPENAI_BASE_URL`` and ``FACTORY_RUNNER`` (``local``: the job as
a subprocess; ``kubernetes``: as a pod). API keys are read from the environment variable a spec names,
only when a request is sent; no resource holds one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from factory.generation.llm.client import EndpointProvider
from factory.spec import Spec, load_spec
from factory.store import Lease, Store, StoreLocation

SPEC_SUFFIXES = (".yaml", ".yml")
LOCK_SUFFIXES = (".lock.yaml", ".lock.yml")


def spec_key(path: Path) -> str:
    """A spec file's partition key: its file name without the suffix."""
    return path.name.removesuffix(path.suffix) if path.suffix else path.name


def spec_files(specs_dir: Path) -> dict[str, Path]:
    """Partition key -> spec file, for every ``.yaml``/``.yml`` spec in the folder (lock files excluded)."""
    found = sorted(p for p in specs_dir.glob("*") if p.suffix in SPEC_SUFFIXES and p.is_file()
                   and not p.name.endswith(LOCK_SUFFIXES))
    return {spec_key(p): p for p in found}


@dataclass
class SpecCatalog:
    """Where a partition's spec comes from: ``preloaded`` (key -> a spec already parsed, e.g. by
    ``factory run``, which hands its one parse to the run), else ``files`` (key -> path, wherever it is and
    whatever its suffix), else the spec files in ``specs_dir``. A plain resource (``ResourceParam``)."""

    specs_dir: str = "specs"
    files: dict[str, str] = field(default_factory=dict)
    preloaded: dict[str, Spec] = field(default_factory=dict)

    def paths(self) -> dict[str, Path]:
        folder = Path(self.specs_dir)
        found = spec_files(folder) if folder.is_dir() else {}
        return {**found, **{k: Path(v) for k, v in self.files.items()}}

    def path(self, key: str) -> Path:
        path = self.paths().get(key)
        if path is None:
            raise FileNotFoundError(f"no spec for partition {key!r} in {self.specs_dir}")
        return path

    def load(self, key: str) -> Spec:
        """The partition's spec, parsed and validated (the run's one parse: later stages are handed it)."""
        if key in self.preloaded:
            return self.preloaded[key]
        return load_spec(self.path(key))


class StoreResource(ConfigurableResource):
    """The shared store (a folder, or ``postgres:CONNINFO`` with ``data_path``; default ``$FACTORY_STORE``);
    each stage opens it for its own transactions and closes it again. ``lease_wait_s``: how long a run waits
    for another run of the same spec (0: refuse at once; None: as long as it takes)."""

    location: str | None = None
    data_path: str | None = None
    lease_wait_s: float | None = 3600.0
    holder: str | None = None  # who holds the leases (``factory run``: the whole run's lease), else the Dagster run

    @contextmanager
    def open(self) -> Iterator[Store]:
        with Store(StoreLocation.parse(self.location, self.data_path)) as store:
            yield store

    def lease(self, store: Store, spec_name: str, holder: str, log: Any = None) -> Lease:
        """The spec's lease for one stage (two runs of one spec never write at once)."""
        def waiting(held: Exception) -> None:
            if log is not None:
                log.info(f"waiting: {held}")
        return Lease(store, spec_name, self.holder or holder, wait_s=self.lease_wait_s, on_wait=waiting)


class LLMResource(ConfigurableResource):
    """The LLM endpoint: a spec's own ``base_url``, else ``base_url`` here ($OPENAI_BASE_URL), else the
    embedded offline server, started at most once per run and stopped when the run ends."""

    base_url: str | None = None
    parallel: int = 4
    _provider: EndpointProvider | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._provider = EndpointProvider(self.base_url, self.parallel)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._provider is not None:
            self._provider.close()

    @property
    def endpoints(self) -> EndpointProvider:
        if self._provider is None:  # used outside a run (e.g. called directly in a test)
            self._provider = EndpointProvider(self.base_url, self.parallel)
        return self._provider


class EmbedderResource(ConfigurableResource):
    """The sentence embedder of the quality stage (all-MiniLM-L6-v2 from its PyPI package by default)."""

    model_path: str | None = None
    batch_size: int = 64
    _embedder: Any = PrivateAttr(default=None)

    def get(self) -> Any:
        if self._embedder is None:
            from factory.quality.embeddings import Embedder

            self._embedder = Embedder(Path(self.model_path) if self.model_path else None, self.batch_size)
        return self._embedder


class RunOptions(ConfigurableResource):
    """How a run behaves: where exports go, progress bars (CLI), re-eliciting a locked spec."""

    export_dir: str = "exports"
    show_progress: bool = False
    refresh: bool = False


def resources_from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """The resources of a deployment, from the environment; ``overrides`` replace any of them."""
    from factory.defs.runners import runner_from_env

    env = os.environ if env is None else env
    resources: dict[str, Any] = {
        "specs": SpecCatalog(specs_dir=env.get("FACTORY_SPECS_DIR", "specs")),
        "store": StoreResource(location=env.get("FACTORY_STORE") or env.get("FACTORY_DB") or None,
                               data_path=env.get("FACTORY_DATA_PATH") or None,
                               lease_wait_s=float(env.get("FACTORY_LEASE_WAIT_S", "3600"))),
        "llm": LLMResource(base_url=env.get("OPENAI_BASE_URL") or None),
        "embedder": EmbedderResource(),
        "train_runner": runner_from_env(env),
        "options": RunOptions(export_dir=env.get("FACTORY_EXPORT_DIR", "exports")),
    }
    return {**resources, **overrides}
