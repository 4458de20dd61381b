"""Housekeeping: small commits leave small files and many snapshots. Compaction expires the snapshots no one
needs (every dataset version's and every evaluation's is kept, and the recent ones), merges adjacent files
and deletes the files nothing refers to; a run triggers it once enough snapshots have piled up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from factory.store.lake import retrying

if TYPE_CHECKING:
    from factory.store.store import Store

AUTO_COMPACT_SNAPSHOTS = 500  # a finished run compacts once this many snapshots are there


@dataclass(frozen=True)
class Compaction:
    expired: int
    snapshots: int
    files_before: int
    files_after: int


def data_files(store: Store) -> int:
    """The Parquet files under the store's data path."""
    return store._x("SELECT count(*) FROM glob(?)", [store.location.data_path + "**/*.parquet"]).fetchone()[0]


def kept_snapshots(store: Store) -> set[int]:
    """The snapshots something refers to: dataset versions and evaluations."""
    rows = store._x("SELECT snapshot_id FROM dataset_versions UNION SELECT snapshot_id FROM evaluations"
                    " WHERE snapshot_id IS NOT NULL").fetchall()
    return {int(r[0]) for r in rows}


def compact(store: Store, keep_hours: float = 24.0) -> Compaction:
    """Expire unreferenced snapshots older than ``keep_hours``, merge files, remove the files left over."""
    files_before = data_files(store)
    keep = kept_snapshots(store)
    newest = store.snapshot_id()
    old = store._x("SELECT snapshot_id FROM lake.snapshots() WHERE snapshot_time < now() - ?::INTERVAL",
                   [timedelta(hours=keep_hours)]).fetchall()
    expire = sorted(int(r[0]) for r in old if int(r[0]) not in keep and int(r[0]) != newest)
    con = store.con
    if expire:
        retrying(lambda: con.execute("CALL ducklake_expire_snapshots('lake', versions => ?::BIGINT[])", [expire]))
    retrying(lambda: con.execute("CALL ducklake_merge_adjacent_files('lake')"))
    retrying(lambda: con.execute("CALL ducklake_cleanup_old_files('lake', cleanup_all => true)"))
    snapshots = store._x("SELECT count(*) FROM lake.snapshots()").fetchone()[0]
    return Compaction(len(expire), snapshots, files_before, data_files(store))


def maybe_compact(store: Store) -> Compaction | None:
    """Compact when ``AUTO_COMPACT_SNAPSHOTS`` snapshots have piled up (cheap to ask; never fails a run). Snapshot
    ids count up by one a commit from 0, so a store whose newest id is below the threshold - 1 has fewer: the
    newest id is asked first (a catalog lookup, where counting the snapshots reads their table)."""
    import duckdb

    try:
        if store.snapshot_id() + 1 < AUTO_COMPACT_SNAPSHOTS:
            return None
        if store._x("SELECT count(*) FROM lake.snapshots()").fetchone()[0] < AUTO_COMPACT_SNAPSHOTS:
            return None
        return compact(store, keep_hours=1.0)
    except duckdb.Error:
        return None
