"""Elicitation, similar classes, CAF and the lock file: real model, fault injector, hand edits."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from factory.attributes.stage import resolve_lock
from factory.generation.llm.client import EndpointProvider
from factory.cli import app
from factory.attributes.lock import inputs_hash, lock_path, read_lock, write_lock
from factory.spec import SpecError, load_spec
from factory.store import Store
from conftest import generate
from conftest import query as q
from fault_server import FaultServer

SPEC = textwrap.dedent("""\
    name: lk
    task: TASK
    domain: news article
    classes:
      - sports
      - name: sci_tech
        description: science and technology
      - business
    attributes:
      subtopic:
        per_class: true
        elicit: {n: 3}
      style:
        elicit: {n: 3}
      length: {values: [20], unit: words}
    similar_classes: {k: 1}
    generation:
      method: attrprompt
      base_url: BASE_URL
      max_tokens: 16
    budget:
      samples_per_class: 2
    """)


def write_spec(tmp_path: Path, base_url: str, task: str = "multiclass") -> Path:
    path = tmp_path / "lk.yaml"
    path.write_text(SPEC.replace("BASE_URL", base_url).replace("TASK", task))
    return path




@pytest.mark.llm
def test_lock_with_real_model_then_run_sends_no_elicitation(llm_server, tmp_path: Path, db: Path) -> None:
    path = write_spec(tmp_path, llm_server.base_url)
    result = CliRunner().invoke(app, ["lock", str(path), "--db", str(db)])
    assert result.exit_code == 0, result.output
    lock = read_lock(lock_path(load_spec(path)))
    spec = load_spec(path)
    assert set(lock.attributes) == {"subtopic", "style"}
    assert set(lock.attributes["subtopic"].values) == {"sports", "sci_tech", "business"}
    assert all(lock.attributes["subtopic"].values.values()) and lock.attributes["style"].values
    assert set(lock.similar_classes) == set(spec.class_names)
    for cls, similar in lock.similar_classes.items():
        assert cls not in similar and set(similar) <= set(spec.class_names) and len(similar) <= 1
    decisions = q(db, "SELECT dimension, class, value, dropped, reason FROM caf_decisions")
    elicited_per_class = sum(len(lock.caf["subtopic"].get(c, [])) for c in spec.class_names)
    assert len(decisions) == elicited_per_class > 0
    assert all(d[0] == "subtopic" and d[4] for d in decisions)
    kept = {(c, v) for c, vs in lock.attributes["subtopic"].values.items() for v in vs}
    for _, cls, value, dropped, _ in decisions:
        assert ((cls, value) in kept) != dropped or not kept  # dropped values are gone from the lock
    elicit_requests = q(db, "SELECT count(*) FROM llm_requests WHERE purpose = 'elicit'")[0][0]
    assert elicit_requests >= 3 + 1 + 3  # similar per class, style, subtopic per class
    # a run with the lock: no elicitation request at all
    run = generate(path, db)
    assert run.status == "done" and run.samples == 6
    assert q(db, "SELECT count(*) FROM llm_requests WHERE purpose = 'elicit'")[0][0] == elicit_requests
    used = {v for (a,) in q(db, "SELECT attributes FROM samples") for v in yaml.safe_load(a).values()}
    assert used <= {v for vs in lock.attributes["subtopic"].values.values() for v in vs} | set(
        lock.attributes["style"].values) | {"20"}


def test_elicitation_protocol_lock_round_trip_refresh_and_versions(tmp_path: Path, db: Path) -> None:
    """The fault injector answers every prompt with a few deterministic words: elicitation re-asks for
    more values, drops unknown similar-class names, keeps undecidable CAF verdicts, and a refresh makes a
    new version in DuckDB."""
    with FaultServer() as server:
        path = write_spec(tmp_path, server.base_url)
        spec = load_spec(path)
        with Store(db) as store:
            locked, elicited = lock_spec(spec, store)
            assert elicited
            assert all(len(v) == 3 for v in locked.attributes["subtopic"].values.values())  # 3 asks, 1 each
            assert locked.similar_classes == {"sports": [], "sci_tech": [], "business": []}  # unknown names dropped
            again, elicited_again = lock_spec(spec, store)
            assert not elicited_again and again.model_dump() == locked.model_dump()
            assert store.latest_elicitation(spec.hash)[0] == 1
            sent = server.stats()["total"]
            lock_spec(spec, store, refresh=True)  # same prompts: served from the cache, not re-sent
            assert server.stats()["total"] == sent
    assert read_lock(lock_path(spec)).model_dump(exclude={"created"}) == locked.model_dump(exclude={"created"})


def test_hand_edits_are_honoured_and_validated(tmp_path: Path, db: Path) -> None:
    with FaultServer() as server:
        path = write_spec(tmp_path, server.base_url)
        spec = load_spec(path)
        with Store(db) as store:
            locked, _ = lock_spec(spec, store)
        lock_file = lock_path(spec)
        data = yaml.safe_load(lock_file.read_text())
        data["attributes"]["subtopic"]["values"]["sports"] = ["curling on ice"]
        data["attributes"]["style"]["values"] = ["haiku report"]
        data["similar_classes"]["sports"] = ["business"]
        lock_file.write_text(yaml.safe_dump(data, sort_keys=False))
        generate(path, db)
        with Store(db) as store:
            assert store.latest_elicitation(spec.hash)[0] == 2  # the edited lock is a new version
        prompts = " ".join(m for (m,) in q(db, "SELECT messages FROM prompts WHERE method = 'generate'"))
        assert "curling on ice" in prompts and "haiku report" in prompts
        assert q(db, "SELECT count(*) FROM attribute_values WHERE value = 'curling on ice' AND version = 2") == [(1,)]
        # a broken edit names the lock file, the line and the field
        text = lock_file.read_text().replace("- haiku report", "- haiku report\n    - Haiku Report")
        lock_file.write_text(text)
        with pytest.raises(SpecError) as info:
            generate(path, db)
        issue = info.value.issues[0]
        assert issue.file == str(lock_file) and issue.field == "attributes.style.values" and issue.line
        assert "must not repeat" in issue.message
        # an unknown class in similar_classes
        data["similar_classes"]["sports"] = ["cooking"]
        lock_file.write_text(yaml.safe_dump(data, sort_keys=False))
        with pytest.raises(SpecError, match=r"similar_classes.sports: unknown classes \['cooking'\]"):
            generate(path, db)


def test_stale_lock_asks_for_refresh(tmp_path: Path, db: Path) -> None:
    with FaultServer() as server:
        path = write_spec(tmp_path, server.base_url)
        with Store(db) as store:
            lock_spec(load_spec(path), store)
        path.write_text(path.read_text().replace("elicit: {n: 3}\n  length", "elicit: {n: 4}\n  length"))
        result = CliRunner().invoke(app, ["run", str(path), "--db", str(db), "--no-progress"])
        assert result.exit_code == 1
        assert "lock --refresh" in result.output
        result = CliRunner().invoke(app, ["run", str(path), "--db", str(db), "--no-progress", "--refresh"])
        assert result.exit_code == 0, result.output
        assert read_lock(tmp_path / "lk.lock.yaml").inputs_hash == inputs_hash(load_spec(path))


def test_multilabel_merges_class_values_instead_of_filtering(tmp_path: Path, db: Path) -> None:
    with FaultServer() as server:
        spec = load_spec(write_spec(tmp_path, server.base_url, task="multilabel"))
        with Store(db) as store:
            locked, _ = lock_spec(spec, store)
    merged = locked.attributes["subtopic"].values
    assert isinstance(merged, list) and len(merged) == 9  # 3 classes x 3 values, all distinct
    assert locked.caf == {}


def test_write_read_round_trip(tmp_path: Path) -> None:
    from factory.attributes.lock import LockFile

    lock = LockFile(spec="x", inputs_hash="h", model="m", created="2026-01-01T00:00:00+00:00",
                    similar_classes={"a": ["b"]}, attributes={"style": {"values": ["one", "two"]}},
                    caf={"subtopic": {"a": [{"value": "v", "dropped": True, "relevant_to": ["b"], "reason": "yes"}]}})
    path = tmp_path / "x.lock.yaml"
    write_lock(path, lock)
    assert path.read_text().startswith("# attrfactory lock file")
    assert read_lock(path).model_dump() == lock.model_dump()


def lock_spec(spec, store, refresh: bool = False):  # noqa: ANN001, ANN201
    """`factory lock`'s stage: the lock and whether it was elicited now."""
    with EndpointProvider() as endpoints:
        return resolve_lock(spec, store, endpoints, refresh)


def test_value_screen_rejects_class_names_dimension_name_and_normalised_duplicates() -> None:
    from factory.attributes.elicit import value_screen

    screen = value_screen("sub_topic", {"positive": "positive", "negative": "negative", "sci_tech": "science"})
    assert screen("Positive", []) == "names the class 'positive'"  # another class's name
    assert screen("  NEGATIVE ", []) == "names the class 'negative'"
    assert screen("sci-tech", []) == screen("Science", []) == "names the class 'sci_tech'"  # name or display
    assert screen("Sub Topic", []) == "is the dimension's own name"
    assert screen("stock-market", ["Stock Market"]) == "duplicate of 'Stock Market'"
    assert screen("stock markets", ["stock market"]) is None and screen("positive outlook", []) is None


class ScriptedElicitor:
    """An Elicitor whose model answers from a script: prompt text fragment -> replies, one per ask."""

    def __init__(self, spec, script: dict[str, list[list[str]]]):  # noqa: ANN001
        import json

        from factory.attributes.elicit import Elicitor

        self.elicitor = Elicitor(spec, engine=None)  # type: ignore[arg-type]
        self.asked: list[str] = []

        async def ask(prompt: str, schema: dict, max_tokens: int, attempt: int) -> str:
            key = next(k for k in script if k in prompt)
            self.asked.append(key)
            replies = script[key]
            return json.dumps({"values": replies[min(attempt, len(replies) - 1)]})

        self.elicitor.ask = ask  # type: ignore[method-assign]


def test_elicited_class_names_and_duplicates_are_dropped_before_caf_and_locked(tmp_path: Path) -> None:
    import asyncio

    from factory.attributes.lock import to_lock

    path = write_spec(tmp_path, "http://127.0.0.1:9/v1")
    path.write_text(path.read_text().replace("similar_classes: {k: 1}", "similar_classes: {given: {sports: "
                    "[business], sci_tech: [sports], business: [sports]}}\nfilters: {caf: false}"))
    spec = load_spec(path)
    scripted = ScriptedElicitor(spec, {
        'about "sports"': [["Business", "football", "Foot-ball"], ["football", "tennis", "subtopic", "golf"]],
        'about "science and technology"': [["space", "chips", "science and technology"], ["robots"]],
        'about "business"': [["markets", "banks", "retail"]],
        "style": [["wire report", "Wire_Report", "feature", "sci-tech", "column"]],
    })
    elicited = asyncio.run(scripted.elicitor.run(["subtopic", "style"], need_similar=False))
    sub = elicited.values["subtopic"]
    assert sub["sports"] == ["football", "tennis", "golf"]  # the re-ask made up for the drops
    assert sub["sci_tech"] == ["space", "chips", "robots"] and sub["business"] == ["markets", "banks", "retail"]
    assert elicited.values["style"] == {"": ["wire report", "feature", "column"]}
    assert scripted.asked.count('about "sports"') == 2 and scripted.asked.count('about "business"') == 1
    got = {(r.dimension, r.class_name, r.value): r.reason for r in elicited.rejected}
    assert got == {("subtopic", "sports", "Business"): "names the class 'business'",
                   ("subtopic", "sports", "Foot-ball"): "duplicate of 'football'",
                   ("subtopic", "sports", "subtopic"): "is the dimension's own name",
                   ("subtopic", "sci_tech", "science and technology"): "names the class 'sci_tech'",
                   ("style", "", "Wire_Report"): "duplicate of 'wire report'",
                   ("style", "", "sci-tech"): "names the class 'sci_tech'"}
    lock = to_lock(spec, elicited)
    assert [r.model_dump() for r in lock.rejected["subtopic"]["sports"]] == [
        {"value": "Business", "reason": "names the class 'business'"},
        {"value": "Foot-ball", "reason": "duplicate of 'football'"},
        {"value": "subtopic", "reason": "is the dimension's own name"}]
    write_lock(tmp_path / "x.lock.yaml", lock)
    assert read_lock(tmp_path / "x.lock.yaml").model_dump() == lock.model_dump()


def test_lock_without_rejected_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.lock.yaml"
    path.write_text("spec: x\ninputs_hash: h\nmodel: m\ncreated: '2026-01-01'\nattributes: {style: {values: [a]}}\n")
    assert read_lock(path).rejected == {}
