"""Sample filters: refusals, word-length bounds, exact and near duplicates, label consistency.

The filters run in a fixed order (:data:`FILTER_ORDER`), cheapest first, each on the samples that the
earlier ones kept; a filter that the spec disables records nothing. What is recorded in
``filter_decisions`` for a spec:

* one row per (sample, filter) for every enabled filter that judged the sample: ``kept = true`` for the
  samples it let through, ``kept = false`` with a reason for the one filter that dropped it. A sample
  dropped by an earlier filter has no row from the later ones, so each sample has at most one drop row;
* one ``final`` row per sample: ``kept = true`` if it survived every filter, else ``false`` with the
  dropping filter as the reason. :meth:`Store.kept_samples` returns the samples with a kept ``final``
  row, so a sample generated after the last filter stage is not exported until the stage runs again.

Samples are taken in a canonical order (class, sample index, choice index, sample id); "first" and
"earlier" below mean earlier in that order. Rerunning the stage replaces all of the spec's decisions in
one transaction.

* ``refusal``: ``samples.is_refusal`` or :func:`factory.quality.refusal.is_refusal` on the text.
* ``length``: ``min_words <= words <= max_words`` (whitespace-separated words; ``max_words`` optional).
* ``exact_dup``: same text after lowercasing and collapsing whitespace, across all classes; the first
  is kept.
* ``near_dup``: cosine similarity of the MiniLM embeddings ``>= filters.near_dup`` with an earlier kept
  sample, in any class (the reason says whether the class is the same). Greedy in canonical order, so a
  sample is only ever dropped in favour of a sample that is kept. Computed by blocks of rows (memory
  ``O(chunk · N)``, never the ``N x N`` matrix).
* ``label_consistency``: ``classifier`` — a logistic regression on the embeddings, cross-validated
  (stratified k-fold, ``k = min(5, smallest class)``); a sample is dropped when its out-of-fold
  prediction is another class whose probability exceeds that of its own label by at least
  :data:`LABEL_MARGIN`. ``llm`` — the spec's model is asked which class the text belongs to (temperature
  0, cached like every request); a sample is dropped when the first class named in the answer is another
  class; an answer naming no class keeps the sample.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from factory.quality.refusal import is_refusal
from factory.spec import Spec
from factory.store import Store

FILTER_ORDER = ("refusal", "length", "exact_dup", "near_dup", "label_consistency")
FINAL = "final"
LABEL_MARGIN = 0.2  # probability margin of another class over the label (classifier mode)
LABEL_C = 10.0  # inverse regularisation of the label-consistency logistic regression (unit-norm inputs)
LABEL_FOLDS = 5
NEAR_DUP_CHUNK = 1024
_EPS = 1e-6  # float32 cosine of identical texts can fall a hair below 1.0

Verdict = tuple[bool, str | None]  # (kept, reason)
EmbedFn = Callable[[Sequence[str]], NDArray[np.float32]]


@dataclass
class FilterOutcome:
    """What the filter stage decided for one spec."""

    order: list[str]  # the enabled filters, in the order they ran
    generated: int
    kept_ids: list[str]
    judged: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    rows: list[tuple[str, str, bool, str | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return len(self.kept_ids)


# --------------------------------------------------------------------------------------------------
# the single filters: each takes the samples still in play and returns one verdict per sample


def normalise_text(text: str) -> str:
    """Lowercase with runs of whitespace collapsed to one space (and trimmed): the exact-duplicate key."""
    return " ".join(text.lower().split())


def word_count(text: str) -> int:
    return len(text.split())


def refusal_verdicts(samples: Sequence[dict[str, Any]]) -> list[Verdict]:
    out: list[Verdict] = []
    for s in samples:
        if s.get("is_refusal"):
            out.append((False, "refusal (flagged at generation)"))
        elif is_refusal(s["text"]):
            out.append((False, "refusal"))
        else:
            out.append((True, None))
    return out


def length_verdicts(samples: Sequence[dict[str, Any]], min_words: int, max_words: int | None) -> list[Verdict]:
    out: list[Verdict] = []
    for s in samples:
        n = word_count(s["text"])
        if n < min_words:
            out.append((False, f"{n} words < min_words {min_words}"))
        elif max_words is not None and n > max_words:
            out.append((False, f"{n} words > max_words {max_words}"))
        else:
            out.append((True, None))
    return out


def exact_dup_verdicts(samples: Sequence[dict[str, Any]]) -> list[Verdict]:
    first: dict[str, dict[str, Any]] = {}
    out: list[Verdict] = []
    for s in samples:
        key = normalise_text(s["text"])
        if key in first:
            other = first[key]
            where = "same class" if other["class"] == s["class"] else f"class {other['class']}"
            out.append((False, f"exact duplicate of {other['sample_id']} ({where})"))
        else:
            first[key] = s
            out.append((True, None))
    return out


def near_duplicates(emb: NDArray[np.floating[Any]], threshold: float,
                    chunk_size: int = NEAR_DUP_CHUNK) -> list[tuple[int, float] | None]:
    """Greedy near-duplicate selection in row order: ``None`` for a kept row, else ``(j, cos)`` with ``j``
    the earlier kept row it duplicates (``cos >= threshold``, the most similar such row).

    Rows are taken in blocks of ``chunk_size``: each block is compared with the kept rows of the earlier
    blocks, ``4 · chunk_size`` kept rows at a time (so the similarity buffers stay ``O(chunk_size²)``),
    then with itself, row by row in order."""
    from factory.quality.metrics import normalize

    unit = np.ascontiguousarray(normalize(np.asarray(emb)), dtype=np.float32)
    n = unit.shape[0]
    limit = threshold - _EPS
    out: list[tuple[int, float] | None] = [None] * n
    kept_vecs = np.empty_like(unit)
    kept_idx = np.empty(n, dtype=np.intp)
    m = 0
    col_block = 4 * chunk_size
    for i0 in range(0, n, chunk_size):
        block = unit[i0 : i0 + chunk_size]
        c = block.shape[0]
        best = np.full(c, -np.inf, dtype=np.float32)
        arg = np.full(c, -1, dtype=np.intp)
        for j0 in range(0, m, col_block):
            sims = block @ kept_vecs[j0 : min(j0 + col_block, m)].T
            a = sims.argmax(axis=1)
            v = sims[np.arange(c), a]
            better = v > best
            best[better] = v[better]
            arg[better] = kept_idx[j0 + a[better]]
        inner = block @ block.T
        local: list[int] = []
        for r in range(c):
            if best[r] >= limit:
                out[i0 + r] = (int(arg[r]), float(best[r]))
                continue
            if local:
                s = inner[r, local]
                k = int(s.argmax())
                if s[k] >= limit:
                    out[i0 + r] = (i0 + local[k], float(s[k]))
                    continue
            local.append(r)
        kept_vecs[m : m + len(local)] = block[local]
        kept_idx[m : m + len(local)] = np.asarray(local, dtype=np.intp) + i0
        m += len(local)
    return out


def near_dup_verdicts(samples: Sequence[dict[str, Any]], emb: NDArray[np.floating[Any]],
                      threshold: float, chunk_size: int = NEAR_DUP_CHUNK) -> list[Verdict]:
    out: list[Verdict] = []
    for s, hit in zip(samples, near_duplicates(emb, threshold, chunk_size)):
        if hit is None:
            out.append((True, None))
        else:
            other = samples[hit[0]]
            where = "same class" if other["class"] == s["class"] else f"class {other['class']}"
            out.append((False, f"near duplicate of {other['sample_id']} (cosine {hit[1]:.3f}, {where})"))
    return out


def mislabelled(emb: NDArray[np.floating[Any]], labels: Sequence[str], margin: float = LABEL_MARGIN,
                folds: int = LABEL_FOLDS, C: float = LABEL_C, seed: int = 0) -> list[tuple[str, float] | None] | None:
    """Out-of-fold label check: per row ``None`` (consistent, or not judged) or ``(predicted, margin)``.

    Only classes with at least 2 rows are judged (their rows only). Returns ``None`` when fewer than 2
    classes can be judged."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels_arr = np.asarray([str(x) for x in labels])
    classes, counts = np.unique(labels_arr, return_counts=True)
    judged_classes = classes[counts >= 2]
    if len(judged_classes) < 2:
        return None
    rows = np.flatnonzero(np.isin(labels_arr, judged_classes))
    k = int(min(folds, counts[counts >= 2].min()))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    X, y = np.asarray(emb, dtype=np.float64)[rows], labels_arr[rows]
    proba = cross_val_predict(LogisticRegression(C=C, max_iter=2000), X, y, cv=cv, method="predict_proba")
    col = {c: i for i, c in enumerate(sorted(judged_classes))}
    out: list[tuple[str, float] | None] = [None] * len(labels_arr)
    for r, p in zip(rows, proba):
        own = col[labels_arr[r]]
        pred = int(p.argmax())
        gap = float(p[pred] - p[own])
        if pred != own and gap >= margin:
            out[r] = (str(judged_classes[pred]), gap)
    return out


def classifier_verdicts(samples: Sequence[dict[str, Any]], emb: NDArray[np.floating[Any]],
                        margin: float = LABEL_MARGIN) -> tuple[list[Verdict], str | None]:
    found = mislabelled(emb, [s["class"] for s in samples], margin)
    if found is None:
        return [(True, "not judged: fewer than 2 classes with 2+ samples")] * len(samples), (
            "label_consistency: not judged (fewer than 2 classes with 2+ samples)")
    out: list[Verdict] = []
    for s, hit in zip(samples, found):
        if hit is None:
            out.append((True, None))
        else:
            out.append((False, f"classifier predicts {hit[0]} (out-of-fold, margin {hit[1]:.2f} over {s['class']})"))
    return out, None


# ---- label consistency by asking the LLM ----------------------------------------------------------

LLM_LABEL_PROMPT = (
    "Classify the following {domain} into exactly one of these categories: {classes}.\n\n"
    "Text: {text}\n\nAnswer with the category name only."
)
LLM_LABEL_MAX_TOKENS = 16


def _class_pattern(name: str) -> re.Pattern[str]:
    variants = {name.lower(), name.lower().replace("_", " "), name.lower().replace("-", " ")}
    alts = "|".join(sorted((re.escape(v) for v in variants), key=len, reverse=True))
    return re.compile(rf"(?<![\w])(?:{alts})(?![\w])")


def parse_label_answer(answer: str, classes: Sequence[str]) -> str | None:
    """The class named first in ``answer`` (case-insensitive, ``_``/``-`` read as spaces); None if none."""
    text = answer.lower()
    best: tuple[int, str] | None = None
    for name in classes:
        m = _class_pattern(name).search(text)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), name)
    return best[1] if best else None


def label_request(spec: Spec, text: str, index: int) -> Any:
    """The chat request asking the spec's model for the class of ``text`` (temperature 0, cached)."""
    from factory.generation.llm.engine import LLMRequest

    prompt = LLM_LABEL_PROMPT.format(domain=spec.domain, classes=", ".join(spec.class_names), text=text.strip())
    gen = spec.generation
    params = {"temperature": 0.0, "top_p": 1.0, "max_tokens": LLM_LABEL_MAX_TOKENS, "seed": gen.seed}
    return LLMRequest([{"role": "user", "content": prompt}], gen.model, params, index, "label_check")


async def _ask_labels(spec: Spec, store: Store, endpoint: Any, samples: Sequence[dict[str, Any]]) -> list[str | None]:
    from factory.generation.llm.budget import Budget
    from factory.generation.llm.client import open_engine

    answers: list[str | None] = [None] * len(samples)
    budget = Budget.from_spec(spec.budget, spec.generation.model)
    spent = store.spend_for_spec(spec.hash)
    budget.requests, budget.tokens, budget.usd = spent["requests"], spent["tokens"], spent["usd"]

    requests = [label_request(spec, s["text"], 0) for s in samples]

    def job(i: int) -> Callable[[], Any]:
        async def run() -> None:
            done = await engine.complete(requests[i])
            answers[i] = done.choices[0] if done.choices else ""

        return run

    async with open_engine(spec.generation, store, endpoint, budget) as engine:
        engine.prefetch(r.key for r in requests)
        await engine.map(job(i) for i in range(len(requests)))
    return answers


def llm_verdicts(spec: Spec, store: Store, samples: Sequence[dict[str, Any]],
                 endpoint: Any | None = None) -> tuple[list[Verdict], str | None]:
    """Ask the spec's model for each sample's class; drop those it assigns to another class."""
    if not samples:
        return [], None
    if endpoint is None:
        from factory.generation.llm.client import open_endpoint

        with open_endpoint(spec.generation) as ep:
            answers = asyncio.run(_ask_labels(spec, store, ep, samples))
    else:
        answers = asyncio.run(_ask_labels(spec, store, endpoint, samples))
    out: list[Verdict] = []
    unanswered = 0
    for s, answer in zip(samples, answers):
        if answer is None:
            unanswered += 1
            out.append((True, "not judged: no answer (budget or endpoint)"))
            continue
        predicted = parse_label_answer(answer, spec.class_names)
        if predicted is None:
            out.append((True, f"answer names no class: {answer.strip()[:60]!r}"))
        elif predicted != s["class"]:
            out.append((False, f"LLM says {predicted}: {answer.strip()[:60]!r}"))
        else:
            out.append((True, None))
    note = f"label_consistency (llm): {unanswered} samples not judged (budget or endpoint)" if unanswered else None
    return out, note


# --------------------------------------------------------------------------------------------------
# the stage


def canonical_order(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(samples, key=lambda s: (s["class"], s["sample_index"], s["choice_index"], s["sample_id"]))


def enabled_filters(spec: Spec) -> list[str]:
    f = spec.filters
    on = {"refusal": f.refusal, "length": f.min_words > 0 or f.max_words is not None, "exact_dup": f.dedup,
          "near_dup": f.near_dup is not None, "label_consistency": f.label_consistency != "off"}
    return [name for name in FILTER_ORDER if on[name]]


def apply_filters(spec: Spec, samples: Sequence[dict[str, Any]], embed: EmbedFn | None = None,
                  store: Store | None = None, endpoint: Any | None = None) -> FilterOutcome:
    """Run the spec's enabled filters in order on ``samples`` (dicts with sample_id, class, text,
    sample_index, choice_index and optionally is_refusal); nothing is written.

    ``embed`` maps texts to unit embeddings (needed by ``near_dup`` and the ``classifier`` label check);
    ``store`` (and optionally ``endpoint``) are needed by the ``llm`` label check."""
    order = enabled_filters(spec)
    alive = canonical_order(samples)
    outcome = FilterOutcome(order=order, generated=len(alive), kept_ids=[])
    dropped_by: dict[str, str] = {}
    emb_cache: dict[str, NDArray[np.float32]] = {}

    def embeddings(batch: list[dict[str, Any]]) -> NDArray[np.float32]:
        if embed is None:
            raise ValueError("near_dup and label_consistency=classifier need embeddings (pass embed=)")
        missing = [s for s in batch if s["sample_id"] not in emb_cache]
        if missing:
            for s, v in zip(missing, embed([s["text"] for s in missing])):
                emb_cache[s["sample_id"]] = v
        if not batch:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([emb_cache[s["sample_id"]] for s in batch])

    for name in order:
        note = None
        if not alive:
            verdicts: list[Verdict] = []
        elif name == "refusal":
            verdicts = refusal_verdicts(alive)
        elif name == "length":
            verdicts = length_verdicts(alive, spec.filters.min_words, spec.filters.max_words)
        elif name == "exact_dup":
            verdicts = exact_dup_verdicts(alive)
        elif name == "near_dup":
            verdicts = near_dup_verdicts(alive, embeddings(alive), float(spec.filters.near_dup or 1.0))
        elif spec.filters.label_consistency == "classifier":
            verdicts, note = classifier_verdicts(alive, embeddings(alive))
        else:
            if store is None:
                raise ValueError("label_consistency=llm needs the store (its requests are cached there)")
            verdicts, note = llm_verdicts(spec, store, alive, endpoint)
        if note:
            outcome.notes.append(note)
        survivors = []
        for s, (kept, reason) in zip(alive, verdicts):
            outcome.rows.append((s["sample_id"], name, kept, reason))
            if kept:
                survivors.append(s)
            else:
                dropped_by[s["sample_id"]] = name
        outcome.judged[name] = len(alive)
        outcome.dropped[name] = len(alive) - len(survivors)
        alive = survivors

    outcome.kept_ids = [s["sample_id"] for s in alive]
    for s in canonical_order(samples):
        by = dropped_by.get(s["sample_id"])
        outcome.rows.append((s["sample_id"], FINAL, by is None, f"dropped by {by}" if by else None))
    return outcome


def run_filters(spec: Spec, store: Store, embedder: Any | None = None, show_progress: bool = False,
                endpoint: Any | None = None) -> FilterOutcome:
    """Filter the spec's samples and replace its decisions in ``filter_decisions`` (one transaction).

    Embeddings come from the store's cache (new ones are encoded and cached first, in their own
    transactions)."""
    from factory.quality.embeddings import embed_texts

    samples = store.samples(spec.hash)

    def embed(texts: Sequence[str]) -> NDArray[np.float32]:
        return embed_texts(store, texts, embedder, show_progress)

    outcome = apply_filters(spec, samples, embed, store, endpoint)
    apply_reviews(outcome, store.review_decisions(spec.hash))
    store.replace_filter_decisions(spec.hash, outcome.rows)
    return outcome


HUMAN = "human"  # the filter name of reviewers' decisions (factory review), after every automatic filter


def with_human_decisions(rows: list[tuple[str, str, bool, str | None]],
                         reviews: dict[str, dict[str, Any]]) -> list[tuple[str, str, bool, str | None]]:
    """The decision rows plus one ``human`` row per reviewed sample that the filters kept (reason
    ``human: <reviewer>: <decision>[ -> label][: note]``); a rejected sample's ``final`` row becomes a
    drop. Decisions live in ``review_decisions``, so a rerun of the filters keeps them."""
    out: list[tuple[str, str, bool, str | None]] = []
    for sample_id, name, kept, reason in rows:
        review = reviews.get(sample_id)
        if name == FINAL and kept and review is not None:
            why = f"human: {review['reviewer']}: {review['decision']}"
            why += f" -> {review['label']}" if review.get("label") else ""
            why += f": {review['note']}" if review.get("note") else ""
            rejected = review["decision"] == "reject"
            out.append((sample_id, HUMAN, not rejected, why))
            out.append((sample_id, FINAL, not rejected, f"dropped by {HUMAN}" if rejected else reason))
        else:
            out.append((sample_id, name, kept, reason))
    return out


def apply_reviews(outcome: FilterOutcome, reviews: dict[str, dict[str, Any]]) -> None:
    """Add the reviewers' decisions to a filter outcome: its rows, counts and kept ids."""
    outcome.rows = with_human_decisions(outcome.rows, reviews)
    human = [(r[0], r[2]) for r in outcome.rows if r[1] == HUMAN]
    if not human:
        return
    rejected = {sample_id for sample_id, kept in human if not kept}
    outcome.order.append(HUMAN)
    outcome.judged[HUMAN], outcome.dropped[HUMAN] = len(human), len(rejected)
    outcome.kept_ids = [i for i in outcome.kept_ids if i not in rejected]
