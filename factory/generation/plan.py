"""The plan: every planned request of a spec, streamed lazily and interleaved across classes, so that
every prefix of the plan (what a budget cap leaves, what the F1-against-budget curve trains on) is as
balanced across classes as the budget allows. Same spec and seed, same prompts, same order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import islice

from factory.attributes.values import AttributeSet
from factory.datasets import LabelledText, read_ref
from factory.generation.llm.engine import LLMRequest, Message
from factory.generation.methods import GenerationMethod, Planned, method_for, request_seed
from factory.generation.prompts import PromptRenderer
from factory.spec import Spec

__all__ = ["Plan", "Planned", "fewshot_examples", "make_request", "plan", "request_seed"]


def make_request(spec: Spec, messages: list[Message], seed: int, index: int, n: int) -> LLMRequest:
    gen = spec.generation
    params = {"temperature": gen.temperature, "top_p": gen.top_p, "max_tokens": gen.max_tokens, "seed": seed}
    if n > 1:
        params["n"] = n
    return LLMRequest(messages, gen.model, params, index)


def fewshot_examples(spec: Spec) -> list[LabelledText]:
    """The real examples few-shot prompts draw from (none for other methods)."""
    if spec.generation.method != "fewshot" or spec.evaluation.train_set is None:
        return []
    return read_ref(spec, spec.evaluation.train_set)


@dataclass
class Plan:
    """What a run will send: the spec, the attribute set it samples from and (few-shot) the real examples.
    Iterating yields :class:`Planned` units lazily, class by class in turn (unit 0 of every class, then
    unit 1, ...); the counts come from combinatorics, never from a list of the units."""

    spec: Spec
    attrs: AttributeSet
    examples: list[LabelledText] = field(default_factory=list)
    shard: int = 0  # this plan is units shard, shard + shards, shard + 2*shards, ... of the whole plan
    shards: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.shards:
            raise ValueError(f"shard {self.shard} of {self.shards}: give 0 <= shard < shards")

    def for_shard(self, shard: int) -> Plan:
        """Part ``shard`` of the spec's ``generation.shards``: every unit whose position in the whole plan is
        ``shard`` modulo ``shards``. The parts are disjoint and together are exactly the whole plan (same
        units, same seeds, same request keys)."""
        return replace(self, shard=shard, shards=self.spec.generation.shards)

    @property
    def method(self) -> GenerationMethod:
        return method_for(self.spec)

    def __iter__(self) -> Iterator[Planned]:
        units = self._interleaved()
        if self.shards == 1:
            return units
        return islice(units, self.shard, None, self.shards)

    def _interleaved(self) -> Iterator[Planned]:
        renderer = PromptRenderer(self.spec)
        streams = [self.method.units(self.spec, self.attrs, c, renderer, self.examples)
                   for c in self.spec.class_names]
        while streams:
            alive = []
            for units in streams:
                unit = next(units, None)
                if unit is not None:
                    yield unit
                    alive.append(units)
            streams = alive

    @property
    def units_per_class(self) -> int:
        return self.method.units_per_class(self.spec)

    def _share(self, whole: int) -> int:
        """This shard's part of a count of the whole plan (exact for units, proportional otherwise)."""
        if self.shards == 1:
            return whole
        total_units = self.units_per_class * len(self.spec.classes)
        mine = len(range(self.shard, total_units, self.shards))
        return round(whole * mine / total_units) if total_units else 0

    @property
    def requests(self) -> int:
        return self._share(self.method.requests_per_class(self.spec) * len(self.spec.classes))

    @property
    def samples(self) -> int:
        return self._share(self.spec.budget.samples_per_class * len(self.spec.classes))

    def combinations(self) -> dict[str, int]:
        return {c: self.method.combinations(self.spec, self.attrs, c) for c in self.spec.class_names}

    def request(self, unit: Planned) -> LLMRequest:
        """The first request of a unit (the only one, unless the unit is a conversation)."""
        n = 1 if self.method.conversational else min(self.spec.generation.n,
                                                     self.spec.budget.samples_per_class - unit.first_index)
        return make_request(self.spec, unit.messages, unit.seed, unit.first_index, n)

    def head(self, units: int) -> list[Planned]:
        """The first ``units`` units (for previews and estimates)."""
        out = []
        for unit in self:
            if len(out) >= units:
                break
            out.append(unit)
        return out

    def class_counts(self, units: int) -> Counter[str]:
        """How many of the first ``units`` units each class has (a balance check of a prefix)."""
        return Counter(u.class_name for u in self.head(units))


def plan(spec: Spec, attrs: AttributeSet, examples: list[LabelledText] | None = None) -> Iterator[Planned]:
    """Every unit of work of the spec, interleaved across classes; lazy."""
    return iter(Plan(spec, attrs, list(examples or [])))
