"""`factory review`: the review page in a real headless Chromium, and what its decisions change downstream."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from factory.attributes.lock import LockFile, check_lock, lock_path, read_lock, write_lock
from factory.defs.local import materialize_spec
from factory.generation.llm.server import free_port
from factory.quality.report import report_data
from factory.review.app import is_loopback
from factory.review.attributes import EditError, edit_lock, value_rows
from factory.spec import load_spec
from factory.store import Store
from factory.training.evaluate import pool_from_file, pool_from_store
from factory.training.job import JobOptions, run_job
from fault_server import FaultServer
from test_lock import lock_spec

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
CLASSES = ["world", "sports", "business"]

SPEC = textwrap.dedent("""\
    name: rv
    domain: news article
    classes: [world, sports, business]
    attributes:
      subtopic:
        per_class: true
        elicit: {n: 3}
      style: {values: [report, op-ed]}
    similar_classes: {k: 1}
    generation:
      method: attrprompt
      base_url: BASE_URL
      max_tokens: 24
    budget:
      samples_per_class: SPC
    evaluation:
      test_set: test.jsonl
    training:
      budget_fractions: [1.0]
    """)


def write_spec(folder: Path, base_url: str, spc: int = 4) -> Path:
    path = folder / "rv.yaml"
    path.write_text(SPEC.replace("BASE_URL", base_url).replace("SPC", str(spc)))
    return path


def filtered(path: Path, db: Path, folder: Path) -> None:
    """The asset graph through the filter stage (as `factory run` does it)."""
    assert materialize_spec(path, db, through="filtered_samples", export_dir=folder / "exports").success


@contextmanager
def review_server(spec: Path, db: Path, host: str = "127.0.0.1", env: dict[str, str] | None = None) -> Iterator[str]:
    """`factory review SPEC` as its own process; yields the base URL on 127.0.0.1."""
    port = free_port()
    log = spec.with_name(f"review-{port}.log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "factory.cli", "review", str(spec), "--db", str(db), "--host", host, "--port",
         str(port)], env={**os.environ, **(env or {})}, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except urllib.error.HTTPError:  # it answers (403 without the token)
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.3)
        else:
            pytest.fail("factory review did not start:\n" + log.read_text()[-3000:])
        assert proc.poll() is None, log.read_text()[-3000:]
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, Path, FaultServer]]:
    """A spec with a lock (elicited subtopics) and given styles, generated and filtered against the fault
    injector; a tiny test set for the train job."""
    with FaultServer() as server:
        path = write_spec(tmp_path, server.base_url)
        db = tmp_path / "factory-store"
        with Store(db) as store:
            lock_spec(load_spec(path), store)
        filtered(path, db, tmp_path)
        (tmp_path / "test.jsonl").write_text("".join(
            json.dumps({"text": f"{c} story number {i}", "label": c}) + "\n" for c in CLASSES for i in range(3)))
        yield path, db, server


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_review_page_decisions_reach_store_lock_export_training_and_top_up(
        project: tuple[Path, Path, FaultServer], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    path, db, server = project
    spec = load_spec(path)
    with Store(db) as store:
        samples = store.review_samples(spec.hash)
    first = samples[:3]  # canonical order: the page lists them so
    world_value = read_lock(lock_path(spec)).attributes["subtopic"].values["world"][0]
    with review_server(path, db, env={"FACTORY_REVIEWER": "alice"}) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url, wait_until="networkidle")
            assert "12 of 12 left to review" in page.inner_text("#progress")
            assert page.locator("#charts img").count() >= 2  # the funnel and the diversity chart
            page.keyboard.press("r")
            page.wait_for_function("document.getElementById('progress').dataset.left === '11'")
            page.keyboard.press("r")
            page.wait_for_function("document.getElementById('progress').dataset.left === '10'")
            page.keyboard.press("n")
            page.keyboard.type("reads like sports")
            page.keyboard.press("Enter")
            page.keyboard.press("l")
            page.keyboard.press("2")  # classes are numbered in spec order: 2 = sports
            page.wait_for_function("document.getElementById('progress').dataset.left === '9'")
            assert "sports" in page.locator(".sample").nth(2).inner_text()
            row = page.locator(f"tr.value[data-class='world'][data-value='{world_value}']")
            with page.expect_navigation():
                row.locator("button[data-action=drop]").click()
            assert page.locator(f"tr.value[data-class='world'][data-value='{world_value}']").count() == 0
            assert "9 of 12 left to review" in page.inner_text("#progress")
            assert page.locator(".src-given").count() == 2  # the spec's styles: shown, not editable
            page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
            if os.environ.get("REVIEW_SCREENSHOT"):
                page.screenshot(path=os.environ["REVIEW_SCREENSHOT"])
            # the filters: review state, class and model, attribute value, filter outcome
            style_report = sum(s["attributes"]["style"] == "report" for s in samples)
            for query, n in [("review=reject", 2), ("review=relabel", 1), ("review=todo", 9),
                             ("class=sports&model=smollm2", 4), ("attr=style%3Dreport", style_report),
                             ("outcome=kept", 12), ("outcome=unfiltered", 0), ("class=world&review=reject", 0)]:
                page.goto(f"{url}?{query}", wait_until="networkidle")
                assert page.locator(".sample").count() == n, query
            browser.close()
    assert (tmp_path / "review.png").stat().st_size > 20_000
    rejected, relabelled = {s["sample_id"] for s in first[:2]}, first[2]["sample_id"]

    # the store: decisions with the reviewer's name and time; kept samples without the rejects
    with Store(db) as store:
        decisions = store.review_decisions(spec.hash)
        assert {k: (d["decision"], d["label"], d["reviewer"]) for k, d in decisions.items()} == {
            **{i: ("reject", None, "alice") for i in rejected}, relabelled: ("relabel", "sports", "alice")}
        assert decisions[relabelled]["note"] == "reads like sports" and decisions[relabelled]["created_at"]
        kept = {s["sample_id"]: s["class"] for s in store.kept_samples(spec.hash)}
        assert len(kept) == 10 and not rejected & set(kept) and kept[relabelled] == "sports"
        assert [(e["action"], e["value"], e["reviewer"]) for e in store.attribute_edits(spec.hash)] == [
            ("drop", world_value, "alice")]
        # the export and the train job's inputs
        assert store.export_samples(spec.hash, tmp_path / "x.parquet", "parquet") == 10
        pool = pool_from_store(store, spec)
    assert len(pool.kept) == 10 and sum(e.label == "sports" for e in pool.kept) == 5
    from_file = pool_from_file(tmp_path / "x.parquet", spec)
    assert len(from_file.examples) == 10 and sum(e.label == "sports" for e in from_file.examples) == 5

    # the lock file: the value is gone, and the lock still fits the spec
    lock = read_lock(lock_path(spec))
    assert world_value not in lock.attributes["subtopic"].values["world"]
    check_lock(spec, lock, lock_path(spec))

    # a retrain (the real job) trains on the reviewed set
    results = run_job(JobOptions(spec=str(path), db=str(db), fractions=[1.0], out=str(tmp_path / "r.json")))
    assert results["headline"]["n_train"] == 10
    results = run_job(JobOptions(spec=str(path), samples=str(tmp_path / "x.parquet"), fractions=[1.0]))
    assert results["headline"]["n_train"] == 10

    # Label Studio tasks
    out = tmp_path / "ls.json"
    proc = subprocess.run([sys.executable, "-m", "factory.cli", "review", str(path), "--db", str(db),
                           "--labelstudio", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    tasks = {t["data"]["sample_id"]: t for t in json.loads(out.read_text())}
    assert len(tasks) == 10
    assert tasks[relabelled]["annotations"][0]["result"][0]["value"]["choices"] == ["sports"]

    # the filter stage records the decisions as `human` filter decisions; the report's funnel shows them
    filtered(path, db, tmp_path)
    with Store(db) as store:
        human = {d["sample_id"]: (d["kept"], d["reason"]) for d in store.filter_decisions(spec.hash)
                 if d["filter"] == "human"}
        assert set(human) == rejected | {relabelled}
        assert human[relabelled] == (True, "human: alice: relabel -> sports: reads like sports")
        assert all(not human[i][0] and human[i][1] == "human: alice: reject" for i in rejected)
        funnel = report_data(spec, store)["funnel"]
        assert funnel[-1] == {"step": "human review", "filter": "human", "count": funnel[-2]["count"] - 2,
                              "dropped": 2}
        # the rerun also generated the prompts of the edited lock (new world samples); the old ones stay
        kept_now = {s["sample_id"] for s in store.kept_samples(spec.hash)}
        assert set(kept) <= kept_now and not rejected & kept_now

    # a top-up (a larger budget: a new spec hash, the cached requests reused) keeps the decisions
    bigger = write_spec(tmp_path, server.base_url, spc=6)
    filtered(bigger, db, tmp_path)
    grown = load_spec(bigger)
    with Store(db) as store:
        carried = store.review_decisions(grown.hash)
        texts = {s["sample_id"]: s["text"] for s in store.review_samples(grown.hash)}
        old_texts = {s["sample_id"]: s["text"] for s in store.review_samples(spec.hash)}
        kept_after = {s["text"]: s["class"] for s in store.kept_samples(grown.hash)}
    reviewed_texts = {old_texts[i] for i in rejected | {relabelled}}
    assert reviewed_texts <= set(texts.values())  # the same generated texts, served from the cache
    assert {texts[i] for i in carried} == reviewed_texts
    assert not {old_texts[i] for i in rejected} & set(kept_after)
    assert kept_after[old_texts[relabelled]] == "sports"


def test_token_is_required_beyond_loopback(project: tuple[Path, Path, FaultServer]) -> None:
    path, db, _ = project
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    with review_server(path, db, host="0.0.0.0", env={"FACTORY_REVIEW_TOKEN": "s3cret-token"}) as url:
        for headers in ({}, {"X-Review-Token": "wrong"}):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
            assert info.value.code == 403
        request = urllib.request.Request(url + "decide", data=b'{"decision": "reject"}', method="POST",
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 403
        assert urllib.request.urlopen(url + "?token=s3cret-token", timeout=30).status == 200
        ok = urllib.request.urlopen(urllib.request.Request(url, headers={"X-Review-Token": "s3cret-token"}),
                                    timeout=30)
        assert "left to review" in ok.read().decode()
    with Store(db) as store:
        assert store.review_decisions(load_spec(path).hash) == {}


def test_value_rows_and_lock_edits(tmp_path: Path) -> None:
    """Given values are read-only, CAF drops carry their reason, edits keep the lock valid."""
    with FaultServer() as server:
        path = write_spec(tmp_path, server.base_url)
        spec = load_spec(path)
        with Store(tmp_path / "f-store") as store:
            lock_spec(spec, store)
    lock = read_lock(lock_path(spec))
    data = lock.model_dump(mode="json")
    data["caf"] = {"subtopic": {"world": [{"value": "football", "dropped": True, "relevant_to": ["sports"],
                                           "reason": "relevant to sports"}]}}
    write_lock(lock_path(spec), LockFile.model_validate(data))
    rows = value_rows(spec, read_lock(lock_path(spec)))
    assert {(r.value, r.source, r.editable) for r in rows if r.dimension == "style"} == {
        ("report", "given", False), ("op-ed", "given", False)}
    caf = [r for r in rows if r.source == "caf-dropped"]
    assert [(r.class_name, r.value, r.reason, r.editable) for r in caf] == [
        ("world", "football", "relevant to sports", False)]
    sports = lock.attributes["subtopic"].values["sports"]
    edit_lock(spec, "subtopic", "sports", sports[0], "curling on ice")
    assert read_lock(lock_path(spec)).attributes["subtopic"].values["sports"][0] == "curling on ice"
    with pytest.raises(EditError, match="already a value"):
        edit_lock(spec, "subtopic", "sports", sports[1], "Curling on ice")
    with pytest.raises(EditError, match="no value"):
        edit_lock(spec, "subtopic", "sports", "no such value")
    with pytest.raises(EditError, match="not an elicited dimension"):
        edit_lock(spec, "style", "", "report")
    edit_lock(spec, "subtopic", "sports", sports[1])
    edit_lock(spec, "subtopic", "sports", sports[2])
    with pytest.raises(EditError, match="the last value"):
        edit_lock(spec, "subtopic", "sports", "curling on ice")
    assert yaml.safe_load(lock_path(spec).read_text())["attributes"]["subtopic"]["values"]["sports"] == [
        "curling on ice"]
