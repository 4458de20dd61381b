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
    store.replace_filter_decisions(spec.hash, outcome.rows)
    return outcome
