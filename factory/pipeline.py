"""The stages of one run, in the order of the data: spec -> attributes -> generation.

The CLI (and later the orchestrator) call these; each stage commits its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from factory.attributes import AttributeSet, given_attributes
from factory.generate import GenerationReport, generate
from factory.llm.client import open_endpoint
from factory.spec import Spec
from factory.store import Store


@dataclass
class RunResult:
    run_id: str
    status: str
    report: GenerationReport


def record(store: Store, spec: Spec) -> str:
    """Stage 1: the spec and a new run, committed together."""
    text = spec.source.read_text(encoding="utf-8") if spec.source else spec.model_dump_json()
    with store.transaction():
        store.record_spec(spec, text)
        return store.start_run(spec)


def resolve_attributes(spec: Spec, store: Store) -> AttributeSet:
    """Stage 2: attribute values and similar classes."""
    return given_attributes(spec)


def run(spec: Spec, store: Store, show_progress: bool = False) -> RunResult:
    """Record, resolve attributes and generate; the run row says how it ended."""
    run_id = record(store, spec)
    try:
        attrs = resolve_attributes(spec, store)
        with open_endpoint(spec.generation) as endpoint:
            report = generate(spec, store, run_id, attrs, endpoint, show_progress)
    except BaseException as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    status = "budget_stopped" if report.stopped else "done"
    store.set_run_cached(run_id, report.cached)
    store.finish_run(run_id, status, report.stopped or "")
    return RunResult(run_id, status, report)
