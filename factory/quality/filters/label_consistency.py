"""``label_consistency``: ``classifier`` (a cross-validated logistic regression on the embeddings drops a
sample predicted to be another class by a margin) or ``llm`` (the spec's model names the class)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from factory.labels import NameMatcher
from factory.quality.filters.base import FilterContext, SampleFilter, Verdict, register
from factory.spec import Spec
from factory.store import Store

LABEL_MARGIN = 0.2  # probability margin of another class over the label (classifier mode)
LABEL_C = 10.0  # inverse regularisation of the label-consistency logistic regression (unit-norm inputs)
LABEL_FOLDS = 5


def mislabelled(emb: NDArray[np.floating[Any]], labels: Sequence[str], margin: float = LABEL_MARGIN,
                folds: int = LABEL_FOLDS, C: float = LABEL_C, seed: int = 0) -> list[tuple[str, float] | None] | None:
    """Out-of-fold label check: per row ``None`` (consistent, or not judged) or ``(predicted, margin)``.

    Only classes with at least 2 rows are judged (their rows only). Returns ``None`` when fewer than 2
    classes can be judged."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels_arr = np.asarray([str(x) for x in labels])
    classes, counts = np.unique(labels_arr, return_counts=True)
    judged_classes = classes[counts >= 2]
    if len(judged_classes) < 2:
        return None
    rows = np.flatnonzero(np.isin(labels_arr, judged_classes))
    k = int(min(folds, counts[counts >= 2].min()))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    X, y = np.asarray(emb, dtype=np.float64)[rows], labels_arr[rows]
    proba = cross_val_predict(LogisticRegression(C=C, max_iter=2000), X, y, cv=cv, method="predict_proba")
    col = {c: i for i, c in enumerate(sorted(judged_classes))}
    out: list[tuple[str, float] | None] = [None] * len(labels_arr)
    for r, p in zip(rows, proba):
        own = col[labels_arr[r]]
        pred = int(p.argmax())
        gap = float(p[pred] - p[own])
        if pred != own and gap >= margin:
            out[r] = (str(judged_classes[pred]), gap)
    return out


def classifier_verdicts(samples: Sequence[dict[str, Any]], emb: NDArray[np.floating[Any]],
                        margin: float = LABEL_MARGIN) -> tuple[list[Verdict], str | None]:
    found = mislabelled(emb, [s["class"] for s in samples], margin)
    if found is None:
        return [(True, "not judged: fewer than 2 classes with 2+ samples")] * len(samples), (
            "label_consistency: not judged (fewer than 2 classes with 2+ samples)")
    out: list[Verdict] = []
    for s, hit in zip(samples, found):
        if hit is None:
            out.append((True, None))
        else:
            out.append((False, f"classifier predicts {hit[0]} (out-of-fold, margin {hit[1]:.2f} over {s['class']})"))
    return out, None


# ---- label consistency by asking the LLM ----------------------------------------------------------

LLM_LABEL_PROMPT = (
    "Classify the following {domain} into exactly one of these categories: {classes}.\n\n"
    "Text: {text}\n\nAnswer with the category name only."
)
LLM_LABEL_MAX_TOKENS = 16


def parse_label_answer(answer: str, classes: Sequence[str]) -> str | None:
    """The class named first in ``answer`` (whole words; case, ``_``, ``-`` and punctuation ignored); None if none."""
    return NameMatcher(classes).mentioned(answer)


def label_request(spec: Spec, text: str, index: int) -> Any:
    """The chat request asking the spec's model for the class of ``text`` (temperature 0, cached)."""
    from factory.generation.llm.engine import LLMRequest

    prompt = LLM_LABEL_PROMPT.format(domain=spec.domain, classes=", ".join(spec.class_names), text=text.strip())
    gen = spec.generation
    params = {"temperature": 0.0, "top_p": 1.0, "max_tokens": LLM_LABEL_MAX_TOKENS, "seed": gen.seed}
    return LLMRequest([{"role": "user", "content": prompt}], gen.model, params, index, "label_check")


async def _ask_labels(spec: Spec, store: Store, endpoint: Any, samples: Sequence[dict[str, Any]]) -> list[str | None]:
    from factory.generation.llm.budget import Budget
    from factory.generation.llm.client import open_engine

    answers: list[str | None] = [None] * len(samples)
    budget = Budget.from_spec(spec.budget, spec.generation.model, store.spend_for_spec(spec.hash))

    requests = [label_request(spec, s["text"], 0) for s in samples]

    def job(i: int) -> Callable[[], Any]:
        async def run() -> None:
            done = await engine.complete(requests[i])
            answers[i] = done.choices[0] if done.choices else ""

        return run

    async with open_engine(spec.generation, store, endpoint, budget) as engine:
        engine.prefetch(r.key for r in requests)
        await engine.map(job(i) for i in range(len(requests)))
    return answers


def llm_verdicts(spec: Spec, store: Store, samples: Sequence[dict[str, Any]],
                 endpoint: Any | None = None) -> tuple[list[Verdict], str | None]:
    """Ask the spec's model for each sample's class; drop those it assigns to another class."""
    if not samples:
        return [], None
    if endpoint is None:
        from factory.generation.llm.client import open_endpoint

        with open_endpoint(spec.generation) as ep:
            answers = asyncio.run(_ask_labels(spec, store, ep, samples))
    else:
        answers = asyncio.run(_ask_labels(spec, store, endpoint, samples))
    out: list[Verdict] = []
    unanswered = 0
    matcher = NameMatcher(spec.class_names)
    for s, answer in zip(samples, answers):
        if answer is None:
            unanswered += 1
            out.append((True, "not judged: no answer (budget or endpoint)"))
            continue
        predicted = matcher.mentioned(answer)
        if predicted is None:
            out.append((True, f"answer names no class: {answer.strip()[:60]!r}"))
        elif predicted != s["class"]:
            out.append((False, f"LLM says {predicted}: {answer.strip()[:60]!r}"))
        else:
            out.append((True, None))
    note = f"label_consistency (llm): {unanswered} samples not judged (budget or endpoint)" if unanswered else None
    return out, note


@register
class LabelConsistencyFilter(SampleFilter):
    name, rank = "label_consistency", 50

    def enabled(self, spec: Spec) -> bool:
        return spec.filters.label_consistency != "off"

    def verdicts(self, ctx: FilterContext, samples: list[dict[str, Any]]) -> tuple[list[Verdict], str | None]:
        if ctx.spec.filters.label_consistency == "classifier":
            return classifier_verdicts(samples, ctx.embeddings(samples))
        if ctx.store is None:
            raise ValueError("label_consistency=llm needs the store (its requests are cached there)")
        return llm_verdicts(ctx.spec, ctx.store, samples, ctx.endpoint)
