"""Benchmark of the quality stage's store and filter work at scale (no embedding model needed).

Usage::

    python benchmarks/bench_quality.py [--n 20000] [--classes 4] [--dup-rate 0.05] [--db PATH]

1. ``--n`` synthetic samples (``--classes`` classes, short texts, ``--dup-rate`` of them exact or near
   duplicates of earlier ones) are written through ``Store.save_completions``.
2. A stand-in embedder returns seeded random unit vectors per text (plus a small perturbation for the
   near duplicates), so the timings are those of the factory's own work: the embedding cache (write,
   then read back), every filter (near duplicates by chunked greedy selection), the replacement of the
   filter decisions, ``kept_samples``, the per-class / per-attribute counts, and the diversity metrics.
3. The table prints each step's wall time; the final counts come from the store.

Every number printed is measured in the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory.quality.embeddings import DIM, Embedder, embed_texts  # noqa: E402
from factory.quality.filters import run_filters  # noqa: E402
from factory.quality.metrics import diversity_report  # noqa: E402
from factory.spec import parse_spec  # noqa: E402
from factory.store import PromptRecord, RequestRecord, SampleRecord, Store  # noqa: E402


class RandomEmbedder(Embedder):
    """Seeded pseudo-embeddings: a unit vector per text (texts tagged '~k' are near copies of text k)."""

    def __init__(self, base: np.ndarray):
        super().__init__()
        self.base = base

    def encode(self, texts):  # type: ignore[no-untyped-def, override]
        self.calls += 1
        self.encoded += len(texts)
        out = np.empty((len(texts), DIM), dtype=np.float32)
        for i, t in enumerate(texts):
            tag = t.rsplit("#", 1)[-1]
            k = int(tag.lstrip("~"))
            v = self.base[k].copy()
            if tag.startswith("~"):
                rng = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16))
                v += 0.05 * rng.normal(size=DIM).astype(np.float32) / np.sqrt(DIM)
            out[i] = v / np.linalg.norm(v)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--dup-rate", type=float, default=0.05)
    ap.add_argument("--db", type=Path, default=None)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    classes = [f"c{i}" for i in range(args.classes)]
    spec = parse_spec(f"name: bench\ndomain: note\nclasses: [{', '.join(classes)}]\n"
                      "filters: {near_dup: 0.95, min_words: 3, max_words: 60}\n")
    base = rng.normal(size=(args.n, DIM)).astype(np.float32)
    texts: list[str] = []
    for i in range(args.n):
        r = rng.random()
        if i > 10 and r < args.dup_rate / 2:
            j = int(rng.integers(0, i))
            texts.append(texts[j])  # exact duplicate
        elif i > 10 and r < args.dup_rate:
            j = int(rng.integers(0, i))
            texts.append(f"a near copy of text {j} with words #~{texts[j].rsplit('#', 1)[-1].lstrip('~')}")
        else:
            words = " ".join(f"w{int(x)}" for x in rng.integers(0, 5000, int(rng.integers(2, 30))))
            texts.append(f"{words} #{i}")
    timings: list[tuple[str, float]] = []

    def timed(label: str, fn):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = fn()
        timings.append((label, time.perf_counter() - t))
        return out

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench-store"
        with Store(db) as store:
            store.record_spec(spec, "yaml")
            run_id = store.start_run(spec)
            requests, samples = [], []
            for i, text in enumerate(texts):
                cls = classes[i % len(classes)]
                key = f"k{i}"
                requests.append(RequestRecord(request_key=key, model="m", params="{}", prompt_hash="p",
                                              purpose="generate", choices=json.dumps([text]), finish_reasons="[]",
                                              prompt_tokens=10, completion_tokens=5, cost_usd=0.0, latency_s=0.1,
                                              attempts=1))
                samples.append(SampleRecord(
                    sample_id=f"s{i}", spec_hash=spec.hash, run_id=run_id, class_=cls, text=text,
                    attributes=json.dumps({"style": f"v{i % 7}"}), seed=0, sample_index=i // len(classes),
                    choice_index=0, method="attrprompt", prompt_hash="p", request_key=key, model="m", params="{}",
                    prompt_tokens=10, completion_tokens=5, cost_usd=0.0, is_refusal=False,
                    generated_at=datetime(2026, 1, 1, tzinfo=timezone.utc)))
            prompt = PromptRecord(prompt_hash="p", method="generate", messages="[]")
            timed("insert samples", lambda: store.save_completions([prompt, *requests, *samples]))
            embedder = RandomEmbedder(base)
            timed("embed (encode + cache write)", lambda: embed_texts(store, texts, embedder))
            timed("embed again (cache read only)", lambda: embed_texts(store, texts, embedder))
            outcome = timed("filters (+ replace decisions)", lambda: run_filters(spec, store, embedder))
            kept = timed("kept_samples", lambda: store.kept_samples(spec.hash))
            timed("counts by class + attribute", lambda: (store.filter_counts_by_class(spec.hash),
                                                          store.filter_counts_by_attribute(spec.hash)))
            emb = embed_texts(store, [s["text"] for s in kept], embedder)
            timed("diversity_report (kept)", lambda: diversity_report(emb, [s["class"] for s in kept],
                                                                      [s["text"] for s in kept]))
            decisions = store.table_counts()["filter_decisions"]
    print(f"n={args.n} classes={args.classes} dup_rate={args.dup_rate}")
    for label, secs in timings:
        print(f"  {label:<34} {secs:8.2f} s")
    print(f"  kept {len(kept)} of {args.n}; dropped {outcome.dropped}; {decisions} decision rows;"
          f" encoded {embedder.encoded} texts in {embedder.calls} calls")


if __name__ == "__main__":
    main()
