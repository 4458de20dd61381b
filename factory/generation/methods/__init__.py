"""Generation methods, one module each, registered by name: how a method plans one class's requests,
which attribute dimensions it samples (so only those are elicited), and whether it names similar classes.

A new method is a module here that subclasses :class:`GenerationMethod` and decorates it with
:func:`register`; the spec's ``generation.method`` selects it.
"""

from factory.generation.methods import attrprompt, fewshot, simprompt, zeroshot  # noqa: F401  (registration)
from factory.generation.methods.base import (
    METHODS,
    GenerationMethod,
    Planned,
    context_attributes,
    method_for,
    register,
    request_seed,
    stream,
)

__all__ = ["METHODS", "GenerationMethod", "Planned", "context_attributes", "method_for", "register",
           "request_seed", "stream"]
