"""The filter stage: the spec's enabled filters in order, each on the samples the earlier ones kept, and
the decisions written to the store in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from factory.quality.filters.base import FILTERS, FINAL, EmbedFn, FilterContext, FilterOutcome, ordered_filters
from factory.spec import Spec
from factory.store import Store


def canonical_order(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(samples, key=lambda s: (s["class"], s["sample_index"], s["choice_index"], s["sample_id"]))


def enabled_filters(spec: Spec) -> list[str]:
    """The names of the filters the spec enables, in the order they run."""
    return [f.name for f in ordered_filters() if f.enabled(spec)]




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

    ctx = FilterContext(spec, embeddings, store, endpoint)
    for name in order:
        verdicts, note = FILTERS[name].verdicts(ctx, alive) if alive else ([], None)
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
