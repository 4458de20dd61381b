"""Sampling attribute combinations, building each method's requests, and driving the engine.

The same spec and seed always give the same prompts: every random draw comes from a generator seeded
with the spec's seed and the class name, and each request carries a seed derived from its sample index.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from factory.attributes import AttributeSet
from factory.datasets import LabelledText, read_ref
from factory.llm.budget import Budget
from factory.llm.client import Endpoint, open_engine
from factory.llm.engine import Completion, Engine, LLMRequest, Message, RequestWriter, digest
from factory.progress import EngineProgress
from factory.prompts import PromptRenderer
from factory.quality.refusal import is_refusal
from factory.spec import Spec
from factory.store import Store


@dataclass(frozen=True)
class Planned:
    """A unit of work: one request, or (zero-shot) a conversation of ``length`` requests."""

    class_name: str
    first_index: int
    attributes: dict[str, str]
    seed: int
    messages: list[Message]
    length: int = 1


@dataclass
class GenerationReport:
    requested: int = 0
    samples: int = 0
    new_samples: int = 0
    refusals: int = 0
    sent: int = 0
    cached: int = 0
    failed: int = 0
    tokens: int = 0
    usd: float = 0.0
    stopped: str | None = None
    errors: list[str] = field(default_factory=list)


def request_seed(spec_seed: int, class_name: str, index: int) -> int:
    return int(digest([spec_seed, class_name, index])[:8], 16)


def requests_per_class(spec: Spec) -> int:
    """Single-shot methods ask ``n`` texts a request; zero-shot conversations give one text a request."""
    if spec.generation.method == "zeroshot":
        return spec.budget.samples_per_class
    return math.ceil(spec.budget.samples_per_class / spec.generation.n)


def sample_combinations(attrs: AttributeSet, class_name: str, count: int, rng: random.Random,
                        stratified: bool) -> list[dict[str, str]]:
    """``count`` combinations, one value of every dimension each. Stratified: each dimension deals its
    values from a shuffled deck, so every value is used before any repeats."""
    combos: list[dict[str, str]] = [{} for _ in range(count)]
    for dim in attrs.values:
        pool = attrs.for_class(dim, class_name)
        if stratified:
            deck: list[str] = []
            for combo in combos:
                if not deck:
                    deck = rng.sample(pool, len(pool))
                combo[dim] = deck.pop()
        else:
            for combo in combos:
                combo[dim] = rng.choice(pool)
    return combos


def _attribute_context(attrs: AttributeSet, combo: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": dim, "value": value, "unit": attrs.units.get(dim, "")} for dim, value in combo.items()]


def plan(spec: Spec, attrs: AttributeSet, examples: list[LabelledText] | None = None) -> Iterator[Planned]:
    """Every unit of work of the spec, in class order; lazy, so 100k planned requests cost no memory."""
    renderer = PromptRenderer(spec)
    gen = spec.generation
    for class_name in spec.class_names:
        rng = random.Random(f"{gen.seed}:{class_name}")
        if gen.method == "zeroshot":
            chains = math.ceil(spec.budget.samples_per_class / gen.diversity_chain)
            styles = attrs.values.get("style")
            for c in range(chains):
                first = c * gen.diversity_chain
                length = min(gen.diversity_chain, spec.budget.samples_per_class - first)
                style = rng.choice(attrs.for_class("style", class_name)) if styles else None
                combo = {"style": style} if style else {}
                msgs = renderer.messages(label=renderer.display(class_name), style=style)
                yield Planned(class_name, first, combo, request_seed(gen.seed, class_name, first), msgs, length)
            continue
        count = requests_per_class(spec)
        combos = (sample_combinations(attrs, class_name, count, rng, gen.stratified)
                  if gen.method == "attrprompt" else [{} for _ in range(count)])
        for r, combo in enumerate(combos):
            context: dict[str, Any] = {"label": renderer.display(class_name)}
            if gen.method == "attrprompt":
                context |= {"attributes": _attribute_context(attrs, combo),
                            "similar": [renderer.display(s) for s in attrs.similar.get(class_name, [])]}
            if gen.method == "fewshot":
                shots = rng.sample(examples or [], min(gen.fewshot_k, len(examples or [])))
                context |= {"examples": [{"text": e.text, "label": renderer.display(e.label)} for e in shots],
                            "style": None}
            index = r * gen.n
            yield Planned(class_name, index, combo, request_seed(gen.seed, class_name, index),
                          renderer.messages(**context))


def make_request(spec: Spec, messages: list[Message], seed: int, index: int, n: int) -> LLMRequest:
    gen = spec.generation
    params = {"temperature": gen.temperature, "top_p": gen.top_p, "max_tokens": gen.max_tokens, "seed": seed}
    if n > 1:
        params["n"] = n
    return LLMRequest(messages, gen.model, params, index)


class Generator:
    """Runs the planned work of one spec through the engine and writes samples with full provenance."""

    def __init__(self, spec: Spec, run_id: str, engine: Engine, writer: RequestWriter, report: GenerationReport,
                 on_sample: Callable[[int], None] = lambda n: None):
        self.spec, self.run_id, self.engine, self.writer = spec, run_id, engine, writer
        self.report = report
        self.renderer = PromptRenderer(spec)
        self.on_sample = on_sample

    def _samples(self, item: Planned, request: LLMRequest, done: Completion, index: int) -> None:
        n = len(done.choices)
        when = datetime.now(timezone.utc)
        for choice, text in enumerate(done.choices):
            refusal = is_refusal(text)
            self.report.refusals += refusal
            self.writer.put("sample", (
                digest([self.spec.hash, request.key, choice])[:24], self.spec.hash, self.run_id, item.class_name,
                text, json.dumps(item.attributes, sort_keys=True), item.seed, index + choice, choice,
                self.spec.generation.method, request.prompt_hash, request.key, request.model,
                json.dumps(request.params, sort_keys=True), done.prompt_tokens // n, done.completion_tokens // n,
                done.cost_usd / n, refusal, when))
        self.report.samples += n
        self.report.new_samples += 0 if done.cached else n
        self.on_sample(n)

    def job(self, item: Planned) -> Callable[[], Any]:
        async def single() -> None:
            n = min(self.spec.generation.n, self.spec.budget.samples_per_class - item.first_index)
            request = make_request(self.spec, item.messages, item.seed, item.first_index, n)
            self._samples(item, request, await self.engine.complete(request), item.first_index)

        async def conversation() -> None:
            messages = list(item.messages)
            for step in range(item.length):
                index = item.first_index + step
                request = make_request(self.spec, messages, request_seed(self.spec.generation.seed,
                                                                        item.class_name, index), index, 1)
                done = await self.engine.complete(request)
                self._samples(item, request, done, index)
                messages = messages + [
                    {"role": "assistant", "content": done.choices[0]},
                    {"role": "user", "content": self.renderer.render("zeroshot.diversity",
                                                                     label=self.renderer.display(item.class_name))},
                ]

        return conversation if item.length > 1 or self.spec.generation.method == "zeroshot" else single


def fewshot_examples(spec: Spec) -> list[LabelledText] | None:
    if spec.generation.method != "fewshot" or spec.evaluation.train_set is None:
        return None
    return read_ref(spec, spec.evaluation.train_set)


async def generate_async(spec: Spec, store: Store, run_id: str, attrs: AttributeSet, endpoint: Endpoint,
                         show_progress: bool = False) -> GenerationReport:
    """Generate the spec's samples through ``endpoint``; resumable and within the budget."""
    report = GenerationReport(requested=spec.budget.samples_per_class * len(spec.classes))
    budget = Budget.from_spec(spec.budget, spec.generation.model)
    spent = store.spend_for_spec(spec.hash)
    budget.requests, budget.tokens, budget.usd = spent["requests"], spent["tokens"], spent["usd"]
    items = list(plan(spec, attrs, fewshot_examples(spec)))
    gen = spec.generation
    async with open_engine(gen, store, endpoint, budget) as engine:
        engine.prefetch(make_request(spec, i.messages, i.seed, i.first_index,
                                     min(gen.n, spec.budget.samples_per_class - i.first_index)).key
                        for i in items if i.length == 1 and gen.method != "zeroshot")
        with EngineProgress(engine.stats, report.requested, enabled=show_progress) as progress:
            generator = Generator(spec, run_id, engine, engine.writer, report, progress.advance)
            await engine.map(generator.job(item) for item in items)
    stats = engine.stats
    report.sent, report.cached, report.failed = stats.sent, stats.cached, stats.failed
    report.tokens, report.usd, report.stopped = stats.tokens, stats.usd, budget.stopped
    return report


def generate(spec: Spec, store: Store, run_id: str, attrs: AttributeSet, endpoint: Endpoint,
             show_progress: bool = False) -> GenerationReport:
    return asyncio.run(generate_async(spec, store, run_id, attrs, endpoint, show_progress))
