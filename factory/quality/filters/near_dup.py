"""``near_dup``: cosine similarity of the embeddings ``>= filters.near_dup`` with an earlier kept sample,
in any class; greedy in canonical order, computed by blocks (never the ``N x N`` matrix)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from factory.quality.filters.base import FilterContext, SampleFilter, Verdict, register
from factory.spec import Spec

NEAR_DUP_CHUNK = 1024
_EPS = 1e-6  # float32 cosine of identical texts can fall a hair below 1.0


def near_duplicates(emb: NDArray[np.floating[Any]], threshold: float,
                    chunk_size: int = NEAR_DUP_CHUNK) -> list[tuple[int, float] | None]:
    """Greedy near-duplicate selection in row order: ``None`` for a kept row, else ``(j, cos)`` with ``j``
    the earlier kept row it duplicates (``cos >= threshold``, the most similar such row).

    Rows are taken in blocks of ``chunk_size``: each block is compared with the kept rows of the earlier
    blocks, ``4 · chunk_size`` kept rows at a time (so the similarity buffers stay ``O(chunk_size²)``),
    then with itself, row by row in order."""
    from factory.quality.metrics import normalize

    unit = np.ascontiguousarray(normalize(np.asarray(emb)), dtype=np.float32)
    n = unit.shape[0]
    limit = threshold - _EPS
    out: list[tuple[int, float] | None] = [None] * n
    kept_vecs = np.empty_like(unit)
    kept_idx = np.empty(n, dtype=np.intp)
    m = 0
    col_block = 4 * chunk_size
    for i0 in range(0, n, chunk_size):
        block = unit[i0 : i0 + chunk_size]
        c = block.shape[0]
        best = np.full(c, -np.inf, dtype=np.float32)
        arg = np.full(c, -1, dtype=np.intp)
        for j0 in range(0, m, col_block):
            sims = block @ kept_vecs[j0 : min(j0 + col_block, m)].T
            a = sims.argmax(axis=1)
            v = sims[np.arange(c), a]
            better = v > best
            best[better] = v[better]
            arg[better] = kept_idx[j0 + a[better]]
        inner = block @ block.T
        local: list[int] = []
        for r in range(c):
            if best[r] >= limit:
                out[i0 + r] = (int(arg[r]), float(best[r]))
                continue
            if local:
                s = inner[r, local]
                k = int(s.argmax())
                if s[k] >= limit:
                    out[i0 + r] = (i0 + local[k], float(s[k]))
                    continue
            local.append(r)
        kept_vecs[m : m + len(local)] = block[local]
        kept_idx[m : m + len(local)] = np.asarray(local, dtype=np.intp) + i0
        m += len(local)
    return out


def near_dup_verdicts(samples: Sequence[dict[str, Any]], emb: NDArray[np.floating[Any]],
                      threshold: float, chunk_size: int = NEAR_DUP_CHUNK) -> list[Verdict]:
    out: list[Verdict] = []
    for s, hit in zip(samples, near_duplicates(emb, threshold, chunk_size)):
        if hit is None:
            out.append((True, None))
        else:
            other = samples[hit[0]]
            where = "same class" if other["class"] == s["class"] else f"class {other['class']}"
            out.append((False, f"near duplicate of {other['sample_id']} (cosine {hit[1]:.3f}, {where})"))
    return out


@register
class NearDuplicateFilter(SampleFilter):
    name, rank = "near_dup", 40

    def enabled(self, spec: Spec) -> bool:
        return spec.filters.near_dup is not None

    def verdicts(self, ctx: FilterContext, samples: list[dict[str, Any]]) -> tuple[list[Verdict], str | None]:
        return near_dup_verdicts(samples, ctx.embeddings(samples), float(ctx.spec.filters.near_dup or 1.0)), None
