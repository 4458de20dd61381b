"""Reproduce the paper's comparison with the offline model: SimPrompt vs AttrPrompt vs zero-shot+diversity.

Usage::

    python benchmarks/reproduce.py [--datasets agnews,sst2] [--methods simprompt,attrprompt,zeroshot]
                                   [--samples-per-class 30] [--max-tokens 64] [--max-test 1000]
                                   [--fractions 0.1,0.25,0.5,1.0] [--out-dir DIR] [--base-url URL] [--quick]

For every data set (AG News, SST-2) and method, at an equal budget (the same samples per class, one text a
request, so the same number of requests; tokens differ and are reported):

1. a spec is written to ``--out-dir`` (AttrPrompt's attribute values are the paper's published lists,
   ``../shared/data/attrprompt/<dataset>/attrprompt/gpt-3.5-turbo``, through ``values_file``; similar
   classes given by hand) and generated through the factory's asset graph (``materialize_spec(..., through="generations")``, the
   path ``factory run`` takes) into one DuckDB store, through the
   embedded offline model (llama-server + SmolLM2-135M) or ``--base-url``;
2. when ``factory.quality`` is installed, its stage runs (filters, so training uses the kept samples,
   and diversity metrics: APS, inter-class APS, vocabulary); otherwise training uses every sample that is
   not a refusal and the diversity columns read ``-``;
3. a linear probe (MiniLM embeddings + logistic regression) is trained on nested budget subsets and
   scored on the real test set (a seeded sample of ``--max-test`` rows), the rows stored in
   ``evaluations``; one chart per data set (``f1_vs_budget_<dataset>.png``) has one line per method.

The budget subsets follow the plan's order by default (``--budget-order plan``): the plan interleaves the
classes, so every prefix of it is class-balanced. ``--budget-order generated`` gives the literal order
the completions arrived in.

The default settings (2 data sets x 3 methods x 30 samples per class = 540 requests of at most 64
completion tokens) are sized for a 2-core machine: generation dominates, and SmolLM2-135M gave about 12
completion tokens/s over 4 parallel slots on a busy 2-core machine (about 45 minutes for 540 requests; an
idle machine is faster). After each method the script prints the generation rate so far and the projected
time left. ``--quick`` (3 samples per class, 24 tokens, 60 test rows) shows the whole path in a few
minutes. Nothing here is hard-coded: every number printed is measured in the run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = ROOT.parent / "shared" / "data"

DATASETS: dict[str, dict[str, Any]] = {
    "agnews": {
        "test": "agnews/test.jsonl",
        "domain": "news article",
        "data_source": "AG News",
        "classes": ["world", "sports", "business", {"name": "sci_tech", "description": "science and technology"}],
        "similar": {"world": ["business"], "sports": ["world"], "business": ["sci_tech"], "sci_tech": ["business"]},
        "attrprompt": "agnews/attrprompt/gpt-3.5-turbo",
        "attributes": {"subtopic": ("subtopics", True, None), "style": ("style/style.txt", False, None),
                       "length": ("length/length.txt", False, "words"),
                       "location": ("location/location.txt", False, None)},
    },
    "sst2": {
        "test": "sst2/test.jsonl",
        "domain": "movie review",
        "data_source": "SST-2",
        "classes": [{"name": "negative", "description": "negative sentiment"},
                    {"name": "positive", "description": "positive sentiment"}],
        "similar": {"negative": ["positive"], "positive": ["negative"]},
        "attrprompt": "sst-2/attrprompt/gpt-3.5-turbo",
        "attributes": {"subtopic": ("subtopics", True, None), "genre": ("genre/genre.txt", False, None),
                       "style": ("style/style.txt", False, None), "length": ("length/length.txt", False, "words")},
    },
}
METHODS = ("simprompt", "attrprompt", "zeroshot")


def write_spec(out_dir: Path, dataset: str, method: str, args: argparse.Namespace, test_path: Path,
               base_url: str | None) -> Path:
    """The spec of one (dataset, method) as YAML (JSON is valid YAML)."""
    d = DATASETS[dataset]
    spec: dict[str, Any] = {
        "name": f"{dataset}-{method}",
        "description": f"reproduce.py: {dataset} with {method} at an equal budget",
        "domain": d["domain"],
        "data_source": d["data_source"],
        "classes": d["classes"],
        "generation": {"method": method, "model": "smollm2", "temperature": 1.0, "top_p": 0.95,
                       "max_tokens": args.max_tokens, "seed": args.seed, "stratified": True,
                       "max_concurrency": args.concurrency, **({"base_url": base_url} if base_url else {})},
        "budget": {"samples_per_class": args.samples_per_class},
        "filters": {"caf": False, "near_dup": 0.95, "min_words": 3},
        "evaluation": {"test_set": str(test_path)},
        "training": {"trainer": "linear_probe", "budget_fractions": args.fractions, "seed": args.seed},
    }
    if method == "attrprompt":
        base = SHARED / "attrprompt" / d["attrprompt"]
        spec["attributes"] = {name: {"values_file": str(base / rel), "per_class": per_class,
                                     **({"unit": unit} if unit else {})}
                              for name, (rel, per_class, unit) in d["attributes"].items()}
        spec["similar_classes"] = {"k": 1, "given": d["similar"]}
    else:
        spec["similar_classes"] = {"k": 0}
    path = out_dir / f"{dataset}-{method}.yaml"
    path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return path


def sample_test(dataset: str, n: int | None, seed: int, out_dir: Path) -> Path:
    """A seeded random sample of the real test set (all of it when ``n`` is None or larger)."""
    rows = (SHARED / DATASETS[dataset]["test"]).read_text(encoding="utf-8").splitlines()
    if n is not None and n < len(rows):
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]
    path = out_dir / f"{dataset}_test_{len(rows)}.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def quality(spec: Any, store: Any) -> tuple[dict[str, Any] | None, str]:
    """The quality stage (filters + diversity) when factory.quality has it; (overall diversity, note)."""
    try:
        from factory.quality.stage import run_quality
    except ImportError as exc:
        return None, f"factory.quality unavailable ({exc}); no filters, no diversity metrics"
    try:
        result = run_quality(spec, store)
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
        return None, f"quality stage failed: {type(exc).__name__}: {exc}"
    return result.diversity.get("overall", {}), f"kept {result.kept}/{result.generated}"


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="agnews,sst2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--samples-per-class", type=int, default=30)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-test", type=int, default=1000, help="test rows (seeded sample); 0 = all")
    p.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    p.add_argument("--budget-order", default="plan", choices=["plan", "generated", "interleaved"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--parallel", type=int, default=4, help="slots of the embedded server")
    p.add_argument("--base-url", default=None, help="an OpenAI-compatible endpoint instead of the embedded one")
    p.add_argument("--out-dir", default=None, help="default: a new temporary directory")
    p.add_argument("--quick", action="store_true", help="tiny sizes: shows the whole path in minutes")
    args = p.parse_args(argv)
    if args.quick:
        args.samples_per_class, args.max_tokens, args.max_test, args.fractions = 3, 24, 60, "0.5,1.0"
    args.fractions = [float(f) for f in args.fractions.split(",")]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [d for d in datasets if d not in DATASETS] + [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown data sets or methods: {unknown}")
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: the real test sets and the paper's attribute lists live there", file=sys.stderr)
        return 2

    from factory.defs.local import materialization_metadata, materialize_spec
    from factory.training.evaluate import format_table, load_test_set, plot_f1_vs_budget, pool_from_store, run_evaluation
    from factory.spec import load_spec
    from factory.store import Store
    from factory.training.trainers import TrainConfig, probe_embedder

    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="reproduce-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / "reproduce.duckdb"
    print(f"out dir {out_dir}; {len(datasets)} data sets x {len(methods)} methods, {args.samples_per_class} samples "
          f"per class, max_tokens {args.max_tokens}, test rows {args.max_test or 'all'}, fractions {args.fractions}",
          flush=True)
    started = time.time()
    planned = len(methods) * sum(len(DATASETS[d]["classes"]) for d in datasets) * args.samples_per_class
    done_requests, gen_seconds = 0, 0.0
    summary: list[dict[str, Any]] = []
    all_rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            from factory.generation.llm.server import local_server

            server = stack.enter_context(local_server(parallel=args.parallel))
            base_url = server.base_url
            print(f"embedded server {server.model} at {base_url}", flush=True)
        store = stack.enter_context(Store(db))
        for dataset in datasets:
            test_path = sample_test(dataset, args.max_test or None, args.seed, out_dir)
            embedder = probe_embedder(TrainConfig())  # shared by the methods: the test set is embedded once
            dataset_rows = []
            for method in methods:
                spec_path = write_spec(out_dir, dataset, method, args, test_path, base_url)
                spec = load_spec(spec_path)
                t0 = time.time()
                status = materialization_metadata(materialize_spec(spec_path, db, spec=spec, through="generations"),
                                                  "generations")["status"]
                gen_s = time.time() - t0
                t0 = time.time()
                diversity, note = quality(spec, store)
                quality_s = time.time() - t0
                t0 = time.time()
                pool = pool_from_store(store, spec)
                test = load_test_set(spec)
                rows = run_evaluation(spec, pool, test, TrainConfig.from_spec(spec), fractions=args.fractions,
                                      budget_order=args.budget_order, embedder=embedder,
                                      log=lambda m: print("  " + m, flush=True))
                store.save_evaluations(rows)
                train_s = time.time() - t0
                full = max(rows, key=lambda r: r["budget_fraction"])
                summary.append({
                    "dataset": dataset, "method": method, "status": status, "samples": len(pool.examples),
                    "kept": len(pool.kept), "sample_source": pool.source, "requests": full["requests"],
                    "tokens": full["tokens"], "accuracy": full["accuracy"], "macro_f1": full["macro_f1"],
                    "aps": (diversity or {}).get("aps"), "inter_class_aps": (diversity or {}).get("inter_class_aps"),
                    "vocabulary": (diversity or {}).get("vocabulary_size"), "quality": note,
                    "curve": [(r["requests"], round(r["macro_f1"], 4)) for r in sorted(rows, key=lambda r: r["requests"])],
                    "seconds": {"generate": round(gen_s, 1), "quality": round(quality_s, 1), "train_eval": round(train_s, 1)},
                })
                done_requests += int(full["requests"] or 0)
                gen_seconds += gen_s
                rate = gen_seconds / max(done_requests, 1)
                print(f"{dataset}/{method}: {status}, {len(pool.kept)}/{len(pool.examples)} kept ({note}); "
                      f"macro-F1 {full['macro_f1']:.3f}; generate {gen_s:.0f}s, quality {quality_s:.0f}s, "
                      f"train+eval {train_s:.0f}s; {rate:.1f}s a request so far, about "
                      f"{rate * max(planned - done_requests, 0) / 60:.0f} min of generation left", flush=True)
                named = [dict(r, spec_name=spec.name) for r in rows]
                dataset_rows += named
            chart = plot_f1_vs_budget(dataset_rows, out_dir / f"f1_vs_budget_{dataset}.png",
                                      title=f"{dataset}: linear-probe macro-F1 against budget (offline SmolLM2)")
            print(f"chart {chart}", flush=True)
            all_rows += dataset_rows

    print()
    head = (f"{'dataset':<8} {'method':<11} {'kept':>9} {'requests':>8} {'tokens':>8} {'acc':>6} {'macroF1':>7} "
            f"{'APS':>6} {'interAPS':>8} {'vocab':>6}  F1 vs requests")
    print(head)
    print("-" * len(head))
    for s in summary:
        curve = "  ".join(f"{r}:{f:.3f}" for r, f in s["curve"])
        print(f"{s['dataset']:<8} {s['method']:<11} {str(s['kept']) + '/' + str(s['samples']):>9} {s['requests']:>8} "
              f"{s['tokens']:>8} {s['accuracy']:>6.3f} {s['macro_f1']:>7.3f} {fmt(s['aps']):>6} "
              f"{fmt(s['inter_class_aps']):>8} {fmt(s['vocabulary'], 'd'):>6}  {curve}")
    print()
    print(format_table(all_rows))
    total = time.time() - started
    (out_dir / "results.json").write_text(json.dumps({"args": vars(args), "summary": summary, "seconds": total,
                                                      "finished": datetime.now().isoformat()}, indent=2, default=str))
    print(f"\n{total:.0f}s in all; results {out_dir / 'results.json'}, store {db}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
