"""The write path for completions: each process appends them to a journal of its own, a JSON-lines file
(durable when the append's fsync returns: a fraction of a millisecond of CPU, where a DuckDB commit of the
same rows took ~20 ms), and publishes it to the lake in large, infrequent commits.

A journal is a sequence of segments (``<id>.<n>.jsonl``), each locked (``flock``) by the process writing it
for as long as it is unpublished; a segment is created under a temporary name and renamed once locked, so
every ``*.jsonl`` file a reader finds unlocked belongs to a dead process. Publishing seals the segment being
written (appends go to a new one), inserts only the keys the lake does not hold yet, under the writer token
(see :mod:`factory.store.store`), then deletes the sealed segments: a crash between the two publishes nothing
twice. Segments are published when the store closes (the end of a stage); in between by a background thread,
every 5-30 s (a publish, a lake commit of three tables of ~0.1 s of CPU, waits until that is 0.5% of the wait:
the cores are left to generation); and after a crash, by the next process that opens the store for writing.
A crash in the middle of an append leaves a torn last line, which recovery cuts off: that append was not
durable yet.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from factory.store.lake import cursor, last_commit
from factory.store.schema import JOURNAL_RECORDS, UNIQUE_KEYS, RequestRecord, _Record, key_match, record_columns

PUBLISH_MIN_INTERVAL_S = 5.0  # the shortest wait between two background publishes
PUBLISH_MAX_INTERVAL_S = 30.0  # the longest: another reader sees a run's samples within this
PUBLISH_CPU_SHARE = 0.005  # between those, wait until the last publish's CPU is this share of the wait
ASSUMED_PUBLISH_CPU_S = 0.1  # what the first wait assumes a publish costs (a 48-request job then publishes once)
T = TypeVar("T")

Writer = Callable[[Callable[[duckdb.DuckDBPyConnection], T], duckdb.DuckDBPyConnection], T]
Source = Callable[[str], str]  # a journaled table's name -> the SQL relation its unpublished rows come from


def publish_wait(cpu_s: float) -> float:
    """How long the background publisher waits after a publish that took ``cpu_s`` of CPU."""
    return min(PUBLISH_MAX_INTERVAL_S, max(PUBLISH_MIN_INTERVAL_S, cpu_s / PUBLISH_CPU_SHARE))


def _journal_columns() -> dict[str, str]:
    """Every journaled column with its DuckDB type (a journal line holds the columns of its own table)."""
    columns = {"table": "VARCHAR"}
    for kind in JOURNAL_RECORDS.values():
        columns |= record_columns(kind)
    return columns


def jsonl_source(paths: Sequence[Path]) -> Source:
    """The rows of each table in JSON-lines segments, as SQL."""
    files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
    read = f"read_json([{files}], format = 'newline_delimited', columns = {_journal_columns()!r})"
    return lambda table: f"(SELECT * FROM {read} WHERE \"table\" = '{table}')"


def publish_from(con: duckdb.DuckDBPyConnection, source: Source | None, write: Writer[int],
                 then: Callable[[duckdb.DuckDBPyConnection], None] | None = None) -> int:
    """Insert the rows of ``source`` whose keys the lake lacks (one row per key), then run ``then`` (if given),
    in one lake commit; return how many rows were new there."""

    def insert(c: duckdb.DuckDBPyConnection) -> int:
        added = 0
        for table, kind in JOURNAL_RECORDS.items() if source is not None else ():
            columns = ", ".join(f'"{name}"' for name in record_columns(kind))
            keys = ", ".join(f"p.{k}" for k in UNIQUE_KEYS[table])
            added += c.execute(
                f"INSERT INTO lake.{table} BY NAME SELECT {columns} FROM {source(table)} p WHERE NOT EXISTS"
                f" (SELECT 1 FROM lake.{table} l WHERE {key_match(table, 'p', 'l')})"
                f" QUALIFY row_number() OVER (PARTITION BY {keys}) = 1").fetchone()[0]
        if then is not None:
            then(c)
        return added

    return write(insert, con)


@cache
def _fields(kind: type[_Record]) -> tuple[tuple[str, str], ...]:
    """A record type's ``(field, column)`` pairs."""
    return tuple((f.name, f.name.rstrip("_")) for f in fields(kind))


def _line(record: _Record, created: str) -> dict[str, Any]:
    row: dict[str, Any] = {"table": record.TABLE}
    for name, column in _fields(type(record)):
        value = getattr(record, name)
        row[column] = value.isoformat() if isinstance(value, datetime) else value
    row["created_at"] = created
    return row


def _key(record: _Record) -> tuple[Any, ...]:
    return (record.TABLE, *(getattr(record, k) for k in UNIQUE_KEYS[record.TABLE]))


@dataclass
class Segment:
    """One locked, open journal file and the keys appended to it."""

    path: Path
    fd: int
    size: int = 0
    requests: dict[str, RequestRecord] = field(default_factory=dict)

    @classmethod
    def create(cls, folder: Path, journal_id: str, n: int) -> Segment:
        path = folder / f"{journal_id}.{n:06d}.jsonl"
        staging = folder / f".{path.name}.new"  # not a *.jsonl yet: no recovery opens it before it is locked
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(staging, path)
        return cls(path, fd)

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        os.fsync(self.fd)
        self.size += len(data)

    def delete(self) -> None:
        """Remove the published file, then give up its lock."""
        self.path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        os.close(self.fd)


class Journal:
    """This process's journal of one store: appends go to the open segment; publishing seals it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, folder: Path, write: Writer[int]):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.id = uuid.uuid4().hex
        self.con = con
        self.write = write
        self.lock = threading.Lock()  # one publish at a time
        self._append_lock = threading.Lock()  # an append, or the sealing of the open segment
        self._count = 0
        self.open = Segment.create(folder, self.id, 0)
        self.sealed: list[Segment] = []  # sealed, not yet published (a publish failed)
        self._keys: set[tuple[Any, ...]] = set()  # what the unpublished segments hold: each key is journaled once
        self.dirty = False  # rows journaled since the last publish began
        self._cursor: duckdb.DuckDBPyConnection | None = None  # the publishes' own (a publish may run in any thread)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="journal-publisher", daemon=True)
        self._thread.start()

    def append(self, records: Iterable[_Record], created: datetime) -> None:
        """Journal ``records`` (those whose key is journaled already are skipped): durable when it returns."""
        stamp = created.isoformat()
        with self._append_lock:
            fresh = []
            for record in records:
                key = _key(record)
                if key not in self._keys:
                    self._keys.add(key)
                    fresh.append(record)
            if not fresh:
                return
            data = "".join(json.dumps(_line(r, stamp)) + "\n" for r in fresh).encode()
            self.open.append(data)
            for record in fresh:
                if isinstance(record, RequestRecord):
                    self.open.requests[record.request_key] = record
            self.dirty = True

    def unpublished_requests(self, keys: Iterable[str]) -> dict[str, RequestRecord]:
        """The requests among ``keys`` that this journal holds and has not published yet."""
        with self._append_lock:
            segments = (*self.sealed, self.open)
            return {key: s.requests[key] for key in keys for s in segments if key in s.requests}

    def _loop(self) -> None:
        wait = publish_wait(ASSUMED_PUBLISH_CPU_S)
        while not self._stop.wait(wait):
            started = time.thread_time()
            try:
                if self.dirty:
                    self.publish()
            except duckdb.Error:  # the next round, or close(), publishes it; the rows are safe in the journal
                pass
            wait = publish_wait(time.thread_time() - started)

    def _seal(self) -> list[Segment]:
        with self._append_lock:
            self.dirty = False  # rows journaled from here on mark it again
            if self.open.size:
                self.sealed.append(self.open)
                self._count += 1
                self.open = Segment.create(self.folder, self.id, self._count)
                self._keys = set()  # what is sealed is checked against the lake when it is published
            return list(self.sealed)

    def publish(self, then: Callable[[duckdb.DuckDBPyConnection], None] | None = None) -> int:
        """Publish the sealed segments and the open one (sealed first), and run ``then`` (if given: a caller's
        writes that belong with them, such as closing a run) in the same lake commit; return the rows new in
        the lake."""
        with self.lock:
            segments = self._seal()
            if not segments and then is None:
                return 0
            added = publish_from(self.cursor(), jsonl_source([s.path for s in segments]) if segments else None,
                                 self.write, then)
            with self._append_lock:
                self.sealed = []  # all of them were published (only a publish, under self.lock, seals)
            for segment in segments:
                segment.delete()
            return added

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """The publishes' own connection (kept: a new cursor costs a USE and a SET)."""
        if self._cursor is None:
            self._cursor = cursor(self.con)
        return self._cursor

    def last_commit(self) -> int | None:
        """The snapshot of this journal's newest publish (None before the first)."""
        with self.lock:
            return last_commit(self.cursor())

    def close(self) -> None:
        """Publish what is left and delete the journal's files (a segment that failed to publish is kept,
        unlocked, for the next writer)."""
        self._stop.set()
        self._thread.join()
        try:
            self.publish()
        finally:
            if self._cursor is not None:
                self._cursor.close()
            for segment in self.sealed:
                segment.close()
            if self.open.size:
                self.open.close()
            else:
                self.open.delete()


def _cut_torn_tail(fd: int) -> None:
    """Truncate a segment after its last complete line (a crash mid-append leaves a partial one)."""
    end = os.fstat(fd).st_size
    position = end
    while position > 0:
        start = max(0, position - 65536)
        chunk = os.pread(fd, position - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            if start + newline + 1 < end:
                os.ftruncate(fd, start + newline + 1)
            return
        position = start
    os.ftruncate(fd, 0)


def _claim(path: Path) -> int | None:
    """Lock a dead process's segment and return its descriptor; None where its process is alive (or it is
    not ours to publish: unwritable)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    _cut_torn_tail(fd)
    return fd


def recover(con: duckdb.DuckDBPyConnection, folder: Path, write: Writer[int]) -> int:
    """Publish the segments left by dead processes, in one lake commit; return the rows new in the lake."""
    if not folder.is_dir():
        return 0
    published = _recover_legacy(con, folder, write)
    claimed: list[tuple[Path, int]] = []
    try:
        for path in journal_files(folder):
            fd = _claim(path)  # this process's own segments are locked too (flock is per open file)
            if fd is not None and not os.fstat(fd).st_size:  # died before its first append: nothing to publish
                path.unlink(missing_ok=True)
                os.close(fd)
            elif fd is not None:
                claimed.append((path, fd))
        if claimed:
            published += publish_from(con, jsonl_source([p for p, _ in claimed]), write)
            for path, _ in claimed:
                path.unlink(missing_ok=True)
    finally:
        for _, fd in claimed:
            os.close(fd)
    return published


def _recover_legacy(con: duckdb.DuckDBPyConnection, folder: Path, write: Writer[int]) -> int:
    """Publish the DuckDB-file journals an attrfactory before the JSON-lines journal left behind."""
    published = 0
    for path in sorted(folder.glob("*.duckdb")):
        name = f"orphan_{uuid.uuid4().hex[:8]}"
        try:
            con.execute(f"ATTACH '{path}' AS {name}")
        except duckdb.Error:  # locked: its (old) process is alive and publishes it itself
            continue
        try:
            tables = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = ?",
                                 [name]).fetchone()[0]
            if tables == len(JOURNAL_RECORDS):  # else it died before its schema was written: nothing in it
                published += publish_from(con, lambda table: f"{name}.{table}", write)
        finally:
            con.execute(f"DETACH {name}")
        for suffix in ("", ".wal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return published


def journal_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
