"""The subjectivity view on Financial PhraseBank from a real small run: generate with the offline model (or
$OPENAI_BASE_URL), train on synthetic, real and both, and chart accuracy against annotator agreement.

    .venv/bin/python benchmarks/subjectivity.py                    # -> docs/subjectivity.png, reports/subjectivity.html
    .venv/bin/python benchmarks/subjectivity.py --spc 8 --max-test 300

Needs ../shared/data/financial_phrasebank (or $FPB_TEST_SET and $FPB_TRAIN_SET).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "financial_phrasebank"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spc", type=int, default=10, help="samples per class")
    p.add_argument("--max-test", type=int, default=400, help="test rows (a seeded sample)")
    p.add_argument("--max-train", type=int, default=300, help="real train rows (a seeded sample)")
    p.add_argument("--png", default=str(ROOT / "docs" / "subjectivity.png"))
    p.add_argument("--out", default=str(ROOT / "reports"))
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("FPB_TEST_SET", str(DATA / "test.jsonl"))
    os.environ.setdefault("FPB_TRAIN_SET", str(DATA / "train.jsonl"))

    from factory.defs.local import materialize_spec
    from factory.quality.report import agreement_chart, write_subjectivity_report
    from factory.quality.stage import run_quality
    from factory.spec import load_spec
    from factory.store import Store
    from factory.training.job import JobOptions, run_job
    from factory.training.subjectivity import format_task_table, task_rows

    work = Path(tempfile.mkdtemp(prefix="subjectivity-"))
    db = work / "store"
    spec_path = work / "financial_phrasebank.yaml"
    text = (ROOT / "specs" / "financial_phrasebank.yaml").read_text()
    spec_path.write_text(text.replace("samples_per_class: 40", f"samples_per_class: {args.spc}"))
    materialize_spec(spec_path, db, through="generations")
    spec = load_spec(spec_path)
    with Store(db) as store:
        run_quality(spec, store)
    run_job(JobOptions(spec=str(spec_path), db=str(db), max_test=args.max_test, max_train=args.max_train),
            log=lambda m: print(m, file=sys.stderr))
    with Store(db, read_only=True) as store:
        rows = task_rows(store, [spec])
        page = write_subjectivity_report([spec], store, args.out)
    print(format_task_table(rows))
    for row in rows:
        if row.advice:
            print("warning:", row.advice)
    chart = agreement_chart(rows)
    if chart is not None:
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        Path(args.png).write_bytes(chart.png)
        print(f"chart: {args.png}")
    print(f"report: {page}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
