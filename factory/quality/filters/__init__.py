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

from factory.quality.filters import exact_dup, label_consistency, length, near_dup, refusal  # noqa: F401 (registration)
from factory.quality.filters.apply import (
    HUMAN,
    apply_filters,
    apply_reviews,
    canonical_order,
    enabled_filters,
    run_filters,
)
from factory.quality.filters.base import FILTERS, FINAL, FilterContext, FilterOutcome, SampleFilter, register
from factory.quality.filters.exact_dup import normalise_text
from factory.quality.filters.label_consistency import label_request, parse_label_answer
from factory.quality.filters.near_dup import near_duplicates

FILTER_ORDER = tuple(f.name for f in sorted(FILTERS.values(), key=lambda f: f.rank))

__all__ = ["FILTERS", "FILTER_ORDER", "FINAL", "HUMAN", "apply_reviews", "FilterContext", "FilterOutcome", "SampleFilter", "apply_filters",
           "canonical_order", "enabled_filters", "label_request", "near_duplicates", "normalise_text",
           "parse_label_answer", "register", "run_filters"]
