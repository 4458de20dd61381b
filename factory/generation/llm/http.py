"""The engine's HTTP client: OpenAI's chat-completions protocol over one aiohttp session.

``openai.AsyncOpenAI`` spends ~1-3 ms of CPU on each request (its request building, httpx and the pydantic
response models): ~500-900 requests/s, and CPU taken from a model server that shares the machine. This
client sends the same JSON body with the same bearer token in ~0.1 ms (~11,000 requests/s in
``benchmarks/bench_peers.py``, the responder sharing the two cores), and answers the same way: the decoded
completion, or the ``openai`` package's own exception for each failure (status errors by code with the
response's headers, so ``Retry-After`` reads as before; timeouts; connection errors). The engine's retries,
backoff and overload handling are therefore unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

try:  # openai >= 3 builds its exceptions on httpx2, earlier versions on httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx  # type: ignore[no-redef]

_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError, 401: openai.AuthenticationError, 403: openai.PermissionDeniedError,
    404: openai.NotFoundError, 409: openai.ConflictError, 422: openai.UnprocessableEntityError,
    429: openai.RateLimitError}


def env_proxy(url: str) -> dict[str, Any]:
    """The environment's proxy for ``url`` as arguments of an aiohttp request: ``HTTP_PROXY``/``HTTPS_PROXY``
    (with the credentials its URL holds), unless ``NO_PROXY`` exempts the host; none where no proxy applies."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return {}
    return {"proxy": proxy, **({"proxy_headers": {"Proxy-Authorization": auth.encode()}} if auth else {})}


class MalformedResponse(RuntimeError):
    """The endpoint answered 200 with a body that is not a usable chat completion."""


class ChatClient:
    """``POST {base_url}/chat/completions`` with keep-alive connections, a total timeout per request, and the
    proxy settings of the environment (``HTTP(S)_PROXY``, ``NO_PROXY``), as the openai client has. The proxy is
    looked up once, when the client is made: aiohttp's ``trust_env`` looks it up (and ``~/.netrc``, whose login
    would replace the bearer key) on a worker thread for every request, two thread hops a request."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
                         "Accept": "application/json", "User-Agent": "attrfactory"}
        self._session: aiohttp.ClientSession | None = None
        self._proxy = env_proxy(self.url)

    def __repr__(self) -> str:  # never the key
        return f"ChatClient({self.base_url!r})"

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:  # in the running loop, on first use
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def create(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        """The decoded completion of ``{"model", "messages", **params}``; raises as the openai client does."""
        body = json.dumps({"model": model, "messages": messages, **params}).encode()
        try:
            async with self._open().post(self.url, data=body, allow_redirects=False, **self._proxy) as response:
                content = await response.read()
                status, headers = response.status, list(response.headers.items())
        except TimeoutError:
            raise openai.APITimeoutError(request=self._request(body)) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise openai.APIConnectionError(message=f"Connection error: {type(exc).__name__}: {exc}",
                                            request=self._request(body)) from None
        if not 200 <= status < 300:
            raise self._status_error(status, headers, content, body)
        try:
            completion = json.loads(content)
        except ValueError:
            raise MalformedResponse(f"the body is not JSON: {content[:200]!r}") from None
        if not isinstance(completion, dict):
            raise MalformedResponse(f"the body is not a JSON object: {content[:200]!r}")
        return completion

    def _request(self, body: bytes) -> httpx.Request:
        return httpx.Request("POST", self.url, content=body)

    def _status_error(self, status: int, headers: list[tuple[str, str]], content: bytes,
                      body: bytes) -> openai.APIStatusError:
        """The openai package's exception for a status code, message and body as it builds them."""
        response = httpx.Response(status, headers=headers, content=content, request=self._request(body))
        message, data = f"Error code: {status}", None
        try:
            decoded = json.loads(content)
        except ValueError:
            data = content.decode(errors="replace").strip() or None
        else:
            data = decoded.get("error", decoded) if isinstance(decoded, dict) else decoded
            text = data.get("message") if isinstance(data, dict) else None
            if isinstance(text, str) and text:
                message += f" - {text}"
        kind = _STATUS_ERRORS.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
        return kind(message, response=response, body=data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
