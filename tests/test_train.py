"""Training and evaluation: metrics against scikit-learn, the linear probe on real AG News, the job end to
end on the real offline model's samples, standalone, fine-tuning, and under Dagster Pipes."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from conftest import generate

from factory.training.evaluate import (
    EvaluationError,
    LabelMapper,
    SamplePool,
    TrainExample,
    budget_subsets,
    compute_metrics,
    load_labelled,
    plot_f1_vs_budget,
    pool_from_file,
    pool_from_store,
)
from factory.training.job import JobOptions, main, pipes_extras, run_job, run_train_job_local, train_job_command
from factory.spec import load_spec
from factory.store import PromptRecord, RequestRecord, SampleRecord, Store
from factory.quality.embeddings import model_path
from factory.training.trainers import (
    TrainConfig,
    probe_embedder,
    resolve_base_model,
    train_finetune,
    train_linear_probe,
)

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["world", "sports", "business"]

# ---- a tiny, clearly separable text bank (no shared data needed) -------------------------------------

BANK = {
    "world": ("The {a} foreign minister met the president of {b} in {c} to discuss the border {d} and the "
              "peace talks.", ["French", "Kenyan", "Indian", "Brazilian", "Polish"],
              ["Egypt", "Japan", "Chile", "Turkey", "Ghana"], ["Geneva", "Nairobi", "Hanoi", "Oslo"],
              ["crisis", "ceasefire", "treaty", "election"]),
    "sports": ("The {a} striker scored twice as {b} beat their rivals in the {c} {d} final on Sunday night.",
               ["veteran", "young", "injured", "Spanish", "Dutch"], ["Arsenal", "the Lakers", "Boca", "Ajax"],
               ["league", "cup", "championship", "playoff"], ["semi", "grand", "season", "derby"]),
    "business": ("Shares of {a} rose {b} percent after quarterly {c} beat forecasts, the company told "
                 "investors in its {d} report.", ["Acme Corp", "Globex", "Initech", "Umbrella Inc"],
                 ["three", "five", "eight", "twelve"], ["earnings", "revenue", "profit", "sales"],
                 ["annual", "interim", "quarterly", "market"]),
}


def bank_texts(cls: str, n: int, seed: int) -> list[str]:
    template, *pools = BANK[cls]
    rng = random.Random(f"{seed}:{cls}")
    return [template.format(**{k: rng.choice(p) for k, p in zip("abcd", pools)}) for _ in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def bank_test_set(path: Path, n: int = 8, seed: int = 99) -> Path:
    return write_jsonl(path, [{"text": t, "label": c} for c in CLASSES for t in bank_texts(c, n, seed)])


SPEC = """\
name: {name}
domain: news article
classes: [world, sports, business]
generation:
  method: {method}
  base_url: {base_url}
  max_tokens: {max_tokens}
  max_concurrency: 8
budget:
  samples_per_class: {spc}
evaluation:
  test_set: {test_set}
training:
  budget_fractions: [0.25, 0.5, 1.0]
"""


def write_spec(tmp_path: Path, name: str = "probe", method: str = "simprompt", base_url: str = "http://127.0.0.1:9/v1",
               max_tokens: int = 48, spc: int = 4, test_set: str = "test.jsonl", extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, method=method, base_url=base_url, max_tokens=max_tokens, spc=spc,
                                test_set=test_set) + extra)
    return path


def fake_generated_store(db: Path, spec_path: Path, per_class: int = 10, refusals: int = 0) -> list[str]:
    """Samples as the generator writes them (one request each, interleaved classes, increasing times,
    10 prompt + 20 completion tokens and $0.001 a request); the first ``refusals`` are refusals."""
    spec = load_spec(spec_path)
    t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
    requests, samples, keys = [], [], []
    with Store(db) as store:
        store.record_spec(spec, spec.text())
        run_id = store.start_run(spec)
        texts = {c: bank_texts(c, per_class, seed=1) for c in CLASSES}
        n = 0
        for i in range(per_class):
            for c in CLASSES:
                key = f"req-{n:04d}"
                text = "I'm sorry, I cannot write that." if n < refusals else texts[c][i]
                requests.append(RequestRecord(request_key=key, model="smollm2", params="{}", prompt_hash="ph",
                                              purpose="generation", choices=json.dumps([text]), prompt_tokens=10,
                                              completion_tokens=20, cost_usd=0.001, latency_s=0.1, attempts=1))
                samples.append(SampleRecord(
                    sample_id=f"s-{n:04d}", spec_hash=spec.hash, run_id=run_id, class_=c, text=text, attributes="{}",
                    seed=n, sample_index=i, choice_index=0, method=spec.generation.method, prompt_hash="ph",
                    request_key=key, model="smollm2", params="{}", prompt_tokens=10, completion_tokens=20,
                    cost_usd=0.001, is_refusal=n < refusals, generated_at=t0 + timedelta(seconds=n)))
                keys.append(key)
                n += 1
        store.save_completions([PromptRecord(prompt_hash="ph", method=spec.generation.method, messages="[]"),
                                *requests, *samples])
        store.finish_run(run_id, "done")
    return keys


def rows(db: Path, sql: str) -> list[tuple]:
    from conftest import query

    return query(db, sql)


# ---- (1) metrics against scikit-learn -----------------------------------------------------------------


def test_multiclass_metrics_match_sklearn() -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    classes = ["a", "b", "c", "d", "e"]
    rng = random.Random(7)
    for trial in range(20):
        y_true = [rng.choice(classes[:4]) for _ in range(60)]  # 'e' never true ...
        y_pred = [t if rng.random() < 0.5 else rng.choice(classes[: 3 + trial % 3]) for t in y_true]  # ... sometimes predicted
        m = compute_metrics(y_true, y_pred, classes)
        assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
        assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
        assert m["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro", zero_division=0))
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
        for i, c in enumerate(classes):
            assert m["per_class"][c] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
        assert m["confusion"]["matrix"] == confusion_matrix(y_true, y_pred, labels=classes).tolist()
        assert m["confusion"]["labels"] == classes


def test_multilabel_metrics_match_sklearn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, multilabel_confusion_matrix
    from sklearn.preprocessing import MultiLabelBinarizer

    classes = ["a", "b", "c", "d"]
    rng = random.Random(3)
    mlb = MultiLabelBinarizer(classes=classes)
    for _ in range(20):
        y_true = [sorted(rng.sample(classes[:3], rng.randint(0, 2))) for _ in range(40)]
        y_pred = [sorted(set(t) ^ ({rng.choice(classes)} if rng.random() < 0.4 else set())) for t in y_true]
        t, p = mlb.fit_transform(y_true), mlb.transform(y_pred)
        present = [i for i in range(len(classes)) if t[:, i].any() or p[:, i].any()]
        m = compute_metrics(y_true, y_pred, classes, multilabel=True)
        assert m["accuracy"] == pytest.approx(accuracy_score(t, p))
        assert m["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", labels=present, zero_division=0))
        assert m["micro_f1"] == pytest.approx(f1_score(t, p, average="micro", zero_division=0))
        for i, c in enumerate(classes):
            assert m["per_class"][c]["f1"] == pytest.approx(f1_score(t[:, i], p[:, i], zero_division=0))
        assert m["confusion"]["per_class"] == multilabel_confusion_matrix(t, p).tolist()


def test_metrics_edge_cases() -> None:
    empty = compute_metrics([], [], ["a", "b"])
    assert empty["accuracy"] == empty["macro_f1"] == empty["micro_f1"] == 0.0 and empty["n"] == 0
    assert empty["confusion"]["matrix"] == [[0, 0], [0, 0]] and empty["per_class"]["a"]["support"] == 0
    ml = compute_metrics([[], []], [[], []], ["a", "b"], multilabel=True)
    assert ml["accuracy"] == 1.0 and ml["macro_f1"] == 0.0 and ml["confusion"]["per_class"] == [[[2, 0], [0, 0]]] * 2
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        compute_metrics(["a", "b"], ["a"], ["a", "b"])


def test_holdout_split_is_stratified_and_falls_back_for_tiny_sets() -> None:
    from factory.training.trainers import _holdout_split

    labels = [c for c in CLASSES for _ in range(14)]
    train_idx, held = _holdout_split(labels, seed=0)
    assert len(held) == 3 and sorted(train_idx + held) == list(range(42))
    assert sorted(labels[i] for i in held) == sorted(CLASSES)  # one of each class
    assert _holdout_split(labels, seed=0) == (train_idx, held) != _holdout_split(labels, seed=1)
    assert _holdout_split(labels[:9], seed=0) == (list(range(9)), [])  # under 10 texts: no slice
    lopsided = ["world"] * 19 + ["sports"]  # a class of one: not stratifiable
    train_idx, held = _holdout_split(lopsided, seed=0)
    assert len(held) == 2 and len(train_idx) == 18
    multilabel = [[c] for c in labels]
    assert len(_holdout_split(multilabel, seed=0)[1]) == 3


def test_labels_are_mapped_by_name_and_unknown_ones_listed(tmp_path: Path) -> None:
    mapper = LabelMapper(["world", "sci_tech"])
    assert mapper.map_all(["World", "Sci/Tech", "sci_tech", " SCI-TECH "], "x") == ["world", "sci_tech"] + ["sci_tech"] * 2
    with pytest.raises(EvaluationError) as err:
        mapper.map_all(["world", "sports", "0", "sports"], "test.jsonl")
    assert "'sports' (2 rows)" in str(err.value) and "'0' (1 rows)" in str(err.value) and "world" in str(err.value)
    ml = LabelMapper(["a", "b", "c"], multilabel=True)
    assert ml.map_all([["a", "b"], "b;c", "", '["c"]', "A; b"], "x") == [["a", "b"], ["b", "c"], [], ["c"], ["a", "b"]]
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "x", "label": "world"}, {"text": "y", "label": "spam"}])
    with pytest.raises(EvaluationError, match="'spam'"):
        load_labelled(path, ["world", "sports"])


def test_budget_subsets_are_nested_and_priced() -> None:
    examples, spend = [], {}
    for i in range(40):  # 20 requests of 2 samples; class blocks, as a run generates them
        key = f"r{i // 2}"
        examples.append(TrainExample(f"t{i}", "x" if i < 20 else "y", key, kept=i % 7 != 0))
        spend[key] = (5, 10, 0.5)
    pool = SamplePool(examples, spend, "test", ["x", "y"])
    subsets = budget_subsets(pool, [1.0, 0.05, 0.5, 0.25])
    assert [s.fraction for s in subsets] == [0.05, 0.25, 0.5, 1.0]
    assert [s.requests for s in subsets] == [1, 5, 10, 20]
    assert [s.tokens for s in subsets] == [15, 75, 150, 300]
    assert [s.cost_usd for s in subsets] == pytest.approx([0.5, 2.5, 5.0, 10.0])
    for small, big in zip(subsets, subsets[1:]):
        assert set(small.texts) <= set(big.texts)
    assert subsets[-1].texts == [e.text for e in examples if e.kept]
    assert set(subsets[2].labels) == {"x"}  # generation order: the first half of the spend is class x
    interleaved = budget_subsets(pool, [0.1], order="interleaved")[0]
    assert set(interleaved.labels) == {"x", "y"} and interleaved.requests == 2
    with pytest.raises(EvaluationError):
        budget_subsets(pool, [0.0])


def test_store_pool_falls_back_to_non_refusals_and_counts_their_spend(tmp_path: Path, db: Path) -> None:
    spec_path = write_spec(tmp_path)
    fake_generated_store(db, spec_path, per_class=4, refusals=2)
    with Store(db, read_only=True) as store:
        pool = pool_from_store(store, load_spec(spec_path))
    assert len(pool.examples) == 12 and len(pool.kept) == 10 and len(pool.spend) == 12
    assert pool.source in ("non_refusal", "kept_samples")
    full = budget_subsets(pool, [1.0])[0]
    assert full.requests == 12 and full.tokens == 12 * 30 and full.cost_usd == pytest.approx(0.012)
    assert not any(t.startswith("I'm sorry") for t in full.texts)


def test_chart_has_one_line_per_spec(tmp_path: Path) -> None:
    def row(name: str, method: str, f: float, f1: float, source: str = "synthetic") -> dict:
        return {"spec_hash": name, "spec_name": name, "method": method, "trainer": "linear_probe",
                "train_source": source, "budget_fraction": f, "requests": int(100 * f), "tokens": int(9000 * f),
                "cost_usd": 0.0, "macro_f1": f1}

    data = [row("agnews-sim", "simprompt", f, 0.5 + f / 4) for f in (0.1, 0.5, 1.0)]
    data += [row("agnews-attr", "attrprompt", f, 0.55 + f / 4) for f in (0.1, 0.5, 1.0)]
    data.append(row("agnews-attr", "attrprompt", 1.0, 0.9, source="gold"))
    out = plot_f1_vs_budget(data, tmp_path / "chart.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


# ---- (2) the linear probe on real AG News -------------------------------------------------------------


def _balanced(path: Path, per_class: int, seed: int) -> tuple[list[str], list[str]]:
    by: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        by.setdefault(r["label"], []).append(r["text"])
    rng = random.Random(seed)
    texts, labels = [], []
    for label in sorted(by):
        for t in rng.sample(by[label], per_class):
            texts.append(t)
            labels.append(label)
    return texts, labels


def test_linear_probe_on_real_agnews_beats_chance(shared_data: Path) -> None:
    classes = ["world", "sports", "business", "sci_tech"]
    train_x, train_y = _balanced(shared_data / "agnews" / "train.jsonl", 100, seed=0)
    test_x, test_y = _balanced(shared_data / "agnews" / "test.jsonl", 100, seed=1)
    probe = train_linear_probe(train_x, train_y, classes, seed=0, embedder=probe_embedder())
    m = compute_metrics(test_y, probe.predict(test_x), classes)
    assert m["n"] == 400 and sum(m["per_class"][c]["support"] for c in classes) == 400
    assert m["accuracy"] > 0.6, m  # chance is 0.25
    assert m["macro_f1"] > 0.6, m


def test_probe_embedder_is_the_quality_embedder_and_encodes_each_text_once() -> None:
    from factory.quality.embeddings import MODEL_NAME, Embedder

    emb = probe_embedder(TrainConfig(max_length=64))
    assert type(emb) is Embedder and emb.max_length == 64 and emb.name == f"{MODEL_NAME}@64"
    first = emb.encode(["a b", "c d"])
    again = emb.encode(["c d", "e f", "a b", "a b"])
    assert emb.calls == 2 and emb.encoded == 3 and again.shape == (4, 384)
    assert (again[2] == first[0]).all() and emb.model.max_seq_length == 64
    assert Embedder().name == MODEL_NAME


def test_base_model_resolution(tmp_path: Path) -> None:
    assert resolve_base_model("all-MiniLM-L6-v2") == model_path()
    assert resolve_base_model(str(model_path())) == model_path()
    from factory.training.trainers import TrainerError

    with pytest.raises(TrainerError, match="nothing can be downloaded"):
        resolve_base_model("bert-base-uncased", tmp_path)


# ---- (3) end to end on the real offline model --------------------------------------------------------


@pytest.mark.llm
def test_end_to_end_real_model_train_and_evaluate(llm_server, shared_data: Path, tmp_path: Path, db: Path) -> None:
    test_rows = []
    wanted = {c: 0 for c in CLASSES}
    for line in (shared_data / "agnews" / "test.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r["label"] in wanted and wanted[r["label"]] < 15:
            wanted[r["label"]] += 1
            test_rows.append(r)
    test_path = write_jsonl(tmp_path / "agnews_test_small.jsonl", test_rows)
    spec_path = write_spec(tmp_path, name="e2e", method="simprompt", base_url=llm_server.base_url,
                           max_tokens=48, spc=4, test_set=str(test_path))
    spec = load_spec(spec_path)
    result = generate(spec_path, db)
    assert result.status == "done" and result.samples == 12
    refusals = rows(db, "SELECT count(*) FILTER (WHERE is_refusal) FROM samples")[0][0]

    results = run_job(JobOptions(spec=str(spec_path), db=str(db), out=str(tmp_path / "r.json")))
    evals = rows(db, "SELECT train_source, budget_fraction, n_train, requests, tokens, cost_usd, accuracy, macro_f1,"
                     " spec_hash, trainer, test_set, per_class, confusion FROM evaluations ORDER BY budget_fraction")
    assert [(e[0], e[1]) for e in evals] == [("synthetic", 0.25), ("synthetic", 0.5), ("synthetic", 1.0)]
    assert [e[3] for e in evals] == [3, 6, 12]  # ceil(X * 12 requests)
    assert evals[-1][2] == 12 - refusals  # every kept sample at the full budget
    spent = rows(db, "SELECT sum(prompt_tokens + completion_tokens) FROM llm_requests"
                     " WHERE request_key IN (SELECT request_key FROM samples)")[0][0]
    assert evals[-1][4] == spent and evals[0][4] < evals[1][4] < evals[2][4]
    for e in evals:
        assert e[8] == spec.hash and e[9] == "linear_probe" and e[10] == str(test_path)
        assert 0 <= e[6] <= 1 and 0 <= e[7] <= 1
        confusion = json.loads(e[12])
        assert sum(map(sum, confusion["matrix"])) == 45
        assert set(json.loads(e[11])) == set(CLASSES)
    assert json.loads((tmp_path / "r.json").read_text())["headline"]["n_train"] == evals[-1][2]
    assert results["n_requests"] == 12 and len(results["budget_curve"]) == 3


# ---- (4) the job as a standalone subprocess ----------------------------------------------------------


def test_job_standalone_subprocess_from_exported_parquet(tmp_path: Path, db: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    test_path = bank_test_set(tmp_path / "bank_test.jsonl")
    monkeypatch.setenv("BANK_TEST_SET", str(test_path))  # an unset ${VAR} in a path is an error at load
    spec_path = write_spec(tmp_path, test_set="${BANK_TEST_SET}")
    fake_generated_store(db, spec_path, per_class=8)
    with Store(db, read_only=True) as store:
        assert store.export_samples(load_spec(spec_path).hash, tmp_path / "x.parquet", "parquet") == 24
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    proc = subprocess.run(
        [sys.executable, "-m", "factory.training.job", "--samples", str(tmp_path / "x.parquet"), "--spec",
         str(spec_path), "--fractions", "0.5,1.0", "--out", str(tmp_path / "r.json"), "--chart",
         str(tmp_path / "c.png"), "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "open_dagster_pipes" not in proc.stderr and "orchestration" not in proc.stderr.lower()
    results = json.loads((tmp_path / "r.json").read_text())
    assert [r["budget_fraction"] for r in results["evaluations"]] == [0.5, 1.0]
    assert [p["requests"] for p in results["budget_curve"]] == [12, 24]
    assert [p["tokens"] for p in results["budget_curve"]] == [12 * 30, 24 * 30]
    assert results["headline"]["n_train"] == 24 and results["headline"]["accuracy"] > 0.9
    assert results["sample_source"] == "file" and results["db_rows_written"] == 0
    assert (tmp_path / "c.png").stat().st_size > 0
    assert "synthetic" in proc.stdout and "macroF1" in proc.stdout  # the table


def test_job_input_errors_exit_2_with_a_clear_message(tmp_path: Path, db: Path, capsys) -> None:
    spec_path = write_spec(tmp_path)
    fake_generated_store(db, spec_path, per_class=2)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "world"}, {"text": "b", "label": "weather"}])
    assert main(["--db", str(db), "--spec", str(spec_path), "--test-set", str(bad)]) == 2
    assert "'weather' (1 rows)" in capsys.readouterr().err
    assert main(["--spec", str(spec_path)]) == 2
    assert "--db" in capsys.readouterr().err
    assert main(["--db", str(db), "--spec", str(spec_path), "--compare", "gold",
                 "--test-set", str(bank_test_set(tmp_path / "t.jsonl"))]) == 2
    assert "--train-set" in capsys.readouterr().err
    assert rows(db, "SELECT count(*) FROM evaluations") == [(0,)]
    spec_path.write_text(spec_path.read_text().replace("[0.25, 0.5, 1.0]", "[0.5, 1.0]"))  # a new hash
    assert main(["--db", str(db), "--spec", str(spec_path), "--test-set", str(tmp_path / "t.jsonl")]) == 2
    assert "under other spec hashes" in capsys.readouterr().err


def test_gold_and_synthetic_plus_gold_comparisons(tmp_path: Path, db: Path) -> None:
    spec_path = write_spec(tmp_path, test_set="test.jsonl")
    bank_test_set(tmp_path / "test.jsonl")
    fake_generated_store(db, spec_path, per_class=6)
    gold = write_jsonl(tmp_path / "gold.jsonl", [{"text": t, "label": c.upper()} for c in CLASSES
                                                   for t in bank_texts(c, 5, seed=5)])
    results = run_job(JobOptions(spec=str(spec_path), db=str(db), train_set=str(gold), fractions=[1.0],
                                 compare=["synthetic", "gold", "synthetic+gold"]))
    by = {r["train_source"]: r for r in results["evaluations"]}
    assert set(by) == {"synthetic", "gold", "synthetic+gold"}
    assert by["gold"]["n_train"] == 15 and by["gold"]["requests"] is None
    assert by["synthetic+gold"]["n_train"] == 18 + 15 and by["synthetic+gold"]["requests"] == 18
    assert rows(db, "SELECT count(*), count(DISTINCT details->>'job_id') FROM evaluations") == [(3, 1)]
    with Store(db, read_only=True) as store:
        saved = store.evaluations([load_spec(spec_path).hash])
    assert {r["spec_name"] for r in saved} == {"probe"} and isinstance(saved[0]["per_class"], dict)


def test_samples_file_jsonl_multilabel(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path, extra="task: multilabel\n")
    spec = load_spec(spec_path)
    samples = write_jsonl(tmp_path / "s.jsonl", [
        {"text": t, "label": c, "request_key": f"k{i}-{c}", "prompt_tokens": 3, "completion_tokens": 4,
         "cost_usd": 0.0, "generated_at": f"2024-01-01 00:00:{i:02d}.000+00", "sample_index": i}
        for i in range(6) for c in CLASSES for t in bank_texts(c, 6, seed=2)[i:i + 1]])
    pool = pool_from_file(samples, spec)
    assert len(pool.kept) == 18 and pool.examples[0].label == ["world"] and pool.examples[1].label == ["sports"]
    test = write_jsonl(tmp_path / "t.jsonl", [{"text": t, "label": [c]} for c in CLASSES for t in bank_texts(c, 3, 7)]
                       + [{"text": bank_texts("world", 1, 8)[0] + " " + bank_texts("business", 1, 8)[0],
                           "label": "world;business"}])
    results = run_job(JobOptions(spec=str(spec_path), samples=str(samples), test_set=str(test), fractions=[1.0]))
    row = results["evaluations"][0]
    assert row["confusion"]["labels"] == CLASSES and len(row["confusion"]["per_class"]) == 3
    assert 0 <= row["macro_f1"] <= 1 and 0 <= row["micro_f1"] <= 1


# ---- (5) fine-tuning ---------------------------------------------------------------------------------


def test_finetune_one_epoch_gives_valid_metrics() -> None:
    texts = [t for c in CLASSES for t in bank_texts(c, 14, seed=4)]
    labels = [c for c in CLASSES for _ in range(14)]
    config = TrainConfig(trainer="finetune", epochs=1, max_length=32, batch_size=8, learning_rate=1e-4, seed=0)
    clf = train_finetune(texts, labels, CLASSES, config=config)
    assert clf.info["epochs_run"] == 1 and clf.info["held_out"] == 3 and clf.info["device"] in ("cpu", "cuda")
    assert len(clf.info["history"]) == 1 and "held_out_macro_f1" in clf.info["history"][0]
    test_x = [t for c in CLASSES for t in bank_texts(c, 5, seed=9)]
    test_y = [c for c in CLASSES for _ in range(5)]
    predictions = clf.predict(test_x)
    assert len(predictions) == 15 and set(predictions) <= set(CLASSES)
    m = compute_metrics(test_y, predictions, CLASSES)
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 and not math.isnan(m["macro_f1"])
    assert sum(map(sum, m["confusion"]["matrix"])) == 15


# ---- (6) under Dagster Pipes -------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::dagster.PreviewWarning")
def test_job_under_pipes_in_dagster_materialize(tmp_path: Path, db: Path) -> None:
    spec_path = write_spec(tmp_path, test_set="test.jsonl")
    bank_test_set(tmp_path / "test.jsonl")
    fake_generated_store(db, spec_path, per_class=6)
    extras = pipes_extras(spec_path, db, fractions=[0.5, 1.0], out=tmp_path / "r.json")

    @dg.asset
    def trained_probe(context):  # noqa: ANN001, ANN202 - dagster checks the raw (string) annotation
        return dg.PipesSubprocessClient(cwd=str(ROOT)).run(
            command=train_job_command(), context=context, extras=extras).get_materialize_result()

    result = dg.materialize([trained_probe])
    assert result.success
    (mat,) = result.asset_materializations_for_node("trained_probe")
    meta = mat.metadata
    assert "macro_f1" in meta and 0 <= meta["macro_f1"].value <= 1
    assert meta["accuracy"].value > 0.9 and meta["n_train"].value == 18
    assert [r.data["class"] for r in meta["per_class_f1"].value.records] == CLASSES
    assert [r.data["requests"] for r in meta["f1_vs_budget"].value.records] == [9, 18]
    assert rows(db, "SELECT count(*) FROM evaluations") == [(2,)]
    assert json.loads((tmp_path / "r.json").read_text())["headline"]["macro_f1"] == pytest.approx(meta["macro_f1"].value)

    # the local runner: the same job through PipesSubprocessClient, with its own one-asset materialization
    results = run_train_job_local(spec_path, db, fractions=[1.0], cwd=ROOT)
    assert results["materialization_metadata"]["macro_f1"] == pytest.approx(results["headline"]["macro_f1"])
    assert rows(db, "SELECT count(*) FROM evaluations") == [(3,)]


def test_job_reads_the_store_at_a_snapshot_and_writes_nothing(tmp_path: Path, db: Path) -> None:
    """A job pod's path: ``--db STORE --snapshot N`` trains on the samples as they were at N, however many were
    written since, and leaves the evaluations to the run that launched it."""
    spec_path = write_spec(tmp_path, test_set="test.jsonl")
    bank_test_set(tmp_path / "test.jsonl")
    fake_generated_store(db, spec_path, per_class=4)
    with Store(db) as store:
        snapshot = store.snapshot_id()
    fake_generated_store(db, spec_path, per_class=8)  # 12 more samples after the snapshot
    pinned = run_job(JobOptions(spec=str(spec_path), db=str(db), snapshot=snapshot, fractions=[1.0]))
    assert pinned["headline"]["n_train"] == 12 and pinned["db_rows_written"] == 0
    assert rows(db, "SELECT count(*) FROM evaluations") == [(0,)]
    latest = run_job(JobOptions(spec=str(spec_path), db=str(db), fractions=[1.0]))
    assert latest["headline"]["n_train"] == 24 and latest["db_rows_written"] == 1
    from factory.training.job import EvaluationError, options_from

    with pytest.raises(EvaluationError, match="--snapshot needs --db"):
        options_from(["--spec", str(spec_path), "--samples", "x.parquet", "--snapshot", "3"])
