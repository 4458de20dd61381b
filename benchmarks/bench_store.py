"""Benchmark of the DuckLake store (factory/store/) against the single DuckDB file it replaced.

Usage::

    python benchmarks/bench_store.py [--commits N] [--quick] [--no-postgres] [--sections 1,2,3,4,5]

Three backends side by side, each on a fresh store:

- **old file**: the baseline, written here inline since the old store is gone from the code: one plain DuckDB
  file with ``prompts``/``llm_requests``/``samples`` WITH primary keys and ``INSERT OR IGNORE`` of one Arrow
  table per record type, in one transaction per commit (what ``save_completions`` of the single-file store
  did, see ``git show 86db3be:factory/store.py``);
- **lake sqlite**: ``Store(folder)``, the embedded default (SQLite catalog + ``data/``);
- **lake postgres**: ``Store("postgres:<conninfo>")`` with ``$FACTORY_DATA_PATH`` on a throwaway PostgreSQL
  server started as ``tests/postgres.py`` does (its ``PostgresServer``); "skipped", never a made-up figure,
  where the binaries are absent or with ``--no-postgres``.

A commit is one ``save_completions`` call of ``COMMIT_SIZE`` (20) completions, each a ``PromptRecord``, a
``RequestRecord`` and a ``SampleRecord`` with ~400 bytes of text, as the engine's
request writer does. Records are built before the clock starts.

1. **One writer**: completions committed per second, N commits (default 50) back to back, and the CPU time
   per completion. For the lake the clock runs until everything is published (``store.publish()`` at the end
   is inside the time).
2. **Four writer processes** (a spawn pool, released together by a barrier), distinct keys per writer:
   aggregate completions/s from the first start to the last publish; then the lake must hold exactly
   4 x N x 20 rows in ``samples``, ``llm_requests`` and ``prompts``, one per key, and no journal left behind.
   Then the four writers write the SAME keys: exactly N x 20 rows, one per key. A DuckDB file takes one
   writing process (probed: what another process gets opening it is printed), so the old column shows four
   processes on a file each, the machine's ceiling for reference. How many lake commits there were and how
   many attempts reran after a conflict is counted by wrapping ``Store._write`` (instrumentation only).
3. **Latency**: to durable = the ``save_completions`` call (the journal append is durable when it returns),
   p50/p99 over the calls of sections 1 and 2; to visible in another process = a reader process polling
   ``max(sample_index)`` while this process commits every 50 ms, p50/p99 of (first seen - durable).
4. **Cache prefetch**: one ``store.cached_requests(keys)`` call for 100k keys with those 100k rows in the lake
   (loaded by ``save_completions`` in batches of 20k, then published), on a freshly opened store; with, for
   where the time goes, the cost of binding keys as one list parameter (as ``cached_requests`` does) and as
   an Arrow table, per 1k keys, on a bare DuckDB connection.
5. **Files and snapshots** left by 10,000 completions written in commits of 20, before and after
   ``factory.store.housekeeping.compact(store, keep_hours=0)``.

Nothing is hard-coded: every figure is measured in this run. The run exits 1 when a row is lost or doubled
or a store call failed (the tracebacks are printed); the performance goals are printed as PASS/FAIL and do
not change the exit status (a shared 2-core machine swings a lot: the load average is printed). The default
run takes ~4 minutes on a busy 2-core machine, two of them in section 4 (``cached_requests`` of 100k keys
takes ~17 s on every backend); ``--sections 1,2,3,5`` leaves it out.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from operator import attrgetter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import duckdb  # noqa: E402

from factory.store import PromptRecord, RequestRecord, SampleRecord, Store, now  # noqa: E402
from factory.store import journal as journal_module  # noqa: E402
from factory.store.housekeeping import compact  # noqa: E402
from factory.store.journal import journal_files  # noqa: E402
from factory.store.lake import SHARED, StoreLocation  # noqa: E402

COMMIT_SIZE = 20  # completions per save_completions call
PREFETCH_BATCH = 20_000  # completions per save_completions call when loading section 4's rows
BIND_KEYS = 10_000  # keys bound alone, to show what cached_requests' time is made of
WRITERS = 4
TEXT_BYTES = 400
GOAL_ONE_WRITER = 0.5  # one writer >= 50% of the old file's rate
GOAL_SCALE_PG = 2.0  # 4 writers >= 2x one writer on PostgreSQL
GOAL_SCALE_SQLITE = 1.0  # ... and >= 1x on the embedded default
GOAL_DURABLE_P99_MS = 250.0
OLD, SQLITE, PG = "old file", "lake sqlite", "lake postgres"
VERIFIED = "no lost or doubled rows"
ONE, MANY, SAME = "1 writer", f"{WRITERS} writers", f"{WRITERS} writers same keys"

# ---- the old single-file store, inline (schema and save_completions of 86db3be) ---------------------------

OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_hash VARCHAR PRIMARY KEY, method VARCHAR NOT NULL, messages JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS llm_requests (
    request_key VARCHAR PRIMARY KEY, model VARCHAR NOT NULL, params JSON NOT NULL,
    prompt_hash VARCHAR NOT NULL, purpose VARCHAR NOT NULL, choices JSON NOT NULL,
    finish_reasons JSON, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cost_usd DOUBLE NOT NULL, latency_s DOUBLE, attempts INTEGER, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    sample_id VARCHAR PRIMARY KEY, spec_hash VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
    class VARCHAR NOT NULL, text VARCHAR NOT NULL, attributes JSON NOT NULL, seed BIGINT NOT NULL,
    sample_index INTEGER NOT NULL, choice_index INTEGER NOT NULL, method VARCHAR NOT NULL,
    prompt_hash VARCHAR NOT NULL, request_key VARCHAR NOT NULL, model VARCHAR NOT NULL,
    params JSON NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cost_usd DOUBLE NOT NULL, is_refusal BOOLEAN NOT NULL, generated_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL);
"""


def _arrow_records(records: Sequence[Any], created: Any) -> tuple[list[str], Any]:
    """Records of one type (plus ``created_at``) as ``(column names, pyarrow table)``: how the single-file store
    (and the DuckDB journal after it) inserted them."""
    import pyarrow as pa

    names = [f.name for f in fields(records[0])]
    values = zip(*map(attrgetter(*names), records))
    columns = [n.rstrip("_") for n in names] + ["created_at"]
    arrays = [pa.array(v) for v in values] + [pa.array([created] * len(records))]
    return columns, pa.table(arrays, names=columns)


class OldFile:
    """The single-file store's write path: one DuckDB file, keys as primary keys, INSERT OR IGNORE."""

    def __init__(self, path: Path):
        self.path = path
        self.con = duckdb.connect(str(path))
        self.con.execute(OLD_SCHEMA)
        self.cursor = self.con.cursor()  # the engine writes through a cursor of its own

    def save_completions(self, records: Sequence[Any]) -> None:
        con = self.cursor
        created = now()
        by_type: dict[type, list[Any]] = {}
        for record in records:
            by_type.setdefault(type(record), []).append(record)
        con.execute("BEGIN TRANSACTION")
        try:
            for kind, rows in by_type.items():
                columns, data = _arrow_records(rows, created)
                names = ", ".join(f'"{c}"' for c in columns)
                view = f"_arrow_{os.urandom(4).hex()}"
                con.register(view, data)
                try:
                    con.execute(f"INSERT OR IGNORE INTO {kind.TABLE} ({names}) SELECT {names} FROM {view}")
                finally:
                    try:
                        con.unregister(view)
                    except duckdb.Error:
                        pass
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def cached_requests(self, keys: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        rows = self.con.execute(
            "SELECT request_key, choices, prompt_tokens, completion_tokens, cost_usd FROM llm_requests"
            " WHERE request_key IN (SELECT unnest(?::VARCHAR[]))", [list(keys)]).fetchall()
        return {r[0]: r for r in rows}

    def sql(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    def close(self) -> None:
        self.cursor.close()
        self.con.close()


# ---- records ---------------------------------------------------------------------------------------------

WORDS = ("the quick brown fox jumps over lazy dog review product service delivery price quality support great"
         " terrible late early broken works fine would buy again never customer refund order package arrived"
         " battery screen sound comfortable cheap expensive return warranty staff friendly rude slow fast").split()


def _hex(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def completion_records(prefix: str, commit: int, rng: random.Random, size: int = COMMIT_SIZE,
                       index_base: int | None = None) -> list[Any]:
    """One commit's records: ``size`` completions (prompt, request, sample), keys derived from
    (prefix, commit, i) only, so two writers with the same prefix write the same keys."""
    out: list[Any] = []
    when = datetime.now(timezone.utc)
    for i in range(size):
        key = _hex(prefix, commit, i)
        prompt = _hex("prompt", prefix, commit, i)
        text = " ".join(rng.choices(WORDS, k=80))[:TEXT_BYTES]
        index = (index_base if index_base is not None else commit * size) + i
        out.append(PromptRecord(prompt_hash=prompt, method="attrprompt",
                                messages=f'[{{"role": "user", "content": "Write a review, {i}"}}]'))
        out.append(RequestRecord(request_key=key, model="smollm2", params='{"temperature": 1.0}',
                                 prompt_hash=prompt, purpose="generate", choices=f'["{text}"]',
                                 finish_reasons='["stop"]', prompt_tokens=60, completion_tokens=90,
                                 cost_usd=0.0001, latency_s=0.5, attempts=1))
        out.append(SampleRecord(sample_id=key[:24], spec_hash="bench", run_id=f"run-{prefix}",
                                class_=("positive", "negative")[i % 2], text=text,
                                attributes='{"length": "short"}', seed=commit, sample_index=index, choice_index=0,
                                method="attrprompt", prompt_hash=prompt, request_key=key, model="smollm2",
                                params='{"temperature": 1.0}', prompt_tokens=60, completion_tokens=90,
                                cost_usd=0.0001, is_refusal=False, generated_at=when))
    return out


# ---- backends --------------------------------------------------------------------------------------------

@dataclass
class Backend:
    """Where one scenario's store lives: ``url`` (a folder or ``postgres:...``), ``env`` to set first."""

    name: str
    url: str
    env: dict[str, str] = field(default_factory=dict)
    cleanup: Callable[[], None] = field(default=lambda: None, repr=False)

    def __getstate__(self) -> dict[str, Any]:  # to a worker process: without the (local) cleanup
        return {**self.__dict__, "cleanup": _nothing}

    def location(self) -> StoreLocation:
        for name in ENV:  # exactly this backend's: an embedded store, too, takes $FACTORY_DATA_PATH
            os.environ.pop(name, None)
        os.environ.update(self.env)
        return StoreLocation.parse(self.url)

    def open(self) -> Store:
        return Store(self.location())

    def forget(self) -> None:
        """Close this process's cached DuckDB instance of the store (its database or folder goes next)."""
        SHARED.forget(self.location())


ENV = ("FACTORY_DATA_PATH", "FACTORY_JOURNAL_DIR", "FACTORY_STORE", "FACTORY_DB")


def _nothing() -> None:
    pass


def _scratch(tag: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bench-store-{tag}-"))


class Backends:
    """Fresh stores on demand for each backend; the PostgreSQL server when there is one."""

    def __init__(self, use_postgres: bool):
        self.server: Any = None
        self.pg_skip: str | None = None
        self.pg_version = ""
        if not use_postgres:
            self.pg_skip = "skipped: --no-postgres"
            return
        try:
            from postgres import PostgresServer, find_tools  # tests/postgres.py
        except ImportError as exc:
            self.pg_skip = f"skipped: no PostgreSQL ({exc})"
            return
        tools = find_tools()
        if tools is None:
            self.pg_skip = "skipped: no PostgreSQL"
            return
        server = PostgresServer(tools)
        try:
            server.start()
        except Exception as exc:  # noqa: BLE001
            server.stop()
            self.pg_skip = f"skipped: PostgreSQL did not start ({str(exc).splitlines()[0]})"
            return
        self.server = server
        self.pg_version = server.psql("SHOW server_version").strip()

    def names(self) -> list[str]:
        return [SQLITE] + ([PG] if self.server is not None else [])

    def fresh(self, name: str, tag: str) -> Backend:
        if name == SQLITE:
            folder = _scratch(tag)
            return Backend(SQLITE, str(folder / "store"), cleanup=lambda: shutil.rmtree(folder, ignore_errors=True))
        assert self.server is not None
        folder = _scratch(f"pg-{tag}")
        conninfo = self.server.create_database()
        dbname = conninfo.rsplit("dbname=", 1)[1]

        def cleanup() -> None:
            try:
                self.server.drop_database(dbname)
            except Exception:  # noqa: BLE001
                pass
            shutil.rmtree(folder, ignore_errors=True)

        env = {"FACTORY_DATA_PATH": str(folder / "data"), "FACTORY_JOURNAL_DIR": str(folder / "journals")}
        return Backend(PG, f"postgres:{conninfo}", env, cleanup)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


# ---- worker processes ------------------------------------------------------------------------------------

_BARRIER: Any = None


def cpu_s() -> float:
    """This process's CPU seconds so far, every thread (the journal's publisher and DuckDB's) included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _init_worker(barrier: Any) -> None:
    global _BARRIER
    _BARRIER = barrier
    count_lake_writes()


# BENCHMARK INSTRUMENTATION (changes no behaviour): Store._write wrapped to count the lake transactions that
# committed (the journal's publishes among them) and the attempts that reran after a commit conflict.
LAKE_WRITES = {"committed": 0, "retried": 0}


def count_lake_writes() -> None:
    original = Store._write
    if getattr(original, "counting", False):
        return

    def counting(self: Store, fn: Callable[[Any], Any], con: Any = None, token: bool = True) -> Any:
        attempts = [0]

        def attempt(c: Any) -> Any:
            attempts[0] += 1
            return fn(c)

        result = original(self, attempt, con, token)
        LAKE_WRITES["committed"] += 1
        LAKE_WRITES["retried"] += max(0, attempts[0] - 1)
        return result

    counting.counting = True  # type: ignore[attr-defined]
    Store._write = counting  # type: ignore[method-assign]


def lake_writes() -> dict[str, int]:
    return dict(LAKE_WRITES)


def _warm(_: int) -> int:
    time.sleep(0.2)  # one task per process: each has started (and imported everything)
    return os.getpid()


def writer_task(backend: Backend, prefix: str, commits: int, seed: int) -> dict[str, Any]:
    """One writer process: open the store, wait for the others, N commits, publish; the times."""
    try:
        rng = random.Random(seed)
        batches = [completion_records(prefix, c, rng) for c in range(commits)]
        store = backend.open()
    except BaseException:
        _BARRIER.abort()
        return {"error": traceback.format_exc()}
    try:
        _BARRIER.wait(timeout=120)
        latencies = []
        writes = lake_writes()
        cpu, started = cpu_s(), time.monotonic()
        for batch in batches:
            t = time.perf_counter()
            store.save_completions(batch)
            latencies.append(time.perf_counter() - t)
        store.publish()
        ended, cpu = time.monotonic(), cpu_s() - cpu
        writes = {k: v - writes[k] for k, v in lake_writes().items()}
        store.close()
        backend.forget()
        return {"started": started, "ended": ended, "latencies": latencies, "cpu": cpu, "writes": writes,
                "error": None}
    except BaseException:
        try:
            _BARRIER.abort()
        except Exception:  # noqa: BLE001
            pass
        return {"error": traceback.format_exc()}


def old_writer_task(path: str, prefix: str, commits: int, seed: int) -> dict[str, Any]:
    """One writer process on a DuckDB file of its own (one file takes one writing process): the ceiling of
    four processes on this machine, for reference."""
    try:
        rng = random.Random(seed)
        batches = [completion_records(prefix, c, rng) for c in range(commits)]
        old = OldFile(Path(path))
    except BaseException:
        _BARRIER.abort()
        return {"error": traceback.format_exc()}
    try:
        _BARRIER.wait(timeout=120)
        latencies = []
        cpu, started = cpu_s(), time.monotonic()
        for batch in batches:
            t = time.perf_counter()
            old.save_completions(batch)
            latencies.append(time.perf_counter() - t)
        ended, cpu = time.monotonic(), cpu_s() - cpu
        rows = old.sql("SELECT count(*), count(DISTINCT sample_id) FROM samples")[0]
        old.close()
        return {"started": started, "ended": ended, "latencies": latencies, "cpu": cpu, "rows": rows,
                "error": None}
    except BaseException:
        try:
            _BARRIER.abort()
        except Exception:  # noqa: BLE001
            pass
        return {"error": traceback.format_exc()}


def reader_task(backend: Backend, ready: str, stop: str, deadline_s: float) -> dict[str, Any]:
    """Another process reading the lake: poll ``max(sample_index)``, noting when it grows, until the index
    written to ``stop`` shows."""
    try:
        store = Store(backend.location(), read_only=True)
        query = "SELECT max(sample_index) FROM samples"
        store.sql(query)
        Path(ready).touch()
        polls: list[tuple[float, int]] = []
        seen, last, queries = -1, None, 0
        end = time.monotonic() + deadline_s
        while (last is None or seen < last) and time.monotonic() < end:
            row = store.sql(query)[0][0]
            t = time.monotonic()
            queries += 1
            if row is not None and row > seen:
                seen = row
                polls.append((t, row))
            if last is None and os.path.exists(stop):
                last = int(Path(stop).read_text())
            time.sleep(0.005)
        store.close()
        backend.forget()
        return {"polls": polls, "queries": queries, "error": None}
    except BaseException:
        Path(ready).touch()
        return {"error": traceback.format_exc()}


def probe_old_file(path: str) -> str:
    """What another process gets opening the old file while this one writes it."""
    out = []
    for mode, read_only in (("write", False), ("read", True)):
        try:
            duckdb.connect(path, read_only=read_only).close()
            out.append(f"{mode}: opened")
        except duckdb.Error as exc:
            message = " ".join(str(exc).split()).replace(f'"{path}"', "<file>")
            out.append(f"{mode}: {type(exc).__name__}: {message[:110]}")
    return "; ".join(out)


# ---- measurements ----------------------------------------------------------------------------------------

def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


@dataclass
class Result:
    value: float | None = None
    text: str | None = None  # shown instead of the value (n/a, skipped, error)
    note: str = ""  # a footnote mark

    def show(self, fmt: str) -> str:
        if self.text is not None:
            return self.text
        return (fmt.format(self.value) if self.value is not None else "-") + self.note


class Bench:
    def __init__(self, args: argparse.Namespace, backends: Backends, pool: Any, barrier: Any):
        self.args = args
        self.backends = backends
        self.pool = pool
        self.barrier = barrier
        self.rows: dict[str, dict[str, Result]] = {}
        self.checks: list[tuple[str, str, bool, str]] = []  # backend, scenario, ok, detail
        self.errors: list[str] = []

    def put(self, metric: str, backend: str, result: Result) -> None:
        self.rows.setdefault(metric, {})[backend] = result

    def error(self, where: str, tb: str) -> Result:
        self.errors.append(f"{where}:\n{tb}")
        first = tb.strip().splitlines()[-1] if tb.strip() else "error"
        return Result(text=f"error: {first[:40]}")

    def log(self, text: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # ---- verification --------------------------------------------------------------------------------

    def verify(self, name: str, scenario: str, store: Any, expected: int, journal_dir: Path | None) -> None:
        problems = []
        counts = []
        for table, key in (("samples", "sample_id"), ("llm_requests", "request_key"), ("prompts", "prompt_hash")):
            total, distinct = store.sql(f"SELECT count(*), count(DISTINCT {key}) FROM {table}")[0]
            counts.append(f"{table} {total}/{distinct}")
            if total != expected or distinct != expected:
                problems.append(f"{table}: {total} rows, {distinct} distinct {key}, expected {expected}")
        if journal_dir is not None and (left := journal_files(journal_dir)):
            problems.append(f"{len(left)} journal file(s) left unpublished")
        detail = f"expected {expected}: " + ", ".join(counts) + " (rows/distinct keys)"
        self.checks.append((name, scenario, not problems, "; ".join(problems) or detail))

    # ---- 1. one writer -------------------------------------------------------------------------------

    def record_rates(self, scenario: str, name: str, completions: int, seconds: float, cpu: float,
                     latencies: list[float], writes: dict[str, int] | None = None) -> None:
        self.put(f"rate, {scenario}", name, Result(completions / seconds))
        if writes is not None:
            self.put(f"writes, {scenario}", name, Result(text=f"{writes['committed']} / {writes['retried']}"))
        self.put(f"cpu, {scenario}", name, Result(1000 * cpu / completions))
        if scenario != SAME:
            self.put(f"durable p50, {scenario}", name, Result(1000 * pct(latencies, 0.5)))
            self.put(f"durable p99, {scenario}", name, Result(1000 * pct(latencies, 0.99)))
        self.log(f"{scenario}, {name}: {completions / seconds:.0f} completions/s, {1000 * cpu / completions:.1f}"
                 f" CPU ms per completion, durable p99 {1000 * pct(latencies, 0.99):.0f} ms")

    def one_writer(self) -> None:
        n = self.args.commits
        batches = [completion_records("one", c, random.Random(c)) for c in range(n)]
        folder = _scratch("old")
        try:
            old = OldFile(folder / "factory.duckdb")
            lat = []
            cpu, started = cpu_s(), time.perf_counter()
            for batch in batches:
                t = time.perf_counter()
                old.save_completions(batch)
                lat.append(time.perf_counter() - t)
            elapsed, cpu = time.perf_counter() - started, cpu_s() - cpu
            self.record_rates(ONE, OLD, n * COMMIT_SIZE, elapsed, cpu, lat)
            self.verify(OLD, ONE, old, n * COMMIT_SIZE, None)
            old.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        for name in self.backends.names():
            backend = self.backends.fresh(name, "one")
            try:
                with backend.open():  # created here, as a run finds it
                    pass
                store = backend.open()
                lat = []
                writes = lake_writes()
                cpu, started = cpu_s(), time.perf_counter()
                for batch in batches:
                    t = time.perf_counter()
                    store.save_completions(batch)
                    lat.append(time.perf_counter() - t)
                store.publish()
                elapsed, cpu = time.perf_counter() - started, cpu_s() - cpu
                writes = {k: v - writes[k] for k, v in lake_writes().items()}
                journal_dir = store.location.journal_dir
                store.close()
                self.record_rates(ONE, name, n * COMMIT_SIZE, elapsed, cpu, lat, writes)
                with backend.open() as check:
                    self.verify(name, ONE, check, n * COMMIT_SIZE, journal_dir)
            except Exception:  # noqa: BLE001
                self.put(f"rate, {ONE}", name, self.error(f"{ONE} on {name}", traceback.format_exc()))
            finally:
                backend.forget()
                backend.cleanup()

    # ---- 2. four writer processes --------------------------------------------------------------------

    def run_writers(self, task: Callable[..., dict[str, Any]], jobs: list[tuple[Any, ...]], where: str
                    ) -> list[dict[str, Any]] | None:
        """The jobs, one per pool process, released together; their results (None: failed, recorded)."""
        self.barrier.reset()
        pending = self.pool.starmap_async(task, jobs, chunksize=1)
        try:
            results = pending.get(timeout=self.args.timeout)
        except mp.TimeoutError:
            self.error(where, f"no result after {self.args.timeout:.0f} s (a deadlock?)")
            self.restart_pool()
            return None
        failed = [r["error"] for r in results if r["error"]]
        if failed:
            self.error(where, failed[0])
            return None
        return results

    def concurrent(self) -> None:
        n = self.args.commits
        total = WRITERS * n * COMMIT_SIZE
        folder = _scratch("old-many")
        try:
            old = OldFile(folder / "shared.duckdb")
            self.old_probe = self.pool.apply(probe_old_file, (str(old.path),))
            old.close()
            jobs = [(str(folder / f"writer{w}.duckdb"), f"w{w}", n, 1000 + w) for w in range(WRITERS)]
            results = self.run_writers(old_writer_task, jobs, f"{MANY} on {OLD} (separate files)")
            if results is not None:
                window = max(r["ended"] for r in results) - min(r["started"] for r in results)
                self.record_rates(MANY, OLD, total, window, sum(r["cpu"] for r in results),
                                  [x for r in results for x in r["latencies"]])
                self.rows[f"rate, {MANY}"][OLD].note = "*"
                rows = [r["rows"] for r in results]
                ok = all(r == (n * COMMIT_SIZE, n * COMMIT_SIZE) for r in rows)
                self.checks.append((OLD, f"{MANY} (4 separate files)", ok,
                                    f"expected {n * COMMIT_SIZE} per file: samples " + ", ".join(
                                        f"{a}/{b}" for a, b in rows)))
            else:
                self.put(f"rate, {MANY}", OLD, Result(text="error"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.put(f"rate, {SAME}", OLD, Result(text="n/a: 1 process"))
        for name in self.backends.names():
            for scenario, overlap in ((MANY, False), (SAME, True)):
                backend = self.backends.fresh(name, "many")
                where = f"{scenario} on {name}"
                try:
                    with backend.open():  # created once here, as a run would find it
                        pass
                    jobs = [(backend, "same" if overlap else f"w{w}", n, 1000 + w) for w in range(WRITERS)]
                    results = self.run_writers(writer_task, jobs, where)
                    if results is None:
                        self.put(f"rate, {scenario}", name, Result(text="error"))
                        continue
                    window = max(r["ended"] for r in results) - min(r["started"] for r in results)
                    writes = {k: sum(r["writes"][k] for r in results) for k in LAKE_WRITES}
                    self.record_rates(scenario, name, total, window, sum(r["cpu"] for r in results),
                                      [x for r in results for x in r["latencies"]], writes)
                    with backend.open() as check:
                        self.verify(name, scenario, check, n * COMMIT_SIZE if overlap else total,
                                    check.location.journal_dir)
                except Exception:  # noqa: BLE001
                    self.put(f"rate, {scenario}", name, self.error(where, traceback.format_exc()))
                finally:
                    backend.forget()
                    backend.cleanup()
        for name in [OLD, *self.backends.names()]:
            one, many = self.rows.get(f"rate, {ONE}", {}).get(name), self.rows.get(f"rate, {MANY}", {}).get(name)
            if one and many and one.value and many.value:
                self.put("scaling", name, Result(many.value / one.value, note=many.note))

    def restart_pool(self) -> None:
        self.pool.terminate()
        self.pool, self.barrier = make_pool()

    # ---- 3. latency to visible -----------------------------------------------------------------------

    def latency(self) -> None:
        self.put("visible p50", OLD, Result(text="n/a: locked"))
        self.put("visible p99", OLD, Result(text="n/a: locked"))
        duration, interval = self.args.visibility_s, 0.05
        for name in self.backends.names():
            backend = self.backends.fresh(name, "vis")
            scratch = _scratch("vis-flags")
            try:
                with backend.open():
                    pass
                ready, stop = scratch / "ready", scratch / "stop"
                pending = self.pool.apply_async(reader_task, (backend, str(ready), str(stop),
                                                             duration + 120))
                wait_until = time.monotonic() + 60
                while not ready.exists() and time.monotonic() < wait_until:
                    time.sleep(0.01)
                store = backend.open()
                rng = random.Random(7)
                durable = []
                started = time.monotonic()
                while time.monotonic() < started + duration:  # a commit every `interval`, as completions come
                    store.save_completions(completion_records("vis", len(durable), rng))
                    durable.append(time.monotonic())
                    time.sleep(max(0.0, started + len(durable) * interval - time.monotonic()))
                stop.write_text(str(len(durable) * COMMIT_SIZE - 1))  # the last index: the reader stops there
                result = pending.get(timeout=duration + 180)  # published by the background thread
                store.close()
                if result["error"]:
                    raise RuntimeError(result["error"])
                polls = result["polls"]
                delays = []
                for c, t_durable in enumerate(durable):
                    index = c * COMMIT_SIZE + COMMIT_SIZE - 1  # the commit's last row
                    seen = next((t for t, m in polls if m >= index), None)
                    if seen is None:
                        raise RuntimeError(f"commit {c} never became visible to the reader")
                    delays.append(max(0.0, seen - t_durable))
                self.put("visible p50", name, Result(1000 * pct(delays, 0.5)))
                self.put("visible p99", name, Result(1000 * pct(delays, 0.99)))
                self.log(f"visibility, {name}: p50 {1000 * pct(delays, 0.5):.0f} ms, "
                         f"p99 {1000 * pct(delays, 0.99):.0f} ms over {len(durable)} commits, "
                         f"{result['queries']} reader queries")
            except Exception:  # noqa: BLE001
                err = self.error(f"visibility on {name}", traceback.format_exc())
                self.put("visible p50", name, err)
                self.put("visible p99", name, err)
            finally:
                backend.forget()
                backend.cleanup()
                shutil.rmtree(scratch, ignore_errors=True)

    # ---- 4. cache prefetch ---------------------------------------------------------------------------

    def prefetch(self) -> None:
        k = self.args.prefetch_keys
        batch = min(PREFETCH_BATCH, k)
        loads = max(1, k // batch)
        keys = [_hex("pre", c, i) for c in range(loads) for i in range(batch)]

        rng = random.Random(3)
        batches = [completion_records("pre", c, rng, size=batch) for c in range(loads)]  # built once, for all

        def load(save: Callable[[list[Any]], None]) -> None:
            for records in batches:
                save(records)

        def timed(fetch: Callable[[list[str]], dict[str, Any]]) -> float:
            t = time.perf_counter()
            found = fetch(keys)
            took = time.perf_counter() - t
            if len(found) != len(keys):
                raise RuntimeError(f"cached_requests found {len(found)} of {len(keys)} keys")
            return took

        # where the time goes: keys bound as one list parameter (as cached_requests passes them) vs as Arrow,
        # on BIND_KEYS keys (the cost is linear in the keys), with no store at all
        import pyarrow as pa

        sample = keys[:BIND_KEYS]
        con = duckdb.connect()
        con.execute("SELECT 1").fetchall()
        t = time.perf_counter()
        con.execute("SELECT count(*) FROM (SELECT unnest($1::VARCHAR[]))", [sample]).fetchall()
        self.put("prefetch bind", OLD, Result(1000 * (time.perf_counter() - t) / len(sample) * 1000))
        t = time.perf_counter()
        con.register("bench_keys", pa.table({"request_key": sample}))
        con.execute("SELECT count(*) FROM bench_keys").fetchall()
        self.put("prefetch arrow", OLD, Result(1000 * (time.perf_counter() - t) / len(sample) * 1000))
        con.close()
        folder = _scratch("old-pre")
        try:
            old = OldFile(folder / "factory.duckdb")
            load(old.save_completions)
            took = timed(old.cached_requests)
            self.put("prefetch", OLD, Result(took))
            self.put("prefetch per 1k", OLD, Result(1e6 * took / len(keys)))
            old.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.log(f"prefetch {len(keys)} keys, {OLD}: {self.value('prefetch', OLD):.3f} s (binding keys as a list"
                 f" parameter alone: {self.value('prefetch bind', OLD):.1f} ms per 1k keys, as Arrow"
                 f" {self.value('prefetch arrow', OLD):.1f} ms)")
        for name in self.backends.names():
            backend = self.backends.fresh(name, "pre")
            try:
                with backend.open() as store:
                    load(store.save_completions)
                    store.publish()
                with backend.open() as store:  # a fresh store, as a run's prefetch finds it
                    took = timed(store.cached_requests)
                self.put("prefetch", name, Result(took))
                self.put("prefetch per 1k", name, Result(1e6 * took / len(keys)))
                self.log(f"prefetch {len(keys)} keys, {name}: {took:.3f} s")
            except Exception:  # noqa: BLE001
                self.put("prefetch", name, self.error(f"prefetch on {name}", traceback.format_exc()))
            finally:
                backend.forget()
                backend.cleanup()

    # ---- 5. files and snapshots ----------------------------------------------------------------------

    def housekeeping(self) -> None:
        completions = self.args.compact_completions
        commits = max(1, completions // COMMIT_SIZE)
        for metric in ("files before compact", "files after compact"):
            self.put(metric, OLD, Result(text="1 .duckdb"))
        for metric in ("snapshots before compact", "snapshots after compact"):
            self.put(metric, OLD, Result(text="n/a"))
        for name in self.backends.names():
            backend = self.backends.fresh(name, "files")
            try:
                rng = random.Random(5)
                with backend.open() as store:
                    for c in range(commits):
                        store.save_completions(completion_records("files", c, rng))
                with backend.open() as store:
                    data = store.location.data_path
                    files = lambda: len(glob.glob(data + "**/*.parquet", recursive=True))  # noqa: E731
                    snaps = lambda: store.sql("SELECT count(*) FROM lake.snapshots()")[0][0]  # noqa: E731
                    before_files, before_snaps = files(), snaps()
                    t = time.perf_counter()
                    compact(store, keep_hours=0)
                    took = time.perf_counter() - t
                    after_files, after_snaps = files(), snaps()
                    self.verify(name, f"{commits * COMMIT_SIZE} completions, compacted", store,
                                commits * COMMIT_SIZE, store.location.journal_dir)
                self.put("files before compact", name, Result(before_files))
                self.put("files after compact", name, Result(after_files))
                self.put("snapshots before compact", name, Result(before_snaps))
                self.put("snapshots after compact", name, Result(after_snaps))
                self.put("compact time", name, Result(took))
                self.log(f"files/snapshots, {name}: {before_files}/{before_snaps} -> {after_files}/{after_snaps}")
            except Exception:  # noqa: BLE001
                err = self.error(f"housekeeping on {name}", traceback.format_exc())
                for metric in ("files before compact", "files after compact", "snapshots before compact",
                               "snapshots after compact"):
                    self.put(metric, name, err)
            finally:
                backend.forget()
                backend.cleanup()

    # ---- the report ----------------------------------------------------------------------------------

    ROWS = (  # key, label, format, ratio to the old file
        (f"rate, {ONE}", "completions/s, 1 writer", "{:.0f}", True),
        (f"rate, {MANY}", f"completions/s, {WRITERS} writers", "{:.0f}", True),
        (f"rate, {SAME}", f"completions/s, {WRITERS} writers same keys", "{:.0f}", False),
        ("scaling", f"{WRITERS} writers / 1 writer", "{:.2f}x", False),
        (f"writes, {ONE}", "lake commits / conflicts rerun, 1 writer", "", False),
        (f"writes, {MANY}", f"lake commits / conflicts rerun, {WRITERS} w.", "", False),
        (f"writes, {SAME}", "lake commits / conflicts rerun, same keys", "", False),
        (f"cpu, {ONE}", "CPU ms per completion, 1 writer", "{:.2f}", True),
        (f"cpu, {MANY}", f"CPU ms per completion, {WRITERS} writers", "{:.2f}", True),
        (f"durable p50, {ONE}", "to durable p50 ms, 1 writer", "{:.0f}", True),
        (f"durable p99, {ONE}", "to durable p99 ms, 1 writer", "{:.0f}", True),
        (f"durable p50, {MANY}", f"to durable p50 ms, {WRITERS} writers", "{:.0f}", True),
        (f"durable p99, {MANY}", f"to durable p99 ms, {WRITERS} writers", "{:.0f}", True),
        ("visible p50", "to visible elsewhere p50 ms", "{:.0f}", False),
        ("visible p99", "to visible elsewhere p99 ms", "{:.0f}", False),
        ("prefetch", "cached_requests({k}) s", "{:.3f}", True),
        ("prefetch per 1k", "  the same, ms per 1k keys", "{:.1f}", True),
        ("prefetch bind", "  binding keys as a list param, ms/1k", "{:.1f}", False),
        ("prefetch arrow", "  binding keys as Arrow, ms/1k", "{:.1f}", False),
        ("files before compact", "parquet files, {c} completions", "{:.0f}", False),
        ("files after compact", "parquet files, after compact", "{:.0f}", False),
        ("snapshots before compact", "snapshots, {c} completions", "{:.0f}", False),
        ("snapshots after compact", "snapshots, after compact", "{:.0f}", False),
        ("compact time", "compact() s", "{:.2f}", False),
    )

    def value(self, metric: str, col: str) -> float | None:
        r = self.rows.get(metric, {}).get(col)
        return r.value if r is not None else None

    def report(self) -> int:
        pg_skip = self.backends.pg_skip
        cols = [OLD, SQLITE, PG]
        header = ["", *cols, "sqlite/old", "postgres/old"]
        table = []
        for key, label, fmt, ratio in self.ROWS:
            if key not in self.rows:
                continue
            cells = self.rows[key]
            line = [label.format(k=f"{self.args.prefetch_keys // 1000}k keys" if self.args.prefetch_keys >= 1000
                                 else f"{self.args.prefetch_keys} keys", c=self.args.compact_completions)]
            for col in cols:
                line.append(pg_skip if col == PG and pg_skip else cells.get(col, Result(text="-")).show(fmt))
            for col in (SQLITE, PG):
                old, new = cells.get(OLD), cells.get(col)
                if col == PG and pg_skip:
                    line.append(pg_skip)
                elif ratio and old and new and old.value and new.value is not None:
                    line.append(f"{new.value / old.value:.2f}")
                else:
                    line.append("-")
            table.append(line)
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
        print()
        print("ratios: lake / old file (rates: higher is better; CPU, latency, prefetch: lower is better)")
        for line in [header, ["-" * w for w in widths], *table]:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        print(f"* old file, {WRITERS} writers: each on a DuckDB file of its own, the machine's ceiling for reference;"
              " one file takes one writing process:")
        print(f"  another process opening the old file while it is written gets: {getattr(self, 'old_probe', '-')}")
        print("  CPU: the writer processes' own (every thread); a PostgreSQL server's is not counted.")
        print()
        print("verification (rows in the store once the writers closed; rows/distinct keys per table)")
        all_ok = not self.errors
        for name, scenario, ok, detail in self.checks:
            all_ok &= ok
            print(f"  {'ok  ' if ok else 'FAIL'}  {name:13}  {scenario:30}  {detail}")
        if not self.checks:
            print("  (no row checks in the sections run)")
        print(f"  => {VERIFIED}" if all_ok and self.checks else
              "" if all_ok else "  => LOST OR DOUBLED ROWS, or a store call failed (see below)")
        print()
        print("goals")
        goals: list[tuple[bool | None, str, str]] = []
        old1 = self.value(f"rate, {ONE}", OLD)
        for col in (SQLITE, PG):
            scale_goal = GOAL_SCALE_PG if col == PG else GOAL_SCALE_SQLITE
            texts = (f"{col}: 1 writer >= {GOAL_ONE_WRITER:.0%} of the old file",
                     f"{col}: {WRITERS} writers >= {scale_goal:g}x 1 writer",
                     f"{col}: to durable p99 <= {GOAL_DURABLE_P99_MS:.0f} ms, 1 writer",
                     f"{col}: to durable p99 <= {GOAL_DURABLE_P99_MS:.0f} ms, {WRITERS} writers")
            if col == PG and pg_skip:
                goals.extend((None, text, pg_skip) for text in texts)
                continue
            one = self.value(f"rate, {ONE}", col)
            goals.append((None, texts[0], "no figure") if one is None or not old1 else
                         (one / old1 >= GOAL_ONE_WRITER, texts[0],
                          f"{one / old1:.0%} ({one:.0f} vs {old1:.0f} completions/s)"))
            scale = self.value("scaling", col)
            goals.append((None, texts[1], "no figure") if scale is None else
                         (scale >= scale_goal, texts[1], f"{scale:.2f}x"))
            for text, writers in zip(texts[2:], (ONE, MANY)):
                p99, old_p99 = self.value(f"durable p99, {writers}", col), self.value(f"durable p99, {writers}", OLD)
                versus = f" (old file: {old_p99:.0f} ms)" if old_p99 is not None else ""
                goals.append((None, text, "no figure") if p99 is None else
                             (p99 <= GOAL_DURABLE_P99_MS, text, f"{p99:.0f} ms{versus}"))
        goals.append((all_ok, "no writer loses or doubles a row",
                      f"{sum(ok for _, _, ok, _ in self.checks)}/{len(self.checks)} checks ok,"
                      f" {len(self.errors)} store errors"))
        for ok, text, detail in goals:
            print(f"  {'SKIP' if ok is None else ('PASS' if ok else 'FAIL')}  {text:52}  {detail}")
        if self.errors:
            print()
            print("store errors (tracebacks)")
            for e in self.errors:
                print("  " + e.replace("\n", "\n  "))
        return 0 if all_ok else 1


def make_pool() -> tuple[Any, Any]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    pool = ctx.Pool(WRITERS, initializer=_init_worker, initargs=(barrier,))
    pool.map(_warm, range(WRITERS), chunksize=1)  # imports done before anything is timed
    return pool, barrier


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=None, help="commits per writer (default 50, quick 4)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run")
    parser.add_argument("--no-postgres", action="store_true", help="leave the PostgreSQL column out")
    parser.add_argument("--prefetch-keys", type=int, default=None, help="keys for section 4 (default 100000)")
    parser.add_argument("--compact-completions", type=int, default=None, help="section 5 (default 10000)")
    parser.add_argument("--visibility-s", type=float, default=None, help="section 3's writing time, s (default 4)")
    parser.add_argument("--sections", default="1,2,3,4,5", help="which sections to run (default all: 1,2,3,4,5)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a stuck scenario is abandoned")
    args = parser.parse_args(argv)
    q = args.quick
    args.commits = args.commits or (4 if q else 50)
    args.prefetch_keys = args.prefetch_keys or (1_000 if q else 100_000)
    args.compact_completions = args.compact_completions or (200 if q else 10_000)
    args.visibility_s = args.visibility_s or (1.0 if q else 4.0)

    started = time.monotonic()
    load = os.getloadavg()
    print(f"store benchmark: {args.commits} commits x {COMMIT_SIZE} completions per writer, {WRITERS} writer"
          f" processes; duckdb {duckdb.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs,"
          f" load average {load[0]:.1f}; publish interval {journal_module.PUBLISH_MIN_INTERVAL_S:g}"
          f"-{journal_module.PUBLISH_MAX_INTERVAL_S:g} s", flush=True)
    backends = Backends(not args.no_postgres)
    print(f"PostgreSQL: {backends.pg_skip or 'throwaway server ' + backends.pg_version}", flush=True)
    count_lake_writes()
    pool, barrier = make_pool()
    bench = Bench(args, backends, pool, barrier)
    sections = [("1. one writer", bench.one_writer),
                (f"2. {WRITERS} writer processes, distinct and the same keys", bench.concurrent),
                ("3. latency to visible in another process (to durable: from 1. and 2.)", bench.latency),
                (f"4. cache prefetch, {args.prefetch_keys} keys", bench.prefetch),
                (f"5. files and snapshots after {args.compact_completions} completions", bench.housekeeping)]
    chosen = {int(x) for x in args.sections.split(",") if x.strip()}
    sections = [s for i, s in enumerate(sections, 1) if i in chosen]
    try:
        for title, section in sections:
            t = time.monotonic()
            print(f"{title} (load average {os.getloadavg()[0]:.1f})", flush=True)
            section()
            print(f"  ({time.monotonic() - t:.1f} s)", flush=True)
    finally:
        bench.pool.terminate()
        backends.stop()
    rc = bench.report()
    print(f"\n(took {time.monotonic() - started:.0f} s; load average now {os.getloadavg()[0]:.1f})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
