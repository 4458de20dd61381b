"""GitOps and schedules: a sensor that runs new or changed specs (by content hash), and a nightly top-up."""


import json
from pathlib import Path

from dagster import (
    ResourceParam,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

from factory.defs.assets import SPECS
from factory.defs.resources import SpecCatalog, spec_files
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


@sensor(job=build_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
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
        run_requests=[RunRequest(partition_key=k, run_key=f"{k}:{current[k]}") for k in changed],
        dynamic_partitions_requests=[SPECS.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps({**seen, **current}, sort_keys=True))


@schedule(job=top_up_job, cron_schedule="0 3 * * *", description="Nightly top-up of every spec's dataset.")
def nightly_top_up(context: ScheduleEvaluationContext) -> list[RunRequest]:
    keys = context.instance.get_dynamic_partitions(SPECS.name)
    return [RunRequest(partition_key=k, run_key=f"top-up:{k}:{context.scheduled_execution_time:%Y%m%d}")
            for k in keys]
