"""The base of every generation method, the registry, and what methods share (planned units, seeds)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from factory.keys import digest

Message = dict[str, str]

if TYPE_CHECKING:
    from factory.attributes.attribute_set import AttributeSet
    from factory.datasets import LabelledText
    from factory.generation.prompts import PromptRenderer
    from factory.spec import Spec


@dataclass(frozen=True)
class Planned:
    """A unit of work: one request, or (zero-shot) a conversation of ``length`` requests."""

    class_name: str
    first_index: int
    attributes: dict[str, str]
    seed: int
    messages: list[Message]
    length: int = 1


def request_seed(spec_seed: int, class_name: str, index: int) -> int:
    return int(digest([spec_seed, class_name, index])[:8], 16)


def stream(seed: int, class_name: str, what: str) -> random.Random:
    """An independent random stream per (spec seed, class, purpose): the same spec gives the same prompts."""
    return random.Random(f"{seed}:{class_name}:{what}")


class GenerationMethod:
    """How one method turns a class into planned requests; subclasses override what differs."""

    name: ClassVar[str]
    conversational: ClassVar[bool] = False

    def dimensions(self, spec: Spec) -> list[str]:
        """The attribute dimensions this method puts into prompts (the only ones worth eliciting)."""
        return []

    def uses_similar(self, spec: Spec) -> bool:
        """Whether prompts name each class's similar classes."""
        return False

    def units_per_class(self, spec: Spec) -> int:
        """Planned units of one class (requests, or conversations for conversational methods)."""
        return math.ceil(spec.budget.samples_per_class / spec.generation.n)

    def requests_per_class(self, spec: Spec) -> int:
        return self.units_per_class(spec)

    def combinations(self, spec: Spec, attrs: AttributeSet, class_name: str) -> int:
        """Distinct attribute combinations a class's prompts can take."""
        return 1

    def units(self, spec: Spec, attrs: AttributeSet, class_name: str, renderer: PromptRenderer,
              examples: Sequence[LabelledText]) -> Iterator[Planned]:
        """The class's units, in order, lazily."""
        raise NotImplementedError

    def _unit(self, spec: Spec, class_name: str, index: int, combo: dict[str, str], messages: list[Message],
              length: int = 1) -> Planned:
        return Planned(class_name, index, combo, request_seed(spec.generation.seed, class_name, index), messages,
                       length)


METHODS: dict[str, GenerationMethod] = {}


def register(cls: type[GenerationMethod]) -> type[GenerationMethod]:
    """Class decorator: make ``cls`` the method named ``cls.name``."""
    METHODS[cls.name] = cls()
    return cls


def method_for(spec: Spec) -> GenerationMethod:
    """The registered method the spec names."""
    try:
        return METHODS[spec.generation.method]
    except KeyError:
        raise ValueError(f"generation.method {spec.generation.method!r} is not registered "
                         f"(known: {', '.join(sorted(METHODS))})") from None


def context_attributes(attrs: AttributeSet, combo: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": dim, "value": value, "unit": attrs.units.get(dim, "")} for dim, value in combo.items()]
