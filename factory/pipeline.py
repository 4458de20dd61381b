"""The stages of one run, in the order of the data: spec -> attributes -> generation.

The CLI (and the orchestrator) call these; each stage commits its own transaction.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from factory.attributes import ALL, AttributeSet, elicited_dimensions, needs_elicitation, needs_similar
from factory.elicit import Elicitor
from factory.generate import GenerationReport, generate
from factory.llm.budget import Budget
from factory.llm.client import Endpoint, open_endpoint, open_engine
from factory.llm.engine import digest
from factory.lock import LockFile, attribute_set, caf_decisions, check_lock, lock_path, read_lock, to_lock, write_lock
from factory.spec import Spec
from factory.store import Store

log = logging.getLogger("factory.pipeline")


@dataclass
class RunResult:
    run_id: str
    status: str
    report: GenerationReport


def record_spec(store: Store, spec: Spec) -> None:
    """Stage 1: the spec, with its content hash and YAML text."""
    text = spec.source.read_text(encoding="utf-8") if spec.source else spec.model_dump_json()
    store.record_spec(spec, text)


# ---- stage 2: attributes --------------------------------------------------------------------------


def record_lock(store: Store, spec: Spec, lock: LockFile, source: str) -> None:
    """Store the lock's content as a new attribute version, unless the newest version is the same."""
    content = lock.model_dump(exclude={"created"})
    fingerprint = digest(content)[:16]
    if store.latest_elicitation(spec.hash)[1] == fingerprint:
        return
    decisions = caf_decisions(lock)
    values = [(d, c, v, True) for d, a in lock.attributes.items()
              for c, vs in (a.values.items() if isinstance(a.values, dict) else [(ALL, a.values)]) for v in vs]
    values += [(d.dimension, d.class_name, d.value, False) for d in decisions if d.dropped]
    similar = [(c, s, rank) for c, ss in lock.similar_classes.items() for rank, s in enumerate(ss, 1)]
    caf = [(d.dimension, d.class_name, d.value, d.dropped, ",".join(d.relevant_to), d.reason) for d in decisions]
    store.save_elicitation(spec.hash, source, lock.model, fingerprint, values, similar, caf)


async def _elicit(spec: Spec, store: Store, endpoint: Endpoint) -> LockFile:
    budget = Budget.from_spec(spec.budget, spec.generation.model)
    async with open_engine(spec.generation, store, endpoint, budget) as engine:
        elicited = await Elicitor(spec, engine).run(elicited_dimensions(spec), needs_similar(spec))
    return to_lock(spec, elicited)


def elicit_lock(spec: Spec, store: Store, endpoint: Endpoint) -> LockFile:
    """Elicit through ``endpoint``, write the lock file next to the spec (if it has a file), store it."""
    lock = asyncio.run(_elicit(spec, store, endpoint))
    if spec.source is not None:
        try:
            write_lock(lock_path(spec), lock)
        except OSError as exc:  # e.g. specs mounted read-only from a ConfigMap: the store keeps the versions
            log.warning("could not write %s (%s); the elicited values are in the store", lock_path(spec), exc)
    record_lock(store, spec, lock, "elicited")
    return lock


def existing_lock(spec: Spec) -> tuple[LockFile, Path] | None:
    """The spec's lock file, validated against the spec; None when there is none."""
    if spec.source is None or not lock_path(spec).is_file():
        return None
    path = lock_path(spec)
    lock = read_lock(path)
    check_lock(spec, lock, path)
    return lock, path


def resolve_attributes(spec: Spec, store: Store, endpoint: Endpoint | None, refresh: bool = False) -> AttributeSet:
    """Stage 2: given values, plus the lock's (or freshly elicited) values and similar classes."""
    if not needs_elicitation(spec):
        return attribute_set(spec, None)
    found = None if refresh else existing_lock(spec)
    if found is not None:
        record_lock(store, spec, found[0], "lock")
        return attribute_set(spec, found[0])
    if endpoint is None:
        raise RuntimeError("elicitation needs an endpoint")
    return attribute_set(spec, elicit_lock(spec, store, endpoint))


def attributes_stage(spec: Spec, store: Store, refresh: bool = False) -> AttributeSet:
    """Stage 2 on its own: starts an endpoint only when something must be elicited."""
    if not needs_elicitation(spec) or (not refresh and existing_lock(spec) is not None):
        return resolve_attributes(spec, store, None, refresh)
    with open_endpoint(spec.generation) as endpoint:
        return resolve_attributes(spec, store, endpoint, refresh)


def lock(spec: Spec, store: Store, refresh: bool = False) -> tuple[LockFile, bool]:
    """``factory lock``: the lock file, elicited only when missing or ``refresh``; (lock, elicited now)."""
    found = None if refresh else existing_lock(spec)
    if found is not None:
        return found[0], False
    with open_endpoint(spec.generation) as endpoint:
        return elicit_lock(spec, store, endpoint), True


# ---- stage 3: generation, and the whole run -------------------------------------------------------


def generation_stage(spec: Spec, store: Store, attrs: AttributeSet, show_progress: bool = False,
                     endpoint: Endpoint | None = None) -> RunResult:
    """Generate into a new run; the run row says how it ended (done, budget_stopped or failed)."""
    run_id = store.start_run(spec)
    try:
        if endpoint is None:
            with open_endpoint(spec.generation) as opened:
                report = generate(spec, store, run_id, attrs, opened, show_progress)
        else:
            report = generate(spec, store, run_id, attrs, endpoint, show_progress)
    except BaseException as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    status = "budget_stopped" if report.stopped else "done"
    store.set_run_cached(run_id, report.cached)
    store.finish_run(run_id, status, report.stopped or "")
    return RunResult(run_id, status, report)


def run(spec: Spec, store: Store, show_progress: bool = False, refresh: bool = False) -> RunResult:
    """Spec, attributes and generation in one call, sharing one endpoint (the stages of the asset graph)."""
    record_spec(store, spec)
    generating = False
    try:
        with open_endpoint(spec.generation) as endpoint:
            attrs = resolve_attributes(spec, store, endpoint, refresh)
            generating = True
            return generation_stage(spec, store, attrs, show_progress, endpoint)
    except BaseException as exc:
        if not generating:  # generation_stage records its own failures
            store.finish_run(store.start_run(spec), "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
