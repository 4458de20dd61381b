"""The generation run: drives the plan through the engine and writes every sample with its full
provenance; resumable (the request cache) and within the budget. The run row says how it ended."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice

from factory.generation.llm.budget import Budget
from factory.generation.llm.client import Endpoint, EndpointProvider, open_engine
from factory.generation.llm.engine import Completion, Engine, LLMRequest, RequestWriter, digest
from factory.generation.plan import Plan, Planned, make_request, request_seed
from factory.generation.progress import EngineProgress
from factory.generation.prompts import PromptRenderer
from factory.quality.refusal import is_refusal
from factory.spec import Spec
from factory.store import SampleRecord, Store
from factory.store.housekeeping import maybe_compact

PREFETCH_CHUNK = 2000  # cache lookups per query while streaming the plan
FIRST_CHUNK = 64  # the first chunk is small, so the first requests go out before the rest is rendered


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


class Generator:
    """Runs the planned work of one spec through the engine and writes samples with full provenance."""

    def __init__(self, spec: Spec, run_id: str, engine: Engine, writer: RequestWriter, report: GenerationReport,
                 on_sample: Callable[[int], None] = lambda n: None):
        self.spec, self.run_id, self.engine, self.writer = spec, run_id, engine, writer
        self.report = report
        self.spec_hash = spec.hash  # computed from the whole spec on each access: once a run, not twice a sample
        self.renderer = PromptRenderer(spec)
        self.on_sample = on_sample

    def _samples(self, item: Planned, request: LLMRequest, done: Completion, index: int) -> None:
        n = len(done.choices)
        when = datetime.now(timezone.utc)
        for choice, text in enumerate(done.choices):
            refusal = is_refusal(text)
            self.report.refusals += refusal
            self.writer.put(SampleRecord(
                sample_id=digest([self.spec_hash, request.key, choice])[:24], spec_hash=self.spec_hash,
                run_id=self.run_id, class_=item.class_name, text=text,
                attributes=json.dumps(item.attributes, sort_keys=True), seed=item.seed, sample_index=index + choice,
                choice_index=choice, method=self.spec.generation.method, prompt_hash=request.prompt_hash,
                request_key=request.key, model=request.model, params=json.dumps(request.params, sort_keys=True),
                prompt_tokens=done.prompt_tokens // n, completion_tokens=done.completion_tokens // n,
                cost_usd=done.cost_usd / n, is_refusal=refusal, generated_at=when))
        self.report.samples += n
        self.report.new_samples += 0 if done.cached else n
        self.on_sample(n)

    def single(self, item: Planned, request: LLMRequest) -> Callable[[], Awaitable[None]]:
        """A unit's one request (the plan's, built once for its chunk's cache lookup and for sending)."""
        async def send() -> None:
            self._samples(item, request, await self.engine.complete(request), item.first_index)

        return send

    def conversation(self, item: Planned) -> Callable[[], Awaitable[None]]:
        """A unit's conversation: each turn's request follows from the answers before it."""
        async def converse() -> None:
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

        return converse


@dataclass
class RunResult:
    run_id: str
    status: str
    report: GenerationReport


def _jobs(plan: Plan, engine: Engine, generator: Generator) -> Iterator[Callable[[], Awaitable[None]]]:
    """The plan's jobs, streamed: each chunk's cached completions are fetched in one query first (the requests
    built for it are the ones the jobs send). Chunks double from ``FIRST_CHUNK`` to ``PREFETCH_CHUNK`` units."""
    units, size = iter(plan), FIRST_CHUNK
    while chunk := list(islice(units, size)):
        if plan.method.conversational:
            yield from (generator.conversation(u) for u in chunk)
        else:
            requests = [plan.request(u) for u in chunk]
            engine.prefetch(r.key for r in requests)
            yield from (generator.single(u, r) for u, r in zip(chunk, requests))
        size = min(PREFETCH_CHUNK, 2 * size)


async def generate_async(plan: Plan, store: Store, run_id: str, endpoint: Endpoint,
                         show_progress: bool = False) -> GenerationReport:
    """Generate the plan's samples through ``endpoint``; resumable and within the budget."""
    spec = plan.spec
    report = GenerationReport(requested=plan.samples)
    budget = Budget.from_spec(spec.budget, spec.generation.model, store.spend_for_spec(spec.hash))
    async with open_engine(spec.generation, store, endpoint, budget) as engine:
        with EngineProgress(engine.stats, report.requested, enabled=show_progress) as progress:
            generator = Generator(spec, run_id, engine, engine.writer, report, progress.advance)
            await engine.map(_jobs(plan, engine, generator))
    stats = engine.stats
    report.sent, report.cached, report.failed = stats.sent, stats.cached, stats.failed
    report.tokens, report.usd, report.stopped = stats.tokens, stats.usd, budget.stopped
    return report


def generation_stage(plan: Plan, store: Store, endpoints: EndpointProvider, show_progress: bool = False
                     ) -> RunResult:
    """Generate into a new run; the run row says how it ended (done, budget_stopped or failed)."""
    spec = plan.spec
    run_id = store.start_run(spec)
    try:
        endpoint = endpoints.endpoint(spec.generation)
        report = asyncio.run(generate_async(plan, store, run_id, endpoint, show_progress))
    except BaseException as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    status = "budget_stopped" if report.stopped else "done"
    shard = f"shard {plan.shard + 1} of {plan.shards}" if plan.shards > 1 else ""
    store.finish_run(run_id, status, "; ".join(filter(None, [shard, report.stopped or ""])),
                     version=plan.shards == 1, cached=report.cached)
    maybe_compact(store)  # a long top-up schedule must not grow the store's files without bound
    return RunResult(run_id, status, report)
