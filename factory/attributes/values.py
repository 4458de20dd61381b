"""Attribute values and similar classes: what the spec gives, from files or inline.

The values of each dimension, per class for ``per_class`` dimensions, and the similar classes of each
class form an :class:`AttributeSet`, the input of prompt sampling.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from factory.attributes.attribute_set import ALL, AttributeSet
from factory.spec import AttributeSpec, Spec, class_values_file, values_file_problem


class NeedsElicitation(RuntimeError):
    """Some dimensions or similar classes must be elicited from the LLM first (``factory lock``)."""


def read_value_lines(path: Path) -> list[str]:
    """Values from a text or JSONL file: one value a line (JSON strings or objects with a 'value' key)."""
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if line[0] in '"{':
            try:
                item = json.loads(line)
                line = item.get("value", "") if isinstance(item, dict) else str(item)
            except json.JSONDecodeError:
                pass
        if line and line.lower() not in {v.lower() for v in out}:
            out.append(line)
    return out


def load_values_file(spec: Spec, dimension: str, attr: AttributeSpec) -> dict[str, list[str]]:
    """``values_file``: a text/JSONL file of values, a YAML/JSON mapping class -> values, or (per class)
    a directory holding ``<class>.txt`` or ``<class>.jsonl`` for every class."""
    path = spec.resolve_path(attr.values_file or "")
    problem = values_file_problem(spec, path)
    if problem:
        raise FileNotFoundError(f"attributes.{dimension}.values_file: {problem}")
    if path.is_dir():
        return {name: read_value_lines(class_values_file(path, name)) for name in spec.class_names}  # type: ignore[arg-type]
    if path.suffix in (".yaml", ".yml", ".json"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return {ALL: [str(v) for v in data]} if isinstance(data, list) else {
            k: [str(v) for v in vs] for k, vs in data.items()}
    values = read_value_lines(path)
    return {ALL: values}


def given_values(spec: Spec, dimension: str, attr: AttributeSpec) -> dict[str, list[str]] | None:
    """The values the spec gives for a dimension, or None when they must be elicited."""
    if attr.values is not None:
        return dict(attr.values) if isinstance(attr.values, dict) else {ALL: list(attr.values)}
    if attr.range is not None:
        return {ALL: attr.range.values()}
    if attr.values_file is not None:
        return load_values_file(spec, dimension, attr)
    return None


def used_dimensions(spec: Spec) -> list[str]:
    """The dimensions the spec's generation method puts into prompts (simprompt: none; zeroshot: style)."""
    from factory.generation.methods import method_for

    return method_for(spec).dimensions(spec)


def elicited_dimensions(spec: Spec) -> list[str]:
    """The dimensions the method uses whose values the spec leaves to the LLM."""
    return [d for d in used_dimensions(spec) if spec.attributes[d].elicit is not None]


def needs_similar(spec: Spec) -> bool:
    """Similar classes are elicited when the spec gives none and the method's prompts or CAF need them."""
    if spec.similar_classes.k == 0 or spec.similar_classes.given:
        return False
    from factory.generation.methods import method_for

    per_class = any(spec.attributes[d].per_class for d in elicited_dimensions(spec))
    return method_for(spec).uses_similar(spec) or (per_class and spec.filters.caf)


def needs_elicitation(spec: Spec) -> bool:
    return bool(elicited_dimensions(spec)) or needs_similar(spec)


def method_values(spec: Spec, fallback: Callable[[str, AttributeSpec], dict[str, list[str]] | None]
                  ) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """The values of every dimension the method uses (given in the spec, else ``fallback(dim, attr)``) and
    the dimensions neither supplies."""
    values: dict[str, dict[str, list[str]]] = {}
    missing = []
    for dim in used_dimensions(spec):
        attr = spec.attributes[dim]
        found = given_values(spec, dim, attr)
        if found is None:
            found = fallback(dim, attr)
        if found is None:
            missing.append(dim)
        else:
            values[dim] = found
    return values, missing


def build_attribute_set(spec: Spec, elicited: dict[str, dict[str, list[str]]] | None = None,
                        similar: dict[str, list[str]] | None = None) -> AttributeSet:
    """The values of the dimensions the method uses: given in the spec, else ``elicited``; raise
    :class:`NeedsElicitation` if any is missing."""
    values, missing = method_values(spec, lambda dim, attr: (elicited or {}).get(dim))
    chosen = dict(spec.similar_classes.given or similar or {})
    if needs_similar(spec) and not chosen:
        missing.append("similar_classes")
    if missing:
        raise NeedsElicitation(f"{spec.name}: {', '.join(missing)} must be elicited first (run 'factory lock')")
    units = {dim: attr.unit for dim, attr in spec.attributes.items() if attr.unit and dim in values}
    return AttributeSet(values, {c: chosen.get(c, []) for c in spec.class_names}, units)


def given_attributes(spec: Spec) -> AttributeSet:
    """The attribute set from the spec alone."""
    return build_attribute_set(spec)
