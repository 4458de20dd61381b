"""``length``: ``min_words <= words <= max_words`` (whitespace-separated words; ``max_words`` optional)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factory.quality.filters.base import FilterContext, SampleFilter, Verdict, register
from factory.spec import Spec


def word_count(text: str) -> int:
    return len(text.split())


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


@register
class LengthFilter(SampleFilter):
    name, rank = "length", 20

    def enabled(self, spec: Spec) -> bool:
        return spec.filters.min_words > 0 or spec.filters.max_words is not None

    def verdicts(self, ctx: FilterContext, samples: list[dict[str, Any]]) -> tuple[list[Verdict], str | None]:
        return length_verdicts(samples, ctx.spec.filters.min_words, ctx.spec.filters.max_words), None
