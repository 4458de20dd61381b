"""Reproduce the paper's comparison with the offline model, separating AttrPrompt's method from its values.

Usage::

    python benchmarks/reproduce.py [--datasets agnews,sst2,financial_phrasebank] [--arms simprompt,attrprompt-llm,attrprompt-gpt35,fewshot,zeroshot]
                                   [--seeds 1,2,3] [--samples-per-class 30] [--max-tokens 64] [--elicit-n 10]
                                   [--max-test 1000] [--fractions 0.1,0.25,0.5,1.0] [--out-dir DIR]
                                   [--base-url URL] [--quick]

AttrPrompt's gain over SimPrompt has two sources: the method (a prompt per sampled attribute combination)
and the quality of the attribute values (the paper's were written by GPT-3.5). The arms tell them apart:

- ``simprompt``: the class name only;
- ``attrprompt-llm``: AttrPrompt with values elicited from the generating model itself (``elicit:`` in the
  spec, so the asset graph's attributes stage elicits and locks them, ``<spec>.lock.yaml`` beside the spec);
- ``attrprompt-gpt35``: AttrPrompt with the paper's published GPT-3.5 values
  (``../shared/data/attrprompt/<dataset>/attrprompt/gpt-3.5-turbo`` through ``values_file``);
- ``fewshot``: ``fewshot_k`` real examples from the real train set (``evaluation.train_set``) per request;
- ``zeroshot``: zero-shot with the diversity prompt (an extra arm).

Both AttrPrompt arms use the same dimensions, the same numeric lengths (the paper's list) and the same
similar classes (given by hand), so they differ only in where the content values came from.

For every data set, arm and seed (``--seeds``: ``generation.seed`` and ``training.seed``, so the prompts,
the samples and the elicited values differ; the test sample stays the same, ``--test-seed``), at an equal
budget (the same samples per class, one text a request):

1. a spec is written to ``--out-dir`` and generated through the factory's asset graph
   (``materialize_spec(..., through="generations")``, the path ``factory run`` takes, elicitation
   included) into one DuckDB store, through the embedded offline model (llama-server + SmolLM2-135M) or
   ``--base-url``;
2. the quality stage runs (filters, so training uses the kept samples; diversity metrics) when
   ``factory.quality`` is installed;
3. a linear probe (MiniLM embeddings + logistic regression) is trained on nested budget subsets (the plan's
   class-interleaved order by default, ``--budget-order``) and scored on a seeded sample of the real test
   set; the rows are stored in ``evaluations``.

Then, per data set: a table of arms with the mean ± standard deviation (over seeds, ``stdev`` with n-1)
of macro-F1 and accuracy at the full budget, the F1-against-budget curve (mean ± sd at each fraction),
and for each arm the smallest budget fraction whose mean F1 reaches SimPrompt's full-budget mean; a chart
``f1_vs_budget_<dataset>.png`` (one line per arm, shaded ±sd); ``results.json`` with every run.

The defaults (2 data sets x 5 arms x 3 seeds x 30 samples per class = 2,700 requests of at most 64
tokens, plus elicitation) take hours on a 2-core machine; after each run the script prints the rate so
far and the projected generation time left. ``--quick`` (AG News, 2 seeds, 2 samples per class, 24
tokens, 2 elicited values a dimension, 2 few-shot examples, 60 test rows, fractions 0.5,1.0) runs every
arm: 10 runs, 80 requests plus elicitation; it took 4-5 minutes on a 2-core machine shared with other
jobs (load 3-6), generation and elicitation dominating. Nothing here is hard-coded: every number
printed is measured in the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
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
        "train": "agnews/train.jsonl",
        "domain": "news article",
        "data_source": "AG News",
        "classes": ["world", "sports", "business", {"name": "sci_tech", "description": "science and technology"}],
        "similar": {"world": ["business"], "sports": ["world"], "business": ["sci_tech"], "sci_tech": ["business"]},
        "attrprompt": "agnews/attrprompt/gpt-3.5-turbo",
        # name: (path under the paper's folder, per class, unit); a dimension with a unit is numeric and
        # keeps the paper's list in both AttrPrompt arms, the others are elicited in attrprompt-llm
        "attributes": {"subtopic": ("subtopics", True, None), "style": ("style/style.txt", False, None),
                       "length": ("length/length.txt", False, "words"),
                       "location": ("location/location.txt", False, None)},
    },
    "sst2": {
        "test": "sst2/test.jsonl",
        "train": "sst2/train.jsonl",
        "domain": "movie review",
        "data_source": "SST-2",
        "classes": [{"name": "negative", "description": "negative sentiment"},
                    {"name": "positive", "description": "positive sentiment"}],
        "similar": {"negative": ["positive"], "positive": ["negative"]},
        "attrprompt": "sst-2/attrprompt/gpt-3.5-turbo",
        "attributes": {"subtopic": ("subtopics", True, None), "genre": ("genre/genre.txt", False, None),
                       "style": ("style/style.txt", False, None), "length": ("length/length.txt", False, "words")},
    },
    # a subjective task (Li et al.): the test set carries per-sentence annotator agreement, so every
    # evaluation also reports accuracy per agreement bin; no published AttrPrompt values exist for it
    "financial_phrasebank": {
        "test": "financial_phrasebank/test.jsonl",
        "train": "financial_phrasebank/train.jsonl",
        "domain": "sentence from financial news",
        "data_source": "Financial PhraseBank",
        "classes": [{"name": "negative", "description": "negative for investors"},
                    {"name": "neutral", "description": "neutral for investors"},
                    {"name": "positive", "description": "positive for investors"}],
        "similar": {"negative": ["neutral"], "neutral": ["positive"], "positive": ["neutral"]},
        "attrprompt": None,
        "attributes": {},
    },
}
# arm -> (generation method, where AttrPrompt's values come from)
ARMS: dict[str, tuple[str, str | None]] = {
    "simprompt": ("simprompt", None),
    "attrprompt-llm": ("attrprompt", "elicited"),
    "attrprompt-gpt35": ("attrprompt", "gpt-3.5-turbo"),
    "fewshot": ("fewshot", None),
    "zeroshot": ("zeroshot", None),
}
BASELINE = "simprompt"


def applies(dataset: str, arm: str) -> bool:
    """AttrPrompt arms need the paper's published values for the data set."""
    return ARMS[arm][0] != "attrprompt" or DATASETS[dataset]["attrprompt"] is not None
QUICK = {"datasets": "agnews", "seeds": "1,2", "samples_per_class": 2, "max_tokens": 24, "elicit_n": 2,
         "fewshot_k": 2, "max_test": 60, "fractions": "0.5,1.0"}


def write_spec(out_dir: Path, dataset: str, arm: str, seed: int, args: argparse.Namespace, test_path: Path,
               base_url: str | None) -> Path:
    """The spec of one (dataset, arm, seed) as YAML (JSON is valid YAML)."""
    d = DATASETS[dataset]
    method, values = ARMS[arm]
    name = f"{dataset}-{arm}-s{seed}"
    spec: dict[str, Any] = {
        "name": name,
        "description": f"reproduce.py: {dataset}, arm {arm}, seed {seed}, at an equal budget",
        "domain": d["domain"],
        "data_source": d["data_source"],
        "classes": d["classes"],
        "generation": {"method": method, "model": "smollm2", "temperature": 1.0, "top_p": 0.95,
                       "max_tokens": args.max_tokens, "seed": seed, "stratified": True,
                       "max_concurrency": args.concurrency, **({"base_url": base_url} if base_url else {})},
        "budget": {"samples_per_class": args.samples_per_class},
        "filters": {"caf": False, "near_dup": 0.95, "min_words": 3},
        "evaluation": {"test_set": str(test_path)},
        "training": {"trainer": "linear_probe", "budget_fractions": args.fractions, "seed": seed},
    }
    if method == "fewshot":
        spec["evaluation"]["train_set"] = str(SHARED / d["train"])
        spec["generation"]["fewshot_k"] = args.fewshot_k
    if method == "attrprompt":
        base = SHARED / "attrprompt" / d["attrprompt"]
        attributes: dict[str, Any] = {}
        for dim, (rel, per_class, unit) in d["attributes"].items():
            if values == "elicited" and unit is None:
                attributes[dim] = {"per_class": per_class, "elicit": {"n": args.elicit_n}}
            else:
                attributes[dim] = {"values_file": str(base / rel), "per_class": per_class,
                                   **({"unit": unit} if unit else {})}
        spec["attributes"] = attributes
        spec["similar_classes"] = {"k": 1, "given": d["similar"]}
    else:
        spec["similar_classes"] = {"k": 0}
    path = out_dir / f"{name}.yaml"
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


def quality(spec: Any, store: Any, embedder: Any) -> tuple[dict[str, Any] | None, str]:
    """The quality stage (filters + diversity) when factory.quality has it; (overall diversity, note)."""
    try:
        from factory.quality.stage import run_quality
    except ImportError as exc:
        return None, f"factory.quality unavailable ({exc}); no filters, no diversity metrics"
    try:
        result = run_quality(spec, store, embedder=embedder)
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
        return None, f"quality stage failed: {type(exc).__name__}: {exc}"
    return result.diversity.get("overall", {}), f"kept {result.kept}/{result.generated}"


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1); the sd is NaN for a single value."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def pm(mean: float, sd: float) -> str:
    return f"{mean:.3f} ± {sd:.3f}" if not math.isnan(sd) else f"{mean:.3f} ± -"


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def aggregate(runs: list[dict[str, Any]], arms: list[str], fractions: list[float]) -> dict[str, dict[str, Any]]:
    """Per arm: seeds that finished, mean ± sd of the full-budget metrics and of each budget point."""
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        ok = [r for r in runs if r["arm"] == arm and r.get("error") is None]
        agg: dict[str, Any] = {"seeds": [r["seed"] for r in ok],
                               "failed": [r["seed"] for r in runs if r["arm"] == arm and r.get("error")]}
        for key in ("macro_f1", "accuracy", "requests", "tokens", "kept", "aps", "vocabulary"):
            vals = [float(r[key]) for r in ok if r.get(key) is not None]
            agg[key] = mean_sd(vals)
        curve = []
        for f in fractions:
            points = [p for r in ok for p in r["curve"] if p["fraction"] == f]
            curve.append({"fraction": f, "n": len(points),
                          "macro_f1": mean_sd([p["macro_f1"] for p in points]),
                          "accuracy": mean_sd([p["accuracy"] for p in points]),
                          "requests": mean_sd([float(p["requests"]) for p in points])})
        agg["curve"] = curve
        out[arm] = agg
    target = out.get(BASELINE, {}).get("macro_f1", (math.nan, math.nan))[0]
    for arm, agg in out.items():
        reach = next((c for c in agg["curve"] if c["n"] and not math.isnan(target)
                      and c["macro_f1"][0] >= target), None)
        agg["reaches_baseline_at"] = None if reach is None else {"fraction": reach["fraction"],
                                                                 "requests": reach["requests"][0]}
    return out


def print_dataset(dataset: str, agg: dict[str, dict[str, Any]], fractions: list[float]) -> None:
    target = agg.get(BASELINE, {}).get("macro_f1", (math.nan, math.nan))[0]
    print(f"\n== {dataset}: full budget, mean ± sd over seeds")
    head = (f"{'dataset':<8} {'arm':<17} {'seeds':>5} {'macro-F1':>15} {'accuracy':>15} {'requests':>8} "
            f"{'tokens':>8} {'kept':>6} {'APS':>6}  reaches {BASELINE} F1 ({fmt(target)}) at")
    print(head)
    print("-" * len(head))
    for arm, a in agg.items():
        if not a["seeds"]:
            print(f"{dataset:<8} {arm:<17} {0:>5} every seed failed ({a['failed']})")
            continue
        reach = a["reaches_baseline_at"]
        where = (f"fraction {reach['fraction']:g} ({reach['requests']:.0f} requests)" if reach
                 else ("-" if math.isnan(target) else "not reached"))
        print(f"{dataset:<8} {arm:<17} {len(a['seeds']):>5} {pm(*a['macro_f1']):>15} {pm(*a['accuracy']):>15} "
              f"{a['requests'][0]:>8.0f} {a['tokens'][0]:>8.0f} {a['kept'][0]:>6.1f} {fmt(a['aps'][0]):>6}  {where}"
              + (f"  (failed seeds {a['failed']})" if a["failed"] else ""))
    print(f"\n== {dataset}: macro-F1 against budget fraction, mean ± sd over seeds")
    head = f"{'arm':<17} " + " ".join(f"{f'@{f:g}':>15}" for f in fractions)
    print(head)
    print("-" * len(head))
    for arm, a in agg.items():
        print(f"{arm:<17} " + " ".join(f"{pm(*c['macro_f1']) if c['n'] else '-':>15}" for c in a["curve"]))


def plot(dataset: str, agg: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """One line per arm (mean macro-F1 against budget fraction), shaded ±sd; SimPrompt's full-budget mean dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (arm, a) in enumerate(agg.items()):
        pts = [c for c in a["curve"] if c["n"]]
        if not pts:
            continue
        xs = [c["fraction"] for c in pts]
        ms = [c["macro_f1"][0] for c in pts]
        sds = [0.0 if math.isnan(c["macro_f1"][1]) else c["macro_f1"][1] for c in pts]
        color = f"C{i % 10}"
        ax.plot(xs, ms, marker="o", color=color, label=f"{arm} (n={len(a['seeds'])})")
        ax.fill_between(xs, [m - s for m, s in zip(ms, sds)], [m + s for m, s in zip(ms, sds)], color=color,
                        alpha=0.18, linewidth=0)
    target = agg.get(BASELINE, {}).get("macro_f1", (math.nan, math.nan))[0]
    if not math.isnan(target):
        ax.axhline(target, linestyle="--", color="gray", linewidth=1, label=f"{BASELINE} full-budget mean")
    ax.set_xlabel("budget fraction (of the requests, plan order)")
    ax.set_ylabel("macro-F1 (mean ± sd over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=None, help="default agnews,sst2 (--quick: agnews)")
    p.add_argument("--arms", "--methods", dest="arms", default=",".join(ARMS), help=f"of {', '.join(ARMS)}")
    p.add_argument("--seeds", default=None, help="generation/training seeds, one run each (default 1,2,3)")
    p.add_argument("--samples-per-class", type=int, default=None, help="default 30")
    p.add_argument("--max-tokens", type=int, default=None, help="default 64")
    p.add_argument("--elicit-n", type=int, default=None, help="values elicited per dimension in attrprompt-llm (default 10)")
    p.add_argument("--fewshot-k", type=int, default=None, help="real examples per fewshot request (default 3)")
    p.add_argument("--max-test", type=int, default=None, help="test rows (seeded sample); 0 = all (default 1000)")
    p.add_argument("--fractions", default=None, help="default 0.1,0.25,0.5,1.0")
    p.add_argument("--budget-order", default="plan", choices=["plan", "generated", "interleaved"])
    p.add_argument("--test-seed", type=int, default=42, help="seed of the test sample (the same for every run)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--parallel", type=int, default=4, help="slots of the embedded server")
    p.add_argument("--base-url", default=None, help="an OpenAI-compatible endpoint instead of the embedded one")
    p.add_argument("--out-dir", default=None, help="default: a new temporary directory")
    p.add_argument("--quick", action="store_true",
                   help="every arm, tiny sizes: " + ", ".join(f"{k}={v}" for k, v in QUICK.items())
                   + " (options given explicitly win)")
    args = p.parse_args(argv)
    defaults = {"datasets": "agnews,sst2", "seeds": "1,2,3", "samples_per_class": 30, "max_tokens": 64,
                "elicit_n": 10, "fewshot_k": 3, "max_test": 1000, "fractions": "0.1,0.25,0.5,1.0"}
    for key, value in (QUICK if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.fractions = sorted({float(f) for f in args.fractions.split(",")})
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as exc:
        p.error(f"--fractions / --seeds: {exc}")
    if not seeds or len(set(seeds)) != len(seeds):
        p.error("--seeds: give distinct integers, e.g. 1,2,3")
    if any(not 0 < f <= 1 for f in args.fractions):
        p.error("--fractions must lie in (0, 1]")
    if 1.0 not in args.fractions:
        args.fractions.append(1.0)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [d for d in datasets if d not in DATASETS] + [a for a in arms if a not in ARMS]
    if unknown:
        p.error(f"unknown data sets or arms: {unknown} (arms: {', '.join(ARMS)})")
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: the real test sets and the paper's attribute lists live there", file=sys.stderr)
        return 2

    from factory.defs.local import materialization_metadata, materialize_spec
    from factory.spec import load_spec
    from factory.store import Store
    from factory.training.evaluate import load_test_set, pool_from_store, run_evaluation
    from factory.training.trainers import TrainConfig, probe_embedder

    try:
        from factory.quality.embeddings import default_embedder

        quality_embedder = default_embedder()
    except ImportError:
        quality_embedder = None

    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="reproduce-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / "reproduce.duckdb"
    print(f"out dir {out_dir}; data sets {datasets}, arms {arms}, seeds {seeds}; {args.samples_per_class} samples "
          f"per class, max_tokens {args.max_tokens}, elicit n {args.elicit_n}, test rows {args.max_test or 'all'}, "
          f"fractions {args.fractions}, budget order {args.budget_order}", flush=True)
    started = time.time()
    planned = len(seeds) * args.samples_per_class * sum(
        len(DATASETS[d]["classes"]) * sum(applies(d, a) for a in arms) for d in datasets)
    done_requests, gen_seconds = 0, 0.0
    runs: list[dict[str, Any]] = []
    aggregates: dict[str, dict[str, Any]] = {}
    charts: dict[str, str] = {}
    with ExitStack() as stack:
        base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            from factory.generation.llm.server import local_server

            server = stack.enter_context(local_server(parallel=args.parallel))
            base_url = server.base_url
            print(f"embedded server {server.model} at {base_url}", flush=True)
        store = stack.enter_context(Store(db))
        for dataset in datasets:
            test_path = sample_test(dataset, args.max_test or None, args.test_seed, out_dir)
            embedder = probe_embedder(TrainConfig())  # shared by every run: the test set is embedded once
            skipped = [a for a in arms if not applies(dataset, a)]
            if skipped:
                print(f"{dataset}: arms {', '.join(skipped)} skipped (no published AttrPrompt values)", flush=True)
            for seed in seeds:
                for arm in (a for a in arms if applies(dataset, a)):
                    run: dict[str, Any] = {"dataset": dataset, "arm": arm, "seed": seed, "method": ARMS[arm][0],
                                           "error": None}
                    runs.append(run)
                    t0 = time.time()
                    try:
                        spec_path = write_spec(out_dir, dataset, arm, seed, args, test_path, base_url)
                        spec = load_spec(spec_path)
                        result = materialize_spec(spec_path, db, spec=spec, through="generations")
                        status = materialization_metadata(result, "generations").get("status")
                        attrs_meta = materialization_metadata(result, "attribute_values")
                        gen_s = time.time() - t0
                        t1 = time.time()
                        diversity, note = quality(spec, store, quality_embedder)
                        quality_s = time.time() - t1
                        t1 = time.time()
                        pool = pool_from_store(store, spec)
                        test = load_test_set(spec)
                        rows = run_evaluation(spec, pool, test, TrainConfig.from_spec(spec), fractions=args.fractions,
                                              budget_order=args.budget_order, embedder=embedder)
                        store.save_evaluations(rows)
                        train_s = time.time() - t1
                    except Exception as exc:  # noqa: BLE001 - one failed run is reported, the others go on
                        run["error"] = f"{type(exc).__name__}: {exc}"
                        run["traceback"] = traceback.format_exc()
                        print(f"{dataset}/{arm}/seed {seed}: FAILED after {time.time() - t0:.0f}s: {run['error']}",
                              flush=True)
                        continue
                    synthetic = sorted((r for r in rows if r["train_source"] == "synthetic"),
                                       key=lambda r: r["budget_fraction"])
                    full = synthetic[-1]
                    run.update({
                        "spec": spec.name, "status": status, "samples": len(pool.examples), "kept": len(pool.kept),
                        "requests": full["requests"], "tokens": full["tokens"], "accuracy": full["accuracy"],
                        "macro_f1": full["macro_f1"], "aps": (diversity or {}).get("aps"),
                        "vocabulary": (diversity or {}).get("vocabulary_size"), "quality": note,
                        "values_per_dimension": attrs_meta.get("values_per_dimension"),
                        "lock": str(spec_path.with_name(spec_path.stem + ".lock.yaml"))
                        if spec_path.with_name(spec_path.stem + ".lock.yaml").is_file() else None,
                        "curve": [{"fraction": r["budget_fraction"], "requests": r["requests"], "n_train": r["n_train"],
                                   "macro_f1": r["macro_f1"], "accuracy": r["accuracy"]} for r in synthetic],
                        "seconds": {"generate": round(gen_s, 1), "quality": round(quality_s, 1),
                                    "train_eval": round(train_s, 1)},
                    })
                    done_requests += int(full["requests"] or 0)
                    gen_seconds += gen_s
                    rate = gen_seconds / max(done_requests, 1)
                    print(f"{dataset}/{arm}/seed {seed}: {status}, {len(pool.kept)}/{len(pool.examples)} kept ({note}); "
                          f"macro-F1 {full['macro_f1']:.3f}, accuracy {full['accuracy']:.3f}; generate {gen_s:.0f}s, "
                          f"quality {quality_s:.0f}s, train+eval {train_s:.0f}s; {rate:.1f}s a request so far, about "
                          f"{rate * max(planned - done_requests, 0) / 60:.0f} min of generation left", flush=True)
            agg = aggregate([r for r in runs if r["dataset"] == dataset], [a for a in arms if applies(dataset, a)],
                            args.fractions)
            aggregates[dataset] = agg
            chart = plot(dataset, agg, out_dir / f"f1_vs_budget_{dataset}.png",
                         f"{dataset}: linear-probe macro-F1 against budget, mean ± sd over {len(seeds)} seeds")
            charts[dataset] = str(chart)
            print(f"chart {chart}", flush=True)

    for dataset, agg in aggregates.items():
        print_dataset(dataset, agg, args.fractions)
    total = time.time() - started
    failed = [r for r in runs if r["error"]]
    (out_dir / "results.json").write_text(json.dumps(
        {"args": vars(args), "seeds": seeds, "arms": arms, "runs": runs, "aggregates": aggregates, "charts": charts,
         "seconds": total, "finished": datetime.now().isoformat()}, indent=2, default=str))
    print(f"\n{total:.0f}s in all; {len(runs) - len(failed)}/{len(runs)} runs finished; results "
          f"{out_dir / 'results.json'}, store {db}")
    for dataset, chart in charts.items():
        print(f"chart {dataset}: {chart}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
