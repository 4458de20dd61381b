"""Data quality: filters (exact decisions), the embedding cache, asked-vs-shown bias, the stage, the report."""

from __future__ import annotations

import json
import math
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from factory.quality import embeddings as E
from factory.quality.bias import bias_report, store_bias
from factory.quality.embeddings import Embedder, EmbeddingModelMissing, default_embedder, embed_texts, text_hash
from factory.quality.filters import (
    FINAL,
    label_request,
    near_duplicates,
    normalise_text,
    parse_label_answer,
    run_filters,
)
from factory.quality.report import write_report
from factory.quality.stage import run_quality
from factory.spec import Spec, parse_spec
from factory.store import PromptRecord, RequestRecord, SampleRecord, Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GENERATED_AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_spec(name: str = "q", classes: str = "[business, sports]", filters: str = "", extra: str = "") -> Spec:
    text = f"name: {name}\ndomain: news sentence\nclasses: {classes}\n" + extra
    if filters:
        text += "filters:\n" + textwrap.indent(textwrap.dedent(filters), "  ")
    return parse_spec(text)


def insert(store: Store, spec: Spec, rows: list[dict[str, Any]]) -> list[str]:
    """Insert samples through Store.save_completions; each row: class, text, and optionally index,
    attributes, refusal. Returns the sample ids in row order."""
    store.record_spec(spec, "yaml")
    run_id = store.start_run(spec)
    per_class: dict[str, int] = {}
    requests, samples, ids = [], [], []
    for i, row in enumerate(rows):
        cls = row["class"]
        index = row.get("index", per_class.get(cls, 0))
        per_class[cls] = index + 1
        key = f"{spec.name}-k{i}"
        sid = f"{spec.name}-{cls}-{index}"
        requests.append(RequestRecord(request_key=key, model="m", params="{}", prompt_hash="p1", purpose="generate",
                                      choices=json.dumps([row["text"]]), finish_reasons="[]", prompt_tokens=10,
                                      completion_tokens=5, cost_usd=0.001, latency_s=0.1, attempts=1))
        samples.append(SampleRecord(
            sample_id=sid, spec_hash=spec.hash, run_id=run_id, class_=cls, text=row["text"],
            attributes=json.dumps(row.get("attributes", {})), seed=7, sample_index=index, choice_index=0,
            method=spec.generation.method, prompt_hash="p1", request_key=key, model="m", params="{}",
            prompt_tokens=10, completion_tokens=5, cost_usd=0.001, is_refusal=bool(row.get("refusal")),
            generated_at=GENERATED_AT))
        ids.append(sid)
    store.save_completions([PromptRecord(prompt_hash="p1", method="generate", messages="[]"), *requests, *samples])
    store.finish_run(run_id, "done")
    return ids


def decisions(store: Store, spec: Spec) -> dict[tuple[str, str], tuple[bool, str | None]]:
    return {(d["sample_id"], d["filter"]): (d["kept"], d["reason"]) for d in store.filter_decisions(spec.hash)}


@pytest.fixture(scope="module")
def model() -> Any:
    return default_embedder().model  # loaded once for the module


@pytest.fixture
def embedder(model: Any) -> Embedder:
    """A fresh embedder (counters at 0) sharing the loaded model."""
    emb = Embedder()
    emb._model = model
    return emb


# --------------------------------------------------------------------------------------------------
# filters


def test_refusal_length_and_exact_dup_decisions(db: Path) -> None:
    spec = make_spec(filters="near_dup: null\nmin_words: 3\nmax_words: 12\n")
    rows = [
        {"class": "business", "text": "Markets rallied after the central bank held rates steady.",
         "attributes": {"style": "report"}},
        {"class": "business", "text": "I'm sorry, but I can't write that.", "attributes": {"style": "report"}},
        {"class": "business", "text": "Too short", "attributes": {"style": "op-ed"}},
        {"class": "business", "text": "  markets RALLIED after the central bank\n held rates steady. ",
         "attributes": {"style": "op-ed"}},
        {"class": "sports", "text": "Markets rallied after the central bank held rates steady.",
         "attributes": {"style": "report"}},
        {"class": "sports", "text": "A flagged sample with plenty of words in it", "refusal": True,
         "attributes": {"style": "report"}},
        {"class": "sports", "text": "one two three four five six seven eight nine ten eleven twelve thirteen",
         "attributes": {"style": "op-ed"}},
        {"class": "sports", "text": "Sorry", "attributes": {"style": "op-ed"}},  # not a refusal; too short
        {"class": "sports", "text": "The striker scored twice in the second half.", "attributes": {"style": "report"}},
    ]
    with Store(db) as store:
        ids = insert(store, spec, rows)
        outcome = run_filters(spec, store)
        b0, b1, b2, b3, s0, s1, s2, s3, s4 = ids
        got = decisions(store, spec)
        expected = {
            (b0, "refusal"): (True, None), (b0, "length"): (True, None), (b0, "exact_dup"): (True, None),
            (b1, "refusal"): (False, "refusal"),
            (b2, "refusal"): (True, None), (b2, "length"): (False, "2 words < min_words 3"),
            (b3, "refusal"): (True, None), (b3, "length"): (True, None),
            (b3, "exact_dup"): (False, f"exact duplicate of {b0} (same class)"),
            (s0, "refusal"): (True, None), (s0, "length"): (True, None),
            (s0, "exact_dup"): (False, f"exact duplicate of {b0} (class business)"),
            (s1, "refusal"): (False, "refusal (flagged at generation)"),
            (s2, "refusal"): (True, None), (s2, "length"): (False, "13 words > max_words 12"),
            (s3, "refusal"): (True, None), (s3, "length"): (False, "1 words < min_words 3"),
            (s4, "refusal"): (True, None), (s4, "length"): (True, None), (s4, "exact_dup"): (True, None),
        }
        final = {(sid, FINAL): (True, None) for sid in (b0, s4)}
        for sid, by in ((b1, "refusal"), (b2, "length"), (b3, "exact_dup"), (s0, "exact_dup"), (s1, "refusal"),
                        (s2, "length"), (s3, "length")):
            final[(sid, FINAL)] = (False, f"dropped by {by}")
        assert got == expected | final
        assert outcome.order == ["refusal", "length", "exact_dup"]  # near_dup and label_consistency are off
        assert outcome.dropped == {"refusal": 2, "length": 3, "exact_dup": 2}
        assert [s["sample_id"] for s in store.kept_samples(spec.hash)] == [b0, s4]
        assert store.filter_summary(spec.hash)["length"] == {"judged": 7, "kept": 4, "dropped": 3}
        by_class = {(r["filter"], r["class"]): (r["kept"], r["dropped"]) for r in store.filter_counts_by_class(spec.hash)}
        assert by_class[("refusal", "business")] == (3, 1) and by_class[("refusal", "sports")] == (4, 1)
        assert by_class[(FINAL, "business")] == (1, 3) and by_class[(FINAL, "sports")] == (1, 4)
        by_attr = {(r["filter"], r["dimension"], r["value"]): (r["kept"], r["dropped"])
                   for r in store.filter_counts_by_attribute(spec.hash)}
        assert by_attr[(FINAL, "style", "report")] == (2, 3)
        assert by_attr[(FINAL, "style", "op-ed")] == (0, 4)
        assert store.unfiltered_count(spec.hash) == 0

        # rerun with other bounds: the spec's decisions are replaced, not added to
        looser = make_spec(filters="near_dup: null\nmin_words: 1\n")
        assert looser.hash != spec.hash
        n_rows = len(store.filter_decisions(spec.hash))
        run_filters(spec, store)
        assert len(store.filter_decisions(spec.hash)) == n_rows
        # a failed replacement (NULL sample id) rolls back whole: the old decisions stay
        with pytest.raises(Exception):
            store.replace_filter_decisions(spec.hash, [("x", FINAL, True, None), (None, FINAL, True, None)])  # type: ignore[list-item]
        assert decisions(store, spec) == expected | final


def test_normalised_text() -> None:
    assert normalise_text("  Hello\t\nWORLD  again ") == "hello world again"


def test_near_duplicates_within_and_across_classes(db: Path, embedder: Embedder) -> None:
    spec = make_spec(filters="near_dup: 0.9\nmin_words: 0\n")
    rows = [
        {"class": "business", "text": "Stocks fell sharply on Monday after the report."},
        {"class": "business", "text": "Shares of the football club fell sharply after the match."},
        {"class": "sports", "text": "Shares of the football club fell sharply after the match!"},
        {"class": "sports", "text": "The match ended in a draw after extra time."},
        {"class": "sports", "text": "The match ended in a draw after the extra time."},
        {"class": "sports", "text": "The game ended in a tie after overtime."},
        {"class": "sports", "text": "The striker scored twice in the second half."},
    ]
    with Store(db) as store:
        b0, b1, s0, s1, s2, s3, s4 = insert(store, spec, rows)
        outcome = run_filters(spec, store, embedder)
        got = decisions(store, spec)
    drops = {sid: reason for (sid, f), (kept, reason) in got.items() if f == "near_dup" and not kept}
    assert set(drops) == {s0, s2}
    assert drops[s0].startswith(f"near duplicate of {b1} (cosine 0.9") and drops[s0].endswith("class business)")
    assert drops[s2].startswith(f"near duplicate of {s1} (cosine 0.99") and drops[s2].endswith("same class)")
    assert outcome.kept_ids == [b0, b1, s1, s3, s4]
    assert embedder.encoded == 7


def test_near_duplicates_greedy_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for trial in range(15):
        n = int(rng.integers(2, 200))
        centres = rng.normal(size=(n // 4 + 1, 8))
        emb = centres[rng.integers(0, len(centres), n)] + 0.15 * rng.normal(size=(n, 8))
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        got = near_duplicates(emb, 0.97, chunk_size=int(rng.integers(1, 40)))
        kept: list[int] = []
        for i in range(n):
            dup = bool(kept) and float((unit[kept] @ unit[i]).max()) >= 0.97 - 1e-6
            assert (got[i] is not None) == dup, trial
            if got[i] is None:
                kept.append(i)
            else:  # it names an earlier kept row that is similar enough
                j, cos = got[i]
                assert j < i and got[j] is None and unit[j] @ unit[i] >= 0.97 - 1e-5 and abs(cos - unit[j] @ unit[i]) < 1e-4


SPORTS = ["The striker scored twice in the second half to win the match.",
          "The tennis champion lost in straight sets at the open.",
          "The basketball team clinched the playoff spot with a late three-pointer.",
          "The marathon runner set a new course record this morning.",
          "The goalkeeper saved a penalty in the final minute of the game.",
          "The cycling team won the stage after a long breakaway."]
COOKING = ["Whisk the eggs with sugar until the batter is pale and fluffy.",
           "Simmer the tomato sauce with garlic and basil for twenty minutes.",
           "Knead the bread dough and let it rise in a warm place.",
           "Roast the chicken with lemon, thyme and olive oil until golden.",
           "Chop the onions finely and fry them in butter until soft.",
           "Bake the chocolate cake at 180 degrees for forty minutes."]
MISLABELLED = "Season the soup with salt and pepper, then stir in fresh cream."


def test_label_consistency_classifier_drops_the_mislabelled_sample(db: Path, embedder: Embedder) -> None:
    spec = make_spec(classes="[cooking, sports]", filters="near_dup: null\nlabel_consistency: classifier\n")
    rows = [{"class": "sports", "text": t} for t in SPORTS + [MISLABELLED]] + [{"class": "cooking", "text": t}
                                                                               for t in COOKING]
    with Store(db) as store:
        ids = insert(store, spec, rows)
        outcome = run_filters(spec, store, embedder)
        got = decisions(store, spec)
    wrong = ids[len(SPORTS)]
    dropped = {sid: r for (sid, f), (kept, r) in got.items() if f == "label_consistency" and not kept}
    assert list(dropped) == [wrong]
    assert dropped[wrong].startswith("classifier predicts cooking (out-of-fold, margin")
    assert outcome.dropped["label_consistency"] == 1 and outcome.judged["label_consistency"] == 13
    assert got[(wrong, FINAL)] == (False, "dropped by label_consistency")


def test_label_consistency_llm_asks_the_model_and_caches(db: Path) -> None:
    from fault_server import WORDS, FaultServer, expected_content

    classes = ["alpha", "bravo", "charlie"]
    texts = [f"sample text number {i} about something" for i in range(12)]
    with FaultServer() as server:
        spec = make_spec(classes="[alpha, bravo, charlie]", filters="near_dup: null\nlabel_consistency: llm\n",
                         extra=f"generation: {{base_url: '{server.base_url}', max_concurrency: 4}}\n")
        rows = [{"class": classes[i % 3], "text": t} for i, t in enumerate(texts)]
        with Store(db) as store:
            ids = insert(store, spec, rows)
            run_filters(spec, store)
            got = decisions(store, spec)
            sent = server.stats()["successes"]
            run_filters(spec, store)  # a rerun asks nothing: the answers are cached
            assert server.stats()["successes"] == sent == 12
            assert store.purpose_counts().get("label_check") == 12
    expected_drops = set()
    for sid, row in zip(ids, rows):
        request = label_request(spec, row["text"], 0)
        answer = expected_content(request.messages, request.params["seed"], 0)
        named = [w for w in answer.split() if w in classes]
        assert parse_label_answer(answer, classes) == (named[0] if named else None)
        if named and named[0] != row["class"]:
            expected_drops.add(sid)
    assert set(WORDS) >= set(classes)
    dropped = {sid for (sid, f), (kept, _) in got.items() if f == "label_consistency" and not kept}
    assert dropped == expected_drops and 0 < len(dropped) < 12


def test_parse_label_answer() -> None:
    classes = ["sci_tech", "business", "world"]
    assert parse_label_answer("Sci Tech.", classes) == "sci_tech"
    assert parse_label_answer("Category: business (not world)", classes) == "business"
    assert parse_label_answer("I think it's about worldwide trade", classes) is None


# --------------------------------------------------------------------------------------------------
# embeddings


def test_embedding_cache_encodes_only_new_texts(db: Path, embedder: Embedder) -> None:
    a, b, c = "The cat sat on the mat.", "Stocks fell on Monday.", "A new vaccine was approved."
    with Store(db) as store:
        first = embed_texts(store, [a, b, a], embedder)
        assert embedder.calls == 1 and embedder.encoded == 2  # the repeated text is encoded once
        assert first.shape == (3, 384) and np.allclose(first[0], first[2])
        assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
        again = embed_texts(store, [b, a], embedder)
        assert embedder.calls == 1 and embedder.encoded == 2  # nothing encoded the second time
        assert np.allclose(again, first[[1, 0]])
        embed_texts(store, [c, a], embedder)
        assert embedder.calls == 2 and embedder.encoded == 3  # only the new text
        assert store.embedding_count(E.MODEL_NAME) == 3
        assert set(store.cached_embeddings(E.MODEL_NAME, [text_hash(a), text_hash("nope")])) == {text_hash(a)}
    with Store(db) as store:  # the cache is in the file
        embed_texts(store, [a, b, c], embedder)
        assert embedder.calls == 2 and embedder.encoded == 3


def test_missing_model_fails_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(E.MODEL_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(EmbeddingModelMissing, match="no sentence-transformers model at"):
        E.model_path()
    monkeypatch.delenv(E.MODEL_ENV)
    assert (E.model_path() / "modules.json").is_file()


# --------------------------------------------------------------------------------------------------
# bias


LOC_SPEC = """\
attributes:
  location: {values: [Paris, Tokyo, Lagos]}
  length: {values: [5, 20], unit: words}
"""


def _metric_map(store: Store, spec: Spec, scope: str) -> dict[str, float | None]:
    return {m["name"]: m["value"] for m in store.metrics(spec.hash, scope) if m["scope"] == scope}


def test_bias_asked_vs_shown(db: Path, embedder: Embedder) -> None:
    spec = make_spec(name="attr", extra=LOC_SPEC)
    rows = [
        {"class": "business", "text": "Shares in Paris closed higher today.",
         "attributes": {"location": "Paris", "length": "5"}},
        {"class": "business", "text": "A big merger was announced by two banks in Tokyo this morning, surprising "
                                      "analysts who had expected the talks to fail.",
         "attributes": {"location": "Tokyo", "length": "20"}},
        {"class": "sports", "text": "The marathon through paris drew record crowds.",
         "attributes": {"location": "Lagos", "length": "5"}},
        {"class": "sports", "text": "The home team won again.", "attributes": {"location": "Paris", "length": "20"}},
    ]
    with Store(db) as store:
        insert(store, spec, rows)
        samples = store.samples(spec.hash)
        report = {b.dimension: b for b in bias_report(spec, store, samples, lambda t: embed_texts(store, t, embedder))}
        store_bias(store, spec.hash, list(report.values()))
        loc = _metric_map(store, spec, "bias:location")
        length = _metric_map(store, spec, "bias:length")
    assert set(report) == {"location", "length"}
    assert {k: loc[k] for k in loc if k.startswith(("asked:", "shown:"))} == {
        "asked:Paris": 0.5, "asked:Tokyo": 0.25, "asked:Lagos": 0.25,
        "shown:Paris": 0.5, "shown:Tokyo": 0.25, "shown:Lagos": 0.0}
    assert loc["unmatched"] == 0.25 and loc["faithfulness"] == 0.5 and loc["n"] == 4.0
    assert loc["source:spec"] == 1.0
    emb_shown = {k: v for k, v in loc.items() if k.startswith("shown_emb:")}
    assert set(emb_shown) == {"shown_emb:Paris", "shown_emb:Tokyo", "shown_emb:Lagos"}
    assert math.isclose(sum(emb_shown.values()), 1.0) and emb_shown["shown_emb:Paris"] >= 0.5
    assert emb_shown["shown_emb:Tokyo"] >= 0.25  # the Tokyo text is nearest to "Tokyo"
    # length is read by word count: 6, 22, 7, 5 words -> 5, 20, 5, 5
    assert report["length"].mode == "length"
    assert {k: length[k] for k in length if k.startswith(("asked:", "shown:"))} == {
        "asked:5": 0.5, "asked:20": 0.5, "shown:5": 0.75, "shown:20": 0.25}
    assert length["faithfulness"] == 0.75 and "shown_emb:5" not in length


def test_simprompt_bias_borrows_the_related_specs_values(db: Path, embedder: Embedder) -> None:
    attr = make_spec(name="news-attr", extra="attributes:\n  location: {values: [Paris, Tokyo, Lagos]}\n")
    sim = make_spec(name="news-sim", extra="generation: {method: simprompt}\n")
    with Store(db) as store:
        insert(store, attr, [{"class": "business", "text": "Paris markets rose.", "attributes": {"location": "Paris"}},
                             {"class": "sports", "text": "Lagos won.", "attributes": {"location": "Lagos"}}])
        insert(store, sim, [{"class": "business", "text": "Tokyo stocks fell sharply."},
                            {"class": "sports", "text": "Tokyo hosted the final match."},
                            {"class": "sports", "text": "A team from Paris won the cup."}])
        samples = store.samples(sim.hash)
        report = bias_report(sim, store, samples, lambda t: embed_texts(store, t, embedder))
    assert [b.dimension for b in report] == ["location"]
    b = report[0]
    assert b.source == f"related:news-attr:{attr.hash}"
    assert b.asked == {} and b.faithfulness is None
    assert b.shown == {"Paris": pytest.approx(1 / 3), "Lagos": 0.0, "Tokyo": pytest.approx(2 / 3)}


# --------------------------------------------------------------------------------------------------
# the stage and the report


def _valid_png(path: Path) -> bool:
    import matplotlib.image as mpimg

    data = path.read_bytes()
    return data.startswith(PNG_MAGIC) and mpimg.imread(str(path)).ndim == 3


def test_quality_stage_and_report(db: Path, tmp_path: Path, embedder: Embedder) -> None:
    test_set = tmp_path / "test.jsonl"
    test_set.write_text("\n".join(json.dumps({"text": t, "label": lab}) for t, lab in [
        ("Stocks closed higher in Paris as banks rallied.", "business"),
        ("Oil prices rose after the supply report.", "business"),
        ("The striker scored a late winner in Lagos.", "sports"),
        ("The champion defended her title in Tokyo.", "sports")]) + "\n")
    extra = LOC_SPEC + f"evaluation: {{test_set: '{test_set}'}}\n"
    spec = make_spec(name="stage", extra=extra, filters="near_dup: 0.9\nmin_words: 3\n")
    business = ["Shares in Paris closed higher today after a strong quarter.",
                "A bank in Tokyo reported record profits for the year.",
                "Oil prices in Lagos rose as supply tightened.",
                "Shares in Paris closed higher today after a strong quarter!",
                "I'm sorry, but I cannot help with that."]
    sports = ["The team from Paris won the final in extra time.",
              "A sprinter from Lagos broke the national record.",
              "The Tokyo marathon drew huge crowds this weekend.",
              "Goal!"]
    locs = ["Paris", "Tokyo", "Lagos", "Paris", "Tokyo"]
    rows = [{"class": "business", "text": t, "attributes": {"location": loc, "length": "20"}}
            for t, loc in zip(business, locs)]
    rows += [{"class": "sports", "text": t, "attributes": {"location": loc, "length": "5"}}
             for t, loc in zip(sports, locs)]
    sim = make_spec(name="stage-sim", extra="generation: {method: simprompt}\n")
    with Store(db) as store:
        insert(store, spec, rows)
        insert(store, sim, [{"class": "business", "text": "Markets in Tokyo fell on Friday after the report."},
                            {"class": "sports", "text": "Tokyo hosted the final and the crowd went wild."},
                            {"class": "sports", "text": "The derby in Paris ended in a goalless draw."}])
        result = run_quality(spec, store, embedder=embedder)
        assert result.generated == 9 and result.kept == 6
        assert result.dropped == {"refusal": 1, "length": 1, "exact_dup": 0, "near_dup": 1}
        assert result.notes == [] and result.encoded > 0
        overall = _metric_map(store, spec, "overall")
        assert overall["n_kept"] == 6 and overall["n_generated"] == 9 and overall["n_refusals"] == 1
        assert overall["n_real"] == 4 and 0 < overall["top5_similarity"] < 1
        assert overall["aps"] == pytest.approx(result.diversity["overall"]["aps"])
        assert _metric_map(store, spec, "class:sports")["n_kept"] == 3
        assert _metric_map(store, spec, "bias:location")["asked:Paris"] == pytest.approx(2 / 6)
        n_metrics = len(store.metrics(spec.hash))
        again = run_quality(spec, store, embedder=embedder)
        assert again.encoded == 0 and len(store.metrics(spec.hash)) == n_metrics  # replaced, nothing re-encoded
        sim_result = run_quality(sim, store, embedder=embedder)
        assert sim_result.bias[0].source == f"related:stage:{spec.hash}"
        assert "top-5 similarity skipped: the spec has no evaluation.test_set" in sim_result.notes

        out = tmp_path / "report"
        path = write_report(spec, store, out)
    html = path.read_text(encoding="utf-8")
    assert path == out / "stage.html"
    assert "business" in html and "sports" in html and "stage-sim" in html
    assert html.count('<img src="data:image/png;base64,') >= 5
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"stage_funnel.png", "stage_classes.png", "stage_diversity.png", "stage_bias_location.png",
            "stage_bias_length.png", "stage_compare.png"} <= set(pngs)
    assert all(_valid_png(out / p) for p in pngs)
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "near duplicate of" in html  # the dropped examples show their reason


@pytest.mark.llm
def test_end_to_end_real_model_quality_and_report(llm_server: Any, tmp_path: Path, db: Path, embedder: Embedder) -> None:
    from factory.spec import load_spec

    from conftest import generate

    path = tmp_path / "e2e.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: e2e
        domain: short news headline
        classes: [sports, business]
        attributes:
          style: {{values: [breaking news, analysis]}}
        similar_classes: {{given: {{sports: [business], business: [sports]}}}}
        generation:
          method: attrprompt
          base_url: {llm_server.base_url}
          max_tokens: 48
        budget:
          samples_per_class: 3
        filters:
          min_words: 1
        """))
    spec = load_spec(path)
    run = generate(path, db)
    with Store(db) as store:
        assert run.status == "done" and store.sample_count(spec.hash) == 6
        result = run_quality(spec, store, embedder=embedder)
        assert result.generated == 6
        assert result.kept == len(store.kept_samples(spec.hash)) == 6 - sum(result.dropped.values())
        assert len([d for d in store.filter_decisions(spec.hash) if d["filter"] == FINAL]) == 6
        assert [b.dimension for b in result.bias] == ["style"]
        html_path = write_report(spec, store, tmp_path / "out")
    html = html_path.read_text(encoding="utf-8")
    assert html_path.is_file() and "sports" in html and "business" in html
    assert '<img src="data:image/png;base64,' in html
    assert "data: version <b>1</b>, store snapshot" in html  # the report says which version it describes
    pngs = list((tmp_path / "out").glob("e2e_*.png"))
    assert len(pngs) >= 3 and all(_valid_png(p) for p in pngs)


def test_a_filter_is_a_registered_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new filter is one class registered by name and rank: the stage runs it in rank order, no if-chain."""
    from factory.quality import filters
    from factory.quality.filters import FILTERS, SampleFilter, apply_filters, enabled_filters

    class NoDigits(SampleFilter):
        name, rank = "no_digits", 25

        def enabled(self, spec: Spec) -> bool:
            return True

        def verdicts(self, ctx, samples):  # type: ignore[no-untyped-def]
            return [(not any(ch.isdigit() for ch in s["text"]), "has a digit") for s in samples], None

    monkeypatch.setitem(FILTERS, NoDigits.name, NoDigits())
    spec = make_spec(filters="near_dup: null\nmin_words: 1\n")
    assert enabled_filters(spec) == ["refusal", "length", "no_digits", "exact_dup"]
    samples = [{"sample_id": f"s{i}", "class": "sports", "text": t, "sample_index": i, "choice_index": 0}
               for i, t in enumerate(["the team won", "they won 3 games", "the team won"])]
    outcome = apply_filters(spec, samples)
    assert outcome.dropped == {"refusal": 0, "length": 0, "no_digits": 1, "exact_dup": 1}
    assert outcome.kept_ids == ["s0"]
    assert filters.FILTER_ORDER == ("refusal", "length", "exact_dup", "near_dup", "label_consistency")
