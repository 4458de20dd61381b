"""The store: every SQL statement of the factory (nothing else writes SQL), on a DuckLake catalog.

The store holds the specs, runs, elicited attributes, prompts, the LLM request cache, the samples with their
full provenance, filter decisions, metrics, evaluations and dataset versions. Many processes share it: each
write is one DuckLake transaction under the writer token (a one-row table every writer updates, so that two
concurrent writers conflict and one retries: keys stay unique without constraints); completions go through
the process's journal (:mod:`factory.store.journal`). Reads never wait for writers. API keys are never
written here: requests store the model and parameters, never the client's credentials.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from factory.spec import Spec
from factory.store.journal import Journal, recover
from factory.store.lake import SHARED, StoreError, StoreLocation, attach, cursor, last_commit, retrying
from factory.store.schema import SCHEMA, SCHEMA_VERSION, UNIQUE_KEYS, Record, key_match

T = TypeVar("T")

# The newest human review decision per generated text (request and choice: a top-up under a new spec hash
# that reuses the cached request keeps it). ``label`` is the reviewed class of a relabel, else NULL.
REVIEWED = ("(SELECT request_key, choice_index, decision, CASE WHEN decision = 'relabel' THEN label END AS label,"
            " note, reviewer, created_at FROM review_decisions QUALIFY row_number() OVER"
            " (PARTITION BY request_key, choice_index ORDER BY created_at DESC) = 1)")
REVIEW_DECISIONS = ("keep", "reject", "relabel")


@dataclass(frozen=True)
class CachedRequest:
    """A completed LLM request, as the cache returns it."""

    request_key: str
    choices: list[str]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


FEW_KEYS = 2000  # up to this many keys (a run's prefetch chunk), a key lookup writes them into its SQL: at 2,000
# literals cost about what an Arrow table does (20 vs 18 ms) and spare the first Arrow table's pyarrow import (80 ms)


def now() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    """The factory's store (see :mod:`factory.store.lake` for where it lives). Use as a context manager, or call
    :meth:`close`. ``snapshot``/``as_of`` pin it, read-only, to one DuckLake snapshot (a dataset version)."""

    def __init__(self, location: str | Path | StoreLocation | None = None, read_only: bool = False,
                 snapshot: int | None = None, as_of: str | None = None):
        self._journal: Journal | None = None
        self.location = location if isinstance(location, StoreLocation) else StoreLocation.parse(location)
        self.path = str(self.location)  # for messages
        self.read_only = read_only or snapshot is not None or as_of is not None
        if self.read_only and not self.location.exists():
            raise StoreError(f"{self.path}: no store here yet (run 'factory run SPEC' first)")
        self._pinned = snapshot is not None or as_of is not None
        try:
            if self._pinned:  # an instance of its own, attached at that snapshot
                self.con = attach(self.location, True, snapshot, as_of)
            else:
                self.con = SHARED.open(self.location, None if self.read_only else self._create_schema)
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store: {_first_line(exc)}") from exc
        self._check_version()
        self._journal_lock = threading.Lock()
        self._started: dict[str, tuple[str, str]] = {}  # the runs this store started: run_id -> (spec name, hash)
        # samples ``s`` joined with their review ``h`` (NULL columns where none): every reader of kept data uses it
        self.review_join = (f"LEFT JOIN {REVIEWED} h ON h.request_key = s.request_key"
                            " AND h.choice_index = s.choice_index")
        if not self.read_only:
            recover(self.con, self.location.journal_dir, self._write)  # what a crashed process left unpublished

    def _schema_version(self, con: duckdb.DuckDBPyConnection) -> int | None:
        try:
            row = con.execute("SELECT max(value) FROM lake.meta WHERE key = 'schema_version'").fetchone()
        except duckdb.CatalogException:  # no meta table: a new (or a foreign) catalog
            return None
        return int(row[0]) if row and row[0] is not None else None

    def _create_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        found = retrying(lambda: self._schema_version(con))
        if found is not None and found >= SCHEMA_VERSION:
            return

        def create(c: duckdb.DuckDBPyConnection) -> None:
            c.execute(SCHEMA)
            c.execute("DELETE FROM meta WHERE key = 'schema_version'")
            c.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
            if not c.execute("SELECT count(*) FROM writer_token").fetchone()[0]:
                c.execute("INSERT INTO writer_token VALUES (0)")

        self._write(create, con, token=False)

    def _check_version(self) -> None:
        found = retrying(lambda: self._schema_version(self.con))
        if found is not None and found > SCHEMA_VERSION:
            self._release()
            raise StoreError(
                f"{self.path} has schema v{found}, written by a newer attrfactory; this one reads up to "
                f"v{SCHEMA_VERSION}. Upgrade attrfactory (pip install -U attrfactory) or use another --store."
            )
        if found is None:
            self._release()
            raise StoreError(f"{self.path} is not an attrfactory store (no schema version)")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Publish the journal, close the connection and drop it (a Store kept alive by a traceback holds
        nothing). A journal that cannot be published stays on disk: the next writer publishes it."""
        if "con" not in self.__dict__:
            return
        try:
            if self._journal is not None:
                self._journal.close()
        finally:
            self._journal = None
            self._release()

    def _release(self) -> None:
        con = self.__dict__.pop("con", None)
        if con is not None:
            con.close()
            if not self._pinned:
                SHARED.release(self.location)

    def _x(self, sql: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyConnection:
        """One read (its own snapshot), retried while the catalog is busy. What this store journaled is
        published first, so a store reads its own writes."""
        if self._journal is not None and self._journal.dirty:
            self._journal.publish()
        return retrying(lambda: self.con.execute(sql, params or []))

    def sql(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows of one read-only query (for tests, benchmarks and ad-hoc inspection)."""
        return self._x(sql, params).fetchall()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own for another thread (a lease's renewal), the store used by default."""
        return cursor(self.con)

    def _write(self, fn: Callable[[duckdb.DuckDBPyConnection], T], con: duckdb.DuckDBPyConnection | None = None,
               token: bool = True) -> T:
        """``fn(con)`` in one transaction, committed whole or not at all; retried on a commit conflict. Every
        write first updates the writer token, so two concurrent writes conflict and the later one reruns on
        the newer snapshot: a write that checks what is there before inserting never doubles a row."""
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only")
        con = con or self.con

        def attempt() -> T:
            con.execute("BEGIN TRANSACTION")
            try:
                if token:
                    con.execute("UPDATE lake.writer_token SET n = n + 1")
                result = fn(con)
                con.execute("COMMIT")
                return result
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:  # the failed commit has ended the transaction already
                    pass
                raise

        return retrying(attempt)

    def _with_keys(self, column: str, keys: Sequence[str], query: Callable[[duckdb.DuckDBPyConnection, str], T]
                   ) -> T:
        """``query(cur, wanted)`` on a cursor of its own, where ``wanted`` is a relation of ``keys`` (as
        ``column``): many keys are bound as an Arrow table (100k keys take milliseconds; as a list parameter,
        seconds), up to ``FEW_KEYS`` are written into the SQL as literals (a run's first Arrow table costs ~80 ms,
        DuckDB imports pyarrow.dataset). No publish first: the caller reads the journal itself where it must."""
        cur = cursor(self.con)  # views are per connection: another thread may look up keys at the same time
        try:
            if len(keys) <= FEW_KEYS:
                literals = ", ".join("'" + str(k).replace("'", "''") + "'" for k in keys)
                wanted = f"(SELECT unnest([{literals}]::VARCHAR[]) AS {column})"
            else:
                cur.register("wanted", pa.table({column: pa.array(list(keys), pa.string())}))
                wanted = "wanted"
            return retrying(lambda: query(cur, wanted))
        finally:
            cur.close()

    def _exec(self, sql: str, params: Sequence[Any] | None = None) -> None:
        """One write statement in its own transaction."""
        self._write(lambda c: c.execute(sql, params or []))

    # ---- the journal -----------------------------------------------------------------------------

    def _ensure_journal(self) -> Journal:
        with self._journal_lock:
            if self._journal is None:
                if self.read_only:
                    raise StoreError(f"{self.path}: opened read-only")
                self._journal = Journal(self.con, self.location.journal_dir, self._write)
            return self._journal

    def publish(self) -> int:
        """Publish this process's journal to the lake now (stages call it when they end)."""
        return self._journal.publish() if self._journal is not None else 0

    # ---- specs and runs --------------------------------------------------------------------------

    def record_spec(self, spec: Spec, yaml_text: str) -> None:
        self._exec("INSERT INTO specs SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS"
                   " (SELECT 1 FROM specs WHERE spec_hash = $1)",
                   [spec.hash, spec.name, str(spec.source or ""), yaml_text, spec.model_dump_json(), now()])

    def start_run(self, spec: Spec) -> str:
        run_id = f"{spec.name}-{now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        self._exec(
            "INSERT INTO runs (run_id, spec_hash, spec_name, method, model, status, started_at)"
            " VALUES (?, ?, ?, ?, ?, 'running', ?)",
            [run_id, spec.hash, spec.name, spec.generation.method, spec.generation.model, now()],
        )
        self._started[run_id] = (spec.name, spec.hash)
        return run_id

    def finish_run(self, run_id: str, status: str, message: str = "", version: bool = True,
                   cached: int | None = None) -> None:
        """Close a run in the commit that publishes its journal (so the version's snapshot holds all it wrote);
        its totals are summed from the samples and requests it produced, ``cached`` (if given) is how many came
        from the cache. A run that ended well leaves a dataset version in the same commit (unless ``version`` is
        false: a shard's run holds part of the data; the run after all shards records the version). The
        version's filter counts are left to the filter stage (:meth:`replace_filter_decisions`)."""
        versioned = version and status in ("done", "budget_stopped")
        predicted: int | None = None  # the snapshot the closing commit makes, as its version records it

        def close(con: duckdb.DuckDBPyConnection) -> None:
            nonlocal predicted
            con.execute(  # the totals and the update in one statement: each statement reads the catalog anew
                "UPDATE runs SET status = $2, finished_at = $3, message = $4, cached = coalesce($5, cached),"
                " requests = t.n, prompt_tokens = t.p, completion_tokens = t.c, cost_usd = t.usd FROM (SELECT"
                " count(*) AS n, coalesce(sum(prompt_tokens), 0) AS p, coalesce(sum(completion_tokens), 0) AS c,"
                " coalesce(sum(cost_usd), 0) AS usd FROM llm_requests"
                " WHERE request_key IN (SELECT request_key FROM samples WHERE run_id = $1)) t WHERE runs.run_id = $1",
                [run_id, status, now(), message, cached])
            if versioned:  # at the snapshot this commit makes (snapshot ids count up by one a commit)
                predicted = con.execute("SELECT id + 1 FROM lake.current_snapshot()").fetchone()[0]
                self._save_version(con, *self._run_spec(con, run_id), run_id, predicted, filtered=False)

        if self._journal is not None:
            self._journal.publish(then=close)
        else:
            self._write(close)
        if not versioned:
            return
        made = self._journal.last_commit() if self._journal is not None else last_commit(self.con)
        if made != predicted:  # another commit came first (compaction takes no writer token)
            self.record_version(run_id)  # at the newest snapshot, which holds all the run wrote

    def _run_spec(self, con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[str, str]:
        """The spec name and hash of a run (this store's own runs without a query)."""
        known = self._started.get(run_id)
        if known is not None:
            return known
        row = con.execute("SELECT spec_name, spec_hash FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no run {run_id!r}")
        return row[0], row[1]

    def runs(self, spec_name: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM runs" + (" WHERE spec_name = ?" if spec_name else "") + " ORDER BY started_at"
        return self._dicts(sql, [spec_name] if spec_name else [])

    # ---- elicited attributes -------------------------------------------------------------------------

    def latest_elicitation(self, spec_hash: str) -> tuple[int, str | None]:
        """The newest version of a spec's attribute values and its content digest (0, None if none)."""
        row = self._x("SELECT version, digest FROM elicitations WHERE spec_hash = ?"
                               " ORDER BY version DESC LIMIT 1", [spec_hash]).fetchone()
        return (row[0], row[1]) if row else (0, None)

    def save_elicitation(self, spec_hash: str, source: str, model: str, digest: str,
                         values: Sequence[tuple[str, str, str, bool]], similar: Sequence[tuple[str, str, int]],
                         caf: Sequence[tuple[str, str, str, bool, str, str]]) -> int:
        """A new version of a spec's attribute values (dimension, class, value, kept), similar classes
        (class, similar class, rank) and CAF decisions (dimension, class, value, dropped, relevant_to,
        reason), in one transaction; returns the version."""
        t = now()

        def save(con: duckdb.DuckDBPyConnection) -> int:
            version = con.execute("SELECT coalesce(max(version), 0) + 1 FROM elicitations WHERE spec_hash = ?",
                                  [spec_hash]).fetchone()[0]
            con.execute("INSERT INTO elicitations VALUES (?, ?, ?, ?, ?, ?)", [spec_hash, version, source, model,
                                                                              digest, t])
            if values:
                con.executemany("INSERT INTO attribute_values VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                [(spec_hash, version, d, c, v, source, k, t) for d, c, v, k in values])
            if similar:
                con.executemany("INSERT INTO similar_classes VALUES (?, ?, ?, ?, ?, ?)",
                                [(spec_hash, version, c, s, r, t) for c, s, r in similar])
            if caf:
                con.executemany("INSERT INTO caf_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                [(spec_hash, version, *row, t) for row in caf])
            return version

        return self._write(save)

    def purpose_counts(self) -> dict[str, int]:
        return dict(self._x("SELECT purpose, count(*) FROM llm_requests GROUP BY 1").fetchall())

    # ---- the LLM request cache -------------------------------------------------------------------

    def cached_requests(self, keys: Sequence[str]) -> dict[str, CachedRequest]:
        """The completed requests among ``keys``, in the lake (one query) or this process's journal."""
        if not keys:
            return {}
        sql = ("SELECT request_key, choices, prompt_tokens, completion_tokens, cost_usd FROM lake.llm_requests"
               " WHERE request_key IN (SELECT request_key FROM {})")
        rows = self._with_keys("request_key", keys, lambda cur, wanted: cur.execute(sql.format(wanted)).fetchall())
        found = {r[0]: CachedRequest(r[0], json.loads(r[1]), r[2], r[3], r[4]) for r in rows}
        if self._journal is not None:
            for key, r in self._journal.unpublished_requests(k for k in keys if k not in found).items():
                found[key] = CachedRequest(key, json.loads(r.choices), r.prompt_tokens, r.completion_tokens,
                                           r.cost_usd)
        return found

    def save_completions(self, records: Iterable[Record]) -> None:
        """Journal prompts, completed requests and their samples (durable when it returns; published to the
        lake within seconds). Idempotent: keys journaled or published already are ignored."""
        self._ensure_journal().append(records, now())

    def spend_for_spec(self, spec_hash: str) -> dict[str, float]:
        """What the requests behind a spec's samples cost: the budget a rerun starts from."""
        row = self._x(
            "SELECT count(*), coalesce(sum(prompt_tokens + completion_tokens), 0), coalesce(sum(cost_usd), 0)"
            " FROM llm_requests WHERE request_key IN (SELECT request_key FROM samples WHERE spec_hash = ?)",
            [spec_hash],
        ).fetchone()
        return {"requests": row[0], "tokens": row[1], "usd": row[2]}

    # ---- samples ---------------------------------------------------------------------------------

    def sample_count(self, spec_hash: str) -> int:
        return self._x("SELECT count(*) FROM samples WHERE spec_hash = ?", [spec_hash]).fetchone()[0]

    def samples(self, spec_hash: str) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM samples WHERE spec_hash = ? ORDER BY class, sample_index, choice_index",
                           [spec_hash])

    def sample_preview(self, spec_hash: str, per_class: int) -> list[dict[str, Any]]:
        """The first ``per_class`` samples of each class (class, text, attributes), refusals and samples the
        filters dropped left out."""
        return self._dicts(
            "SELECT class, text, attributes FROM (SELECT class, text, attributes, sample_index, choice_index,"
            " row_number() OVER (PARTITION BY class ORDER BY sample_index, choice_index) AS rank FROM samples"
            " WHERE spec_hash = ? AND NOT is_refusal AND sample_id NOT IN (SELECT sample_id FROM filter_decisions"
            " WHERE spec_hash = ? AND filter = 'final' AND NOT kept)) WHERE rank <= ? ORDER BY class, rank",
            [spec_hash, spec_hash, per_class])

    def export_samples(self, spec_hash: str, out: Path, fmt: str) -> int:
        """Write the spec's samples (text, label and provenance) to JSONL or Parquet and return the row count.
        Once the filters have run, only the samples they kept are written; never a sample a reviewer rejected,
        and a relabelled one with the reviewed class as its ``label``."""
        filtered = self._x("SELECT count(*) FROM filter_decisions WHERE spec_hash = ? AND filter = 'final'",
                                    [spec_hash]).fetchone()[0] > 0
        keep = (" AND s.sample_id IN (SELECT sample_id FROM filter_decisions WHERE spec_hash = ? AND filter = 'final'"
                " AND kept)") if filtered else ""
        query = (
            "SELECT s.text, coalesce(h.label, s.class) AS label, s.sample_id, s.spec_hash, s.run_id, s.method,"
            " s.model, s.attributes, s.seed, s.sample_index, s.choice_index, s.prompt_hash, s.request_key, s.params,"
            " s.prompt_tokens, s.completion_tokens, s.cost_usd, s.is_refusal, s.generated_at"
            f" FROM samples s {self.review_join}"
            " WHERE s.spec_hash = ? AND h.decision IS DISTINCT FROM 'reject'" + keep +
            " ORDER BY s.class, s.sample_index, s.choice_index")
        params = [spec_hash, spec_hash] if filtered else [spec_hash]
        options = "FORMAT parquet" if fmt == "parquet" else "FORMAT json"
        target = str(out).replace("'", "''")  # a literal: DuckDB binds a COPY's TO parameter before the query's
        self._x(f"COPY ({query}) TO '{target}' ({options})", params).fetchall()
        return self._x(f"SELECT count(*) FROM ({query})", params).fetchone()[0]

    def _insert_arrow(self, con: duckdb.DuckDBPyConnection, table: str, columns: str, data: Any,
                      or_ignore: bool = False, into: Sequence[str] | None = None) -> None:
        """``INSERT INTO table [(into)] SELECT columns FROM data`` for a pyarrow table (fast for many rows).
        ``or_ignore``: rows whose key is there already are skipped (the lake has no constraints: the store checks
        keys itself)."""
        name = f"_arrow_{uuid.uuid4().hex[:8]}"
        target = f"{table} ({', '.join(into)})" if into else table
        select = f"SELECT {columns} FROM {name} d"
        if or_ignore:
            keys = ", ".join(f"d.{k}" for k in UNIQUE_KEYS[table])
            select += (f" WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {key_match(table, 'd', 't')})"
                       f" QUALIFY row_number() OVER (PARTITION BY {keys}) = 1")
        con.register(name, data)
        try:
            con.execute(f"INSERT INTO {target} {select}")
        finally:
            try:
                con.unregister(name)
            except duckdb.Error:  # the transaction is aborted: the view goes with the rollback
                pass

    def replace_filter_decisions(self, spec_hash: str, rows: Sequence[tuple[str, str, bool, str | None]]) -> None:
        """Replace all of a spec's filter decisions by ``rows`` (sample_id, filter, kept, reason), in one
        transaction: a rerun of the filter stage never leaves a mix of old and new decisions."""
        data = pa.table({"spec_hash": [spec_hash] * len(rows), "sample_id": [r[0] for r in rows],
                         "filter": [r[1] for r in rows],
                         "kept": pa.array([bool(r[2]) for r in rows], pa.bool_()),
                         "reason": pa.array([r[3] for r in rows], pa.string())})
        def replace(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM filter_decisions WHERE spec_hash = ?", [spec_hash])
            if rows:
                self._insert_arrow(con, "filter_decisions", "spec_hash, sample_id, filter, kept, reason, now()", data)

        self._write(replace)
        self.record_version(spec_hash=spec_hash)  # the newest version now says how many were kept

    def filter_decisions(self, spec_hash: str) -> list[dict[str, Any]]:
        return self._dicts("SELECT sample_id, filter, kept, reason FROM filter_decisions WHERE spec_hash = ?"
                           " ORDER BY sample_id, filter", [spec_hash])

    def filter_summary(self, spec_hash: str) -> dict[str, dict[str, int]]:
        """Per filter (and ``final``): how many samples it judged, kept and dropped."""
        rows = self._x(
            "SELECT filter, count(*), count(*) FILTER (WHERE kept), count(*) FILTER (WHERE NOT kept)"
            " FROM filter_decisions WHERE spec_hash = ? GROUP BY filter", [spec_hash]).fetchall()
        return {f: {"judged": j, "kept": k, "dropped": d} for f, j, k, d in rows}

    def filter_counts_by_class(self, spec_hash: str) -> list[dict[str, Any]]:
        """Kept and dropped counts per filter and class."""
        return self._dicts(
            "SELECT d.filter, s.class, count(*) FILTER (WHERE d.kept) AS kept,"
            " count(*) FILTER (WHERE NOT d.kept) AS dropped"
            " FROM filter_decisions d JOIN samples s USING (sample_id)"
            " WHERE d.spec_hash = ? AND s.spec_hash = ? GROUP BY ALL ORDER BY d.filter, s.class",
            [spec_hash, spec_hash])

    def filter_counts_by_attribute(self, spec_hash: str) -> list[dict[str, Any]]:
        """Kept and dropped counts per filter, attribute dimension and value (from ``samples.attributes``)."""
        return self._dicts(
            "SELECT d.filter, a.dimension, json_extract_string(s.attributes, a.dimension) AS value,"
            " count(*) FILTER (WHERE d.kept) AS kept, count(*) FILTER (WHERE NOT d.kept) AS dropped"
            " FROM filter_decisions d JOIN samples s USING (sample_id),"
            " unnest(json_keys(s.attributes)) AS a(dimension)"
            " WHERE d.spec_hash = ? AND s.spec_hash = ? GROUP BY ALL ORDER BY d.filter, a.dimension, value",
            [spec_hash, spec_hash])

    def dropped_examples(self, spec_hash: str, per_filter: int = 3) -> list[dict[str, Any]]:
        """A few dropped samples per filter, with the reason (the first by class and sample index)."""
        return self._dicts(
            "SELECT filter, class, sample_id, reason, text FROM ("
            " SELECT d.filter, s.class, s.sample_id, d.reason, s.text, row_number() OVER"
            "  (PARTITION BY d.filter ORDER BY s.class, s.sample_index, s.choice_index) AS rn"
            " FROM filter_decisions d JOIN samples s USING (sample_id)"
            " WHERE d.spec_hash = ? AND s.spec_hash = ? AND NOT d.kept AND d.filter <> 'final')"
            " WHERE rn <= ? ORDER BY filter, class, rn", [spec_hash, spec_hash, per_filter])

    def kept_samples(self, spec_hash: str) -> list[dict[str, Any]]:
        """The samples that survived every filter: those with a kept ``final`` decision and no human
        ``reject``, with the reviewed class of a ``relabel``. Samples generated after the last filter stage
        have no decision yet and are not returned until it runs again."""
        return self._dicts(
            "SELECT s.* REPLACE (coalesce(h.label, s.class) AS class) FROM samples s JOIN filter_decisions d"
            " ON d.sample_id = s.sample_id AND d.spec_hash = s.spec_hash AND d.filter = 'final' AND d.kept"
            f" {self.review_join}"
            " WHERE s.spec_hash = ? AND h.decision IS DISTINCT FROM 'reject'"
            " ORDER BY s.class, s.sample_index, s.choice_index, s.sample_id", [spec_hash])

    def unfiltered_count(self, spec_hash: str) -> int:
        """Samples of the spec with no ``final`` filter decision (generated after the last filter stage)."""
        return self._x(
            "SELECT count(*) FROM samples s WHERE s.spec_hash = ? AND NOT EXISTS (SELECT 1 FROM filter_decisions d"
            " WHERE d.spec_hash = s.spec_hash AND d.sample_id = s.sample_id AND d.filter = 'final')",
            [spec_hash]).fetchone()[0]

    def cached_embeddings(self, model: str, text_hashes: Sequence[str]) -> dict[str, Any]:
        """``{text_hash: float32 vector}`` for the hashes already embedded with ``model``."""
        import numpy as np

        if not text_hashes:
            return {}
        found = self._with_keys("text_hash", text_hashes, lambda cur, wanted: cur.execute(
            f"SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN (SELECT * FROM {wanted})",
            [model]).fetchnumpy())
        if not len(found["text_hash"]):
            return {}
        vectors = np.stack(list(found["vector"])).astype(np.float32, copy=False)
        return dict(zip(found["text_hash"].tolist(), vectors))

    def save_embeddings(self, model: str, text_hashes: Sequence[str], vectors: Any) -> None:
        """Cache vectors (an ``(n, d)`` array) by text hash and model, in one transaction (existing rows stay)."""
        import numpy as np
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(text_hashes) != arr.shape[0]:
            raise ValueError(f"{len(text_hashes)} hashes for {arr.shape[0]} vectors")
        if not len(text_hashes):
            return
        data = pa.table({"text_hash": list(text_hashes), "model": [model] * len(text_hashes),
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), arr.shape[1])})
        self._write(lambda con: self._insert_arrow(con, "embeddings", "text_hash, model, vector::FLOAT[], now()",
                                                   data, or_ignore=True))

    def embedding_count(self, model: str | None = None) -> int:
        sql = "SELECT count(*) FROM embeddings" + (" WHERE model = ?" if model else "")
        return self._x(sql, [model] if model else []).fetchall()[0][0]

    def replace_metrics(self, spec_hash: str, rows: Sequence[tuple[str, str, float | None]],
                        scopes: Sequence[str], names: Sequence[str] | None = None,
                        run_id: str | None = None) -> None:
        """Replace a spec's metrics in ``scopes`` by ``rows`` (scope, name, value), in one transaction.

        A scope ending in ``:`` is a prefix (``'class:'`` matches every ``class:<name>``); with ``names``,
        only those metric names are deleted from the scopes (other stages may share a scope)."""
        exact = [s for s in scopes if not s.endswith(":")]
        prefixes = [s for s in scopes if s.endswith(":")]
        where = ("spec_hash = ? AND (scope IN (SELECT unnest(?::VARCHAR[]))"
                 " OR EXISTS (SELECT 1 FROM unnest(?::VARCHAR[]) AS p(prefix) WHERE starts_with(scope, p.prefix)))")
        params: list[Any] = [spec_hash, exact, prefixes]
        if names is not None:
            where += " AND name IN (SELECT unnest(?::VARCHAR[]))"
            params.append(list(names))
        t = now()
        def replace(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM metrics WHERE " + where, params)
            if rows:
                con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                                [(spec_hash, run_id, scope, name, value, t) for scope, name, value in rows])

        self._write(replace)

    def metrics(self, spec_hash: str, scope_prefix: str | None = None) -> list[dict[str, Any]]:
        """A spec's metrics (scope, name, value, run_id, created_at), optionally those whose scope starts so."""
        sql = "SELECT scope, name, value, run_id, created_at FROM metrics WHERE spec_hash = ?"
        params: list[Any] = [spec_hash]
        if scope_prefix is not None:
            sql += " AND starts_with(scope, ?)"
            params.append(scope_prefix)
        return self._dicts(sql + " ORDER BY scope, name", params)

    def latest_attribute_values(self, spec_hash: str) -> list[tuple[str, str, str]]:
        """(dimension, class, value) of the newest attribute version of a spec, kept values only
        (class ``''`` for class-independent dimensions)."""
        return self._x(
            "SELECT dimension, class, value FROM attribute_values WHERE spec_hash = ? AND kept AND version ="
            " (SELECT max(version) FROM attribute_values WHERE spec_hash = ?) ORDER BY dimension, class, value",
            [spec_hash, spec_hash]).fetchall()

    def asked_attribute_values(self, spec_hash: str) -> list[tuple[str, str, str, int]]:
        """(dimension, class, value, samples) as asked in a spec's prompts (``samples.attributes``)."""
        return self._x(
            "SELECT a.dimension, s.class, json_extract_string(s.attributes, a.dimension) AS value, count(*)"
            " FROM samples s, unnest(json_keys(s.attributes)) AS a(dimension) WHERE s.spec_hash = ?"
            " GROUP BY ALL ORDER BY 1, 2, 3", [spec_hash]).fetchall()

    def spec_records(self) -> list[dict[str, Any]]:
        """Every recorded spec: spec_hash, name, path (of the YAML file, may be empty), spec (the JSON text),
        created_at."""
        return self._dicts("SELECT spec_hash, name, path, spec, created_at FROM specs ORDER BY name, created_at", [])

    def spec_totals(self, spec_hash: str) -> dict[str, Any]:
        """Samples, refusals, classes and spend (requests, prompt/completion tokens, USD) behind a spec."""
        row = self._x(
            "SELECT (SELECT count(*) FROM samples WHERE spec_hash = $1),"
            " (SELECT count(*) FROM samples WHERE spec_hash = $1 AND is_refusal),"
            " (SELECT count(DISTINCT class) FROM samples WHERE spec_hash = $1),"
            " count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),"
            " coalesce(sum(cost_usd), 0)"
            " FROM llm_requests WHERE request_key IN (SELECT request_key FROM samples WHERE spec_hash = $1)",
            [spec_hash]).fetchone()
        keys = ("samples", "refusals", "classes", "requests", "prompt_tokens", "completion_tokens", "usd")
        return dict(zip(keys, row))

    def class_counts(self, spec_hash: str) -> dict[str, int]:
        """Samples per class of a spec."""
        return dict(self._x("SELECT class, count(*) FROM samples WHERE spec_hash = ? GROUP BY 1 ORDER BY 1",
                                     [spec_hash]).fetchall())

    # ---- training and evaluation ------------------------------------------------------------------

    def training_samples(self, spec_hash: str) -> list[dict[str, Any]]:
        """Every sample of a spec (refusals included; ``class`` is the reviewed one of a relabel) in the order
        it was generated (generated_at, then sample_index, choice_index), with the spend of the request
        behind it (``request_prompt_tokens``, ``request_completion_tokens``, ``request_cost_usd``: the
        request's totals from the cache, or the sample's own share where the request row is missing)."""
        return self._dicts(
            """
            SELECT s.sample_id, s.run_id, coalesce(h.label, s.class) AS class, s.text, s.sample_index,
                   s.choice_index, s.method, s.model,
                   s.request_key, s.is_refusal, s.generated_at, s.prompt_tokens, s.completion_tokens, s.cost_usd,
                   coalesce(r.prompt_tokens, s.prompt_tokens) AS request_prompt_tokens,
                   coalesce(r.completion_tokens, s.completion_tokens) AS request_completion_tokens,
                   coalesce(r.cost_usd, s.cost_usd) AS request_cost_usd
            FROM samples s LEFT JOIN llm_requests r USING (request_key)
            """ + self.review_join + """
            WHERE s.spec_hash = ? ORDER BY s.generated_at, s.sample_index, s.choice_index, s.sample_id""",
            [spec_hash],
        )

    def save_evaluations(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert evaluation rows (dicts keyed by the ``evaluations`` columns; ``per_class``, ``confusion``
        and ``details`` as JSON-serialisable values) in one transaction; return how many."""
        columns = ["eval_id", "spec_hash", "method", "trainer", "train_source", "test_set", "n_train",
                   "budget_fraction", "requests", "tokens", "cost_usd", "accuracy", "macro_f1", "micro_f1",
                   "per_class", "confusion", "details", "snapshot_id", "dataset_version"]
        created = now()
        values = [tuple(json.dumps(r.get(c)) if c in ("per_class", "confusion", "details") else r.get(c)
                        for c in columns) + (created,) for r in rows]
        if not values:
            return 0
        self._write(lambda con: con.executemany(f"INSERT INTO evaluations ({', '.join(columns)}, created_at)"
                                                f" VALUES ({', '.join('?' * (len(columns) + 1))})", values))
        return len(values)

    def evaluations(self, spec_hashes: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Evaluation rows (all, or of ``spec_hashes``) with the spec's name, JSON columns decoded, oldest
        first."""
        where = " WHERE e.spec_hash IN (SELECT unnest(?::VARCHAR[]))" if spec_hashes is not None else ""
        rows = self._dicts(
            "SELECT e.*, s.name AS spec_name FROM evaluations e LEFT JOIN specs s USING (spec_hash)" + where
            + " ORDER BY e.created_at, e.train_source, e.budget_fraction",
            [list(spec_hashes)] if spec_hashes is not None else [],
        )
        for row in rows:
            for key in ("per_class", "confusion", "details"):
                if isinstance(row.get(key), str):
                    row[key] = json.loads(row[key])
        return rows

    # ---- what stages hand on ----------------------------------------------------------------------

    def save_asset_value(self, asset: str, partition: str, value: bytes) -> None:
        """The serialized output of ``asset`` for ``partition`` (replacing the previous one)."""
        def replace(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM asset_values WHERE asset = ? AND partition = ?", [asset, partition])
            con.execute("INSERT INTO asset_values VALUES (?, ?, ?, ?)", [asset, partition, value, now()])

        self._write(replace)

    def asset_value(self, asset: str, partition: str) -> bytes | None:
        row = self._x("SELECT value FROM asset_values WHERE asset = ? AND partition = ?",
                               [asset, partition]).fetchone()
        return bytes(row[0]) if row else None

    # ---- overview --------------------------------------------------------------------------------

    def overview(self) -> list[dict[str, Any]]:
        """One row per spec: runs, samples, classes, spend."""
        return self._dicts(
            """
            SELECT s.name, s.spec_hash, s.created_at,
              (SELECT count(*) FROM runs r WHERE r.spec_hash = s.spec_hash) AS runs,
              (SELECT any_value(status ORDER BY started_at DESC) FROM runs r WHERE r.spec_hash = s.spec_hash)
                AS last_status,
              (SELECT count(*) FROM samples x WHERE x.spec_hash = s.spec_hash) AS samples,
              (SELECT count(DISTINCT class) FROM samples x WHERE x.spec_hash = s.spec_hash) AS classes,
              (SELECT count(*) FROM samples x WHERE x.spec_hash = s.spec_hash AND is_refusal) AS refusals,
              coalesce((SELECT sum(r.cost_usd) FROM runs r WHERE r.spec_hash = s.spec_hash), 0) AS cost_usd,
              coalesce((SELECT sum(r.prompt_tokens + r.completion_tokens) FROM runs r
                        WHERE r.spec_hash = s.spec_hash), 0) AS tokens
            FROM specs s ORDER BY s.name, s.created_at""",
            [],
        )

    def table_counts(self) -> dict[str, int]:
        tables = [r[0] for r in self._x(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'lake' AND table_schema = 'main'"
            " ORDER BY 1").fetchall()]
        return {t: self._x(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}

    def _dicts(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        cur = self._x(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    # ---- dataset versions ----------------------------------------------------------------------

    def snapshot_id(self) -> int:
        """The DuckLake snapshot this connection reads (the newest, unless the store is pinned)."""
        return self._x("SELECT id FROM lake.current_snapshot()").fetchone()[0]

    def record_version(self, run_id: str | None = None, spec_hash: str | None = None) -> None:
        """Record (or bring up to date) the dataset version a run leaves: the snapshot that holds all it wrote,
        with its sample counts. By ``run_id``, or the newest version of ``spec_hash`` (its filter stage
        re-ran); nothing where there is no such run or version."""
        self._write(lambda con: self._record_version(con, run_id, spec_hash))

    @staticmethod
    def _record_version(con: duckdb.DuckDBPyConnection, run_id: str | None, spec_hash: str | None) -> None:
        """:meth:`record_version` inside the caller's write transaction."""
        if run_id is not None:
            row = con.execute("SELECT spec_name, spec_hash, run_id FROM runs WHERE run_id = ?", [run_id]).fetchone()
        else:
            row = con.execute("SELECT spec_name, spec_hash, run_id FROM dataset_versions WHERE spec_hash = ?"
                              " ORDER BY version DESC LIMIT 1", [spec_hash]).fetchone()
        if row is not None:
            Store._save_version(con, *row)

    @staticmethod
    def _save_version(con: duckdb.DuckDBPyConnection, name: str, spec_hash: str, run_id: str,
                      snapshot: int | None = None, filtered: bool = True) -> None:
        """Record (or update) the version run ``run_id`` of spec ``name`` leaves, at ``snapshot`` (default: the
        current one), with the final filter's count of kept samples if ``filtered`` (else none: not filtered).
        A new version takes one statement (its number and counts computed in it), an update two."""
        at = "coalesce($4, (SELECT id FROM lake.current_snapshot()))"
        samples = "(SELECT count(*) FROM samples WHERE spec_hash = $2)"
        kept = ("(SELECT CASE WHEN count(*) > 0 THEN count(*) FILTER (WHERE kept) END FROM filter_decisions"
                " WHERE spec_hash = $2 AND filter = 'final')" if filtered else "NULL::BIGINT")
        params = [name, spec_hash, run_id, snapshot, now()]
        inserted = con.execute(
            f"INSERT INTO dataset_versions SELECT $1, coalesce(max(version), 0) + 1, $2, $3, {at}, {samples},"
            f" {kept}, $5, $5 FROM dataset_versions WHERE spec_name = $1"
            " HAVING count(*) FILTER (WHERE run_id = $3) = 0", params).fetchone()[0]
        if not inserted:  # the run has a version already: bring it up to date
            con.execute(f"UPDATE dataset_versions SET snapshot_id = {at}, samples = {samples}, kept = {kept},"
                        " updated_at = $5 WHERE run_id = $3 AND spec_name = $1", params)

    def versions(self, spec_name: str | None = None) -> list[dict[str, Any]]:
        """Dataset versions (all, or one spec's), oldest first: version, snapshot, time, run, rows."""
        where = " WHERE spec_name = ?" if spec_name else ""
        return self._dicts("SELECT * FROM dataset_versions" + where + " ORDER BY spec_name, version",
                           [spec_name] if spec_name else [])

    def version_snapshot(self, spec_name: str, version: int) -> int:
        """The snapshot of a spec's dataset version (a clear error naming the versions there are)."""
        found = self._x("SELECT snapshot_id FROM dataset_versions WHERE spec_name = ? AND version = ?",
                        [spec_name, version]).fetchone()
        if found is None:
            have = [str(v["version"]) for v in self.versions(spec_name)]
            raise StoreError(f"{spec_name}: no version {version} in {self.path}"
                             f" (versions: {', '.join(have) or 'none yet'})")
        return int(found[0])

    def version_of_snapshot(self, spec_name: str, snapshot: int) -> int | None:
        """The newest version of a spec at or before ``snapshot`` (what a pinned reader sees)."""
        row = self._x("SELECT max(version) FROM dataset_versions WHERE spec_name = ? AND snapshot_id <= ?",
                      [spec_name, snapshot]).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    # ---- human review ----------------------------------------------------------------------------

    def save_review(self, spec_hash: str, sample_id: str, decision: str, reviewer: str, label: str | None = None,
                    note: str | None = None) -> None:
        """Record a reviewer's decision on one sample (``keep``, ``reject`` or ``relabel`` to ``label``); the
        newest decision on a generated text wins."""
        if decision not in REVIEW_DECISIONS:
            raise ValueError(f"decision {decision!r}: use one of {', '.join(REVIEW_DECISIONS)}")
        if decision == "relabel" and not label:
            raise ValueError("a relabel needs the new label")
        row = self._x("SELECT request_key, choice_index FROM samples WHERE spec_hash = ? AND sample_id = ?",
                               [spec_hash, sample_id]).fetchone()
        if row is None:
            raise KeyError(f"no sample {sample_id} of spec {spec_hash}")
        self._exec("INSERT INTO review_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [spec_hash, sample_id, row[0], row[1], decision, label if decision == "relabel" else None,
                          note or None, reviewer, now()])

    def review_decisions(self, spec_hash: str) -> dict[str, dict[str, Any]]:
        """``{sample_id: newest decision}`` (decision, label, note, reviewer, created_at) for a spec's samples."""
        rows = self._dicts(
            f"SELECT s.sample_id, h.* EXCLUDE (request_key, choice_index) FROM samples s {self.review_join}"
            " WHERE s.spec_hash = ? AND h.decision IS NOT NULL",
            [spec_hash])
        return {r.pop("sample_id"): r for r in rows}

    def review_samples(self, spec_hash: str) -> list[dict[str, Any]]:
        """A spec's samples for review: text, class, attributes (decoded), model, the ``final`` filter outcome
        (``kept``: None before the filters ran) and the dropping filter, in canonical order."""
        rows = self._dicts(
            "SELECT s.sample_id, s.class, s.text, s.attributes, s.model, s.method, s.is_refusal, d.kept,"
            " d.reason AS filter_reason FROM samples s LEFT JOIN filter_decisions d ON d.sample_id = s.sample_id"
            " AND d.spec_hash = s.spec_hash AND d.filter = 'final'"
            " WHERE s.spec_hash = ? ORDER BY s.class, s.sample_index, s.choice_index, s.sample_id", [spec_hash])
        for r in rows:
            r["attributes"] = json.loads(r["attributes"]) if isinstance(r["attributes"], str) else r["attributes"]
        return rows

    def save_attribute_edit(self, spec_hash: str, dimension: str, class_name: str, value: str, action: str,
                            reviewer: str, new_value: str | None = None, note: str | None = None) -> None:
        """Record a reviewer's edit of an attribute value (``drop`` or ``rename`` to ``new_value``)."""
        self._exec("INSERT INTO attribute_edits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [spec_hash, dimension, class_name, value, action, new_value, note or None, reviewer, now()])

    def attribute_edits(self, spec_hash: str) -> list[dict[str, Any]]:
        return self._dicts("SELECT dimension, class, value, action, new_value, note, reviewer, created_at"
                           " FROM attribute_edits WHERE spec_hash = ? ORDER BY created_at", [spec_hash])


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
