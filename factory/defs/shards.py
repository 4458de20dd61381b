"""Sharded generation: a spec with ``generation.shards: N`` generates in N runs of the ``generation_shard`` job,
each its own process (a pod under ``K8sRunLauncher``), all writing to the one store. Shard ``i`` sends the
plan's units ``i, i+N, i+2N, ...`` (:meth:`factory.generation.plan.Plan.for_shard`), so together they are
exactly the unsharded plan: same seeds, same request keys, no gaps, no duplicates. When every shard of a
batch has succeeded, :func:`after_shards` launches the spec's partition run once; its generation step finds
every request in the store and sends nothing, then the filters, metrics and the classifier run on the union.
A shard that fails is re-run alone (re-execute its run): the request cache skips what it had persisted.
"""


import uuid
from typing import Any

from dagster import (
    Config,
    DagsterRunStatus,
    Failure,
    OpExecutionContext,
    ResourceParam,
    RunRequest,
    RunsFilter,
    SkipReason,
    job,
    op,
)

from factory.attributes.stage import resolve_attributes
from factory.defs.resources import LLMResource, SpecCatalog, StoreResource
from factory.defs.tags import BATCH_TAG, SHARD_TAG, SHARDS_TAG, SPEC_TAG, THEN_TAG
from factory.generation.plan import Plan, fewshot_examples
from factory.generation.run import generation_stage
from factory.spec import Spec

SHARD_JOB = "generation_shard"


class ShardConfig(Config):
    """Which spec (its partition key) and which of its ``generation.shards`` parts."""

    spec: str
    shard: int


def shard_lease(spec_name: str, shard: int, shards: int) -> str:
    """The lease one shard holds while it generates (shards of a spec run side by side)."""
    return f"{spec_name}#shard-{shard + 1}-of-{shards}"


@op(description="Generate one shard of a spec's plan into the shared store (the attribute set first, once per "
                "spec: the shards wait for each other on the spec's lease while one elicits).")
def generate_shard(context: OpExecutionContext, config: ShardConfig, specs: ResourceParam[SpecCatalog],
                   store: StoreResource, llm: LLMResource) -> None:
    s = specs.load(config.spec)
    shards = s.generation.shards
    if not 0 <= config.shard < shards:
        raise Failure(f"{config.spec}: shard {config.shard} does not exist (generation.shards is {shards}: "
                      f"0..{shards - 1})")
    run_id = context.run.run_id
    with store.open() as st:
        st.record_spec(s, s.text())
        with store.lease(st, s.name, run_id, context.log):
            attrs, _ = resolve_attributes(s, st, llm.endpoints)
        plan = Plan(s, attrs, fewshot_examples(s)).for_shard(config.shard)
        with store.lease(st, shard_lease(s.name, config.shard, shards), run_id, context.log):
            result = generation_stage(plan, st, llm.endpoints)
    r = result.report
    context.log.info(f"{config.spec} shard {config.shard + 1} of {shards}: {result.status}, {r.samples} samples "
                     f"({r.sent} requests sent, {r.cached} cached, {r.failed} failed)")
    if r.failed:
        raise Failure(f"{r.failed} requests of shard {config.shard + 1} failed; re-run the shard to retry them")


@job(name=SHARD_JOB, description="One shard of a sharded spec's generation (generation.shards > 1).")
def shard_job() -> None:
    generate_shard()


def shard_run_requests(key: str, spec: Spec, then: str, run_key: str | None = None) -> list[RunRequest]:
    """One run request per shard of ``spec`` (partition ``key``), as one batch; ``then`` (a job name) runs on
    the partition once all of them have succeeded."""
    batch = uuid.uuid4().hex[:12]
    n = spec.generation.shards
    return [RunRequest(job_name=SHARD_JOB, run_key=f"{run_key}:shard-{i}" if run_key else None,
                       run_config={"ops": {"generate_shard": {"config": {"spec": key, "shard": i}}}},
                       tags={SPEC_TAG: key, SHARD_TAG: f"{key}/{i}", BATCH_TAG: batch, THEN_TAG: then,
                             SHARDS_TAG: str(n)})
            for i in range(n)]


def batch_complete(instance: Any, batch: str, shards: int) -> bool:
    """Whether every shard of ``batch`` has a successful run (a re-executed shard counts once)."""
    runs = instance.get_runs(filters=RunsFilter(tags={BATCH_TAG: batch}, job_name=SHARD_JOB))
    done = {r.tags.get(SHARD_TAG) for r in runs if r.status == DagsterRunStatus.SUCCESS}
    return len(done) >= shards


def after_shards_request(instance: Any, tags: dict[str, str]) -> RunRequest | SkipReason:
    """The partition run that follows a batch of shards, once (``run_key``: the batch), when all are done."""
    batch, key, then = tags.get(BATCH_TAG), tags.get(SPEC_TAG), tags.get(THEN_TAG)
    if not (batch and key and then):
        return SkipReason("not a shard of a batch")
    shards = int(tags.get(SHARDS_TAG, "1"))
    if not batch_complete(instance, batch, shards):
        return SkipReason(f"{key}: batch {batch} still has shards to finish")
    return RunRequest(job_name=then, partition_key=key, run_key=f"after-shards:{batch}",
                      tags={SPEC_TAG: key, BATCH_TAG: batch})
