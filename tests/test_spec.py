"""The spec: round-trips, stable hash, and malformed specs that fail naming field and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.spec import ENV_REF, Spec, SpecError, load_spec, parse_spec

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


def test_shipped_specs_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        for var in ENV_REF.findall(path.read_text()):  # e.g. ${AGNEWS_TEST_SET}: set where the test set lives
            monkeypatch.setenv(var[0], "/elsewhere/test.jsonl")
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
    ("name not a slug", VALID.replace("name: news", "name: My News"), "name", 1,
     "'My News' must be a lower-case slug (letters, digits, '_', '.', '-'"),
    ("missing values_file", VALID.replace("values: [op-ed, report]", "values_file: styles.txt"),
     "attributes.style.values_file", 14, "styles.txt does not exist"),
    ("values_file dir missing a class", VALID.replace("values: [op-ed, report]", "values_file: by_class"),
     "attributes.style.values_file", 14, "no sports.txt or sports.jsonl in"),
    ("values_file unset variable", VALID.replace("values: [op-ed, report]", "values_file: ${NOPE_VAR}/s.txt"),
     "attributes.style.values_file", 14, "environment variable NOPE_VAR is not set"),
    ("missing template", VALID.replace("temperature: 0.7", "temperature: 0.7\n  template: nope.j2"),
     "generation.template", 23, "nope.j2 does not exist"),
    ("template unset variable", VALID.replace("temperature: 0.7", "temperature: 0.7\n  template: ${NOPE_VAR}"),
     "generation.template", 23, "environment variable NOPE_VAR is not set"),
    ("test_set unset variable", VALID + "evaluation:\n  test_set: ${NOPE_VAR}\n", "evaluation.test_set", 29,
     "environment variable NOPE_VAR is not set"),
    ("train_set unset variable", VALID + "evaluation:\n  train_set: {path: '${NOPE_VAR}/t.csv'}\n",
     "evaluation.train_set.path", 29, "environment variable NOPE_VAR is not set"),
    ("over max_samples", VALID.replace("samples_per_class: 4", "samples_per_class: 6000000"),
     "budget.samples_per_class", 24, "raise budget.max_samples explicitly"),
    ("over a lowered max_samples", VALID.replace("samples_per_class: 4", "samples_per_class: 4\n  max_samples: 7"),
     "budget.samples_per_class", 24, "4 per class x 2 classes = 8 samples, over budget.max_samples (7)"),
    ("max_samples not positive", VALID.replace("samples_per_class: 4", "samples_per_class: 4\n  max_samples: 0"),
     "budget.max_samples", 25, "must be > 0"),
]


@pytest.mark.parametrize("name,text,field,line,phrase", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_spec_names_field_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str,
                                             field: str, line: int, phrase: str) -> None:
    monkeypatch.delenv("NOPE_VAR", raising=False)
    (tmp_path / "by_class").mkdir()
    (tmp_path / "by_class" / "world.txt").write_text("op-ed\n")  # no sports.txt
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
    db = tmp_path / "store-store"
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
    monkeypatch.setenv("NOT_SET_ANYWHERE", "/abs/t.jsonl")
    bare = load_spec(write(tmp_path, VALID + "evaluation:\n  test_set: ${NOT_SET_ANYWHERE}\n", "b.yaml"))
    monkeypatch.delenv("NOT_SET_ANYWHERE")  # unset after loading: resolving the path still refuses
    with pytest.raises(SpecError, match="NOT_SET_ANYWHERE is not set"):
        bare.resolve_path(bare.evaluation.test_set.path)


def test_paths_given_in_every_accepted_layout_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A values file, a per-class directory (.txt or .jsonl), a template and a test set that lives elsewhere."""
    (tmp_path / "styles.txt").write_text("op-ed\nreport\n")
    (tmp_path / "topics").mkdir()
    (tmp_path / "topics" / "world.txt").write_text("elections\n")
    (tmp_path / "topics" / "sports.jsonl").write_text('"tennis"\n')
    (tmp_path / "user.j2").write_text("Write about {{ class_name }}.")
    monkeypatch.setenv("TEMPLATE_DIR", str(tmp_path))
    text = (VALID.replace("values: [op-ed, report]", "values_file: styles.txt")
            .replace("values:\n      world: [elections, diplomacy]\n      sports: [football, tennis]\n",
                     "values_file: topics\n")
            .replace("temperature: 0.7", "temperature: 0.7\n  template: ${TEMPLATE_DIR}/user.j2")
            + "evaluation:\n  test_set: /nowhere/test.jsonl\n")
    spec = load_spec(write(tmp_path, text))
    assert spec.attributes["subtopic"].values_file == "topics"
    assert spec.resolve_path(spec.generation.template or "") == tmp_path / "user.j2"


def test_max_samples_leaves_the_hash_alone(tmp_path: Path) -> None:
    """The guard changes nothing generated, so raising it keeps the stored data's hash."""
    spec = load_spec(write(tmp_path, VALID))
    assert spec.budget.max_samples == 10_000_000
    raised = parse_spec(VALID.replace("samples_per_class: 4", "samples_per_class: 4\n  max_samples: 99"))
    assert raised.budget.max_samples == 99 and raised.hash == spec.hash


def test_parse_without_a_source_checks_no_paths() -> None:
    """A spec handed over as text (e.g. to a training pod) is not checked against this machine's files."""
    text = VALID.replace("values: [op-ed, report]", "values_file: styles.txt") + "evaluation:\n  test_set: ${NOPE_VAR}\n"
    assert parse_spec(text).attributes["style"].values_file == "styles.txt"
