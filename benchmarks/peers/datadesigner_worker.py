#!/usr/bin/env python
"""Peer benchmark worker: NVIDIA NeMo DataDesigner (PyPI ``data-designer``) against an
OpenAI-compatible endpoint.

Run with the Python of the virtualenv that has DataDesigner installed (never the attrfactory one):

    ~/.cache/attrfactory/peers/datadesigner/bin/python datadesigner_worker.py \
        --requests FILE.jsonl --base-url http://127.0.0.1:PORT/v1 --model MODEL --concurrency C --out RESULT.json

Each line of FILE.jsonl is ``{"messages": [{"role": "user", "content": ...}], "params": {...}}``.
The user messages become a pandas seed dataset (column ``prompt``) and one LLM text column whose
Jinja template is just ``{{ prompt }}`` (no system prompt: DataDesigner then sends a single user
message). The sampling parameters (temperature, top_p, max_tokens; identical in every row) become
the model config's inference parameters. Generation runs through the public
``DataDesigner(...).create(...)`` path (the async task-queue engine, the only engine in 0.9.x),
which writes parquet artifacts into a fresh temporary directory that is deleted afterwards.

How this configuration differs from DataDesigner's defaults, and why:

* Per-row ``seed`` is NOT sent (``"per_row_seed": false`` in the result). An LLM text column
  calls ``ModelFacade.agenerate(prompt=..., system_prompt=..., parser=...)`` with no per-record
  request kwargs; ``seed`` can only be set per *model config* (``extra_body``, identical for every
  row). Sending a row's seed would need a hand-written custom column calling
  ``models[alias].agenerate(..., seed=row_seed)`` instead of the standard LLM text column, which
  is not the tool's normal path, so it is not done.
* Concurrency: ``max_parallel_requests=C`` (the request-admission controller's cap, AIMD, starting
  at the cap since ``startup_ramp_seconds`` defaults to 0; it only shrinks after 429s). The other
  knobs that could cap in-flight requests are raised so they never sit below C: ``buffer_size``
  (rows per row group, default 1000; a row group is checkpointed to parquet only once all its
  rows are done, and ``max_concurrent_row_groups`` (default 3) are active at once) and
  ``max_in_flight_tasks`` (default 1024). The httpx pool is sized by DataDesigner itself from
  ``max_parallel_requests`` (>= C connections).
* Model health check disabled (``skip_health_check=True`` plus
  ``DATA_DESIGNER_SKIP_MODEL_HEALTH_CHECKS=1``). By default ``create()`` first sends one probe chat
  request per model alias ("Hello!" with system prompt "You are a helpful assistant.") and waits
  for it (up to 180 s) before generating; that fixed startup round trip is left out so the
  endpoint sees exactly one request per row.
* Dataset profiling disabled. After generation ``create()`` profiles the dataset (column statistics,
  counting tokens with tiktoken's ``cl100k_base``, which tiktoken downloads from the internet on
  first use). That post-generation step is not part of request throughput and would try the
  network, so the profiler is replaced by a no-op (``_create_dataset_profiler`` override).
* No telemetry / network: ``NEMO_TELEMETRY_ENABLED=false`` (otherwise a usage event is POSTed to
  events.telemetry.data.nvidia.com after every run, and an ``X-Title`` header is added to every
  model request), ``RunConfig(otel_metrics_port=None)`` (otherwise a Prometheus metrics HTTP server
  is started on 127.0.0.1:9464), ``DISABLE_DATA_DESIGNER_PLUGINS=true``, ``HF_HUB_OFFLINE=1``, and
  ``DATA_DESIGNER_HOME`` points into the temporary directory (DataDesigner writes default model /
  provider YAML files and a managed-assets folder there on construction).
* Per-request timeout 600 s (default 60 s) so slow, heavily loaded real servers don't time out.

Other behaviour that affects throughput (kept as is): the async scheduler logs a progress block
every ``progress_interval`` (5 s) seconds; rows of a row group are written to parquet at the end
of the group (one group here when rows <= buffer_size); early shutdown triggers if more than 50 %
of at least 10 completed tasks fail; transient 502/503/504 and connection errors are retried by
the httpx retry transport (3 retries, exponential backoff). Responses go through DataDesigner's
text parser (``LLMResponseParser`` with ``merge_text_blocks``). Note: the row record is passed
through ``deserialize_json_values`` before rendering, so a prompt that is itself valid JSON (e.g.
``"42"`` or ``"[1, 2]"``) is re-rendered from the parsed value and may change.

Token usage comes from DataDesigner's own per-model usage stats (``ModelUsageStats.token_usage``,
filled from the provider's ``usage`` field), read from the run's model registry.
"""
from __future__ import annotations

import time

_T_START = time.perf_counter()

import importlib.metadata  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from worker_cli import cpu_seconds, parse_args  # noqa: E402 - beside this script

ALIAS = "bench-model"
PROVIDER = "bench-endpoint"
OUT_COLUMN = "completion"


def _fail(msg: str) -> None:
    sys.stderr.write(f"datadesigner_worker: error: {' '.join(str(msg).split())}\n")
    sys.stderr.flush()
    sys.exit(1)


def _load_requests(path: str) -> tuple[list[str], list[str | None], dict, list]:
    prompts: list[str] = []
    systems: list[str | None] = []
    seeds: list = []
    params: dict | None = None
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            msgs = row["messages"]
            system = None
            if msgs and msgs[0].get("role") == "system":
                system, msgs = msgs[0]["content"], msgs[1:]
            if len(msgs) != 1 or msgs[0].get("role") != "user" or not isinstance(msgs[0].get("content"), str):
                raise ValueError(f"line {lineno}: expected one user message (plus optional system message)")
            prompts.append(msgs[0]["content"])
            systems.append(system)
            p = dict(row.get("params") or {})
            seeds.append(p.pop("seed", None))
            if params is None:
                params = p
            elif p != params:
                raise ValueError(f"line {lineno}: sampling params differ from line 1 ({p} != {params})")
    if not prompts:
        raise ValueError("no requests in file")
    return prompts, systems, params or {}, seeds


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)

    try:
        prompts, systems, params, seeds = _load_requests(args.requests)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _fail(f"bad requests file: {exc}")
    n_req = len(prompts)
    unknown = set(params) - {"temperature", "top_p", "max_tokens"}
    if unknown:
        _fail(f"unsupported sampling params {sorted(unknown)}")

    tmp = tempfile.mkdtemp(prefix="dd-worker-")
    try:
        # Must be set before data_designer is imported (read at import time).
        os.environ["NEMO_TELEMETRY_ENABLED"] = "false"
        os.environ["DISABLE_DATA_DESIGNER_PLUGINS"] = "true"
        os.environ["DATA_DESIGNER_SKIP_MODEL_HEALTH_CHECKS"] = "1"
        os.environ["DATA_DESIGNER_HOME"] = os.path.join(tmp, "home")
        os.environ["DATA_DESIGNER_MANAGED_ASSETS_PATH"] = os.path.join(tmp, "home", "managed-assets")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.pop("DATA_DESIGNER_ASYNC_TRACE", None)
        _run(args, prompts, systems, params, n_req, tmp)  # per-row seeds are not sendable (see docstring)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, prompts, systems, params, n_req, tmp) -> None:
    import pandas as pd

    import data_designer.config as dd
    from data_designer.interface import DataDesigner

    class _BenchDataDesigner(DataDesigner):
        """Keeps the run's resource provider (for usage stats) and skips dataset profiling."""

        last_resource_provider = None

        def _create_resource_provider(self, *a, **kw):
            rp = super()._create_resource_provider(*a, **kw)
            self.last_resource_provider = rp
            return rp

        def _create_dataset_profiler(self, *a, **kw):
            class _NoProfiler:
                def profile_dataset(self, *a, **kw):
                    return None

            return _NoProfiler()

    c = max(1, args.concurrency)
    inference = dd.ChatCompletionInferenceParams(
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        max_tokens=params.get("max_tokens"),
        max_parallel_requests=c,
        timeout=600,
    )
    model_config = dd.ModelConfig(
        alias=ALIAS, model=args.model, provider=PROVIDER, inference_parameters=inference, skip_health_check=True
    )
    provider = dd.ModelProvider(name=PROVIDER, endpoint=args.base_url.rstrip("/"), provider_type="openai",
                                api_key="none")

    seed_df = pd.DataFrame({"prompt": prompts})
    has_system = any(s is not None for s in systems)
    if has_system:
        seed_df["system"] = [s or "" for s in systems]
    builder = dd.DataDesignerConfigBuilder(model_configs=[model_config])
    builder.with_seed_dataset(dd.DataFrameSeedSource(df=seed_df), sampling_strategy=dd.SamplingStrategy.ORDERED)
    builder.add_column(dd.LLMTextColumnConfig(
        name=OUT_COLUMN, model_alias=ALIAS, prompt="{{ prompt }}",
        system_prompt="{{ system }}" if has_system else None,
    ))

    designer = _BenchDataDesigner(artifact_path=os.path.join(tmp, "artifacts"), model_providers=[provider])
    designer.set_run_config(dd.RunConfig(
        buffer_size=max(1000, c),
        max_in_flight_tasks=max(1024, 2 * c),
        otel_metrics_port=None,
        display_tui=False,
    ))
    setup_s = time.perf_counter() - _T_START

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    try:
        results = designer.create(builder, num_records=n_req, dataset_name="bench")
        df = results.load_dataset()
    except Exception as exc:  # noqa: BLE001
        _fail(f"generation failed: {type(exc).__name__}: {exc}")
    wall_s = time.perf_counter() - t0
    cpu_s = cpu_seconds() - cpu0

    texts = [t for t in (df[OUT_COLUMN].tolist() if OUT_COLUMN in df.columns else []) if isinstance(t, str)]
    n = len(texts)

    prompt_tokens = completion_tokens = None
    rp = designer.last_resource_provider
    if rp is not None:
        usage = rp.model_registry.get_model_usage_snapshot()
        if usage:
            prompt_tokens = sum(u.token_usage.input_tokens for u in usage.values())
            completion_tokens = sum(u.token_usage.output_tokens for u in usage.values())

    result = {
        "tool": "datadesigner",
        "version": importlib.metadata.version("data-designer"),
        "n": n,
        "completion_tokens": completion_tokens,
        "prompt_tokens": prompt_tokens,
        "wall_s": wall_s,
        "setup_s": setup_s,
        "cpu_s": cpu_s,
        "per_row_seed": False,
        "texts": texts[:2],
    }
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")
    if n < n_req:
        _fail(f"only {n} of {n_req} rows came back")


if __name__ == "__main__":
    main()
