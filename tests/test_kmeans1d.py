"""Tests of nquant.optimal1d: exact 1-D k-means against a brute-force DP, Lloyd-Max, restarts."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nquant.codebooks import optimal1d
from nquant.errors import InputError, SchemeError
from tests.reference import kmeans1d as kmeans1d_ref
from tests.test_asq import DISTS, make

cases = st.tuples(st.sampled_from(DISTS), st.integers(1, 80), st.integers(1, 9), st.integers(0, 2**32 - 1))


def close(a, b, x):
    x = np.asarray(x, dtype=np.float64)
    scale = x.size * (x.max() - x.min()) ** 2
    return bool(np.isclose(a, b, rtol=1e-9, atol=1e-12 * scale + 1e-300))


@given(cases)
def test_exact_kmeans_equals_bruteforce_dp(case):
    dist, d, k, seed = case
    x = make(dist, d, seed)
    best = kmeans1d_ref.kmeans_dp(x, k)
    for algorithm in ("smawk", "dc"):
        r = optimal1d.kmeans1d(x, k, algorithm=algorithm)
        assert close(r.sse, best, x), (algorithm, r.sse, best)
        assert r.centers.shape == (k,) and np.all(np.diff(r.centers) >= 0)
        assert close(kmeans1d_ref.sse_nearest(x, r.centers), r.sse, x)


@given(cases)
def test_weighted_exact_kmeans_equals_bruteforce_dp(case):
    dist, d, k, seed = case
    x = make(dist, d, seed)
    w = np.random.default_rng(seed + 7).uniform(0.0, 3.0, size=d)
    w[-1] = 0.5
    r = optimal1d.kmeans1d(x, k, weights=w)
    assert close(r.sse, kmeans1d_ref.kmeans_dp(x, k, w), x)
    assert close(kmeans1d_ref.sse_nearest(x, r.centers, w), r.sse, x)


@given(st.sampled_from(DISTS), st.integers(1, 60), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_restarts_and_lloyd_never_beat_the_exact_optimum(dist, d, k, seed):
    x = make(dist, d, seed)
    exact = optimal1d.kmeans1d(x, k)
    base = optimal1d.kmeans1d_restarts(x, k, n_init=3, seed=seed)
    assert base.sse >= exact.sse * (1 - 1e-9) - 1e-12
    # the exact centres are a fixed point of Lloyd-Max (cluster means of a Voronoi partition)
    refined = optimal1d.lloyd_max(x, exact.centers)
    assert close(refined.sse, exact.sse, x)
    # Lloyd-Max never increases the error of its starting point
    start = np.sort(np.random.default_rng(seed).choice(x, size=k))
    lm = optimal1d.lloyd_max(x, start)
    assert lm.sse <= kmeans1d_ref.sse_nearest(x, start) * (1 + 1e-12) + 1e-12
    assert close(lm.sse, kmeans1d_ref.sse_nearest(x, lm.centers), x)


def test_exact_beats_restarts_on_a_multimodal_example():
    # a well-known trap for Lloyd: many small, well separated clusters
    rng = np.random.default_rng(3)
    x = np.concatenate([c + 0.01 * rng.normal(size=50) for c in (0, 1, 2, 3, 10, 11, 30, 31)])
    exact = optimal1d.kmeans1d(x, 8)
    base = optimal1d.kmeans1d_restarts(x, 8, n_init=2, seed=0)
    assert exact.sse < 0.01 * base.sse
    assert np.allclose(exact.centers, [0, 1, 2, 3, 10, 11, 30, 31], atol=0.01)


def test_golden_values():
    r = optimal1d.kmeans1d([11.0, 0.0, 10.0, 1.0], 2)
    assert r.centers.tolist() == [0.5, 10.5] and r.sse == 1.0
    r = optimal1d.kmeans1d([0.0, 1.0, 10.0], 2, weights=[1.0, 3.0, 1.0])
    # {0, 1} with weights 1, 3: mean 0.75, SSE 1 * 0.75^2 + 3 * 0.25^2 = 0.75
    assert r.centers.tolist() == [0.75, 10.0] and r.sse == 0.75
    assert optimal1d.kmeans1d([5.0, 5.0], 3) == (pytest.approx([5.0, 5.0, 5.0]), 0.0)
    r = optimal1d.kmeans1d([2.0, 1.0, 2.0], 4)
    assert r.centers.tolist() == [1.0, 2.0, 2.0, 2.0] and r.sse == 0.0


def test_sorted_input_and_large_vector():
    x = np.random.default_rng(0).lognormal(size=200000)
    a = optimal1d.kmeans1d(x, 16)
    b = optimal1d.kmeans1d(np.sort(x), 16)
    c = optimal1d.kmeans1d(x, 16, algorithm="dc")
    assert np.array_equal(a.centers, b.centers)
    assert np.isclose(a.sse, c.sse, rtol=1e-9)


def test_errors():
    with pytest.raises(SchemeError, match="k=0"):
        optimal1d.kmeans1d([1.0, 2.0], 0)
    with pytest.raises(SchemeError, match=r"k=2\.0"):
        optimal1d.kmeans1d([1.0, 2.0], 2.0)
    with pytest.raises(SchemeError, match="n_init=0"):
        optimal1d.kmeans1d_restarts([1.0, 2.0], 1, n_init=0)
    with pytest.raises(SchemeError, match="algorithm='x'"):
        optimal1d.kmeans1d([1.0, 2.0], 1, algorithm="x")
    with pytest.raises(InputError, match="x contains a non-finite value nan at flat index 1"):
        optimal1d.kmeans1d([1.0, np.nan], 2)
    with pytest.raises(InputError, match=r"weights\[0\]=-2\.0 is negative"):
        optimal1d.kmeans1d([1.0, 2.0], 2, weights=[-2.0, 1.0])
    with pytest.raises(InputError, match="centers contains a non-finite value inf"):
        optimal1d.lloyd_max([1.0, 2.0], [np.inf])
    with pytest.raises(SchemeError, match=r"kmeans1d with k=64 on 100001 distinct values needs about"):
        optimal1d.kmeans1d(np.arange(100000.0), 64, max_memory=10**6)


@given(cases, st.integers(2, 7))
def test_parallel_row_blocks_give_the_serial_optimum(case, nparts):
    from nquant.kernels import asq_dp, kmeans1d, smawk

    dist, d, k, seed = case
    x = np.sort(make(dist, d, seed))
    vals, wts = asq_dp.dedup_sorted(x, np.empty(0))
    tab, centre = kmeans1d.kmeans_table(vals, wts)
    bounds, value = kmeans1d.kmeans_dp(tab, k, smawk.SMAWK, nparts)
    centers = np.sort(kmeans1d.centers_from_bounds(tab, centre, bounds, vals))
    assert close(kmeans1d_ref.sse_nearest(x, centers), kmeans1d_ref.kmeans_dp(x, k), x)
