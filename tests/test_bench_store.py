"""benchmarks/bench_store.py --quick --no-postgres end to end: the old file and the embedded lake side by side,
four writer processes, and the row check (no lost or doubled rows)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_store.py"


def test_quick_run_prints_ratios_and_verifies_rows(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    for name in ("FACTORY_STORE", "FACTORY_DB", "FACTORY_DATA_PATH", "FACTORY_JOURNAL_DIR"):
        env.pop(name, None)
    # ~20 s on a busy 2-core machine; the timeout leaves room for a much busier one
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--no-postgres"], capture_output=True,
                         text=True, timeout=180, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "ratios: lake / old file" in out.stdout
    assert "sqlite/old" in out.stdout and "completions/s, 1 writer" in out.stdout
    assert "=> no lost or doubled rows" in out.stdout
    assert "skipped: --no-postgres" in out.stdout
    assert "PASS  no writer loses or doubles a row" in out.stdout
    assert "store errors (tracebacks)" not in out.stdout
