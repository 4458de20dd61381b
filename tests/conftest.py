"""Shared fixtures: the real offline model server (one per test session), paths to shared data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.postgres import postgres, postgres_db  # noqa: F401
except ImportError:  # tests/ is not a package: pytest puts this directory on sys.path
    from postgres import postgres, postgres_db  # type: ignore[no-redef]  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def llm_server() -> Iterator["LocalServer"]:  # noqa: F821
    """The real llama-server with SmolLM2 (the product's embedded default), started once."""
    from factory.generation.llm.server import ServerError, local_server

    try:
        with local_server(parallel=4) as server:
            yield server
    except ServerError as exc:  # pragma: no cover - only where the model is not installed
        pytest.fail(f"the offline model server is required for these tests: {exc}")


@pytest.fixture(autouse=True)
def _exports_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports and training files of `factory run` go to the test's temp dir, never into the checkout."""
    monkeypatch.setenv("FACTORY_EXPORT_DIR", str(tmp_path / "exports"))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (it exists beside the checkout in CI and dev sessions)")
    return SHARED_DATA


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A fresh embedded store (a folder) for the test."""
    return tmp_path / "store"


def query(db: Path | str, sql: str) -> list[tuple]:
    """Rows of ``sql`` from a store, read-only (while others write, too)."""
    from factory.store import Store

    with Store(db, read_only=True) as store:
        return store.con.execute(sql).fetchall()


def recovered_query(db: Path | str, sql: str) -> list[tuple]:
    """Rows of ``sql`` once a writer has opened the store, publishing what a killed run journaled (what is
    persisted, so what a rerun must not send again)."""
    from factory.store import Store

    with Store(db) as store:
        return store.sql(sql)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Collect reference cycles (tracebacks holding closed DuckDB connections) before the interpreter
    exits, so that DuckDB's bindings do not report them as leaks."""
    import gc

    gc.collect()


@dataclass
class Generated:
    """What the ``generations`` asset reported for one run of the asset graph (through generations)."""

    status: str
    run_id: str
    samples: int
    sent: int
    cached: int
    failed: int
    stopped: str | None
    metadata: dict


def generate(path: Path, db: Path, **kw: Any) -> Generated:
    """Run a spec's asset graph through ``generations`` (the product's one run path, as `factory run`);
    a failing stage raises its own exception, as the CLI reports it."""
    from dagster import DagsterExecutionStepExecutionError

    from factory.defs.local import materialization_metadata, materialize_spec

    try:
        result = materialize_spec(path, db, through="generations", **kw)
    except DagsterExecutionStepExecutionError as exc:
        raise (exc.user_exception or exc) from None
    meta = materialization_metadata(result, "generations")
    stopped = meta.get("stopped_by_budget")
    return Generated(meta["status"], meta["run_id"], meta["samples"], meta["requests_sent"], meta["requests_cached"],
                     meta["requests_failed"], None if stopped in (None, "no") else stopped, meta)
