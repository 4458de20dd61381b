"""Eliciting what the spec leaves open, through the engine (cache, budget, retries).

AttrPrompt (Yu et al., 2023): the k most similar classes of each class; attribute values per dimension,
per class for class-dependent dimensions (asked to be unrelated to the similar classes), screened for
class names, the dimension's name and duplicates; then class-agnostic filtering (:mod:`factory.attributes.caf`).
Multi-label specs merge class-dependent values across classes instead of filtering them.

Replies are requested as JSON through ``response_format`` (a schema; enum-constrained for class names and
yes/no) and parsed leniently, so servers without structured outputs work too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai

from factory.attributes.caf import CafDecision, class_agnostic_filter
from factory.attributes.listparse import match_names, parse_list
from factory.attributes.values import ALL
from factory.generation.llm.engine import Engine, LLMRequest
from factory.generation.prompts import PromptRenderer
from factory.labels import name_key
from factory.spec import AttributeSpec, Spec

log = logging.getLogger("factory.attributes.elicit")
MAX_ASKS = 3
TOKENS_PER_VALUE = 16


class ElicitationError(RuntimeError):
    """The model gave no usable answer after every re-ask."""


@dataclass(frozen=True)
class Rejection:
    """An elicited value dropped before CAF (a class name, the dimension's name, a duplicate)."""

    dimension: str
    class_name: str
    value: str
    reason: str


@dataclass
class Elicited:
    """Elicited values (kept after CAF), similar classes, the CAF decisions, dropped class names and the
    values rejected before CAF."""

    values: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    similar: dict[str, list[str]] = field(default_factory=dict)
    caf: list[CafDecision] = field(default_factory=list)
    unknown_similar: dict[str, list[str]] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)


Screen = Callable[[str, list[str]], str | None]  # (value, values kept so far) -> why it is rejected, or None


def value_screen(dimension: str, class_names: dict[str, str]) -> Screen:
    """Rejects a value that names a class (``class_names``: name -> how prompts show it), that is the
    dimension's own name, or that repeats a kept value once normalised."""
    classes = {name_key(k): c for c, shown in class_names.items() for k in (c, shown)}
    dim = name_key(dimension)

    def screen(value: str, kept: list[str]) -> str | None:
        key = name_key(value)
        if key in classes:
            return f"names the class {classes[key]!r}"
        if key == dim:
            return "is the dimension's own name"
        twin = next((k for k in kept if name_key(k) == key), None)
        return None if twin is None else f"duplicate of {twin!r}"
    return screen


def list_schema(n: int, enum: list[str] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "string", "enum": enum} if enum else {"type": "string", "maxLength": 60}
    return {"type": "json_schema", "json_schema": {"name": "values", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["values"],
        "properties": {"values": {"type": "array", "items": item, "minItems": n, "maxItems": n}}}}}


class Elicitor:
    """Asks the spec's elicitation model (:attr:`Spec.elicitation_generation`) for similar classes, attribute
    values and CAF judgements."""

    def __init__(self, spec: Spec, engine: Engine):
        self.spec = spec
        self.engine = engine
        self.renderer = PromptRenderer(spec)
        self.structured = True

    async def ask(self, prompt: str, schema: dict[str, Any], max_tokens: int, attempt: int) -> str:
        """One request (attempt ``attempt`` of a question); falls back to plain text where the server
        rejects ``response_format``."""
        gen = self.spec.elicitation_generation
        params: dict[str, Any] = {"temperature": self.spec.elicitation_temperature, "top_p": gen.top_p,
                                  "max_tokens": max_tokens, "seed": gen.seed + attempt}
        if self.structured:
            params["response_format"] = schema
        request = LLMRequest([{"role": "user", "content": prompt}], gen.model, params, attempt, "elicit")
        try:
            return (await self.engine.complete(request)).choices[0]
        except openai.BadRequestError:
            if not self.structured:
                raise
            log.warning("the endpoint rejects response_format; eliciting as plain text")
            self.structured = False
            return await self.ask(prompt, schema, max_tokens, attempt)

    async def ask_list(self, prompt: str, n: int, what: str, enum: list[str] | None = None,
                       exclude: list[str] | None = None, screen: Screen | None = None,
                       rejected: dict[str, str] | None = None) -> list[str]:
        """Up to ``n`` unique values, re-asking (with another seed) while too few came back. A value that
        ``screen`` rejects is left out, its reason kept in ``rejected`` (value -> reason)."""
        found: list[str] = []
        for attempt in range(MAX_ASKS):
            reply = await self.ask(prompt, list_schema(n, enum), TOKENS_PER_VALUE * n + 24, attempt)
            seen = {v.lower() for v in found} | {v.lower() for v in exclude or []}
            for value in parse_list(reply):
                if value.lower() in seen:
                    continue  # the same value again (re-asks repeat themselves): not a finding
                seen.add(value.lower())
                reason = screen(value, found) if screen else None
                if reason is None:
                    found.append(value)
                elif rejected is not None:
                    rejected.setdefault(value, reason)
            if len(found) >= n:
                return found[:n]
        if not found:
            raise ElicitationError(f"no usable {what} from {self.spec.elicitation_generation.model} "
                                   f"after {MAX_ASKS} asks")
        log.warning("only %d of %d %s after %d asks", len(found), n, what, MAX_ASKS)
        return found

    async def similar_classes(self, class_name: str) -> tuple[list[str], list[str]]:
        """The k classes most similar to ``class_name``: validated names, and the unknown ones dropped."""
        k = self.spec.similar_classes.k
        others = [c for c in self.spec.class_names if c != class_name]
        k = min(k, len(others))
        if k == 0:
            return [], []
        prompt = self.renderer.render("elicit.similar", labels=self.spec.class_names, label=class_name, k=k)
        # names, not descriptions: the answer must be one of the class names
        reply = await self.ask(prompt, list_schema(k, others), 12 * k + 24, 0)
        matched, unknown = match_names(parse_list(reply), others)
        if unknown:
            log.warning("similar classes of %r: dropped unknown names %s", class_name, unknown)
        return matched[:k], unknown

    async def values(self, dimension: str, attr: AttributeSpec, similar: dict[str, list[str]],
                     rejected: list[Rejection] | None = None) -> dict[str, list[str]]:
        """A dimension's values (per class where it is class-dependent), screened by :func:`value_screen`;
        what the screen dropped is appended to ``rejected``."""
        n = attr.elicit.n if attr.elicit else 10
        description = attr.description or (attr.elicit.instructions if attr.elicit else None)
        screen = value_screen(dimension, {c: self.renderer.display(c) for c in self.spec.class_names})
        keys = self.spec.class_names if attr.per_class else [ALL]
        dropped: dict[str, dict[str, str]] = {k: {} for k in keys}

        async def for_class(name: str) -> list[str]:
            if name == ALL:
                prompt = self.renderer.render("elicit.values", n=n, dimension=dimension, description=description)
                return await self.ask_list(prompt, n, f"{dimension} values", screen=screen, rejected=dropped[name])
            prompt = self.renderer.render("elicit.class_values", n=n, dimension=dimension,
                                          label=self.renderer.display(name), description=description,
                                          similar=[self.renderer.display(s) for s in similar.get(name, [])])
            return await self.ask_list(prompt, n, f"{dimension} values for {name}", screen=screen,
                                       rejected=dropped[name])

        lists = await asyncio.gather(*(for_class(c) for c in keys))
        for key, by_value in dropped.items():
            for value, reason in by_value.items():
                log.warning("%s value %r%s dropped: %s", dimension, value, f" of {key!r}" if key else "", reason)
                if rejected is not None:
                    rejected.append(Rejection(dimension, key, value, reason))
        return dict(zip(keys, lists))

    async def run(self, dimensions: list[str], need_similar: bool) -> Elicited:
        """Similar classes first (the value prompts name them), then values, then CAF."""
        out = Elicited()
        if need_similar:
            pairs = await asyncio.gather(*(self.similar_classes(c) for c in self.spec.class_names))
            out.similar = {c: p[0] for c, p in zip(self.spec.class_names, pairs)}
            out.unknown_similar = {c: p[1] for c, p in zip(self.spec.class_names, pairs) if p[1]}
        similar = out.similar or dict(self.spec.similar_classes.given or {})
        attrs = self.spec.attributes
        rejected: list[list[Rejection]] = [[] for _ in dimensions]
        lists = await asyncio.gather(*(self.values(d, attrs[d], similar, r) for d, r in zip(dimensions, rejected)))
        out.values = dict(zip(dimensions, lists))
        out.rejected = [r for rs in rejected for r in rs]
        for dim in dimensions:
            if not attrs[dim].per_class:
                continue
            if self.spec.task == "multilabel":
                out.values[dim] = {ALL: merge_values(out.values[dim].values())}
            elif self.spec.filters.caf:
                out.values[dim], decisions = await class_agnostic_filter(self, dim, out.values[dim], similar)
                out.caf += decisions
        return out


def merge_values(lists: Any) -> list[str]:
    """The union of several value lists, first spelling kept (case-insensitive)."""
    seen: set[str] = set()
    return [v for vs in lists for v in vs if v.lower() not in seen and not seen.add(v.lower())]


async def suggest_dimensions(spec: Spec, engine: Engine, n: int = 5) -> list[str]:
    """Ask the model which attribute dimensions matter for diverse data of this domain and task."""
    elicitor = Elicitor(spec, engine)
    prompt = elicitor.renderer.render("elicit.dimensions", n=n)
    return await elicitor.ask_list(prompt, n, "attribute dimensions")
