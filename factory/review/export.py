"""Reviewed samples as Label Studio tasks: text with the (reviewed) label as a pre-annotation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factory.spec import Spec
from factory.store import Store


def labelstudio_tasks(spec: Spec, store: Store) -> list[dict[str, Any]]:
    """One task per kept sample (rejected ones left out, relabels applied), labelled through a
    ``<Choices name="label" toName="text">`` control."""
    reviews = store.review_decisions(spec.hash)
    tasks = []
    for s in store.kept_samples(spec.hash):
        review = reviews.get(s["sample_id"]) or {}
        tasks.append({
            "data": {"text": s["text"], "sample_id": s["sample_id"], "spec": spec.name, "model": s["model"],
                     "review": review.get("decision"), "note": review.get("note")},
            "annotations": [{"result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                         "value": {"choices": [s["class"]]}}]}]})
    return tasks


def write_labelstudio(spec: Spec, store: Store, out: Path) -> int:
    tasks = labelstudio_tasks(spec, store)
    out.write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
    return len(tasks)
