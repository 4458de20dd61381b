"""The generation engine: any OpenAI-compatible endpoint, adaptive concurrency, retries, cache, budget.

Every request has a content-hash key (model, messages, parameters, seed, sample index). Completed
requests are written to DuckDB as they complete, so the cache *is* the resume mechanism: a rerun, or a run
after ``kill -9``, sends only what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from factory.generation.llm.budget import Budget, BudgetExhausted, cost_usd
from factory.generation.llm.http import ChatClient, MalformedResponse
from factory.keys import digest
from factory.store import CachedRequest, PromptRecord, Record, RequestRecord, Store

Message = dict[str, str]
OVERLOAD = (openai.RateLimitError, openai.APITimeoutError)
FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
MAX_LINGER_S = 0.1  # the longest a completion waits to be journaled (what a crash can cost again)


class FatalEndpointError(RuntimeError):
    """An error no retry can fix (bad key, unknown model): the run stops."""


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters a token), for budgets before a request is sent."""
    return len(text) // 4 + 1


@dataclass(frozen=True)
class LLMRequest:
    """One chat-completion request; ``key`` identifies it across runs."""

    messages: list[Message]
    model: str
    params: dict[str, Any]
    sample_index: int = 0
    purpose: str = "generate"

    @cached_property  # the engine reads both several times a request; the messages and params never change
    def prompt_hash(self) -> str:
        return digest(self.messages)[:24]

    @cached_property
    def key(self) -> str:
        return digest({"model": self.model, "messages": self.messages, "params": self.params,
                       "sample_index": self.sample_index})[:32]

    @property
    def n(self) -> int:
        return int(self.params.get("n", 1))

    def prompt_tokens_estimate(self) -> int:
        return sum(estimate_tokens(m["content"]) + 4 for m in self.messages)


class _FirstSendFailed(Exception):
    """The first send of a key failed; requests of the same key that waited for it send themselves."""


@dataclass(frozen=True)
class Completion:
    key: str
    choices: list[str]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool


@dataclass
class EngineStats:
    """Live counters, read by the progress bar."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    cached: int = 0
    done: int = 0
    failed: int = 0
    retries: int = 0
    overloads: int = 0
    tokens: int = 0
    usd: float = 0.0

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)


class AdaptiveLimiter:
    """Concurrency that grows while latency holds (or throughput still rises) and halves on overload.

    Like TCP: the limit starts at ``start`` (32, what a plain semaphore loop sends at once: a lower start left
    a local server's queue empty for the first windows, a third of a 48-request job) and doubles after each
    window of ``limit`` successes (slow start)
    until the first window in which latency no longer holds and throughput no longer rises, or the first
    overload; from then on it grows by a quarter per window whose mean latency is within ``tolerance`` x the
    best window seen, or whose throughput beat the previous window by 5% or more. A 429 or a timeout halves
    it, once per generation of sends (``cuts``): a request sent before the last cut was sent under the old
    limit, and its overload does not cut again (TCP's one cut per round trip).
    """

    def __init__(self, maximum: int, start: int = 32, tolerance: float = 1.5):
        self.maximum = maximum
        self.limit = min(start, maximum)
        self.tolerance = tolerance
        self.in_flight = 0
        self.slow_start = True
        self._cond = asyncio.Condition()
        self._window: list[float] = []
        self._window_started = time.monotonic()
        self._best_latency = float("inf")
        self._last_rate = 0.0
        self.cuts = 0  # how many times the limit was halved; a send remembers the count it was sent under

    async def __aenter__(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def on_success(self, latency: float) -> None:
        self._window.append(latency)
        if len(self._window) < max(self.limit, 4):
            return
        elapsed = max(time.monotonic() - self._window_started, 1e-9)
        mean, rate = sum(self._window) / len(self._window), len(self._window) / elapsed
        holds = mean <= self.tolerance * self._best_latency
        self._best_latency = min(self._best_latency, mean)
        if holds or rate >= 1.05 * self._last_rate:
            step = self.limit if self.slow_start else max(1, self.limit // 4)
            self.limit = min(self.maximum, self.limit + step)
        else:
            self.slow_start = False
        self._last_rate = rate
        self._window, self._window_started = [], time.monotonic()

    def on_overload(self, sent_after: int) -> None:
        """An overload of a request sent after ``sent_after`` cuts."""
        self.slow_start = False
        if sent_after == self.cuts:
            self.limit = max(1, self.limit // 2)
            self.cuts += 1
            self._best_latency = float("inf")
        self._window, self._window_started = [], time.monotonic()


class RequestWriter:
    """Journals completed requests and their samples in a background thread. Each append takes whatever
    completed while the previous one ran, plus a linger after its first row: 10 ms for the first append,
    doubling with each one up to ``max_linger_s`` (0.1 s). A short run's rows are durable at once; a long run
    pays one fsync'd append (~0.5 ms of CPU) per tenth of a second, not one per completion. Closing flushes
    at once."""

    def __init__(self, store: Store, linger_s: float = 0.01, max_linger_s: float = MAX_LINGER_S):
        self.store = store
        self.linger_s = linger_s
        self.max_linger_s = max(linger_s, max_linger_s)
        self.queue: asyncio.Queue[Record] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.written = 0
        self.on_written: Callable[[list[Record]], None] | None = None  # told of each batch once it is durable
        self._closing = asyncio.Event()

    def put(self, record: Record) -> None:
        self.queue.put_nowait(record)

    async def _loop(self) -> None:
        linger = self.linger_s
        while True:
            batch = [await self.queue.get()]
            if not self._closing.is_set():  # let more completions join this transaction
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), linger)
            linger = min(self.max_linger_s, 2 * linger)
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            await self._flush(batch)

    async def _flush(self, batch: list[Record]) -> None:
        await asyncio.to_thread(self.store.save_completions, batch)
        self.written += len(batch)
        if self.on_written is not None:
            self.on_written(batch)
        for _ in batch:
            self.queue.task_done()

    async def __aenter__(self) -> RequestWriter:
        self.task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Wait until everything queued is written; a write that failed is raised here, not lost in the task."""
        self._closing.set()
        joined = asyncio.ensure_future(self.queue.join())
        try:
            if self.task is not None:
                await asyncio.wait({joined, self.task}, return_when=asyncio.FIRST_COMPLETED)
                if self.task.done() and not self.task.cancelled() and self.task.exception() is not None:
                    raise self.task.exception()  # type: ignore[misc]
            await joined
        finally:
            joined.cancel()
            if self.task:
                self.task.cancel()


class Engine:
    """Sends chat-completion requests through a :class:`ChatClient`, never paying twice for one key."""

    def __init__(self, client: ChatClient, store: Store, writer: RequestWriter, budget: Budget,
                 max_concurrency: int = 64, max_retries: int = 6):
        self.client = client
        self.store = store
        self.writer = writer
        self.budget = budget
        self.limiter = AdaptiveLimiter(max_concurrency)
        self.max_retries = max_retries
        self.stats = EngineStats()
        self._cache: dict[str, CachedRequest] = {}
        self._prefetched: set[str] = set()
        # requests sent by this engine whose completion is not durable yet (or still in flight): a second
        # request of the same key waits for the first instead of paying again
        self._unsettled: dict[str, asyncio.Future[Completion]] = {}
        writer.on_written = self._persisted

    def prefetch(self, keys: Iterable[str]) -> int:
        """Load the cached completions among ``keys`` in one query; return how many were found."""
        keys = list(keys)
        self._cache.update(self.store.cached_requests(keys))
        self._prefetched.update(keys)
        return sum(k in self._cache for k in keys)

    def _cached(self, key: str) -> CachedRequest | None:
        """The cached completion of ``key`` (prefetched, else one lookup); each is handed out once, so the
        engine holds no more than the prefetched chunk in memory."""
        if key in self._prefetched:
            self._prefetched.discard(key)
            return self._cache.pop(key, None)
        return self._cache.pop(key, None) or self.store.cached_requests([key]).get(key)

    def _persisted(self, batch: list[Record]) -> None:
        for record in batch:
            if isinstance(record, RequestRecord):
                self._unsettled.pop(record.request_key, None)

    async def complete(self, request: LLMRequest) -> Completion:
        """The completion of ``request``: from the cache, or sent within the budget (may raise
        :class:`BudgetExhausted` or :class:`FatalEndpointError`)."""
        key = request.key
        first = self._unsettled.get(key)
        if first is not None:
            try:
                done = await asyncio.shield(first)
                self.stats.cached += 1
                return Completion(key, done.choices, done.prompt_tokens, done.completion_tokens, done.cost_usd, True)
            except _FirstSendFailed:
                pass  # the first sender failed: this one tries itself
        hit = self._cached(key)
        if hit is not None:
            self.stats.cached += 1
            return Completion(key, hit.choices, hit.prompt_tokens, hit.completion_tokens, hit.cost_usd, True)
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._unsettled[key] = future
        try:
            completion = await self._send(request)
        except BaseException:
            self._unsettled.pop(key, None)
            future.set_exception(_FirstSendFailed())
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        future.set_result(completion)
        return completion

    async def _send(self, request: LLMRequest) -> Completion:
        """Send ``request`` within the budget and count it."""
        reservation = self.budget.reserve(request.prompt_tokens_estimate(),
                                          request.n * int(request.params.get("max_tokens", 256)))
        try:
            completion = await self._send_with_retries(request)
        except BaseException:
            self.budget.settle(reservation, None, None)
            self.stats.failed += 1
            raise
        self.budget.settle(reservation, completion.prompt_tokens + completion.completion_tokens,
                           completion.cost_usd)
        self.stats.done += 1
        self.stats.tokens += completion.prompt_tokens + completion.completion_tokens
        self.stats.usd += completion.cost_usd
        return completion

    async def _send_with_retries(self, request: LLMRequest) -> Completion:
        retrying = AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1), wait=self._wait,
                                 retry=retry_if_exception(_retryable), reraise=True)
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        self.stats.retries += 1
                    async with self.limiter:
                        return await self._send_once(request, attempts)
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise FatalEndpointError(f"cannot reach {self.client.base_url} after {attempts} attempts: "
                                     f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    async def _send_once(self, request: LLMRequest, attempts: int) -> Completion:
        started, cuts = time.monotonic(), self.limiter.cuts
        self.stats.sent += 1
        try:
            response = await self.client.create(request.model, request.messages, request.params)
            choices, finish = _parse_choices(response)
        except OVERLOAD:
            self.stats.overloads += 1
            self.limiter.on_overload(cuts)
            raise
        except FATAL as exc:
            raise FatalEndpointError(f"{type(exc).__name__}: {exc.message}") from None
        latency = time.monotonic() - started
        self.limiter.on_success(latency)
        usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
        prompt_tokens = usage.get("prompt_tokens") or request.prompt_tokens_estimate()
        completion_tokens = _completion_tokens(usage, choices)
        usd = cost_usd(self.budget.price, prompt_tokens, completion_tokens)
        self.writer.put(PromptRecord(prompt_hash=request.prompt_hash, method=request.purpose,
                                     messages=json.dumps(request.messages)))
        self.writer.put(RequestRecord(
            request_key=request.key, model=request.model, params=json.dumps(request.params, sort_keys=True),
            prompt_hash=request.prompt_hash, purpose=request.purpose, choices=json.dumps(choices),
            finish_reasons=json.dumps(finish), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            cost_usd=usd, latency_s=latency, attempts=attempts))
        return Completion(request.key, choices, prompt_tokens, completion_tokens, usd, False)

    @staticmethod
    def _wait(state: Any) -> float:
        """Honour ``Retry-After``; otherwise exponential backoff (0.25 s doubling, at most 30 s) with jitter."""
        exc = state.outcome.exception() if state.outcome else None
        response = getattr(exc, "response", None)
        header = response.headers.get("retry-after") if response is not None else None
        if header:
            try:
                return min(float(header), 60.0) + random.uniform(0, 0.05)
            except ValueError:
                pass
        return min(30.0, 0.25 * 2 ** (state.attempt_number - 1)) * random.uniform(0.5, 1.0)

    async def map(self, jobs: Iterable[Callable[[], Awaitable[None]]]) -> None:
        """Run jobs (each awaiting :meth:`complete` one or more times), keeping the limiter busy while never
        holding more than twice its limit of jobs in memory. Stops cleanly at the budget."""
        pending: set[asyncio.Task[None]] = set()
        iterator = iter(jobs)
        exhausted = False
        try:
            while True:
                while not exhausted and not self.budget.stopped and len(pending) < 2 * self.limiter.limit + 8:
                    job = next(iterator, None)
                    if job is None:
                        exhausted = True
                        break
                    pending.add(asyncio.create_task(job()))
                if not pending:
                    return
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if isinstance(exc, BudgetExhausted):
                        continue
                    if exc is not None:
                        raise exc
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
                        openai.InternalServerError, MalformedResponse)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code in (408, 409, 425, 429) or (
        isinstance(exc, openai.APIStatusError) and exc.status_code >= 500)


def _parse_choices(response: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """The text and the finish reason of each choice, in index order (a body without texts is malformed, so
    retried)."""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        raise MalformedResponse(f"no choices in response: {str(response)[:200]}")
    texts, finish = [], []
    for choice in sorted(choices, key=lambda c: c.get("index") if isinstance(c.get("index"), int) else 0):
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise MalformedResponse("a choice has no text content")
        texts.append(content.strip())
        finish.append(choice.get("finish_reason"))
    return texts, finish


def _completion_tokens(usage: dict[str, Any], choices: list[str]) -> int:
    """Completion tokens as reported; with n > 1 never less than a per-choice estimate, since some
    servers (llama.cpp) report one choice only."""
    reported = usage.get("completion_tokens") or 0
    estimated = sum(estimate_tokens(c) for c in choices)
    if not reported:
        return estimated
    return max(reported, estimated) if len(choices) > 1 else reported

