"""Benchmark of factory.quality.metrics: the fast metrics at N=100k, and fast vs naive sklearn side by side.

Usage::

    python benchmarks/bench_metrics.py [--n 100000] [--d 384] [--n-naive 10000] [--n-real N] [--k 5]

1. Seeded synthetic embeddings (float32, ``--classes`` Gaussian clusters in ``d`` dimensions, like
   sentence embeddings of a labelled set), a second "real" set for top-k, and synthetic texts.
2. Every metric is timed once at ``--n`` (tracemalloc off), then run again under tracemalloc for its
   peak of traced allocations (numpy arrays included) above what was live before the call; the
   process ``ru_maxrss`` (a high-water mark, so monotone) is printed after each.
3. At ``--n-naive`` (default 10k: the naive versions hold full ``N x N`` matrices, ~0.4 GB each
   in float32, and sort them for top-k) every metric runs in its fast and its naive sklearn form on the
   same float32 input, in this one run, and the table gives both times, the ratio naive/fast and the
   max absolute difference of the results.

Nothing here is hard-coded: every number printed is measured in the run.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.preprocessing import normalize as sk_normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory.quality import metrics as M  # noqa: E402

MiB = 2**20


# --------------------------------------------------------------------------------------------------
# data


def make_data(n: int, n_real: int, d: int, classes: int, seed: int) -> dict[str, Any]:
    """Clustered float32 embeddings with labels, a shifted "real" set, and texts of random words."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d), dtype=np.float32)
    labels_idx = rng.integers(0, classes, size=n)
    emb = rng.standard_normal((n, d), dtype=np.float32)
    emb += 0.8 * centers[labels_idx]
    real_idx = rng.integers(0, classes, size=n_real)
    real = rng.standard_normal((n_real, d), dtype=np.float32)
    real += 0.8 * centers[real_idx] + 0.2 * rng.standard_normal(d, dtype=np.float32)
    words = np.array([f"w{i}" for i in range(50_000)] + ["It's", "DON'T", "Hello,", "world!"])
    word_idx = rng.integers(0, len(words), size=(n, 12))
    texts = [" ".join(row) for row in words[word_idx]]
    labels = [f"class_{i}" for i in labels_idx]
    return {"emb": emb, "real": real, "labels": labels, "texts": texts}


# --------------------------------------------------------------------------------------------------
# the metrics, fast and naive, as callables over the data dict


def _first_two_classes(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    lab = np.asarray(data["labels"])
    classes = sorted(set(data["labels"]))
    return data["emb"][lab == classes[0]], data["emb"][lab == classes[1]]


def fast_metrics(k: int, chunk: int) -> dict[str, Callable[[dict[str, Any]], Any]]:
    return {
        "vocabulary_size": lambda D: M.vocabulary_size(D["texts"]),
        "normalize": lambda D: M.normalize(D["emb"]),
        "average_pairwise_similarity": lambda D: M.average_pairwise_similarity(D["emb"]),
        "cross_class_similarity": lambda D: M.cross_class_similarity(*_first_two_classes(D)),
        "aps_by_class": lambda D: M.aps_by_class(D["emb"], D["labels"]),
        "inter_class_aps": lambda D: M.inter_class_aps(D["emb"], D["labels"]),
        "remote_clique": lambda D: M.remote_clique(D["emb"]),
        "chamfer_distance": lambda D: M.chamfer_distance(D["emb"], chunk_size=chunk),
        f"top_k_similarity(k={k})": lambda D: M.top_k_similarity(
            D["real"], D["emb"], k=k, chunk_size=chunk
        ),
    }


def naive_aps(x: np.ndarray) -> float:
    s = cosine_similarity(x)
    return float(s[np.triu_indices(len(x), k=1)].mean())


def naive_remote_clique(x: np.ndarray) -> float:
    dist = 1.0 - cosine_similarity(x)
    np.fill_diagonal(dist, 0.0)
    return float((dist.sum(axis=1) / (len(x) - 1)).mean())


def naive_chamfer(x: np.ndarray) -> float:
    dist = 1.0 - cosine_similarity(x)
    np.fill_diagonal(dist, np.inf)
    return float(dist.min(axis=1).mean())


def naive_top_k(real: np.ndarray, gen: np.ndarray, k: int) -> float:
    s = cosine_similarity(real, gen)
    return float(np.sort(s, axis=1)[:, -k:].mean())


def naive_by_class(emb: np.ndarray, labels: list[str]) -> dict[str, float]:
    lab = np.asarray(labels)
    return {c: naive_aps(emb[lab == c]) for c in sorted(set(labels))}


def naive_inter_class(emb: np.ndarray, labels: list[str]) -> float:
    lab = np.asarray(labels)
    classes = sorted(set(labels))
    pairs = [
        float(cosine_similarity(emb[lab == a], emb[lab == b]).mean())
        for i, a in enumerate(classes)
        for b in classes[i + 1 :]
    ]
    return float(np.mean(pairs))


def naive_vocab(texts: list[str]) -> int:
    vec = CountVectorizer(lowercase=True, token_pattern=r"[a-z0-9']+")
    vec.fit(texts)
    return len(vec.vocabulary_)


def naive_metrics(k: int) -> dict[str, Callable[[dict[str, Any]], Any]]:
    return {
        "vocabulary_size": lambda D: naive_vocab(D["texts"]),
        "normalize": lambda D: sk_normalize(D["emb"]),
        "average_pairwise_similarity": lambda D: naive_aps(D["emb"]),
        "cross_class_similarity": lambda D: float(cosine_similarity(*_first_two_classes(D)).mean()),
        "aps_by_class": lambda D: naive_by_class(D["emb"], D["labels"]),
        "inter_class_aps": lambda D: naive_inter_class(D["emb"], D["labels"]),
        "remote_clique": lambda D: naive_remote_clique(D["emb"]),
        "chamfer_distance": lambda D: naive_chamfer(D["emb"]),
        f"top_k_similarity(k={k})": lambda D: naive_top_k(D["real"], D["emb"], k),
    }


def max_abs_diff(a: Any, b: Any) -> float:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), (a.keys(), b.keys())
        return max(abs(a[key] - b[key]) for key in a)
    if isinstance(a, np.ndarray):
        return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return float(abs(a - b))


# --------------------------------------------------------------------------------------------------
# measurement


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MiB  # Linux: KiB


def timed(fn: Callable[[dict[str, Any]], Any], data: dict[str, Any], min_total: float = 0.5) -> tuple[float, Any]:
    """Best wall time of ``fn(data)``: one run, or the best of 3 when a run is under ``min_total`` s."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn(data)
    best = time.perf_counter() - t0
    if best < min_total:
        for _ in range(2):
            gc.collect()
            t0 = time.perf_counter()
            out = fn(data)
            best = min(best, time.perf_counter() - t0)
    return best, out


def traced_peak(fn: Callable[[dict[str, Any]], Any], data: dict[str, Any]) -> float:
    """Peak traced allocation (MiB) of ``fn(data)`` above what was live before the call."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - before) / MiB


def subset(data: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "emb": np.ascontiguousarray(data["emb"][:n]),
        "real": np.ascontiguousarray(data["real"][:n]),
        "labels": data["labels"][:n],
        "texts": data["texts"][:n],
    }


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="embeddings at the large size")
    ap.add_argument("--d", type=int, default=384, help="embedding dimension")
    ap.add_argument("--n-real", type=int, default=7600,
                    help="real test rows for top-k (default 7600: the size of the AG News test set)")
    ap.add_argument("--n-naive", type=int, default=10_000, help="size of the fast-vs-naive run")
    ap.add_argument("--k", type=int, default=5, help="k of top_k_similarity")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--chunk-size", type=int, default=M.DEFAULT_CHUNK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass at --n")
    args = ap.parse_args(argv)
    n_real = args.n_real
    n_naive = min(args.n_naive, args.n, n_real)

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, cpus {os.cpu_count()}, "
        f"chunk_size {args.chunk_size}, seed {args.seed}"
    )
    t0 = time.perf_counter()
    data = make_data(args.n, n_real, args.d, args.classes, args.seed)
    print(
        f"data: emb {data['emb'].shape} {data['emb'].dtype}, real {data['real'].shape}, "
        f"{args.classes} classes, {len(data['texts'])} texts ({time.perf_counter() - t0:.1f} s); "
        f"maxrss {maxrss_mib():.0f} MiB"
    )

    fast = fast_metrics(args.k, args.chunk_size)
    naive = naive_metrics(args.k)

    # ---- 1. fast metrics at N
    print(f"\n== fast metrics at N={args.n}, d={args.d} (top-k: {n_real} real x {args.n} generated)")
    rows = []
    total = 0.0
    for name, fn in fast.items():
        seconds, _ = timed(fn, data, min_total=0.0)
        total += seconds
        rss = maxrss_mib()
        rows.append((name, seconds, rss))
        print(f"  {name:<28} {seconds:8.3f} s   maxrss so far {rss:7.0f} MiB", flush=True)
    peaks: dict[str, float] = {}
    if not args.no_memory:
        for name, fn in fast.items():
            peaks[name] = traced_peak(fn, data)

    print(f"\n{'metric':<28} {'time s':>9} {'peak MiB':>10} {'maxrss MiB':>11}")
    for name, seconds, rss in rows:
        peak = f"{peaks[name]:10.1f}" if name in peaks else f"{'-':>10}"
        print(f"{name:<28} {seconds:9.3f} {peak} {rss:11.0f}")
    print("(peak MiB: tracemalloc peak above the live memory before the call, in a second run; "
          "maxrss: process high-water mark after the timed call)")

    # ---- 2. fast vs naive at n_naive, same float32 input, side by side
    small = subset(data, n_naive)
    print(f"\n== fast vs naive sklearn at N={n_naive}, d={args.d} (same float32 input, one run)")
    print(f"{'metric':<28} {'fast s':>9} {'naive s':>9} {'naive/fast':>11} {'max|diff|':>10}")
    fast_small = naive_small = 0.0
    for name in fast:
        tf, out_fast = timed(fast[name], small)
        tn, out_naive = timed(naive[name], small)
        fast_small += tf
        naive_small += tn
        diff = max_abs_diff(out_fast, out_naive)
        print(f"{name:<28} {tf:9.4f} {tn:9.4f} {tn / tf:11.1f} {diff:10.2e}", flush=True)
    print(f"{'all metrics':<28} {fast_small:9.4f} {naive_small:9.4f} {naive_small / fast_small:11.1f}")
    print(f"maxrss after the naive run {maxrss_mib():.0f} MiB")

    goal = "met" if total <= 10.0 else "NOT met"
    print(f"\nTOTAL fast time at N={args.n}, d={args.d}: {total:.2f} s (goal <= 10 s: {goal})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
