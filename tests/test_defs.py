"""Dagster: the whole asset graph in-process on the real model, the GitOps sensor, the schedule."""

from __future__ import annotations

import json
from datetime import datetime
import shutil
import textwrap
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, build_schedule_context, build_sensor_context, instance_for_test
from conftest import query

from factory.defs import defs
from factory.defs.automation import nightly_top_up, spec_sensor
from factory.defs.local import materialization_metadata, materialize_spec
from factory.defs.resources import SpecCatalog

SPEC = textwrap.dedent("""\
    name: tiny
    domain: short news headline
    classes: [sports, business]
    attributes:
      style: {values: [breaking news, analysis]}
      length: {values: [12], unit: words}
    similar_classes: {given: {sports: [business], business: [sports]}}
    generation: {method: attrprompt, base_url: BASE_URL, max_tokens: 24}
    budget: {samples_per_class: 2, max_requests: 10}
    evaluation: {test_set: test.jsonl}
    training: {budget_fractions: [0.5, 1.0]}
    """)

TEST_SET = [("The striker scored twice as the home team won the cup final.", "sports"),
            ("The coach praised his players after a hard-fought victory on the pitch.", "sports"),
            ("The tennis champion lost in straight sets at the open.", "sports"),
            ("Shares of the bank fell after quarterly profits missed forecasts.", "business"),
            ("The retailer plans to cut costs and close stores to protect its margins.", "business"),
            ("Investors cheered as the company raised its annual revenue outlook.", "business")]


def test_definitions_load_with_every_stage() -> None:
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"spec", "similar_classes", "attribute_values", "caf_filtered_values", "prompts", "generations",
            "filtered_samples", "embeddings", "diversity_metrics", "classifier", "evaluation", "export"} <= keys
    assert repo.get_sensor_def("spec_sensor") and repo.get_schedule_def("nightly_top_up")
    assert repo.get_sensor_def("after_shards") and repo.get_schedule_def("nightly_shards")
    for job in ("build_dataset", "top_up"):  # jobs resolve lazily: resolve them here
        assert "generations" in {k.to_user_string() for k in repo.get_job(job).asset_layer.executable_asset_keys}
    repo.load_all_definitions()  # what a code server does at start: every job, op and name checked
    assert repo.get_job("generation_shard")


@pytest.mark.llm
def test_materialize_whole_graph_on_real_model(llm_server, tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC.replace("BASE_URL", llm_server.base_url))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in TEST_SET))
    db = tmp_path / "f-store"
    instance = DagsterInstance.ephemeral()
    result = materialize_spec(path, db, instance=instance, export_dir=tmp_path / "exports")
    assert result.success
    filtered = materialization_metadata(result, "filtered_samples")
    gen = materialization_metadata(result, "generations")
    assert gen["samples"] == 4 and gen["status"] == "done" and gen["requests_sent"] == 4
    assert json.loads(json.dumps(gen["per_class"])) == {"business": 2, "sports": 2}
    prompts = materialization_metadata(result, "prompts")
    assert prompts["requests"] == 4 and "sports" in prompts["example_prompt"]
    assert materialization_metadata(result, "spec")["classes"] == ["sports", "business"]
    assert materialization_metadata(result, "export")["rows"] == filtered["kept"]
    assert filtered["generated"] == 4 and 0 < filtered["kept"] <= 4
    assert "data:image/png;base64," in filtered["funnel"]
    diversity = materialization_metadata(result, "diversity_metrics")
    assert 0 < diversity["aps"] <= 1 and diversity["vocabulary_size"] > 5
    assert materialization_metadata(result, "embeddings")["encoded_now"] >= 1
    clf = materialization_metadata(result, "classifier")
    assert clf["runner"] == "local" and clf["evaluations_saved"] == 2 and 0 <= clf["macro_f1"] <= 1
    ev = materialization_metadata(result, "evaluation")
    assert [p["fraction"] for p in ev["f1_vs_budget"]] == [0.5, 1.0] and "data:image/png" in ev["chart"]
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"budget_not_exceeded", "classes_balanced", "min_samples_per_class", "near_duplicate_rate",
                           "evaluation_present"}
    assert checks["evaluation_present"]
    assert checks["budget_not_exceeded"] and checks["classes_balanced"]
    assert query(db, "SELECT count(*), count(DISTINCT class) FROM samples") == [(4, 2)]
    assert query(db, "SELECT status FROM runs") == [("done",)]
    assert query(db, "SELECT count(*), count(DISTINCT budget_fraction), min(n_train) > 0, count(snapshot_id)"
                     " FROM evaluations") == [(2, 2, True, 2)]
    exported = duckdb.sql(f"SELECT count(*) FROM '{tmp_path / 'exports' / 'tiny.parquet'}'").fetchall()
    assert exported == [(filtered["kept"],)]
    # the partition and its materializations are in the instance, as the UI shows them
    assert instance.get_dynamic_partitions("spec") == ["tiny"]
    again = materialize_spec(path, db, instance=instance, export_dir=tmp_path / "exports")
    assert materialization_metadata(again, "generations")["requests_sent"] == 0


def test_sensor_runs_new_and_changed_specs_only(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "specs" / "example-minimal.yaml", specs)
    (specs / "broken.yaml").write_text("name: broken\ndomain: x\nclasses: [a]\n")
    catalog = SpecCatalog(specs_dir=str(specs))
    instance = DagsterInstance.ephemeral()

    def tick(cursor: str | None):  # type: ignore[no-untyped-def]
        ctx = build_sensor_context(instance=instance, cursor=cursor, resources={"specs": catalog})
        return spec_sensor(ctx)

    first = tick(None)
    assert [r.partition_key for r in first.run_requests] == ["example-minimal"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["example-minimal"]
    instance.add_dynamic_partitions("spec", ["example-minimal"])
    unchanged = tick(first.cursor)
    assert "unchanged" in str(getattr(unchanged, "skip_message", unchanged))
    # a formatting-only edit keeps the content hash: nothing runs
    text = (specs / "example-minimal.yaml").read_text()
    (specs / "example-minimal.yaml").write_text("# reformatted\n" + text)
    assert "unchanged" in str(getattr(tick(first.cursor), "skip_message", ""))
    # a real change runs that partition again, with a new run key
    (specs / "example-minimal.yaml").write_text(text.replace("samples_per_class: 3", "samples_per_class: 4"))
    changed = tick(first.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["example-minimal"]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key
    assert not changed.dynamic_partitions_requests


def test_nightly_schedule_tops_up_every_partition(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[1] / "specs" / "example-minimal.yaml").read_text()
    for key in ("a", "b"):
        (tmp_path / f"{key}.yaml").write_text(text.replace("name: example-minimal", f"name: {key}"))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("spec", ["a", "b"])
        requests = nightly_top_up(build_schedule_context(instance=instance, resources={
            "specs": SpecCatalog(specs_dir=str(tmp_path))}, scheduled_execution_time=datetime(2026, 11, 22, 3)))
    assert sorted(r.partition_key for r in requests) == ["a", "b"]


FINGERPRINT_SCRIPT = textwrap.dedent("""\
    import json, sys
    from pathlib import Path
    from dagster import DagsterInstance, build_sensor_context
    from factory.defs.automation import spec_fingerprints, spec_sensor
    from factory.defs.resources import SpecCatalog
    specs, cursor = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
    out = {"fingerprints": spec_fingerprints(Path(specs))[0]}
    if cursor:
        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("spec", list(json.loads(cursor)))
        ctx = build_sensor_context(instance=instance, cursor=cursor, resources={"specs": SpecCatalog(specs_dir=specs)})
        result = spec_sensor(ctx)
        out["skip"] = getattr(result, "skip_message", None)
        out["runs"] = [r.partition_key for r in getattr(result, "run_requests", None) or []]
    print(json.dumps(out))
    """)


def _fingerprints_in_subprocess(specs: Path, hash_seed: str, cursor: str | None = None) -> dict:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", FINGERPRINT_SCRIPT, str(specs), *([cursor] if cursor else [])],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sensor_fingerprints_with_a_lock_are_stable_across_processes(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "specs" / "example-minimal.yaml", specs)
    (specs / "example-minimal.lock.yaml").write_text("spec: example-minimal\nattributes: {style: {values: [a, b]}}\n")
    first = _fingerprints_in_subprocess(specs, "1")["fingerprints"]
    assert ":" in first["example-minimal"]  # the lock is part of the fingerprint
    assert _fingerprints_in_subprocess(specs, "2")["fingerprints"] == first
    # the cursor a first process wrote: a fresh process (another hash seed) sees nothing changed
    again = _fingerprints_in_subprocess(specs, "3", cursor=json.dumps(first, sort_keys=True))
    assert again["runs"] == [] and "unchanged" in again["skip"]
