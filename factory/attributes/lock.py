"""The lock file: elicited values, similar classes and CAF decisions, committed next to the spec.

``factory lock specs/agnews.yaml`` writes ``specs/agnews.lock.yaml`` so that a reviewer sees in a pull
request what the LLM proposed. ``factory run`` uses the lock when present (no re-elicitation, the same
prompts bit for bit); ``--refresh`` elicits again. Hand edits are honoured, and validated like the spec.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator

from factory.attributes.values import ALL, AttributeSet, build_attribute_set, elicited_dimensions, needs_similar
from factory.attributes.caf import CafDecision
from factory.attributes.elicit import Elicited
from factory.attributes.quality import GroupQuality, as_record, is_noisy, spec_quality
from factory.keys import digest
from factory.spec import Spec, SpecError, SpecIssue, StrictModel, parse_yaml_model

HEADER = ("# attrfactory lock file, written by `factory lock`: what the LLM elicited for this spec.\n"
          "# Review it like code. Hand edits are honoured (and validated); `factory lock --refresh` redoes it.\n")


class LockedCaf(StrictModel):
    value: str
    dropped: bool
    relevant_to: list[str] = Field(default_factory=list)
    reason: str = ""


class LockedRejection(StrictModel):
    value: str
    reason: str


class LockedQuality(StrictModel):
    """:func:`factory.attributes.quality.as_record` of one value list: degenerate values by kind, and how
    distinct the values are (mean pairwise cosine; None where the embedding checks were skipped)."""

    values: int
    degenerate: int
    counts: dict[str, int] = Field(default_factory=dict)
    mean_cosine: float | None = None
    embedding: str = "skipped"
    flagged: list[LockedRejection] = Field(default_factory=list)

    @property
    def noisy(self) -> bool:
        return is_noisy(self.degenerate, self.values)


class LockedDimension(StrictModel):
    values: list[str] | dict[str, list[str]]

    @field_validator("values")
    @classmethod
    def _non_empty(cls, value: list[str] | dict[str, list[str]]) -> list[str] | dict[str, list[str]]:
        for items in value.values() if isinstance(value, dict) else [value]:
            if not items or any(not str(v).strip() for v in items):
                raise ValueError("values must be non-empty strings, at least one")
            if len({v.strip().lower() for v in items}) != len(items):
                raise ValueError("values must not repeat (case-insensitive)")
        return value


class LockFile(StrictModel):
    spec: str
    inputs_hash: str
    model: str
    created: str
    similar_classes: dict[str, list[str]] = Field(default_factory=dict)
    attributes: dict[str, LockedDimension] = Field(default_factory=dict)
    caf: dict[str, dict[str, list[LockedCaf]]] = Field(default_factory=dict)
    # values dropped right after elicitation: dimension -> class ("" for class-independent) -> value, reason
    rejected: dict[str, dict[str, list[LockedRejection]]] = Field(default_factory=dict)
    # elicitation quality: dimension -> class ("" for class-independent) -> counts (derived from the values)
    quality: dict[str, dict[str, LockedQuality]] = Field(default_factory=dict)


def lock_path(spec: Spec) -> Path:
    """``specs/agnews.yaml`` -> ``specs/agnews.lock.yaml``."""
    if spec.source is None:
        raise ValueError("a spec without a file has no lock file")
    return spec.source.with_name(f"{spec.source.stem}.lock.yaml")


def inputs_hash(spec: Spec) -> str:
    """What the elicitation depended on: a lock made for other inputs is stale. The elicitation model counts
    (:attr:`Spec.elicitation_generation`); an elicitation temperature only where the spec sets one."""
    extra = {} if spec.elicitation.temperature is None else {"temperature": spec.elicitation.temperature}
    return digest({**extra,
        "classes": [c.model_dump() for c in spec.classes], "domain": spec.domain, "task": spec.task,
        "attributes": {d: spec.attributes[d].model_dump() for d in elicited_dimensions(spec)},
        "k": spec.similar_classes.k if needs_similar(spec) else 0, "caf": spec.filters.caf,
        "model": spec.elicitation_generation.model})[:16]


def to_lock(spec: Spec, elicited: Elicited, quality: list[GroupQuality] | None = None) -> LockFile:
    caf: dict[str, dict[str, list[LockedCaf]]] = {}
    for d in elicited.caf:
        caf.setdefault(d.dimension, {}).setdefault(d.class_name, []).append(
            LockedCaf(value=d.value, dropped=d.dropped, relevant_to=d.relevant_to, reason=d.reason))
    rejected: dict[str, dict[str, list[LockedRejection]]] = {}
    for r in elicited.rejected:
        rejected.setdefault(r.dimension, {}).setdefault(r.class_name, []).append(
            LockedRejection(value=r.value, reason=r.reason))
    dims = {d: LockedDimension(values=v[ALL] if set(v) == {ALL} else v) for d, v in elicited.values.items()}
    return LockFile(spec=spec.name, inputs_hash=inputs_hash(spec), model=spec.elicitation_generation.model,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    similar_classes=elicited.similar, attributes=dims, caf=caf, rejected=rejected,
                    quality=quality_section(quality or []))


def quality_section(groups: list[GroupQuality]) -> dict[str, dict[str, LockedQuality]]:
    """The lock's ``quality`` field from :func:`factory.attributes.quality.spec_quality`."""
    out: dict[str, dict[str, LockedQuality]] = {}
    for g in groups:
        out.setdefault(g.dimension, {})[g.class_name] = LockedQuality.model_validate(as_record(g))
    return out


def locked_values(lock: LockFile) -> dict[str, dict[str, list[str]]]:
    """The lock's values as dimension -> class (ALL for class-independent) -> values."""
    return {d: (dict(a.values) if isinstance(a.values, dict) else {ALL: list(a.values)})
            for d, a in lock.attributes.items()}


def lock_quality(spec: Spec, lock: LockFile) -> dict[str, dict[str, LockedQuality]]:
    """The quality of every value list of the lock: as recorded, else (an older lock, a list edited since)
    measured now, without embeddings."""
    values = locked_values(lock)
    missing = {d: {c: vs for c, vs in by_class.items() if c not in lock.quality.get(d, {})}
               for d, by_class in values.items()}
    measured = quality_section(spec_quality(spec, {d: m for d, m in missing.items() if m}, None, "skipped: not measured"))
    return {d: {c: lock.quality.get(d, {}).get(c) or measured[d][c] for c in by_class} for d, by_class in values.items()}


def quality_rows(quality: dict[str, dict[str, LockedQuality]]) -> list[dict[str, Any]]:
    """One plain row per value list, for tables (CLI, report, Dagster metadata)."""
    return [{"dimension": dim, "class": cls or "all", "values": q.values, "degenerate": q.degenerate,
             "share": round(q.degenerate / q.values, 3) if q.values else 0.0,
             "kinds": ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in q.counts.items()) or "-",
             "mean_cosine": q.mean_cosine, "embedding": q.embedding, "noisy": q.noisy,
             "examples": [f.value for f in q.flagged[:3]]}
            for dim, by_class in quality.items() for cls, q in by_class.items()]


def noisy_warnings(quality: dict[str, dict[str, LockedQuality]]) -> list[str]:
    """One line per value list that is mostly noise (over half of it degenerate), with what to do."""
    return [f"{r['dimension']} / {r['class']}: {r['degenerate']} of {r['values']} values are degenerate ({r['kinds']}; "
            f"e.g. {', '.join(repr(e) for e in r['examples'])}): mostly noise; give them in the spec (values: or "
            "values_file:) or elicit with a stronger model (elicitation.model)"
            for r in quality_rows(quality) if r["noisy"]]


def write_lock(path: Path, lock: LockFile) -> None:
    body = yaml.safe_dump(lock.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=110)
    path.write_text(HEADER + body, encoding="utf-8")


def read_lock(path: Path) -> LockFile:
    return parse_yaml_model(path.read_text(encoding="utf-8"), LockFile, str(path))


def check_lock(spec: Spec, lock: LockFile, path: Path) -> None:
    """Raise :class:`SpecError` where the lock does not fit the spec (stale, or a hand edit gone wrong)."""
    issues: list[SpecIssue] = []
    where = str(path)
    if lock.inputs_hash != inputs_hash(spec):
        issues.append(SpecIssue(where, None, "inputs_hash", "the lock was made for other spec inputs (classes, "
                                "elicited attributes, k, caf or model changed): run 'factory lock --refresh'"))
    names = set(spec.class_names)
    for dim in elicited_dimensions(spec):
        locked = lock.attributes.get(dim)
        if locked is None:
            issues.append(SpecIssue(where, None, f"attributes.{dim}", "missing: run 'factory lock --refresh'"))
        elif isinstance(locked.values, dict):
            missing, unknown = names - set(locked.values), set(locked.values) - names
            if missing or unknown:
                issues.append(SpecIssue(where, None, f"attributes.{dim}.values",
                                        f"classes missing {sorted(missing)}, unknown {sorted(unknown)}"))
    for cls, similar in lock.similar_classes.items():
        bad = [s for s in [cls, *similar] if s not in names]
        if bad:
            issues.append(SpecIssue(where, None, f"similar_classes.{cls}", f"unknown classes {bad}"))
    if needs_similar(spec) and set(lock.similar_classes) != names:
        issues.append(SpecIssue(where, None, "similar_classes", f"needs every class: {sorted(names)}"))
    if issues:
        raise SpecError(issues)


def attribute_set(spec: Spec, lock: LockFile | None) -> AttributeSet:
    """The spec's given values and the lock's elicited ones, as one attribute set."""
    if lock is None:
        return build_attribute_set(spec)
    return build_attribute_set(spec, locked_values(lock), lock.similar_classes)


def caf_decisions(lock: LockFile) -> list[CafDecision]:
    return [CafDecision(dim, cls, d.value, d.dropped, d.relevant_to, d.reason)
            for dim, by_class in lock.caf.items() for cls, ds in by_class.items() for d in ds]

