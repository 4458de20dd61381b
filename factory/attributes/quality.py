"""Elicitation quality: how many of a dimension's values are degenerate, and how distinct they are.

A weak model asked for attribute values may answer with noise: a word repeated (``SenderSenderSender``,
``Sender``/``SenderSender``), identifiers (``negative_topic_id``, ``styleValues``, ``style_values_1``,
hex ids), numbers where words are expected, class names, or near-duplicates of one another. The functions
here are pure, on value lists, with an optional embedding function (unit-norm vectors) for the
near-duplicates and the mean pairwise cosine; a dimension with more than :data:`NOISY_SHARE` degenerate
values gets a warning suggesting ``values:``/``values_file:`` or a stronger ``elicitation.model``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from factory.labels import name_key

if TYPE_CHECKING:
    from factory.spec import Spec

Embed = Callable[[list[str]], Any]  # texts -> unit-norm vectors (a numpy array, one row per text)
NOISY_SHARE = 0.5
NEAR_DUP_COSINE = 0.9
# in the order a value's kind is decided: the first that applies
KINDS = ("class_name", "repeated", "identifier", "number", "duplicate", "near_duplicate")

_SNAKE = re.compile(r"^[A-Za-z0-9]+(?:_[A-Za-z0-9]+)+$")
_CAMEL = re.compile(r"^[a-z]{2,}(?:[A-Z][a-z0-9]*)+$")  # negativeTopicId; not iPhone, eBay
_PASCAL = re.compile(r"^(?:[A-Z][a-z0-9]+){3,}$")  # NegativeTopicId; not YouTube, PlayStation
_NUMBERED = re.compile(r"^[a-z]{4,}\d+$")  # value1, topic12
_HEX = re.compile(r"^(?:0x)?(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}$|^[0-9a-f]{8}-[0-9a-f]{4}-",
                  re.IGNORECASE)
_NUMBER = re.compile(r"^[\d\s.,:;%+\-/$€£#()x×]+$")
_TRIPLE = re.compile(r"(.{3,}?)\1{2,}")


def is_noisy(degenerate: int, values: int) -> bool:
    """A value list is mostly noise when more than :data:`NOISY_SHARE` of it is degenerate."""
    return values > 0 and degenerate / values > NOISY_SHARE


def repeated_unit(value: str) -> str | None:
    """The unit a value repeats (``SenderSender`` -> ``sender``): glued twice or more, or three times
    anywhere in it; a spaced double such as ``Bora Bora`` is a real name and passes."""
    squashed = name_key(value)
    whole = re.fullmatch(r"(.+?)\1+", squashed)
    if whole and len(whole.group(1)) >= 2:
        times = len(squashed) // len(whole.group(1))
        if times >= 3 or not re.search(r"[\s\-_/]", value.strip()):
            return whole.group(1)
    triple = _TRIPLE.search(squashed)
    return triple.group(1) if triple else None


def is_identifier(value: str) -> bool:
    """snake_case, camelCase, PascalCase of 3+ words, ``name12`` or a hex id: a token, not a value."""
    v = value.strip()
    return any(p.match(v) for p in (_SNAKE, _CAMEL, _PASCAL, _NUMBERED, _HEX))


def is_number(value: str) -> bool:
    """Digits and punctuation only (``42``, ``3.5%``, ``1-2``)."""
    v = value.strip()
    return bool(_NUMBER.match(v)) and any(ch.isdigit() for ch in v)


def value_kinds(values: Sequence[str], class_names: Sequence[str], numeric: bool = False) -> dict[str, str]:
    """value -> the first :data:`KINDS` entry that makes it degenerate (without embeddings); good values
    are absent. ``numeric``: a dimension of numbers (``range``/``unit``), where numbers are expected."""
    classes = {name_key(c) for c in class_names}
    squashed = {v: name_key(v) for v in values}
    units = {v: repeated_unit(v) for v in values}  # once per value, not once per pair
    out: dict[str, str] = {}
    seen: set[str] = set()
    for v in values:
        key = squashed[v]
        repeated_by_other = any(o != v and len(s) > len(key) > 1 and units[o] == key for o, s in squashed.items())
        if key in classes:
            out[v] = "class_name"
        elif units[v] is not None or repeated_by_other:
            out[v] = "repeated"
        elif is_identifier(v):
            out[v] = "identifier"
        elif not numeric and is_number(v):
            out[v] = "number"
        elif key in seen:
            out[v] = "duplicate"
        seen.add(key)
    return out


@dataclass(frozen=True)
class GroupQuality:
    """The values of one dimension (of one class, for a per-class dimension): counts and distinctness."""

    dimension: str
    class_name: str  # "" for a class-independent dimension
    values: int
    kinds: dict[str, str] = field(default_factory=dict)  # degenerate value -> its kind
    mean_cosine: float | None = None  # mean pairwise cosine of the values; None without embeddings
    embedding: str = "skipped"  # "ok", or why the embedding checks were skipped

    @property
    def degenerate(self) -> int:
        return len(self.kinds)

    @property
    def share(self) -> float:
        return self.degenerate / self.values if self.values else 0.0

    @property
    def noisy(self) -> bool:
        return is_noisy(self.degenerate, self.values)

    def counts(self) -> dict[str, int]:
        return {k: n for k in KINDS if (n := sum(1 for kind in self.kinds.values() if kind == k))}


def group_quality(dimension: str, class_name: str, values: Sequence[str], class_names: Sequence[str],
                  numeric: bool = False, embed: Embed | None = None, skipped: str = "skipped") -> GroupQuality:
    """The quality of one value list; with ``embed``, a value within :data:`NEAR_DUP_COSINE` of an
    earlier one is a near-duplicate, and the mean pairwise cosine is measured (``skipped`` says why not)."""
    values = list(values)
    kinds = value_kinds(values, class_names, numeric)
    if embed is None or len(values) < 2:
        return GroupQuality(dimension, class_name, len(values), kinds, None,
                            skipped if embed is None else "ok")
    import numpy as np

    vectors = np.asarray(embed(values), dtype=np.float32)
    sims = vectors @ vectors.T
    upper = sims[np.triu_indices(len(values), k=1)]
    for j in range(1, len(values)):
        if values[j] not in kinds and float(sims[j, :j].max()) >= NEAR_DUP_COSINE:
            kinds[values[j]] = "near_duplicate"
    return GroupQuality(dimension, class_name, len(values), kinds, round(float(upper.mean()), 4), "ok")


def dimension_quality(dimension: str, by_class: dict[str, list[str]], class_names: Sequence[str],
                      numeric: bool = False, embed: Embed | None = None, skipped: str = "skipped"
                      ) -> list[GroupQuality]:
    """One :class:`GroupQuality` per class (one for ``""`` where the dimension is class-independent)."""
    return [group_quality(dimension, cls, vs, class_names, numeric, embed, skipped) for cls, vs in by_class.items()]


def default_embed() -> tuple[Embed | None, str]:
    """all-MiniLM-L6-v2 (:class:`factory.quality.embeddings.Embedder`) where it is installed, else None and
    why the embedding checks are skipped."""
    from factory.quality.embeddings import EmbeddingModelMissing, Embedder, model_path

    try:
        model_path()
    except EmbeddingModelMissing as exc:
        return None, f"skipped: {str(exc).split(':')[0]}"
    embedder = Embedder(remember=True)
    return (lambda texts: embedder.encode(texts)), "ok"


def spec_class_names(spec: Spec) -> list[str]:
    """Every way the spec names a class: names, names with spaces, descriptions."""
    return [n for c in spec.classes for n in (c.name, c.name.replace("_", " "), c.description) if n]


def is_numeric(spec: Spec, dimension: str) -> bool:
    attr = spec.attributes.get(dimension)
    return attr is not None and (attr.range is not None or attr.unit is not None)


def spec_quality(spec: Spec, values: dict[str, dict[str, list[str]]], embed: Embed | None = None,
                 skipped: str = "skipped") -> list[GroupQuality]:
    """The quality of every dimension's values (dimension -> class or "" -> values)."""
    names = spec_class_names(spec)
    return [g for dim, by_class in values.items()
            for g in dimension_quality(dim, by_class, names, is_numeric(spec, dim), embed, skipped)]


def as_record(g: GroupQuality) -> dict[str, Any]:
    """What the lock file keeps of a group (see :class:`factory.attributes.lock.LockedQuality`)."""
    return {"values": g.values, "degenerate": g.degenerate, "counts": g.counts(),
            "mean_cosine": g.mean_cosine, "embedding": g.embedding,
            "flagged": [{"value": v, "reason": k} for v, k in g.kinds.items()]}
