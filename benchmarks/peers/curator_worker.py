#!/usr/bin/env python
"""Benchmark worker: send a fixed list of chat requests through Bespoke Labs Curator.

Run with the Python of the separate Curator virtualenv (never imports attrfactory):

    ~/.cache/attrfactory/peers/curator/bin/python benchmarks/peers/curator_worker.py \
        --requests FILE.jsonl --base-url http://127.0.0.1:PORT/v1 --model MODEL \
        --concurrency C --out RESULT.json

FILE.jsonl holds one ``{"messages": [...], "params": {...}}`` object per line. Every row is
sent as ``{"model": MODEL, "messages": messages, **params}`` through Curator's OpenAI online
backend (``backend="openai"``), with the per-row params passed in Curator's documented
``generation_params`` column (a JSON string per row, see ``llm/prompt_formatter.py``) and no
LLM-level generation params, so Curator adds no sampling fields of its own.

RESULT.json: tool, version, n, completion_tokens, prompt_tokens, wall_s, setup_s, cpu_s, texts,
plus ``llm_init_s`` (the part of setup_s spent constructing ``curator.LLM``, which includes
Curator's rate-limit probe request, see below).

What Curator (0.1.31) does that matters for throughput measurements:

* ``LLM.__init__`` -> ``OpenAIOnlineRequestProcessor.__init__`` always calls
  ``get_header_based_rate_limits()``: one synchronous ``requests.post`` (no timeout) of
  ``{"model": MODEL, "messages": []}`` to ``BASE_URL/chat/completions`` to read
  ``x-ratelimit-*`` headers. There is no documented option to skip it (only URLs containing
  ``api.deepseek.com`` skip it), so it is left alone; it happens during LLM construction,
  which is counted in setup_s (``llm_init_s``), not wall_s. The server therefore sees ONE
  extra chat request (empty messages) per run; a real vLLM answers it with a 400, which
  Curator ignores. Manual limits below override whatever the probe finds.
* Rate limiting is a token bucket that starts EMPTY (0 tokens, 1 request) and refills at
  rpm/60 and tpm/60 per second; each request is charged tiktoken(input) + an output estimate
  (4096 for models litellm does not know). When empty, the dispatcher polls with
  ``asyncio.sleep(0.1)``. With the limits set below (10M rpm, 10G tpm) the bucket refills
  ~170k tokens per millisecond, so at most a single 0.1 s poll can happen at start-up.
  Without manual limits Curator falls back to its defaults in
  ``request_processor/_default_rate_limits.json`` (header probe returns 0 against local
  servers). ``max_concurrent_requests`` has no default (unbounded) -- we set it to C; it is
  an asyncio.Semaphore acquired before each request is dispatched.
* Per-request tiktoken encoding of every message (token estimate), pydantic validation of each
  request line read back from its requests_0.jsonl, an append of every response to
  responses_0.jsonl (aiofiles, i.e. a thread hop per write), a DEBUG line per response into
  the run's curator.log (file handler added unconditionally), and parse() being run twice per
  response (once when appending, once when building the output Arrow dataset after all
  responses arrived) are all inside wall_s: that is Curator's own pipeline.
* Default ``invalid_finish_reasons`` is ["content_filter", "length"]: a completion that stops
  at max_tokens is treated as FAILED and retried (up to max_retries=10). With short
  max_tokens against a real model nearly every row would be re-sent, so it is set to [].
* Failed requests (HTTP errors, bad JSON) are re-queued at once, without backoff, up to
  max_retries=10 (left at its default); only rate-limit errors pause
  (seconds_to_pause_on_rate_limit=10). Retries show up as extra requests at the server.
* Dispatch is one coroutine reading requests_0.jsonl line by line via aiofiles: against an
  instant local responder it is slower than the server, so fewer than C requests are ever in
  flight (the fault server saw max_in_flight=1 at C=32 with --latency 0).
* Display: rich live display disabled (CURATOR_DISABLE_RICH_DISPLAY=1); Curator then falls
  back to a tqdm bar that it refresh()es on every stats update (several times per request),
  so tqdm is disabled too (TQDM_DISABLE=1, tqdm's documented env override). Curator still
  logs a stats block to stderr at start/end (INFO).
* No viewer (CURATOR_VIEWER unset: no network calls to the hosted viewer), no telemetry
  (TELEMETRY_ENABLED=false; posthog is otherwise called once at the end of a run), no cache
  (CURATOR_DISABLE_CACHE=1 gives a random run fingerprint; CURATOR_CACHE_DIR is a fresh temp
  dir removed at exit). Importing Curator still writes a telemetry id to ~/.cache/.curator_config.
  LITELLM_LOCAL_MODEL_COST_MAP=True stops litellm fetching its cost map from GitHub at import.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

_T0 = time.perf_counter()

# ---- environment, set before Curator is imported ----
_TMP = tempfile.mkdtemp(prefix="curator-bench-")
os.environ["CURATOR_CACHE_DIR"] = os.path.join(_TMP, "cache")
os.environ["CURATOR_DISABLE_CACHE"] = "1"
os.environ["CURATOR_DISABLE_RICH_DISPLAY"] = "1"
os.environ["TELEMETRY_ENABLED"] = "false"
os.environ["TQDM_DISABLE"] = "1"
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["HF_DATASETS_CACHE"] = os.path.join(_TMP, "hf_datasets")
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
for _name in ("CURATOR_VIEWER", "BESPOKE_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(_name, None)
# The OpenAI processor calls tiktoken.get_encoding("cl100k_base") in __init__, which downloads
# the BPE file unless cached: point tiktoken at the copy litellm ships (litellm itself only
# sets TIKTOKEN_CACHE_DIR when its lazily imported default_encoding module is loaded).
if "TIKTOKEN_CACHE_DIR" not in os.environ:
    import importlib.util

    _spec = importlib.util.find_spec("litellm")  # locates the package without importing it
    for _loc in (_spec.submodule_search_locations or []) if _spec else []:
        _tok = os.path.join(_loc, "litellm_core_utils", "tokenizers")
        if os.path.isdir(_tok):
            os.environ["TIKTOKEN_CACHE_DIR"] = _tok
            break

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import urllib.parse  # noqa: E402

from bespokelabs import curator  # noqa: E402
from datasets import Dataset  # noqa: E402
from worker_cli import cpu_seconds, parse_args  # noqa: E402 - beside this script


class BenchLLM(curator.LLM):
    """Sends each row's messages verbatim; parse() keeps the text and the usage counts."""

    # parse() gets the whole chat.completion dict (with "usage") instead of only the text.
    return_completions_object = True

    def prompt(self, input):
        # Messages travel as a JSON string so Arrow cannot reshape them (missing keys -> None).
        return json.loads(input["messages_json"])

    def parse(self, input, response):
        usage = response.get("usage") or {}
        return {
            "idx": input["idx"],
            "text": response["choices"][0]["message"]["content"],
            "completion_tokens": usage.get("completion_tokens"),
            "prompt_tokens": usage.get("prompt_tokens"),
        }


def _sum_or_none(values: list) -> int | None:
    return None if any(v is None for v in values) else sum(values)


def run(args: argparse.Namespace) -> int:
    host = urllib.parse.urlsplit(args.base_url).hostname or ""
    for var in ("NO_PROXY", "no_proxy"):  # aiohttp is created with trust_env=True
        os.environ[var] = ",".join(x for x in (os.environ.get(var, ""), host, "127.0.0.1", "localhost") if x)

    rows = []
    with open(args.requests) as f:
        for line in f:
            if line.strip():
                req = json.loads(line)
                rows.append({"idx": len(rows), "messages_json": json.dumps(req["messages"]),
                             "generation_params": json.dumps(req.get("params") or {})})
    dataset = Dataset.from_list(rows)

    t_init = time.perf_counter()
    llm = BenchLLM(
        model_name=args.model,
        backend="openai",
        backend_params={
            "base_url": args.base_url,
            "api_key": "none",
            "max_concurrent_requests": args.concurrency,
            "max_requests_per_minute": 10_000_000,
            "max_tokens_per_minute": 10_000_000_000,
            "invalid_finish_reasons": [],  # default treats finish_reason "length" as a failure
            "require_all_responses": False,  # we count and fail ourselves, after writing the result
        },
    )
    llm_init_s = time.perf_counter() - t_init

    setup_s = time.perf_counter() - _T0
    cpu0, w0 = cpu_seconds(), time.perf_counter()
    error = None
    try:
        out = llm(dataset).dataset
    except Exception as exc:  # noqa: BLE001
        out, error = None, f"{type(exc).__name__}: {exc}"
    wall_s = time.perf_counter() - w0
    cpu_s = cpu_seconds() - cpu0

    got = sorted(out.to_list(), key=lambda r: r["idx"]) if out is not None and "idx" in out.column_names else []
    n = len({r["idx"] for r in got})
    result = {
        "tool": "curator",
        "version": importlib.metadata.version("bespokelabs-curator"),
        "n": n,
        "completion_tokens": _sum_or_none([r["completion_tokens"] for r in got]),
        "prompt_tokens": _sum_or_none([r["prompt_tokens"] for r in got]),
        "wall_s": wall_s,
        "setup_s": setup_s,
        "cpu_s": cpu_s,
        "texts": [r["text"] for r in got[:2]],
        "llm_init_s": llm_init_s,
    }
    if error is None and n < len(rows):
        error = f"only {n} of {len(rows)} rows came back"
    if error is not None:
        result["error"] = error
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    if error is not None:
        print("curator_worker: " + " ".join(error.split())[:400], file=sys.stderr)
        return 1
    return 0


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    try:
        return run(args)
    except Exception as exc:  # noqa: BLE001
        print(f"curator_worker: {type(exc).__name__}: " + " ".join(str(exc).split())[:400], file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
