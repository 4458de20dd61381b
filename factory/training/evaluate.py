"""Judging generated data: train a classifier on it, score it on a real, human-labelled test set.

* **Metrics**: :func:`factory.training.metrics.compute_metrics` (scikit-learn's), re-exported here.
* **Labels** are mapped to the spec's classes by name: exactly, else ignoring case and punctuation
  (``Sci/Tech`` and ``Sci_Tech`` are ``sci_tech``). A test (or gold train) label that matches no class is an
  error that lists every such label with its count. Multilabel labels are a list of names (JSON, Parquet
  list), or one string joining the names with ``;`` (``"sports;business"``; an empty string is no label).
* **Comparisons**: ``synthetic`` (the generated samples), ``gold`` (only the real train set),
  ``synthetic+gold`` (both).
* **F1 against budget** (:func:`budget_subsets`): nested subsets of the generated data, each the samples of
  the first X% of the requests in the plan's order (sample index, classes in turn: every prefix is
  class-balanced, and it is what a run stopped by a budget cap has spent), with the requests, tokens and
  USD those requests cost; :func:`plot_f1_vs_budget` charts them.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from factory.datasets import read_rows
from factory.labels import NameMatcher
from factory.spec import Spec
from factory.training.metrics import Label, compute_metrics
from factory.training.subjectivity import SOURCES, agreement_bins, annotation_agreement
from factory.training.trainers import Classifier, Embedder, TrainConfig, probe_embedder, train

if TYPE_CHECKING:
    from factory.store import Store

COMPARISONS = SOURCES  # what a classifier is trained on: synthetic, gold (the real train set), both
BUDGET_ORDERS = ("plan", "generated", "interleaved")


class EvaluationError(ValueError):
    """The evaluation cannot run as asked (no test set, labels that match no class, no samples...)."""


# ---- labels -----------------------------------------------------------------------------------------


class LabelMapper:
    """Maps raw labels to the spec's class names (exactly, else ignoring case and punctuation)."""

    def __init__(self, classes: Sequence[str], multilabel: bool = False):
        self.classes = list(classes)
        self.multilabel = multilabel
        self._matcher = NameMatcher(self.classes)

    def one(self, raw: Any) -> str | None:
        return self._matcher.exact(str(raw))

    def split(self, raw: Any) -> list[str]:
        """A multilabel value as a list of raw names: a list, a JSON list string, or ``;``-joined."""
        if raw is None:
            return []
        if isinstance(raw, (list, tuple, np.ndarray)):
            return [str(r).strip() for r in raw if str(r).strip()]
        text = str(raw).strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
                if isinstance(items, list):
                    return [str(r).strip() for r in items if str(r).strip()]
            except json.JSONDecodeError:
                pass
        return [part.strip() for part in text.split(";") if part.strip()]

    def map_all(self, raws: Sequence[Any], where: str) -> list[Label]:
        """Map every label; raise :class:`EvaluationError` listing the labels that match no class."""
        out: list[Label] = []
        unknown: Counter[str] = Counter()
        for raw in raws:
            if self.multilabel:
                names = []
                for part in self.split(raw):
                    mapped = self.one(part)
                    if mapped is None:
                        unknown[part] += 1
                    elif mapped not in names:
                        names.append(mapped)
                out.append(names)
            else:
                mapped = self.one(raw) if raw is not None else None
                if mapped is None:
                    unknown[str(raw)] += 1
                out.append(mapped or "")
        if unknown:
            listed = ", ".join(f"{name!r} ({n} rows)" for name, n in sorted(unknown.items()))
            raise EvaluationError(f"{where}: labels not among the spec's classes {self.classes}: {listed}. "
                                  "Rename them in the file (matching ignores case and punctuation) or fix the "
                                  "spec's classes.")
        return out


# ---- labelled files ---------------------------------------------------------------------------------


@dataclass
class LabelledSet:
    """Real labelled texts with labels mapped to the spec's classes."""

    name: str
    path: str
    texts: list[str]
    labels: list[Label]
    total_rows: int = 0
    agreement: list[float] | None = None  # per text: the share of annotators who chose its label

    def __len__(self) -> int:
        return len(self.texts)


def load_labelled(path: Path, classes: Sequence[str], multilabel: bool = False, text_field: str = "text",
                  label_field: str = "label", max_rows: int | None = None, seed: int = 0,
                  name: str = "test", agreement_field: str | None = None,
                  annotations_field: str | None = None) -> LabelledSet:
    """A labelled file, labels mapped to ``classes``; ``max_rows`` keeps a seeded random sample. Agreement per
    text comes from ``agreement_field`` (default: an ``agreement`` column if the file has one), else from
    ``annotations_field`` (the share of a text's annotations that are its label)."""
    rows = read_rows(path)
    if rows and (text_field not in rows[0] or label_field not in rows[0]):
        raise EvaluationError(f"{path}: needs columns {text_field!r} and {label_field!r} "
                              f"(found {sorted(rows[0])})")
    rows = [r for r in rows if r.get(text_field) is not None and str(r[text_field]).strip()
            and (multilabel or r.get(label_field) is not None)]
    total = len(rows)
    if max_rows is not None and len(rows) > max_rows:
        keep = sorted(random.Random(seed).sample(range(len(rows)), max_rows))
        rows = [rows[i] for i in keep]
    if not rows:
        raise EvaluationError(f"{path}: no labelled rows")
    mapper = LabelMapper(classes, multilabel)
    labels = mapper.map_all([r.get(label_field) for r in rows], f"{path} ({name} set)")
    agreement = read_agreement(rows, labels, mapper, agreement_field, annotations_field, f"{path} ({name} set)")
    return LabelledSet(name, str(path), [str(r[text_field]) for r in rows], labels, total, agreement)


def read_agreement(rows: Sequence[dict[str, Any]], labels: Sequence[Label], mapper: LabelMapper,
                   agreement_field: str | None, annotations_field: str | None, where: str) -> list[float] | None:
    """Per-row agreement from a column of numbers in [0, 1] or from raw annotations; None if neither is there."""
    field_name = agreement_field or ("agreement" if rows and "agreement" in rows[0] and not annotations_field
                                     else None)
    if field_name is not None:
        out = []
        for n, r in enumerate(rows, 1):
            try:
                value = float(r[field_name])
            except (KeyError, TypeError, ValueError):
                raise EvaluationError(f"{where}: row {n}: {field_name!r} must be a number in [0, 1], "
                                      f"got {r.get(field_name)!r}") from None
            if not 0 <= value <= 1:
                raise EvaluationError(f"{where}: row {n}: {field_name!r} must be in [0, 1], got {value}")
            out.append(value)
        return out
    if annotations_field is None:
        return None
    if mapper.multilabel:
        raise EvaluationError(f"{where}: annotations_field is for multiclass tasks")
    out = []
    for n, (r, label) in enumerate(zip(rows, labels), 1):
        raws = mapper.split(r.get(annotations_field))
        if not raws:
            raise EvaluationError(f"{where}: row {n}: no annotations in {annotations_field!r}")
        out.append(annotation_agreement([mapper.one(a) or a for a in raws], str(label)))
    return out


def load_test_set(spec: Spec, path: str | Path | None = None, max_rows: int | None = None,
                  seed: int = 0) -> LabelledSet:
    """The real test set: ``path`` if given, else the spec's ``evaluation.test_set``."""
    return _load_ref(spec, "test_set", path, max_rows, seed, "test")


def load_train_set(spec: Spec, path: str | Path | None = None, max_rows: int | None = None,
                   seed: int = 0) -> LabelledSet:
    """The real train set (the ``gold`` comparison): ``path`` if given, else ``evaluation.train_set``."""
    return _load_ref(spec, "train_set", path, max_rows, seed, "gold train")


def _load_ref(spec: Spec, which: str, path: str | Path | None, max_rows: int | None, seed: int,
              name: str) -> LabelledSet:
    ref = getattr(spec.evaluation, which)
    multilabel = spec.task == "multilabel"
    if path is not None:
        text_field, label_field = (ref.text_field, ref.label_field) if ref else ("text", "label")
        return load_labelled(Path(path), spec.class_names, multilabel, text_field, label_field, max_rows, seed, name,
                             ref.agreement_field if ref else None, ref.annotations_field if ref else None)
    if ref is None:
        flag = "--test-set" if which == "test_set" else "--train-set"
        raise EvaluationError(f"{spec.name}: no evaluation.{which} in the spec and no {flag} given")
    try:
        resolved = spec.resolve_path(ref.path)
    except ValueError as exc:  # an unset ${VAR}
        raise EvaluationError(f"evaluation.{which}: {exc}") from None
    return load_labelled(resolved, spec.class_names, multilabel, ref.text_field, ref.label_field, max_rows, seed,
                         name, ref.agreement_field, ref.annotations_field)


# ---- the generated samples and what they cost -------------------------------------------------------


@dataclass
class TrainExample:
    text: str
    label: Label
    request_key: str
    kept: bool
    sample_index: int | None = None  # the index in its class's plan (None where the source has none)


@dataclass
class SamplePool:
    """All generated samples of a spec in generation order (those the filters dropped too, since their
    requests were paid for), which of them are kept for training, and the spend of every request."""

    examples: list[TrainExample]
    spend: dict[str, tuple[int, int, float]]  # request_key -> (prompt_tokens, completion_tokens, usd)
    source: str  # kept_samples | non_refusal | file
    classes: list[str]
    method: str | None = None
    run_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[TrainExample]:
        return [e for e in self.examples if e.kept]

    def _plan_order(self, keys: list[str], first: dict[str, int], klass: dict[str, str]) -> list[str]:
        """The plan's order: unit by unit, class by class in turn (sample index, then the spec's class order),
        so every prefix is as balanced as the plan; generation order where sample indexes are missing."""
        index = {k: self.examples[first[k]].sample_index for k in keys}
        if any(v is None for v in index.values()):
            return keys
        rank = {c: i for i, c in enumerate(self.classes)}
        return sorted(keys, key=lambda k: (index[k], rank.get(klass[k], len(rank)), first[k]))

    def request_order(self, order: str = "plan") -> list[str]:
        """Request keys in spend order. ``plan`` (default): the order the plan sends them in, class by class
        in turn, which is what a run stopped by a budget cap has spent. ``generated``: the order the samples
        were generated.
        ``interleaved``: each class's requests in generated order, dealt round-robin across the classes
        (the order of a class-balanced run)."""
        first: dict[str, int] = {}
        klass: dict[str, str] = {}
        for i, e in enumerate(self.examples):
            if e.request_key not in first:
                first[e.request_key] = i
                klass[e.request_key] = e.label if isinstance(e.label, str) else (e.label[0] if e.label else "")
        keys = sorted(first, key=first.__getitem__)
        if order == "generated":
            return keys
        if order == "plan":
            return self._plan_order(keys, first, klass)
        if order != "interleaved":
            raise EvaluationError(f"budget order {order!r}: use one of {', '.join(BUDGET_ORDERS)}")
        queues: dict[str, list[str]] = {}
        for k in keys:
            queues.setdefault(klass[k], []).append(k)
        names = [c for c in self.classes if c in queues] + [c for c in queues if c not in self.classes]
        out: list[str] = []
        for i in range(max((len(q) for q in queues.values()), default=0)):
            out.extend(queues[c][i] for c in names if i < len(queues[c]))
        return out


def pool_from_store(store: Store, spec: Spec) -> SamplePool:
    """The spec's samples from the store: training uses the samples that survived the filters
    (``Store.kept_samples`` where the store has it), else every sample that is not a refusal."""
    rows = store.training_samples(spec.hash)
    if not rows:
        others = [f"{o['spec_hash']} ({o['samples']} samples)" for o in store.overview()
                  if o["name"] == spec.name and o["spec_hash"] != spec.hash and o["samples"]]
        hint = (f"; the store has samples of '{spec.name}' under other spec hashes: {', '.join(others)} (any edit of "
                "the spec, its training or evaluation sections included, changes its hash)") if others else \
            f"; run 'factory run {spec.source or spec.name}' first"
        raise EvaluationError(f"{spec.name}: no samples for spec hash {spec.hash} in {store.path}{hint}")
    multilabel = spec.task == "multilabel"
    warnings: list[str] = []
    kept_ids: set[str] | None = None
    source = "non_refusal"
    kept_fn = getattr(store, "kept_samples", None)
    if callable(kept_fn):
        kept_rows = list(kept_fn(spec.hash))
        ids = {r["sample_id"] if isinstance(r, dict) else (r if isinstance(r, str) else getattr(r, "sample_id", None))
               for r in kept_rows}
        ids.discard(None)
        if ids or not rows:
            kept_ids, source = ids, "kept_samples"
            unfiltered = getattr(store, "unfiltered_count", None)
            late = unfiltered(spec.hash) if callable(unfiltered) else 0
            if late:
                warnings.append(f"{late} samples were generated after the last filter stage and are left out "
                                "until the filters run again")
        else:
            warnings.append("kept_samples() returned no samples (have the filters run?); training on every "
                            "sample that is not a refusal")
    unknown = sorted({r["class"] for r in rows} - set(spec.class_names))
    if unknown:
        raise EvaluationError(f"{spec.name}: samples of classes {unknown} are not in the spec's classes")
    examples, spend = [], {}
    for r in rows:
        kept = (r["sample_id"] in kept_ids) if kept_ids is not None else not r["is_refusal"]
        examples.append(TrainExample(r["text"], [r["class"]] if multilabel else r["class"], r["request_key"], kept,
                                     int(r["sample_index"])))
        spend[r["request_key"]] = (int(r["request_prompt_tokens"] or 0), int(r["request_completion_tokens"] or 0),
                                   float(r["request_cost_usd"] or 0.0))
    methods = sorted({r["method"] for r in rows})
    return SamplePool(examples, spend, source, spec.class_names, ",".join(methods) or spec.generation.method,
                      sorted({r["run_id"] for r in rows}), warnings)


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "T", 1)
        if re.search(r"[+-]\d\d$", text):
            text += ":00"
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def pool_from_file(path: Path, spec: Spec) -> SamplePool:
    """Exported samples (``factory export``: ``text``, ``label`` and provenance columns). Rows are ordered
    by ``generated_at`` then ``sample_index`` where present (else file order); a row's request is its
    ``request_key`` (else the row itself), and a request costs the sum of its rows' ``prompt_tokens``,
    ``completion_tokens`` and ``cost_usd``. Kept: the ``kept`` column where present, else not
    ``is_refusal``."""
    rows = read_rows(path)
    if not rows:
        raise EvaluationError(f"{path}: no samples")
    if "text" not in rows[0] or "label" not in rows[0]:
        raise EvaluationError(f"{path}: needs columns 'text' and 'label' (found {sorted(rows[0])})")
    multilabel = spec.task == "multilabel"
    mapper = LabelMapper(spec.class_names, multilabel)
    labels = mapper.map_all([r.get("label") for r in rows], f"{path} (samples)")
    warnings = []
    hashes = {r.get("spec_hash") for r in rows} - {None}
    if hashes and spec.hash not in hashes:
        warnings.append(f"{path}: samples were generated for spec hash {sorted(hashes)}, not {spec.hash} "
                        "(the spec changed since)")

    def key(i: int) -> tuple[float, int, int, int]:
        r = rows[i]
        ts = _timestamp(r.get("generated_at"))
        return (ts if ts is not None else math.inf, int(r.get("sample_index") or 0), int(r.get("choice_index") or 0), i)

    has_time = any(_timestamp(r.get("generated_at")) is not None for r in rows)
    order = sorted(range(len(rows)), key=key) if has_time else list(range(len(rows)))
    examples, spend = [], {}
    for i in order:
        r = rows[i]
        rk = str(r.get("request_key") or f"row-{i}")
        kept = bool(r["kept"]) if r.get("kept") is not None else not bool(r.get("is_refusal") or False)
        index = r.get("sample_index")
        examples.append(TrainExample(str(r["text"]), labels[i], rk, kept, int(index) if index is not None else None))
        pt, ct, usd = spend.get(rk, (0, 0, 0.0))
        spend[rk] = (pt + int(r.get("prompt_tokens") or 0), ct + int(r.get("completion_tokens") or 0),
                     usd + float(r.get("cost_usd") or 0.0))
    methods = sorted({str(r["method"]) for r in rows if r.get("method")})
    run_ids = sorted({str(r["run_id"]) for r in rows if r.get("run_id")})
    return SamplePool(examples, spend, "file", spec.class_names, ",".join(methods) or spec.generation.method,
                      run_ids, warnings)


@dataclass
class BudgetSubset:
    """The kept samples of the first ``requests`` requests spent, and what those requests cost."""

    fraction: float
    texts: list[str]
    labels: list[Label]
    requests: int
    tokens: int
    cost_usd: float
    requests_total: int


def check_fractions(fractions: Sequence[float]) -> list[float]:
    out = sorted({round(float(f), 6) for f in fractions})
    bad = [f for f in out if not 0 < f <= 1]
    if bad or not out:
        raise EvaluationError(f"budget fractions must be in (0, 1], got {list(fractions)}")
    return out


def budget_subsets(pool: SamplePool, fractions: Sequence[float], order: str = "plan") -> list[BudgetSubset]:
    """Nested subsets: for each fraction X, the kept samples of the first ceil(X * requests) requests in
    spend order (at least one request); each subset contains every smaller one."""
    keys = pool.request_order(order)
    out = []
    for fraction in check_fractions(fractions):
        k = max(1, math.ceil(fraction * len(keys) - 1e-9)) if keys else 0
        chosen = set(keys[:k])
        texts, labels = [], []
        for e in pool.examples:
            if e.kept and e.request_key in chosen:
                texts.append(e.text)
                labels.append(e.label)
        spent = [pool.spend[key] for key in keys[:k]]
        out.append(BudgetSubset(fraction, texts, labels, k, sum(p + c for p, c, _ in spent),
                                round(sum(u for _, _, u in spent), 10), len(keys)))
    return out


# ---- scoring ----------------------------------------------------------------------------------------


def evaluate_classifier(clf: Classifier, test: LabelledSet) -> dict[str, Any]:
    started = time.perf_counter()
    predictions = clf.predict(test.texts)
    metrics = compute_metrics(test.labels, predictions, clf.classes, clf.multilabel)
    metrics["predict_seconds"] = round(time.perf_counter() - started, 3)
    if test.agreement is not None:
        metrics["agreement_bins"] = agreement_bins(test.labels, predictions, test.agreement)
    return metrics


# ---- one evaluation job -----------------------------------------------------------------------------


def _counts(labels: Sequence[Label]) -> dict[str, int]:
    c: Counter[str] = Counter()
    for lab in labels:
        c.update([lab] if isinstance(lab, str) else lab)
    return dict(sorted(c.items()))


def run_evaluation(spec: Spec, pool: SamplePool | None, test: LabelledSet, config: TrainConfig, *,
                   compare: Sequence[str] = ("synthetic",), fractions: Sequence[float] = (1.0,),
                   gold: LabelledSet | None = None, budget_order: str = "plan",
                   log: Callable[[str], None] = lambda m: None, job_id: str | None = None,
                   embedder: Embedder | None = None) -> list[dict[str, Any]]:
    """Train and score every comparison; return rows shaped like the ``evaluations`` table (JSON columns as
    Python values). ``synthetic`` runs once per budget fraction; ``gold`` and ``synthetic+gold`` once."""
    compare = list(dict.fromkeys(compare))
    bad = [c for c in compare if c not in COMPARISONS]
    if bad or not compare:
        raise EvaluationError(f"compare: {bad or compare} not valid; use {', '.join(COMPARISONS)}")
    if budget_order not in BUDGET_ORDERS:
        raise EvaluationError(f"budget order {budget_order!r}: use one of {', '.join(BUDGET_ORDERS)}")
    needs_synthetic = any(c != "gold" for c in compare)
    if needs_synthetic and (pool is None or not pool.kept):
        raise EvaluationError(f"{spec.name}: no generated samples to train on (run 'factory run' first, or check "
                              "that the filters kept some)")
    if any("gold" in c for c in compare) and gold is None:
        raise EvaluationError("compare gold needs a real train set: --train-set PATH or evaluation.train_set")
    multilabel = spec.task == "multilabel"
    classes = spec.class_names
    job_id = job_id or uuid.uuid4().hex[:12]
    if config.trainer == "linear_probe" and embedder is None:
        embedder = probe_embedder(config)
    base = {"spec_hash": spec.hash, "method": pool.method if pool else spec.generation.method,
            "trainer": config.trainer, "test_set": test.path}
    common = {"job_id": job_id, "spec_name": spec.name, "n_test": len(test), "test_rows_total": test.total_rows,
              "seed": config.seed, "base_model": config.base_model}
    if pool is not None:
        common |= {"sample_source": pool.source, "run_ids": pool.run_ids}

    plan: list[tuple[str, float, list[str], list[Label], dict[str, Any]]] = []
    if "synthetic" in compare or "synthetic+gold" in compare:
        assert pool is not None
        subsets = budget_subsets(pool, sorted(set(fractions) | {1.0}), budget_order)
        full = subsets[-1]
        if "synthetic" in compare:
            wanted = set(check_fractions(fractions))
            subsets = [s for s in subsets if s.fraction in wanted]
        spend_full = {"requests": full.requests, "tokens": full.tokens, "cost_usd": full.cost_usd}
        if "synthetic" in compare:
            for s in subsets:
                if not s.texts:
                    log(f"synthetic @ {s.fraction:g}: the first {s.requests} requests kept no sample; skipped")
                    continue
                plan.append(("synthetic", s.fraction, s.texts, s.labels,
                             {"requests": s.requests, "tokens": s.tokens, "cost_usd": s.cost_usd,
                              "details": {"budget_order": budget_order, "requests_total": s.requests_total}}))
        if "synthetic+gold" in compare:
            assert gold is not None
            plan.append(("synthetic+gold", 1.0, full.texts + gold.texts, full.labels + gold.labels,
                         dict(spend_full, details={"n_synthetic": len(full.texts), "n_gold": len(gold),
                                                   "gold_set": gold.path})))
    if "gold" in compare:
        assert gold is not None
        plan.append(("gold", 1.0, gold.texts, gold.labels,
                     {"requests": None, "tokens": None, "cost_usd": None,
                      "details": {"n_gold": len(gold), "gold_set": gold.path}}))

    rows = []
    for source, fraction, texts, labels, extra in plan:
        log(f"training {config.trainer} on {source} @ {fraction:g}: {len(texts)} texts")
        clf = train(texts, labels, classes, config, multilabel=multilabel, embedder=embedder)
        m = evaluate_classifier(clf, test)
        details = dict(common, **extra["details"], classes_in_train=_counts(labels),
                       predict_seconds=m["predict_seconds"], **getattr(clf, "info", {}))
        if "agreement_bins" in m:
            details["agreement_bins"] = m["agreement_bins"]
        rows.append(dict(base, eval_id=f"ev-{uuid.uuid4().hex[:16]}", train_source=source, n_train=len(texts),
                         budget_fraction=fraction, requests=extra["requests"], tokens=extra["tokens"],
                         cost_usd=extra["cost_usd"], accuracy=m["accuracy"], macro_f1=m["macro_f1"],
                         micro_f1=m["micro_f1"], per_class=m["per_class"], confusion=m["confusion"],
                         details=details))
        log(f"{source} @ {fraction:g}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
            f"(n_train {len(texts)}, n_test {len(test)})")
    return rows


def headline(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row that sums a job up: synthetic at the largest fraction, else the first row."""
    synthetic = [r for r in rows if r["train_source"] == "synthetic"]
    if synthetic:
        return max(synthetic, key=lambda r: r["budget_fraction"])
    return rows[0] if rows else None


def budget_points(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The F1-vs-budget points (synthetic rows), smallest budget first."""
    return [{"fraction": r["budget_fraction"], "requests": r["requests"], "tokens": r["tokens"],
             "cost_usd": r["cost_usd"], "n_train": r["n_train"], "accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
            for r in sorted((r for r in rows if r["train_source"] == "synthetic"),
                            key=lambda r: r["budget_fraction"])]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of evaluation rows."""
    head = f"{'spec':<16} {'method':<11} {'source':<15} {'frac':>5} {'req':>6} {'tokens':>9} {'usd':>8} " \
           f"{'n_train':>7} {'acc':>6} {'macroF1':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        name = (r.get("details") or {}).get("spec_name") or r.get("spec_name") or r["spec_hash"][:8]
        usd = "-" if r.get("cost_usd") is None else f"{r['cost_usd']:.4f}"
        lines.append(f"{name[:16]:<16} {str(r.get('method'))[:11]:<11} {r['train_source']:<15} "
                     f"{r['budget_fraction']:>5.2f} {r['requests'] if r.get('requests') is not None else '-':>6} "
                     f"{r['tokens'] if r.get('tokens') is not None else '-':>9} {usd:>8} {r['n_train']:>7} "
                     f"{r['accuracy']:>6.3f} {r['macro_f1']:>7.3f}")
    return "\n".join(lines)


# ---- the chart --------------------------------------------------------------------------------------

AXES = {"requests": "requests", "tokens": "tokens", "cost_usd": "cost (USD)"}


def plot_f1_vs_budget(rows: Sequence[dict[str, Any]], path: str | Path, metric: str = "macro_f1",
                      axes: Sequence[str] = ("requests", "tokens", "cost_usd"), title: str | None = None) -> Path:
    """Chart ``metric`` against the budget spent (one panel per axis in ``axes``: requests, tokens, USD),
    one line per spec/method/trainer from the ``synthetic`` rows, the ``gold`` rows as dashed horizontal
    references; save a PNG. Rows from several specs (e.g. SimPrompt and AttrPrompt runs of the same
    classes) share the chart. A USD panel where nothing cost anything says so instead of a line at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[dict[str, Any]]] = {}
    golds: dict[str, float] = {}
    for r in rows:
        name = r.get("spec_name") or (r.get("details") or {}).get("spec_name") or r["spec_hash"][:8]
        label = f"{name} ({r.get('method')}, {r['trainer']})"
        if r["train_source"] == "synthetic" and r.get(metric) is not None:
            lines.setdefault(label, []).append(r)
        elif r["train_source"] == "gold" and r.get(metric) is not None:
            golds[f"{name} gold ({r['trainer']})"] = r[metric]
    if not lines and not golds:
        raise EvaluationError("nothing to chart: no synthetic or gold evaluation rows")
    fig, panels = plt.subplots(1, len(axes), figsize=(5.2 * len(axes), 4.2), squeeze=False)
    for ax, axis in zip(panels[0], axes):
        drawn = False
        for label, points in sorted(lines.items()):
            pts = sorted(((p[axis], p[metric]) for p in points if p.get(axis) is not None), key=lambda x: x[0])
            if axis == "cost_usd" and all(x == 0 for x, _ in pts):
                continue
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
                drawn = True
        for i, (label, value) in enumerate(sorted(golds.items())):
            ax.axhline(value, linestyle="--", color=f"C{(len(lines) + i) % 10}", label=label)
        if not drawn and axis == "cost_usd":
            ax.text(0.5, 0.5, "no cost recorded\n(prices are 0 for this model)", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
        ax.set_xlabel(AXES.get(axis, axis))
        ax.set_ylabel(metric.replace("_", "-"))
        ax.grid(alpha=0.3)
    handles, labels = panels[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(title or f"{metric.replace('_', '-')} against budget")
    fig.tight_layout(rect=(0, 0.08 + 0.03 * max(0, math.ceil(len(labels) / 3) - 1), 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
