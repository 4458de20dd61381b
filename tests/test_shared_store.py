"""Many runs, one store: concurrent `factory run` processes on the real offline model, readers during runs,
one run per spec, kill -9 and resume, dataset versions, compaction, migration, and no doubled rows under
concurrent writers; on the embedded (SQLite) catalog and on a real PostgreSQL catalog."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from factory.spec import load_spec, parse_spec
from factory.store import PromptRecord, RequestRecord, SampleRecord, Store, StoreError
from factory.store.housekeeping import compact, data_files
from factory.store.leases import Lease, LeaseHeld, holders
from journal_rows import journaled

SPEC = textwrap.dedent("""\
    name: NAME
    domain: short news headline
    classes: [sports, business]
    attributes:
      style: {values: [breaking news, analysis]}
    similar_classes: {k: 0}
    generation: {method: attrprompt, base_url: BASE, max_tokens: 12, max_concurrency: 2}
    budget: {samples_per_class: SPC}
    """)


def write_spec(folder: Path, name: str, base_url: str, spc: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.replace("NAME", name).replace("BASE", base_url).replace("SPC", str(spc)))
    return path


@pytest.fixture(params=["embedded", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh store: an embedded folder, or a PostgreSQL catalog (the real server) with a data folder."""
    if request.param == "embedded":
        yield str(tmp_path / "store")
        return
    conninfo = request.getfixturevalue("postgres_db")
    monkeypatch.setenv("FACTORY_DATA_PATH", str(tmp_path / "lake-data"))
    monkeypatch.setenv("FACTORY_JOURNAL_DIR", str(tmp_path / "journals"))
    yield f"postgres:{conninfo}"


def factory(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FACTORY_EXPORT_DIR": str(cwd / "exports")}
    return subprocess.Popen([sys.executable, "-m", "factory.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str], timeout: float = 400) -> tuple[int, str]:
    out, errs = proc.communicate(timeout=timeout)
    return proc.returncode, out + errs


def sent(output: str) -> int:
    found = re.search(r"requests sent (\d+)", output)
    assert found, output
    return int(found.group(1))


def counts(url: str) -> dict[str, int]:
    with Store(url, read_only=True) as store:
        return store.table_counts()


VARYING = {"writer_token", "leases", "meta"}  # bookkeeping, not data
# one row per distinct text: how many of a real model's texts coincide changes between two passes of the same
# requests (its batching and prompt cache change its numerics), so this table is checked for duplicates instead
TEXT_DEPENDENT = {"embeddings"}


@pytest.mark.llm
def test_four_concurrent_runs_leave_what_sequential_runs_leave(llm_server, store_url: str, tmp_path: Path) -> None:
    names = ["north", "south", "east", "west"]
    specs = [write_spec(tmp_path / "specs", n, llm_server.base_url) for n in names]
    procs = [factory("run", str(p), "--store", store_url, "--no-progress", "--samples", "0", cwd=tmp_path)
             for p in specs]
    results = [finish(p) for p in procs]
    for code, output in results:
        assert code == 0, output
    together = counts(store_url)
    alone = tmp_path / "sequential"
    for p in specs:
        code, output = finish(factory("run", str(p), "--store", str(alone), "--no-progress", "--samples", "0",
                                      cwd=tmp_path))
        assert code == 0, output
    apart = counts(str(alone))
    assert {t: n for t, n in together.items() if t not in VARYING | TEXT_DEPENDENT} == {
        t: n for t, n in apart.items() if t not in VARYING | TEXT_DEPENDENT}
    with Store(store_url, read_only=True) as store:
        for table, key in (("samples", "sample_id"), ("llm_requests", "request_key"), ("prompts", "prompt_hash"),
                           ("specs", "spec_hash"), ("runs", "run_id"), ("embeddings", "(model, text_hash)")):
            assert store.sql(f"SELECT count(*) = count(DISTINCT {key}) FROM {table}") == [(True,)], table
        assert {v["spec_name"] for v in store.versions()} == set(names)
        assert together["samples"] == 4 * 2 * 2 and together["leases"] == 0


@pytest.mark.llm
def test_readers_and_a_second_run_of_the_same_spec_during_a_run(llm_server, tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    busy = write_spec(tmp_path / "specs", "busy", llm_server.base_url, spc=12)
    first = factory("run", str(busy), "--store", url, "--no-progress", "--samples", "0", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the run holds its spec's lease
        try:
            with Store(url, read_only=True) as store:
                if any(h["spec_name"] == "busy" for h in holders(store)):
                    break
        except StoreError:  # not created yet
            pass
        assert first.poll() is None, finish(first)[1]
        time.sleep(0.2)
    else:
        pytest.fail("the run never took its lease")
    show = subprocess.run([sys.executable, "-m", "factory.cli", "show", "--store", url], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr
    assert "running: busy" in show.stdout
    export = subprocess.run([sys.executable, "-m", "factory.cli", "export", str(busy), "--store", url, "-o",
                             str(tmp_path / "during.jsonl")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr
    code, output = finish(factory("run", str(busy), "--store", url, "--no-progress", cwd=tmp_path))
    assert code == 1 and "spec 'busy' is being run by" in output and "Traceback" not in output, output
    code, output = finish(first)
    assert code == 0, output


@pytest.mark.llm
def test_kill_9_of_one_of_two_runs_then_rerun_resends_only_the_missing(llm_server, store_url: str,
                                                                     tmp_path: Path) -> None:
    victim = write_spec(tmp_path / "specs", "victim", llm_server.base_url, spc=16)
    other = write_spec(tmp_path / "specs", "other", llm_server.base_url, spc=3)
    spec = load_spec(victim)
    runs = [factory("run", str(p), "--store", store_url, "--no-progress", "--samples", "0", cwd=tmp_path)
            for p in (victim, other)]
    deadline = time.monotonic() + 200
    journaled = 0
    while time.monotonic() < deadline and journaled < 4:  # some completions persisted (journal or lake)
        time.sleep(0.3)
        assert runs[0].poll() is None, finish(runs[0])[1]
        journaled = _persisted_anywhere(store_url, spec.hash)
    assert journaled >= 4, "the run persisted nothing in time"
    runs[0].send_signal(signal.SIGKILL)
    runs[0].wait()
    code, output = finish(runs[1])
    assert code == 0, output
    with Store(store_url) as store:  # a writer publishes what the dead run journaled
        before = {k for (k,) in store.sql("SELECT request_key FROM llm_requests")}
    planned = 2 * 16  # n = 1 sample per request
    code, output = finish(factory("run", str(victim), "--store", store_url, "--no-progress", "--samples", "0",
                                  cwd=tmp_path))
    assert code == 0, output
    with Store(store_url, read_only=True) as store:
        keys = {k for (k,) in store.sql("SELECT DISTINCT request_key FROM samples WHERE spec_hash = ?", [spec.hash])}
        persisted = len(keys & before)  # the victim's requests that were persisted when it died
        assert 0 < persisted < planned
        assert sent(output) == planned - persisted
        assert store.sample_count(spec.hash) == planned
        assert store.sql("SELECT count(*) = count(DISTINCT sample_id) FROM samples") == [(True,)]


def _persisted_anywhere(url: str, spec_hash: str) -> int:
    """Samples of a spec in the lake plus in any journal segment (read without taking its lock)."""
    total = 0
    if url.startswith("postgres:") or (Path(url) / "catalog.sqlite").exists():
        try:
            with Store(url, read_only=True) as store:
                total += store.sample_count(spec_hash)
        except StoreError:
            pass
    folder = Path(os.environ.get("FACTORY_JOURNAL_DIR") or Path(url) / "journals") if not url.startswith(
        "postgres:") else Path(os.environ["FACTORY_JOURNAL_DIR"])
    return total + journaled(folder, "samples", lambda row: row["spec_hash"] == spec_hash)


# ---- the store itself, without the model ----------------------------------------------------------

TINY = parse_spec("name: tiny\ndomain: note\nclasses: [a, b]\n")


def _records(keys: range, prefix: str = "k") -> list:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    out: list = []
    for i in keys:
        key = f"{prefix}{i}"
        out += [PromptRecord(prompt_hash=f"p{i}", method="generate", messages="[]"),
                RequestRecord(request_key=key, model="m", params="{}", prompt_hash=f"p{i}", purpose="generate",
                              choices=json.dumps([f"text {i}"]), prompt_tokens=5, completion_tokens=2, cost_usd=0.0),
                SampleRecord(sample_id=f"s-{key}", spec_hash=TINY.hash, run_id="r", class_="a", text=f"text {i}",
                             attributes="{}", seed=i, sample_index=i, choice_index=0, method="simprompt",
                             prompt_hash=f"p{i}", request_key=key, model="m", params="{}", prompt_tokens=5,
                             completion_tokens=2, cost_usd=0.0, is_refusal=False, generated_at=at)]
    return out


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_shared_store import _records
    from factory.store import Store
    with Store({url!r}) as store:
        for start in range(0, 200, 20):  # overlapping keys: every writer writes the same 200
            store.save_completions(_records(range(start, start + 20)))
            store.publish()
""")


def test_concurrent_writers_of_the_same_keys_leave_one_row_each(store_url: str) -> None:
    Store(store_url).close()
    script = WRITER.format(tests=str(Path(__file__).parent), url=store_url)
    procs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        _, errs = p.communicate(timeout=300)
        assert p.returncode == 0, errs
    with Store(store_url, read_only=True) as store:
        for table, key in (("samples", "sample_id"), ("llm_requests", "request_key"), ("prompts", "prompt_hash")):
            assert store.sql(f"SELECT count(*), count(DISTINCT {key}) FROM {table}") == [(200, 200)], table


def test_a_journal_left_by_a_killed_process_is_published_by_the_next_writer(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_shared_store import _records
        from factory.store import Store
        store = Store({url!r})
        store.save_completions(_records(range(30)))  # journaled (durable), not yet published
        os.write(store._journal.open.fd, b'{{"table": "samples", "sample_id": "torn", "spec')  # killed mid-append
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    assert list((tmp_path / "store" / "journals").glob("*.jsonl"))
    with Store(url, read_only=True) as store:
        assert store.sample_count(TINY.hash) == 0  # readers see only what was published
    with Store(url) as store:
        assert store.sample_count(TINY.hash) == 30  # the torn line (an append that was not durable) cut off
        assert store.sql("SELECT count(*) FROM samples WHERE sample_id = 'torn'") == [(0,)]
        assert store.cached_requests(["k0", "k29"]).keys() == {"k0", "k29"}
    assert not list((tmp_path / "store" / "journals").glob("*.jsonl"))


def test_an_empty_segment_of_a_dead_process_is_removed_without_a_commit(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    with Store(url) as store:
        before = store.snapshot_id()
    empty = tmp_path / "store" / "journals" / "dead.000000.jsonl"
    empty.parent.mkdir(exist_ok=True)
    empty.write_bytes(b"")
    with Store(url) as store:
        assert store.snapshot_id() == before
    assert not empty.exists()


def test_a_live_journal_is_left_to_its_writer_by_another_store_of_the_same_process(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    with Store(url) as first:
        first.save_completions(_records(range(5)))
        with Store(url) as second:  # its recovery finds the first's segment locked: alive, not an orphan
            assert second.sample_count(TINY.hash) == 0
        assert first.cached_requests(["k4"]).keys() == {"k4"}
    with Store(url, read_only=True) as store:
        assert store.sample_count(TINY.hash) == 5


def test_a_duckdb_journal_of_an_older_attrfactory_is_published(tmp_path: Path) -> None:
    """Before the JSON-lines journal, a journal was a DuckDB file of the three tables: one a crashed run left
    behind is published too (k0-k3 in the lake already, k2-k5 in the old journal)."""
    url = str(tmp_path / "store")
    with Store(url) as store:
        store.save_completions(_records(range(4)))
    with Store(tmp_path / "other") as other:  # the old journal's rows, copied out of another store's lake
        other.save_completions(_records(range(2, 6)))
        other.publish()
        other.con.execute(f"ATTACH '{tmp_path / 'store' / 'journals' / 'old.duckdb'}' AS old")
        for table in ("prompts", "llm_requests", "samples"):
            other.con.execute(f"CREATE TABLE old.{table} AS SELECT * FROM lake.{table}")
        other.con.execute("DETACH old")
    with Store(url) as store:
        assert store.sample_count(TINY.hash) == 6
        assert store.sql("SELECT count(*) = count(DISTINCT sample_id) FROM samples") == [(True,)]
    assert not list((tmp_path / "store" / "journals").iterdir())


def test_a_store_reads_its_own_journal_and_the_cache_sees_it(db: Path) -> None:
    with Store(db) as store:
        store.save_completions(_records(range(3)))
        assert store.cached_requests(["k1"])["k1"].choices == ["text 1"]
        assert store.sample_count(TINY.hash) == 3


def test_export_of_version_n_after_version_n_plus_1(db: Path, tmp_path: Path) -> None:
    with Store(db) as store:
        store.record_spec(TINY, "yaml")
        first = store.start_run(TINY)
        store.save_completions(_records(range(5)))
        store.finish_run(first, "done")
        second = store.start_run(TINY)
        store.save_completions(_records(range(5, 12)))
        store.finish_run(second, "done")
        versions = store.versions("tiny")
        assert [(v["version"], v["run_id"], v["samples"]) for v in versions] == [(1, first, 5), (2, second, 12)]
        snapshot = store.version_snapshot("tiny", 1)
        with pytest.raises(StoreError, match="no version 3 .*versions: 1, 2"):
            store.version_snapshot("tiny", 3)
    with Store(db, snapshot=snapshot) as old:
        out = tmp_path / "v1.jsonl"
        assert old.export_samples(TINY.hash, out, "jsonl") == 5
        assert sorted(json.loads(line)["sample_id"] for line in out.read_text().splitlines()) == sorted(
            f"s-k{i}" for i in range(5))
        with pytest.raises(StoreError, match="read-only"):
            old.record_spec(TINY, "yaml")
    with Store(db) as store:  # compaction keeps every version's snapshot
        before = data_files(store)
        done = compact(store, keep_hours=0)
        assert done.expired > 0 and data_files(store) <= before
    with Store(db, snapshot=snapshot) as old:
        assert old.sample_count(TINY.hash) == 5


def test_a_run_closes_in_the_commit_that_publishes_its_last_rows_and_records_its_version(db: Path) -> None:
    with Store(db) as store:
        store.record_spec(TINY, "yaml")
        run = store.start_run(TINY)
        store.save_completions(_records(range(5)))
        before = store.snapshot_id()
        store.finish_run(run, "done")
        (version,) = store.versions("tiny")
        assert store.snapshot_id() == before + 1 == version["snapshot_id"]  # one commit: rows, run, version
        assert version["kept"] is None and version["samples"] == 5  # not filtered yet
    with Store(db, snapshot=version["snapshot_id"]) as old:
        assert old.sample_count(TINY.hash) == 5 and old.runs("tiny")[0]["status"] == "done"


def test_a_version_is_recorded_again_where_another_commit_lands_inside_the_closing_one(
        postgres_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version names the snapshot its closing commit makes, predicted inside that commit; a commit that
    takes no writer token (compaction's) can land in between on a PostgreSQL catalog (on SQLite's, commits
    wait for each other), and then the version is recorded again, at a snapshot that holds the run."""
    monkeypatch.setenv("FACTORY_DATA_PATH", str(tmp_path / "lake-data"))
    monkeypatch.setenv("FACTORY_JOURNAL_DIR", str(tmp_path / "journals"))
    with Store(f"postgres:{postgres_db}") as store:
        store.record_spec(TINY, "yaml")
        other, save_version, injected = store.cursor(), Store._save_version, []

        def with_a_commit_inside(con, *args, **kwargs):  # type: ignore[no-untyped-def]
            version = save_version(con, *args, **kwargs)
            if not injected:  # once: a retried closing commit runs this again
                other.execute("INSERT INTO meta VALUES ('probe', 'x')")  # its own commit, in the middle of ours
                injected.append(other.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0])
            return version

        run = store.start_run(TINY)
        store.save_completions(_records(range(4)))
        with monkeypatch.context() as patched:
            patched.setattr(Store, "_save_version", staticmethod(with_a_commit_inside))
            store.finish_run(run, "done")
        (version,) = store.versions("tiny")
        assert version["run_id"] == run and version["samples"] == 4 and version["snapshot_id"] > injected[0]
        snapshot = version["snapshot_id"]
    with Store(f"postgres:{postgres_db}", snapshot=snapshot) as old:
        assert old.sample_count(TINY.hash) == 4


def test_many_small_commits_compact_to_few_files_and_snapshots(db: Path) -> None:
    with Store(db) as store:
        for start in range(0, 400, 20):
            store.save_completions(_records(range(start, start + 20)))
            store.publish()
        files, snapshots = data_files(store), store.sql("SELECT count(*) FROM lake.snapshots()")[0][0]
        done = compact(store, keep_hours=0)
        assert done.files_after < files and done.snapshots < snapshots
        assert store.sample_count(TINY.hash) == 400


def test_leases_refuse_wait_and_expire_with_a_dead_holder(db: Path) -> None:
    with Store(db) as store:
        with Lease(store, "tiny", "run-1"):
            with Lease(store, "tiny", "run-1"):  # the same holder again (another stage of its run)
                pass
            with pytest.raises(LeaseHeld, match="spec 'tiny' is being run by run-1"):
                with Lease(store, "tiny", "run-2"):
                    pass
            with Lease(store, "other", "run-2"):  # another spec proceeds side by side
                pass
        with Lease(store, "tiny", "run-2"):
            pass
        # a holder on this host whose process is gone: its lease is free at once
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        store._exec("INSERT INTO leases VALUES ('tiny', 'ghost', ?, ?, now(), now())",
                    [__import__("socket").gethostname(), dead.pid])
        with Lease(store, "tiny", "run-3"):
            assert [h["holder"] for h in holders(store)] == ["run-3"]


def test_migrate_an_old_single_file_store(tmp_path: Path) -> None:
    old = tmp_path / "factory.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);"
                " INSERT INTO meta VALUES ('schema_version', '1');"
                " CREATE TABLE specs (spec_hash VARCHAR PRIMARY KEY, name VARCHAR, path VARCHAR, yaml VARCHAR,"
                " spec JSON, created_at TIMESTAMPTZ);"
                " CREATE TABLE samples (sample_id VARCHAR PRIMARY KEY, spec_hash VARCHAR, run_id VARCHAR,"
                " class VARCHAR, text VARCHAR, attributes JSON, seed BIGINT, sample_index INTEGER,"
                " choice_index INTEGER, method VARCHAR, prompt_hash VARCHAR, request_key VARCHAR, model VARCHAR,"
                " params JSON, prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd DOUBLE,"
                " is_refusal BOOLEAN, generated_at TIMESTAMPTZ, created_at TIMESTAMPTZ)")
    con.execute("INSERT INTO specs VALUES (?, 'tiny', '', 'yaml', '{}', now())", [TINY.hash])
    con.execute("INSERT INTO samples SELECT 's' || i, ?, 'r', 'a', 'text ' || i, '{}', i, i, 0, 'simprompt', 'p',"
                " 'k' || i, 'm', '{}', 1, 1, 0.0, false, now(), now() FROM range(7) t(i)", [TINY.hash])
    con.close()
    store_dir = tmp_path / "store"
    with pytest.raises(StoreError, match="factory migrate"):
        Store(old)
    proc = subprocess.run([sys.executable, "-m", "factory.cli", "migrate", str(old), "--store", str(store_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "samples: 7 rows" in proc.stdout
    with Store(store_dir, read_only=True) as store:
        assert store.sample_count(TINY.hash) == 7 and store.spec_records()[0]["name"] == "tiny"
    again = subprocess.run([sys.executable, "-m", "factory.cli", "migrate", str(old), "--store", str(store_dir)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert counts(str(store_dir))["samples"] == 7  # a second migrate adds nothing


def test_a_password_in_the_store_url_is_refused() -> None:
    with pytest.raises(StoreError, match="PGPASSWORD"):
        Store("postgres:host=127.0.0.1 dbname=lake password=hunter2")


def test_a_run_compacts_once_enough_snapshots_pile_up(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from factory.store import housekeeping

    with Store(db) as store:
        assert housekeeping.maybe_compact(store) is None  # a fresh store: nothing to do
        for start in range(0, 100, 20):
            store.save_completions(_records(range(start, start + 20)))
            store.publish()
        monkeypatch.setattr(housekeeping, "AUTO_COMPACT_SNAPSHOTS", 5)
        files = data_files(store)
        done = housekeeping.maybe_compact(store)
        assert done is not None and done.files_after < files
        assert store.sample_count(TINY.hash) == 100
