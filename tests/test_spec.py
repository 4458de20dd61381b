"""The spec: round-trips, stable hash, and malformed specs that fail naming field and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.spec import Spec, SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]

VALID = textwrap.dedent("""\
    name: news
    domain: news article
    classes:
      - world
      - name: sports
        description: games and athletes
    attributes:
      subtopic:
        per_class: true
        values:
          world: [elections, diplomacy]
          sports: [football, tennis]
      style:
        values: [op-ed, report]
      length:
        range: {min: 30, max: 90, step: 30}
        unit: words
    similar_classes:
      given: {world: [sports], sports: [world]}
    generation:
      method: attrprompt
      temperature: 0.7
    budget:
      samples_per_class: 4
      max_usd: 2.5
      prices:
        smollm2: {input_per_mtok: 0.1, output_per_mtok: 0.2}
    """)


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_spec_round_trips(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, VALID))
    assert spec.class_names == ["world", "sports"]
    assert spec.classes[1].description == "games and athletes"
    assert spec.attributes["length"].range.values() == ["30", "60", "90"]
    again = Spec.model_validate(spec.model_dump())
    assert again.model_dump() == spec.model_dump() and again.hash == spec.hash
    # the hash follows the meaning, not the formatting
    reformatted = parse_spec(VALID.replace("temperature: 0.7", "temperature: 0.70  # tuned"))
    assert reformatted.hash == spec.hash
    assert parse_spec(VALID.replace("temperature: 0.7", "temperature: 0.8")).hash != spec.hash


def test_shipped_specs_validate() -> None:
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        assert load_spec(path).name


# (name, the YAML, the field the error must name, the line it must name, a phrase of the message)
MALFORMED = [
    ("typo key", VALID.replace("budget:\n", "budgt:\n"), "budgt", 23, "did you mean 'budget'"),
    ("nested typo", VALID.replace("temperature: 0.7", "temprature: 0.7"), "generation.temprature", 22,
     "did you mean 'temperature'"),
    ("wrong type", VALID.replace("samples_per_class: 4", "samples_per_class: many"), "budget.samples_per_class",
     24, "integer"),
    ("empty classes", VALID.replace("classes:\n  - world\n  - name: sports\n    description: games and athletes\n",
                                    "classes: []\n"), "classes", 3, "at least 2"),
    ("duplicate class", VALID.replace("  - name: sports", "  - name: World"), "classes", 3, "duplicate class"),
    ("negative budget", VALID.replace("max_usd: 2.5", "max_usd: -1"), "budget.max_usd", 25, "must be > 0"),
    ("unknown method", VALID.replace("method: attrprompt", "method: attrprmpt"), "generation.method", 21,
     "did you mean 'attrprompt'"),
    ("values and elicit", VALID.replace("values: [op-ed, report]", "values: [op-ed, report]\n    elicit: {n: 3}"),
     "attributes.style", 13, "exactly one of"),
    ("per_class values missing a class", VALID.replace("      sports: [football, tennis]\n", ""),
     "attributes.subtopic.values", 10, "missing classes ['sports']"),
    ("api key instead of a name", VALID.replace("method: attrprompt", "method: attrprompt\n  api_key_env: sk-abc123"),
     "generation.api_key_env", 22, "NAME of an environment variable"),
    ("duplicate key", VALID.replace("  temperature: 0.7", "  temperature: 0.7\n  temperature: 0.9"),
     "generation.temperature", 23, "duplicate key"),
    ("range reversed", VALID.replace("{min: 30, max: 90, step: 30}", "{min: 90, max: 30}"),
     "attributes.length.range", 16, "must be >= min"),
]


@pytest.mark.parametrize("name,text,field,line,phrase", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_spec_names_field_and_line(tmp_path: Path, name: str, text: str, field: str, line: int,
                                             phrase: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    issue = info.value.issues[0]
    assert issue.field == field, str(info.value)
    assert issue.line == line, str(info.value)
    assert phrase in issue.message, str(info.value)
    assert str(issue).startswith(f"{path}:{line}: {field}: ")


def test_bad_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("  method: attrprompt", "  method: [attrprompt"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "invalid YAML" in str(info.value)
    assert info.value.issues[0].line in (21, 22)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name,text,field,line,phrase", MALFORMED[:6] + MALFORMED[7:9],
                         ids=[m[0] for m in MALFORMED[:6] + MALFORMED[7:9]])
def test_cli_rejects_malformed_and_writes_nothing(tmp_path: Path, name: str, text: str, field: str, line: int,
                                                  phrase: str) -> None:
    path = write(tmp_path, text)
    db = tmp_path / "store.duckdb"
    for command in (["validate", str(path)], ["plan", str(path)], ["run", str(path), "--db", str(db)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert f":{line}: {field}" in result.output.replace("\n", "")
    assert not db.exists()


def test_env_expansion_in_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(write(tmp_path, VALID + "evaluation:\n  test_set: ${MY_TEST:-data/test.jsonl}\n"))
    assert spec.resolve_path(spec.evaluation.test_set.path) == tmp_path / "data/test.jsonl"
    monkeypatch.setenv("MY_TEST", "/abs/test.csv")
    assert spec.resolve_path(spec.evaluation.test_set.path) == Path("/abs/test.csv")
    monkeypatch.delenv("MY_TEST")
    bare = load_spec(write(tmp_path, VALID + "evaluation:\n  test_set: ${NOT_SET_ANYWHERE}\n", "b.yaml"))
    with pytest.raises(SpecError, match="NOT_SET_ANYWHERE is not set"):
        bare.resolve_path(bare.evaluation.test_set.path)
