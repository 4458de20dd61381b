"""attrfactory against its peers, side by side in one run: the same request bodies through each tool.

Usage::

    make bench-peers                      # creates the peers' virtualenvs once, then runs this
    python benchmarks/bench_peers.py [--quick] [--sections llm,instant] [--rounds N]

Tools (each run in a fresh process, so no tool inherits another's warm state):

- ``bare``: a bare ``openai.AsyncOpenAI`` loop with an ``asyncio.Semaphore`` of ``--concurrency``;
- ``attrfactory``: the factory's real run path (``generation_stage``: run row, engine, DuckDB writes of every
  request and sample, dataset version) into a fresh store;
- ``curator``: Bespoke Labs Curator (``curator.LLM``, OpenAI backend; ``benchmarks/peers/curator_worker.py``);
- ``datadesigner``: NVIDIA NeMo DataDesigner (``benchmarks/peers/datadesigner_worker.py``).

The peers are never installed at run time: each is run with the Python of its own virtualenv
(``--curator-python``/``--datadesigner-python``, default ``~/.cache/attrfactory/peers/<tool>/bin/python``,
which ``make peers-venvs`` creates), or skipped with the reason. The workload is the factory's own plan of an
AttrPrompt spec (4 classes, inline attributes, ``max_tokens`` 64, a seed per request): every tool sends those
exact messages and parameters, which the instant section verifies from the server's record of the bodies.

Sections:

1. ``llm``: the real llama-server with SmolLM2 (``-np 8 -t 2``, and enough HTTP threads to read every
   connection: ``factory.generation.llm.server.HTTP_THREADS``), started afresh before every tool's run (it
   caches prompts across requests, and every tool sends the same ones), jobs of ``--llm-sizes`` requests; completion
   tokens/s, each tool's ratio to the bare loop of the same round (median over rounds, with the lowest and
   highest), client CPU, and the factory against each peer head to head (per round, the median). Each run
   also says what the server did for it (``--metrics``: prompt tokens processed and taken from its cache,
   tokens predicted, decode calls and busy slots a decode, its CPU, tok/s by fifth of the run, the share of
   seconds with a slot idle, from a poll of ``/metrics`` once a second during every tool's run alike) and
   what the whole machine spent (``/proc/stat``): a tool that leaves slots idle, or a run whose server decodes
   slower, shows there rather than only in tok/s. It also counts the context switches of the tool's process
   (``getrusage``) and those of the server's compute threads (``/proc/<pid>/task``), with the seconds those
   threads waited, ready to run, for a core (``schedstat``): each time one of them is kept off its core, the
   other spins at ggml's barrier, so a client that wakes often, or takes a core in long bursts, shows there.
   ``--server-log DIR`` keeps the server's own log of each start (every request's prompt and decode timings).
2. ``instant``: an instant OpenAI-protocol responder (separate process), jobs of ``--instant-sizes``: requests/s
   and client CPU per request, i.e. the per-request overhead of each tool.

Rounds order the tools by the rows of a Williams square (by default, one round per tool: each runs once in
every position), so drift on a noisy machine falls on every tool alike.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))

from bench_engine import table  # noqa: E402
from worker_cli import cpu_seconds  # noqa: E402 - the CPU clock the peer workers use too

PEERS_HOME = Path(os.environ.get("FACTORY_PEERS_HOME", Path.home() / ".cache" / "attrfactory" / "peers"))
WORKERS = {"curator": ROOT / "benchmarks" / "peers" / "curator_worker.py",
           "datadesigner": ROOT / "benchmarks" / "peers" / "datadesigner_worker.py"}
CLASSES = ["sports", "business", "science", "world"]
SERVER_WORK = [("prompt_tokens", 0), ("cached_tokens", 0), ("predicted_tokens", 0), ("decodes", 0),
               ("busy_slots", 2), ("idle_slots_share", 3), ("cpu_s", 1)]  # and the digits each is printed with
BARE_CLIENTS = ["bare", "bare-openai-aiohttp", "bare-chatclient"]  # the last two: the instant section only
SPEC = """\
name: bench-peers
domain: news headline and short summary
classes: {classes}
attributes:
  style:
    values: [breaking news, analysis, interview, opinion, explainer]
  length:
    values: [20, 40]
    unit: words
similar_classes:
  given: {similar}
generation:
  method: attrprompt
  base_url: {base_url}
  model: {model}
  max_tokens: {max_tokens}
  max_concurrency: {concurrency}
budget:
  samples_per_class: {per_class}
  max_requests: {requests}
filters:
  near_dup: null
"""


# --------------------------------------------------------------------------------------------------
# the workload: the factory's plan, as request bodies every tool sends


def spec_text(base_url: str, model: str, requests: int, concurrency: int, max_tokens: int) -> str:
    similar = {c: [o for o in CLASSES if o != c][:1] for c in CLASSES}
    return SPEC.format(classes=json.dumps(CLASSES), similar=json.dumps(similar), base_url=base_url, model=model,
                       max_tokens=max_tokens, concurrency=concurrency, per_class=-(-requests // len(CLASSES)),
                       requests=requests * 2)


def planned_requests(spec_path: Path) -> list[dict[str, Any]]:
    """The messages and parameters of every request the factory's run of ``spec_path`` sends."""
    from factory.attributes.lock import attribute_set
    from factory.generation.plan import Plan
    from factory.spec import load_spec

    spec = load_spec(spec_path)
    plan = Plan(spec, attribute_set(spec, None))
    return [{"messages": r.messages, "params": r.params} for r in map(plan.request, plan)]


def body_key(model: str, request: dict[str, Any]) -> str:
    """The fault server's key of a chat body (sha256 of its canonical JSON)."""
    body = {"model": model, "messages": request["messages"], **request["params"]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
                          ).hexdigest()


# --------------------------------------------------------------------------------------------------
# workers: one tool, one job, in its own process; each writes a result JSON


def worker_bare(args: argparse.Namespace) -> dict[str, Any]:
    """A semaphore of ``--concurrency`` over one task per request, through one of three clients: ``bare``
    (``openai.AsyncOpenAI``, its default httpx transport), ``bare-openai-aiohttp`` (``AsyncOpenAI`` on its
    aiohttp transport) or ``bare-chatclient`` (the factory's own :class:`ChatClient`)."""
    import openai

    from factory.generation.llm.http import ChatClient

    requests = [json.loads(line) for line in Path(args.requests).read_text().splitlines()]

    async def run() -> tuple[int, int]:
        if args.worker == "bare-chatclient":
            chat = ChatClient(args.base_url, "none", 120.0)
            create, close = (lambda r: chat.create(args.model, r["messages"], r["params"])), chat.close
        else:
            extra = {"http_client": openai.DefaultAioHttpClient()} if args.worker == "bare-openai-aiohttp" else {}
            client = openai.AsyncOpenAI(base_url=args.base_url, api_key="none", max_retries=0, timeout=120.0, **extra)

            async def create(r: dict[str, Any]) -> dict[str, Any]:
                resp = await client.chat.completions.create(model=args.model, messages=r["messages"], **r["params"])
                return {"usage": resp.usage.model_dump() if resp.usage else {}}

            close = client.close
        sem = asyncio.Semaphore(args.concurrency)

        async def one(r: dict[str, Any]) -> tuple[int, int]:
            async with sem:
                usage = (await create(r)).get("usage") or {}
                return usage.get("completion_tokens", 0), usage.get("prompt_tokens", 0)

        try:
            done = await asyncio.gather(*(one(r) for r in requests))
        finally:
            await close()
        return sum(c for c, _ in done), sum(p for _, p in done)

    t0, c0 = time.perf_counter(), cpu_seconds()
    completion, prompt = asyncio.run(run())
    client = "factory ChatClient (aiohttp)" if args.worker == "bare-chatclient" else (
        f"openai {openai.__version__}" + (" on aiohttp" if args.worker == "bare-openai-aiohttp" else ""))
    return {"tool": args.worker, "version": client, "n": len(requests), "completion_tokens": completion,
            "prompt_tokens": prompt, "wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0}


def _timed(owner: Any, name: str, spent: dict[str, list[float]]) -> None:
    """Count the calls of ``owner.name`` and the CPU of the calling thread in them (DuckDB's own worker
    threads are not included: the store runs single-threaded while it generates)."""
    method = getattr(owner, name)

    def timed(*a: Any, **kw: Any) -> Any:
        started = time.thread_time()
        try:
            return method(*a, **kw)
        finally:
            calls = spent.setdefault(name, [0, 0.0])
            calls[0] += 1
            calls[1] += time.thread_time() - started

    setattr(owner, name, timed)


def _watch_requests(engine_cls: Any, marks: dict[str, float]) -> None:
    """Record when the first request is sent and the last answer arrives."""
    send = engine_cls._send_once

    async def watched(*a: Any, **kw: Any) -> Any:
        marks.setdefault("first_send", time.perf_counter())
        try:
            return await send(*a, **kw)
        finally:
            marks["last_answer"] = time.perf_counter()

    engine_cls._send_once = watched


def worker_factory(args: argparse.Namespace) -> dict[str, Any]:
    """The factory's run path, with where its time goes: before the first request, after the last answer, and
    the CPU of its journal appends, publishes and the run's closing commit."""
    from importlib.metadata import version

    from factory.generation.llm.engine import Engine
    from factory.store.journal import Journal

    from factory.attributes.lock import attribute_set
    from factory.generation.llm.client import EndpointProvider
    from factory.generation.plan import Plan
    from factory.generation.run import generation_stage
    from factory.spec import load_spec
    from factory.store import Store

    spent: dict[str, list[float]] = {}
    marks: dict[str, float] = {}
    for owner, name in ((Store, "save_completions"), (Journal, "publish"), (Store, "finish_run")):
        _timed(owner, name, spent)
    _watch_requests(Engine, marks)
    t_setup = time.perf_counter()
    spec = load_spec(args.spec)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        plan = Plan(spec, attribute_set(spec, None))
        setup = time.perf_counter() - t_setup
        t0, c0 = time.perf_counter(), cpu_seconds()
        with EndpointProvider() as endpoints:
            result = generation_stage(plan, store, endpoints)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        end = t0 + wall
        completion, prompt, n = store.con.execute(
            "SELECT sum(completion_tokens), sum(prompt_tokens), count(*) FROM llm_requests").fetchone()
        store.close()
    if result.status != "done" or n != plan.requests:
        raise SystemExit(f"attrfactory: run {result.status} with {n} of {plan.requests} requests")
    return {"tool": "attrfactory", "version": version("attrfactory"), "n": n, "completion_tokens": int(completion),
            "prompt_tokens": int(prompt), "wall_s": wall, "setup_s": setup, "cpu_s": cpu,
            "before_first_s": marks["first_send"] - t0, "after_last_s": end - marks["last_answer"],
            "appends": spent["save_completions"][0], "append_cpu_s": spent["save_completions"][1],
            "publishes": spent["publish"][0], "publish_cpu_s": spent["publish"][1],
            "close_cpu_s": spent["finish_run"][1]}


def worker_main(args: argparse.Namespace) -> None:
    result = (worker_factory if args.worker == "attrfactory" else worker_bare)(args)
    Path(args.out).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------------
# the orchestrator


class Tool:
    def __init__(self, name: str, python: str | None, script: Path | None, skipped: str | None = None):
        self.name, self.python, self.script, self.skipped = name, python, script, skipped

    def command(self, job: Job, out: Path) -> list[str]:
        common = ["--requests", str(job.requests_file), "--base-url", job.base_url, "--model", job.model,
                  "--concurrency", str(job.concurrency), "--out", str(out)]
        if self.script is None:  # bare / attrfactory: this script's own workers, in this interpreter
            return [sys.executable, __file__, "--worker", self.name, "--spec", str(job.spec_file), *common]
        return [str(self.python), str(self.script), *common]


def find_tools(args: argparse.Namespace, clients: bool = False) -> list[Tool]:
    """The tools of a section (with ``clients``, the two other bare clients too); a peer without its
    virtualenv, or a tool left out of ``--tools``, is listed as skipped, with the reason."""
    tools = [Tool("bare", sys.executable, None), Tool("attrfactory", sys.executable, None)]
    if clients:
        tools += [Tool(name, sys.executable, None) for name in BARE_CLIENTS[1:]]
    for name in ("curator", "datadesigner"):
        given = getattr(args, f"{name}_python")
        python = Path(given) if given else PEERS_HOME / name / "bin" / "python"
        if not python.exists():
            tools.append(Tool(name, None, None, f"no {python} (run 'make peers-venvs' or pass --{name}-python)"))
        elif not WORKERS[name].exists():
            tools.append(Tool(name, None, None, f"{WORKERS[name]} is missing"))
        else:
            tools.append(Tool(name, str(python), WORKERS[name]))
    return [t if not args.tools or t.name in args.tools else Tool(t.name, None, None, "not in --tools") for t in tools]


class Job:
    """One job size on one server: its spec, its request bodies and the files the workers read."""

    def __init__(self, folder: Path, base_url: str, model: str, size: int, concurrency: int, max_tokens: int):
        self.base_url, self.model, self.concurrency = base_url, model, concurrency
        self.spec_file = folder / f"spec-{size}.yaml"
        self.spec_file.write_text(spec_text(base_url, model, size, concurrency, max_tokens))
        self.requests = planned_requests(self.spec_file)
        self.requests_file = folder / f"requests-{size}.jsonl"
        self.requests_file.write_text("".join(json.dumps(r) + "\n" for r in self.requests))
        self.keys = {body_key(model, r) for r in self.requests}


def run_tool(tool: Tool, job: Job, folder: Path, timeout_s: float) -> dict[str, Any]:
    out = folder / f"result-{tool.name}.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    started, machine = time.perf_counter(), machine_cpu()
    switches = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(tool.command(job, out), capture_output=True, text=True, timeout=timeout_s, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"tool": tool.name, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    result = json.loads(out.read_text())
    result["process_s"] = time.perf_counter() - started
    result["client_switches"] = {"voluntary": after.ru_nvcsw - switches.ru_nvcsw,
                                 "preempted": after.ru_nivcsw - switches.ru_nivcsw}
    if machine is not None:
        result["machine_busy_s"], result["machine_iowait_s"] = (b - a for a, b in zip(machine, machine_cpu()))
    return result


def machine_cpu() -> tuple[float, float] | None:
    """The whole machine's busy and I/O-wait CPU seconds so far (``/proc/stat``; None where there is none): with
    the server's and the tool's own CPU, it tells what a run cost the machine beyond them (kernel flush
    threads for its fsyncs, say)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, iowait / tick


def square_rounds(n: int) -> int:
    """How many rounds make a whole Williams square of ``n`` tools (see :func:`rotated`)."""
    return n if n % 2 == 0 else 2 * n


def rotated(tools: list[Tool], k: int) -> list[Tool]:
    """Round ``k``'s order, a row of a Williams square: over as many rounds as there are tools (twice as many
    for an odd count), each tool runs once in each position and once right after each other tool, so a
    server that speeds up or slows down during a round favours none."""
    n = len(tools)
    base = [0] + [j // 2 + 1 if j % 2 == 0 else n - (j + 1) // 2 for j in range(n - 1)]
    order = [tools[(b + k) % n] for b in base]
    return order[::-1] if (k % square_rounds(n)) >= n else order


def _server_stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/_stats") as r:
        return json.loads(r.read())


def _server_reset(base_url: str) -> None:
    req = urllib.request.Request(base_url.removesuffix("/v1") + "/_control", data=b'{"reset_stats": true}',
                                 method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()


def measure(section: str, job: Job, tools: list[Tool], rounds: int, folder: Path, instant: bool,
            timeout_s: float, fresh: Callable[[], object],
            server_work: Callable[[], dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every runnable tool, ``rounds`` times in rotating order, each run on a server made fresh by ``fresh``
    (the same base URL); with ``instant``, the bodies each tool sent are checked against the plan's, and
    ``server_work`` (if given) says what the server did for each run."""
    runnable = [t for t in tools if t.skipped is None]
    results: dict[str, list[dict[str, Any]]] = {t.name: [] for t in runnable}
    for k in range(rounds):
        for tool in rotated(runnable, k):
            fresh()
            r = run_tool(tool, job, folder, timeout_s)
            if instant and "error" not in r:
                stats = _server_stats(job.base_url)
                sent = set(stats["sent_by_key"])
                r["bodies"] = ("identical" if sent == job.keys else
                               f"{len(sent & job.keys)} of {len(job.keys)} identical, {len(sent - job.keys)} other")
                r["server_requests"] = stats["total"]
            if server_work is not None and "error" not in r:
                r["server"] = server_work()
            r["round"] = k
            results[tool.name].append(r)
            print(f"  [{section} {len(job.requests)}] round {k + 1} {tool.name:<13} " + _line(r), flush=True)
    return results


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"FAILED {r['error']}"
    tokens = r.get("completion_tokens")
    return (f"{r['wall_s']:7.2f} s  {r['n'] / r['wall_s']:8.1f} req/s"
            + (f"  {tokens / r['wall_s']:7.1f} tok/s" if tokens else "")
            + f"  client CPU {r['cpu_s']:.2f} s"
            + (f" ({r['client_switches']['voluntary']:,} voluntary context switches, "
               f"{r['client_switches']['preempted']:,} preempted)" if "client_switches" in r else "")
            + (f"  bodies {r['bodies']}" if "bodies" in r else "")
            + (f"  machine: busy {r['machine_busy_s']:.1f} s, iowait {r['machine_iowait_s']:.1f} s"
               if "machine_busy_s" in r else "")
            + (f"  server: {_work(r['server'])}" if "server" in r else ""))


def _work(w: dict[str, Any]) -> str:
    """What llama-server did for one run, from its ``/metrics`` counters."""
    return (f"{w['prompt_tokens']:,.0f} prompt tokens processed ({w['cached_tokens']:,.0f} from its cache), "
            f"{w['predicted_tokens']:,.0f} predicted, {w['idle_slots_share']:.1%} of seconds with a slot idle, "
            f"tok/s by fifth of the run {'/'.join(f'{v:.0f}' for v in w['tok_s_by_fifth'])}, "
            f"{w['decodes']:,.0f} decodes" + (f", {w['busy_slots']:.2f} busy slots a decode"
                                               if "busy_slots" in w else "") + f", CPU {w['cpu_s']:.1f} s"
            + (f", compute threads switched {w['compute_switches']['voluntary']:,} times and preempted "
               f"{w['compute_switches']['preempted']:,}, waited {w['compute_switches']['waited_s']:.1f} s for a core"
               if w.get("compute_switches") else ""))


def summarize(title: str, results: dict[str, list[dict[str, Any]]], tools: list[Tool], metric: str) -> dict[str, float]:
    """Print the table of one job: medians, and each tool's median per-round ratio to the bare loop."""
    def value(r: dict[str, Any]) -> float | None:
        if "error" in r:
            return None
        return (r.get("completion_tokens") or 0) / r["wall_s"] if metric == "tok/s" else r["n"] / r["wall_s"]

    by_round = {name: {r["round"]: value(r) for r in rs if "error" not in r} for name, rs in results.items()}
    ratios: dict[str, float] = {}
    rows = []
    for name, rs in results.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            rows.append([name, "failed: " + rs[0]["error"][:80], "", "", "", "", "", ""])
            continue
        per_round = _per_round(by_round[name], by_round.get("bare", {}))
        ratios[name] = statistics.median(per_round) if per_round else float("nan")
        rows.append([name, ok[0].get("version", "?"), f"{statistics.median(r['wall_s'] for r in ok):.2f}",
                     f"{statistics.median(value(r) for r in ok):,.1f}",
                     f"{1e3 * statistics.median(r['cpu_s'] / r['n'] for r in ok):.2f}",
                     f"{ratios[name]:.3f}" if per_round else "-", _spread(per_round), ok[0].get("bodies", "")])
    for t in tools:
        if t.skipped:
            rows.append([t.name, f"skipped: {t.skipped}", "", "", "", "", "", ""])
    table(title, ["tool", "version", "wall s", metric, "CPU ms/req", "x bare", "rounds", "bodies"], rows,
          left=(0, 1, 6, 7))
    head_to_head = {n: _per_round(by_round.get("attrfactory", {}), by_round[n]) for n in by_round if n in WORKERS}
    head_to_head = {n: v for n, v in head_to_head.items() if v}
    for name, per_round in head_to_head.items():
        print(f"attrfactory / {name}: {_paired(per_round)}")
    if head_to_head:  # the best peer: the fastest, by its own median over the rounds
        best = max(head_to_head, key=lambda n: statistics.median(v for v in by_round[n].values() if v))
        print(f"attrfactory / best peer ({best}, the fastest by median): "
              f"{statistics.median(head_to_head[best]):.3f}   [goal >= 1.0]")
    server_table(results)
    if "attrfactory" in ratios:
        if "bare" in by_round:
            print(f"attrfactory / bare loop: {ratios['attrfactory']:.3f}   [goal >= 0.97]")
        factory_breakdown([r for r in results["attrfactory"] if "error" not in r])
    return ratios


def server_table(results: dict[str, list[dict[str, Any]]]) -> None:
    """Print each tool's median of what the server did for its runs (where the runs recorded it)."""
    rows = []
    for name, runs in results.items():
        work = [r["server"] for r in runs if "server" in r]
        if work:
            medians = ([w[key] for w in work if key in w] for key, _ in SERVER_WORK)
            rows.append([name] + [f"{statistics.median(v):,.{d}f}" if v else "-"
                                  for v, (_, d) in zip(medians, SERVER_WORK)])
    if rows:
        table("llama-server's work a run (its /metrics, a fresh server each run; medians)",
              ["tool", *(key.replace("_", " ") for key, _ in SERVER_WORK)], rows, left=(0,))


def _per_round(tool: dict[int, float | None], reference: dict[int, float | None]) -> list[float]:
    """``tool``'s value over ``reference``'s, in each round where both finished."""
    return [v / reference[k] for k, v in tool.items() if v and reference.get(k)]


def _paired(ratios: list[float]) -> str:
    """Per-round ratios of two tools: their median, lowest and highest, and their geometric mean with a 95%
    interval (Student's t on the log ratios; with noise alone the interval holds 1.0 about 19 times in 20)."""
    text = f"median {statistics.median(ratios):.3f} (rounds {_spread(ratios)})"
    if len(ratios) < 2:
        return text + ", one round: no interval"
    from scipy.stats import t

    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    half = t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return text + f", geometric mean {math.exp(mean):.3f} (95% {math.exp(mean - half):.3f}-{math.exp(mean + half):.3f})"


def _spread(ratios: list[float]) -> str:
    """The lowest and highest of per-round ratios, and how many rounds they come from."""
    return f"{min(ratios):.2f}-{max(ratios):.2f} of {len(ratios)}" if ratios else "none"


def factory_breakdown(runs: list[dict[str, Any]]) -> None:
    """Where the factory's time goes beyond the requests (medians over the rounds)."""
    def m(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"attrfactory, median: {m('before_first_s'):.2f} s before the first request, {m('after_last_s'):.2f} s "
          f"after the last answer (one commit: the last publish, run totals, dataset version); client CPU "
          f"{m('cpu_s'):.2f} s, of which {m('appends'):.0f} journal appends {m('append_cpu_s'):.2f} s, "
          f"{m('publishes'):.0f} publishes {m('publish_cpu_s'):.2f} s (the closing one included), closing the run "
          f"{m('close_cpu_s'):.2f} s (its publish included)")


class LlmServer:
    """llama-server with SmolLM2 on one port, started afresh before every tool's run (:meth:`restart`): the
    server keeps a prompt cache in memory across requests (``--cache-ram``, 8 GiB by default), so on a server
    shared by the rounds each tool would reuse the prompts the tools before it sent (the same bodies), and
    the later a tool ran, the faster it looked. Each run starts on a fresh server, warmed by one request."""

    def __init__(self, parallel: int, threads: int, http_threads: int | None, log_dir: Path | None = None):
        from factory.generation.llm.server import free_port

        self.options = {"parallel": parallel, "threads": threads, "http_threads": http_threads, "port": free_port(),
                        "extra_args": ("--metrics",)}
        self.stack, self.log_dir, self.starts = ExitStack(), log_dir, 0
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
        self.current: tuple[str, str] = ("", "")  # the running server's (base_url, model)
        self._warm: dict[str, float] = {}  # the counters after the warm-up request
        self._warm_cpu, self.pid = 0.0, 0
        self._warm_threads: dict[str, tuple[int, int, int, int]] = {}
        self._watching, self._samples = threading.Event(), []  # the watcher of the running server's queue

    def restart(self) -> tuple[str, str]:
        """Stop the running server (if any) and start a fresh one on the same port; its (base_url, model)."""
        from factory.generation.llm.server import local_server

        self._watching.set()
        self.stack.close()
        self.starts += 1
        log = self.log_dir / f"llama-server-{self.starts}.log" if self.log_dir else None
        server = self.stack.enter_context(local_server(**self.options, log_path=log))
        self.pid = server.process.pid
        warm_up(server.base_url, server.model)
        self.current = (server.base_url, server.model)
        self._warm, self._warm_cpu, self._warm_threads = self._counters(), self._cpu(), self._threads()
        self._watching, self._samples = threading.Event(), []
        threading.Thread(target=self._watch, args=(self._watching, self._samples), daemon=True).start()
        return self.current

    def _watch(self, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
        """Every second until ``stop``: the requests the server is processing and the tokens it has predicted."""
        while not stop.wait(1.0):
            try:
                now = self._counters()
            except OSError:
                return
            samples.append((now["llamacpp:requests_processing"], now["llamacpp:tokens_predicted_total"]))

    def _cpu(self) -> float:
        """The server process's CPU seconds so far (user and system; 0 where ``/proc`` is missing)."""
        try:
            return _cpu_ticks(Path(f"/proc/{self.pid}/stat")) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return 0.0

    def _threads(self) -> dict[str, tuple[int, int, int, int]]:
        """Each server thread's CPU ticks, its voluntary and preempted context switches and the nanoseconds it
        spent ready to run but waiting for a core, so far (from ``/proc/<pid>/task``; empty where there is
        none)."""
        threads = {}
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines() if ":" in line)
                threads[task.name] = (_cpu_ticks(task / "stat"), int(status["voluntary_ctxt_switches"]),
                                      int(status["nonvoluntary_ctxt_switches"]),
                                      int((task / "schedstat").read_text().split()[1]))
            except (OSError, KeyError, ValueError, IndexError):
                continue
        return threads

    def _compute_switches(self) -> dict[str, float]:
        """The context switches of the server's compute threads (its ``threads`` busiest since the warm-up)
        and the seconds they waited, ready, for a core: a compute thread kept off its core stalls the others at
        ggml's barrier, spinning. Empty where ``/proc`` has no threads to read (the run's line then leaves
        them out)."""
        now = self._threads()
        deltas = sorted(tuple(a - b for a, b in zip(counts, self._warm_threads.get(t, (0, 0, 0, 0))))
                        for t, counts in now.items())
        busiest = deltas[-self.options["threads"]:] if deltas else []
        return {"voluntary": sum(d[1] for d in busiest), "preempted": sum(d[2] for d in busiest),
                "waited_s": sum(d[3] for d in busiest) / 1e9} if busiest else {}

    def _counters(self) -> dict[str, float]:
        with urllib.request.urlopen(self.current[0].removesuffix("/v1") + "/metrics", timeout=10) as r:
            text = r.read().decode()
        return {k: float(v) for k, v in (line.split() for line in text.splitlines()
                                          if line.startswith("llamacpp:") and len(line.split()) == 2)}

    def work(self) -> dict[str, Any]:
        """What the server did since its warm-up: prompt tokens it processed and those it took from its prompt
        cache, tokens it predicted, its decode calls, busy slots a decode (the batch), its CPU, and the share of
        the seconds between its first and last busy second in which a slot was idle (the tool fell behind)."""
        now, warm = self._counters(), self._warm
        self._watching.set()
        busy = [p for p, _ in self._samples]
        first = next((i for i, p in enumerate(busy) if p), len(busy))
        last = len(busy) - next((i for i, p in enumerate(reversed(busy)) if p), len(busy))
        idle = [p < self.options["parallel"] for p in busy[first:last]]
        predicted = [t for _, t in self._samples[first:last]]
        fifths = [predicted[len(predicted) * i // 5:len(predicted) * (i + 1) // 5 + 1] for i in range(5)]

        def delta(name: str) -> float:
            return now[f"llamacpp:{name}"] - warm[f"llamacpp:{name}"]

        done = {"prompt_tokens": delta("prompt_tokens_total"), "cached_tokens": delta("prompt_tokens_cached_total"),
                "predicted_tokens": delta("tokens_predicted_total"), "decodes": delta("n_decode_total"),
                "cpu_s": self._cpu() - self._warm_cpu, "compute_switches": self._compute_switches(),
                "idle_slots_share": sum(idle) / len(idle) if idle else float("nan"),
                "tok_s_by_fifth": [(f[-1] - f[0]) / (len(f) - 1) for f in fifths if len(f) > 1]}
        if "llamacpp:n_busy_slots_per_decode" in now:  # the server's average over its life, warm-up included
            done["busy_slots"] = now["llamacpp:n_busy_slots_per_decode"]
        return done

    def close(self) -> None:
        self.stack.close()


def _cpu_ticks(stat: Path) -> int:
    """User and system clock ticks from a ``/proc`` ``stat`` file (a process's or one of its threads')."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@contextmanager
def llm_server(parallel: int, threads: int, http_threads: int | None,
               log_dir: Path | None = None) -> Iterator[LlmServer | None]:
    """A :class:`LlmServer` that has started once, or None (and the reason printed) where it cannot start."""
    from factory.generation.llm.server import ServerError

    server = LlmServer(parallel, threads, http_threads, log_dir)
    try:
        server.restart()
    except ServerError as exc:
        print(f"skipped: {exc}")
        server.close()
        yield None
        return
    try:
        yield server
    finally:
        server.close()


def warm_up(base_url: str, model: str) -> None:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none")
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)
    client.close()


def section(name: str, args: argparse.Namespace, sizes: list[int], folder: Path, summary: dict[str, Any]) -> None:
    instant = name == "instant"
    tools = find_tools(args, clients=instant)
    if instant:
        from fault_server import spawn

        server_cm: Any = spawn(latency_s=0.0)
        what = "instant OpenAI-protocol responder (tests/fault_server.py, separate process)"
    else:
        server_cm = llm_server(args.parallel, args.threads, args.http_threads, args.server_log)
        from factory.generation.llm.server import http_threads_for

        http = http_threads_for(args.parallel, args.http_threads)
        what = f"llama-server with SmolLM2 (-np {args.parallel} -t {args.threads} --threads-http {http})"
    runnable = sum(t.skipped is None for t in tools)
    rounds = args.rounds or square_rounds(runnable)
    print(f"\n=== {name}: {what}; jobs of {', '.join(map(str, sizes))} requests, max_tokens {args.max_tokens}, "
          f"concurrency {args.concurrency}, {rounds} round(s) ===", flush=True)
    with server_cm as server:
        if server is None:
            return
        base_url, model = (server, "fault-model") if instant else server.current
        fresh = (lambda: _server_reset(base_url)) if instant else server.restart
        for size in sizes:
            job = Job(folder, base_url, model, size, args.concurrency, args.max_tokens)
            results = measure(name, job, tools, rounds, folder, instant, args.timeout, fresh,
                              None if instant else server.work)
            summary[(name, size)] = summarize(f"{name}, {size} requests: median of {rounds} round(s)",
                                              results, tools, "req/s" if instant else "tok/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="llm,instant")
    p.add_argument("--llm-sizes", default="48,500")
    p.add_argument("--instant-sizes", default="48,500,5000")
    p.add_argument("--rounds", type=int, default=0,
                   help="rounds per job (default: one per tool, so that each tool runs once in every position)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--parallel", type=int, default=8, help="llama-server slots (-np)")
    p.add_argument("--threads", type=int, default=2, help="llama-server threads (-t)")
    p.add_argument("--http-threads", type=int, default=None,
                   help="llama-server HTTP threads (default: the factory's embedded server's, HTTP_THREADS)")
    p.add_argument("--server-log", type=Path, default=None,
                   help="a folder for llama-server's log of each start (llama-server-1.log, ...; the warm-up start is 1)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one tool may take for one job")
    p.add_argument("--tools", type=lambda v: [t for t in v.split(",") if t], default=[],
                   help="only these tools (comma-separated; default all), e.g. attrfactory,curator for a long job")
    p.add_argument("--curator-python", default=None)
    p.add_argument("--datadesigner-python", default=None)
    p.add_argument("--quick", action="store_true", help="1 round, jobs of 48 (llm) and 48, 500 (instant)")
    # a worker: one tool, one job (used by the orchestrator)
    p.add_argument("--worker", choices=["attrfactory", *BARE_CLIENTS], help=argparse.SUPPRESS)
    for flag in ("--spec", "--requests", "--base-url", "--model", "--out"):
        p.add_argument(flag, help=argparse.SUPPRESS)
    args = p.parse_args()
    unknown = sorted(set(args.tools) - {"attrfactory", *BARE_CLIENTS, *WORKERS})
    if unknown:
        p.error(f"--tools: no tool {', '.join(unknown)} (tools: attrfactory, {', '.join(BARE_CLIENTS)}, "
                f"{', '.join(WORKERS)})")
    if args.worker:
        args.concurrency = int(args.concurrency)
        worker_main(args)
        return
    if args.quick:
        args.rounds, args.llm_sizes, args.instant_sizes = 1, "48", "48,500"
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} cores; tools: "
          + ", ".join(t.name + (f" (skipped: {t.skipped})" if t.skipped else "") for t in find_tools(args)))
    summary: dict[Any, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        for name in args.sections.split(","):
            sizes = [int(s) for s in getattr(args, f"{name}_sizes").split(",") if s]
            section(name, args, sizes, Path(tmp), summary)


if __name__ == "__main__":
    main()
