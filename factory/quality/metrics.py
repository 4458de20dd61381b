"""Diversity and real-vs-generated similarity metrics over sentence embeddings: small pure functions.

Conventions shared by every function here:

* ``emb`` is an array of shape ``(N, d)`` (float32 or float64; anything else is converted to float64),
  one row per text. Rows are compared by cosine similarity ``cos(x, y) = x·y / (||x|| ||y||)``.
* A row whose L2 norm is 0 has no direction, so its cosine is undefined: such rows are left out of
  every similarity metric (they do not count in ``N`` either). :func:`normalize` keeps them as zeros.
* A metric with too few rows to be defined (no pair to average over) returns ``nan``;
  :func:`diversity_report` turns ``nan`` into ``None`` so that its result is valid JSON.
* Nothing builds the ``N x N`` similarity matrix. The all-pairs means (APS, remote clique, cross-class
  similarity) are exact in ``O(N·d)`` from the sum of the unit rows, accumulated in float64; the
  nearest-neighbour metrics (Chamfer, top-k) multiply float32 blocks of ``chunk_size`` rows, so the
  working memory is ``O(chunk_size · N)`` and 100k x 384 embeddings fit in a couple of GiB.
* The nearest-neighbour metrics take ``method``: ``"exact"`` (the blocked matmuls, ``O(N²d)``),
  ``"ann"`` (approximate nearest neighbours: a faiss inverted file of ``~sqrt(N)`` lists holding 4-bit
  product-quantizer codes, whose best candidates are re-scored exactly on the float32 rows) or ``"auto"``
  (the default: ``"ann"`` when the sets are large, see :data:`ANN_THRESHOLD`, else ``"exact"``). The ANN
  path keeps the definitions (cosine on the unit rows, self excluded from Chamfer but duplicates kept,
  zero rows left out, clipping): every similarity it uses is exact, only a true nearest neighbour missing
  from the candidates makes a difference, and it can only lower the similarities found (raise Chamfer,
  lower top-k). It is reproducible (fixed seeds).

References: average pairwise similarity (APS) as in AttrPrompt (Yu et al., 2023, "Large Language Model
as Attributed Training Data Generator"); remote clique, Chamfer distance and top-k similarity as in
Li et al., 2023 ("Synthetic Data Generation with Large Language Models for Text Classification:
Potential and Limitations").
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Hashable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ANN_THRESHOLD",
    "Method",
    "aps_by_class",
    "average_pairwise_similarity",
    "chamfer_distance",
    "cross_class_similarity",
    "diversity_report",
    "inter_class_aps",
    "normalize",
    "remote_clique",
    "top_k_similarity",
    "vocabulary_size",
]

TOKEN = re.compile(r"[a-z0-9']+")
DEFAULT_CHUNK = 4096
# Rows of unit vectors handled at a time by the O(N·d) sums (bounds the float64 temporaries).
_SUM_CHUNK = 16384
# Smallest block width of the block-maxima top-k selection (see _row_top_k_sum).
_TOPK_MIN_BLOCK = 16

Method = Literal["auto", "exact", "ann"]
#: ``method="auto"`` switches Chamfer and top-k to the approximate nearest-neighbour index above this
#: many non-zero rows: Chamfer when ``N > ANN_THRESHOLD``, top-k when both the real and the generated
#: set are larger (with a small set on either side the exact blocked matmul is about as fast as
#: building and querying an index, and it is exact).
ANN_THRESHOLD = 20_000
# The ANN index (see _ann_index): lists per sqrt(N) of the indexed rows and k-means training rows per
# list (faiss warns below 39); below _ANN_MIN_ROWS rows the "ann" path computes the exact metric. The
# accuracy knobs, cost and accuracy growing with each: lists probed per row for Chamfer and for top-k,
# Chamfer's candidates per row, top-k's candidates per wanted neighbour and at least, all re-scored
# exactly (on 100k all-MiniLM-L6-v2 embeddings of real texts: 0.78% relative error for Chamfer, 0.58%
# for top-5; the lists probed set the floor: were every row of them scored exactly, Chamfer would be
# off by 0.57% with 16 lists, 0.84% with 12, top-5 by 0.46% with 32, 0.98% with 16; see
# benchmarks/bench_metrics.py). The codes: dimensions per 4-bit code, from how many dimensions codes
# are used at all, and whether they encode the residual to the list's centroid. Then k-means
# iterations (5 cost 0.1 s less than 10 at 100k for +0.02 points of Chamfer's error) and codebook
# iterations, and the seed of both and of the training sample (the result is reproducible).
_ANN_LISTS = 1.0
_ANN_TRAIN_PER_LIST = 40
_ANN_MIN_ROWS = 1_000
_ANN_NPROBE_CHAMFER = 16
_ANN_NPROBE_TOPK = 32
_ANN_CANDIDATES_CHAMFER = 16
_ANN_CANDIDATES_PER_K = 13
_ANN_CANDIDATES_TOPK_MIN = 64
_ANN_DIMS_PER_CODE = 4
_ANN_PQ_MIN_DIMS = 32
_ANN_BY_RESIDUAL = True
_ANN_KMEANS_NITER = 5
_ANN_PQ_NITER = 10
_ANN_SEED = 1234


# --------------------------------------------------------------------------------------------------
# helpers


def _as_2d_float(emb: ArrayLike) -> NDArray[np.floating[Any]]:
    """``emb`` as a 2-D float32/float64 array (other dtypes become float64); no copy when possible."""
    arr = np.asarray(emb)
    if arr.dtype != np.float32 and arr.dtype != np.float64:
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must have shape (N, d), got shape {arr.shape}")
    return arr


def _row_norms(arr: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """L2 norm of every row, computed in float64."""
    norms = np.empty(arr.shape[0], dtype=np.float64)
    for i0 in range(0, arr.shape[0], _SUM_CHUNK):
        block = arr[i0 : i0 + _SUM_CHUNK].astype(np.float64, copy=False)
        norms[i0 : i0 + _SUM_CHUNK] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return norms


def _unit_sum(emb: ArrayLike) -> tuple[NDArray[np.float64], float, int]:
    """``(s, q, n)``: sum ``s`` of the unit rows, sum ``q`` of their squared norms, count ``n``.

    Zero rows are left out. For exact unit vectors ``q == n``; using the computed ``q`` instead of
    ``n`` in the APS formula cancels the rounding of the normalisation exactly (it removes the
    diagonal terms ``u_i·u_i`` that were actually summed).
    """
    arr = _as_2d_float(emb)
    s = np.zeros(arr.shape[1], dtype=np.float64)
    q = 0.0
    n = 0
    for i0 in range(0, arr.shape[0], _SUM_CHUNK):
        block = arr[i0 : i0 + _SUM_CHUNK].astype(np.float64, copy=False)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        keep = norms > 0
        if not keep.all():
            block, norms = block[keep], norms[keep]
        unit = block / norms[:, None]
        s += unit.sum(axis=0)
        q += float(np.einsum("ij,ij->", unit, unit))
        n += unit.shape[0]
    return s, q, n


def _unit_rows32(emb: ArrayLike) -> NDArray[np.float32]:
    """The non-zero rows of ``emb`` scaled to unit L2 norm (norm computed in float64), as float32."""
    arr = _as_2d_float(emb)
    norms = _row_norms(arr)
    keep = norms > 0
    if not keep.all():
        arr, norms = arr[keep], norms[keep]
    out = np.empty(arr.shape, dtype=np.float32)
    for i0 in range(0, arr.shape[0], _SUM_CHUNK):
        block = arr[i0 : i0 + _SUM_CHUNK]
        out[i0 : i0 + _SUM_CHUNK] = block / norms[i0 : i0 + _SUM_CHUNK, None].astype(block.dtype)
    return out


def _check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _class_indices(labels: Sequence[Hashable], n: int) -> dict[str, NDArray[np.intp]]:
    """Row indices of every class, keyed by ``str(label)``, in sorted key order."""
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} embeddings")
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(str(label), []).append(i)
    return {key: np.asarray(groups[key], dtype=np.intp) for key in sorted(groups)}


def _row_top_k_sum(sims: NDArray[np.float32], k: int) -> NDArray[np.float64]:
    """Sum of the ``k`` largest entries of every row of ``sims`` (shape ``(c, m)``, ``m >= k``).

    Exact, and much cheaper than ``np.partition`` on long rows. The first ``B * b`` columns are cut
    into ``B`` blocks of ``b`` columns (``b ≈ sqrt(m / k)``), the rest (fewer than ``b``) is the tail.
    A row's ``k`` largest entries lie, ties aside, in the tail and the ``k`` blocks of largest maxima:
    for the i-th largest value ``v_i``, either at least ``k`` blocks have a maximum ``>= v_i`` (then
    the ``k`` chosen blocks hold ``k >= i`` entries ``>= v_i``) or fewer do (then all of them are
    chosen and every entry ``>= v_i`` is kept); so the i-th largest kept value is ``v_i``. One
    reduction pass over ``sims`` gives the block maxima; only ``k * b + tail`` candidates per row are
    then partitioned. The selected values are clipped to ``[-1, 1]`` (clipping is monotone, so the
    selection is the same as on clipped similarities).
    """
    c, m = sims.shape
    if k == 1:
        return np.clip(sims.max(axis=1).astype(np.float64), -1.0, 1.0)
    width = max(_TOPK_MIN_BLOCK, math.isqrt(m // k))
    n_blocks = m // width
    if n_blocks <= k:
        cand = sims
    else:
        main = sims[:, : n_blocks * width].reshape(c, n_blocks, width)  # a view: rows stay strided
        block_max = main.max(axis=2)
        top_blocks = np.argpartition(block_max, n_blocks - k, axis=1)[:, n_blocks - k :]
        cand = main[np.arange(c)[:, None], top_blocks].reshape(c, k * width)
        if n_blocks * width < m:
            cand = np.concatenate([cand, sims[:, n_blocks * width :]], axis=1)
    n_cand = cand.shape[1]
    top = np.partition(cand, n_cand - k, axis=1)[:, n_cand - k :].astype(np.float64)
    return np.clip(top, -1.0, 1.0).sum(axis=1)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# --------------------------------------------------------------------------------------------------
# approximate nearest neighbours: a faiss inverted file of product-quantizer codes, re-scored exactly


def _check_method(method: str) -> None:
    if method not in ("auto", "exact", "ann"):
        raise ValueError(f"method must be 'auto', 'exact' or 'ann', got {method!r}")


def _ann_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _use_ann(method: str, n: int) -> bool:
    """Whether to take the ANN path: ``method == "ann"``, or ``"auto"`` and ``n > ANN_THRESHOLD``
    (``n``: the rows that decide, see :data:`ANN_THRESHOLD`). ``"auto"`` falls back to the exact path,
    with a warning, when faiss is not installed; ``"ann"`` then raises ``ImportError``."""
    _check_method(method)
    if method == "exact" or (method == "auto" and n <= ANN_THRESHOLD):
        return False
    if _ann_available():
        return True
    if method == "ann":
        raise ImportError("method='ann' needs faiss: pip install faiss-cpu")
    warnings.warn("faiss is not installed: computing the exact O(N²d) metric", RuntimeWarning,
                  stacklevel=3)
    return False


class _AnnIndex(NamedTuple):
    """A faiss inverted file over unit rows (see :func:`_ann_index`) and what searching it needs."""

    lists: Any  # IndexIVFPQFastScan (codes) or IndexIVFFlat (float rows below _ANN_PQ_MIN_DIMS)
    quantizer: Any  # the lists' centroids (IndexFlatIP); ``lists`` does not own it
    rows: NDArray[np.float32]  # the indexed rows, unpadded: candidates are re-scored on them
    own_lists: tuple[NDArray[np.float32], NDArray[np.int64]]  # each row's nearest lists (sims, ids)


def _ann_index(base: NDArray[np.float32], nprobe: int, own_probe: int) -> _AnnIndex | None:
    """An inverted file of the unit rows ``base`` for inner-product search, or ``None`` below
    ``_ANN_MIN_ROWS`` rows (there the metric is computed exactly).

    ``round(_ANN_LISTS · sqrt(n))`` lists (a spherical k-means on ``_ANN_TRAIN_PER_LIST`` rows per
    list, drawn with a fixed seed) whose rows are stored as 4-bit product-quantizer codes of their
    residual to the list's centroid, 4 dimensions per code, scanned with SIMD ("fast scan"); a search
    probes the ``nprobe`` lists nearest to the query. Each row is assigned to its list once: the
    ``own_probe`` (≥ 1) nearest lists of every row are kept, so that a search of the rows themselves
    (Chamfer) reuses them. Rows are zero-padded to a multiple of 4 dimensions, which changes no inner
    product. Below ``_ANN_PQ_MIN_DIMS`` dimensions a few codes cannot rank close neighbours, and the
    float rows are small: the lists hold the rows themselves (``IndexIVFFlat``).
    """
    import faiss
    from faiss.contrib.ivf_tools import add_preassigned

    n = base.shape[0]
    if n < _ANN_MIN_ROWS:
        return None
    padded = _pad_to_4(base)
    d = padded.shape[1]
    nlist = min(round(_ANN_LISTS * math.sqrt(n)), n // _ANN_TRAIN_PER_LIST)
    rows = np.random.default_rng(_ANN_SEED).choice(n, nlist * _ANN_TRAIN_PER_LIST, replace=False)
    sample = padded[np.sort(rows)]
    kmeans = faiss.Kmeans(d, nlist, niter=_ANN_KMEANS_NITER, spherical=True, seed=_ANN_SEED,
                          verbose=False)
    kmeans.train(sample)
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(kmeans.centroids)  # trained: lists.train below trains the codes only
    if d < _ANN_PQ_MIN_DIMS:
        lists = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        lists = faiss.IndexIVFPQ(quantizer, d, nlist, d // _ANN_DIMS_PER_CODE, 4,
                                 faiss.METRIC_INNER_PRODUCT)
        lists.by_residual = _ANN_BY_RESIDUAL
        lists.pq.cp.niter, lists.pq.cp.seed = _ANN_PQ_NITER, _ANN_SEED
    lists.train(sample)
    own_sims, own_ids = quantizer.search(padded, own_probe)
    add_preassigned(lists, padded, np.ascontiguousarray(own_ids[:, 0]))
    if d >= _ANN_PQ_MIN_DIMS:
        lists = faiss.IndexIVFPQFastScan(lists)  # the same codes, packed for the SIMD scan
    lists.nprobe = nprobe
    return _AnnIndex(lists, quantizer, base, (own_sims, own_ids))


def _pad_to_4(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """``x`` with zero columns appended up to a multiple of 4 (no copy when there is nothing to add)."""
    extra = -x.shape[1] % 4
    return x if extra == 0 else np.pad(x, ((0, 0), (0, extra)))


def _ann_candidates(
    index: _AnnIndex, queries: NDArray[np.float32], k: int, own: bool = False
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``(sims, ids)`` of shape ``(len(queries), k)``: each query's ``k`` best candidates by their
    codes in the lists it probes, with their exact similarities (id ``-1`` and similarity ``-inf``
    where the probed lists held fewer), searched ``_SUM_CHUNK`` queries at a time. ``own``: the
    queries are the indexed rows, whose nearest lists the index already knows."""
    from faiss.contrib.ivf_tools import search_preassigned

    nprobe = index.lists.nprobe
    sims = np.empty((queries.shape[0], k), dtype=np.float32)
    ids = np.empty((queries.shape[0], k), dtype=np.int64)
    for i0 in range(0, queries.shape[0], _SUM_CHUNK):
        part = slice(i0, i0 + _SUM_CHUNK)
        rows = np.ascontiguousarray(queries[part])
        block = _pad_to_4(rows)
        if own:
            probe_sims, probe_ids = (np.ascontiguousarray(a[part, :nprobe]) for a in index.own_lists)
            _, ids[part] = search_preassigned(index.lists, block, k, probe_ids, probe_sims)
        else:
            _, ids[part] = index.lists.search(block, k)
        sims[part] = _inner_products_at(rows, index.rows, ids[part])
    return sims, ids


def _inner_products_at(
    queries: NDArray[np.float32], rows: NDArray[np.float32], ids: NDArray[np.int64]
) -> NDArray[np.float32]:
    """``out[i, j] = queries[i] · rows[ids[i, j]]`` in float32 (faiss, multi-threaded), ``-inf``
    where ``ids[i, j] < 0``."""
    import faiss

    ids = np.ascontiguousarray(ids)
    safe = np.where(ids < 0, 0, ids)
    out = np.empty(ids.shape, dtype=np.float32)
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(queries),
                                     faiss.swig_ptr(rows), faiss.swig_ptr(safe),
                                     queries.shape[1], queries.shape[0], ids.shape[1])
    out[ids < 0] = -np.inf
    return out


def _chamfer_ann(unit: NDArray[np.float32], chunk_size: int) -> float:
    """:func:`chamfer_distance` of the unit rows ``unit`` (``N >= 2``) through :func:`_ann_index`.

    Every row takes the ``_ANN_CANDIDATES_CHAMFER`` best rows by their codes in the
    ``_ANN_NPROBE_CHAMFER`` lists it probes and re-scores them exactly. The point itself is dropped
    from its candidates, not its copies, so a duplicate still counts as distance 0. A similarity is
    symmetric, so each candidate pair also updates the candidate's nearest neighbour: a pair is found
    when either point finds the other. A row left without any candidate is computed exactly.
    """
    n = unit.shape[0]
    index = _ann_index(unit, _ANN_NPROBE_CHAMFER, own_probe=_ANN_NPROBE_CHAMFER)
    if index is None:
        return _chamfer_exact(unit, chunk_size)
    sims, ids = _ann_candidates(index, unit, _ANN_CANDIDATES_CHAMFER, own=True)
    del index
    found = (ids >= 0) & (ids != np.arange(n)[:, None])
    sims[~found] = -np.inf
    best = sims.max(axis=1)
    np.maximum.at(best, ids[found], sims[found])
    left = np.flatnonzero(~np.isfinite(best))
    for i0 in range(0, left.size, chunk_size):
        sel = left[i0 : i0 + chunk_size]
        block = unit[sel] @ unit.T
        block[np.arange(sel.size), sel] = -np.inf
        best[sel] = block.max(axis=1)
    nearest = np.clip(best.astype(np.float64), -1.0, 1.0)
    return float(1.0 - nearest.mean())


def _top_k_ann(real: NDArray[np.float32], gen: NDArray[np.float32], k: int, chunk_size: int) -> float:
    """:func:`top_k_similarity` of unit rows (``len(real) >= 1``, ``len(gen) >= k``) through
    :func:`_ann_index` over the generated rows.

    Each real row takes the ``k`` best of its
    ``max(_ANN_CANDIDATES_PER_K · k, _ANN_CANDIDATES_TOPK_MIN)`` best candidates by their codes in the
    ``_ANN_NPROBE_TOPK`` lists it probes, re-scored exactly (4-bit codes rank coarsely, so even
    ``k = 1`` re-scores a few dozen); every generated row is indexed once, so copies are counted as
    often as they occur. A real row with fewer than ``k`` candidates is computed exactly.
    """
    index = _ann_index(gen, _ANN_NPROBE_TOPK, own_probe=1)
    if index is None:
        return _top_k_exact(real, gen, k, chunk_size)
    candidates = min(max(_ANN_CANDIDATES_PER_K * k, _ANN_CANDIDATES_TOPK_MIN), gen.shape[0])
    sims, _ = _ann_candidates(index, real, candidates)
    del index
    best = -np.partition(-sims, k - 1, axis=1)[:, :k]
    row_sums = np.clip(best.astype(np.float64), -1.0, 1.0).sum(axis=1)
    short = np.flatnonzero(~np.isfinite(best).all(axis=1))
    for i0 in range(0, short.size, chunk_size):
        sel = short[i0 : i0 + chunk_size]
        row_sums[sel] = _row_top_k_sum(real[sel] @ gen.T, k)
    return float(row_sums.sum()) / (real.shape[0] * k)


# --------------------------------------------------------------------------------------------------
# metrics


def vocabulary_size(texts: Sequence[str]) -> int:
    """Number of distinct word tokens: ``|∪_t tokens(lower(t))|`` with tokens = regex ``[a-z0-9']+``.

    The regex runs on the lowercased text, so other characters (punctuation, non-ASCII letters)
    separate tokens and never appear in them.
    """
    vocab: set[str] = set()
    for text in texts:
        vocab.update(TOKEN.findall(text.lower()))
    return len(vocab)


def normalize(emb: ArrayLike) -> NDArray[np.floating[Any]]:
    """Rows scaled to unit L2 norm: ``u_i = x_i / ||x_i||``; a zero row stays a zero row.

    Returns a new array of the input's float dtype (float32 or float64; other dtypes give float64).
    The norms are computed in float64.
    """
    arr = _as_2d_float(emb)
    norms = _row_norms(arr)
    norms[norms == 0] = 1.0
    return (arr / norms[:, None].astype(arr.dtype)).astype(arr.dtype, copy=False)


def average_pairwise_similarity(emb: ArrayLike) -> float:
    """APS: mean cosine similarity over all unordered pairs ``i < j`` (AttrPrompt).

    ``APS = 2/(N(N-1)) Σ_{i<j} u_i·u_j = (||s||² - N) / (N(N-1))`` with ``u_i`` the unit rows,
    ``s = Σ_i u_i`` and ``N`` the number of non-zero rows (zero rows are excluded), because
    ``||s||² = Σ_i ||u_i||² + 2 Σ_{i<j} u_i·u_j`` and ``||u_i||² = 1``. ``O(N·d)``, float64
    accumulation (``N`` is taken as the computed ``Σ_i ||u_i||²``, equal to ``N`` up to rounding).
    ``nan`` if ``N < 2``. Lower means more diverse.
    """
    s, q, n = _unit_sum(emb)
    if n < 2:
        return math.nan
    return float((s @ s - q) / (n * (n - 1)))


def cross_class_similarity(emb_a: ArrayLike, emb_b: ArrayLike) -> float:
    """Mean cosine similarity over all pairs ``(a, b) ∈ A x B``: ``(s_A · s_B) / (|A| |B|)``.

    ``s_A``, ``s_B`` are the sums of the unit rows of each set, ``|A|``, ``|B|`` their numbers of
    non-zero rows. ``O((|A| + |B|)·d)``. ``nan`` if either set has no non-zero row.
    """
    s_a, _, n_a = _unit_sum(emb_a)
    s_b, _, n_b = _unit_sum(emb_b)
    if s_a.shape != s_b.shape:
        raise ValueError(f"dimension mismatch: {s_a.shape[0]} vs {s_b.shape[0]}")
    if n_a == 0 or n_b == 0:
        return math.nan
    return float((s_a @ s_b) / (n_a * n_b))


def aps_by_class(emb: ArrayLike, labels: Sequence[Hashable]) -> dict[str, float]:
    """APS within each class: ``{str(c): average_pairwise_similarity(emb[labels == c])}``.

    Keys are ``str(label)`` in sorted order; a class with fewer than 2 non-zero rows maps to ``nan``.
    """
    arr = _as_2d_float(emb)
    return {
        key: average_pairwise_similarity(arr[idx])
        for key, idx in _class_indices(labels, arr.shape[0]).items()
    }


def inter_class_aps(emb: ArrayLike, labels: Sequence[Hashable]) -> float:
    """Mean over unordered class pairs ``c < c'`` of ``cross_class_similarity(emb[c], emb[c'])``.

    ``= (1/P) Σ_{c<c'} (s_c · s_c') / (n_c n_c')`` with ``s_c`` the sum of the unit rows of class
    ``c``, ``n_c`` its number of non-zero rows, and ``P`` the number of pairs of classes that have at
    least one non-zero row each. Each class pair weighs the same, whatever the class sizes.
    ``O(N·d + K²·d)``. ``nan`` with fewer than 2 such classes. Higher than the within-class APS
    means the classes are hard to tell apart.
    """
    arr = _as_2d_float(emb)
    sums, counts = [], []
    for idx in _class_indices(labels, arr.shape[0]).values():
        s, _, n = _unit_sum(arr[idx])
        if n > 0:
            sums.append(s)
            counts.append(n)
    if len(sums) < 2:
        return math.nan
    mat = np.stack(sums)
    cnt = np.asarray(counts, dtype=np.float64)
    cross = (mat @ mat.T) / np.outer(cnt, cnt)
    iu = np.triu_indices(len(sums), k=1)
    return float(cross[iu].mean())


def remote_clique(emb: ArrayLike) -> float:
    """Remote clique score (Li et al., 2023): mean over points of the mean cosine distance to the others.

    ``RC = (1/N) Σ_i (1/(N-1)) Σ_{j≠i} (1 - u_i·u_j) = 1 - (1/(N(N-1))) Σ_{i≠j} u_i·u_j = 1 - APS``,
    so it is computed exactly in ``O(N·d)`` from :func:`average_pairwise_similarity` (``N`` = non-zero
    rows). ``nan`` if ``N < 2``. Higher means more diverse.
    """
    return 1.0 - average_pairwise_similarity(emb)


def chamfer_distance(emb: ArrayLike, chunk_size: int = DEFAULT_CHUNK, method: Method = "auto") -> float:
    """Chamfer distance (Li et al., 2023): mean over points of the cosine distance to the nearest other point.

    ``CD = (1/N) Σ_i min_{j≠i} (1 - u_i·u_j) = 1 - (1/N) Σ_i max_{j≠i} u_i·u_j`` over the ``N``
    non-zero rows; only the point itself is excluded, so a duplicate text counts as distance 0.
    Each similarity is clipped to ``[-1, 1]``. ``nan`` if ``N < 2``. Higher means more diverse.

    Computed by blocks of ``chunk_size`` rows with float32 matmuls, using the symmetry of the
    similarity: block ``[i0, i1)`` is multiplied only with the rows ``[i0, N)``, and the block's row
    maxima update rows ``[i0, i1)`` while its column maxima update rows ``[i0, N)`` (the diagonal is
    masked). This is ``≈ N²d`` flops (half the full product) and ``chunk_size · N`` float32 of memory.

    ``method``: ``"exact"`` is the computation above; ``"ann"`` takes each point's nearest other point
    among a few candidates found by an approximate index and re-scored exactly (see
    :func:`_chamfer_ann`), so it can only miss a nearest neighbour and the result can only be higher
    than the exact one (under 1% relative on 100k real sentence embeddings, see the README's
    benchmarks); ``"auto"`` (default) is ``"ann"`` when ``N > ANN_THRESHOLD``, else ``"exact"``.
    """
    _check_chunk(chunk_size)
    _check_method(method)
    unit = _unit_rows32(emb)
    n = unit.shape[0]
    if n < 2:
        return math.nan
    if _use_ann(method, n):
        return _chamfer_ann(unit, chunk_size)
    return _chamfer_exact(unit, chunk_size)


def _chamfer_exact(unit: NDArray[np.float32], chunk_size: int) -> float:
    """:func:`chamfer_distance` of the unit rows ``unit`` (``N >= 2``) by the blocked matmuls."""
    n = unit.shape[0]
    best = np.full(n, -np.inf, dtype=np.float32)
    # one buffer for every block: fresh multi-GB arrays per block would page-fault on every chunk
    buf = np.empty(min(chunk_size, n) * n, dtype=np.float32)
    for i0 in range(0, n, chunk_size):
        i1 = min(i0 + chunk_size, n)
        sims = buf[: (i1 - i0) * (n - i0)].reshape(i1 - i0, n - i0)
        np.matmul(unit[i0:i1], unit[i0:].T, out=sims)  # column j is row i0 + j
        diag = np.arange(i1 - i0)
        sims[diag, diag] = -np.inf
        np.maximum(best[i0:i1], sims.max(axis=1), out=best[i0:i1])
        np.maximum(best[i0:], sims.max(axis=0), out=best[i0:])
    del buf
    nearest = np.clip(best.astype(np.float64), -1.0, 1.0)
    return float(1.0 - nearest.mean())


def top_k_similarity(
    real_emb: ArrayLike,
    generated_emb: ArrayLike,
    k: int = 5,
    chunk_size: int = DEFAULT_CHUNK,
    method: Method = "auto",
) -> float:
    """Top-k similarity (Li et al., 2023): how close the generated set comes to each real text.

    ``TopK = (1/R) Σ_r (1/k) Σ_{g ∈ top_k(r)} u_r·v_g``, where ``top_k(r)`` are the ``k`` generated
    rows of highest cosine similarity to the real row ``r`` (ties broken arbitrarily, which does not
    change the sum), ``R`` the number of non-zero real rows. Each similarity is clipped to
    ``[-1, 1]``. ``nan`` if there is no non-zero real row or fewer than ``k`` non-zero generated rows.

    Computed by blocks of ``chunk_size`` real rows (one float32 matmul against all generated rows per
    block, ``chunk_size · G`` float32 of memory), with an exact block-pruned top-k per row.

    ``method``: ``"exact"`` is the computation above; ``"ann"`` takes each real row's ``k`` most
    similar generated rows among candidates found by an approximate index over the generated set and
    re-scored exactly (see :func:`_top_k_ann`), so the result can only be lower than the exact one;
    ``"auto"`` (default) is ``"ann"`` when both ``R`` and ``G`` exceed ``ANN_THRESHOLD``, else
    ``"exact"``.
    """
    _check_chunk(chunk_size)
    _check_method(method)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    real = _unit_rows32(real_emb)
    gen = _unit_rows32(generated_emb)
    if real.shape[1] != gen.shape[1]:
        raise ValueError(f"dimension mismatch: {real.shape[1]} vs {gen.shape[1]}")
    n_real, n_gen = real.shape[0], gen.shape[0]
    if n_real == 0 or n_gen < k:
        return math.nan
    if _use_ann(method, min(n_real, n_gen)):
        return _top_k_ann(real, gen, k, chunk_size)
    return _top_k_exact(real, gen, k, chunk_size)


def _top_k_exact(real: NDArray[np.float32], gen: NDArray[np.float32], k: int, chunk_size: int) -> float:
    """:func:`top_k_similarity` of unit rows (``len(real) >= 1``, ``len(gen) >= k``) by blocked matmuls."""
    n_real, n_gen = real.shape[0], gen.shape[0]
    total = 0.0
    # one buffer reused by every block (see _chamfer_exact)
    buf = np.empty(min(chunk_size, n_real) * n_gen, dtype=np.float32)
    for i0 in range(0, n_real, chunk_size):
        block = real[i0 : i0 + chunk_size]
        sims = buf[: block.shape[0] * n_gen].reshape(block.shape[0], n_gen)
        np.matmul(block, gen.T, out=sims)
        total += float(_row_top_k_sum(sims, k).sum())
    return total / (n_real * k)


def diversity_report(
    emb: ArrayLike,
    labels: Sequence[Hashable],
    texts: Sequence[str],
    chunk_size: int = DEFAULT_CHUNK,
    method: Method = "auto",
) -> dict[str, Any]:
    """Every diversity number of a labelled set, flat and JSON-serialisable (``nan`` becomes ``None``).

    ``{"overall": {n_texts, n_embedded, n_classes, vocabulary_size, aps, mean_class_aps,
    inter_class_aps, remote_clique, chamfer_distance},
    "per_class": {str(label): {n_texts, n_embedded, vocabulary_size, aps, remote_clique,
    chamfer_distance}}}`` where ``n_embedded`` counts the non-zero embedding rows, ``aps`` is
    :func:`average_pairwise_similarity` over the rows in scope, ``mean_class_aps`` the unweighted
    mean of the defined per-class APS values and ``inter_class_aps`` is :func:`inter_class_aps`.
    ``method`` is passed to every :func:`chamfer_distance`.
    """
    arr = _as_2d_float(emb)
    n = arr.shape[0]
    if len(texts) != n:
        raise ValueError(f"{len(texts)} texts for {n} embeddings")
    groups = _class_indices(labels, n)
    nonzero = _row_norms(arr) > 0

    per_class: dict[str, dict[str, Any]] = {}
    class_aps: list[float] = []
    for key, idx in groups.items():
        sub = arr[idx]
        aps = average_pairwise_similarity(sub)
        if not math.isnan(aps):
            class_aps.append(aps)
        per_class[key] = {
            "n_texts": int(idx.size),
            "n_embedded": int(nonzero[idx].sum()),
            "vocabulary_size": vocabulary_size([texts[i] for i in idx]),
            "aps": _nan_to_none(aps),
            "remote_clique": _nan_to_none(1.0 - aps),
            "chamfer_distance": _nan_to_none(chamfer_distance(sub, chunk_size, method)),
        }
    aps_all = average_pairwise_similarity(arr)
    overall = {
        "n_texts": n,
        "n_embedded": int(nonzero.sum()),
        "n_classes": len(groups),
        "vocabulary_size": vocabulary_size(texts),
        "aps": _nan_to_none(aps_all),
        "mean_class_aps": _nan_to_none(float(np.mean(class_aps)) if class_aps else math.nan),
        "inter_class_aps": _nan_to_none(inter_class_aps(arr, labels)),
        "remote_clique": _nan_to_none(1.0 - aps_all),
        "chamfer_distance": _nan_to_none(chamfer_distance(arr, chunk_size, method)),
    }
    return {"overall": overall, "per_class": per_class}
