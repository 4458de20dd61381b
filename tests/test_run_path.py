"""One run path: the CLI, the UI and the tests run the same asset graph; the spec is parsed once; stages
hand on their results; services are resources; plans stream and are balanced at every prefix. The runs go
through the real offline model (llama-server + SmolLM2), tiny budgets."""

from __future__ import annotations

import textwrap
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import factory.spec
from factory.attributes.values import given_attributes
from factory.cli import app
from factory.defs.resources import LLMResource, spec_files
from factory.generation.estimate import estimate
from factory.generation.methods import METHODS
from factory.generation.plan import Plan
from factory.spec import Method, load_spec, parse_spec
from factory.store import Store
from conftest import generate
from conftest import query as q

SPEC = textwrap.dedent("""\
    name: path
    domain: short news headline
    classes: CLASSES
    attributes:
      style: {values: [breaking news, analysis, interview]}
    similar_classes: {k: 0}
    generation: {method: attrprompt, BASE max_tokens: 16, max_concurrency: 4}
    budget: {samples_per_class: SPC EXTRA}
    """)


def write(folder: Path, base_url: str | None, name: str = "path.yaml", classes: str = "[sports, business, weather]",
          spc: int = 3, extra: str = "", body: str = SPEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = (body.replace("CLASSES", classes).replace("SPC", str(spc)).replace(" EXTRA", extra)
            .replace("BASE ", f"base_url: {base_url}, " if base_url else ""))
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.llm
def test_a_cli_run_parses_the_spec_once(llm_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = factory.spec.parse_spec
    monkeypatch.setattr(factory.spec, "parse_spec", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = write(tmp_path, llm_server.base_url)
    result = CliRunner().invoke(app, ["run", str(path), "--db", str(tmp_path / "f-store"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1


@pytest.mark.llm
def test_any_suffix_and_folder_works(llm_server, tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere" / "deep", llm_server.base_url, name="news.v2.yml")
    for command in (["validate", str(path)], ["plan", str(path)],
                    ["run", str(path), "--db", str(tmp_path / "f-store"), "--no-progress"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
    assert q(tmp_path / "f-store", "SELECT count(*) FROM samples") == [(9,)]
    assert set(spec_files(path.parent)) == {"news.v2"}  # the sensor's folder listing sees .yml specs too


@pytest.mark.llm
def test_stages_hand_on_their_results(llm_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attribute set is resolved once per run and the plan built once, not once per asset."""
    import factory.defs.assets as assets

    resolved, plans = [], []
    real_resolve, real_plan = assets.resolve_attributes, assets.Plan
    monkeypatch.setattr(assets, "resolve_attributes", lambda *a, **k: resolved.append(1) or real_resolve(*a, **k))
    monkeypatch.setattr(assets, "Plan", lambda *a, **k: plans.append(1) or real_plan(*a, **k))
    generate(write(tmp_path, llm_server.base_url), tmp_path / "f-store")
    assert len(resolved) == 1 and len(plans) == 1


@pytest.mark.llm
def test_the_endpoint_is_a_resource_a_test_swaps(llm_server, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec with no base_url goes where the deployment's LLM resource points. No other route is open: no
    $OPENAI_BASE_URL, and the embedded fallback server cannot start (its binary points nowhere)."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("LLAMA_SERVER", str(tmp_path / "no-llama-server"))
    path = write(tmp_path, None)
    result = generate(path, tmp_path / "f-store", resources={"llm": LLMResource(base_url=llm_server.base_url)})
    assert result.status == "done" and result.sent == 9
    assert q(tmp_path / "f-store", "SELECT count(*) FROM llm_requests") == [(9,)]


@pytest.mark.llm
@pytest.mark.parametrize("method,elicited", [("simprompt", set()), ("zeroshot", {"style"})])
def test_a_method_elicits_only_the_dimensions_it_uses(llm_server, tmp_path: Path, method: str,
                                                      elicited: set[str]) -> None:
    body = SPEC.replace("style: {values: [breaking news, analysis, interview]}",
                        "style: {elicit: {n: 2}}\n  subtopic: {per_class: true, elicit: {n: 2}}")
    body = body.replace("similar_classes: {k: 0}", "similar_classes: {k: 1}")
    path = write(tmp_path, llm_server.base_url, body=body.replace("method: attrprompt", f"method: {method}"))
    est = estimate(load_spec(path))
    assert set(est.elicited) == elicited
    generate(path, tmp_path / "f-store")
    prompts = [m for (m,) in q(tmp_path / "f-store", "SELECT messages FROM prompts WHERE method = 'elicit'")]
    assert all("subtopic" not in p for p in prompts)
    assert bool(prompts) == bool(elicited)
    if not elicited:
        assert est.elicitation_requests == 0 and not (tmp_path / "path.lock.yaml").exists()


@pytest.mark.llm
def test_the_evaluation_check_is_skipped_without_a_test_set(llm_server, tmp_path: Path) -> None:
    path = write(tmp_path, llm_server.base_url, extra="}\nfilters: {near_dup: null, min_words: 0")
    result = CliRunner().invoke(app, ["run", str(path), "--db", str(tmp_path / "f-store"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "check evaluation_present: skipped" in result.output
    assert "check budget_not_exceeded: pass" in result.output


@pytest.mark.llm
def test_a_capped_run_is_balanced_across_classes(llm_server, tmp_path: Path) -> None:
    """30% of the requests: every class within one sample of the others (the plan interleaves classes)."""
    path = write(tmp_path, llm_server.base_url, spc=20, extra=", max_requests: 18")
    result = generate(path, tmp_path / "f-store")
    assert result.status == "budget_stopped"
    counts = dict(q(tmp_path / "f-store", "SELECT class, count(*) FROM samples GROUP BY 1"))
    assert sum(counts.values()) == 18 and set(counts) == {"sports", "business", "weather"}
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.llm
def test_the_ten_percent_budget_subset_trains_on_every_class(llm_server, tmp_path: Path) -> None:
    from factory.training.evaluate import budget_subsets, pool_from_store

    path = write(tmp_path, llm_server.base_url, classes="[sports, business, weather, science]", spc=10)
    generate(path, tmp_path / "f-store")
    with Store(tmp_path / "f-store") as store:
        pool = pool_from_store(store, load_spec(path))
    (tenth,) = budget_subsets(pool, [0.1])
    assert tenth.requests == 4 and sorted(tenth.labels) == ["business", "science", "sports", "weather"]


def test_every_prefix_of_a_plan_is_balanced() -> None:
    spec = parse_spec(SPEC.replace("CLASSES", "[a, b, c]").replace("SPC", "50").replace(" EXTRA", "")
                      .replace("BASE ", ""))
    plan = Plan(spec, given_attributes(spec))
    units = list(plan)
    assert len(units) == plan.requests == 150
    for k in range(1, len(units) + 1):
        counts = Counter(u.class_name for u in units[:k])
        assert max(counts.values()) - min(counts.get(c, 0) for c in "abc") <= 1


def test_a_huge_plan_is_counted_not_listed() -> None:
    """10 million samples: estimated in bounded memory (combinatorics and a sample of prompts)."""
    spec = parse_spec(SPEC.replace("CLASSES", "[a, b, c, d, e]").replace("SPC", "2000000")
                      .replace(" EXTRA", "").replace("BASE ", ""))
    tracemalloc.start()
    est = estimate(spec)
    first = next(iter(Plan(spec, given_attributes(spec))))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert est.generation_requests == 10_000_000 and est.prompt_tokens > 10_000_000
    assert first.class_name == "a"
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_every_spec_method_is_registered() -> None:
    assert set(METHODS) == set(Method.__args__)  # type: ignore[attr-defined]


def test_there_is_no_second_run_path() -> None:
    import importlib.util

    assert importlib.util.find_spec("factory.pipeline") is None


def test_the_budget_curve_follows_the_plan_not_the_arrival_order() -> None:
    """Completions that arrived class by class still give budget subsets that interleave the classes."""
    from factory.training.evaluate import SamplePool, TrainExample, budget_subsets

    arrived = [TrainExample(f"{c}{i}", c, f"{c}-{i}", True, i) for c in ("a", "b", "c") for i in range(4)]
    pool = SamplePool(arrived, {e.request_key: (1, 1, 0.0) for e in arrived}, "file", ["a", "b", "c"])
    assert pool.request_order()[:6] == ["a-0", "b-0", "c-0", "a-1", "b-1", "c-1"]
    (quarter,) = budget_subsets(pool, [0.25])
    assert sorted(quarter.labels) == ["a", "b", "c"]
    assert budget_subsets(pool, [0.25], "generated")[0].labels == ["a", "a", "a"]
