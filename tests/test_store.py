"""The DuckDB store: schema versioning, crash safety, idempotent writes, export."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from factory.spec import parse_spec
from factory.store import SCHEMA_VERSION, Store, StoreError

SPEC = parse_spec("name: tiny\ndomain: note\nclasses: [a, b]\n")


def test_newer_schema_fails_clearly(db: Path) -> None:
    Store(db).close()
    con = duckdb.connect(str(db))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    con.close()
    with pytest.raises(StoreError, match=f"schema v{SCHEMA_VERSION + 1}, written by a newer attrfactory"):
        Store(db)


def test_read_only_needs_an_existing_store(db: Path) -> None:
    with pytest.raises(StoreError, match="no store here yet"):
        Store(db, read_only=True)
    assert not db.exists()


def test_crash_mid_transaction_loses_nothing_committed(db: Path) -> None:
    """A process killed (SIGKILL) inside a stage's transaction: the earlier stage survives, the open one
    leaves no trace."""
    script = textwrap.dedent(f"""
        import os, signal
        from factory.spec import parse_spec
        from factory.store import Store
        spec = parse_spec("name: tiny\\ndomain: note\\nclasses: [a, b]\\n")
        store = Store({str(db)!r})
        with store.transaction():
            store.record_spec(spec, "yaml")
            run_id = store.start_run(spec)
        store.con.execute("BEGIN TRANSACTION")
        store.con.execute("INSERT INTO metrics VALUES ('x', NULL, 'overall', 'half-written', 1.0, now())")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    with Store(db) as store:
        counts = store.table_counts()
        assert counts["specs"] == 1 and counts["runs"] == 1
        assert counts["metrics"] == 0


def test_completions_are_idempotent_and_export(db: Path, tmp_path: Path) -> None:
    with Store(db) as store:
        store.record_spec(SPEC, "yaml")
        run_id = store.start_run(SPEC)
        request = ("k1", "m", "{}", "p1", "generate", json.dumps(["hello world"]), "[]", 10, 3, 0.5, 0.1, 1)
        sample = ("s1", SPEC.hash, run_id, "a", "hello world", "{}", 7, 0, 0, "simprompt", "p1", "k1", "m", "{}",
                  10, 3, 0.5, False, "2026-01-01T00:00:00Z")
        for _ in range(2):
            store.save_completions([("p1", "generate", "[]")], [request], [sample])
        assert store.table_counts()["samples"] == 1
        assert store.cached_requests(["k1", "nope"])["k1"].choices == ["hello world"]
        assert store.spend_for_spec(SPEC.hash) == {"requests": 1, "tokens": 13, "usd": 0.5}
        store.finish_run(run_id, "done")
        assert store.runs("tiny")[0]["cost_usd"] == 0.5
        out = tmp_path / "tiny.jsonl"
        assert store.export_samples(SPEC.hash, out, "jsonl") == 1
        row = json.loads(out.read_text().splitlines()[0])
        assert row["text"] == "hello world" and row["label"] == "a" and row["request_key"] == "k1"
        assert row["sample_id"] == "s1" and row["seed"] == 7
        pq = tmp_path / "tiny.parquet"
        store.export_samples(SPEC.hash, pq, "parquet")
        assert duckdb.sql(f"SELECT count(*) FROM '{pq}'").fetchall()[0][0] == 1
