"""benchmarks/bench_peers.py end to end: on the instant responder every tool it runs sends exactly the
factory's planned request bodies, a peer without its virtualenv is skipped with the reason; on llama-server
each run says what the server did for it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_peers_sends_the_same_bodies_through_every_client(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_peers.py"), "--sections", "instant",
                           "--instant-sizes", "48", "--rounds", "1", "--curator-python", str(tmp_path / "none"),
                           "--datadesigner-python", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tools = ("bare", "attrfactory", "bare-openai-aiohttp", "bare-chatclient", "curator", "datadesigner")
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()  # the summary table's rows
            if line.split() and line.split()[0] in tools and " / " not in line}
    for tool in ("bare", "attrfactory", "bare-openai-aiohttp", "bare-chatclient"):
        assert rows[tool].rstrip().endswith("identical"), rows[tool]  # all 48 bodies, none other
    assert "skipped: no " in rows["curator"] and "skipped: no " in rows["datadesigner"]
    assert "attrfactory / bare loop:" in proc.stdout


def test_paired_ratios_report_a_t_interval_on_the_log_scale() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import math

    import bench_peers
    from scipy.stats import t

    ratios = [0.9, 1.0, 1.2, 1.05]
    logs = [math.log(r) for r in ratios]
    mean = sum(logs) / 4
    half = t.ppf(0.975, 3) * (sum((v - mean) ** 2 for v in logs) / 3) ** 0.5 / 2
    text = bench_peers._paired(ratios)
    assert text.startswith("median 1.025 (rounds 0.90-1.20 of 4)"), text
    assert f"geometric mean {math.exp(mean):.3f} (95% {math.exp(mean - half):.3f}-{math.exp(mean + half):.3f})" in text
    assert bench_peers._paired([1.1]).endswith("one round: no interval")


def test_tools_runs_only_the_named_tools_and_lists_the_others_as_skipped(tmp_path: Path) -> None:
    script = [sys.executable, str(ROOT / "benchmarks" / "bench_peers.py")]
    proc = subprocess.run([*script, "--sections", "instant", "--instant-sizes", "48", "--rounds", "1",
                           "--tools", "attrfactory,bare-chatclient"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = {line.split()[4] for line in proc.stdout.splitlines() if line.startswith("  [instant 48] round")}
    assert ran == {"attrfactory", "bare-chatclient"}
    for tool in ("bare", "bare-openai-aiohttp", "curator", "datadesigner"):
        assert f"{tool} " in proc.stdout and "skipped: not in --tools" in proc.stdout.split(f"\n{tool} ", 1)[1]
    assert "attrfactory / bare loop:" not in proc.stdout  # no bare loop measured: no ratio to it
    wrong = subprocess.run([*script, "--tools", "attrfactory,curatr"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "--tools: no tool curatr" in wrong.stderr


@pytest.mark.llm
def test_the_llm_section_reports_what_the_server_did_for_each_run(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_peers.py"), "--sections", "llm",
                           "--llm-sizes", "8", "--rounds", "1", "--tools", "bare", "--max-tokens", "8",
                           "--server-log", str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next(line for line in proc.stdout.splitlines() if line.startswith("  [llm 8] round 1 bare"))
    predicted = int(run.split(" predicted")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert 8 <= predicted <= 64, run  # the 8 requests' tokens at most 8 each; the warm-up is not counted
    assert "machine: busy" in run and "% of seconds with a slot idle" in run
    assert re.search(r"client CPU [\d.]+ s \([\d,]+ voluntary context switches, [\d,]+ preempted\)", run), run
    assert re.search(r"compute threads switched [\d,]+ times and preempted [\d,]+, waited [\d.]+ s for a core",
                     run), run
    # the first start only warms the orchestrator up; the run's server (the second start) logged its 8 requests
    # and the warm-up request before them
    log = (tmp_path / "logs" / "llama-server-2.log").read_text()
    assert log.count("prompt eval time") == 9, log[-2000:]
    header, row = (line.split() for line in proc.stdout.split("llama-server's work a run", 1)[1].splitlines()[2:5:2])
    assert header[:3] == ["tool", "prompt", "tokens"] and row[0] == "bare"
