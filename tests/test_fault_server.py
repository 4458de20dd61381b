"""Tests of the fault-injecting OpenAI-protocol server, driven by the real ``openai`` client."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

try:
    from tests.fault_server import FaultServer, expected_content, request_key, spawn
except ImportError:  # tests/ is not a package: pytest puts this directory on sys.path
    from fault_server import FaultServer, expected_content, request_key, spawn  # type: ignore[no-redef]

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say three words"}]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(seed=1) as srv:
        yield srv


def client(srv: FaultServer | str, **kw: Any) -> openai.AsyncOpenAI:
    base_url = srv if isinstance(srv, str) else srv.base_url
    return openai.AsyncOpenAI(base_url=base_url, api_key="test", **{"max_retries": 0, **kw})


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_clean_response_parses(server: FaultServer) -> None:
    async def go() -> Any:
        async with client(server) as c:
            models = await c.models.list()
            return models, await c.chat.completions.create(model="m1", messages=MESSAGES, n=3, seed=42)

    models, resp = asyncio.run(go())
    assert [m.id for m in models.data] == ["fault-model"]
    assert resp.object == "chat.completion" and resp.model == "m1" and resp.id.startswith("chatcmpl-")
    assert [ch.index for ch in resp.choices] == [0, 1, 2]
    contents = [ch.message.content for ch in resp.choices]
    assert contents == [expected_content(MESSAGES, 42, i) for i in range(3)]
    assert len(set(contents)) == 3 and all(len(c.split()) == 5 for c in contents)
    assert all(ch.finish_reason == "stop" and ch.message.role == "assistant" for ch in resp.choices)
    assert resp.usage is not None and resp.usage.completion_tokens == 15 and resp.usage.prompt_tokens == 5
    assert resp.usage.total_tokens == 20
    assert http(f"http://127.0.0.1:{server.port}/health") == (200, {"status": "ok"})
    assert expected_content(MESSAGES, 43, 0) != contents[0]


def test_429_raises_rate_limit_error_with_retry_after(server: FaultServer) -> None:
    server.configure(rate_429=1.0, retry_after_s="0.05")

    async def go() -> None:
        async with client(server) as c:
            await c.chat.completions.create(model="m", messages=MESSAGES)

    with pytest.raises(openai.RateLimitError) as info:
        asyncio.run(go())
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "0.05"
    assert info.value.code == "rate_limit_exceeded"
    stats = server.stats()
    assert stats["total"] == 1 and stats["fault_429"] == 1 and stats["successes"] == 0


def test_retries_are_counted_per_request_body(server: FaultServer) -> None:
    server.configure(rate_429=1.0, retry_after_s=0.01)
    params = {"model": "m", "messages": MESSAGES, "seed": 3}

    async def go(retries: int) -> Any:
        async with client(server, max_retries=retries) as c:
            return await c.chat.completions.create(**params)

    with pytest.raises(openai.RateLimitError):
        asyncio.run(go(2))
    key = request_key(params)
    assert server.stats()["sent_by_key"] == {key: 3}
    server.configure(rate_429=0.0)
    assert asyncio.run(go(0)).choices[0].message.content == expected_content(MESSAGES, 3, 0)
    asyncio.run(go(0))
    stats = server.stats()
    assert stats["sent_by_key"] == {key: 5} and stats["successes_by_key"] == {key: 2}
    assert stats["total"] == 5 and stats["successes"] == 2 and stats["fault_429"] == 3


def test_garbage_500_and_disconnect_make_the_client_raise(server: FaultServer) -> None:
    async def go() -> Any:
        async with client(server) as c:
            return await c.chat.completions.create(model="m", messages=MESSAGES)

    server.configure(rate_garbage=1.0)
    with pytest.raises(ValueError):  # json.JSONDecodeError from the truncated body
        asyncio.run(go())
    server.configure(rate_garbage=0.0, rate_500=1.0)
    with pytest.raises(openai.InternalServerError):
        asyncio.run(go())
    server.configure(rate_500=0.0, rate_disconnect=1.0)
    with pytest.raises(openai.APIConnectionError):
        asyncio.run(go())
    stats = server.stats(keys=False)
    assert (stats["fault_garbage"], stats["fault_500"], stats["fault_disconnect"]) == (1, 1, 1)
    assert stats["successes"] == 0 and "sent_by_key" not in stats


def test_max_concurrency_latency_and_slow(server: FaultServer) -> None:
    server.configure(latency_s=0.2, max_concurrency=2)

    async def go() -> list[Any]:
        async with client(server) as c:
            calls = [c.chat.completions.create(model="m", messages=MESSAGES, seed=i) for i in range(5)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(go())
    # 2 held by the latency while the other 3 arrived: only the latency can make those overload
    assert sum(isinstance(r, openai.RateLimitError) for r in results) == 3
    stats = server.stats()
    assert stats["fault_overload"] == 3 and stats["successes"] == 2 and stats["max_in_flight"] == 2
    assert stats["in_flight"] == 0


def test_slow_reply_is_overtaken_by_a_later_fast_one(server: FaultServer) -> None:
    server.configure(rate_slow=1.0, slow_s=5.0)
    order: list[str] = []

    async def call(c: openai.AsyncOpenAI, name: str) -> None:
        await c.chat.completions.create(model="m", messages=MESSAGES, seed=len(order))
        order.append(name)

    async def go() -> None:
        async with client(server) as c:
            slow = asyncio.create_task(call(c, "slow"))
            while server.stats(keys=False)["in_flight"] == 0:  # the slow one is being held
                await asyncio.sleep(0.005)
            server.configure(rate_slow=0.0)
            await call(c, "fast")
            assert order == ["fast"] and not slow.done()
            slow.cancel()

    asyncio.run(go())
    stats = server.stats(keys=False)
    assert stats["fault_slow"] == 1 and stats["total"] == 2 and stats["successes"] == 1


def test_seeded_faults_are_reproducible() -> None:
    async def pattern(srv: FaultServer) -> list[str]:
        async with client(srv) as c:
            out = []
            for i in range(30):
                try:
                    await c.chat.completions.create(model="m", messages=MESSAGES, seed=i)
                    out.append("ok")
                except openai.APIStatusError as err:
                    out.append(str(err.status_code))
            return out

    runs = []
    for _ in range(2):
        with FaultServer(seed=7, rate_429=0.3, rate_500=0.2) as srv:
            runs.append(asyncio.run(pattern(srv)))
    assert runs[0] == runs[1] and {"ok", "429", "500"} <= set(runs[0])


def test_http_control_and_separate_process() -> None:
    with spawn(latency_s=0.0, model="proc-model") as base_url:
        root = base_url.removesuffix("/v1")
        assert http(root + "/_control", {"no_such_key": 1})[0] == 400
        status, config = http(root + "/_control", {"rate_429": "1", "retry_after_s": 0.5})
        assert status == 200 and config["rate_429"] == 1.0 and config["model"] == "proc-model"

        async def go() -> Any:
            async with client(base_url) as c:
                return await c.chat.completions.create(model="m", messages=MESSAGES)

        with pytest.raises(openai.RateLimitError) as info:
            asyncio.run(go())
        assert info.value.response.headers["retry-after"] == "0.5"
        http(root + "/_control", {"rate_429": 0, "reset_stats": True})
        assert asyncio.run(go()).choices[0].message.content == expected_content(MESSAGES, None, 0)
        status, stats = http(root + "/_stats")
        assert status == 200 and stats["total"] == 1 and stats["successes"] == 1
        assert list(stats["successes_by_key"].values()) == [1]
