"""The subjectivity view (Li et al., EMNLP 2023): accuracy per annotator-agreement bin (from an agreement
column or raw annotations), the gold-synthetic gap across specs, `factory report --compare` and its advice."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import generate
from fault_server import FaultServer

from factory.cli import app
from factory.spec import load_spec, parse_spec
from factory.store import Store
from factory.training.evaluate import load_labelled, load_test_set
from factory.training.job import JobOptions, default_compare, run_job
from factory.training.subjectivity import TaskRow, advice, agreement_bins, agreement_drop, task_rows

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["world", "sports", "business"]
TEXTS = {"world": "The foreign minister of {} met the president to discuss the border treaty and peace talks.",
         "sports": "The striker from {} scored twice as the team won the cup final on Sunday night.",
         "business": "Shares of {} Corp rose after quarterly earnings beat forecasts, the company told investors."}
PLACES = ["France", "Kenya", "India", "Brazil", "Poland", "Egypt", "Japan", "Chile", "Turkey", "Ghana", "Peru", "Oman"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- instance level -----------------------------------------------------------------------------------


def test_agreement_bins_match_a_hand_computation() -> None:
    labels = ["a", "a", "b", "b", "a", "b", "a"]
    preds = ["a", "b", "b", "a", "a", "b", "b"]
    agree = [1.0, 1.0, 0.6, 0.6, 0.6, 1 / 3, 1 / 3]
    bins = agreement_bins(labels, preds, agree)
    # by hand: 0.33 -> (b=b, a!=b) 1 of 2; 0.6 -> (b=b, b!=a, a=a) 2 of 3; 1.0 -> (a=a, a!=b) 1 of 2
    assert [(b["label"], b["n"], b["correct"], b["accuracy"]) for b in bins] == [
        ("0.33", 2, 1, 0.5), ("0.6", 3, 2, 0.6667), ("1", 2, 1, 0.5)]
    many = [i / 20 for i in range(21)]  # more than 8 distinct values: bins of width 0.2, 1.0 in the last
    wide = agreement_bins(["a"] * 21, ["a"] * 10 + ["b"] * 11, many)
    assert [(b["label"], b["n"], b["correct"]) for b in wide] == [
        ("0–0.2", 4, 4), ("0.2–0.4", 4, 4), ("0.4–0.6", 4, 2), ("0.6–0.8", 4, 0), ("0.8–1", 5, 0)]
    assert agreement_drop(wide, min_n=4)["drop"] == -1.0 and agreement_drop(bins, min_n=3) is None


def test_raw_annotations_give_the_same_bins_as_the_agreement_column(tmp_path: Path) -> None:
    annotated = [("good", "positive", ["positive"] * 3), ("bad", "negative", ["negative", "positive", "NEGATIVE"]),
                 ("meh", "negative", ["negative", "positive", "positive"]), ("ok", "positive", ["positive"] * 3),
                 ("hmm", "positive", ["positive", "negative", "positive"]),
                 ("so so", "negative", ["negative", "negative", "negative"])]
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"text": t, "label": y, "votes": v} for t, y, v in annotated])
    column = write_jsonl(tmp_path / "col.jsonl", [{"text": t, "label": y, "agreement": sum(
        a.lower() == y for a in v) / len(v)} for t, y, v in annotated])
    classes = ["negative", "positive"]
    from_raw = load_labelled(raw, classes, annotations_field="votes")
    from_column = load_labelled(column, classes)  # the `agreement` column is found without being named
    assert from_raw.agreement == pytest.approx(from_column.agreement, abs=1e-4)
    assert from_raw.agreement == pytest.approx([1, 2 / 3, 1 / 3, 1, 2 / 3, 1], abs=1e-4)
    preds = ["positive", "positive", "negative", "positive", "negative", "negative"]
    assert agreement_bins(from_raw.labels, preds, from_raw.agreement) == \
        agreement_bins(from_column.labels, preds, from_column.agreement)
    assert load_labelled(raw, classes).agreement is None  # neither column: no agreement


def test_financial_phrasebank_bins_against_a_hand_count(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    test_file = shared_data / "financial_phrasebank" / "test.jsonl"
    monkeypatch.setenv("FPB_TEST_SET", str(test_file))
    spec = load_spec(ROOT / "specs" / "financial_phrasebank.yaml")
    test = load_test_set(spec, max_rows=200, seed=3)
    raw = [json.loads(line) for line in test_file.read_text().splitlines()]
    by_text = {r["text"]: r for r in raw}
    picked = [by_text[t] for t in test.texts]
    preds = ["neutral"] * len(test)  # the majority class: accuracy per bin = the share of neutral texts
    bins = agreement_bins(test.labels, preds, test.agreement)
    by_hand: dict[float, Counter] = {}
    for r in picked:
        by_hand.setdefault(round(r["agreement"], 2), Counter())[r["label"] == "neutral"] += 1
    assert [b["lo"] for b in bins] == sorted(by_hand) == [0.5, 0.66, 0.75, 1.0]
    for b in bins:
        c = by_hand[b["lo"]]
        assert (b["n"], b["correct"]) == (c[True] + c[False], c[True])
        assert b["accuracy"] == round(c[True] / b["n"], 4)


def test_unset_agreement_fields_keep_the_spec_hash() -> None:
    base = "name: t\ndomain: d\nclasses: [a, b]\nevaluation:\n  test_set:\n    path: x.jsonl\n"
    assert parse_spec(base).hash == parse_spec(base.replace("    path: x.jsonl\n", "    path: x.jsonl\n"
                                                             "    text_field: text\n")).hash
    assert parse_spec(base + "    agreement_field: agree\n").hash != parse_spec(base).hash
    assert "agreement_field" not in parse_spec(base).model_dump(mode="json")["evaluation"]["test_set"]


# ---- the advice ----------------------------------------------------------------------------------------


def _bins(accuracies: list[float]) -> list[dict]:
    return [{"lo": lo, "hi": lo, "label": f"{lo:g}", "n": 20, "correct": round(20 * a), "accuracy": a}
            for lo, a in zip([0.5, 0.66, 0.75, 1.0], accuracies)]


def test_advice_names_the_gap_and_the_agreement_drop() -> None:
    row = TaskRow("financial_phrasebank", "fpb", "h", "zeroshot", "linear_probe", 80,
                  f1={"synthetic": 0.52, "gold": 0.73}, bins={"synthetic": _bins([0.3, 0.5, 0.6, 0.8]),
                                                              "gold": _bins([0.5, 0.6, 0.7, 0.9])})
    text = advice(row)
    assert text == ("fpb (zeroshot): synthetic data is 0.21 F1 below real data on this task (0.52 vs 0.73 macro-F1); "
                    "the model is weakest where annotators disagree (accuracy 0.80 at agreement 1, 0.30 at 0.5; "
                    "trained on real data: 0.40) — consider few-shot generation with real examples or a small real set.")
    calm = TaskRow("agnews", "ag", "h", "attrprompt", "linear_probe", 80, f1={"synthetic": 0.80, "gold": 0.85},
                   bins={"synthetic": _bins([0.7, 0.75, 0.75, 0.8])})
    assert advice(calm) is None


# ---- task level: real runs of two specs through the fault server -----------------------------------------

SPEC = """\
name: {name}
domain: news article
classes: [world, sports, business]
attributes:
  style:
    values: [report, interview]
generation:
  method: {method}
  base_url: {base_url}
  max_tokens: 24
  max_concurrency: 8
  fewshot_k: 2
budget:
  samples_per_class: 6
filters:
  caf: false
  near_dup: null
  min_words: 1
evaluation:
  test_set: test.jsonl
  train_set: train.jsonl
training:
  budget_fractions: [1.0]
"""


def _task_files(tmp_path: Path) -> None:
    rng = random.Random(4)
    rows = [{"text": TEXTS[c].format(p), "label": c} for c in CLASSES for p in PLACES]
    rng.shuffle(rows)
    write_jsonl(tmp_path / "train.jsonl", rows[:18])
    write_jsonl(tmp_path / "test.jsonl", [dict(r, agreement=[1.0, 0.75, 0.5][i % 3]) for i, r in enumerate(rows[18:])])


def test_compare_report_across_two_specs(tmp_path: Path) -> None:
    _task_files(tmp_path)
    db = tmp_path / "factory-store"
    paths = []
    with FaultServer(seed=2) as server:
        for name, method in (("news_zeroshot", "zeroshot"), ("news_fewshot", "fewshot")):
            path = tmp_path / f"{name}.yaml"
            path.write_text(SPEC.format(name=name, method=method, base_url=server.base_url))
            assert generate(path, db).samples > 0
            paths.append(path)
    runner = CliRunner()
    for path in paths:
        assert default_compare(load_spec(path)) == ["synthetic", "gold", "synthetic+gold"]
        result = runner.invoke(app, ["report", str(path), "--db", str(db), "--out", str(tmp_path / "r")])
        assert result.exit_code == 0, result.output
        run_job(JobOptions(spec=str(path), db=str(db)))
        result = runner.invoke(app, ["report", str(path), "--db", str(db), "--out", str(tmp_path / "r"), "--no-measure"])
        assert result.exit_code == 0, result.output
    single = (tmp_path / "r" / "news_zeroshot.html").read_text()
    assert "Subjectivity: synthetic against real data" in single and "news_zeroshot_subjectivity_agreement.png" in single

    with Store(db, read_only=True) as store:
        rows = task_rows(store, [load_spec(p) for p in paths])
    for row in rows:
        assert set(row.f1) == {"synthetic", "gold", "synthetic+gold"} and row.gap == pytest.approx(
            row.f1["gold"] - row.f1["synthetic"], abs=1e-4)
        assert row.metrics["aps"] is not None and row.metrics["top5_similarity"] is not None
        assert [b["lo"] for b in row.bins["synthetic"]] == [0.5, 0.75, 1.0]
        assert sum(b["n"] for b in row.bins["gold"]) == 18
    assert {r.method for r in rows} == {"zeroshot", "fewshot"}
    assert rows[0].gap > 0.1  # fault-server words against clearly separable real news

    out = tmp_path / "cmp"
    result = runner.invoke(app, ["report", "--compare", *map(str, paths), "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "news_fewshot" in result.output and "F1 below real data" in " ".join(result.output.split())
    page = (out / "subjectivity.html").read_text()
    assert page.count("<tr>") >= 3 and "gap ↓" in page and "news_zeroshot" in page and "news_fewshot" in page
    assert f"synthetic data is {rows[0].gap:.2f} F1 below real data on this task" in page
    assert "consider few-shot generation with real examples or a small real set" in page
    assert (out / "subjectivity_gap.png").stat().st_size > 1000
    assert (out / "subjectivity_agreement.png").stat().st_size > 1000
    assert 'src="data:image/png;base64,' in page
    bad = runner.invoke(app, ["report", *map(str, paths), "--db", str(db)])
    assert bad.exit_code == 2 and "--compare" in bad.output


def test_the_asset_graph_measures_the_gap_and_shows_it_in_the_metadata(tmp_path: Path) -> None:
    """The Dagster path: the classifier job is handed the spec as text and the staged test and train sets
    (a values_file relative to the spec still works), trains on synthetic, gold and both, and the evaluation
    asset's metadata carries the gap, accuracy per agreement bin and the warning."""
    from factory.defs.local import materialization_metadata, materialize_spec

    _task_files(tmp_path)
    (tmp_path / "styles.txt").write_text("report\ninterview\n")
    with FaultServer(seed=2) as server:
        path = tmp_path / "news_graph.yaml"
        path.write_text(SPEC.format(name="news_graph", method="attrprompt", base_url=server.base_url)
                        .replace("values: [report, interview]", "values_file: styles.txt")
                        .replace("generation:", "similar_classes: {k: 0}\ngeneration:"))
        result = materialize_spec(path, tmp_path / "f-store", export_dir=tmp_path / "exports")
    meta = materialization_metadata(result, "evaluation")
    assert set(meta["macro_f1_by_source"]) == {"synthetic", "gold", "synthetic+gold"}
    f1 = meta["macro_f1_by_source"]
    assert meta["gap_gold_minus_synthetic"] == pytest.approx(f1["gold"] - f1["synthetic"], abs=1e-4)
    bins = meta["accuracy_by_agreement"]["synthetic"]
    assert [b["agreement"] for b in bins] == ["0.5", "0.75", "1"] and sum(b["n"] for b in bins) == 18
    assert "F1 below real data" in meta["warning"]
