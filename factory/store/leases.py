"""Leases: two runs of the same spec never overlap. A run holds its spec's lease in the store while it writes;
another run of that spec waits for it or is refused with who holds it. A lease expires when its holder stops
renewing it (``$FACTORY_LEASE_TTL_S``, default ``LEASE_TTL_S``), at once where the holder was a process on
this host that has died. On a cluster every pod is a host of its own, so a killed run pod's lease frees only
when it expires: a shorter TTL frees it sooner, at the cost of more frequent renewals.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

import duckdb

from factory.store.lake import StoreError

if TYPE_CHECKING:
    from factory.store.store import Store

LEASE_TTL_S = 120.0
MIN_TTL_S = 4.0
POLL_S = 1.0
HOST = socket.gethostname()


class LeaseHeld(StoreError):
    """Another run holds the spec's lease."""

    def __init__(self, spec_name: str, row: dict[str, Any]):
        self.spec_name, self.row = spec_name, row
        super().__init__(f"spec {spec_name!r} is being run by {row['holder']} (pid {row['pid']} on {row['host']},"
                         f" since {row['acquired_at']:%Y-%m-%d %H:%M:%S}); wait for it to finish (factory run --wait)"
                         " or run another spec")


def lease_ttl_s() -> float:
    """``$FACTORY_LEASE_TTL_S`` (at least ``MIN_TTL_S``), else ``LEASE_TTL_S``."""
    raw = os.environ.get("FACTORY_LEASE_TTL_S", "").strip()
    try:
        return max(MIN_TTL_S, float(raw)) if raw else LEASE_TTL_S
    except ValueError:
        raise StoreError(f"FACTORY_LEASE_TTL_S must be a number of seconds, not {raw!r}") from None


def _alive(row: dict[str, Any], at: datetime) -> bool:
    if row["renewed_at"] < at - timedelta(seconds=lease_ttl_s()):
        return False
    return row["host"] != HOST or _pid_alive(int(row["pid"]))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def try_acquire(store: Store, spec_name: str, holder: str) -> tuple[dict[str, Any] | None, bool]:
    """Take (or renew, for the same holder) the lease: ``(the live holder's row if another has it, whether
    this holder had it already)``."""

    def take(con: duckdb.DuckDBPyConnection) -> tuple[dict[str, Any] | None, bool]:
        at = datetime.now(timezone.utc)
        cur = con.execute("SELECT * FROM leases WHERE spec_name = ?", [spec_name])
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        other = next((r for r in rows if r["holder"] != holder and _alive(r, at)), None)
        if other is not None:
            return other, False
        mine = next((r for r in rows if r["holder"] == holder), None)
        acquired = mine["acquired_at"] if mine else at
        con.execute("DELETE FROM leases WHERE spec_name = ?", [spec_name])
        con.execute("INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?)", [spec_name, holder, HOST, os.getpid(), acquired, at])
        return None, mine is not None

    return store._write(take)


def release(store: Store, spec_name: str, holder: str) -> None:
    store._write(lambda con: con.execute("DELETE FROM leases WHERE spec_name = ? AND holder = ?", [spec_name, holder]))


def holders(store: Store) -> list[dict[str, Any]]:
    """The live leases: which spec each running run holds."""
    at = datetime.now(timezone.utc)
    return [r for r in store._dicts("SELECT * FROM leases ORDER BY acquired_at", []) if _alive(r, at)]


class Lease:
    """The spec's lease for the ``with`` block, renewed in the background. ``wait_s``: how long to wait for
    another holder (0: refuse at once, None: wait as long as it takes)."""

    def __init__(self, store: Store, spec_name: str, holder: str, wait_s: float | None = 0.0,
                 on_wait: Any = None):
        self.store, self.spec_name, self.holder = store, spec_name, holder
        self.wait_s, self.on_wait = wait_s, on_wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nested = False  # the holder had it already (an outer block releases it)

    def __enter__(self) -> Lease:
        started, told = time.monotonic(), False
        while True:
            other, self._nested = try_acquire(self.store, self.spec_name, self.holder)
            if other is None:
                break
            if self.wait_s is not None and time.monotonic() - started >= self.wait_s:
                raise LeaseHeld(self.spec_name, other)
            if not told and self.on_wait is not None:
                self.on_wait(LeaseHeld(self.spec_name, other))
                told = True
            time.sleep(POLL_S)
        self._thread = threading.Thread(target=self._renew, name="lease-renewal", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        cur = self.store.cursor()
        try:
            while not self._stop.wait(lease_ttl_s() / 4):
                try:
                    self.store._write(lambda con: con.execute(
                        "UPDATE leases SET renewed_at = ? WHERE spec_name = ? AND holder = ?",
                        [datetime.now(timezone.utc), self.spec_name, self.holder]), cur)
                except duckdb.Error:  # the next round renews it
                    pass
        finally:
            cur.close()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self._nested:
            release(self.store, self.spec_name, self.holder)
