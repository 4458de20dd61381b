"""The attributes stage: the spec's given values plus the lock file's (or freshly elicited) values and
similar classes, recorded in the store as a new version whenever they change."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from factory.attributes.elicit import Elicited, Elicitor
from factory.attributes.quality import default_embed, spec_quality
from factory.attributes.lock import (
    LockFile,
    attribute_set,
    caf_decisions,
    check_lock,
    lock_path,
    noisy_warnings,
    read_lock,
    to_lock,
    write_lock,
)
from factory.attributes.values import ALL, AttributeSet, elicited_dimensions, needs_elicitation, needs_similar
from factory.generation.llm.budget import Budget
from factory.generation.llm.client import Endpoint, EndpointProvider, open_engine
from factory.keys import digest
from factory.spec import Spec
from factory.store import Store

log = logging.getLogger("factory.attributes")


def record_lock(store: Store, spec: Spec, lock: LockFile, source: str) -> None:
    """Store the lock's content as a new attribute version, unless the newest version is the same."""
    # quality is derived from the values (and from whether the embedding model is installed): never a new version
    content = lock.model_dump(exclude={"created", "quality"} | ({"rejected"} if not lock.rejected else set()))
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


async def _elicit(spec: Spec, store: Store, endpoint: Endpoint) -> Elicited:
    gen = spec.elicitation_generation
    budget = Budget.from_spec(spec.budget, gen.model)
    async with open_engine(gen, store, endpoint, budget) as engine:
        return await Elicitor(spec, engine).run(elicited_dimensions(spec), needs_similar(spec))


def elicit_lock(spec: Spec, store: Store, endpoint: Endpoint, embed: bool = True) -> LockFile:
    """Elicit through ``endpoint``, measure the values' quality (with embeddings where ``embed`` and the
    model is installed), write the lock file next to the spec (if it has a file), store it."""
    elicited = asyncio.run(_elicit(spec, store, endpoint))
    fn, why = default_embed() if embed else (None, "skipped: not asked for")
    lock = to_lock(spec, elicited, spec_quality(spec, elicited.values, fn, why))
    for line in noisy_warnings(lock.quality):
        log.warning("%s", line)
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


def resolve_lock(spec: Spec, store: Store, endpoints: EndpointProvider, refresh: bool = False
                 ) -> tuple[LockFile | None, bool]:
    """The lock the run uses (None when the spec gives every value) and whether it was elicited now; an
    endpoint is opened only when something must be elicited."""
    if not needs_elicitation(spec):
        return None, False
    found = None if refresh else existing_lock(spec)
    if found is not None:
        record_lock(store, spec, found[0], "lock")
        return found[0], False
    return elicit_lock(spec, store, endpoints.endpoint(spec.elicitation_generation)), True


def resolve_attributes(spec: Spec, store: Store, endpoints: EndpointProvider, refresh: bool = False
                       ) -> tuple[AttributeSet, LockFile | None]:
    """Stage 2: the attribute set the plan samples from, and the lock it came from."""
    lock, _ = resolve_lock(spec, store, endpoints, refresh)
    return attribute_set(spec, lock), lock
