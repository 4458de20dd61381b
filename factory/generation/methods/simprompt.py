"""SimPrompt, the baseline: the same class-conditional prompt for every request (diversity comes from
sampling alone); it uses no attribute dimension and no similar classes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from factory.generation.methods.base import GenerationMethod, Planned, register

if TYPE_CHECKING:
    from factory.attributes.attribute_set import AttributeSet
    from factory.datasets import LabelledText
    from factory.generation.prompts import PromptRenderer
    from factory.spec import Spec


@register
class SimPrompt(GenerationMethod):
    name = "simprompt"

    def units(self, spec: Spec, attrs: AttributeSet, class_name: str, renderer: PromptRenderer,
              examples: Sequence[LabelledText]) -> Iterator[Planned]:
        messages = renderer.messages(label=renderer.display(class_name))
        for r in range(self.units_per_class(spec)):
            yield self._unit(spec, class_name, r * spec.generation.n, {}, messages)
