"""AttrPrompt (Yu et al., 2023): every request samples one value of every attribute dimension (per class
for class-dependent ones) and names the class's similar classes, so that texts differ along the attributes."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from factory.generation.methods.base import GenerationMethod, Planned, context_attributes, register, stream

if TYPE_CHECKING:
    from factory.attributes.attribute_set import AttributeSet
    from factory.datasets import LabelledText
    from factory.generation.prompts import PromptRenderer
    from factory.spec import Spec


def value_stream(pool: list[str], rng: random.Random, stratified: bool) -> Iterator[str]:
    """Endless values of one dimension: independent draws, or (stratified) a shuffled deck dealt out, so
    every value is used before any repeats."""
    while True:
        if stratified:
            yield from rng.sample(pool, len(pool))
        else:
            yield rng.choice(pool)


@register
class AttrPrompt(GenerationMethod):
    name = "attrprompt"

    def dimensions(self, spec: Spec) -> list[str]:
        return list(spec.attributes)

    def uses_similar(self, spec: Spec) -> bool:
        return True

    def combinations(self, spec: Spec, attrs: AttributeSet, class_name: str) -> int:
        return math.prod(len(attrs.for_class(d, class_name)) for d in attrs.values)

    def units(self, spec: Spec, attrs: AttributeSet, class_name: str, renderer: PromptRenderer,
              examples: Sequence[LabelledText]) -> Iterator[Planned]:
        gen = spec.generation
        streams = {d: value_stream(attrs.for_class(d, class_name), stream(gen.seed, class_name, d), gen.stratified)
                   for d in attrs.values}
        similar = [renderer.display(s) for s in attrs.similar.get(class_name, [])]
        label = renderer.display(class_name)
        for r in range(self.units_per_class(spec)):
            combo = {d: next(values) for d, values in streams.items()}
            messages = renderer.messages(label=label, attributes=context_attributes(attrs, combo), similar=similar)
            yield self._unit(spec, class_name, r * gen.n, combo, messages)
