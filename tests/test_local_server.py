"""The embedded llama-server reads every client connection's request, whatever the client's connection reuse:
with llama-server's default HTTP threads (slots + 2), an ``AsyncOpenAI`` loop at concurrency 32 against 4 slots
left requests unread on their keep-alive connections until the end of the job in one run of two (8 slots:
the benchmark's bare loop timed out after 120 s)."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

CONCURRENCY, REQUESTS = 32, 128


async def _latencies(base_url: str, model: str) -> tuple[list[float], float]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600.0)
    sem = asyncio.Semaphore(CONCURRENCY)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            started = time.perf_counter()
            await client.chat.completions.create(model=model, max_tokens=8, seed=i, messages=[
                {"role": "user", "content": f"Name a colour. ({i})"}])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    finally:
        await client.close()
    return latencies, time.perf_counter() - started


@pytest.mark.llm
def test_no_request_waits_unread_for_most_of_the_job(llm_server) -> None:
    latencies, wall = asyncio.run(_latencies(llm_server.base_url, llm_server.model))
    assert len(latencies) == REQUESTS
    # Served in arrival order, a request waits for about CONCURRENCY / slots requests' time: about a quarter of
    # the job here (0.27-0.29 measured). An unread one waits until the end of the job (1.00).
    assert max(latencies) < 0.6 * wall, (f"a request took {max(latencies):.1f} s of a {wall:.1f} s job "
                                         f"(median {sorted(latencies)[REQUESTS // 2]:.1f} s)")
