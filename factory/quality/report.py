"""A self-contained HTML quality report of one spec: counts, spend, the filter funnel, diversity per
class, attribute coverage and bias (asked vs shown), and a comparison with the other specs in the store
that share its class set (e.g. a SimPrompt and an AttrPrompt spec of the same task).

The report reads only the store (run :func:`factory.quality.stage.run_quality` first for filters and
metrics): ``write_report(spec, store, out_dir)`` writes ``<name>.html`` (inline CSS, charts embedded as
base64 PNG) and the same charts as ``<name>_<chart>.png`` beside it. Charts are drawn with matplotlib's
Agg backend, the page with the Jinja2 template ``report.html.j2`` next to this module.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from factory.quality.filters import FILTER_ORDER, FINAL, HUMAN
from factory.spec import Spec
from factory.store import Store
from factory.training.subjectivity import SOURCES, TaskRow, task_rows

TEMPLATE = "report.html.j2"
MAX_BARS = 25  # values per bias chart (the most asked/shown ones)
EXAMPLES_PER_CLASS = 3
FILTER_LABELS = {"refusal": "refusals", "length": "word length", "exact_dup": "exact duplicates",
                 "near_dup": "near duplicates", "label_consistency": "label consistency",
                 "human": "human review"}
DIVERSITY_COLUMNS = [("n_generated", "generated"), ("n_kept", "kept"), ("vocabulary_size", "vocabulary"),
                     ("aps", "APS ↓"), ("remote_clique", "remote clique ↑"), ("chamfer_distance", "Chamfer ↑"),
                     ("top5_similarity", "top-5 sim. to real ↑")]
OVERALL_COLUMNS = DIVERSITY_COLUMNS[:2] + [("n_refusals", "refusals")] + DIVERSITY_COLUMNS[2:4] + [
    ("mean_class_aps", "mean class APS ↓"), ("inter_class_aps", "inter-class APS ↓")] + DIVERSITY_COLUMNS[4:] + [
    ("real_aps", "APS of real test set")]


@dataclass
class Chart:
    key: str
    title: str
    caption: str
    png: bytes
    file: str = ""

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


# --------------------------------------------------------------------------------------------------
# data


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _metrics_by_scope(store: Store, spec_hash: str) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for row in store.metrics(spec_hash):
        out.setdefault(row["scope"], {})[row["name"]] = _num(row["value"])
    return out


def _spec_info(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def comparable_specs(spec: Spec, store: Store) -> list[dict[str, Any]]:
    """This spec and every spec in the store with the same class set (or the same name), with totals and
    overall metrics; this spec first, then by name and date."""
    classes = set(spec.class_names)
    rows = []
    seen = set()
    for rec in store.spec_records():
        info = _spec_info(rec["spec"])
        other = {c.get("name") for c in info.get("classes", []) if isinstance(c, dict)}
        if rec["spec_hash"] != spec.hash and other != classes and rec["name"] != spec.name:
            continue
        gen = info.get("generation", {}) if isinstance(info.get("generation"), dict) else {}
        rows.append({"name": rec["name"], "hash": rec["spec_hash"], "method": gen.get("method", "?"),
                     "model": gen.get("model", "?"), "created_at": rec["created_at"],
                     "same_classes": other == classes, "current": rec["spec_hash"] == spec.hash})
        seen.add(rec["spec_hash"])
    if spec.hash not in seen:
        rows.append({"name": spec.name, "hash": spec.hash, "method": spec.generation.method,
                     "model": spec.generation.model, "created_at": None, "same_classes": True, "current": True})
    for row in rows:
        row["totals"] = store.spec_totals(row["hash"])
        row["overall"] = _metrics_by_scope(store, row["hash"]).get("overall", {})
    rows.sort(key=lambda r: (not r["current"], r["name"], str(r["created_at"])))
    return rows


def _bias_tables(metrics: dict[str, dict[str, float | None]]) -> list[dict[str, Any]]:
    out = []
    for scope in sorted(s for s in metrics if s.startswith("bias:")):
        m = metrics[scope]
        values: list[str] = []
        for name in m:
            kind, _, value = name.partition(":")
            if kind in ("asked", "shown", "shown_emb") and value not in values:
                values.append(value)
        source = next((n.partition(":")[2] for n in m if n.startswith("source:")), "")
        rows = [{"value": v, "asked": m.get(f"asked:{v}"), "shown": m.get(f"shown:{v}"),
                 "shown_emb": m.get(f"shown_emb:{v}")} for v in values]
        asked_any = any(r["asked"] is not None for r in rows)
        rows.sort(key=lambda r: -max(r["asked"] or 0, r["shown"] or 0, r["shown_emb"] or 0))
        n_values = len(values)
        out.append({
            "dimension": scope.removeprefix("bias:"), "source": source, "rows": rows, "n": m.get("n"),
            "n_values": n_values, "asked_any": asked_any,
            "coverage_asked": sum((r["asked"] or 0) > 0 for r in rows) / n_values if n_values and asked_any else None,
            "coverage_shown": sum(max(r["shown"] or 0, r["shown_emb"] or 0) > 0 for r in rows) / n_values
            if n_values else None,
            "unmatched": m.get("unmatched"), "faithfulness": m.get("faithfulness"),
            "faithfulness_emb": m.get("faithfulness_emb"), "tv": m.get("tv_asked_shown"),
        })
    return out


def elicitation_quality(spec: Spec) -> dict[str, Any] | None:
    """The elicitation quality of the spec's lock file (rows and noisy-list warnings); None without a
    usable lock."""
    from factory.attributes.lock import lock_quality, noisy_warnings, quality_rows
    from factory.attributes.stage import existing_lock
    from factory.spec import SpecError

    try:
        found = existing_lock(spec)
    except (SpecError, OSError):
        return None
    if found is None:
        return None
    quality = lock_quality(spec, found[0])
    return {"rows": quality_rows(quality), "warnings": noisy_warnings(quality)} if quality else None


def report_data(spec: Spec, store: Store) -> dict[str, Any]:
    """Everything the report shows, as plain data (no charts)."""
    metrics = _metrics_by_scope(store, spec.hash)
    totals = store.spec_totals(spec.hash)
    summary = store.filter_summary(spec.hash)
    order = [f for f in (*FILTER_ORDER, HUMAN) if f in summary]
    generated = totals["samples"]
    funnel = [{"step": "generated", "count": generated, "dropped": 0}]
    remaining = generated
    for f in order:  # reviewers judge only some of the survivors: their step subtracts what they rejected
        remaining = remaining - summary[f]["dropped"] if f == HUMAN else summary[f]["kept"]
        funnel.append({"step": FILTER_LABELS.get(f, f), "filter": f, "count": remaining,
                       "dropped": summary[f]["dropped"]})
    kept = summary[FINAL]["kept"] if FINAL in summary else None
    by_class: dict[str, dict[str, Any]] = {c: {"class": c, "generated": 0, "kept": None, "dropped": {}}
                                           for c in spec.class_names}
    for s_class, n in store.class_counts(spec.hash).items():
        by_class.setdefault(s_class, {"class": s_class, "generated": 0, "kept": None, "dropped": {}})["generated"] = n
    for row in store.filter_counts_by_class(spec.hash):
        entry = by_class.setdefault(row["class"], {"class": row["class"], "generated": 0, "kept": None, "dropped": {}})
        if row["filter"] == FINAL:
            entry["kept"] = row["kept"]
        else:
            entry["dropped"][row["filter"]] = row["dropped"]
    attr_drops = [r for r in store.filter_counts_by_attribute(spec.hash) if r["filter"] == FINAL]
    for r in attr_drops:
        total = r["kept"] + r["dropped"]
        r["rate"] = r["dropped"] / total if total else 0.0
    attr_drops.sort(key=lambda r: (-r["rate"], -r["dropped"], r["dimension"], str(r["value"])))
    kept_rows = store.kept_samples(spec.hash)
    examples: dict[str, list[str]] = {}
    for s in kept_rows:
        if len(examples.setdefault(s["class"], [])) < EXAMPLES_PER_CLASS:
            examples[s["class"]].append(s["text"])
    runs = [r for r in store.runs(spec.name)]
    prompt_t, completion_t = totals["prompt_tokens"], totals["completion_tokens"]
    return {
        "spec": spec, "hash": spec.hash, "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "snapshot": (snapshot := store.snapshot_id()), "version": store.version_of_snapshot(spec.name, snapshot),
        "totals": totals, "kept": kept, "unfiltered": store.unfiltered_count(spec.hash),
        "refusals": summary["refusal"]["dropped"] if "refusal" in summary else totals["refusals"],
        "spend": {"requests": totals["requests"], "prompt_tokens": prompt_t, "completion_tokens": completion_t,
                  "tokens": prompt_t + completion_t, "usd": totals["usd"],
                  "usd_per_kept": totals["usd"] / kept if kept else None},
        "funnel": funnel, "filters": order, "filter_labels": FILTER_LABELS,
        "by_class": list(by_class.values()), "attr_drops": [r for r in attr_drops if r["dropped"]][:15],
        "overall": metrics.get("overall", {}),
        "per_class": {c: metrics.get(f"class:{c}", {}) for c in by_class},
        "bias": _bias_tables(metrics), "compare": comparable_specs(spec, store),
        "dropped_examples": store.dropped_examples(spec.hash), "examples": examples,
        "runs": runs, "has_quality": bool(metrics.get("overall")) or bool(summary),
        "elicitation_quality": elicitation_quality(spec),
    }


# --------------------------------------------------------------------------------------------------
# charts


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


COLORS = {"generated": "#9aa5b1", "kept": "#2f855a", "asked": "#3b6fb6", "shown": "#dd8a2e",
          "shown_emb": "#8e5bb5", "refusal": "#c53030", "length": "#d69e2e", "exact_dup": "#805ad5",
          "near_dup": "#b7791f", "label_consistency": "#2b6cb0"}


def funnel_chart(data: dict[str, Any]) -> Chart | None:
    funnel = data["funnel"]
    if len(funnel) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(funnel) + 1.2))
    labels = [f["step"] if i == 0 else f"after {f['step']}" for i, f in enumerate(funnel)]
    counts = [f["count"] for f in funnel]
    colors = [COLORS["generated"]] + [COLORS.get(f.get("filter", ""), "#718096") for f in funnel[1:]]
    bars = ax.barh(range(len(funnel)), counts, color=colors)
    ax.set_yticks(range(len(funnel)), labels)
    ax.invert_yaxis()
    top = max(counts) or 1
    for bar, f in zip(bars, funnel):
        text = f"{f['count']}" + (f"  (−{f['dropped']})" if f["dropped"] else "")
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=9)
    ax.set_xlim(0, top * 1.2)
    ax.set_xlabel("samples")
    ax.set_title("Filter funnel")
    return Chart("funnel", "Filter funnel", "Samples left after each filter, in the order they run.", _png(fig))


def class_chart(data: dict[str, Any]) -> Chart | None:
    rows = data["by_class"]
    if not rows or not any(r["generated"] for r in rows):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) + 2), 3.6))
    x = range(len(rows))
    kept = [r["kept"] if r["kept"] is not None else r["generated"] for r in rows]
    ax.bar(x, kept, color=COLORS["kept"], label="kept" if data["filters"] else "generated (not filtered)")
    bottom = list(kept)
    for f in data["filters"]:
        heights = [r["dropped"].get(f, 0) for r in rows]
        if any(heights):
            ax.bar(x, heights, bottom=bottom, color=COLORS.get(f, "#718096"),
                   label=f"dropped: {FILTER_LABELS.get(f, f)}")
            bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(list(x), [r["class"] for r in rows], rotation=30 if len(rows) > 5 else 0, ha="right"
                  if len(rows) > 5 else "center")
    ax.set_ylabel("samples")
    ax.set_title("Samples per class")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return Chart("classes", "Samples per class", "Kept samples, and the samples each filter dropped, per class.",
                 _png(fig))


def diversity_chart(data: dict[str, Any]) -> Chart | None:
    per_class = data["per_class"]
    names = [c for c in per_class if per_class[c]]
    if not names or not any((per_class[c].get("n_kept") or 0) > 0 for c in names):
        return None
    plt = _plt()
    panels = [("aps", "APS (lower = more diverse)"), ("vocabulary_size", "vocabulary size"),
              ("chamfer_distance", "Chamfer distance (higher = more diverse)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, title) in zip(axes, panels):
        values = [per_class[c].get(key) for c in names]
        ax.bar(range(len(names)), [v or 0 for v in values], color="#4a6fa5")
        overall = data["overall"].get(key if key != "aps" else "aps")
        if overall is not None and key != "vocabulary_size":
            ax.axhline(overall, color="#c05621", lw=1, ls="--", label="all classes")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 3 else 0,
                      ha="right" if len(names) > 3 else "center", fontsize=8)
        ax.set_title(title, fontsize=10)
    return Chart("diversity", "Diversity per class", "Within-class diversity of the kept samples (MiniLM "
                 "embeddings); the dashed line is the value over all classes.", _png(fig))


def bias_chart(dim: dict[str, Any]) -> Chart | None:
    rows = dim["rows"][:MAX_BARS]
    if not rows:
        return None
    plt = _plt()
    series = [(k, label) for k, label in (("asked", "asked in prompts"), ("shown", "mentioned in text"),
                                          ("shown_emb", "nearest by embedding"))
              if any(r[k] is not None for r in rows)]
    height = max(2.8, 0.32 * len(rows) * max(1, len(series)) / 1.6 + 1.2)
    fig, ax = plt.subplots(figsize=(7.5, height))
    width = 0.8 / max(1, len(series))
    for i, (key, label) in enumerate(series):
        ax.barh([j + (i - (len(series) - 1) / 2) * width for j in range(len(rows))],
                [r[key] or 0 for r in rows], height=width, color=COLORS[key], label=label)
    ax.set_yticks(range(len(rows)), [_short(r["value"]) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("fraction of kept samples")
    more = f" (top {MAX_BARS} of {dim['n_values']})" if dim["n_values"] > MAX_BARS else ""
    ax.set_title(f"{dim['dimension']}: asked vs shown{more}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    key = "bias_" + re.sub(r"[^A-Za-z0-9_-]+", "_", dim["dimension"])
    return Chart(key, f"Attribute “{dim['dimension']}”",
                 "Fraction of samples whose prompt asked for each value, whose text mentions it, and whose "
                 "embedding is nearest to it.", _png(fig))


def compare_chart(data: dict[str, Any]) -> Chart | None:
    rows = [r for r in data["compare"] if r["same_classes"]]
    if len(rows) < 2:
        return None
    plt = _plt()
    panels = [("n_kept", "kept samples"), ("aps", "APS ↓"), ("mean_class_aps", "mean class APS ↓"),
              ("vocabulary_size", "vocabulary"), ("usd", "cost (USD)"), ("top5_similarity", "top-5 sim. to real ↑")]
    panels = [p for p in panels if p[0] == "usd" or any(r["overall"].get(p[0]) is not None for r in rows)]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width = max(2.9, 0.9 * len(rows) + 0.8)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.3 * nrows), squeeze=False)
    labels = [f"{_short(r['name'], 18)}\n{r['method']}\n{r['hash'][:6]}" for r in rows]
    colors = ["#2f855a" if r["current"] else "#718096" for r in rows]
    for ax, (key, title) in zip(axes.flat, panels):
        values = [r["totals"]["usd"] if key == "usd" else r["overall"].get(key) for r in rows]
        ax.bar(range(len(rows)), [v or 0 for v in values], color=colors)
        for i, v in enumerate(values):
            if v is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8, color="#718096")
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_title(title, fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return Chart("compare", "Specs with the same classes",
                 "This spec (green) against the other specs in the store with the same class set.", _png(fig))


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------------------------------
# the page


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value.is_integer():
            return f"{int(value):,}"
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * float(value):.1f}%"


def render_html(data: dict[str, Any], charts: list[Chart]) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent)), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    env.filters["usd"] = lambda v: "—" if v is None else f"${float(v):,.4f}"
    chart_by_key = {c.key: c for c in charts}
    return env.get_template(TEMPLATE).render(
        d=data, charts=chart_by_key, bias_charts=[c for c in charts if c.key.startswith("bias_")],
        diversity_columns=DIVERSITY_COLUMNS, overall_columns=OVERALL_COLUMNS)


def write_report(spec: Spec, store: Store, out_dir: Path | str) -> Path:
    """Write ``<out_dir>/<name>.html`` and its charts ``<out_dir>/<name>_<chart>.png``; return the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report_data(spec, store)
    charts = [c for c in (funnel_chart(data), class_chart(data), diversity_chart(data)) if c is not None]
    charts += [c for c in (bias_chart(dim) for dim in data["bias"]) if c is not None]
    compare = compare_chart(data)
    if compare is not None:
        charts.append(compare)
    data["subjectivity"] = subjectivity_data([spec], store)
    charts += data["subjectivity"]["charts"] if data["subjectivity"] else []
    for chart in charts:
        chart.file = f"{spec.name}_{chart.key}.png"
        (out / chart.file).write_bytes(chart.png)
    path = out / f"{spec.name}.html"
    path.write_text(render_html(data, charts), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# subjectivity (Li et al., EMNLP 2023): the gap to real data across tasks, accuracy against agreement

SOURCE_COLORS = {"synthetic": "#3b6fb6", "gold": "#dd8a2e", "synthetic+gold": "#2f855a"}
SUBJECTIVITY_PAGE = "subjectivity_page.html.j2"


def _row_label(row: TaskRow) -> str:
    return f"{_short(row.task, 22)}\n{row.method}" + ("" if row.spec_name == row.task else f"\n{_short(row.spec_name, 22)}")


def gap_chart(rows: Sequence[TaskRow]) -> Chart | None:
    """Macro-F1 per train source, one group of bars per spec (task and method), the gap written above."""
    rows = [r for r in rows if r.f1]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(rows) + 2), 4.2))
    sources = [s for s in SOURCES if any(s in r.f1 for r in rows)]
    width = 0.8 / len(sources)
    for i, source in enumerate(sources):
        xs = [j + (i - (len(sources) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, [r.f1.get(source, 0) for r in rows], width=width, color=SOURCE_COLORS[source], label=source)
    for j, r in enumerate(rows):
        if r.gap is not None:
            ax.text(j, max(r.f1.values()) + 0.03, f"gap {r.gap:+.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(rows)), [_row_label(r) for r in rows], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("macro-F1 on the real test set")
    ax.set_title("Synthetic against real training data, per task and method")
    ax.legend(fontsize=8, loc="upper right")
    return Chart("subjectivity_gap", "Synthetic against real data",
                 "Macro-F1 trained on synthetic, real (gold) and both; gap = gold − synthetic.", _png(fig))


def agreement_chart(rows: Sequence[TaskRow]) -> Chart | None:
    """Accuracy against annotator agreement, one panel per spec with agreement bins, one line per source."""
    rows = [r for r in rows if r.bins]
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.6 * len(rows), 3.8), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], rows):
        for source, bins in r.bins.items():
            pts = [((b["lo"] + b["hi"]) / 2, b["accuracy"], b["n"]) for b in bins if b["accuracy"] is not None]
            ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker="o",
                    color=SOURCE_COLORS.get(source, "#718096"), label=source)
        first = next(iter(r.bins.values()))
        for b in first:
            ax.annotate(f"n={b['n']}", ((b["lo"] + b["hi"]) / 2, 0.02), ha="center", fontsize=7, color="#5a6677")
        ax.set_title(f"{_short(r.spec_name, 30)} ({r.method})", fontsize=10)
        ax.margins(x=0.1)  # room for the first and last bin's n= label
        ax.set_xlabel("annotator agreement")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=8, loc="upper left")  # the bottom holds the n= labels
    return Chart("subjectivity_agreement", "Accuracy against annotator agreement",
                 "Accuracy on the real test set per bin of annotator agreement (the share of annotators who "
                 "chose the label), one line per training source; n = test texts in the bin.", _png(fig))


def subjectivity_data(specs: Sequence[Spec], store: Store) -> dict[str, Any] | None:
    """The task rows, the advice sentences and the two charts of ``specs``; None where no spec has an
    evaluation with a gold comparison or agreement bins."""
    rows = task_rows(store, specs)
    if not any(r.gap is not None or r.bins for r in rows):
        return None
    charts = [c for c in (gap_chart(rows), agreement_chart(rows)) if c is not None]
    return {"rows": rows, "advice": [a for a in (r.advice for r in rows) if a], "charts": charts,
            "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def write_subjectivity_report(specs: Sequence[Spec], store: Store, out_dir: Path | str,
                              name: str = "subjectivity") -> Path:
    """Write ``<out_dir>/<name>.html`` (the table, advice and charts across ``specs``) and its charts as
    ``<name>_<chart>.png``; return the HTML path. Raises ValueError when nothing is there to compare."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    sub = subjectivity_data(specs, store)
    if sub is None:
        raise ValueError("no evaluations to compare: train with a real train set (evaluation.train_set) or a test "
                         "set with agreement first ('factory train SPEC')")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for chart in sub["charts"]:
        chart.file = f"{name}_{chart.key.removeprefix('subjectivity_')}.png"
        (out / chart.file).write_bytes(chart.png)
    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent)), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    path = out / f"{name}.html"
    path.write_text(env.get_template(SUBJECTIVITY_PAGE).render(sub=sub), encoding="utf-8")
    return path
