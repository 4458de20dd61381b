"""benchmarks/reproduce.py --quick end to end: every arm over 2 seeds through the real offline model."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"
SHARED_DATA = ROOT.parent / "shared" / "data"
ROW = re.compile(r"^(?P<dataset>\S+)\s+(?P<arm>\S+)\s+(?P<seeds>\d+)\s+(?P<f1>\S+) ± (?P<f1sd>\S+)\s+"
                 r"(?P<acc>\S+) ± (?P<accsd>\S+)\s")


def _script():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_settings_parse_without_running(tmp_path: Path) -> None:
    """--help works without the shared data or the model (and the arms are the documented ones)."""
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    arms = list(_script().ARMS)
    assert arms == ["simprompt", "attrprompt-llm", "attrprompt-gpt35", "fewshot", "zeroshot"]
    assert "--quick" in out.stdout and "--seeds" in out.stdout


def test_mean_sd_and_reach() -> None:
    """The aggregation: sample sd (n-1), the smallest fraction whose mean reaches SimPrompt's full-budget mean."""
    m = _script()
    mean, sd = m.mean_sd([0.2, 0.4])
    assert mean == pytest.approx(0.3) and sd == pytest.approx(math.sqrt(0.02))
    assert math.isnan(m.mean_sd([0.5])[1])

    def run(arm: str, seed: int, f1s: list[float]) -> dict:
        curve = [{"fraction": f, "requests": int(8 * f), "macro_f1": v, "accuracy": v} for f, v in zip([0.5, 1.0], f1s)]
        return {"arm": arm, "seed": seed, "error": None, "macro_f1": f1s[-1], "accuracy": f1s[-1], "requests": 8,
                "tokens": 100, "kept": 8, "aps": None, "vocabulary": None, "curve": curve}

    runs = [run("simprompt", 1, [0.3, 0.5]), run("simprompt", 2, [0.3, 0.7]),
            run("attrprompt-gpt35", 1, [0.6, 0.7]), run("attrprompt-gpt35", 2, [0.6, 0.7]),
            run("fewshot", 1, [0.1, 0.2]), {"arm": "fewshot", "seed": 2, "error": "boom"}]
    agg = m.aggregate(runs, ["simprompt", "attrprompt-gpt35", "fewshot"], [0.5, 1.0])
    assert agg["simprompt"]["macro_f1"][0] == pytest.approx(0.6)
    assert agg["attrprompt-gpt35"]["reaches_baseline_at"] == {"fraction": 0.5, "requests": 4}
    assert agg["simprompt"]["reaches_baseline_at"]["fraction"] == 1.0
    assert agg["fewshot"]["reaches_baseline_at"] is None
    assert agg["fewshot"]["seeds"] == [1] and agg["fewshot"]["failed"] == [2]


@pytest.mark.llm
def test_reproduce_quick(tmp_path: Path) -> None:
    """The real thing: `reproduce.py --quick` prints every arm with a finite mean ± sd and saves the chart."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent: the real test sets, train sets and the paper's attribute lists live there")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "FACTORY_EXPORT_DIR": str(tmp_path / "exports")}
    env.pop("OPENAI_BASE_URL", None)  # the embedded offline model
    out_dir = tmp_path / "out"
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out-dir", str(out_dir)], capture_output=True,
                          text=True, timeout=900, cwd=ROOT, env=env)
    wall = time.time() - t0
    print(proc.stdout[-4000:])
    print(f"reproduce.py --quick: {wall:.0f}s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {m["arm"]: m for line in proc.stdout.splitlines() if (m := ROW.match(line)) and m["dataset"] == "agnews"}
    arms = list(_script().ARMS)
    assert sorted(rows) == sorted(arms), proc.stdout[-3000:]
    for arm, m in rows.items():
        assert int(m["seeds"]) == 2, (arm, m.group(0))
        for key in ("f1", "f1sd", "acc", "accsd"):
            value = float(m[key])
            assert math.isfinite(value) and 0 <= value <= 1, (arm, key, m.group(0))
    curve = [line for line in proc.stdout.splitlines() if line.startswith(tuple(arms))]
    assert len(curve) == len(arms) and all(line.count("±") == 2 for line in curve), curve  # @0.5 and @1
    assert "reaches simprompt F1" in proc.stdout
    chart = out_dir / "f1_vs_budget_agnews.png"
    assert chart.is_file() and chart.stat().st_size > 1000
    assert (out_dir / "results.json").is_file()
