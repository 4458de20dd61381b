"""Which endpoint a spec talks to: its own ``base_url``, ``$OPENAI_BASE_URL``, or the embedded server.

The API key is read from the environment variable the spec *names* (``api_key_env``); it lives only in
this process's memory, never in the store, the logs or the UI.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import openai

from factory.llm.budget import Budget
from factory.llm.engine import Engine, RequestWriter
from factory.llm.server import local_server
from factory.spec import GenerationSpec
from factory.store import Store


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str = field(repr=False)
    local: bool = False


@contextmanager
def open_endpoint(gen: GenerationSpec) -> Iterator[Endpoint]:
    """The spec's endpoint; when none is configured, a local llama-server for the run's duration."""
    url = gen.resolved_base_url()
    if url:
        yield Endpoint(url, os.environ.get(gen.api_key_env) or "none")
        return
    with local_server(alias=gen.model) as server:
        yield Endpoint(server.base_url, "none", local=True)


@asynccontextmanager
async def open_engine(gen: GenerationSpec, store: Store, endpoint: Endpoint, budget: Budget) -> AsyncIterator[Engine]:
    """An engine on ``endpoint`` whose completions are written to ``store``; flushed and closed on exit."""
    client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key)
    try:
        async with RequestWriter(store) as writer:
            yield Engine(client, store, writer, budget, gen.max_concurrency, gen.timeout_s, gen.max_retries)
    finally:
        await client.close()
