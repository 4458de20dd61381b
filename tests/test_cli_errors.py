"""Bad input ends every command with one clean error line, never a traceback (the real CLI, as a subprocess).

``run`` and ``lock`` fail at spec load or store open, before any LLM server starts, so this file stays fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SPEC = textwrap.dedent("""\
    name: cli-errors
    domain: news headline
    classes: [sports, business]
    attributes:
      style:
        values: [breaking news, analysis]
    similar_classes:
      given: {sports: [business], business: [sports]}
    budget:
      samples_per_class: 2
    evaluation:
      test_set: test.jsonl
    """)

SPEC_COMMANDS = ["validate", "plan", "run", "lock", "export", "report", "train"]
DB_COMMANDS = ["run", "lock", "export", "report", "train", "show"]  # validate and plan take no --db


def factory(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("NOPE_VAR", None)
    return subprocess.run([sys.executable, "-m", "factory.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def assert_one_clean_error(result: subprocess.CompletedProcess[str], phrase: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error")]
    assert len(errors) == 1, output
    assert phrase in errors[0], output


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    rows = [{"text": "The match ended 2-1.", "label": "sports"}, {"text": "Shares fell 3%.", "label": "business"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "good.yaml").write_text(SPEC)
    (tmp_path / "missing_values.yaml").write_text(
        SPEC.replace("values: [breaking news, analysis]", "values_file: styles/all.txt"))
    (tmp_path / "unset_var.yaml").write_text(SPEC.replace("test_set: test.jsonl", "test_set: ${NOPE_VAR}"))
    (tmp_path / "not-a-db.duckdb").write_text("just some text\n")
    import duckdb

    old = duckdb.connect(str(tmp_path / "old.duckdb"))  # a single-file store of an older attrfactory
    old.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR); INSERT INTO meta VALUES ('schema_version', '3')")
    old.close()
    return tmp_path


def db_args(command: str, workdir: Path) -> list[str]:
    return [] if command in ("validate", "plan") else ["--store", str(workdir / "store")]


@pytest.mark.parametrize("command", SPEC_COMMANDS)
def test_bad_spec_is_one_error_line(workdir: Path, command: str) -> None:
    cases = [("nope.yaml", "nope.yaml: no such spec file"),
             ("missing_values.yaml", "missing_values.yaml:6: attributes.style.values_file: "),
             ("unset_var.yaml", "unset_var.yaml:12: evaluation.test_set: environment variable NOPE_VAR is not set")]
    for spec, phrase in cases:
        assert_one_clean_error(factory(command, spec, *db_args(command, workdir), cwd=workdir), phrase)
    assert not (workdir / "store").exists()  # refused before the store is even opened


@pytest.mark.parametrize("command", DB_COMMANDS)
def test_db_that_is_not_a_store_is_one_error_line(workdir: Path, command: str) -> None:
    spec = [] if command == "show" else ["good.yaml"]
    result = factory(command, *spec, "--db", "not-a-db.duckdb", cwd=workdir)
    assert_one_clean_error(result, "not-a-db.duckdb is a file, not a store folder")
    result = factory(command, *spec, "--db", "old.duckdb", cwd=workdir)
    assert_one_clean_error(result, "old.duckdb is a single-file store of an older attrfactory")
    assert "factory migrate" in result.stderr


def test_show_without_a_store(workdir: Path) -> None:
    assert_one_clean_error(factory("show", "--store", "nope", cwd=workdir), "no store here yet")


def test_messages_print_verbatim(workdir: Path) -> None:
    """Brackets in a message are text, not rich markup (the name pattern once printed as '^*$')."""
    (workdir / "markup.yaml").write_text(SPEC.replace("budget:", "generation:\n  method: '[red]oops'\nbudget:"))
    assert_one_clean_error(factory("validate", "markup.yaml", cwd=workdir), "'[red]oops' is not one of attrprompt")
    (workdir / "name.yaml").write_text(SPEC.replace("name: cli-errors", "name: CLI Errors"))
    assert_one_clean_error(factory("validate", "name.yaml", cwd=workdir),
                           "name.yaml:1: name: 'CLI Errors' must be a lower-case slug (letters, digits, '_', '.', '-'")
