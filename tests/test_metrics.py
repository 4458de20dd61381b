"""Tests of factory.quality.metrics: hand-computed tiny cases, a naive sklearn reference, edge cases."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity

from factory.quality import metrics as M
from factory.quality.metrics import (
    aps_by_class,
    average_pairwise_similarity,
    chamfer_distance,
    cross_class_similarity,
    diversity_report,
    inter_class_aps,
    normalize,
    remote_clique,
    top_k_similarity,
    vocabulary_size,
)

TOL = 1e-6
SQRT_HALF = math.sqrt(0.5)

# a = (1, 0), b = (0, 1), c = (3, 4) -> unit c = (0.6, 0.8)
# cos(a, b) = 0, cos(a, c) = 0.6, cos(b, c) = 0.8
TRIANGLE = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])


# ------------------------------------------------------------------------------------------------
# naive references: full N x N matrices from sklearn


def naive_aps(x: np.ndarray) -> float:
    s = cosine_similarity(x)
    return float(s[np.triu_indices(len(x), k=1)].mean())


def naive_remote_clique(x: np.ndarray) -> float:
    d = 1.0 - cosine_similarity(x)
    np.fill_diagonal(d, 0.0)
    return float((d.sum(axis=1) / (len(x) - 1)).mean())


def naive_chamfer(x: np.ndarray) -> float:
    d = 1.0 - cosine_similarity(x)
    np.fill_diagonal(d, np.inf)
    return float(d.min(axis=1).mean())


def naive_top_k(real: np.ndarray, gen: np.ndarray, k: int) -> float:
    s = cosine_similarity(real, gen)
    return float(np.sort(s, axis=1)[:, -k:].mean())


def naive_cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(cosine_similarity(a, b).mean())


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(1234)
    # a shared offset makes the similarities far from 0, so the means are not trivially ~0
    return rng.standard_normal((300, 16)) + 0.7 * rng.standard_normal(16)


@pytest.fixture(scope="module")
def other() -> np.ndarray:
    rng = np.random.default_rng(99)
    return rng.standard_normal((217, 16)) + 0.5 * rng.standard_normal(16)


# ------------------------------------------------------------------------------------------------
# hand-computed values


def test_vocabulary_size_by_hand() -> None:
    texts = ["Hello, world!", "hello WORLD it's", "naïve café 42"]
    # {hello, world} + {it's} + "naïve café 42" -> na, ve, caf, 42 (ï and é split tokens) = 7
    assert vocabulary_size(texts) == 7
    assert vocabulary_size([]) == 0
    assert vocabulary_size(["", "  ...  "]) == 0


def test_normalize_by_hand() -> None:
    out = normalize(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]]))
    # (3, 4) / 5 = (0.6, 0.8); the zero row stays zero; (0, -2) / 2 = (0, -1)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], atol=1e-15)
    assert not np.isnan(out).any()


def test_normalize_dtypes() -> None:
    assert normalize(np.ones((2, 3), dtype=np.float32)).dtype == np.float32
    assert normalize(np.ones((2, 3), dtype=np.float64)).dtype == np.float64
    ints = normalize(np.array([[3, 4]]))
    assert ints.dtype == np.float64
    np.testing.assert_allclose(ints, [[0.6, 0.8]])


def test_aps_and_remote_clique_by_hand() -> None:
    # pairs: 0 + 0.6 + 0.8 = 1.4 over 3 pairs -> 1.4 / 3
    # via the sum: s = (1 + 0 + 0.6, 0 + 1 + 0.8) = (1.6, 1.8), ||s||^2 = 2.56 + 3.24 = 5.8,
    # (5.8 - 3) / (3 * 2) = 2.8 / 6 = 1.4 / 3
    assert average_pairwise_similarity(TRIANGLE) == pytest.approx(1.4 / 3, abs=1e-12)
    # mean distance of a: (1 + 0.4) / 2, of b: (1 + 0.2) / 2, of c: (0.4 + 0.2) / 2 -> mean 1.6 / 3
    assert remote_clique(TRIANGLE) == pytest.approx(1.6 / 3, abs=1e-12)


def test_aps_two_orthogonal_and_two_parallel() -> None:
    assert average_pairwise_similarity([[1.0, 0.0], [0.0, 5.0]]) == pytest.approx(0.0, abs=1e-12)
    assert average_pairwise_similarity([[1.0, 1.0], [2.0, 2.0]]) == pytest.approx(1.0, abs=1e-12)
    assert average_pairwise_similarity([[1.0, 0.0], [-3.0, 0.0]]) == pytest.approx(-1.0, abs=1e-12)


def test_chamfer_by_hand() -> None:
    # nearest of a is c (cos 0.6, dist 0.4), of b is c (cos 0.8, dist 0.2), of c is b (dist 0.2)
    # mean = (0.4 + 0.2 + 0.2) / 3 = 0.8 / 3
    for chunk in (1, 2, 3, 4096):
        assert chamfer_distance(TRIANGLE, chunk_size=chunk) == pytest.approx(0.8 / 3, abs=1e-7)


def test_chamfer_excludes_self_but_not_duplicates() -> None:
    # (1, 0) and (2, 0) point the same way: each one's nearest other point is at distance 0;
    # (0, 1) is at distance 1 from both
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert chamfer_distance(x, chunk_size=2) == pytest.approx((0.0 + 0.0 + 1.0) / 3, abs=1e-7)
    # two orthogonal points: if self were not excluded the answer would be 0
    assert chamfer_distance([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(1.0, abs=1e-7)


def test_top_k_by_hand() -> None:
    real = np.array([[1.0, 0.0], [0.0, 2.0]])
    gen = np.array([[0.0, 1.0], [3.0, 4.0], [-1.0, 0.0], [1.0, 1.0]])
    # real (1, 0): cosines 0, 0.6, -1, sqrt(1/2) -> top 2 = sqrt(1/2), 0.6
    # real (0, 1): cosines 1, 0.8, 0, sqrt(1/2)  -> top 2 = 1, 0.8
    top2_a = (SQRT_HALF + 0.6) / 2
    top2_b = (1.0 + 0.8) / 2
    assert top_k_similarity(real, gen, k=2) == pytest.approx((top2_a + top2_b) / 2, abs=1e-7)
    # k = 1: (sqrt(1/2) + 1) / 2
    assert top_k_similarity(real, gen, k=1) == pytest.approx((SQRT_HALF + 1.0) / 2, abs=1e-7)
    # k = 4 = all generated: row means (0 + 0.6 - 1 + sqrt(1/2)) / 4 and (1 + 0.8 + 0 + sqrt(1/2)) / 4
    all_a = (0.0 + 0.6 - 1.0 + SQRT_HALF) / 4
    all_b = (1.0 + 0.8 + 0.0 + SQRT_HALF) / 4
    assert top_k_similarity(real, gen, k=4) == pytest.approx((all_a + all_b) / 2, abs=1e-7)


def test_cross_class_by_hand() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[3.0, 4.0]])
    # cos: 0.6 and 0.8 -> mean 0.7; via sums: (1, 1) . (0.6, 0.8) / (2 * 1) = 1.4 / 2
    assert cross_class_similarity(a, b) == pytest.approx(0.7, abs=1e-12)
    assert cross_class_similarity(b, a) == pytest.approx(0.7, abs=1e-12)


def test_per_class_by_hand() -> None:
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [4.0, 3.0], [-1.0, 0.0]])
    labels = ["x", "x", "y", "y", "z"]
    # within x: cos((1,0),(0,1)) = 0; within y: (0.6,0.8).(0.8,0.6) = 0.96; z has one point -> nan
    by_class = aps_by_class(emb, labels)
    assert list(by_class) == ["x", "y", "z"]
    assert by_class["x"] == pytest.approx(0.0, abs=1e-12)
    assert by_class["y"] == pytest.approx(0.96, abs=1e-12)
    assert math.isnan(by_class["z"])
    # x-y: (0.6 + 0.8 + 0.8 + 0.6) / 4 = 0.7; x-z: (-1 + 0) / 2 = -0.5; y-z: (-0.6 - 0.8) / 2 = -0.7
    # mean over the 3 class pairs (each pair weighs the same): (0.7 - 0.5 - 0.7) / 3 = -0.5 / 3
    assert inter_class_aps(emb, labels) == pytest.approx(-0.5 / 3, abs=1e-12)
    # only x and y: 0.7
    assert inter_class_aps(emb[:4], labels[:4]) == pytest.approx(0.7, abs=1e-12)


def test_labels_are_stringified() -> None:
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = aps_by_class(emb, [1, 1, 2])
    assert set(out) == {"1", "2"}
    assert out["1"] == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------
# against the naive sklearn implementation (float64, N = 300, d = 16)


def test_aps_matches_naive(data: np.ndarray) -> None:
    assert average_pairwise_similarity(data) == pytest.approx(naive_aps(data), abs=TOL)
    # the offset makes APS clearly positive: the comparison is not 0 == 0
    assert naive_aps(data) > 0.1


def test_remote_clique_matches_naive(data: np.ndarray) -> None:
    expected = naive_remote_clique(data)
    assert remote_clique(data) == pytest.approx(expected, abs=TOL)
    assert expected == pytest.approx(1.0 - naive_aps(data), abs=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 64, 299, 300, 301, 4096])
def test_chamfer_matches_naive(data: np.ndarray, chunk: int) -> None:
    # 7 and 64 do not divide 300
    assert chamfer_distance(data, chunk_size=chunk) == pytest.approx(naive_chamfer(data), abs=TOL)


@pytest.mark.parametrize("k", [1, 2, 5, 17])
@pytest.mark.parametrize("chunk", [7, 300, 4096])
def test_top_k_matches_naive(data: np.ndarray, other: np.ndarray, k: int, chunk: int) -> None:
    expected = naive_top_k(data, other, k)
    assert top_k_similarity(data, other, k=k, chunk_size=chunk) == pytest.approx(expected, abs=TOL)


def test_top_k_all_generated(data: np.ndarray, other: np.ndarray) -> None:
    # k = |G|: the mean over all pairs, which is the cross-class similarity
    k = len(other)
    assert top_k_similarity(data, other, k=k) == pytest.approx(naive_cross(data, other), abs=TOL)


@pytest.mark.parametrize("min_block", [1, 2, 5, 1000])
def test_top_k_block_widths(
    data: np.ndarray, other: np.ndarray, monkeypatch: pytest.MonkeyPatch, min_block: int
) -> None:
    # other block widths of the top-k selection (1000 > |G|: one plain partition of each row)
    monkeypatch.setattr(M, "_TOPK_MIN_BLOCK", min_block)
    for k in (2, 5, 40):
        expected = naive_top_k(data, other, k)
        assert top_k_similarity(data, other, k=k, chunk_size=64) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("m", [5, 6, 31, 64, 100, 257, 1000, 1003])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_row_top_k_sum_with_ties(m: int, k: int) -> None:
    # small integers: many exact ties, including around the k-th largest value
    rng = np.random.default_rng(m * 10 + k)
    sims = (rng.integers(-4, 5, size=(50, m)) / 4.0).astype(np.float32)
    sims[0] = 0.25  # a row of identical values
    sims[1, -1] = 1.0  # the maximum in the tail
    expected = np.sort(sims.astype(np.float64), axis=1)[:, -k:].sum(axis=1)
    np.testing.assert_allclose(M._row_top_k_sum(sims, k), expected, atol=1e-12)


def test_row_top_k_sum_clips() -> None:
    sims = np.array([[1.0000002, 0.5, 0.2], [-1.0000002, -1.0000002, -1.0000002]], dtype=np.float32)
    # top 2: min(1.0000002, 1) + 0.5 = 1.5; and max(-1.0000002, -1) * 2 = -2
    np.testing.assert_allclose(M._row_top_k_sum(sims, 2), [1.5, -2.0], atol=1e-12)


def test_top_k_with_ties(data: np.ndarray, other: np.ndarray) -> None:
    # 700 copies of one direction among the generated rows: huge ties at the threshold
    gen = np.vstack([np.tile(other[:1], (700, 1)) * 3.0, other])
    expected = naive_top_k(data, gen, 5)
    assert top_k_similarity(data, gen, k=5, chunk_size=50) == pytest.approx(expected, abs=TOL)


def test_cross_class_matches_naive(data: np.ndarray, other: np.ndarray) -> None:
    expected = naive_cross(data, other)
    assert cross_class_similarity(data, other) == pytest.approx(expected, abs=TOL)
    assert abs(expected) > 0.01


def test_per_class_matches_naive(data: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    labels = rng.choice(["neg", "pos", "neu", "spam"], size=len(data)).tolist()
    classes = sorted(set(labels))
    lab = np.asarray(labels)
    by_class = aps_by_class(data, labels)
    assert list(by_class) == classes
    for c in classes:
        assert by_class[c] == pytest.approx(naive_aps(data[lab == c]), abs=TOL)
    pairs = [
        naive_cross(data[lab == a], data[lab == b])
        for i, a in enumerate(classes)
        for b in classes[i + 1 :]
    ]
    assert len(pairs) == 6
    assert inter_class_aps(data, labels) == pytest.approx(float(np.mean(pairs)), abs=TOL)


def test_float32_input_matches_naive(data: np.ndarray, other: np.ndarray) -> None:
    x32, g32 = data.astype(np.float32), other.astype(np.float32)
    # reference on the same (rounded) values, in float64
    x64, g64 = x32.astype(np.float64), g32.astype(np.float64)
    assert average_pairwise_similarity(x32) == pytest.approx(naive_aps(x64), abs=TOL)
    assert chamfer_distance(x32, chunk_size=33) == pytest.approx(naive_chamfer(x64), abs=TOL)
    assert top_k_similarity(x32, g32, k=5, chunk_size=33) == pytest.approx(
        naive_top_k(x64, g64, 5), abs=TOL
    )


def test_scale_invariance(data: np.ndarray) -> None:
    scales = np.random.default_rng(3).uniform(0.01, 100.0, size=(len(data), 1))
    scaled = data * scales
    assert average_pairwise_similarity(scaled) == pytest.approx(naive_aps(data), abs=TOL)
    assert chamfer_distance(scaled, chunk_size=37) == pytest.approx(naive_chamfer(data), abs=TOL)


# ------------------------------------------------------------------------------------------------
# edge cases


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_rows_is_nan(n: int) -> None:
    x = np.ones((n, 4))
    assert math.isnan(average_pairwise_similarity(x))
    assert math.isnan(remote_clique(x))
    assert math.isnan(chamfer_distance(x))


def test_empty_sets() -> None:
    assert math.isnan(cross_class_similarity(np.ones((2, 3)), np.zeros((0, 3))))
    assert math.isnan(top_k_similarity(np.zeros((0, 3)), np.ones((6, 3)), k=5))
    assert math.isnan(inter_class_aps(np.ones((3, 2)), ["a", "a", "a"]))


def test_zero_rows_are_excluded(data: np.ndarray, other: np.ndarray) -> None:
    with_zeros = np.insert(data, [0, 10, 10, 150, 300], 0.0, axis=0)
    gen_zeros = np.insert(other, [5, 217], 0.0, axis=0)
    assert len(with_zeros) == len(data) + 5
    assert average_pairwise_similarity(with_zeros) == pytest.approx(naive_aps(data), abs=TOL)
    assert remote_clique(with_zeros) == pytest.approx(naive_remote_clique(data), abs=TOL)
    assert chamfer_distance(with_zeros, chunk_size=19) == pytest.approx(naive_chamfer(data), abs=TOL)
    assert top_k_similarity(with_zeros, gen_zeros, k=3, chunk_size=19) == pytest.approx(
        naive_top_k(data, other, 3), abs=TOL
    )
    assert cross_class_similarity(with_zeros, gen_zeros) == pytest.approx(
        naive_cross(data, other), abs=TOL
    )


def test_zero_rows_do_not_count_as_points() -> None:
    # one real point plus a zero row: only one point has a direction -> undefined
    x = np.array([[1.0, 2.0], [0.0, 0.0]])
    assert math.isnan(average_pairwise_similarity(x))
    assert math.isnan(chamfer_distance(x))
    assert math.isnan(average_pairwise_similarity(np.zeros((5, 3))))
    # two generated rows with a direction are fewer than k = 3
    assert math.isnan(top_k_similarity(x, [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], k=3))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        average_pairwise_similarity(np.ones(4))
    with pytest.raises(ValueError):
        chamfer_distance(np.ones((3, 2)), chunk_size=0)
    with pytest.raises(ValueError):
        top_k_similarity(np.ones((3, 2)), np.ones((3, 2)), k=0)
    with pytest.raises(ValueError):
        top_k_similarity(np.ones((3, 2)), np.ones((3, 4)), k=1)
    with pytest.raises(ValueError):
        cross_class_similarity(np.ones((3, 2)), np.ones((3, 4)))
    with pytest.raises(ValueError):
        aps_by_class(np.ones((3, 2)), ["a", "b"])


def test_chamfer_memory_is_chunked() -> None:
    # the full 4000 x 4000 float32 matrix would take 64 MB; blocks of 256 rows take ~4 MB
    x = np.random.default_rng(0).standard_normal((4000, 8)).astype(np.float32)
    tracemalloc.start()
    try:
        chamfer_distance(x, chunk_size=256)
        top_k_similarity(x, x, k=5, chunk_size=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


# ------------------------------------------------------------------------------------------------
# report


def test_diversity_report(data: np.ndarray) -> None:
    labels = ["a"] * 150 + ["b"] * 149 + ["solo"]
    texts = [f"text number {i} of class {labels[i]}" for i in range(len(data))]
    rep = diversity_report(data, labels, texts, chunk_size=41)
    json.dumps(rep, allow_nan=False)  # strict JSON: no NaN anywhere
    overall, per_class = rep["overall"], rep["per_class"]
    assert set(per_class) == {"a", "b", "solo"}
    assert overall["n_texts"] == 300
    assert overall["n_embedded"] == 300
    assert overall["n_classes"] == 3
    # "text", "number", "of", "class", 300 numbers, "a", "b", "solo"
    assert overall["vocabulary_size"] == 4 + 300 + 3
    assert overall["aps"] == pytest.approx(naive_aps(data), abs=TOL)
    assert overall["remote_clique"] == pytest.approx(naive_remote_clique(data), abs=TOL)
    assert overall["chamfer_distance"] == pytest.approx(naive_chamfer(data), abs=TOL)
    assert overall["inter_class_aps"] == pytest.approx(inter_class_aps(data, labels), abs=1e-12)
    assert per_class["a"]["n_texts"] == 150
    assert per_class["a"]["vocabulary_size"] == 4 + 150 + 1
    assert per_class["a"]["aps"] == pytest.approx(naive_aps(data[:150]), abs=TOL)
    assert per_class["b"]["chamfer_distance"] == pytest.approx(naive_chamfer(data[150:299]), abs=TOL)
    expected_mean = (naive_aps(data[:150]) + naive_aps(data[150:299])) / 2
    assert overall["mean_class_aps"] == pytest.approx(expected_mean, abs=TOL)
    # one point: every similarity number is undefined -> None
    assert per_class["solo"]["aps"] is None
    assert per_class["solo"]["remote_clique"] is None
    assert per_class["solo"]["chamfer_distance"] is None
    assert per_class["solo"]["n_texts"] == 1


def test_diversity_report_length_mismatch(data: np.ndarray) -> None:
    with pytest.raises(ValueError):
        diversity_report(data, ["a"] * len(data), ["t"] * (len(data) - 1))


# ------------------------------------------------------------------------------------------------
# approximate nearest neighbours (method="ann"; "auto" switches above M.ANN_THRESHOLD rows)


def clustered(n: int, d: int, seed: int, centers: int = 40) -> np.ndarray:
    """Seeded float32 rows around ``centers`` random directions, with sub-clusters: nearest neighbours
    at cosine ~0.6-0.9, like sentence embeddings of a labelled set."""
    rng = np.random.default_rng(seed)
    top = rng.standard_normal((centers, d))
    sub = top[rng.integers(0, centers, size=4 * centers)] + 0.8 * rng.standard_normal((4 * centers, d))
    x = sub[rng.integers(0, 4 * centers, size=n)] + 0.9 * rng.standard_normal((n, d))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def big() -> np.ndarray:
    return clustered(3000, 64, seed=7)


@pytest.fixture(scope="module")
def big_other() -> np.ndarray:
    return clustered(2500, 64, seed=8)


def test_ann_chamfer_within_1pct(big: np.ndarray) -> None:
    exact = chamfer_distance(big, method="exact")
    approx = chamfer_distance(big, method="ann")
    assert exact > 0.1  # not a degenerate 0 == 0 comparison
    assert abs(approx - exact) / exact <= 0.01
    # the ANN only misses neighbours: it never finds a closer one than the exact nearest
    assert approx >= exact - 1e-6


@pytest.mark.parametrize("k", [1, 5])
def test_ann_top_k_within_1pct(big: np.ndarray, big_other: np.ndarray, k: int) -> None:
    exact = top_k_similarity(big, big_other, k=k, method="exact")
    approx = top_k_similarity(big, big_other, k=k, method="ann")
    assert exact > 0.1
    assert abs(approx - exact) / exact <= 0.01
    assert approx <= exact + 1e-6


def test_ann_small_inputs_match_naive(data: np.ndarray, other: np.ndarray) -> None:
    # 300 rows, fewer than an index is worth (M._ANN_MIN_ROWS): the "ann" path computes them exactly
    assert len(data) < M._ANN_MIN_ROWS
    assert chamfer_distance(data, method="ann") == pytest.approx(naive_chamfer(data), abs=TOL)
    expected = naive_top_k(data, other, 5)
    assert top_k_similarity(data, other, k=5, method="ann") == pytest.approx(expected, abs=TOL)
    assert chamfer_distance(TRIANGLE, method="ann") == pytest.approx(0.8 / 3, abs=1e-7)


def test_ann_excludes_self_but_not_duplicates(big: np.ndarray) -> None:
    # two orthogonal points: self excluded, so 1 (not 0)
    assert chamfer_distance([[1.0, 0.0], [0.0, 1.0]], method="ann") == pytest.approx(1.0, abs=1e-7)
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert chamfer_distance(x, method="ann") == pytest.approx(1.0 / 3, abs=1e-7)
    # 200 rows repeated (one scaled): each of them has a copy at distance 0, as in the exact path
    dup = np.vstack([big, big[:200] * 2.5])
    exact = chamfer_distance(dup, method="exact")
    approx = chamfer_distance(dup, method="ann")
    assert abs(approx - exact) / exact <= 0.01
    # all rows identical (enough of them for an index): every point's nearest other point is a copy
    assert len(big) >= M._ANN_MIN_ROWS
    assert chamfer_distance(np.ones((len(big), 4)), method="ann") == pytest.approx(0.0, abs=1e-6)


def test_ann_any_dimension() -> None:
    # 30 dimensions: zero-padded to 32 for codes of 4 dimensions each, which changes no cosine;
    # 3 (padded to 4): below M._ANN_PQ_MIN_DIMS, where the lists hold the float rows
    for d in (30, 3):
        x, y = clustered(3000, d, seed=9), clustered(2000, d, seed=10)
        exact = chamfer_distance(x, method="exact")
        assert abs(chamfer_distance(x, method="ann") - exact) / exact <= 0.01
        exact = top_k_similarity(x, y, k=5, method="exact")
        assert abs(top_k_similarity(x, y, k=5, method="ann") - exact) / exact <= 0.01


def test_ann_top_k_counts_copies(big: np.ndarray, big_other: np.ndarray) -> None:
    # 700 copies of one direction among the generated rows (as in test_top_k_with_ties)
    gen = np.vstack([np.tile(big_other[:1], (700, 1)) * 3.0, big_other])
    exact = top_k_similarity(big, gen, k=5, method="exact")
    approx = top_k_similarity(big, gen, k=5, method="ann")
    assert abs(approx - exact) / exact <= 0.01
    # k = |G| needs every generated row: the probed lists cannot hold them, the exact fallback does
    few = big_other[:50]
    assert top_k_similarity(big[:100], few, k=50, method="ann") == pytest.approx(
        naive_cross(big[:100].astype(np.float64), few.astype(np.float64)), abs=TOL
    )


def test_ann_zero_rows_excluded(big: np.ndarray, big_other: np.ndarray) -> None:
    with_zeros = np.insert(big, [0, 17, 1500, 3000], 0.0, axis=0)
    gen_zeros = np.insert(big_other, [3, 2500], 0.0, axis=0)
    assert chamfer_distance(with_zeros, method="ann") == chamfer_distance(big, method="ann")
    assert top_k_similarity(with_zeros, gen_zeros, k=5, method="ann") == pytest.approx(
        top_k_similarity(big, big_other, k=5, method="ann"), abs=1e-12
    )
    assert math.isnan(chamfer_distance(np.zeros((5, 3)), method="ann"))
    assert math.isnan(top_k_similarity(np.ones((2, 3)), np.ones((2, 3)), k=3, method="ann"))


def test_ann_is_reproducible(big: np.ndarray, big_other: np.ndarray) -> None:
    assert chamfer_distance(big, method="ann") == chamfer_distance(big, method="ann")
    assert top_k_similarity(big, big_other, method="ann") == top_k_similarity(big, big_other, method="ann")


class _Calls:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chamfer = self.top_k = 0
        real_chamfer, real_top_k = M._chamfer_ann, M._top_k_ann

        def chamfer(*args: object) -> float:
            self.chamfer += 1
            return real_chamfer(*args)

        def top_k(*args: object) -> float:
            self.top_k += 1
            return real_top_k(*args)

        monkeypatch.setattr(M, "_chamfer_ann", chamfer)
        monkeypatch.setattr(M, "_top_k_ann", top_k)


def test_auto_below_threshold_is_exact(
    big: np.ndarray, big_other: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _Calls(monkeypatch)
    assert len(big) <= M.ANN_THRESHOLD
    # identical values: the very same computation
    assert chamfer_distance(big) == chamfer_distance(big, method="exact")
    assert top_k_similarity(big, big_other) == top_k_similarity(big, big_other, method="exact")
    assert (calls.chamfer, calls.top_k) == (0, 0)


def test_auto_above_threshold_is_ann_and_exact_stays_exact(
    big: np.ndarray, big_other: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _Calls(monkeypatch)
    monkeypatch.setattr(M, "ANN_THRESHOLD", 1000)  # the inputs are above it
    exact_cd = chamfer_distance(big, method="exact")
    exact_tk = top_k_similarity(big, big_other, method="exact")
    assert (calls.chamfer, calls.top_k) == (0, 0)
    # "exact" forced above the threshold: still the blocked matmul, equal to the naive reference
    assert exact_cd == pytest.approx(naive_chamfer(big.astype(np.float64)), abs=TOL)
    assert exact_tk == pytest.approx(
        naive_top_k(big.astype(np.float64), big_other.astype(np.float64), 5), abs=TOL
    )
    assert chamfer_distance(big) == chamfer_distance(big, method="ann")
    assert top_k_similarity(big, big_other) == top_k_similarity(big, big_other, method="ann")
    assert (calls.chamfer, calls.top_k) == (2, 2)
    # top-k: "auto" switches only when both sets are above the threshold
    top_k_similarity(big[:900], big_other)
    top_k_similarity(big, big_other[:900])
    assert calls.top_k == 2
    # diversity_report passes method through to Chamfer
    labels = ["a"] * len(big)
    texts = ["t"] * len(big)
    rep = diversity_report(big, labels, texts, method="exact")
    assert calls.chamfer == 2
    assert rep["overall"]["chamfer_distance"] == pytest.approx(exact_cd, abs=1e-12)
    diversity_report(big, labels, texts)
    assert calls.chamfer == 4  # per class and overall


def test_use_ann_at_the_real_threshold() -> None:
    assert not M._use_ann("auto", M.ANN_THRESHOLD)
    assert M._use_ann("auto", M.ANN_THRESHOLD + 1)
    assert not M._use_ann("exact", 10 * M.ANN_THRESHOLD)
    assert M._use_ann("ann", 2)
    assert M.ANN_THRESHOLD == 20_000


def test_bad_method() -> None:
    with pytest.raises(ValueError):
        chamfer_distance(np.ones((3, 2)), method="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        top_k_similarity(np.ones((3, 2)), np.ones((3, 2)), k=1, method="approx")  # type: ignore[arg-type]


def test_without_faiss(big: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "_ann_available", lambda: False)
    monkeypatch.setattr(M, "ANN_THRESHOLD", 1000)
    with pytest.warns(RuntimeWarning, match="faiss"):
        value = chamfer_distance(big)
    assert value == chamfer_distance(big, method="exact")
    with pytest.raises(ImportError):
        chamfer_distance(big, method="ann")


def test_ann_is_approximate_with_few_probes(
    big: np.ndarray, big_other: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with one probed list some nearest neighbours are missed: Chamfer can only go up, top-k down
    monkeypatch.setattr(M, "_ANN_NPROBE_CHAMFER", 1)
    monkeypatch.setattr(M, "_ANN_NPROBE_TOPK", 2)
    exact_cd = chamfer_distance(big, method="exact")
    exact_tk = top_k_similarity(big, big_other, k=5, method="exact")
    assert chamfer_distance(big, method="ann") > exact_cd + 1e-6
    assert top_k_similarity(big, big_other, k=5, method="ann") < exact_tk - 1e-6
