"""GitOps and schedules: a sensor that runs new or changed specs (by content hash), and a nightly top-up of
every spec. A sharded spec (``generation.shards > 1``) is launched as its shards (:mod:`factory.defs.shards`),
and :func:`after_shards` runs its partition once they are all done."""


import json
from pathlib import Path

from dagster import (
    ResourceParam,
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    run_status_sensor,
    schedule,
    sensor,
)

from factory.defs.assets import SPECS
from factory.defs.resources import SpecCatalog, spec_files
from factory.defs.shards import after_shards_request, shard_job, shard_run_requests
from factory.defs.tags import SPEC_TAG
from factory.keys import digest
from factory.spec import SpecError, load_spec

build_job = define_asset_job("build_dataset", selection=AssetSelection.all(),
                             description="Every stage of a spec's dataset, in order.")
top_up_job = define_asset_job("top_up", selection=(AssetSelection.assets("generations").upstream()
                                                  | AssetSelection.assets("generations").downstream()
                                                  ).required_multi_asset_neighbors(),
                              description="Regenerate what is missing or failed (the cache skips the rest).")


def spec_fingerprints(specs_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Partition key -> content hash of the spec (and its lock), and key -> error for invalid specs."""
    found, errors = {}, {}
    for key, path in spec_files(specs_dir).items():
        try:
            spec = load_spec(path)
        except SpecError as exc:
            errors[key] = str(exc)
            continue
        lock = path.with_name(f"{key}.lock.yaml")
        found[key] = spec.hash + (":" + digest(lock.read_text(encoding="utf-8"))[:16] if lock.is_file() else "")
    return found, errors


def spec_run_requests(specs: SpecCatalog, key: str, job_name: str, run_key: str) -> list[RunRequest]:
    """The runs that materialize partition ``key`` with ``job_name``: one, or one per shard of a sharded spec
    (then ``job_name`` runs after them)."""
    spec = specs.load(key)
    if spec.generation.shards > 1:
        return shard_run_requests(key, spec, then=job_name, run_key=run_key)
    return [RunRequest(job_name=job_name, partition_key=key, run_key=run_key, tags={SPEC_TAG: key})]


@sensor(jobs=[build_job, shard_job], minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
        description="GitOps: a new or changed spec file (by content hash) runs its partition; unchanged specs "
                    "trigger nothing; invalid specs are reported and skipped.")
def spec_sensor(context: SensorEvaluationContext, specs: ResourceParam[SpecCatalog]) -> SensorResult | SkipReason:
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current, errors = spec_fingerprints(Path(specs.specs_dir))
    for key, error in errors.items():
        context.log.error(f"spec {key} is invalid and was skipped:\n{error}")
    changed = sorted(k for k, h in current.items() if seen.get(k) != h)
    new_partitions = [k for k in changed if not context.instance.has_dynamic_partition(SPECS.name, k)]
    if not changed:
        return SkipReason(f"{len(current)} specs unchanged" + (f", {len(errors)} invalid" if errors else ""))
    return SensorResult(
        run_requests=[r for k in changed for r in spec_run_requests(specs, k, build_job.name, f"{k}:{current[k]}")],
        dynamic_partitions_requests=[SPECS.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps({**seen, **current}, sort_keys=True))


NIGHTLY = "0 3 * * *"


def _nightly(context: ScheduleEvaluationContext, specs: SpecCatalog, sharded: bool) -> list[RunRequest]:
    """The nightly runs of every known spec whose ``generation.shards > 1`` is ``sharded`` (specs whose file is
    gone or invalid are logged and left out)."""
    requests = []
    for key in context.instance.get_dynamic_partitions(SPECS.name):
        try:
            spec = specs.load(key)
        except (FileNotFoundError, SpecError) as exc:
            context.log.warning(f"spec {key} left out of the top-up: {exc}")
            continue
        if (spec.generation.shards > 1) == sharded:
            requests += spec_run_requests(specs, key, top_up_job.name,
                                          f"top-up:{key}:{context.scheduled_execution_time:%Y%m%d}")
    return requests


@schedule(job=top_up_job, cron_schedule=NIGHTLY, description="Nightly top-up of every spec's dataset (all at once, "
          "within the instance's run limits; one run per spec at a time).")
def nightly_top_up(context: ScheduleEvaluationContext, specs: ResourceParam[SpecCatalog]) -> list[RunRequest]:
    return _nightly(context, specs, sharded=False)


@schedule(job=shard_job, cron_schedule=NIGHTLY, description="The nightly top-up of sharded specs: their shards at "
          "once, then (after_shards) the partition's top_up run.")
def nightly_shards(context: ScheduleEvaluationContext, specs: ResourceParam[SpecCatalog]) -> list[RunRequest]:
    return _nightly(context, specs, sharded=True)


@run_status_sensor(run_status=DagsterRunStatus.SUCCESS, monitored_jobs=[shard_job],
                   request_jobs=[build_job, top_up_job], default_status=DefaultSensorStatus.RUNNING,
                   minimum_interval_seconds=5,
                   description="When the last shard of a batch succeeds, run the spec's partition once (its "
                               "generation finds every request cached; the filters and the classifier run).")
def after_shards(context: RunStatusSensorContext) -> RunRequest | SkipReason:
    return after_shards_request(context.instance, context.dagster_run.tags)
