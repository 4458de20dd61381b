"""Generation end to end: the real offline model, and the fault injector for what it cannot produce."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.spec import Spec, load_spec, parse_spec
from factory.store import Store
from conftest import Generated, generate
from conftest import query as rows
from conftest import recovered_query
from fault_server import FaultServer, expected_content, spawn

SPEC = textwrap.dedent("""\
    name: gen
    domain: short news headline
    classes: [sports, business, weather]
    attributes:
      style: {values: [breaking news, analysis, interview]}
      length: {values: [10, 20], unit: words}
    similar_classes: {given: {sports: [business], business: [sports], weather: [sports]}}
    generation:
      method: attrprompt
      base_url: BASE_URL
      max_tokens: MAXTOK
      max_concurrency: 16
      max_retries: 8
      stratified: true
    budget:
      samples_per_class: SPC
    """)


def write_spec(tmp_path: Path, base_url: str, spc: int = 4, max_tokens: int = 24, extra: str = "") -> Path:
    text = SPEC.replace("BASE_URL", base_url).replace("SPC", str(spc)).replace("MAXTOK", str(max_tokens))
    path = tmp_path / "gen.yaml"
    path.write_text(text.replace("  samples_per_class:", extra + "  samples_per_class:") if extra else text)
    return path


def run(path: Path, db: Path) -> Generated:
    return generate(path, db)




@pytest.mark.llm
def test_real_model_run_has_provenance_and_rerun_sends_nothing(llm_server, tmp_path: Path, db: Path) -> None:
    path = write_spec(tmp_path, llm_server.base_url, spc=2, max_tokens=32)
    result = CliRunner().invoke(app, ["run", str(path), "--db", str(db), "--no-progress"])
    assert result.exit_code == 0, result.output
    samples = rows(db, "SELECT class, text, attributes, seed, prompt_hash, request_key, model, params,"
                       " prompt_tokens, completion_tokens, spec_hash, run_id, generated_at FROM samples")
    assert len(samples) == 6
    assert {s[0] for s in samples} == {"sports", "business", "weather"}
    spec = load_spec(path)
    for cls, text, attrs, seed, prompt_hash, key, model, params, pt, ct, spec_hash, run_id, at in samples:
        assert text.strip() and model == "smollm2" and spec_hash == spec.hash and run_id and at
        assert set(json.loads(attrs)) == {"style", "length"}
        assert json.loads(params)["max_tokens"] == 32 and json.loads(params)["seed"] == seed
        assert pt > 0 and ct > 0
    prompts = dict(rows(db, "SELECT prompt_hash, messages FROM prompts"))
    for s in samples:
        assert s[0] in json.loads(prompts[s[4]])[-1]["content"]
    assert rows(db, "SELECT status, requests FROM runs") == [("done", 6)]
    # a rerun pays for nothing
    again = run(path, db)
    assert again.sent == 0 and again.cached == 6 and again.samples == 6
    assert rows(db, "SELECT count(*) FROM samples") == [(6,)]
    assert rows(db, "SELECT count(*) FROM llm_requests") == [(6,)]


SECRET = "sk-test-secret-4f9a2c7e-never-stored"


def _store_text(db: Path) -> list[str]:
    """Every cell of every table of a store, as text (blobs decoded leniently)."""
    from factory.store import Store

    with Store(db, read_only=True) as store:
        tables = list(store.table_counts())
        assert {"runs", "llm_requests", "samples", "specs", "prompts"} <= set(tables)
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for t in tables for row in store.sql(f'SELECT * FROM "{t}"') for v in row]


def test_api_key_reaches_the_server_and_nothing_else(tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    import logging

    from dagster import DagsterInstance, serialize_value

    from factory.defs.local import materialize_spec

    monkeypatch.setenv("FACTORY_TEST_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    instance = DagsterInstance.ephemeral()
    with FaultServer(rate_500=0.2, seed=5) as server:  # errors and retries: the paths most likely to log
        spec_path = write_spec(tmp_path, server.base_url, spc=3)
        key_env = "max_retries: 8\n  api_key_env: FACTORY_TEST_API_KEY"
        spec_path.write_text(spec_path.read_text().replace("max_retries: 8", key_env))
        result = materialize_spec(spec_path, db, instance=instance, through="generations", log_level="DEBUG")
        cli = CliRunner().invoke(app, ["run", str(spec_path), "--db", str(tmp_path / "cli-store"), "--no-progress"])
        stats = server.stats()
    assert result.success and cli.exit_code == 0, cli.output
    assert stats["sent_by_authorization"] == {f"Bearer {SECRET}": stats["total"]} and stats["fault_500"] > 0
    for store in (db, tmp_path / "cli-store"):
        assert not [v for v in _store_text(store) if SECRET in v]
        assert not [f for f in store.rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
    assert SECRET not in cli.output and SECRET not in caplog.text
    out, error = capfd.readouterr()
    assert SECRET not in out + error
    events = instance.all_logs(result.run_id)
    assert events and not [e for e in events if SECRET in serialize_value(e) or SECRET in str(e)]


def test_twenty_percent_faults_every_sample_exactly_once(tmp_path: Path, db: Path) -> None:
    with FaultServer(rate_429=0.05, rate_500=0.05, rate_garbage=0.05, rate_disconnect=0.05, seed=3,
                     latency_s=0.002, retry_after_s="0.02") as server:
        path = write_spec(tmp_path, server.base_url, spc=30)
        result = run(path, db)
        stats = server.stats()
    assert result.status == "done"
    assert result.samples == 90 and result.failed == 0
    faults = stats["fault_429"] + stats["fault_500"] + stats["fault_garbage"] + stats["fault_disconnect"]
    assert faults >= 8, stats  # the faults really happened
    assert rows(db, "SELECT count(*), count(DISTINCT sample_index || class) FROM samples") == [(90, 90)]
    assert rows(db, "SELECT count(*), count(DISTINCT request_key) FROM llm_requests") == [(90, 90)]
    per_class = dict(rows(db, "SELECT class, count(*) FROM samples GROUP BY class"))
    assert per_class == {"sports": 30, "business": 30, "weather": 30}
    # each text is the one the server produced for that very request (no mix-ups between retries)
    for text, messages, seed, choice in rows(db, "SELECT s.text, p.messages, s.seed, s.choice_index FROM samples s"
                                                 " JOIN prompts p USING (prompt_hash)"):
        assert text == expected_content(json.loads(messages), seed, choice)


def test_adaptive_concurrency_halves_on_overload(tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from factory.generation.llm.engine import AdaptiveLimiter

    cuts: list[tuple[int, int]] = []  # the limit before and after each overload
    on_overload = AdaptiveLimiter.on_overload

    def recording(self: AdaptiveLimiter, sent_after: int) -> None:
        before = self.limit
        on_overload(self, sent_after)
        cuts.append((before, self.limit))

    monkeypatch.setattr(AdaptiveLimiter, "on_overload", recording)
    with FaultServer(max_concurrency=3, latency_s=0.02, retry_after_s="0.01") as server:
        path = write_spec(tmp_path, server.base_url, spc=20)
        result = run(path, db)
        stats = server.stats()
    assert result.status == "done" and result.samples == 60 and result.failed == 0
    assert stats["fault_overload"] == len(cuts) > 0
    assert cuts[0][0] > 3 and any(after < before for before, after in cuts)  # the limit really dropped
    assert min(after for _, after in cuts) <= 3  # to what the server takes
    # so fewer overloads than successes: a fixed limit of 8 would overload 5 of every 8 (~100 here)
    assert stats["fault_overload"] < stats["successes"], stats


def test_kill_9_then_rerun_resends_nothing_completed(tmp_path: Path, db: Path) -> None:
    with spawn(latency_s=0.15) as base_url:
        path = write_spec(tmp_path, base_url, spc=40)  # 120 requests, ~16 at a time, ~1.2 s
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.Popen([sys.executable, "-m", "factory.cli", "run", str(path), "--db", str(db),
                                 "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _stats(base_url)["successes"] < 40:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -9
        persisted = recovered_query(db, "SELECT count(*) FROM llm_requests")[0][0]  # lake + the dead run's journal
        assert 0 < persisted < 120
        _control(base_url, {"reset_stats": True})
        result = run(path, db)
        second = _stats(base_url)
    assert result.status == "done"
    assert second["total"] == 120 - persisted  # only what was missing was sent
    assert result.cached == persisted
    assert rows(db, "SELECT count(*), count(DISTINCT request_key) FROM llm_requests") == [(120, 120)]
    assert rows(db, "SELECT count(DISTINCT class || sample_index) FROM samples") == [(120,)]


def test_budget_caps_stop_cleanly(tmp_path: Path, db: Path) -> None:
    with FaultServer(latency_s=0.01) as server:
        path = write_spec(tmp_path, server.base_url, spc=20, extra="  max_requests: 7\n")
        result = run(path, db)
        assert result.status == "budget_stopped" and "max_requests=7" in (result.stopped or "")
        assert rows(db, "SELECT count(*) FROM llm_requests") == [(7,)]
        assert server.stats()["total"] == 7
        assert rows(db, "SELECT status FROM runs") == [("budget_stopped",)]
        # the token cap: spend never passes it, whatever is in flight
        db2 = tmp_path / "t-store"
        path = write_spec(tmp_path, server.base_url, spc=20, extra="  max_tokens: 900\n")
        result = run(path, db2)
        spent = rows(db2, "SELECT sum(prompt_tokens + completion_tokens), count(*) FROM llm_requests")[0]
    assert result.status == "budget_stopped"
    assert 0 < spent[0] <= 900 and spent[1] < 60


def test_raising_the_cap_resumes_without_paying_twice(tmp_path: Path, db: Path) -> None:
    with FaultServer(latency_s=0.005) as server:
        run(write_spec(tmp_path, server.base_url, spc=10, extra="  max_requests: 12\n"), db)
        assert server.stats()["total"] == 12
        server.reset_stats()
        result = run(write_spec(tmp_path, server.base_url, spc=10, extra="  max_requests: 30\n"), db)
        assert server.stats()["total"] == 18
    assert result.status == "done" and result.cached == 12


def test_unknown_endpoint_error_is_clear(tmp_path: Path, db: Path) -> None:
    path = write_spec(tmp_path, "http://127.0.0.1:9/v1", spc=1, extra="")
    text = path.read_text().replace("max_retries: 8", "max_retries: 1")
    path.write_text(text)
    result = CliRunner().invoke(app, ["run", str(path), "--db", str(db), "--no-progress"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a clean exit, not a crash
    assert "cannot reach http://127.0.0.1:9/v1" in result.output, result.output
    assert "Traceback" not in result.output and "Stack Trace" not in result.output, result.output
    assert rows(db, "SELECT status FROM runs") == [("failed",)]


def _stats(base_url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/_stats?keys=0") as r:
        return json.loads(r.read())


def _control(base_url: str, body: dict) -> None:
    import urllib.request

    req = urllib.request.Request(base_url.removesuffix("/v1") + "/_control", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()


def test_run_ends_with_a_few_samples_per_class(tmp_path: Path, db: Path) -> None:
    with FaultServer() as server:
        path = write_spec(tmp_path, server.base_url, spc=3)
        result = CliRunner().invoke(app, ["run", str(path), "--db", str(db), "--no-progress", "--samples", "2"])
        assert result.exit_code == 0, result.output
        quiet = CliRunner().invoke(app, ["run", str(path), "--db", str(db), "--no-progress", "--samples", "0"])
    assert quiet.exit_code == 0 and "per class):" not in quiet.output
    head, _, preview = result.output.partition("samples (2 per class):\n")
    assert "check " in head and preview, result.output
    lines = preview.strip().splitlines()
    assert sorted(line.split()[0] for line in lines) == ["business"] * 2 + ["sports"] * 2 + ["weather"] * 2
    stored = {(c, t): json.loads(a) for c, t, a in rows(db, "SELECT class, text, attributes FROM samples")}
    for line in lines:
        cls = line.split()[0]
        match = [(t, a) for (c, t), a in stored.items() if c == cls and t in line]
        assert match, line  # the stored text of that class
        text, attrs = match[0]
        assert all(f"{k}={v}" in line for k, v in attrs.items())


def test_the_same_key_twice_at_once_is_paid_once(db: Path) -> None:
    """A second request of a key still in flight (or not yet durable) waits for the first: one send, one
    row, and the second is counted as cached."""
    import asyncio

    from factory.generation.llm.budget import Budget
    from factory.generation.llm.client import Endpoint, open_engine
    from factory.generation.llm.engine import LLMRequest
    from factory.spec import GenerationSpec
    from factory.store import Store

    spec = parse_spec("name: twice\ndomain: note\nclasses: [a, b]\n")
    request = LLMRequest(messages=[{"role": "user", "content": "say hi"}], model="m", params={"max_tokens": 8})

    async def both(store: Store, base_url: str) -> list:
        async with open_engine(GenerationSpec(), store, Endpoint(base_url, "k"), Budget.from_spec(spec.budget, "m")
                               ) as engine:
            results = await asyncio.gather(engine.complete(request), engine.complete(request))
            return [results, engine.stats.sent, engine.stats.cached]

    with FaultServer(latency_s=0.3) as server, Store(db) as store:  # a slow server: the window is wide open
        (first, second), sent_, cached = asyncio.run(both(store, server.base_url))
        assert server.stats()["total"] == 1 and sent_ == 1 and cached == 1
        assert first.choices == second.choices and second.cached and not first.cached
        assert store.sql("SELECT count(*) FROM llm_requests") == [(1,)]


def test_the_writer_batches_a_long_stream_and_flushes_at_once_on_close(db: Path) -> None:
    """Completions arriving one by one share transactions as a run goes on (the linger doubles), and closing
    the writer flushes what is queued at once, however long the linger has grown."""
    import asyncio

    from factory.generation.llm.engine import RequestWriter
    from factory.store import PromptRecord

    batches: list[int] = []

    async def stream(store: Store) -> float:
        async with RequestWriter(store, linger_s=0.01, max_linger_s=60.0) as writer:
            writer.on_written = lambda batch: batches.append(len(batch))
            for i in range(40):
                writer.put(PromptRecord(prompt_hash=f"p{i}", method="bench", messages="[]"))
                await asyncio.sleep(0.01)
            closing = time.monotonic()
        return time.monotonic() - closing

    with Store(db) as store:
        close_s = asyncio.run(stream(store))
        assert store.sql("SELECT count(*) FROM prompts") == [(40,)]
    assert sum(batches) == 40
    assert len(batches) <= 12, batches  # a fixed 10 ms linger would commit ~20-40 times
    assert close_s < 30, close_s  # the last batch did not wait out the (by now) long linger
