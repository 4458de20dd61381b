#!/usr/bin/env python
"""Fault-injecting OpenAI-protocol chat-completions server, for tests and benchmarks.

Only for what a real server cannot do on demand (429/500/garbage/slow/dropped replies,
concurrency limits) and as an instant responder. Plain asyncio with a minimal HTTP/1.1
parser (keep-alive, Content-Length bodies): with uvloop (used by the CLI when installed) it
answers ~18-21k req per CPU-second vs ~14k for a trivial starlette+uvicorn app. Endpoints: ``GET /v1/models``, ``GET /health``,
``POST /v1/chat/completions`` (non-streaming), ``POST /_control``, ``GET /_stats``; the same in absolute form
(``POST http://HOST/v1/...``), as an HTTP forward proxy receives them, counted per host.

    with FaultServer(rate_429=0.2, retry_after_s=0.05) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="x")
    python tests/fault_server.py --port 0 --latency 0    # prints the port, serves until killed
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}
Reply = tuple[int, str, bytes] | None  # (status, extra header lines, body); None = drop the connection


@dataclasses.dataclass
class FaultConfig:
    """Fault probabilities (each drawn from a seeded RNG, per request) and behaviours."""

    rate_429: float = 0.0  # answered at once with 429 + Retry-After
    retry_after_s: float | str | None = "0.05"  # Retry-After value; None leaves the header out
    rate_500: float = 0.0  # 500 after the base latency
    rate_garbage: float = 0.0  # 200 with a truncated JSON body
    rate_disconnect: float = 0.0  # connection closed without any reply
    rate_slow: float = 0.0  # extra sleep of slow_s before answering
    slow_s: float = 1.0
    latency_s: float = 0.0  # base latency of every chat completion
    latency_jitter_s: float = 0.0  # plus uniform(0, latency_jitter_s)
    max_concurrency: int = 0  # >0: 429 while that many chat requests are already in flight
    seed: int = 0  # RNG seed (setting it reseeds)
    model: str = "fault-model"


def canonical(obj: Any) -> bytes:
    """Canonical JSON encoding (sorted keys, no spaces) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def request_key(body: dict[str, Any]) -> str:
    """Key of ``sent_by_key``/``successes_by_key``: sha256 hex of the canonical request body."""
    return hashlib.sha256(canonical(body)).hexdigest()


def expected_content(messages: list[Any], seed: int | None = None, index: int = 0) -> str:
    """The deterministic assistant content for these messages, request seed and choice index."""
    digest = hashlib.sha256(canonical([messages, seed, index])).digest()
    return " ".join(WORDS[b % len(WORDS)] for b in digest[:4]) + f" [{digest[4:10].hex()}]"


def _error(message: str, kind: str, code: str | None) -> bytes:
    return canonical({"error": {"message": message, "type": kind, "param": None, "code": code}})


class FaultServer:
    """The server. As a context manager it runs in a background thread with its own loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        self.host, self.port = host, port
        self.config = FaultConfig()
        self._rng = random.Random(0)
        self._stats: dict[str, Any] = {}
        self._in_flight = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._apply({"seed": 0, **config, "reset_stats": True})

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    # ---- configuration and statistics (run on the loop's thread) ----
    def _apply(self, changes: dict[str, Any]) -> dict[str, Any]:
        names = {f.name: f for f in dataclasses.fields(FaultConfig)}
        unknown = set(changes) - set(names) - {"reset_stats"}
        if unknown:
            raise ValueError(f"unknown control keys: {sorted(unknown)}")
        coerce = {name: type(f.default) for name, f in names.items() if type(f.default) in (int, float)}
        values = {k: coerce[k](v) if k in coerce and v is not None else v for k, v in changes.items() if k in names}
        for name, value in values.items():  # all coerced first, so a bad value changes nothing
            setattr(self.config, name, value)
        if "seed" in changes:
            self._rng.seed(self.config.seed)
        if changes.get("reset_stats"):
            self._stats = {k: 0 for k in ("total", "successes", "fault_429", "fault_500", "fault_garbage",
                                          "fault_disconnect", "fault_slow", "fault_overload", "bad_request",
                                          "max_in_flight")}
            self._stats.update(sent_by_key={}, successes_by_key={}, sent_by_authorization={}, proxied_by_host={})
        return dataclasses.asdict(self.config)

    def _snapshot(self, keys: bool = True) -> dict[str, Any]:
        snap = {k: dict(v) if isinstance(v, dict) else v for k, v in self._stats.items() if keys or "_by_" not in k}
        snap["in_flight"] = self._in_flight
        return snap

    def _on_loop(self, fn: Any, *args: Any) -> Any:
        if self._loop is None or not self._loop.is_running():
            return fn(*args)

        async def call() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change FaultConfig fields at runtime (``reset_stats=True`` clears counters); returns the config."""
        return self._on_loop(self._apply, changes)

    def reset_stats(self) -> None:
        """Clear all counters."""
        self.configure(reset_stats=True)

    def stats(self, keys: bool = True) -> dict[str, Any]:
        """Counters: total, successes, fault_* per kind, in_flight, max_in_flight, bad_request and
        (unless ``keys=False``) ``sent_by_key``/``successes_by_key`` keyed by :func:`request_key`,
        ``sent_by_authorization`` (chat requests per ``Authorization`` header value) and ``proxied_by_host``
        (requests sent to it as to an HTTP forward proxy, per the host they named)."""
        return self._on_loop(self._snapshot, keys)

    # ---- HTTP ----
    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                method, target, version = head[: head.index("\r\n")].split(" ", 2)
                length, keep, auth = 0, version == "HTTP/1.1", ""
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "connection":
                        keep = value.strip().lower() != "close"
                    elif name == "authorization":
                        auth = value.strip()
                body = await reader.readexactly(length) if length else b""
                reply = await self._dispatch(method, target, body, auth)
                if reply is None:
                    break
                status, extra, payload = reply
                writer.write(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(payload)}\r\n{extra}\r\n".encode() + payload)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _dispatch(self, method: str, target: str, body: bytes, auth: str = "") -> Reply:
        if target.startswith("http://"):  # absolute-form: sent to it as to a forward proxy, which it answers as
            host, _, rest = target.removeprefix("http://").partition("/")
            by_host = self._stats["proxied_by_host"]
            by_host[host] = by_host.get(host, 0) + 1
            target = "/" + rest
        path, _, query = target.partition("?")
        if method == "POST" and path == "/v1/chat/completions":
            by_auth = self._stats["sent_by_authorization"]
            by_auth[auth] = by_auth.get(auth, 0) + 1
            return await self._chat(body)
        if method == "GET" and path in ("/v1/models", "/models"):
            model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "fault-server"}
            return 200, "", canonical({"object": "list", "data": [model]})
        if method == "GET" and path == "/health":
            return 200, "", b'{"status":"ok"}'
        if method == "GET" and path == "/_stats":
            return 200, "", canonical(self._snapshot(keys="keys=0" not in query))
        if method == "POST" and path == "/_control":
            try:
                return 200, "", canonical(self._apply(json.loads(body or b"{}")))
            except (ValueError, TypeError, AttributeError) as exc:
                return 400, "", _error(str(exc), "invalid_request_error", None)
        return 404, "", _error(f"no route {method} {path}", "invalid_request_error", "not_found")

    async def _chat(self, body: bytes) -> Reply:
        st, cfg, rng = self._stats, self.config, self._rng
        st["total"] += 1
        try:
            req = json.loads(body)
            messages, n = req["messages"], int(req.get("n") or 1)
        except (ValueError, TypeError, KeyError) as exc:
            st["bad_request"] += 1
            return 400, "", _error(f"bad request: {exc!r}", "invalid_request_error", None)
        key = request_key(req)
        st["sent_by_key"][key] = st["sent_by_key"].get(key, 0) + 1
        retry = "" if cfg.retry_after_s is None else f"Retry-After: {cfg.retry_after_s}\r\n"
        if cfg.max_concurrency and self._in_flight >= cfg.max_concurrency:
            st["fault_overload"] += 1
            return 429, retry, _error("too many concurrent requests", "rate_limit_exceeded", "rate_limit_exceeded")
        draw = rng.random()
        if draw < cfg.rate_429:
            st["fault_429"] += 1
            return 429, retry, _error("injected rate limit", "rate_limit_exceeded", "rate_limit_exceeded")
        delay = cfg.latency_s + (rng.uniform(0, cfg.latency_jitter_s) if cfg.latency_jitter_s else 0.0)
        if cfg.rate_slow and rng.random() < cfg.rate_slow:
            st["fault_slow"] += 1
            delay += cfg.slow_s
        self._in_flight += 1
        st["max_in_flight"] = max(st["max_in_flight"], self._in_flight)
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self._in_flight -= 1
        draw -= cfg.rate_429
        for kind, rate in (("500", cfg.rate_500), ("garbage", cfg.rate_garbage), ("disconnect", cfg.rate_disconnect)):
            if draw < rate:
                st["fault_" + kind] += 1
                break
            draw -= rate
        else:
            kind = "ok"
        if kind == "500":
            return 500, "", _error("injected server error", "server_error", None)
        if kind == "disconnect":
            return None
        seed = req.get("seed")
        contents = [expected_content(messages, seed, i) for i in range(n)]
        completion_tokens = sum(len(c.split()) for c in contents)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
        payload = canonical({
            "id": f"chatcmpl-{key[:16]}{st['total']:x}", "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model") or cfg.model, "system_fingerprint": "fault-server",
            "choices": [{"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop",
                         "logprobs": None} for i, c in enumerate(contents)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}})
        if kind == "garbage":
            return 200, "", payload[: len(payload) // 2]
        st["successes"] += 1
        st["successes_by_key"][key] = st["successes_by_key"].get(key, 0) + 1
        return 200, "", payload

    # ---- lifecycle ----
    async def serve(self, ready: threading.Event | None = None, on_port: Any = None) -> None:
        """Serve on the running loop until :meth:`stop` (or forever)."""
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._serve_conn, self.host, self.port, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        if on_port:
            on_port(self.port)
        if ready:
            ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for writer in list(self._writers):
                writer.close()

    def start(self) -> FaultServer:
        """Start serving in a daemon thread with its own event loop; returns self once bound."""
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve(ready)), daemon=True,
                                        name="fault-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        """Stop the server and join its thread."""
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def spawn(**config: Any) -> Iterator[str]:
    """Run the server in a separate process (own GIL), yielding its base_url; control it over HTTP."""
    argv = [sys.executable, __file__, "--port", "0", "--config", json.dumps(config)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            yield f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # SIGTERM ignored (inherited from the shell that started us)
                proc.kill()


def main(argv: list[str] | None = None) -> None:
    """CLI: prints the bound port on stdout's first line, then serves until killed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--config", default="{}", help="JSON object of FaultConfig fields")
    p.add_argument("--no-uvloop", action="store_true", help="use the stock asyncio loop")
    for name, flag in (("latency_s", "--latency"), ("latency_jitter_s", "--jitter"), ("rate_429", "--rate-429"),
                       ("retry_after_s", "--retry-after"), ("rate_500", "--rate-500"), ("rate_slow", "--rate-slow"),
                       ("slow_s", "--slow"), ("rate_garbage", "--rate-garbage"), ("rate_disconnect", "--rate-disconnect"),
                       ("max_concurrency", "--max-concurrency"), ("seed", "--seed"), ("model", "--model")):
        p.add_argument(flag, dest=name, default=None)
    args = p.parse_args(argv)
    config = json.loads(args.config)
    config.update({k: v for k, v in vars(args).items() if k in FaultConfig.__annotations__ and v is not None})
    srv = FaultServer(args.host, args.port, **config)
    loop_factory: Any = None
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop
            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(srv.serve(on_port=lambda port: print(port, flush=True)))


if __name__ == "__main__":
    main()
