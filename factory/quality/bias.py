"""Attribute bias: the distribution the prompts ASKED for against the one the texts SHOW.

For each attribute dimension, over the samples given (the stage passes the kept samples):

* ``asked:<value>`` — the fraction of samples whose prompt asked for the value (``samples.attributes``);
  absent for SimPrompt and other runs that ask for no attribute.
* ``shown:<value>`` — the fraction of samples whose text mentions the value: case-insensitive, as a whole
  word or phrase (so "US" also matches the pronoun "us"; keep values specific). A text may mention
  several values or none; ``unmatched`` is the fraction that mentions none of its candidate values.
* ``shown_emb:<value>`` — the fraction of samples whose text embedding is closest (cosine, argmax) to
  the value's embedding among the candidate values: every text gets exactly one value, so these sum to 1.
* ``faithfulness`` / ``faithfulness_emb`` — among samples that asked for a value, the fraction whose text
  mentions it / is closest to it; ``tv_asked_shown_emb`` — the total-variation distance between the
  asked and the embedding-shown distributions (0 = same, 1 = disjoint).
* Length dimensions (all values integers, and ``unit: words`` or a name containing "length") are read
  by word count instead: ``shown:<value>`` is the fraction of texts whose word count is nearest to the
  value (ties to the smaller); ``faithfulness`` is the fraction that landed in the asked bucket.
* ``source:<where>`` = 1 names where the values came from (``asked``, ``attribute_values``, ``spec``, or
  ``related:<spec name>:<hash>``); ``n`` is the number of samples.

Candidate values of a sample are its class's values plus the class-independent ones.

Which values: the newest ``attribute_values`` version of the spec (elicited or locked values), the
values the spec gives (``values``, ``values_file``, ``range``), and every value asked in its samples.
A spec with none of these (a SimPrompt spec without attributes) borrows the dimensions of a related
spec in the store: first another spec of the same name, else one with the same class set, the most
recent first; its values are found the same way (stored attribute values, its YAML's values, the values
asked in its samples). So a SimPrompt run shows which locations, styles, subtopics ... the model
gravitates to when nobody asks. Every dimension is used, not only location-like ones; numeric length
dimensions are read by word count.

Everything is stored in ``metrics`` with scope ``bias:<dimension>``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from factory.attributes.values import ALL, given_values
from factory.spec import Spec
from factory.store import Store

EmbedFn = Callable[[Sequence[str]], NDArray[np.float32]]
SCOPE = "bias:"


@dataclass
class DimensionBias:
    """Asked vs shown for one attribute dimension."""

    dimension: str
    mode: str  # "text" (mentions + embedding argmax) or "length" (word count -> nearest value)
    source: str
    values: list[str]
    n: int
    asked: dict[str, float] = field(default_factory=dict)
    shown: dict[str, float] = field(default_factory=dict)
    shown_embedding: dict[str, float] = field(default_factory=dict)
    unmatched: float | None = None
    faithfulness: float | None = None
    faithfulness_embedding: float | None = None
    tv_asked_shown: float | None = None

    @property
    def scope(self) -> str:
        return SCOPE + self.dimension

    def metric_rows(self) -> list[tuple[str, str, float | None]]:
        rows: list[tuple[str, str, float | None]] = [(self.scope, "n", float(self.n)),
                                                      (self.scope, f"source:{self.source}", 1.0)]
        rows += [(self.scope, f"asked:{v}", f) for v, f in self.asked.items()]
        rows += [(self.scope, f"shown:{v}", f) for v, f in self.shown.items()]
        rows += [(self.scope, f"shown_emb:{v}", f) for v, f in self.shown_embedding.items()]
        for name in ("unmatched", "faithfulness", "faithfulness_embedding", "tv_asked_shown"):
            value = getattr(self, name)
            if value is not None:
                rows.append((self.scope, name if name != "faithfulness_embedding" else "faithfulness_emb", value))
        return rows


# --------------------------------------------------------------------------------------------------
# which values


def _attrs(sample: dict[str, Any]) -> dict[str, str]:
    raw = sample.get("attributes") or {}
    data = json.loads(raw) if isinstance(raw, str) else raw
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _add(target: dict[str, dict[str, list[str]]], dim: str, cls: str, value: str) -> None:
    values = target.setdefault(dim, {}).setdefault(cls, [])
    if value.lower() not in {v.lower() for v in values}:
        values.append(value)


def own_values(spec: Spec, store: Store, asked: Iterable[tuple[str, str, str]]) -> tuple[dict[str, dict[str, list[str]]], str]:
    """``{dimension: {class or '': [values]}}`` of a spec, and where they came from: its newest stored
    attribute values, else the values its YAML gives, plus the values ``asked`` (dimension, class, value)
    in its samples (under the class only for ``per_class`` dimensions)."""
    values: dict[str, dict[str, list[str]]] = {}
    sources = []
    stored = store.latest_attribute_values(spec.hash)
    for dim, cls, value in stored:
        _add(values, dim, cls, value)
    if stored:
        sources.append("attribute_values")
    for dim, attr in spec.attributes.items():
        if dim in values:
            continue
        try:
            found = given_values(spec, dim, attr)
        except (OSError, ValueError):
            found = None
        for cls, vs in (found or {}).items():
            for v in vs:
                _add(values, dim, cls, v)
        if found and "spec" not in sources:
            sources.append("spec")
    any_asked = False
    for dim, cls, value in asked:
        any_asked = True
        known = values.get(dim, {})
        if not any(value.lower() == v.lower() for vs in known.values() for v in vs):
            per_class = dim in spec.attributes and spec.attributes[dim].per_class
            _add(values, dim, cls if per_class else ALL, value)
    if any_asked and not sources:
        sources.append("asked")
    return values, "+".join(sources)


def _asked_in(samples: Sequence[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    for s in samples:
        for dim, value in _attrs(s).items():
            yield dim, s["class"], value


def _stored_spec(rec: dict[str, Any]) -> Spec | None:
    try:
        other = Spec.model_validate_json(rec["spec"])
    except ValueError:
        return None
    if rec.get("path"):
        other._source = Path(rec["path"])
    return other


def related_values(spec: Spec, store: Store) -> tuple[dict[str, dict[str, list[str]]], str]:
    """The dimensions of a related spec: another spec of the same name first, then one with the same
    class set, the newest first; the first that has any values wins."""
    classes = set(spec.class_names)
    candidates = []
    for rec in store.spec_records():
        if rec["spec_hash"] == spec.hash:
            continue
        other = _stored_spec(rec)
        if other is None:
            continue
        if rec["name"] == spec.name:
            candidates.append((0, rec, other))
        elif set(other.class_names) == classes:
            candidates.append((1, rec, other))
    candidates.sort(key=lambda c: (c[0], -c[1]["created_at"].timestamp()))
    for _, rec, other in candidates:
        asked = [(d, c, v) for d, c, v, _n in store.asked_attribute_values(rec["spec_hash"])]
        values, _source = own_values(other, store, asked)
        if values:
            return values, f"related:{rec['name']}:{rec['spec_hash']}"
    return {}, ""


# --------------------------------------------------------------------------------------------------
# asked vs shown


def _is_length(spec: Spec, dim: str, values: list[str]) -> bool:
    if not values or not all(re.fullmatch(r"\d+", v.strip()) for v in values):
        return False
    unit = spec.attributes[dim].unit if dim in spec.attributes else None
    return (unit or "").lower() in ("word", "words") or "length" in dim.lower()


def _candidates(by_class: dict[str, list[str]], cls: str) -> list[str]:
    out = list(by_class.get(cls, []))
    out += [v for v in by_class.get(ALL, []) if v not in out]
    return out


def _mention_pattern(values: list[str]) -> re.Pattern[str] | None:
    if not values:
        return None
    alts = "|".join(re.escape(v.lower()) for v in sorted(values, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alts})(?!\w)")


def _tv(p: dict[str, float], q: dict[str, float]) -> float | None:
    if not p or not q:
        return None
    keys = set(p) | set(q)
    sp, sq = sum(p.values()), sum(q.values())
    if sp <= 0 or sq <= 0:
        return None
    return 0.5 * sum(abs(p.get(k, 0.0) / sp - q.get(k, 0.0) / sq) for k in keys)


def dimension_bias(spec: Spec, dim: str, by_class: dict[str, list[str]], source: str,
                   samples: Sequence[dict[str, Any]], text_emb: NDArray[np.float32] | None,
                   embed: EmbedFn | None) -> DimensionBias:
    """Asked vs shown for one dimension over ``samples`` (``text_emb``: their unit embeddings, in order)."""
    all_values: list[str] = []
    for vs in by_class.values():
        all_values += [v for v in vs if v not in all_values]
    n = len(samples)
    asked_of = [_attrs(s).get(dim) for s in samples]
    length = _is_length(spec, dim, all_values)
    out = DimensionBias(dim, "length" if length else "text", source or "asked", all_values, n)
    if n == 0:
        return out
    asked_counts = Counter(a for a in asked_of if a is not None)
    if asked_counts:
        out.asked = {v: asked_counts.get(v, 0) / n for v in all_values}
        for v, c in asked_counts.items():  # an asked value missing from the value lists still shows
            out.asked.setdefault(v, c / n)
    if length:
        nums = {v: int(v) for v in all_values}
        shown_of = []
        for s in samples:
            words = len(s["text"].split())
            cands = _candidates(by_class, s["class"]) or all_values
            shown_of.append(min(cands, key=lambda v: (abs(nums.get(v, 0) - words), nums.get(v, 0))))
        counts = Counter(shown_of)
        out.shown = {v: counts.get(v, 0) / n for v in all_values}
        pairs = [(a, sh) for a, sh in zip(asked_of, shown_of) if a is not None]
        if pairs:
            out.faithfulness = sum(a == sh for a, sh in pairs) / len(pairs)
        out.tv_asked_shown = _tv(out.asked, out.shown)
        return out

    patterns: dict[str, tuple[re.Pattern[str] | None, dict[str, str]]] = {}
    mention_counts: Counter[str] = Counter()
    unmatched = 0
    mentioned_of: list[set[str]] = []
    for s in samples:
        cls = s["class"]
        if cls not in patterns:
            cands = _candidates(by_class, cls)
            patterns[cls] = (_mention_pattern(cands), {v.lower(): v for v in cands})
        pattern, lookup = patterns[cls]
        found = {lookup[m.group(0)] for m in pattern.finditer(s["text"].lower())} if pattern else set()
        mentioned_of.append(found)
        mention_counts.update(found)
        unmatched += not found
    out.shown = {v: mention_counts.get(v, 0) / n for v in all_values}
    out.unmatched = unmatched / n
    pairs = [(a, m) for a, m in zip(asked_of, mentioned_of) if a is not None]
    if pairs:
        out.faithfulness = sum(a.lower() in {x.lower() for x in m} for a, m in pairs) / len(pairs)

    if embed is not None and text_emb is not None and all_values:
        value_emb = np.asarray(embed(all_values), dtype=np.float32)
        index = {v: i for i, v in enumerate(all_values)}
        nearest_of: list[str] = []
        cand_idx: dict[str, np.ndarray] = {}
        for i, s in enumerate(samples):
            cls = s["class"]
            if cls not in cand_idx:
                cand_idx[cls] = np.asarray([index[v] for v in (_candidates(by_class, cls) or all_values)])
            idx = cand_idx[cls]
            sims = value_emb[idx] @ text_emb[i]
            nearest_of.append(all_values[int(idx[int(sims.argmax())])])
        counts = Counter(nearest_of)
        out.shown_embedding = {v: counts.get(v, 0) / n for v in all_values}
        pairs_e = [(a, e) for a, e in zip(asked_of, nearest_of) if a is not None]
        if pairs_e:
            out.faithfulness_embedding = sum(a == e for a, e in pairs_e) / len(pairs_e)
        out.tv_asked_shown = _tv(out.asked, out.shown_embedding)
    return out


def bias_report(spec: Spec, store: Store, samples: Sequence[dict[str, Any]], embed: EmbedFn | None = None,
                text_emb: NDArray[np.float32] | None = None) -> list[DimensionBias]:
    """Asked vs shown for every dimension of the spec (or of a related spec, for SimPrompt runs)."""
    values, source = own_values(spec, store, _asked_in(samples))
    if not values:
        values, source = related_values(spec, store)
    if not values:
        return []
    if text_emb is None and embed is not None and samples:
        text_emb = np.asarray(embed([s["text"] for s in samples]), dtype=np.float32)
    return [dimension_bias(spec, dim, by_class, source, samples, text_emb, embed)
            for dim, by_class in sorted(values.items())]


def store_bias(store: Store, spec_hash: str, report: Sequence[DimensionBias]) -> None:
    """Replace the spec's ``bias:*`` metrics by ``report`` (one transaction)."""
    rows = [row for dim in report for row in dim.metric_rows()]
    store.replace_metrics(spec_hash, rows, scopes=[SCOPE])
