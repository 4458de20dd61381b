"""The subjectivity view (Li et al., EMNLP 2023): synthetic data serves a task less the more subjective it is.

* **Instance level** (:func:`agreement_bins`): accuracy per bin of annotator agreement (the share of annotators
  who chose a text's label), for one trained model; the evaluation stores the bins in each row's ``details``.
  Few distinct agreement values (<= ``MAX_DISTINCT``, e.g. Financial PhraseBank's 0.5/0.66/0.75/1) are one bin
  each, else bins of width ``BIN_WIDTH``.
* **Task level** (:func:`task_rows`): per spec, macro-F1 trained on synthetic, real ("gold") and both, the gap
  (gold - synthetic), the diversity and similarity metrics of the quality stage, and the accuracy drop from
  the most to the least agreed bin; :func:`advice` turns a large gap or drop into one sentence.

Pure computation over evaluation and metrics rows; the charts and pages are in
:mod:`factory.quality.report`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from factory.spec import Spec
    from factory.store import Store

MAX_DISTINCT = 8  # at most this many distinct agreement values: one bin each
BIN_WIDTH = 0.2
MIN_BIN = 5  # a bin needs this many texts to count for the drop
GAP_WARN = 0.1  # gold macro-F1 - synthetic macro-F1 above this: warn
DROP_WARN = 0.15  # accuracy at the most agreed bin - at the least agreed bin above this: warn
SOURCES = ("synthetic", "gold", "synthetic+gold")
METRICS = ("aps", "remote_clique", "chamfer_distance", "top5_similarity")
GENERIC_STEMS = {"test", "dev", "valid", "validation", "train", "eval", "data"}


def annotation_agreement(annotations: Sequence[str], label: str) -> float:
    """The share of ``annotations`` equal to ``label`` (rounded to 4 places)."""
    if not annotations:
        raise ValueError("no annotations")
    return round(sum(a == label for a in annotations) / len(annotations), 4)


def _bin_edges(agreement: Sequence[float]) -> list[tuple[float, float]]:
    distinct = sorted({round(a, 2) for a in agreement})
    if len(distinct) <= MAX_DISTINCT:
        return [(v, v) for v in distinct]
    n = math.ceil(1 / BIN_WIDTH - 1e-9)
    return [(round(i * BIN_WIDTH, 4), round(min(1.0, (i + 1) * BIN_WIDTH), 4)) for i in range(n)]


def _in_bin(value: float, lo: float, hi: float) -> bool:
    if lo == hi:
        return round(value, 2) == lo
    return lo <= value < hi or (hi >= 1.0 and value == hi)


def agreement_bins(labels: Sequence[Any], predictions: Sequence[Any], agreement: Sequence[float]
                   ) -> list[dict[str, Any]]:
    """Accuracy (exact match) per agreement bin, lowest agreement first: ``lo``, ``hi``, ``label``, ``n``,
    ``correct``, ``accuracy`` (None for an empty bin)."""
    if not len(labels) == len(predictions) == len(agreement):
        raise ValueError("labels, predictions and agreement differ in length")
    out = []
    for lo, hi in _bin_edges(agreement):
        hits = [_same(y, p) for y, p, a in zip(labels, predictions, agreement) if _in_bin(a, lo, hi)]
        label = f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"
        out.append({"lo": lo, "hi": hi, "label": label, "n": len(hits), "correct": sum(hits),
                    "accuracy": round(sum(hits) / len(hits), 4) if hits else None})
    return out


def _same(label: Any, prediction: Any) -> bool:
    if isinstance(label, (list, tuple)):
        return sorted(label) == sorted(prediction)
    return label == prediction


def agreement_drop(bins: Sequence[dict[str, Any]], min_n: int = MIN_BIN) -> dict[str, Any] | None:
    """Accuracy at the most agreed bin minus at the least agreed one (bins of at least ``min_n`` texts)."""
    usable = [b for b in bins if b["n"] >= min_n and b["accuracy"] is not None]
    if len(usable) < 2:
        return None
    low, high = usable[0], usable[-1]
    return {"drop": round(high["accuracy"] - low["accuracy"], 4), "low": low, "high": high}


# ---- task level -------------------------------------------------------------------------------------


@dataclass
class TaskRow:
    """One spec's evaluations, seen for subjectivity."""

    task: str
    spec_name: str
    spec_hash: str
    method: str
    trainer: str | None
    n_test: int | None
    f1: dict[str, float] = field(default_factory=dict)  # train source -> macro-F1
    bins: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # train source -> agreement bins
    metrics: dict[str, float | None] = field(default_factory=dict)

    @property
    def gap(self) -> float | None:
        """Gold macro-F1 minus synthetic macro-F1 (None without both)."""
        if "gold" in self.f1 and "synthetic" in self.f1:
            return round(self.f1["gold"] - self.f1["synthetic"], 4)
        return None

    def drop(self, source: str = "synthetic") -> dict[str, Any] | None:
        return agreement_drop(self.bins.get(source, []))

    @property
    def advice(self) -> str | None:
        return advice(self)


def task_name(test_set: str | None, fallback: str) -> str:
    """A task's name from its test set's path: the file's stem, or its folder's name for ``test.jsonl`` and
    the like."""
    if not test_set:
        return fallback
    path = Path(test_set)
    return path.parent.name if path.stem.lower() in GENERIC_STEMS and path.parent.name else path.stem


def task_row(spec_name: str, spec_hash: str, method: str, evaluations: Sequence[dict[str, Any]],
             metrics: Sequence[dict[str, Any]]) -> TaskRow:
    """A spec's row from its evaluation rows (oldest first: the newest per source wins; synthetic at its
    largest budget fraction, with the newest row's trainer) and its ``overall`` metrics rows."""
    trainer = evaluations[-1]["trainer"] if evaluations else None
    chosen: dict[str, dict[str, Any]] = {}
    for r in evaluations:
        if r["trainer"] != trainer or r["train_source"] not in SOURCES:
            continue
        best = chosen.get(r["train_source"])
        if best is None or r["budget_fraction"] >= best["budget_fraction"]:
            chosen[r["train_source"]] = r
    newest = evaluations[-1] if evaluations else {}
    row = TaskRow(task_name(newest.get("test_set"), spec_name), spec_name, spec_hash,
                  newest.get("method") or method, trainer, (newest.get("details") or {}).get("n_test"))
    for source, r in chosen.items():
        row.f1[source] = float(r["macro_f1"])
        bins = (r.get("details") or {}).get("agreement_bins")
        if bins:
            row.bins[source] = bins
    overall = {m["name"]: m["value"] for m in metrics if m["scope"] == "overall"}
    row.metrics = {k: (float(overall[k]) if overall.get(k) is not None else None) for k in METRICS}
    return row


def task_rows(store: Store, specs: Sequence[Spec]) -> list[TaskRow]:
    """One row per spec, from what the store holds (specs without evaluations included, empty)."""
    return [task_row(s.name, s.hash, s.generation.method, store.evaluations([s.hash]),
                     store.metrics(s.hash, "overall")) for s in specs]


def advice(row: TaskRow, gap_warn: float = GAP_WARN, drop_warn: float = DROP_WARN) -> str | None:
    """One sentence with the numbers where synthetic data serves the task badly: a gold-synthetic gap above
    ``gap_warn``, or synthetic-trained accuracy falling by more than ``drop_warn`` towards low agreement."""
    parts = []
    gap = row.gap
    if gap is not None and gap > gap_warn:
        parts.append(f"synthetic data is {gap:.2f} F1 below real data on this task "
                     f"({row.f1['synthetic']:.2f} vs {row.f1['gold']:.2f} macro-F1)")
    drop = row.drop("synthetic")
    if drop is not None and drop["drop"] > drop_warn:
        gold = row.drop("gold")
        ref = f"; trained on real data: {gold['drop']:.2f}" if gold else ""
        parts.append(f"the model is weakest where annotators disagree (accuracy {drop['high']['accuracy']:.2f} at "
                     f"agreement {drop['high']['label']}, {drop['low']['accuracy']:.2f} at {drop['low']['label']}"
                     f"{ref})")
    if not parts:
        return None
    return (f"{row.spec_name} ({row.method}): " + "; ".join(parts)
            + " — consider few-shot generation with real examples or a small real set.")


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_task_table(rows: Sequence[TaskRow]) -> str:
    """A plain-text table of task rows: macro-F1 per source, the gap, the quality metrics, the drop."""
    head = (f"{'task':<22} {'spec':<28} {'method':<10} {'synth':>6} {'gold':>6} {'both':>6} {'gap':>6} "
            f"{'APS':>6} {'clique':>6} {'chamf':>6} {'top5':>6} {'drop':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        drop = r.drop("synthetic")
        lines.append(f"{r.task[:22]:<22} {r.spec_name[:28]:<28} {r.method[:10]:<10} {_f(r.f1.get('synthetic')):>6} "
                     f"{_f(r.f1.get('gold')):>6} {_f(r.f1.get('synthetic+gold')):>6} {_f(r.gap):>6} "
                     + " ".join(f"{_f(r.metrics.get(k)):>6}" for k in METRICS)
                     + f" {_f(drop['drop'] if drop else None):>6}")
    return "\n".join(lines)
