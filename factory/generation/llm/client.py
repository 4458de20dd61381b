"""Which endpoint a spec talks to: its own ``base_url``, the deployment's (``$OPENAI_BASE_URL``), or the
embedded offline server, started once on first use and stopped when the provider closes.

The API key is read from the environment variable the spec *names* (``api_key_env``) when an endpoint is
handed out; it lives only in this process's memory, never in the store, the logs or the UI.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from factory.generation.llm.budget import Budget
from factory.generation.llm.engine import Engine, RequestWriter
from factory.generation.llm.http import ChatClient
from factory.generation.llm.server import local_server
from factory.spec import GenerationSpec
from factory.store import Store


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str = field(repr=False)
    local: bool = False


class EndpointProvider:
    """Hands out endpoints for generation settings. ``base_url`` (default ``$OPENAI_BASE_URL``) is the
    deployment's endpoint, used where a spec names none; without either, the embedded server is started on
    first use (once per model alias) and kept until :meth:`close`."""

    def __init__(self, base_url: str | None = None, parallel: int = 4):
        self.base_url = base_url if base_url is not None else os.environ.get("OPENAI_BASE_URL") or None
        self.parallel = parallel
        self._servers: dict[str, str] = {}
        self._stack = ExitStack()

    def endpoint(self, gen: GenerationSpec) -> Endpoint:
        url = gen.base_url or self.base_url
        if url:
            return Endpoint(url, os.environ.get(gen.api_key_env) or "none")
        if gen.model not in self._servers:
            server = self._stack.enter_context(local_server(alias=gen.model, parallel=self.parallel))
            self._servers[gen.model] = server.base_url
        return Endpoint(self._servers[gen.model], "none", local=True)

    def close(self) -> None:
        self._stack.close()
        self._servers.clear()

    def __enter__(self) -> EndpointProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def open_endpoint(gen: GenerationSpec) -> Iterator[Endpoint]:
    """One endpoint for ``gen``, for as long as the block runs (a local server is stopped after it)."""
    with EndpointProvider() as provider:
        yield provider.endpoint(gen)


@asynccontextmanager
async def open_engine(gen: GenerationSpec, store: Store, endpoint: Endpoint, budget: Budget) -> AsyncIterator[Engine]:
    """An engine on ``endpoint`` whose completions are written to ``store``; flushed and closed on exit."""
    client = ChatClient(endpoint.base_url, endpoint.api_key, gen.timeout_s)
    try:
        async with RequestWriter(store) as writer:
            yield Engine(client, store, writer, budget, gen.max_concurrency, gen.max_retries)
    finally:
        await client.close()
