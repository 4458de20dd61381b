"""Sharded generation (``generation.shards``): the parts of a plan are disjoint and together the whole plan;
the real ``generation_shard`` job, three times through the real offline model, leaves exactly the rows one
unsharded run leaves; the run after the shards is requested once, only when every shard succeeded; the
schedules split sharded from plain specs."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest

from factory.attributes.values import given_attributes
from factory.defs import with_io
from factory.defs.automation import nightly_shards, nightly_top_up
from factory.defs.resources import LLMResource, SpecCatalog, StoreResource, resources_from_env
from factory.defs.shards import after_shards_request, shard_job, shard_run_requests
from factory.defs.tags import BATCH_TAG, SHARD_TAG
from factory.generation.plan import Plan
from factory.spec import parse_spec
from conftest import generate
from conftest import query as q

SPEC = textwrap.dedent("""\
    name: NAME
    domain: short news headline
    classes: [sports, business, weather]
    attributes:
      style: {values: [breaking news, analysis, interview]}
    similar_classes: {k: 0}
    generation: {method: METHOD, BASE max_tokens: 16, max_concurrency: 4, shards: SHARDS}
    budget: {samples_per_class: SPC}
    """)


def spec_yaml(shards: int = 3, spc: int = 3, method: str = "attrprompt", base_url: str | None = None,
              name: str = "sharded") -> str:
    return (SPEC.replace("NAME", name).replace("METHOD", method).replace("SHARDS", str(shards))
            .replace("SPC", str(spc)).replace("BASE ", f"base_url: {base_url}, " if base_url else ""))


def keys(plan: Plan) -> list[str]:
    return [plan.request(u).key for u in plan]


@pytest.mark.parametrize("method", ["attrprompt", "simprompt", "zeroshot"])
def test_shards_partition_the_plan(method: str) -> None:
    spec = parse_spec(spec_yaml(shards=4, spc=7, method=method))
    whole = Plan(spec, given_attributes(spec))
    parts = [whole.for_shard(i) for i in range(4)]
    everything = keys(whole)
    pieces = [keys(p) for p in parts]
    assert sorted(k for piece in pieces for k in piece) == sorted(everything)  # no gaps, no duplicates
    assert all(piece for piece in pieces)
    assert sum(len(list(p)) for p in parts) == len(list(whole))
    assert sum(p.requests for p in parts) == pytest.approx(whole.requests, abs=4)


def test_shards_do_not_change_the_spec_hash_and_are_checked() -> None:
    assert parse_spec(spec_yaml(shards=1)).hash == parse_spec(spec_yaml(shards=8)).hash
    spec = parse_spec(spec_yaml(shards=2))
    with pytest.raises(ValueError, match="shard 2 of 2"):
        Plan(spec, given_attributes(spec)).for_shard(2)
    from factory.spec import SpecError

    with pytest.raises(SpecError, match="shards"):
        parse_spec(spec_yaml(shards=0))


def test_shard_requests_form_one_batch_and_the_run_after_waits_for_all() -> None:
    spec = parse_spec(spec_yaml(shards=3))
    requests = shard_run_requests("sharded", spec, then="top_up", run_key="nightly")
    assert [r.run_config["ops"]["generate_shard"]["config"]["shard"] for r in requests] == [0, 1, 2]
    assert len({r.tags[BATCH_TAG] for r in requests}) == 1
    assert [r.tags[SHARD_TAG] for r in requests] == ["sharded/0", "sharded/1", "sharded/2"]

    instance = dg.DagsterInstance.ephemeral()
    tags = requests[0].tags
    for request in requests[:2]:
        instance.create_run_for_job(shard_job, run_config=request.run_config, tags=request.tags,
                                    status=dg.DagsterRunStatus.SUCCESS)
    assert isinstance(after_shards_request(instance, tags), dg.SkipReason)
    instance.create_run_for_job(shard_job, run_config=requests[2].run_config, tags=requests[2].tags,
                                status=dg.DagsterRunStatus.FAILURE)
    assert isinstance(after_shards_request(instance, tags), dg.SkipReason)  # a failed shard is not done
    instance.create_run_for_job(shard_job, run_config=requests[2].run_config, tags=requests[2].tags,
                                status=dg.DagsterRunStatus.SUCCESS)  # re-run alone
    after = after_shards_request(instance, tags)
    assert isinstance(after, dg.RunRequest)
    assert after.job_name == "top_up" and after.partition_key == "sharded"
    assert after.run_key == f"after-shards:{tags[BATCH_TAG]}"  # requested once per batch


def test_the_nightly_schedules_split_sharded_from_plain_specs(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "plain.yaml").write_text(spec_yaml(shards=1, name="plain"))
    (specs / "big.yaml").write_text(spec_yaml(shards=3, name="big"))
    catalog = SpecCatalog(specs_dir=str(specs))
    at = datetime(2026, 12, 1, 3, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("spec", ["plain", "big", "gone"])
        plain = nightly_top_up(dg.build_schedule_context(instance=instance, resources={"specs": catalog},
                                                         scheduled_execution_time=at))
        sharded = nightly_shards(dg.build_schedule_context(instance=instance, resources={"specs": catalog},
                                                           scheduled_execution_time=at))
    assert [r.partition_key for r in plain] == ["plain"]
    assert [(r.job_name, r.tags[SHARD_TAG]) for r in sharded] == [("generation_shard", f"big/{i}") for i in range(3)]


@pytest.mark.llm
def test_three_shard_runs_leave_the_rows_of_one_run(llm_server, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "sharded.yaml").write_text(spec_yaml(shards=3, base_url=llm_server.base_url))
    sharded_store, single_store = tmp_path / "sharded-store", tmp_path / "single-store"
    resources = with_io(resources_from_env(specs=SpecCatalog(specs_dir=str(specs)),
                                           store=StoreResource(location=str(sharded_store)), llm=LLMResource()))
    for shard in range(3):
        result = shard_job.execute_in_process(
            run_config={"ops": {"generate_shard": {"config": {"spec": "sharded", "shard": shard}}}},
            resources=resources, instance=dg.DagsterInstance.ephemeral())
        assert result.success
    generate(specs / "sharded.yaml", single_store)  # the same spec (shards are not in its hash), unsharded
    columns = "sample_id, request_key, class, seed, sample_index, attributes, prompt_hash"
    sharded = sorted(q(sharded_store, f"SELECT {columns} FROM samples"))
    single = sorted(q(single_store, f"SELECT {columns} FROM samples"))
    assert len(sharded) == 9 and sharded == single
    runs = q(sharded_store, "SELECT message FROM runs ORDER BY message")
    assert [r[0] for r in runs] == ["shard 1 of 3", "shard 2 of 3", "shard 3 of 3"]
    assert q(sharded_store, "SELECT count(*) FROM dataset_versions") == [(0,)]  # a shard leaves no version
    # a shard that does not exist fails with what does
    bad = shard_job.execute_in_process(
        run_config={"ops": {"generate_shard": {"config": {"spec": "sharded", "shard": 3}}}},
        resources=resources, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not bad.success
    assert "generation.shards is 3" in str(bad.all_events)
