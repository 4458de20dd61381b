"""The engine's HTTP client (factory.generation.llm.http) against the fault server: the exact request body and
key, and every failure raised as the openai package's own exception, as the engine's retries expect."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from factory.generation.llm.http import ChatClient, MalformedResponse
from fault_server import FaultServer, expected_content, request_key

MESSAGES = [{"role": "user", "content": "Write a headline about \"rain\" in Zürich {x}."}]
PARAMS = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "seed": 11}


def ask(base_url: str, timeout_s: float = 10.0, key: str = "sk-test") -> Any:
    async def go() -> Any:
        client = ChatClient(base_url, key, timeout_s)
        try:
            return await client.create("fault-model", MESSAGES, PARAMS)
        finally:
            await client.close()

    return asyncio.run(go())


def raised(call: Callable[[], Awaitable[Any]] | Callable[[], Any]) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def _closed_port() -> int:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sends_the_exact_body_with_the_bearer_key() -> None:
    with FaultServer() as server:
        completion = ask(server.base_url)
        stats = server.stats()
    body = {"model": "fault-model", "messages": MESSAGES, **PARAMS}
    assert stats["sent_by_key"] == {request_key(body): 1}
    assert stats["sent_by_authorization"] == {"Bearer sk-test": 1}
    assert completion["choices"][0]["message"]["content"] == expected_content(MESSAGES, 11, 0)
    assert completion["usage"]["completion_tokens"] > 0
    assert "sk-test" not in repr(ChatClient(server.base_url, "sk-test"))


def test_a_429_is_a_rate_limit_error_carrying_retry_after() -> None:
    with FaultServer(rate_429=1.0, retry_after_s="0.25") as server:
        exc = raised(lambda: ask(server.base_url))
    assert isinstance(exc, openai.RateLimitError)
    assert exc.status_code == 429 and exc.response.headers.get("retry-after") == "0.25"
    assert "injected rate limit" in exc.message and exc.body["type"] == "rate_limit_exceeded"


def test_server_errors_bad_paths_and_bodies_map_to_the_openai_exceptions() -> None:
    with FaultServer(rate_500=1.0) as server:
        assert isinstance(raised(lambda: ask(server.base_url)), openai.InternalServerError)
    with FaultServer() as server:
        missing = raised(lambda: ask(server.base_url.replace("/v1", "/v9")))
    assert isinstance(missing, openai.NotFoundError) and "no route" in missing.message
    with FaultServer(rate_garbage=1.0) as server:
        assert isinstance(raised(lambda: ask(server.base_url)), MalformedResponse)


def test_timeouts_and_dropped_or_refused_connections() -> None:
    with FaultServer(latency_s=2.0) as server:
        assert isinstance(raised(lambda: ask(server.base_url, timeout_s=0.2)), openai.APITimeoutError)
    with FaultServer(rate_disconnect=1.0) as server:
        dropped = raised(lambda: ask(server.base_url))
    assert isinstance(dropped, openai.APIConnectionError) and not isinstance(dropped, openai.APITimeoutError)
    assert isinstance(raised(lambda: ask(f"http://127.0.0.1:{_closed_port()}/v1")), openai.APIConnectionError)


def test_the_environment_proxy_is_used_unless_no_proxy_exempts_the_host(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    """HTTP_PROXY routes the requests through the proxy (the fault server answers as one) with the bearer key
    intact, even where ~/.netrc has a login for the host; NO_PROXY sends them straight to the host."""
    endpoint = f"127.0.0.1:{_closed_port()}"  # only reachable through the proxy
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login someone password netrc-secret\n")
    tmp_path.joinpath(".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FaultServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.host}:{proxy.port}")
        completion = ask(f"http://{endpoint}/v1")
        stats = proxy.stats()
        assert completion["choices"][0]["message"]["content"] == expected_content(MESSAGES, 11, 0)
        assert stats["proxied_by_host"] == {endpoint: 1}
        assert stats["sent_by_authorization"] == {"Bearer sk-test": 1}
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert isinstance(raised(lambda: ask(f"http://{endpoint}/v1")), openai.APIConnectionError)
        assert proxy.stats()["proxied_by_host"] == {endpoint: 1}
