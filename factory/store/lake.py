"""Where the store lives and how to attach it: a DuckLake catalog (SQLite file or PostgreSQL) plus a data path.

``$FACTORY_STORE`` (or ``--store``) picks it:

- a folder (default ``./factory-store``): the embedded store, ``catalog.sqlite`` and ``data/`` inside it, which
  several local processes attach at once;
- ``postgres:<libpq conninfo>`` (e.g. ``postgres:host=10.0.0.5 dbname=lake user=factory``): a PostgreSQL
  catalog, with the data path from ``$FACTORY_DATA_PATH`` (a shared folder, or ``s3://`` through httpfs). The
  password comes from ``$PGPASSWORD`` (a Kubernetes Secret), never from the URL, so it is never logged.

``$FACTORY_DB`` (``--db``) still names the embedded store's folder. The DuckDB extensions come from their
PyPI packages (``duckdb-extension-*``); nothing is downloaded at run time.
"""

from __future__ import annotations

import fcntl
import glob
import os
import random
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb

from factory.keys import digest

DEFAULT_STORE = "factory-store"
LAKE = "lake"  # the attached catalog's name in every connection
EXTENSIONS = {"ducklake": "ducklake", "sqlite": "sqlite_scanner", "postgres": "postgres_scanner"}
# How a commit conflict or a busy catalog shows: retried, never surfaced as a failed run.
TRANSIENT = ("Failed to commit DuckLake transaction", "database is locked", "Transaction conflict",
             "could not serialize", "deadlock detected", "SQLITE_BUSY", "Conflict on", "conflict",
             "Failed to initialize DuckLake",  # processes creating a PostgreSQL catalog at once: one wins
             "duplicate key value violates unique constraint")
T = TypeVar("T")


class StoreError(RuntimeError):
    """The store cannot be used as it is (absent, written by a newer attrfactory, an old single file)."""


@dataclass(frozen=True)
class StoreLocation:
    """A DuckLake store: its catalog (``sqlite:PATH`` or ``postgres:CONNINFO``), data path and journal folder."""

    catalog: str
    data_path: str
    journal_dir: Path
    root: Path | None = None  # the embedded store's folder

    @property
    def embedded(self) -> bool:
        return self.root is not None

    @property
    def url(self) -> str:
        """What ``--store``/``$FACTORY_STORE`` says to name this store again (with ``data_path``)."""
        return str(self.root) if self.root is not None else self.catalog

    def __str__(self) -> str:
        return str(self.root) if self.root is not None else f"{self.catalog} (data {self.data_path})"

    def exists(self) -> bool:
        return self.root is None or (self.root / "catalog.sqlite").is_file()

    @classmethod
    def parse(cls, value: str | Path | None = None, data_path: str | None = None) -> StoreLocation:
        """The store named by ``value``, else ``$FACTORY_STORE``, ``$FACTORY_DB``, ``./factory-store``."""
        text = str(value) if value is not None else (os.environ.get("FACTORY_STORE") or os.environ.get("FACTORY_DB")
                                                     or DEFAULT_STORE)
        text = text.removeprefix("ducklake:")
        if text.startswith(("postgres:", "postgresql:")):
            return cls._postgres(text.split(":", 1)[1], data_path or os.environ.get("FACTORY_DATA_PATH"))
        return cls._embedded(Path(text.removeprefix("sqlite:")))  # its data is always its own data/ folder

    @classmethod
    def _postgres(cls, conninfo: str, data_path: str | None) -> StoreLocation:
        if re.search(r"(^|\s)password\s*=", conninfo) or re.search(r"://[^/@]*:[^/@]*@", conninfo):
            raise StoreError("the store URL holds a password: set $PGPASSWORD (from a Secret) instead, so that"
                             " it is never written to a log or the UI")
        if not data_path:
            raise StoreError("a PostgreSQL catalog needs $FACTORY_DATA_PATH: the folder (a ReadWriteMany volume)"
                             " or s3:// path every process shares for the data files")
        journals = Path(os.environ.get("FACTORY_JOURNAL_DIR") or _default_journals(conninfo, data_path))
        return cls(f"postgres:{conninfo}", data_path.rstrip("/") + "/", journals)

    @classmethod
    def _embedded(cls, path: Path) -> StoreLocation:
        if path.is_file():
            if _is_duckdb_file(path):
                raise StoreError(f"{path} is a single-file store of an older attrfactory; the store is now a DuckLake"
                                 f" folder. Copy it over with: factory migrate {path} --store DIR")
            if path.suffix == ".sqlite":  # a catalog file named directly
                path = path.parent
            else:
                raise StoreError(f"{path} is a file, not a store folder")
        root = path.resolve()
        return cls(f"sqlite:{root / 'catalog.sqlite'}", f"{root / 'data'}/", root / "journals", root)


def _default_journals(conninfo: str, data_path: str) -> Path:
    """Where a PostgreSQL store's journals go unless ``$FACTORY_JOURNAL_DIR`` says: beside a data path on a
    shared volume (``<data path>-journals``: a run pod that dies leaves its journal where the next writer,
    in any pod, publishes it), else (object storage) a temp folder of this machine."""
    if "://" not in data_path:
        return Path(data_path.rstrip("/") + "-journals")
    return Path(tempfile.gettempdir()) / "attrfactory-journals" / digest(conninfo, data_path)[:12]


def _is_duckdb_file(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(12)[8:12] == b"DUCK"


def extension_directory() -> str:
    """A folder laid out as DuckDB expects (``v<version>/<platform>/<name>.duckdb_extension``), its files linked
    to the ``duckdb-extension-*`` packages' (whose names differ from the entry points)."""
    import site

    version = f"v{duckdb.__version__}"
    platform = duckdb.sql("PRAGMA platform").fetchone()[0]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attrfactory" / "duckdb-extensions"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home (a pod): a temp folder
        base = Path(tempfile.gettempdir()) / "attrfactory-duckdb-extensions"
    folder = base / version / platform
    folder.mkdir(parents=True, exist_ok=True)
    roots = [*site.getsitepackages(), site.getusersitepackages(), *map(str, map(Path, _package_dirs()))]
    for package, name in EXTENSIONS.items():
        target = folder / f"{name}.duckdb_extension"
        if target.exists():
            continue
        found = [f for r in roots for f in glob.glob(f"{r}/duckdb_extension_{package}/extensions/{version}/*.duckdb_extension")]
        if not found:
            if package == "ducklake":
                raise StoreError(f"the DuckLake extension for duckdb {duckdb.__version__} is not installed:"
                                 f" pip install duckdb-extension-ducklake=={duckdb.__version__}")
            continue
        tmp = folder / f".{name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(found[0])
        os.replace(tmp, target)  # atomic: concurrent first runs do not trip over each other
    return str(base)


def _package_dirs() -> list[str]:
    import importlib.util

    dirs = []
    for package in EXTENSIONS:
        spec = importlib.util.find_spec(f"duckdb_extension_{package}")
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(str(Path(p).parent) for p in spec.submodule_search_locations)
    return dirs


def is_transient(exc: BaseException) -> bool:
    """A commit conflict or a busy catalog: worth retrying."""
    return isinstance(exc, duckdb.Error) and any(t in str(exc) for t in TRANSIENT)


def last_commit(con: duckdb.DuckDBPyConnection) -> int | None:
    """The snapshot of the newest commit made on ``con`` (None if it made none)."""
    row = con.execute(f"SELECT id FROM {LAKE}.last_committed_snapshot()").fetchone()
    return None if row is None else row[0]


def retrying(fn: Callable[[], T], deadline_s: float = 120.0) -> T:
    """``fn()``, retried with jittered exponential backoff while it fails transiently (up to ``deadline_s``)."""
    started, delay = time.monotonic(), 0.005
    while True:
        try:
            return fn()
        except duckdb.Error as exc:
            if not is_transient(exc) or time.monotonic() - started > deadline_s:
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.5)


@contextmanager
def _init_lock(location: StoreLocation) -> Iterator[None]:
    """Serialise the creation of an embedded store by processes that start at once."""
    if location.root is None:
        yield
        return
    location.root.mkdir(parents=True, exist_ok=True)
    with open(location.root / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare_sqlite(path: Path) -> None:
    """A SQLite catalog in WAL mode: readers never block the writer (the mode is kept in the file)."""
    con = sqlite3.connect(path, timeout=30)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def store_threads() -> int:
    """DuckDB's threads in a store's instance: ``$FACTORY_STORE_THREADS``, else 1. Fixed when the instance is
    created (changing it while another thread queries can hang DuckDB's scheduler). The store's queries are
    small and bound by the catalog: a second thread doubles their CPU (~10 → ~20 ms a statement) and takes it
    from a model server that shares the machine; raise it for large exports on many cores."""
    raw = os.environ.get("FACTORY_STORE_THREADS", "1")
    if not raw.strip().isdigit() or int(raw) < 1:
        raise StoreError(f"FACTORY_STORE_THREADS={raw!r}: expected a whole number of threads, at least 1")
    return int(raw)


def attach(location: StoreLocation, read_only: bool = False, snapshot: int | None = None,
           as_of: str | None = None, init: Callable[[duckdb.DuckDBPyConnection], None] | None = None
           ) -> duckdb.DuckDBPyConnection:
    """A connection with the store attached as ``lake`` (and used by default); pinned to a snapshot (by id or
    time) when asked, which also makes it read-only. ``init`` (creating the schema) runs under the lock that
    serialises processes opening a new embedded store at once."""
    con = duckdb.connect(config={"extension_directory": extension_directory(), "threads": store_threads(),
                                 "autoinstall_known_extensions": False, "autoload_known_extensions": True})
    try:
        con.execute("SET enable_progress_bar = false")  # a long publish would print one into the run's log
        con.execute("LOAD ducklake")
        options = [f"DATA_PATH '{_quote(location.data_path)}'"]
        if location.root is not None:  # an embedded store's data is its own data/ folder, wherever it is mounted
            options.append("OVERRIDE_DATA_PATH true")
        if snapshot is not None:
            options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        elif as_of is not None:
            options.append(f"SNAPSHOT_TIME '{_quote(as_of)}'")
        if read_only or snapshot is not None or as_of is not None:
            options.append("READ_ONLY")
        sql = f"ATTACH 'ducklake:{_quote(location.catalog)}' AS {LAKE} ({', '.join(options)})"
        with _init_lock(location) if init is not None else _nothing():
            if location.root is not None and not read_only:
                _prepare_sqlite(location.root / "catalog.sqlite")
            retrying(lambda: con.execute(sql))
            con.execute(f"USE {LAKE}")
            if init is not None:
                init(con)
    except BaseException:
        con.close()
        raise
    return con


class _Shared:
    """One attached DuckDB instance per store and process, kept while used (and the last few after): a Store
    opens a cursor on it in milliseconds instead of loading the extensions and attaching again."""

    KEEP = 4

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.instances: dict[str, duckdb.DuckDBPyConnection] = {}
        self.users: dict[str, int] = {}
        self.recent: list[str] = []

    def open(self, location: StoreLocation, init: Callable[[duckdb.DuckDBPyConnection], None] | None
             ) -> duckdb.DuckDBPyConnection:
        key = f"{location.catalog}|{location.data_path}"
        with self.lock:
            root = self.instances.get(key)
            if root is not None and key not in self.users and not location.exists():  # its folder was removed
                self.instances.pop(key).close()
                self.recent.remove(key)
                root = None
            if root is None:
                root = attach(location, init=init)
                self.instances[key] = root
            self.users[key] = self.users.get(key, 0) + 1
            self.recent = [k for k in self.recent if k != key] + [key]
            return cursor(root)

    def release(self, location: StoreLocation) -> None:
        key = f"{location.catalog}|{location.data_path}"
        with self.lock:
            self.users[key] -= 1
            if self.users[key] == 0:
                del self.users[key]
            for old in self.recent[:-self.KEEP]:
                if old not in self.users:
                    self.instances.pop(old).close()
                    self.recent.remove(old)

    def forget(self, location: StoreLocation) -> None:
        """Close an unused instance of ``location`` (its folder is about to be removed or replaced)."""
        key = f"{location.catalog}|{location.data_path}"
        with self.lock:
            if key in self.instances and key not in self.users:
                self.instances.pop(key).close()
                self.recent.remove(key)


SHARED = _Shared()


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A connection of its own on ``con``'s instance (for another thread, or a view of its own), the store used
    by default and no progress bar (a long publish would print one into the run's log)."""
    cur = con.cursor()
    cur.execute(f"USE {LAKE}")
    cur.execute("SET enable_progress_bar = false")
    return cur


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _quote(text: str) -> str:
    return text.replace("'", "''")
