"""Class-agnostic filtering (CAF, Yu et al., 2023): a class-dependent value that the model judges relevant
to one of the class's similar classes is dropped, since it would make the class ambiguous; every judgement
is kept with its reason (the lock file and the store record them)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any, Protocol

from factory.attributes.listparse import parse_yes_no
from factory.generation.prompts import PromptRenderer


class Elicitor(Protocol):
    """What CAF needs of the elicitor: its prompt renderer and one structured request."""

    renderer: PromptRenderer

    async def ask(self, prompt: str, schema: dict[str, Any], max_tokens: int, attempt: int) -> str: ...


log = logging.getLogger("factory.attributes.caf")


@dataclass(frozen=True)
class CafDecision:
    """One class-agnostic filtering judgement of a class-dependent value."""

    dimension: str
    class_name: str
    value: str
    dropped: bool
    relevant_to: list[str]
    reason: str


JUDGEMENT_SCHEMA = {"type": "json_schema", "json_schema": {"name": "judgement", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": ["answer", "reason"],
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                   "reason": {"type": "string", "maxLength": 200}}}}}


async def judge(elicitor: Elicitor, dimension: str, class_name: str, value: str, others: list[str]) -> CafDecision:
    """CAF: is ``value`` (of ``class_name``) relevant to any of its similar classes? Then drop it."""
    prompt = elicitor.renderer.render("elicit.caf", dimension=dimension, value=value,
                                      others=[elicitor.renderer.display(o) for o in others])
    reply = await elicitor.ask(prompt, JUDGEMENT_SCHEMA, 64, 0)
    verdict = parse_yes_no(reply)
    reason = reply.strip()[:300] if verdict is not None else f"undecidable reply, kept: {reply.strip()[:200]}"
    return CafDecision(dimension, class_name, value, verdict is True, others if verdict else [], reason)


async def class_agnostic_filter(elicitor: Elicitor, dimension: str, values: dict[str, list[str]],
                                similar: dict[str, list[str]]) -> tuple[dict[str, list[str]], list[CafDecision]]:
    """Judge every value of every class that has similar classes; drop those judged relevant to one."""
    jobs = [judge(elicitor, dimension, c, v, similar[c]) for c, vs in values.items() for v in vs if similar.get(c)]
    decisions = list(await asyncio.gather(*jobs))
    dropped = {(d.class_name, d.value) for d in decisions if d.dropped}
    kept = {c: [v for v in vs if (c, v) not in dropped] for c, vs in values.items()}
    for c, vs in kept.items():
        if not vs:  # never leave a class without values: keep them all, and say so (in the decisions too)
            log.warning("CAF would drop every %s value of %r; keeping them", dimension, c)
            kept[c] = values[c]
            decisions = [replace(d, dropped=False, reason=f"kept: CAF would drop every value of the class; {d.reason}")
                         if d.class_name == c else d for d in decisions]
    return kept, decisions
