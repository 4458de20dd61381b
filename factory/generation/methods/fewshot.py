"""Few-shot in-context generation (Li et al., 2023): each request shows ``fewshot_k`` real examples from
``evaluation.train_set`` and asks for a new text of the class."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from factory.generation.methods.base import GenerationMethod, Planned, register, stream

if TYPE_CHECKING:
    from factory.attributes.attribute_set import AttributeSet
    from factory.datasets import LabelledText
    from factory.generation.prompts import PromptRenderer
    from factory.spec import Spec


@register
class FewShot(GenerationMethod):
    name = "fewshot"

    def units(self, spec: Spec, attrs: AttributeSet, class_name: str, renderer: PromptRenderer,
              examples: Sequence[LabelledText]) -> Iterator[Planned]:
        gen = spec.generation
        rng = stream(gen.seed, class_name, "examples")
        label = renderer.display(class_name)
        k = min(gen.fewshot_k, len(examples))
        for r in range(self.units_per_class(spec)):
            shots = [{"text": e.text, "label": renderer.display(e.label)} for e in rng.sample(list(examples), k)]
            yield self._unit(spec, class_name, r * gen.n, {}, renderer.messages(label=label, examples=shots,
                                                                               style=None))
