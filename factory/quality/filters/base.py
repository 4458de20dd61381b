"""What every sample filter shares: verdicts, the context a filter runs in, the registry, the outcome."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from factory.spec import Spec
from factory.store import Store

FINAL = "final"
Verdict = tuple[bool, str | None]  # (kept, reason)
EmbedFn = Callable[[Sequence[str]], NDArray[np.float32]]


@dataclass
class FilterContext:
    """What a filter may use: the spec, unit embeddings of samples (cached per sample), the store and an
    endpoint (for the LLM label check)."""

    spec: Spec
    embeddings: Callable[[list[dict[str, Any]]], NDArray[np.float32]]
    store: Store | None = None
    endpoint: Any | None = None


class SampleFilter:
    """One filter: whether the spec enables it, and one verdict per sample still in play (plus a note)."""

    name: ClassVar[str]
    rank: ClassVar[int]  # the filters run cheapest first, by rank

    def enabled(self, spec: Spec) -> bool:
        raise NotImplementedError

    def verdicts(self, ctx: FilterContext, samples: list[dict[str, Any]]) -> tuple[list[Verdict], str | None]:
        raise NotImplementedError


FILTERS: dict[str, SampleFilter] = {}


def register(cls: type[SampleFilter]) -> type[SampleFilter]:
    """Class decorator: make ``cls`` the filter named ``cls.name``."""
    FILTERS[cls.name] = cls()
    return cls


def ordered_filters() -> list[SampleFilter]:
    return sorted(FILTERS.values(), key=lambda f: f.rank)


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
