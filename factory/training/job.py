"""The train-and-evaluate job: ``python -m factory.training.job``.

Trains a classifier on a spec's generated samples and scores it on a real test set, for every comparison
(``synthetic``, ``gold``, ``synthetic+gold``) and, for ``synthetic``, at every budget fraction (F1 against
budget). The same command runs standalone, under Dagster Pipes (``PipesSubprocessClient`` locally,
``PipesK8sClient`` in a pod), or as a container's command; nothing in it depends on where it runs.

Inputs (command-line arguments; under Pipes also the *extras* of the same names, underscores for dashes;
an argument given on the command line wins over the extra)::

    --spec PATH            the dataset spec (extra ``spec``; or extra ``spec_yaml``: the spec's YAML text)
    --db STORE             the store (a folder, or postgres:CONNINFO with $FACTORY_DATA_PATH and $PGPASSWORD):
                           read the spec's samples from it, write ``evaluations`` rows
    --snapshot N           read the store as it was at snapshot N (read-only: the rows are reported, not
                           written; the launching run records them). A job pod reads a run's data this way.
    --samples FILE         exported samples (.parquet/.jsonl from ``factory export``) instead of --db
    --test-set PATH        the real test set (default: the spec's evaluation.test_set)
    --train-set PATH       the real train set for gold / synthetic+gold (default: evaluation.train_set)
    --trainer NAME         linear_probe | finetune (default: training.trainer)
    --compare LIST         synthetic,gold,synthetic+gold (default: evaluation.compare)
    --fractions LIST       budget fractions, e.g. 0.05,0.1,0.25,0.5,1.0 (default: training.budget_fractions)
    --budget-order ORDER   generated (default: the order requests were spent) | interleaved (round-robin
                           over classes: a class-balanced run's order)
    --max-test N           score on a seeded random sample of N test rows (default: all)
    --max-train N          a seeded random sample of N rows of the real train set (default: all)
    --seed N               the trainer's seed (default: training.seed)
    --out FILE             the results JSON (always written when given; the job prints a table anyway)
    --chart FILE.png       chart F1 against requests, tokens and USD

Outputs: the results JSON (``--out``); with ``--db``, the rows in ``evaluations`` (one transaction); under
Pipes, the log lines, one asset materialization whose metadata is :func:`materialization_metadata` (when
the step is an asset step) and one custom message ``{"results": ...}`` with the whole results dict.
Exit status: 0 done, 2 a problem with the inputs (message on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from factory.training.evaluate import (
    BUDGET_ORDERS,
    COMPARISONS,
    EvaluationError,
    budget_points,
    format_table,
    headline,
    load_test_set,
    load_train_set,
    plot_f1_vs_budget,
    pool_from_file,
    pool_from_store,
    run_evaluation,
)
from factory.spec import Spec, SpecError, load_spec, parse_spec

PIPES_CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"
PIPES_CONTEXT_ARG = "--dagster-pipes-context"
EXTRAS = ("spec", "spec_yaml", "db", "snapshot", "samples", "test_set", "train_set", "trainer", "compare", "fractions",
          "budget_order", "max_test", "max_train", "seed", "out", "chart", "asset_key", "no_progress")


@dataclass
class JobOptions:
    """Everything the job needs; ``None`` means "the spec's value"."""

    spec: str | None = None
    spec_yaml: str | None = None
    db: str | None = None
    snapshot: int | None = None
    samples: str | None = None
    test_set: str | None = None
    train_set: str | None = None
    trainer: str | None = None
    compare: list[str] | None = None
    fractions: list[float] | None = None
    budget_order: str = "plan"
    max_test: int | None = None
    max_train: int | None = None
    seed: int | None = None
    out: str | None = None
    chart: str | None = None
    show_progress: bool = False
    asset_key: str | None = None


def _split(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def _fractions(value: Any) -> list[float] | None:
    items = _split(value)
    if items is None:
        return None
    try:
        return [float(v) for v in items]
    except ValueError:
        raise EvaluationError(f"--fractions: {value!r} is not a comma-separated list of numbers") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m factory.training.job",
                                description="Train classifiers on a spec's generated data and score them on a "
                                            "real test set (also F1 against budget). Runs standalone or under "
                                            "Dagster Pipes (arguments may then come as extras).")
    p.add_argument("--spec", help="the dataset spec (YAML)")
    p.add_argument("--db", help="the store (folder or postgres:CONNINFO): samples come from it, evaluations go to it")
    p.add_argument("--snapshot", type=int, help="read the store at this snapshot (read-only; nothing is written)")
    p.add_argument("--samples", help="exported samples (.parquet or .jsonl) instead of reading --db")
    p.add_argument("--test-set", help="the real test set (default: the spec's evaluation.test_set)")
    p.add_argument("--train-set", help="the real train set for gold comparisons (default: evaluation.train_set)")
    p.add_argument("--trainer", choices=["linear_probe", "finetune"], help="default: training.trainer")
    p.add_argument("--compare", help=f"comma-separated, of {', '.join(COMPARISONS)} (default: evaluation.compare)")
    p.add_argument("--fractions", help="comma-separated budget fractions (default: training.budget_fractions)")
    p.add_argument("--budget-order", choices=BUDGET_ORDERS, help="spend order of the budget subsets")
    p.add_argument("--max-test", type=int, help="score on a seeded random sample of N test rows")
    p.add_argument("--max-train", type=int, help="a seeded random sample of N real train rows")
    p.add_argument("--seed", type=int, help="the trainer's seed (default: training.seed)")
    p.add_argument("--out", help="write the results JSON here")
    p.add_argument("--chart", help="write the F1-vs-budget chart (PNG) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # set by Dagster's CLI-argument params loader; read by dagster_pipes, not by us
    p.add_argument(PIPES_CONTEXT_ARG, help=argparse.SUPPRESS)
    p.add_argument("--dagster-pipes-messages", help=argparse.SUPPRESS)
    return p


def options_from(argv: Sequence[str] | None, extras: Mapping[str, Any] | None = None) -> JobOptions:
    """Command-line arguments over Pipes extras (same names, underscores for dashes)."""
    args = build_parser().parse_args(argv)
    extras = dict(extras or {})
    unknown = sorted(set(extras) - set(EXTRAS))
    if unknown:
        raise EvaluationError(f"unknown Pipes extras {unknown}; known: {', '.join(EXTRAS)}")

    def pick(name: str) -> Any:
        value = getattr(args, name, None)
        return value if value is not None else extras.get(name)

    opts = JobOptions(
        spec=pick("spec"), spec_yaml=extras.get("spec_yaml"), db=pick("db"), samples=pick("samples"),
        snapshot=None if pick("snapshot") is None else int(pick("snapshot")),
        test_set=pick("test_set"), train_set=pick("train_set"), trainer=pick("trainer"),
        compare=_split(pick("compare")), fractions=_fractions(pick("fractions")),
        budget_order=pick("budget_order") or "plan", max_test=pick("max_test"), max_train=pick("max_train"),
        seed=pick("seed"), out=pick("out"), chart=pick("chart"),
        show_progress=not args.no_progress and not extras.get("no_progress") and sys.stderr.isatty(),
        asset_key=extras.get("asset_key"),
    )
    if not (opts.spec or opts.spec_yaml):
        raise EvaluationError("--spec is required (or the Pipes extra 'spec' / 'spec_yaml')")
    if not (opts.db or opts.samples):
        raise EvaluationError("give --db (read the spec's samples from the store) or --samples FILE")
    if opts.snapshot is not None and not opts.db:
        raise EvaluationError("--snapshot needs --db (the store to read at that snapshot)")
    return opts


def _load(opts: JobOptions) -> Spec:
    if opts.spec:
        return load_spec(opts.spec)
    return parse_spec(str(opts.spec_yaml), file="<pipes extra spec_yaml>")


def default_compare(spec: Spec, train_set: str | None = None) -> list[str]:
    """The spec's ``evaluation.compare``; where it is not written and a real train set is at hand (``train_set``,
    else the spec's ``evaluation.train_set``), all three (synthetic, gold, synthetic+gold) while that file
    exists, so the gap to real data is measured."""
    if "compare" in spec.evaluation.model_fields_set:
        return list(spec.evaluation.compare)
    real = Path(train_set).is_file() if train_set else spec.existing_file(spec.evaluation.train_set) is not None
    return list(COMPARISONS) if real else list(spec.evaluation.compare)


def run_job(opts: JobOptions, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)
            ) -> dict[str, Any]:
    """Run the job in this process; return the results dict (and write --out, --chart, the DB rows)."""
    from factory.store import Store
    from factory.training.trainers import TrainConfig

    started = time.time()
    spec = _load(opts)
    config = TrainConfig.from_spec(spec, opts.trainer, opts.show_progress)
    if opts.seed is not None:
        config.seed = int(opts.seed)
    compare = opts.compare or default_compare(spec, opts.train_set)
    fractions = opts.fractions or list(spec.training.budget_fractions)
    bad = [c for c in compare if c not in COMPARISONS]
    if bad:
        raise EvaluationError(f"--compare: {bad} not valid; use {', '.join(COMPARISONS)}")
    if opts.budget_order not in BUDGET_ORDERS:
        raise EvaluationError(f"--budget-order {opts.budget_order!r}: use one of {', '.join(BUDGET_ORDERS)}")
    job_id = uuid.uuid4().hex[:12]
    # inputs first: a bad test set fails in a second, before any training
    test = load_test_set(spec, opts.test_set, opts.max_test, config.seed)
    gold = (load_train_set(spec, opts.train_set, opts.max_train, config.seed)
            if any("gold" in c for c in compare) else None)
    pool = None
    if any(c != "gold" for c in compare):
        if opts.samples:
            pool = pool_from_file(Path(opts.samples), spec)
        else:
            with Store(opts.db, read_only=True, snapshot=opts.snapshot) as store:
                pool = pool_from_store(store, spec)
        for w in pool.warnings:
            log(f"warning: {w}")
        log(f"{spec.name}: {len(pool.examples)} samples ({len(pool.kept)} kept, from {pool.source}), "
            f"{len(pool.spend)} requests; test set {test.path}: {len(test)} rows")
    rows = run_evaluation(spec, pool, test, config, compare=compare, fractions=fractions, gold=gold,
                          budget_order=opts.budget_order, log=log, job_id=job_id)
    written = 0
    if opts.db and opts.snapshot is None:
        with Store(opts.db) as store:
            if opts.spec and Path(opts.spec).is_file():
                store.record_spec(spec, Path(opts.spec).read_text(encoding="utf-8"))
            written = store.save_evaluations(rows)
        log(f"wrote {written} evaluations rows to {opts.db}")
    chart = None
    if opts.chart:
        chart = str(plot_f1_vs_budget([dict(r, spec_name=spec.name) for r in rows], opts.chart,
                                      title=f"{spec.name}: macro-F1 against budget ({config.trainer})"))
        log(f"wrote the chart {chart}")
    top = headline(rows) or {}
    results = {
        "job": {"id": job_id, "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(),
                "seconds": round(time.time() - started, 2)},
        "spec": {"name": spec.name, "hash": spec.hash, "task": spec.task, "method": spec.generation.method,
                 "classes": spec.class_names, "path": opts.spec},
        "inputs": {"db": opts.db, "samples": opts.samples, "test_set": test.path,
                   "train_set": gold.path if gold else None, "out": opts.out},
        "trainer": config.trainer,
        "compare": compare,
        "fractions": sorted(set(fractions)),
        "budget_order": opts.budget_order,
        "sample_source": pool.source if pool else None,
        "n_samples": len(pool.examples) if pool else 0,
        "n_kept": len(pool.kept) if pool else 0,
        "n_requests": len(pool.spend) if pool else 0,
        "n_test": len(test),
        "headline": {k: top.get(k) for k in ("train_source", "budget_fraction", "n_train", "accuracy",
                                               "macro_f1", "micro_f1", "requests", "tokens", "cost_usd")},
        "budget_curve": budget_points(rows),
        "evaluations": rows,
        "db_rows_written": written,
        "chart": chart,
        "warnings": pool.warnings if pool else [],
    }
    if opts.out:
        Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.out).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        log(f"wrote the results {opts.out}")
    return results


def _table(records: list[dict[str, Any]], types: Mapping[str, str]) -> dict[str, Any]:
    """A Pipes ``table`` metadata value."""
    return {"type": "table", "raw_value": {"schema": [{"name": k, "type": t} for k, t in types.items()],
                                           "records": [{k: r.get(k) for k in types} for r in records]}}


def materialization_metadata(results: Mapping[str, Any]) -> dict[str, Any]:
    """The asset materialization metadata: headline accuracy / macro-F1 / micro-F1 / n_train / n_test,
    ``per_class_f1`` (table), ``f1_vs_budget`` (table), ``comparisons`` (table), ``confusion`` (json) and the
    paths of the results and the chart where written."""
    top = results["headline"]
    rows = results["evaluations"]
    best = next((r for r in rows if r["train_source"] == top.get("train_source")
                 and r["budget_fraction"] == top.get("budget_fraction")), rows[0] if rows else {})
    per_class = [dict(v, **{"class": k}) for k, v in (best.get("per_class") or {}).items()]
    meta: dict[str, Any] = {
        "accuracy": {"type": "float", "raw_value": float(top.get("accuracy") or 0.0)},
        "macro_f1": {"type": "float", "raw_value": float(top.get("macro_f1") or 0.0)},
        "micro_f1": {"type": "float", "raw_value": float(top.get("micro_f1") or 0.0)},
        "n_train": {"type": "int", "raw_value": int(top.get("n_train") or 0)},
        "n_test": {"type": "int", "raw_value": int(results["n_test"])},
        "train_source": {"type": "text", "raw_value": str(top.get("train_source"))},
        "trainer": {"type": "text", "raw_value": results["trainer"]},
        "spec_name": {"type": "text", "raw_value": results["spec"]["name"]},
        "spec_hash": {"type": "text", "raw_value": results["spec"]["hash"]},
        "method": {"type": "text", "raw_value": str(results["spec"]["method"])},
        "requests": {"type": "int", "raw_value": int(top.get("requests") or 0)},
        "tokens": {"type": "int", "raw_value": int(top.get("tokens") or 0)},
        "cost_usd": {"type": "float", "raw_value": float(top.get("cost_usd") or 0.0)},
        "per_class_f1": _table(per_class, {"class": "string", "precision": "float", "recall": "float",
                                           "f1": "float", "support": "int"}),
        "f1_vs_budget": _table(results["budget_curve"], {"fraction": "float", "requests": "int", "tokens": "int",
                                                         "cost_usd": "float", "n_train": "int",
                                                         "accuracy": "float", "macro_f1": "float"}),
        "comparisons": _table(rows, {"train_source": "string", "budget_fraction": "float", "n_train": "int",
                                     "accuracy": "float", "macro_f1": "float", "micro_f1": "float"}),
        "confusion": {"type": "json", "raw_value": best.get("confusion") or {}},
        "eval_ids": {"type": "json", "raw_value": [r["eval_id"] for r in rows]},
    }
    if results["inputs"].get("out"):
        meta["results"] = {"type": "path", "raw_value": results["inputs"]["out"]}
    if results.get("chart"):
        meta["chart"] = {"type": "path", "raw_value": results["chart"]}
    return meta


def _pipes_params_loader() -> Any | None:
    """The Pipes params loader when Dagster launched this process (env var or CLI argument), else None."""
    if os.environ.get(PIPES_CONTEXT_ENV):
        from dagster_pipes import PipesEnvVarParamsLoader

        return PipesEnvVarParamsLoader()
    if PIPES_CONTEXT_ARG in sys.argv:
        from dagster_pipes import PipesCliArgsParamsLoader

        return PipesCliArgsParamsLoader()
    return None


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    loader = _pipes_params_loader()
    try:
        if loader is None:
            opts = options_from(argv)
            results = run_job(opts)
            print(format_table(results["evaluations"]))
            return 0
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes(params_loader=loader) as pipes:
            opts = options_from(argv, pipes.extras)

            def log(message: str) -> None:
                print(message, file=sys.stderr, flush=True)
                pipes.log.info(message)

            results = run_job(opts, log)
            meta = materialization_metadata(results)
            if pipes.is_asset_step:
                pipes.report_asset_materialization(metadata=meta, asset_key=opts.asset_key)
            pipes.report_custom_message({"results": _json_safe(results)})
            print(format_table(results["evaluations"]))
        return 0
    except _input_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _input_errors() -> tuple[type[BaseException], ...]:
    """Problems with the job's inputs: exit status 2 and a one-line message, no traceback."""
    from factory.datasets import DataFileError
    from factory.store import StoreError
    from factory.training.trainers import TrainerError

    return (SpecError, EvaluationError, DataFileError, TrainerError, StoreError, FileNotFoundError)


# ---- the orchestrator's building blocks ------------------------------------------------------------


def train_job_command(python: str | None = None) -> list[str]:
    """The job's command (arguments come as Pipes extras): ``[python, -m, factory.training.job]``; in a
    container image ``["python", "-m", "factory.training.job"]``."""
    return [python or sys.executable, "-m", "factory.training.job"]


def pipes_extras(spec_path: str | Path | None = None, db_path: str | Path | None = None, *,
                 snapshot: int | None = None, spec_yaml: str | None = None, samples: str | Path | None = None,
                 test_set: str | Path | None = None, train_set: str | Path | None = None,
                 trainer: str | None = None, compare: Sequence[str] | None = None,
                 fractions: Sequence[float] | None = None, budget_order: str | None = None,
                 max_test: int | None = None, max_train: int | None = None, seed: int | None = None,
                 out: str | Path | None = None, chart: str | Path | None = None,
                 asset_key: str | None = None) -> dict[str, Any]:
    """The Pipes extras for the job (paths as the job's process will see them); ``None`` values are left
    out, so the spec's own settings apply."""
    values = {"spec": spec_path, "db": db_path, "snapshot": snapshot, "spec_yaml": spec_yaml, "samples": samples, "test_set": test_set,
              "train_set": train_set, "trainer": trainer, "compare": list(compare) if compare else None,
              "fractions": [float(f) for f in fractions] if fractions else None, "budget_order": budget_order,
              "max_test": max_test, "max_train": max_train, "seed": seed, "out": out, "chart": chart,
              "asset_key": asset_key, "no_progress": True}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items() if v is not None}


def reported_results(invocation: Any) -> dict[str, Any]:
    """The results a finished job reported through Pipes (its last ``results`` message), whatever ran it."""
    messages = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "results" in m]
    if not messages:
        raise RuntimeError("the train job ended without reporting its results")
    return messages[-1]["results"]


def run_train_job_local(spec_path: str | Path, db_path: str | Path | None = None, *, context: Any = None,
                        env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                        **options: Any) -> dict[str, Any]:
    """Run ``python -m factory.training.job`` through ``dagster.PipesSubprocessClient``; return the results.

    Inside a Dagster asset pass its ``context``: the job's materialization lands on that asset (return
    ``results["materialize_result"]`` from the asset). Without one, a one-asset job
    ``train_<spec name>`` is materialized on an ephemeral instance. ``options`` are :func:`pipes_extras`'
    keyword arguments. The results dict gains ``materialization_metadata`` (the metadata as Dagster saw it,
    values unwrapped) and, with a context, ``materialize_result``.
    """
    import dagster as dg

    extras = pipes_extras(spec_path, db_path, **options)
    captured: dict[str, Any] = {}

    def launch(ctx: Any) -> Any:
        invocation = dg.PipesSubprocessClient(cwd=str(cwd) if cwd else None).run(
            command=train_job_command(), context=ctx, extras=extras, env=dict(env or {}))
        captured["results"] = reported_results(invocation)
        return invocation.get_materialize_result()

    if context is not None:
        result = launch(context)
        out = dict(captured["results"])
        out["materialize_result"] = result
        out["materialization_metadata"] = {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}
        return out

    name = "train_" + "".join(ch if ch.isalnum() else "_" for ch in Path(spec_path).stem)

    @dg.asset(name=name)
    def _train(context):  # noqa: ANN001, ANN202 - no string annotations: dagster resolves them at definition
        return launch(context)

    outcome = dg.materialize([_train], instance=dg.DagsterInstance.ephemeral(), raise_on_error=True)
    events = outcome.asset_materializations_for_node(name)
    out = dict(captured["results"])
    out["materialization_metadata"] = {k: getattr(v, "value", v)
                                       for k, v in (events[-1].metadata if events else {}).items()}
    return out


if __name__ == "__main__":
    sys.exit(main())
