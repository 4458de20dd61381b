"""The DuckDB store: schema versioning, crash safety, idempotent writes, export."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pytest

from factory.spec import parse_spec
from factory.store import SCHEMA_VERSION, PromptRecord, RequestRecord, SampleRecord, Store, StoreError
from factory.store.store import FEW_KEYS

SPEC = parse_spec("name: tiny\ndomain: note\nclasses: [a, b]\n")


def _sample(run_id: str, sample_id: str = "s1", text: str = "hello world") -> SampleRecord:
    return SampleRecord(sample_id=sample_id, spec_hash=SPEC.hash, run_id=run_id, class_="a", text=text,
                        attributes="{}", seed=7, sample_index=0, choice_index=0, method="simprompt",
                        prompt_hash="p1", request_key="k1", model="m", params="{}", prompt_tokens=10,
                        completion_tokens=3, cost_usd=0.5, is_refusal=False,
                        generated_at=datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_newer_schema_fails_clearly(db: Path) -> None:
    with Store(db) as store:
        store._exec("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
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
        records = [PromptRecord(prompt_hash="p1", method="generate", messages="[]"),
                   RequestRecord(request_key="k1", model="m", params="{}", prompt_hash="p1", purpose="generate",
                                 choices=json.dumps(["hello world"]), finish_reasons="[]", prompt_tokens=10,
                                 completion_tokens=3, cost_usd=0.5, latency_s=0.1, attempts=1),
                   _sample(run_id)]
        for _ in range(2):
            store.save_completions(records)
        assert store.table_counts()["samples"] == 1
        assert store.cached_requests(["k1", "nope"])["k1"].choices == ["hello world"]
        store.publish()
        many = [f"absent-{i}" for i in range(FEW_KEYS)] + ["k1", "it's"]  # past FEW_KEYS: bound as an Arrow table
        assert store.cached_requests(many).keys() == store.cached_requests(many[-2:]).keys() == {"k1"}
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


@dataclass(frozen=True, kw_only=True)
class _ShuffledPrompt:
    """A prompts row whose fields come in another order than the table's columns."""

    TABLE: ClassVar[str] = "prompts"
    messages: str
    method: str
    prompt_hash: str


def test_records_are_inserted_by_column_name(db: Path) -> None:
    with Store(db) as store:
        run_id = store.start_run(SPEC)
        shuffled: Any = _ShuffledPrompt(messages='["m"]', method="generate", prompt_hash="p1")
        store.save_completions([shuffled, _sample(run_id, "s1"), _sample(run_id, "s2", "second")])
        assert store.sql("SELECT prompt_hash, method, messages FROM prompts") == [
            ("p1", "generate", '["m"]')]
        got = store.sql("SELECT sample_id, class, text, seed, is_refusal FROM samples ORDER BY 1")
        assert got == [("s1", "a", "hello world", 7, False), ("s2", "a", "second", 7, False)]
        # Idempotent: the same rows again change nothing, a new one is added.
        store.save_completions([_sample(run_id, "s1", "changed"), _sample(run_id, "s3")])
        assert [r[0] for r in store.sql("SELECT text FROM samples ORDER BY sample_id")] == [
            "hello world", "second", "hello world"]


def test_an_embedded_store_reads_where_it_is_mounted(tmp_path: Path) -> None:
    """A job pod mounts the store's folder at another path: its data is its own data/ folder there (a copy
    or a move reads the same rows, at the same snapshot)."""
    import shutil

    from factory.store.lake import StoreLocation, attach

    with Store(tmp_path / "here"):
        pass
    con = attach(StoreLocation.parse(tmp_path / "here"))
    con.execute("CREATE TABLE big AS SELECT range AS i FROM range(50000)")  # enough for a Parquet file
    con.close()
    with Store(tmp_path / "here") as store:
        snapshot = store.snapshot_id()
    assert list((tmp_path / "here" / "data").rglob("*.parquet"))
    shutil.move(tmp_path / "here", tmp_path / "mounted")
    with Store(tmp_path / "mounted", snapshot=snapshot) as store:
        assert store.sql("SELECT count(*), sum(i) FROM big") == [(50000, 1249975000)]


def test_store_threads_are_fixed_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACTORY_STORE_THREADS", raising=False)
    with Store(tmp_path / "default") as store:
        assert store.sql("SELECT current_setting('threads')") == [(1,)]
    monkeypatch.setenv("FACTORY_STORE_THREADS", "2")
    with Store(tmp_path / "two") as store:
        assert store.sql("SELECT current_setting('threads')") == [(2,)]
    monkeypatch.setenv("FACTORY_STORE_THREADS", "two")
    with pytest.raises(StoreError, match="FACTORY_STORE_THREADS='two': expected a whole number"):
        Store(tmp_path / "bad")
    done = subprocess.run([sys.executable, "-m", "factory.cli", "show", "--store", str(tmp_path / "default")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "FACTORY_STORE_THREADS='two'" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_background_publishes_wait_in_proportion_to_their_cpu() -> None:
    from factory.store.journal import (ASSUMED_PUBLISH_CPU_S, PUBLISH_MAX_INTERVAL_S, PUBLISH_MIN_INTERVAL_S,
                                       publish_wait)

    assert publish_wait(0.0) == PUBLISH_MIN_INTERVAL_S  # nothing to publish, or a cheap publish: the shortest wait
    assert publish_wait(0.1) == pytest.approx(20.0)  # ~0.1 s of CPU is 0.5% of a 20 s wait
    assert publish_wait(5.0) == PUBLISH_MAX_INTERVAL_S  # never longer: other readers see samples within it
    assert publish_wait(ASSUMED_PUBLISH_CPU_S) > PUBLISH_MIN_INTERVAL_S  # a short job does not pay for a first one


def _request(key: str, prompt_tokens: int, completion_tokens: int, usd: float) -> RequestRecord:
    return RequestRecord(request_key=key, model="m", params="{}", prompt_hash="p1", purpose="generate",
                         choices=json.dumps(["x"]), finish_reasons="[]", prompt_tokens=prompt_tokens,
                         completion_tokens=completion_tokens, cost_usd=usd, latency_s=0.1, attempts=1)


def test_a_run_closes_with_its_totals_and_a_version_that_the_filter_stage_updates(db: Path) -> None:
    """The closing commit sums the requests behind the run's own samples (not another run's, nor a request
    without a sample) and records the next version; a store that did not start the run closes it too."""
    with Store(db) as store:
        store.record_spec(SPEC, "yaml")
        first = store.start_run(SPEC)
        store.save_completions([PromptRecord(prompt_hash="p1", method="generate", messages="[]"),
                                _request("k1", 10, 3, 0.5), _request("k2", 20, 4, 0.25), _request("k3", 1, 1, 9.0),
                                _sample(first, "s1"), replace(_sample(first, "s2", "two"), request_key="k2")])
        store.finish_run(first, "done", cached=1)
        second = store.start_run(SPEC)
    with Store(db) as other:  # closes a run it did not start: its spec is read from the run's row
        other.save_completions([_request("k4", 7, 2, 1.0), replace(_sample(second, "s3"), request_key="k4")])
        other.finish_run(second, "budget_stopped", "max_requests=3 reached")
        runs = {r["run_id"]: r for r in other.runs("tiny")}
        got = [(r["status"], r["requests"], r["prompt_tokens"], r["completion_tokens"], r["cost_usd"], r["cached"])
               for r in (runs[first], runs[second])]
        assert got == [("done", 2, 30, 7, 0.75, 1), ("budget_stopped", 1, 7, 2, 1.0, 0)]
        assert runs[second]["message"] == "max_requests=3 reached"
        versions = [(v["version"], v["run_id"], v["samples"], v["kept"]) for v in other.versions("tiny")]
        assert versions == [(1, first, 2, None), (2, second, 3, None)]
        closed_at = other.versions("tiny")[1]["snapshot_id"]
        other.replace_filter_decisions(SPEC.hash, [("s1", "final", True, None), ("s3", "final", False, "dup")])
        (*_, newest) = other.versions("tiny")
        assert (newest["version"], newest["samples"], newest["kept"]) == (2, 3, 1)  # updated, not added
        assert newest["snapshot_id"] > closed_at  # a snapshot that holds the decisions
        with pytest.raises(StoreError, match="no run 'nope'"):
            other.finish_run("nope", "done")
