"""Zero-shot generation with the diversity prompt (Li et al., 2023): a conversation per ``diversity_chain``
texts, each later text asked to differ from those before it; the only dimension it uses is ``style``."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from factory.generation.methods.base import GenerationMethod, Planned, register, stream

if TYPE_CHECKING:
    from factory.attributes.attribute_set import AttributeSet
    from factory.datasets import LabelledText
    from factory.generation.prompts import PromptRenderer
    from factory.spec import Spec

STYLE = "style"


@register
class ZeroShot(GenerationMethod):
    name = "zeroshot"
    conversational = True

    def dimensions(self, spec: Spec) -> list[str]:
        return [STYLE] if STYLE in spec.attributes else []

    def units_per_class(self, spec: Spec) -> int:
        return math.ceil(spec.budget.samples_per_class / spec.generation.diversity_chain)

    def requests_per_class(self, spec: Spec) -> int:
        return spec.budget.samples_per_class  # one text a request: n does not apply to a conversation

    def combinations(self, spec: Spec, attrs: AttributeSet, class_name: str) -> int:
        return len(attrs.for_class(STYLE, class_name)) if STYLE in attrs.values else 1

    def units(self, spec: Spec, attrs: AttributeSet, class_name: str, renderer: PromptRenderer,
              examples: Sequence[LabelledText]) -> Iterator[Planned]:
        gen = spec.generation
        rng = stream(gen.seed, class_name, STYLE)
        styles = attrs.for_class(STYLE, class_name) if STYLE in attrs.values else []
        label = renderer.display(class_name)
        for c in range(self.units_per_class(spec)):
            first = c * gen.diversity_chain
            length = min(gen.diversity_chain, spec.budget.samples_per_class - first)
            style = rng.choice(styles) if styles else None
            yield self._unit(spec, class_name, first, {STYLE: style} if style else {},
                             renderer.messages(label=label, style=style), length)
