"""Attribute values as the review page shows them, and a reviewer's edits of the lock file.

Values come from the spec (``given``: read-only on the page, edit the spec) or from the lock file
(``elicited``: a reviewer may drop or rename them; the lock is rewritten, so the edit shows in the pull
request). Values that class-agnostic filtering dropped are listed with the CAF reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from factory.attributes.lock import LockFile, check_lock, lock_path, locked_values, read_lock, write_lock
from factory.attributes.values import elicited_dimensions, given_values
from factory.spec import Spec


class EditError(ValueError):
    """An edit the lock file cannot take (a given value, an unknown value, a dimension left empty)."""


@dataclass(frozen=True)
class ValueRow:
    """One attribute value of one class (``class_name`` ``""`` for class-independent dimensions)."""

    dimension: str
    class_name: str
    value: str
    source: str  # given | elicited | caf-dropped
    reason: str = ""

    @property
    def editable(self) -> bool:
        return self.source == "elicited"


def spec_lock(spec: Spec) -> tuple[Path | None, LockFile | None]:
    """The spec's lock file path and its content (``None`` where the spec has none)."""
    if spec.source is None:
        return None, None
    path = lock_path(spec)
    return (path, read_lock(path)) if path.is_file() else (path, None)


def value_rows(spec: Spec, lock: LockFile | None) -> list[ValueRow]:
    """Every attribute value of the spec: given, elicited (from the lock) and CAF-dropped."""
    rows: list[ValueRow] = []
    elicited = set(elicited_dimensions(spec))
    locked = locked_values(lock) if lock is not None else {}
    for dim in spec.attributes:
        if dim in elicited:
            if dim not in locked:
                continue
            rows += [ValueRow(dim, c, v, "elicited") for c, vs in locked[dim].items() for v in vs]
            rows += [ValueRow(dim, c, d.value, "caf-dropped", d.reason)
                     for c, ds in lock.caf.get(dim, {}).items() for d in ds if d.dropped]
        else:
            given = given_values(spec, dim, spec.attributes[dim]) or {}
            rows += [ValueRow(dim, c, str(v), "given") for c, vs in given.items() for v in vs]
    return rows


def edit_lock(spec: Spec, dimension: str, class_name: str, value: str, new_value: str | None = None) -> Path:
    """Drop ``value`` (or rename it to ``new_value``) in the spec's lock file, validate and rewrite it."""
    path, lock = spec_lock(spec)
    if path is None or lock is None:
        raise EditError(f"{spec.name} has no lock file: its values come from the spec (edit the spec instead)")
    if dimension not in lock.attributes:
        raise EditError(f"{dimension}: not an elicited dimension of the lock file")
    data = lock.model_dump(mode="json")
    values = data["attributes"][dimension]["values"]
    items: list[str] = values.get(class_name, []) if isinstance(values, dict) else values
    if value not in items:
        raise EditError(f"{dimension}/{class_name or 'all'}: no value {value!r} in {path.name}")
    if new_value is None:
        if len(items) == 1:
            raise EditError(f"{dimension}/{class_name or 'all'}: cannot drop the last value")
        items.remove(value)
    else:
        new_value = new_value.strip()
        if not new_value or new_value.lower() in {v.lower() for v in items if v != value}:
            raise EditError(f"{dimension}/{class_name or 'all'}: {new_value!r} is empty or already a value")
        items[items.index(value)] = new_value
    data.get("quality", {}).get(dimension, {}).pop(class_name, None)  # measured again when shown
    edited = LockFile.model_validate(data)
    check_lock(spec, edited, path)
    write_lock(path, edited)
    return path
