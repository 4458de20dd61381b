"""The write path for completions: each process journals them to a DuckDB file of its own (durable in
milliseconds, as the single-file store was), and publishes the journal to the lake in large, infrequent commits.

A journal is published every ``PUBLISH_INTERVAL_S`` by a background thread, when the store closes (the end of
a stage) and, after a crash, by the next process that opens the store for writing: a journal file whose lock
nobody holds belongs to a dead process. Publishing inserts only the keys the lake does not hold yet, under
the writer token (see :mod:`factory.store.store`), then deletes what it published from the journal: a crash
between the two publishes nothing twice.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb

from factory.store.lake import cursor
from factory.store.schema import JOURNALED, journal_schema, key_match

PUBLISH_INTERVAL_S = 5.0  # a publish is a lake commit of three tables (~0.1 s of CPU): rare, to leave the cores to generation
_OWN: set[str] = set()  # this process's open journals (a file lock does not exclude its own process)
_OWN_LOCK = threading.Lock()

Writer = Callable[[Callable[[duckdb.DuckDBPyConnection], None], duckdb.DuckDBPyConnection], None]


def publish_from(con: duckdb.DuckDBPyConnection, schema: str, write: Writer) -> int:
    """Move the rows of the journal attached as ``schema`` into the lake; return how many were new there."""
    pending = 0
    for table in JOURNALED:
        con.execute(f"CREATE OR REPLACE TEMP TABLE pending_{table} AS SELECT * FROM {schema}.{table}")
        pending += con.execute(f"SELECT count(*) FROM pending_{table}").fetchone()[0]
    if not pending:
        return 0
    added = [0]

    def insert(c: duckdb.DuckDBPyConnection) -> None:
        added[0] = 0
        for table in JOURNALED:
            added[0] += c.execute(
                f"INSERT INTO lake.{table} BY NAME SELECT * FROM pending_{table} p WHERE NOT EXISTS"
                f" (SELECT 1 FROM lake.{table} l WHERE {key_match(table, 'p', 'l')})").fetchone()[0]

    write(insert, con)
    for table in JOURNALED:
        con.execute(f"DELETE FROM {schema}.{table} j WHERE EXISTS (SELECT 1 FROM pending_{table} p"
                    f" WHERE {key_match(table, 'j', 'p')})")
        con.execute(f"DROP TABLE pending_{table}")
    return added[0]


class Journal:
    """This process's journal of one store, attached (as ``name``) to the store's connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, folder: Path, write: Writer):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{uuid.uuid4().hex}.duckdb"
        self.name = f"journal_{self.path.stem[:12]}"  # unique: stores of one process share a DuckDB instance
        self.con = con
        self.write = write
        self.lock = threading.Lock()  # one publish at a time
        self.dirty = False  # rows journaled since the last publish began
        with _OWN_LOCK:
            _OWN.add(str(self.path))
        con.execute(f"ATTACH '{self.path}' AS {self.name}")
        cur = con.cursor()
        try:
            cur.execute(f"USE {self.name}")
            cur.execute(journal_schema())
        finally:
            cur.close()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="journal-publisher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(PUBLISH_INTERVAL_S):
            try:
                if self.dirty:
                    self.publish()
            except duckdb.Error:  # the next round, or close(), publishes it; the rows are safe in the journal
                pass

    def publish(self) -> int:
        with self.lock:
            self.dirty = False  # rows journaled from here on mark it again
            cur = cursor(self.con)
            try:
                return publish_from(cur, self.name, self.write)
            finally:
                cur.close()

    def close(self) -> None:
        """Publish what is left, detach, and delete the journal file (kept if publishing failed)."""
        self._stop.set()
        self._thread.join()
        self.publish()
        self.con.execute(f"DETACH {self.name}")
        for suffix in ("", ".wal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        with _OWN_LOCK:
            _OWN.discard(str(self.path))


def recover(con: duckdb.DuckDBPyConnection, folder: Path, write: Writer) -> int:
    """Publish the journals left by dead processes (files nobody holds a lock on); return rows published."""
    if not folder.is_dir():
        return 0
    published = 0
    for path in sorted(folder.glob("*.duckdb")):
        with _OWN_LOCK:
            if str(path) in _OWN:
                continue
        name = f"orphan_{uuid.uuid4().hex[:8]}"
        try:
            con.execute(f"ATTACH '{path}' AS {name}")
        except duckdb.Error:  # locked: its process is alive and publishes it itself
            continue
        try:
            tables = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = ?",
                                 [name]).fetchone()[0]
            if tables == len(JOURNALED):  # else it died before its schema was written: nothing in it
                published += publish_from(con, name, write)
        finally:
            con.execute(f"DETACH {name}")
        for suffix in ("", ".wal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return published


def journal_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.duckdb")) if folder.is_dir() else []
