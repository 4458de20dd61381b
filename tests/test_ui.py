"""The Dagster UI in a real headless Chromium: the asset graph and a materialization's metadata."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.defs.local import materialize_spec
from factory.generation.llm.server import free_port
from fault_server import FaultServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ASSETS = ["spec", "similar_classes", "attribute_values", "caf_filtered_values", "prompts", "generations",
          "filtered_samples", "embeddings", "diversity_metrics", "classifier", "evaluation", "export"]

LATEST_PARTITION = re.compile(r"Latest materialization\s+.*\s+tiny\b")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")


@pytest.fixture
def ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A materialized partition in a DAGSTER_HOME, then `dagster dev` on 127.0.0.1 over the same home."""
    home, specs = tmp_path / "home", tmp_path / "specs"
    home.mkdir()
    specs.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    spec_text = (Path(__file__).resolve().parents[1] / "specs" / "example-minimal.yaml").read_text()
    with FaultServer() as server:
        spec = specs / "tiny.yaml"
        spec.write_text(spec_text.replace("name: example-minimal", "name: tiny")
                        .replace("generation:\n", f"generation:\n  base_url: {server.base_url}\n"))
        assert materialize_spec(spec, tmp_path / "f-store", export_dir=tmp_path / "exports").success
    port = free_port()
    env = {**os.environ, "FACTORY_SPECS_DIR": str(specs), "FACTORY_DB": str(tmp_path / "f-store")}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.Popen([str(dagster), "dev", "-m", "factory.defs", "-h", "127.0.0.1", "-p", str(port)],
                            env=env, cwd=tmp_path, stdout=open(tmp_path / "dev.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("dagster dev did not start:\n" + (tmp_path / "dev.log").read_text()[-3000:])
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _row_number(words: list[str], key: str) -> int:
    """The first number in ``key``'s row of a metadata table (its cells: key, timestamp, value)."""
    assert key in words, key
    return next(int(w) for w in words[words.index(key) + 1:][:8] if w.isdigit() and len(w) < 4)


def _skip_welcome(page) -> None:  # type: ignore[no-untyped-def]
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()


def _wait_for_text(page, pattern: re.Pattern[str], timeout_ms: int = 120_000) -> None:  # type: ignore[no-untyped-def]
    """Wait until the page's rendered text matches ``pattern`` (a JavaScript-compatible regex); on a timeout,
    return: the caller's assertion then shows the page."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("p => new RegExp(p).test(document.body.innerText)", arg=pattern.pattern,
                               timeout=timeout_ms)
    except PlaywrightTimeout:
        pass


def test_ui_shows_asset_graph_and_metadata(ui: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{ui}/asset-groups", wait_until="networkidle", timeout=120_000)
        page.get_by_text("generations").first.wait_for(timeout=60_000)
        _skip_welcome(page)
        text = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "asset-graph.png"))  # for a person looking into a failure
        assert all(name in text for name in ASSETS), text[:2000]
        assert "Error loading" not in text
        # one node per asset in the drawn graph (not only in the sidebar's list)
        nodes = page.locator("[class*='AssetNode_assetName']")
        assert nodes.count() == len(ASSETS), text[:2000]
        page.goto(f"{ui}/assets/generations", wait_until="networkidle", timeout=120_000)
        page.get_by_text("requests_sent").first.wait_for(timeout=60_000)
        _skip_welcome(page)
        # while the spec sensor's run (see below) is in progress, the status shows that run, not a partition
        _wait_for_text(page, LATEST_PARTITION)
        details = page.inner_text("body")
        (tmp_path / "generations.txt").write_text(details)
        page.screenshot(path=str(tmp_path / "generations.png"), full_page=True)
        browser.close()
    words = details.split()
    for key, value in (("status", "done"), ("samples", "6"), ("requests_failed", "0")):
        assert key in words and value in words[words.index(key):][:8], details  # the value in its row
    # the fixture's run sent all 6; the spec sensor (running in `dagster dev`) may have materialized the spec
    # again since, from the cache: the latest materialization shows either, and its two counts add up
    sent, cached = (_row_number(words, key) for key in ("requests_sent", "requests_cached"))
    assert sent + cached == 6 and sent in (0, 6), details
    assert '"sports": 3' in details and '"business": 3' in details
    assert LATEST_PARTITION.search(details), details  # of the spec's partition
    lineage = details[details.index("Upstream assets"):]
    upstream, _, downstream = lineage.partition("Downstream assets")
    assert "prompts" in upstream and "filtered_samples" not in upstream, lineage
    assert all(a in downstream.split("Definition")[0] for a in ("filtered_samples", "embeddings")), lineage
