"""The quality stage of a spec: filters -> embeddings -> diversity metrics -> bias, each step committed
in its own transaction (embeddings are cached as they are encoded, by text hash and model).

The filters need embeddings (near duplicates, the label classifier): they take them from the cache,
encoding only what is missing. Diversity and bias are measured on the kept samples (those that
survived every filter); the metrics of a spec are replaced on every run:

* scope ``overall``: the names of :func:`factory.quality.metrics.diversity_report`'s ``overall`` part
  (``n_texts``, ``n_embedded``, ``n_classes``, ``vocabulary_size``, ``aps``, ``mean_class_aps``,
  ``inter_class_aps``, ``remote_clique``, ``chamfer_distance``) plus ``n_generated``, ``n_refusals``
  (dropped by the refusal filter; flagged at generation when that filter is off), ``n_kept`` and, when the spec's ``evaluation.test_set`` resolves to a file, ``top5_similarity`` (mean
  over the real test texts of the mean cosine to their 5 most similar kept texts), ``n_real`` and
  ``real_aps`` (the APS of the real test set, for reference);
* scope ``class:<name>``: the ``per_class`` part of the report, ``n_generated``, ``n_kept`` and
  ``top5_similarity`` of the class's real test texts against the class's kept texts (when it has any);
* scope ``bias:<dimension>``: see :mod:`factory.quality.bias`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from factory.quality.bias import DimensionBias, bias_report, store_bias
from factory.quality.embeddings import Embedder, default_embedder, embed_texts
from factory.quality.filters import FilterOutcome, run_filters
from factory.quality.metrics import average_pairwise_similarity, diversity_report, top_k_similarity
from factory.spec import Spec, SpecError
from factory.store import Store

TOP_K = 5
DIVERSITY_SCOPES = ("overall", "class:")
DIVERSITY_NAMES = ("n_texts", "n_embedded", "n_classes", "vocabulary_size", "aps", "mean_class_aps",
                   "inter_class_aps", "remote_clique", "chamfer_distance", "n_generated", "n_refusals", "n_kept",
                   "top5_similarity", "n_real", "real_aps")


@dataclass
class QualityResult:
    """What the quality stage found for one spec."""

    spec_hash: str
    generated: int
    kept: int
    filters: FilterOutcome
    encoded: int  # texts newly encoded by the embedding model in this run (the rest came from the cache)
    diversity: dict[str, Any]  # diversity_report(...) of the kept samples, plus top-5 similarity
    bias: list[DimensionBias]
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def dropped(self) -> dict[str, int]:
        return dict(self.filters.dropped)

    def metric(self, scope: str, name: str) -> float | None:
        part = self.diversity["overall"] if scope == "overall" else self.diversity["per_class"].get(
            scope.removeprefix("class:"), {})
        value = part.get(name)
        return None if value is None else float(value)


def _real_texts(spec: Spec) -> tuple[list[tuple[str, str]] | None, str | None]:
    """The spec's real test set as (text, label) pairs, or None with the reason it is skipped."""
    ref = spec.evaluation.test_set
    if ref is None:
        return None, "top-5 similarity skipped: the spec has no evaluation.test_set"
    from factory.datasets import read_ref

    try:
        rows = read_ref(spec, ref)
    except (SpecError, OSError, ValueError) as exc:
        return None, f"top-5 similarity skipped: evaluation.test_set {ref.path!r} not usable ({exc})"
    if not rows:
        return None, f"top-5 similarity skipped: evaluation.test_set {ref.path!r} is empty"
    return [(r.text, r.label) for r in rows], None


def diversity_rows(spec: Spec, store: Store, samples: Sequence[dict[str, Any]], kept: Sequence[dict[str, Any]],
                   kept_emb: NDArray[np.float32], embedder: Embedder | None,
                   show_progress: bool = False, outcome: FilterOutcome | None = None) -> tuple[list[tuple[str, str, float | None]], dict[str, Any], list[str]]:
    """Metric rows (scope, name, value), the report dict and notes for the kept samples."""
    notes: list[str] = []
    texts = [s["text"] for s in kept]
    labels = [s["class"] for s in kept]
    emb = kept_emb if len(kept) else np.zeros((0, 384), dtype=np.float32)
    report = diversity_report(emb, labels, texts)
    generated = Counter(s["class"] for s in samples)
    flagged = sum(bool(s.get("is_refusal")) for s in samples)
    refusals = outcome.dropped.get("refusal", flagged) if outcome is not None else flagged
    kept_by_class = Counter(labels)
    overall = report["overall"]
    overall |= {"n_generated": len(samples), "n_refusals": refusals, "n_kept": len(kept)}
    for cls in spec.class_names:
        part = report["per_class"].setdefault(cls, {"n_texts": 0, "n_embedded": 0, "vocabulary_size": 0,
                                                    "aps": None, "remote_clique": None, "chamfer_distance": None})
        part |= {"n_generated": generated.get(cls, 0), "n_kept": kept_by_class.get(cls, 0)}

    real, why = _real_texts(spec)
    if real is None:
        notes.append(why or "top-5 similarity skipped")
    else:
        real_emb = embed_texts(store, [t for t, _ in real], embedder, show_progress)
        overall["n_real"] = len(real)
        aps = average_pairwise_similarity(real_emb)
        overall["real_aps"] = None if np.isnan(aps) else aps
        value = top_k_similarity(real_emb, emb, k=TOP_K) if len(kept) >= TOP_K else float("nan")
        overall["top5_similarity"] = None if np.isnan(value) else value
        if len(kept) < TOP_K:
            notes.append(f"top-5 similarity undefined: only {len(kept)} kept samples")
        real_labels = np.asarray([lab for _, lab in real])
        gen_labels = np.asarray(labels)
        for cls, part in report["per_class"].items():
            r_idx, g_idx = np.flatnonzero(real_labels == cls), np.flatnonzero(gen_labels == cls)
            if len(r_idx) and len(g_idx) >= TOP_K:
                part["top5_similarity"] = top_k_similarity(real_emb[r_idx], emb[g_idx], k=TOP_K)

    rows: list[tuple[str, str, float | None]] = []
    for name, value in overall.items():
        rows.append(("overall", name, None if value is None else float(value)))
    for cls, part in report["per_class"].items():
        for name, value in part.items():
            rows.append((f"class:{cls}", name, None if value is None else float(value)))
    return rows, report, notes


def run_quality(spec: Spec, store: Store, show_progress: bool = False, embedder: Embedder | None = None,
                endpoint: Any | None = None) -> QualityResult:
    """Filters, embeddings, diversity metrics and bias for a spec's samples; each step in its own
    transaction. ``endpoint`` is only used by ``label_consistency: llm`` (default: the spec's endpoint)."""
    embedder = embedder or default_embedder()
    seconds: dict[str, float] = {}
    encoded0 = embedder.encoded

    t = time.perf_counter()
    outcome = run_filters(spec, store, embedder, show_progress, endpoint)
    seconds["filters"] = time.perf_counter() - t

    t = time.perf_counter()
    samples = store.samples(spec.hash)
    kept = store.kept_samples(spec.hash)
    kept_emb = embed_texts(store, [s["text"] for s in kept], embedder, show_progress)
    seconds["embeddings"] = time.perf_counter() - t

    t = time.perf_counter()
    rows, report, notes = diversity_rows(spec, store, samples, kept, kept_emb, embedder, show_progress, outcome)
    store.replace_metrics(spec.hash, rows, scopes=DIVERSITY_SCOPES, names=DIVERSITY_NAMES)
    seconds["metrics"] = time.perf_counter() - t

    t = time.perf_counter()

    def embed(texts: Sequence[str]) -> NDArray[np.float32]:
        return embed_texts(store, texts, embedder, show_progress)

    bias = bias_report(spec, store, kept, embed, kept_emb)
    store_bias(store, spec.hash, bias)
    seconds["bias"] = time.perf_counter() - t
    if not bias:
        notes.append("bias: no attribute dimension for this spec or a related one")

    return QualityResult(spec.hash, len(samples), len(kept), outcome, embedder.encoded - encoded0, report, bias,
                         outcome.notes + notes, seconds)
