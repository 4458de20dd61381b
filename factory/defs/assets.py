"""The factory's assets, in the order of the data, partitioned by spec. Thin: each calls one stage module
and attaches metadata. The spec is parsed once (the ``spec`` asset); the attribute set and the plan are
handed on as asset values (see :mod:`factory.defs.io`); the data itself lives in the store's tables."""


import base64
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from dagster import (
    ResourceParam,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetOut,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from factory.attributes.lock import LockFile, lock_quality, noisy_warnings, quality_rows
from factory.attributes.stage import resolve_attributes
from factory.attributes.values import AttributeSet
from factory.defs import checks
from factory.defs.resources import EmbedderResource, LLMResource, RunOptions, SpecCatalog, StoreResource
from factory.defs.runners import KubernetesTrainRunner, StagedJob, TrainJobRunner
from factory.generation.plan import Plan, fewshot_examples
from factory.generation.run import generation_stage
from factory.spec import Spec
from factory.store import Store
from factory.training.subjectivity import TaskRow, task_row
from factory.training.subjectivity import advice as subjectivity_advice

SPECS = DynamicPartitionsDefinition(name="spec")
GROUP = "factory"
PREVIEW_UNITS = 1000  # units of the plan rendered for the prompts asset's metadata


def _values_table(attrs: AttributeSet) -> str:
    rows = ["| dimension | class | values |", "|---|---|---|"]
    for dim, by_class in attrs.values.items():
        for cls, values in by_class.items():
            rows.append(f"| {dim} | {cls or 'all'} | {', '.join(values)} |")
    return "\n".join(rows)


@asset(partitions_def=SPECS, group_name=GROUP, description="The validated spec, recorded with its content hash.")
def spec(context: AssetExecutionContext, specs: ResourceParam[SpecCatalog], store: StoreResource) -> Output[Spec]:
    s = specs.load(context.partition_key)
    with store.open() as st:
        st.record_spec(s, s.text())
    return Output(s, metadata={
        "spec_hash": s.hash, "path": str(s.source or ""), "classes": MetadataValue.json(s.class_names),
        "method": s.generation.method, "model": s.generation.model, "samples_per_class": s.budget.samples_per_class,
        "dimensions": MetadataValue.json(list(s.attributes))})


def _caf_metadata(lock: LockFile | None) -> dict[str, Any]:
    decisions = [d for by_class in (lock.caf.values() if lock else []) for ds in by_class.values() for d in ds]
    return {"judged": len(decisions), "dropped": sum(d.dropped for d in decisions),
            "dropped_values": MetadataValue.json([d.value for d in decisions if d.dropped][:50])}


def _quality_metadata(spec: Spec, lock: LockFile | None) -> dict[str, Any]:
    """The elicitation quality of the lock's values: a table, the rows as JSON, the noisy lists."""
    if lock is None:
        return {}
    quality = lock_quality(spec, lock)
    rows = quality_rows(quality)
    table = "| dimension | class | values | degenerate | kinds | mean cosine |\n|---|---|---|---|---|---|\n" + "".join(
        f"| {r['dimension']} | {r['class']} | {r['values']} | {r['degenerate']} | {r['kinds']} | "
        f"{'skipped' if r['mean_cosine'] is None else r['mean_cosine']} |\n" for r in rows)
    return {"elicitation_quality": MetadataValue.md(table),
            "elicitation_quality_rows": MetadataValue.json(rows),
            "noisy_value_lists": MetadataValue.json(noisy_warnings(quality))}


@multi_asset(
    partitions_def=SPECS, group_name=GROUP,
    outs={"similar_classes": AssetOut(description="The k most similar classes of each class."),
          "attribute_values": AssetOut(description="Values of every attribute dimension the method uses (per "
                                                   "class where class-dependent), given or elicited."),
          "caf_filtered_values": AssetOut(description="The attribute set prompts sample from: class-dependent "
                                                      "values left after class-agnostic filtering.")},
)
def attributes(context: AssetExecutionContext, spec: Spec, store: StoreResource, llm: LLMResource,
               options: RunOptions):  # type: ignore[no-untyped-def]
    with store.open() as st, store.lease(st, spec.name, context.run.run_id, context.log):
        attrs, lock = resolve_attributes(spec, st, llm.endpoints, refresh=options.refresh)
        version, _ = st.latest_elicitation(spec.hash)
    similar = "\n".join(f"- **{c}**: {', '.join(v) or '-'}" for c, v in attrs.similar.items())
    yield Output(None, "similar_classes", metadata={"similar": MetadataValue.md(similar or "(none)"),
                                                    "version": version})
    yield Output(None, "attribute_values", metadata={
        "values": MetadataValue.md(_values_table(attrs)),
        "values_per_dimension": MetadataValue.json({d: sum(len(v) for v in bc.values())
                                                     for d, bc in attrs.values.items()}),
        "locked": lock is not None, **_quality_metadata(spec, lock)})
    yield Output(attrs, "caf_filtered_values", metadata=_caf_metadata(lock))


@asset(partitions_def=SPECS, group_name=GROUP,
       description="The plan: every request (or conversation), seeded, reproducible, and interleaved across "
                   "classes so that every prefix is balanced.")
def prompts(context: AssetExecutionContext, spec: Spec, caf_filtered_values: AttributeSet) -> Output[Plan]:
    plan = Plan(spec, caf_filtered_values, fewshot_examples(spec))
    preview = plan.head(PREVIEW_UNITS)
    example = preview[0].messages[-1]["content"] if preview else ""
    return Output(plan, metadata={
        "requests": plan.requests, "samples": plan.samples,
        "combinations": MetadataValue.json(plan.combinations()),
        "example_prompt": MetadataValue.md(f"```\n{example}\n```"),
        "distinct_prompts_in_preview": len({plan.request(u).prompt_hash for u in preview}),
        "preview_units": len(preview),
        "preview_per_class": MetadataValue.json(Counter(u.class_name for u in preview))})


@asset(partitions_def=SPECS, group_name=GROUP,
       check_specs=[AssetCheckSpec("budget_not_exceeded", asset="generations"),
                    AssetCheckSpec("classes_balanced", asset="generations")],
       description="Generated texts with full provenance, through the spec's endpoint (resumable).")
def generations(context: AssetExecutionContext, prompts: Plan, store: StoreResource, llm: LLMResource,
                options: RunOptions) -> MaterializeResult:
    s = prompts.spec
    with store.open() as st, store.lease(st, s.name, context.run.run_id, context.log):
        result = generation_stage(prompts, st, llm.endpoints, options.show_progress)
        per_class = st.class_counts(s.hash)
        spent = st.spend_for_spec(s.hash)
    r = result.report
    context.log.info(f"run {result.run_id}: {result.status}, {r.samples} samples ({r.new_samples} new)")
    return MaterializeResult(
        metadata={"run_id": result.run_id, "status": result.status, "samples": r.samples, "new_samples": r.new_samples,
                  "refusals": r.refusals, "requests_sent": r.sent, "requests_cached": r.cached,
                  "requests_failed": r.failed, "tokens": r.tokens, "spend_usd": r.usd, "per_class": MetadataValue.json(per_class),
                  "stopped_by_budget": r.stopped or "no"},
        check_results=[checks.budget_check(s, spent), checks.balance_check(s, per_class)])


def _chart_md(chart: Any) -> MetadataValue:
    return MetadataValue.md(f"![{chart.title}]({chart.data_uri})\n\n{chart.caption}")


@multi_asset(
    partitions_def=SPECS, group_name=GROUP, deps=[generations],
    outs={"filtered_samples": AssetOut(description="Samples kept by the filters (refusals, duplicates, "
                                                   "near-duplicates, length, label consistency)."),
          "embeddings": AssetOut(description="all-MiniLM-L6-v2 embeddings of the samples, cached by text hash."),
          "diversity_metrics": AssetOut(description="Diversity per class and overall, closeness to real data, "
                                                    "and attribute bias (asked vs shown).")},
    check_specs=[AssetCheckSpec("min_samples_per_class", asset="filtered_samples"),
                 AssetCheckSpec("near_duplicate_rate", asset="filtered_samples")],
)
def quality(context: AssetExecutionContext, spec: Spec, store: StoreResource, llm: LLMResource,
            embedder: EmbedderResource, options: RunOptions):  # type: ignore[no-untyped-def]
    from factory.quality.report import diversity_chart, funnel_chart, report_data
    from factory.quality.stage import run_quality

    s = spec
    with store.open() as st:
        endpoint = llm.endpoints.endpoint(s.generation) if s.filters.label_consistency == "llm" else None
        result = run_quality(s, st, show_progress=options.show_progress, embedder=embedder.get(), endpoint=endpoint)
        data = report_data(s, st)
        kept_by_class = Counter(r["class"] for r in st.kept_samples(s.hash))
    funnel, diversity = funnel_chart(data), diversity_chart(data)
    for note in result.notes:
        context.log.info(note)
    overall = {k: v for k, v in result.diversity["overall"].items() if v is not None}
    yield Output(None, "filtered_samples", metadata={
        "generated": result.generated, "kept": result.kept, "dropped": MetadataValue.json(result.dropped),
        "kept_per_class": MetadataValue.json(dict(kept_by_class)),
        **({"funnel": _chart_md(funnel)} if funnel else {})})
    yield checks.min_samples_check(s, dict(kept_by_class))
    yield checks.near_dup_check(result.dropped, result.generated)
    yield Output(None, "embeddings", metadata={"encoded_now": result.encoded, "texts": result.generated,
                                               "model": "all-MiniLM-L6-v2"})
    yield Output(None, "diversity_metrics", metadata={
        **{k: float(v) for k, v in overall.items() if isinstance(v, (int, float))},
        "bias_dimensions": MetadataValue.json([b.dimension for b in result.bias]),
        **({"diversity": _chart_md(diversity)} if diversity else {}), "notes": MetadataValue.json(result.notes)})


def _pinned_snapshot(s: Spec, store: Store) -> tuple[int, int | None]:
    """The store's current snapshot (the job trains on exactly this version of the data) and its version."""
    snapshot = store.snapshot_id()
    return snapshot, store.version_of_snapshot(s.name, snapshot)


def _store_job(s: Spec, store: StoreResource, test_set: Path) -> StagedJob:
    """A job that reads the samples from the store itself, pinned at the current snapshot."""
    with store.open() as st:
        snapshot, version = _pinned_snapshot(s, st)
        location = st.location
    return StagedJob(s.text(), None, test_set, s.existing_file(s.evaluation.train_set), snapshot, version,
                     store=location)


def _stage_job(s: Spec, key: str, export_dir: str, store: StoreResource, test_set: Path) -> tuple[StagedJob, int]:
    """Export the kept samples and copy the real test (and train) set into the job's own folder: the job,
    maybe in a pod, sees only this folder, and the spec as text."""
    work = Path(export_dir) / "train" / key
    work.mkdir(parents=True, exist_ok=True)
    samples, staged_test = work / "samples.parquet", work / f"test{test_set.suffix}"
    with store.open() as st:
        snapshot, version = _pinned_snapshot(s, st)
    with Store(st.location, snapshot=snapshot) as pinned:
        n = pinned.export_samples(s.hash, samples, "parquet")
    shutil.copyfile(test_set, staged_test)
    train_set = s.existing_file(s.evaluation.train_set)
    staged_train = None
    if train_set is not None:
        staged_train = work / f"train{train_set.suffix}"
        shutil.copyfile(train_set, staged_train)
    return StagedJob(s.text(), samples, staged_test, staged_train, snapshot, version), n


@asset(partitions_def=SPECS, group_name=GROUP, deps=["filtered_samples"],
       description="A classifier trained on the kept samples (linear probe or fine-tuning) and scored on the "
                   "spec's real test set, at every budget fraction; runs as a job (subprocess or pod).")
def classifier(context: AssetExecutionContext, spec: Spec, store: StoreResource, train_runner: TrainJobRunner,
               options: RunOptions) -> MaterializeResult:
    s = spec
    test_set = s.existing_file(s.evaluation.test_set)
    if test_set is None:
        context.log.info("no usable evaluation.test_set: nothing to train against")
        return MaterializeResult(metadata={"skipped": "the spec names no test set that exists here"})
    if s.training.runner == "kubernetes" and not isinstance(train_runner, KubernetesTrainRunner):
        raise RuntimeError(f"{s.name}: training.runner is kubernetes, but this deployment runs jobs locally "
                           "(set FACTORY_RUNNER=kubernetes where the cluster is reachable)")
    if train_runner.reads_store:
        job, n = _store_job(s, store, test_set), None
    else:
        job, n = _stage_job(s, context.partition_key, options.export_dir, store, test_set)
    outcome = train_runner.run(context, s, job)
    rows = [dict(r, snapshot_id=job.snapshot_id, dataset_version=job.dataset_version)
            for r in outcome.results["evaluations"]]
    if n is None:  # what the job trained on at the full budget
        n = max((r["n_train"] for r in rows if r["train_source"] == "synthetic"), default=0)
    with store.open() as st:
        saved = st.save_evaluations(rows)
    meta = dict(outcome.materialization.metadata or {})
    return MaterializeResult(metadata={**meta, "runner": outcome.runner, "train_samples": n,
                                       "evaluations_saved": saved, "snapshot": job.snapshot_id,
                                       "dataset_version": job.dataset_version or "-"})


@multi_asset(
    partitions_def=SPECS, group_name=GROUP, deps=[classifier], can_subset=True,  # a check may be skipped
    outs={"evaluation": AssetOut(description="Accuracy and macro-F1 on the real test set, and F1 against the "
                                             "budget spent.")},
    check_specs=[AssetCheckSpec("evaluation_present", asset="evaluation",
                                description="An evaluation exists (skipped when the spec names no test set)")],
)
def evaluation(context: AssetExecutionContext, spec: Spec, store: StoreResource,
               options: RunOptions):  # type: ignore[no-untyped-def]
    from factory.training.evaluate import plot_f1_vs_budget

    s = spec
    with store.open() as st:
        every = st.evaluations([s.hash])
        task = task_row(s.name, s.hash, s.generation.method, every, st.metrics(s.hash, "overall"))
    rows = [r for r in every if r["train_source"] == "synthetic"]
    if not rows:
        yield Output(None, "evaluation", metadata={"evaluations": 0})
    else:
        full = max(rows, key=lambda r: (r["budget_fraction"], str(r["created_at"])))
        chart = Path(options.export_dir) / "train" / context.partition_key / "f1_vs_budget.png"
        plot_f1_vs_budget(rows, chart)
        curve = sorted({r["budget_fraction"]: r for r in rows}.values(), key=lambda r: r["budget_fraction"])
        yield Output(None, "evaluation", metadata={
            "macro_f1": float(full["macro_f1"]), "accuracy": float(full["accuracy"]),
            "n_train": int(full["n_train"]), "test_set": str(full["test_set"]),
            "f1_vs_budget": MetadataValue.json([{"fraction": r["budget_fraction"], "requests": r["requests"],
                                                 "macro_f1": r["macro_f1"]} for r in curve]),
            "chart": MetadataValue.md(f"![F1 against budget](data:image/png;base64,"
                                      f"{base64.b64encode(chart.read_bytes()).decode()})"),
            **_subjectivity_metadata(task)})
    if s.evaluation.test_set is not None:  # else the check cannot apply: not evaluated, shown as skipped
        yield checks.evaluation_check(len(rows))


def _subjectivity_metadata(task: TaskRow) -> dict[str, Any]:
    """Li et al.'s view of one spec: macro-F1 per training source, the gap to real data, accuracy per
    annotator-agreement bin, and the warning sentence (each only where it applies)."""
    meta: dict[str, Any] = {"macro_f1_by_source": MetadataValue.json(task.f1)}
    if task.gap is not None:
        meta["gap_gold_minus_synthetic"] = float(task.gap)
    if task.bins:
        meta["accuracy_by_agreement"] = MetadataValue.json(
            {source: [{"agreement": b["label"], "accuracy": b["accuracy"], "n": b["n"]} for b in bins]
             for source, bins in task.bins.items()})
    warning = subjectivity_advice(task)
    if warning:
        meta["warning"] = warning
    return meta


@asset(partitions_def=SPECS, group_name=GROUP, deps=["filtered_samples"],
       description="The spec's kept samples with provenance, as Parquet.")
def export(context: AssetExecutionContext, spec: Spec, store: StoreResource, options: RunOptions) -> MaterializeResult:
    out = Path(options.export_dir) / f"{context.partition_key}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    with store.open() as st:
        n = st.export_samples(spec.hash, out, "parquet")
    return MaterializeResult(metadata={"path": MetadataValue.path(str(out.resolve())), "rows": n})


ASSETS = [spec, attributes, prompts, generations, quality, classifier, evaluation, export]
