"""``exact_dup``: the same text after lowercasing and collapsing whitespace, across all classes; the
first (in canonical order) is kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factory.quality.filters.base import FilterContext, SampleFilter, Verdict, register
from factory.spec import Spec


def normalise_text(text: str) -> str:
    """Lowercase with runs of whitespace collapsed to one space (and trimmed): the exact-duplicate key."""
    return " ".join(text.lower().split())


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


@register
class ExactDuplicateFilter(SampleFilter):
    name, rank = "exact_dup", 30

    def enabled(self, spec: Spec) -> bool:
        return spec.filters.dedup

    def verdicts(self, ctx: FilterContext, samples: list[dict[str, Any]]) -> tuple[list[Verdict], str | None]:
        return exact_dup_verdicts(samples), None
