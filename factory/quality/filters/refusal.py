"""``refusal``: ``samples.is_refusal`` (flagged at generation) or the refusal detector on the text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factory.quality.filters.base import FilterContext, SampleFilter, Verdict, register
from factory.quality.refusal import is_refusal
from factory.spec import Spec


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


@register
class RefusalFilter(SampleFilter):
    name, rank = "refusal", 10

    def enabled(self, spec: Spec) -> bool:
        return spec.filters.refusal

    def verdicts(self, ctx: FilterContext, samples: list[dict[str, Any]]) -> tuple[list[Verdict], str | None]:
        return refusal_verdicts(samples), None
