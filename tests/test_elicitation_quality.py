"""Elicitation quality (degenerate values, distinctness) and a model for elicitation apart from generation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import query as q
from factory.attributes.lock import (
    LockFile,
    inputs_hash,
    lock_path,
    noisy_warnings,
    quality_section,
    read_lock,
    write_lock,
)
from factory.attributes.quality import default_embed, group_quality, spec_quality, value_kinds
from factory.attributes.stage import record_lock
from factory.cli import app
from factory.spec import parse_spec
from factory.store import Store
from fault_server import FaultServer

CLASSES = ["world", "sports", "business", "sci_tech", "science and technology"]
DEGENERATE = ["SenderSenderSender", "Sender", "SenderSender", "negative_topic_id", "styleValues", "style_values_1",
              "3f9a2b7c1d", "sports", "42", "football"]
AGNEWS = Path("attrprompt/agnews/attrprompt/gpt-3.5-turbo")


def embed_or_skip():  # type: ignore[no-untyped-def]
    embed, why = default_embed()
    if embed is None:
        pytest.skip(f"the embedding model is not installed ({why})")
    return embed


def test_degenerate_values_are_flagged_by_kind() -> None:
    kinds = value_kinds(DEGENERATE, CLASSES)
    assert kinds == {"SenderSenderSender": "repeated", "Sender": "repeated", "SenderSender": "repeated",
                     "negative_topic_id": "identifier", "styleValues": "identifier", "style_values_1": "identifier",
                     "3f9a2b7c1d": "identifier", "sports": "class_name", "42": "number"}
    g = group_quality("topic", "", DEGENERATE, CLASSES)
    assert g.degenerate == 9 and g.noisy and g.embedding == "skipped" and g.mean_cosine is None
    assert value_kinds(["30", "100", "250"], CLASSES, numeric=True) == {}  # numbers are what a length dimension is
    assert value_kinds(["Bora Bora", "iPhone", "eBay", "YouTube", "COVID-19", "G7 summit"], CLASSES) == {}


def test_noisy_dimension_warns_with_the_remedy() -> None:
    quality = quality_section([group_quality("topic", "sports", DEGENERATE, CLASSES),
                               group_quality("style", "", ["op-ed", "wire report", "feature"], CLASSES)])
    warnings = noisy_warnings(quality)
    assert len(warnings) == 1 and warnings[0].startswith("topic / sports: 9 of 10 values are degenerate")
    assert "values_file:" in warnings[0] and "elicitation.model" in warnings[0]


def test_published_attrprompt_agnews_values_pass(shared_data: Path) -> None:
    root = shared_data / AGNEWS
    embed = embed_or_skip()
    for path in sorted(root.rglob("*.*")):
        values = [v.strip() for v in path.read_text(encoding="utf-8").splitlines() if v.strip()]
        g = group_quality(path.parent.name, path.stem, values, CLASSES, numeric=path.parent.name == "length",
                          embed=embed)
        assert g.degenerate == 0, (path, g.kinds)
        assert g.embedding == "ok" and g.mean_cosine is not None and g.mean_cosine < 0.6, (path, g.mean_cosine)


def test_near_duplicates_by_embedding() -> None:
    g = group_quality("sport", "", ["soccer match", "soccer matches", "chess"], CLASSES, embed=embed_or_skip())
    assert g.kinds == {"soccer matches": "near_duplicate"} and 0 < g.mean_cosine < 1


def test_lock_quality_is_optional_and_outside_the_version_fingerprint(tmp_path: Path) -> None:
    old = tmp_path / "old.lock.yaml"
    old.write_text("spec: x\ninputs_hash: h\nmodel: m\ncreated: '2026-01-01'\nattributes: {style: {values: [a]}}\n")
    lock = read_lock(old)
    assert lock.quality == {}
    spec = parse_spec("name: x\ndomain: d\nclasses: [a1, b1]\nattributes: {style: {elicit: {n: 1}}}\n")
    groups = spec_quality(spec, {"style": {"": ["a"]}})
    with_quality = LockFile.model_validate({**lock.model_dump(), "quality": quality_section(groups)})
    write_lock(tmp_path / "new.lock.yaml", with_quality)
    assert read_lock(tmp_path / "new.lock.yaml").quality["style"][""].values == 1
    with Store(tmp_path / "s-store") as store:
        record_lock(store, spec, lock, "lock")
        first = store.latest_elicitation(spec.hash)
        record_lock(store, spec, with_quality, "lock")
        assert store.latest_elicitation(spec.hash) == first  # the same values: no new version


OLD_SPEC = "name: a\ndomain: d\nclasses: [x, y]\ngeneration: {model: cheap, temperature: 0.9}\n" \
           "attributes:\n  style: {elicit: {n: 4}}\n"


def test_old_spec_hash_unchanged_and_elicitation_model_in_inputs_hash() -> None:
    spec = parse_spec(OLD_SPEC)
    assert spec.hash == "b30b8f486eaf09ec"  # computed before the elicitation section existed
    assert spec.elicitation_generation == spec.generation and spec.elicitation_temperature == 0.7
    strong = parse_spec(OLD_SPEC + "elicitation: {model: strong}\n")
    assert strong.hash != spec.hash and inputs_hash(strong) != inputs_hash(spec)
    assert strong.elicitation_generation.model == "strong" and strong.elicitation_generation.temperature == 0.9
    with pytest.raises(Exception, match=r"<spec>:8: elicitation.modle: unknown key 'modle'; did you mean 'model'"):
        parse_spec(OLD_SPEC + "elicitation:\n  modle: strong\n")


SPEC = textwrap.dedent("""\
    name: two
    domain: news article
    classes: [sports, business]
    attributes:
      subtopic: {per_class: true, elicit: {n: 2}}
      style: {elicit: {n: 2}}
    similar_classes: {k: 1}
    generation: {model: cheap, base_url: GEN_URL, max_tokens: 16}
    elicitation: {model: strong, base_url: ELICIT_URL, temperature: 0.2}
    budget:
      samples_per_class: 3
      prices:
        cheap: {input_per_mtok: 1.0, output_per_mtok: 2.0}
        strong: {input_per_mtok: 10.0, output_per_mtok: 30.0}
    """)


def test_elicitation_and_generation_go_to_their_own_endpoints(tmp_path: Path, db: Path) -> None:
    runner = CliRunner()
    with FaultServer() as gen_server, FaultServer() as elicit_server:
        path = tmp_path / "two.yaml"
        path.write_text(SPEC.replace("GEN_URL", gen_server.base_url).replace("ELICIT_URL", elicit_server.base_url))
        plan = runner.invoke(app, ["plan", str(path)], terminal_width=200)
        assert plan.exit_code == 0, plan.output
        assert "generation cost USD (cheap" in plan.output and "elicitation cost USD (strong" in plan.output
        from factory.defs.local import materialization_metadata, materialize_spec

        result = materialize_spec(path, db, through="generations")
        meta = materialization_metadata(result, "attribute_values")
        assert "| subtopic | sports | 2 |" in meta["elicitation_quality"]
        assert {r["dimension"] for r in meta["elicitation_quality_rows"]} == {"subtopic", "style"}
        by_purpose = dict(q(db, "SELECT purpose || ':' || model, count(*) FROM llm_requests GROUP BY 1"))
        assert set(by_purpose) == {"elicit:strong", "generate:cheap"}, by_purpose
        assert elicit_server.stats()["total"] == by_purpose["elicit:strong"]
        assert gen_server.stats()["total"] == by_purpose["generate:cheap"]
        params = q(db, "SELECT DISTINCT params->>'temperature' FROM llm_requests WHERE purpose = 'elicit'")
        assert params == [("0.2",)]
        lock = read_lock(lock_path(parse_spec(path.read_text(), source=path)))
        assert lock.model == "strong" and set(lock.quality) == {"subtopic", "style"}
        assert set(lock.quality["subtopic"]) == {"sports", "business"}
        shown = runner.invoke(app, ["lock", str(path), "--db", str(db)], terminal_width=200)
        assert shown.exit_code == 0, shown.output
        assert "model strong" in shown.output and "elicitation quality" in shown.output


def test_report_shows_the_lock_quality_and_warns_on_noise(tmp_path: Path) -> None:
    from factory.attributes.lock import LockedDimension, to_lock
    from factory.attributes.elicit import Elicited
    from factory.quality.report import write_report

    path = tmp_path / "noisy.yaml"
    path.write_text("name: noisy\ndomain: news\nclasses: [sports, business]\nsimilar_classes: {k: 0}\n"
                    "attributes:\n  topic: {elicit: {n: 10}}\nfilters: {caf: false}\n")
    spec = parse_spec(path.read_text(), source=path)
    lock = to_lock(spec, Elicited(values={"topic": {"": DEGENERATE}}))  # an older lock: no quality recorded
    assert lock.quality == {} and isinstance(lock.attributes["topic"], LockedDimension)
    write_lock(lock_path(spec), lock)
    with Store(tmp_path / "r-store") as store:
        html = write_report(spec, store, tmp_path / "out").read_text(encoding="utf-8")
    assert "<h2>Elicitation quality</h2>" in html and "9 of 10 values are degenerate" in html
    assert "class name 1, repeated 3, identifier 4, number 1" in html


def test_a_reviewed_value_list_is_measured_again(tmp_path: Path) -> None:
    from factory.attributes.elicit import Elicited
    from factory.attributes.lock import lock_quality, to_lock
    from factory.review.attributes import edit_lock

    path = tmp_path / "edited.yaml"
    path.write_text("name: edited\ndomain: news\nclasses: [sports, business]\nsimilar_classes: {k: 0}\n"
                    "attributes:\n  topic: {elicit: {n: 10}}\n  style: {elicit: {n: 2}}\nfilters: {caf: false}\n")
    spec = parse_spec(path.read_text(), source=path)
    values = {"topic": {"": DEGENERATE}, "style": {"": ["op-ed", "report"]}}
    write_lock(lock_path(spec), to_lock(spec, Elicited(values=values), spec_quality(spec, values, None, "recorded")))
    edit_lock(spec, "topic", "", "sports")
    quality = lock_quality(spec, read_lock(lock_path(spec)))
    assert (quality["topic"][""].values, quality["topic"][""].degenerate) == (9, 8)
    assert quality["topic"][""].embedding == "skipped: not measured" and quality["style"][""].embedding == "recorded"


def test_plan_prices_elicitation_with_the_elicitation_model() -> None:
    from factory.generation.estimate import estimate

    text = SPEC.replace("GEN_URL", "http://127.0.0.1:9/v1").replace("ELICIT_URL", "http://127.0.0.1:9/v1")
    base = estimate(parse_spec(text))
    dearer = estimate(parse_spec(text.replace("strong: {input_per_mtok: 10.0, output_per_mtok: 30.0}",
                                              "strong: {input_per_mtok: 20.0, output_per_mtok: 60.0}")))
    assert base.elicitation_requests > 0 and base.elicitation_usd_max > 0
    assert dearer.elicitation_usd_max == pytest.approx(2 * base.elicitation_usd_max)
    assert (dearer.usd_expected, dearer.usd_max) == (base.usd_expected, base.usd_max)
