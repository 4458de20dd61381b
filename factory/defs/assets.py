"""The factory's assets, in the order of the data, partitioned by spec. Thin: each calls a stage module
and attaches metadata; the data itself lives in the DuckDB store."""


import base64
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
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

from factory import pipeline
from factory.attributes import AttributeSet
from factory.defs.resources import FactoryResource
from factory.generate import fewshot_examples, make_request, plan
from factory.spec import Spec

SPECS = DynamicPartitionsDefinition(name="spec")
GROUP = "factory"


def _values_table(attrs: AttributeSet) -> str:
    rows = ["| dimension | class | values |", "|---|---|---|"]
    for dim, by_class in attrs.values.items():
        for cls, values in by_class.items():
            rows.append(f"| {dim} | {cls or 'all'} | {', '.join(values)} |")
    return "\n".join(rows)


@asset(partitions_def=SPECS, group_name=GROUP, description="The validated spec, recorded with its content hash.")
def spec(context: AssetExecutionContext, factory: FactoryResource) -> MaterializeResult:
    s = factory.spec(context.partition_key)
    with factory.store() as store:
        pipeline.record_spec(store, s)
    return MaterializeResult(metadata={
        "spec_hash": s.hash, "classes": MetadataValue.json(s.class_names), "method": s.generation.method,
        "model": s.generation.model, "samples_per_class": s.budget.samples_per_class,
        "dimensions": MetadataValue.json(list(s.attributes))})


@multi_asset(
    partitions_def=SPECS, group_name=GROUP, deps=[spec],
    outs={"similar_classes": AssetOut(description="The k most similar classes of each class."),
          "attribute_values": AssetOut(description="Values of every attribute dimension (per class where "
                                                   "class-dependent), given or elicited."),
          "caf_filtered_values": AssetOut(description="Class-dependent values left after class-agnostic "
                                                      "filtering.")},
)
def attributes(context: AssetExecutionContext, factory: FactoryResource):  # type: ignore[no-untyped-def]
    s = factory.spec(context.partition_key)
    with factory.store() as store:
        attrs = pipeline.attributes_stage(s, store, refresh=factory.refresh)
        version, _ = store.latest_elicitation(s.hash)
    found = pipeline.existing_lock(s)
    lock = found[0] if found else None
    decisions = [d for by_class in (lock.caf.values() if lock else []) for ds in by_class.values() for d in ds]
    similar = "\n".join(f"- **{c}**: {', '.join(v) or '-'}" for c, v in attrs.similar.items())
    yield Output(None, "similar_classes", metadata={"similar": MetadataValue.md(similar or "(none)"),
                                                    "version": version})
    yield Output(None, "attribute_values", metadata={
        "values": MetadataValue.md(_values_table(attrs)),
        "values_per_dimension": MetadataValue.json({d: sum(len(v) for v in bc.values())
                                                     for d, bc in attrs.values.items()}),
        "locked": lock is not None})
    yield Output(None, "caf_filtered_values", metadata={
        "judged": len(decisions), "dropped": sum(d.dropped for d in decisions),
        "dropped_values": MetadataValue.json([f"{d.value}" for d in decisions if d.dropped][:50])})


@asset(partitions_def=SPECS, group_name=GROUP, deps=["caf_filtered_values"],
       description="The planned requests: one prompt per request (or conversation), seeded and reproducible.")
def prompts(context: AssetExecutionContext, factory: FactoryResource) -> MaterializeResult:
    s = factory.spec(context.partition_key)
    with factory.store() as store:
        attrs = pipeline.attributes_stage(s, store)
    items = list(plan(s, attrs, examples=fewshot_examples(s)))
    first = items[0] if items else None
    example = first.messages[-1]["content"] if first else ""
    return MaterializeResult(metadata={
        "requests": sum(i.length for i in items), "per_class": MetadataValue.json(Counter(i.class_name for i in items)),
        "example_prompt": MetadataValue.md(f"```\n{example}\n```"),
        "distinct_prompts": len({make_request(s, i.messages, i.seed, i.first_index, 1).prompt_hash for i in items})})


def _budget_check(s: Spec, spent: dict[str, float]) -> AssetCheckResult:
    b = s.budget
    over = [f"{name} {spent[key]:.4g} > {cap}" for name, key, cap in
            (("requests", "requests", b.max_requests), ("tokens", "tokens", b.max_tokens), ("usd", "usd", b.max_usd))
            if cap is not None and spent[key] > cap]
    return AssetCheckResult(check_name="budget_not_exceeded", passed=not over,
                            metadata={"spent": MetadataValue.json(spent), "over": ", ".join(over) or "none"})


def _balance_check(s: Spec, per_class: dict[str, int], tolerance: float = 0.2) -> AssetCheckResult:
    counts = [per_class.get(c, 0) for c in s.class_names]
    spread = (max(counts) - min(counts)) / max(max(counts), 1)
    return AssetCheckResult(check_name="classes_balanced", passed=spread <= tolerance,
                            severity=AssetCheckSeverity.WARN,
                            metadata={"per_class": MetadataValue.json(per_class), "spread": spread,
                                      "tolerance": tolerance})


@asset(partitions_def=SPECS, group_name=GROUP, deps=[prompts],
       check_specs=[AssetCheckSpec("budget_not_exceeded", asset="generations"),
                    AssetCheckSpec("classes_balanced", asset="generations")],
       description="Generated texts with full provenance, through the spec's endpoint (resumable).")
def generations(context: AssetExecutionContext, factory: FactoryResource) -> MaterializeResult:
    s = factory.spec(context.partition_key)
    with factory.store() as store:
        attrs = pipeline.attributes_stage(s, store)
        result = pipeline.generation_stage(s, store, attrs, factory.show_progress)
        per_class = store.class_counts(s.hash)
        spent = store.spend_for_spec(s.hash)
    r = result.report
    context.log.info(f"run {result.run_id}: {result.status}, {r.samples} samples ({r.new_samples} new)")
    return MaterializeResult(
        metadata={"run_id": result.run_id, "status": result.status, "samples": r.samples, "new_samples": r.new_samples,
                  "refusals": r.refusals, "requests_sent": r.sent, "requests_cached": r.cached,
                  "tokens": r.tokens, "spend_usd": r.usd, "per_class": MetadataValue.json(per_class),
                  "stopped_by_budget": r.stopped or "no"},
        check_results=[_budget_check(s, spent), _balance_check(s, per_class)])


def _min_samples_check(s: Spec, kept: dict[str, int], share: float = 0.5) -> AssetCheckResult:
    need = max(1, int(share * s.budget.samples_per_class))
    short = {c: kept.get(c, 0) for c in s.class_names if kept.get(c, 0) < need}
    return AssetCheckResult(check_name="min_samples_per_class", passed=not short,
                            metadata={"minimum": need, "kept": MetadataValue.json(kept),
                                      "short": MetadataValue.json(short)})


def _near_dup_check(dropped: dict[str, int], generated: int, threshold: float = 0.2) -> AssetCheckResult:
    rate = dropped.get("near_dup", 0) / max(generated, 1)
    return AssetCheckResult(check_name="near_duplicate_rate", passed=rate <= threshold,
                            severity=AssetCheckSeverity.WARN, metadata={"rate": rate, "threshold": threshold})


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
def quality(context: AssetExecutionContext, factory: FactoryResource):  # type: ignore[no-untyped-def]
    from factory.quality.report import diversity_chart, funnel_chart, report_data
    from factory.quality.stage import run_quality

    s = factory.spec(context.partition_key)
    with factory.store() as store:
        result = run_quality(s, store, show_progress=factory.show_progress)
        data = report_data(s, store)
        kept_by_class = Counter(r["class"] for r in store.kept_samples(s.hash))
    funnel, diversity = funnel_chart(data), diversity_chart(data)
    for note in result.notes:
        context.log.info(note)
    overall = {k: v for k, v in result.diversity["overall"].items() if v is not None}
    yield Output(None, "filtered_samples", metadata={
        "generated": result.generated, "kept": result.kept, "dropped": MetadataValue.json(result.dropped),
        "kept_per_class": MetadataValue.json(dict(kept_by_class)),
        **({"funnel": _chart_md(funnel)} if funnel else {})})
    yield _min_samples_check(s, dict(kept_by_class))
    yield _near_dup_check(result.dropped, result.generated)
    yield Output(None, "embeddings", metadata={"encoded_now": result.encoded, "texts": result.generated,
                                               "model": "all-MiniLM-L6-v2"})
    yield Output(None, "diversity_metrics", metadata={
        **{k: float(v) for k, v in overall.items() if isinstance(v, (int, float))},
        "bias_dimensions": MetadataValue.json([b.dimension for b in result.bias]),
        **({"diversity": _chart_md(diversity)} if diversity else {}), "notes": MetadataValue.json(result.notes)})


def _test_set(s: Spec) -> Path | None:
    """The spec's real test set when it names one that exists here; None otherwise."""
    if s.evaluation.test_set is None:
        return None
    try:
        path = s.resolve_path(s.evaluation.test_set.path)
    except ValueError:  # an unset ${VAR}
        return None
    return path if path.is_file() else None


def _launch_train_job(context: AssetExecutionContext, factory: FactoryResource, s: Spec,
                      samples: Path, test_set: Path) -> dict[str, Any]:
    """The train/eval job through Dagster Pipes: a local subprocess, or a pod on the cluster. Either way the
    job reads the exported samples and the test set, and reports its results back."""
    from factory.jobs.train import pipes_extras, train_job_command

    runner = "kubernetes" if "kubernetes" in (factory.runner, s.training.runner) else "local"
    if runner == "local":
        from dagster import PipesSubprocessClient

        extras = pipes_extras(s.source, samples=samples, test_set=test_set)
        invocation = PipesSubprocessClient().run(command=train_job_command(), context=context, extras=extras)
    else:
        from factory.k8s import K8sSettings, run_train_job_k8s

        settings = K8sSettings.from_env()
        if settings.data is None:
            raise RuntimeError("runner kubernetes needs FACTORY_DATA_PVC or FACTORY_DATA_HOST_PATH for the job's data")
        to_pod = settings.data.pod_path
        extras = pipes_extras(to_pod(samples.with_suffix(".yaml")), samples=to_pod(samples),
                              test_set=to_pod(test_set))
        invocation = run_train_job_k8s(context, s.training, command=["python", "-m", "factory.jobs.train"],
                                       settings=settings, extras=extras)
    messages = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "results" in m]
    if not messages:
        raise RuntimeError("the train job ended without reporting its results")
    return {"runner": runner, "results": messages[-1]["results"], "materialization": invocation.get_materialize_result()}


@asset(partitions_def=SPECS, group_name=GROUP, deps=["filtered_samples"],
       description="A classifier trained on the kept samples (linear probe or fine-tuning) and scored on the "
                   "spec's real test set, at every budget fraction; runs as a job (subprocess or pod).")
def classifier(context: AssetExecutionContext, factory: FactoryResource) -> MaterializeResult:
    s = factory.spec(context.partition_key)
    test_set = _test_set(s)
    if test_set is None:
        context.log.info("no usable evaluation.test_set: nothing to train against")
        return MaterializeResult(metadata={"skipped": "the spec names no test set that exists here"})
    work = Path(factory.export_dir) / "train" / context.partition_key
    work.mkdir(parents=True, exist_ok=True)
    samples, staged_test = work / "samples.parquet", work / f"test{test_set.suffix}"
    with factory.store() as store:
        n = store.export_samples(s.hash, samples, "parquet")
    shutil.copyfile(test_set, staged_test)  # the job (maybe in a pod) sees only this folder
    if s.source is not None:
        shutil.copyfile(s.source, samples.with_suffix(".yaml"))
    job = _launch_train_job(context, factory, s, samples, staged_test)
    with factory.store() as store:
        saved = store.save_evaluations(job["results"]["evaluations"])
    meta = dict(job["materialization"].metadata or {})
    return MaterializeResult(metadata={**meta, "runner": job["runner"], "train_samples": n,
                                       "evaluations_saved": saved})


@asset(partitions_def=SPECS, group_name=GROUP, deps=[classifier],
       check_specs=[AssetCheckSpec("evaluation_present", asset="evaluation")],
       description="Accuracy and macro-F1 on the real test set, and F1 against the budget spent.")
def evaluation(context: AssetExecutionContext, factory: FactoryResource) -> MaterializeResult:
    from factory.evaluate import plot_f1_vs_budget

    s = factory.spec(context.partition_key)
    with factory.store() as store:
        rows = [r for r in store.evaluations([s.hash]) if r["train_source"] == "synthetic"]
    wants = _test_set(s) is not None or s.evaluation.test_set is not None
    check = AssetCheckResult(check_name="evaluation_present", passed=bool(rows) or not wants,
                             metadata={"evaluations": len(rows), "test_set_named": wants})
    if not rows:
        return MaterializeResult(metadata={"evaluations": 0}, check_results=[check])
    full = max(rows, key=lambda r: (r["budget_fraction"], str(r["created_at"])))
    chart = Path(factory.export_dir) / "train" / context.partition_key / "f1_vs_budget.png"
    plot_f1_vs_budget(rows, chart)
    curve = sorted({r["budget_fraction"]: r for r in rows}.values(), key=lambda r: r["budget_fraction"])
    return MaterializeResult(
        metadata={"macro_f1": float(full["macro_f1"]), "accuracy": float(full["accuracy"]),
                  "n_train": int(full["n_train"]), "test_set": str(full["test_set"]),
                  "f1_vs_budget": MetadataValue.json([{"fraction": r["budget_fraction"], "requests": r["requests"],
                                                       "macro_f1": r["macro_f1"]} for r in curve]),
                  "chart": MetadataValue.md(f"![F1 against budget](data:image/png;base64,"
                                            f"{base64.b64encode(chart.read_bytes()).decode()})")},
        check_results=[check])


@asset(partitions_def=SPECS, group_name=GROUP, deps=["filtered_samples"],
       description="The spec's kept samples with provenance, as Parquet.")
def export(context: AssetExecutionContext, factory: FactoryResource) -> MaterializeResult:
    s = factory.spec(context.partition_key)
    out = Path(factory.export_dir) / f"{context.partition_key}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    with factory.store() as store:
        n = store.export_samples(s.hash, out, "parquet")
    return MaterializeResult(metadata={"path": MetadataValue.path(str(out.resolve())), "rows": n})


ASSETS = [spec, attributes, prompts, generations, quality, classifier, evaluation, export]
