"""benchmarks/bench_peers.py end to end on the instant responder: every tool it runs sends exactly the
factory's planned request bodies, and a peer without its virtualenv is skipped with the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
