"""Tests of nquant.asq (ZipML, exact / accelerated / approximate QUIVER) against slow references."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nquant.codebooks import asq
from nquant.errors import InputError, SchemeError
from tests.reference import asq_dp as asq_dp_ref

DISTS = ("normal", "lognormal", "uniform", "offset", "heavy", "lowcard", "dups")


def make(dist, d, seed):
    rng = np.random.default_rng(seed)
    if dist == "normal":
        return rng.normal(size=d)
    if dist == "lognormal":
        return rng.lognormal(0.0, 1.0, size=d)
    if dist == "uniform":
        return rng.uniform(-3.0, 5.0, size=d)
    if dist == "offset":
        return 1e4 + rng.normal(size=d)
    if dist == "heavy":
        return rng.standard_t(1.5, size=d)
    if dist == "lowcard":
        return rng.integers(-3, 4, size=d).astype(np.float64)
    return np.round(rng.normal(size=d), 1)  # many duplicates


def close(a, b, x, rtol=1e-9):
    """Relative 1e-9 with an absolute floor at the rounding level of the problem's scale."""
    x = np.asarray(x, dtype=np.float64)
    scale = x.size * (x.max() - x.min()) ** 2
    return bool(np.isclose(a, b, rtol=rtol, atol=1e-12 * scale + 1e-300))


cases = st.tuples(st.sampled_from(DISTS), st.integers(2, 120), st.integers(2, 12), st.integers(0, 2**32 - 1))


# ---------------------------------------------------------------------------------------------
# exact solvers
# ---------------------------------------------------------------------------------------------


@given(cases)
def test_asq_dp_exact_solvers_equal_zipml_and_reference(case):
    dist, d, s, seed = case
    x = make(dist, d, seed)
    ref_opt = asq_dp_ref.asq_dp(x, s)
    z = asq.solve(x, s, method="zipml")
    assert close(z.objective, ref_opt, x)
    for method in ("quiver", "quiver_accel"):
        for algorithm in ("smawk", "dc"):
            r = asq.solve(x, s, method=method, algorithm=algorithm)
            assert close(r.objective, z.objective, x), (method, algorithm, r.objective, z.objective)


@given(cases, st.booleans())
def test_asq_dp_weighted_exact_equals_reference(case, integer_weights):
    dist, d, s, seed = case
    x = make(dist, d, seed)
    rng = np.random.default_rng(seed + 1)
    w = rng.integers(0, 4, size=d).astype(np.float64) if integer_weights else rng.uniform(0, 2, size=d)
    w[0] = 1.0  # not all zero
    ref_opt = asq_dp_ref.asq_dp(x, s, w)
    for method in ("zipml", "quiver", "quiver_accel"):
        r = asq.solve(x, s, method=method, weights=w)
        assert close(r.objective, ref_opt, x), (method, r.objective, ref_opt)


@given(st.sampled_from(DISTS), st.integers(2, 60), st.integers(2, 10), st.integers(0, 2**32 - 1))
def test_integer_weights_equal_repetition(dist, d, s, seed):
    x = make(dist, d, seed)
    counts = np.random.default_rng(seed).integers(1, 5, size=d)
    expanded = np.repeat(x, counts)
    for method in ("quiver", "quiver_accel"):
        a = asq.solve(x, s, method=method, weights=counts)
        b = asq.solve(expanded, s, method=method)
        assert close(a.objective, b.objective, x)


@given(st.sampled_from(DISTS), st.integers(2, 8), st.integers(2, 5), st.integers(0, 2**32 - 1))
def test_tiny_cases_equal_exhaustive_enumeration(dist, d, s, seed):
    x = make(dist, d, seed)
    best = asq_dp_ref.asq_exhaustive(x, s)
    for method in ("zipml", "quiver", "quiver_accel"):
        assert close(asq.solve(x, s, method=method).objective, best, x)


@given(cases)
def test_levels_are_a_valid_level_set(case):
    dist, d, s, seed = case
    x = make(dist, d, seed)
    for method in asq.METHODS:
        r = asq.solve(x, s, method=method, m=16 if method == "quiver_approx" else None)
        assert r.levels.shape == (s,) and r.levels.dtype == np.float64
        assert np.all(np.diff(r.levels) >= 0)
        assert r.levels[0] == x.min() and r.levels[-1] == x.max()
        if method != "quiver_approx":
            assert np.all(np.isin(r.levels, x))
        # the reported objective is the objective of the reported levels
        assert close(r.objective, asq_dp_ref.variance_sum(x, r.levels), x)
        norm2 = float(np.dot(x, x))
        assert np.isclose(r.vnmse, r.objective / norm2, rtol=1e-12, atol=0)


def test_unsorted_and_multidimensional_input_give_the_same_result():
    rng = np.random.default_rng(5)
    x = rng.lognormal(size=300)
    xs = np.sort(x)
    x_copy = x.copy()
    a = asq.solve(x, 6)
    b = asq.solve(xs, 6)
    c = asq.solve(x.reshape(20, 15), 6)
    assert np.array_equal(x, x_copy)  # the input is not sorted in place
    assert np.array_equal(a.levels, b.levels) and np.array_equal(a.levels, c.levels)
    assert a.objective == b.objective


def test_offset_data_gives_the_optimum_of_the_centred_problem():
    rng = np.random.default_rng(0)
    c = 1e7
    x = c + rng.normal(size=2000)
    centred = x - c  # exact: both are multiples of ulp(1e7) and close
    opt = asq.solve(centred, 8, method="zipml").objective
    for method in ("quiver", "quiver_accel", "zipml"):
        r = asq.solve(x, 8, method=method)
        assert np.isclose(r.objective, opt, rtol=1e-9), (method, r.objective, opt)
        assert np.allclose(r.levels - c, asq.solve(centred, 8, method=method).levels, rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# edge cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", asq.METHODS)
def test_constant_vector(method):
    r = asq.solve(np.full(17, 3.5), 5, method=method)
    assert r.levels.tolist() == [3.5] * 5 and r.objective == 0.0 and r.vnmse == 0.0


@pytest.mark.parametrize("method", asq.METHODS)
def test_single_value(method):
    r = asq.solve([-2.0], 3, method=method)
    assert r.levels.tolist() == [-2.0] * 3 and r.objective == 0.0


@pytest.mark.parametrize("method", ["zipml", "quiver", "quiver_accel"])
@pytest.mark.parametrize(
    "x, s",
    [
        ([1.0, 4.0, 2.0], 5),  # d < s
        ([0.0, 1.0] * 50, 8),  # two points, s = 8
        (list(np.arange(20.0)) * 3, 32),  # 20 integers, s = 32
        ([7.0, 7.0, 1.0, 1.0, 1.0], 2),  # two distinct values, s = 2
    ],
)
def test_fewer_distinct_values_than_levels(method, x, s):
    r = asq.solve(x, s, method=method)
    u = np.unique(x)
    assert r.objective == 0.0 and r.levels.shape == (s,)
    assert np.array_equal(np.unique(r.levels), u)
    assert r.levels[0] == u[0] and r.levels[-1] == u[-1] and np.all(np.diff(r.levels) >= 0)


@pytest.mark.parametrize("method", ["zipml", "quiver", "quiver_accel"])
def test_two_levels_are_min_and_max(method):
    x = np.array([0.0, 1.0, 3.0, 4.0])
    r = asq.solve(x, 2, method=method)
    # golden by hand: (4 - 1)(1 - 0) + (4 - 3)(3 - 0) = 6
    assert r.levels.tolist() == [0.0, 4.0] and r.objective == 6.0


def test_golden_three_levels():
    # levels {0, 1, 10}: x=2 costs (10-2)(2-1) = 8;  {0, 2, 10}: x=1 costs (2-1)(1-0) = 1
    r = asq.solve([10.0, 2.0, 0.0, 1.0], 3)
    assert r.levels.tolist() == [0.0, 2.0, 10.0] and r.objective == 1.0
    assert r.vnmse == 1.0 / 105.0
    assert asq.objective([0.0, 1.0, 2.0, 10.0], [0.0, 2.0, 10.0], weights=[1, 2, 1, 1]) == 2.0
    assert asq.vnmse([0.0, 1.0, 2.0, 10.0], [10.0, 0.0, 2.0]) == 1.0 / 105.0


# ---------------------------------------------------------------------------------------------
# approximate QUIVER
# ---------------------------------------------------------------------------------------------


SEEDS = st.integers(0, 2**32 - 1)
approx_cases = (st.sampled_from(DISTS), st.integers(2, 150), st.integers(2, 8), st.integers(1, 40), SEEDS)


@given(*approx_cases)
def test_approx_equals_bruteforce_dp_over_its_grid(dist, d, s, m, seed):
    x = make(dist, d, seed)
    for grid in asq.GRIDS:
        r = asq.solve(x, s, method="quiver_approx", m=m, grid=grid)
        edges = asq.approx_edges(x.min(), x.max(), m, grid, sample=x)
        assert np.all(np.isin(r.levels, edges))
        assert close(r.objective, asq_dp_ref.grid_dp(x, s, edges), x)
        assert close(r.objective, asq_dp_ref.variance_sum(x, r.levels), x)


@given(*approx_cases)
def test_approx_meets_lemma_6_1(dist, d, s, m, seed):
    x = make(dist, d, seed)
    w = np.random.default_rng(seed).uniform(0.1, 2.0, size=d)
    for weights, total in ((None, d), (w, w.sum())):
        opt = asq.solve(x, s, weights=weights).objective
        apx = asq.solve(x, 2 * s - 2, method="quiver_approx", m=m, weights=weights).objective
        bound = total * (x.max() - x.min()) ** 2 / (4.0 * m * m)
        assert apx <= opt + bound + 1e-9 * (opt + bound)


def test_approx_keeps_empty_cells():
    # all mass at the ends: every interior cell is empty, yet an interior grid point is the best
    # third level for a value just inside the range (reading "m intervals, m + 1 points")
    x = np.array([0.0, 0.0, 0.26, 4.0, 4.0])
    r = asq.solve(x, 3, method="quiver_approx", m=4)
    assert r.levels.tolist() == [0.0, 1.0, 4.0]
    assert np.isclose(r.objective, (1.0 - 0.26) * 0.26)


@given(st.integers(50, 3000), st.integers(2, 6), st.integers(0, 2**32 - 1), st.booleans())
def test_approx_stats_are_chunk_invariant(d, nchunks, seed, weighted):
    """Merged per-chunk statistics give the one-pass levels.

    Tolerance: the merged histogram equals the one-pass histogram up to float64 summation order
    (rtol 1e-12 on the DP objective); the levels are then identical (no exact ties in continuous
    random data)."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0.0, 1.0, size=d).astype(np.float64)
    w = rng.uniform(0.0, 3.0, size=d) if weighted else None
    s, m = 8, 200
    lo, hi = x.min(), x.max()
    one = asq.solve(x, s, method="quiver_approx", m=m, weights=w)
    cuts = np.sort(rng.choice(np.arange(1, d), size=nchunks - 1, replace=False))
    parts = [
        asq.approx_partial(c, lo, hi, m, weights=None if w is None else cw)
        for c, cw in zip(np.split(x, cuts), np.split(w, cuts) if w is not None else [None] * nchunks)
    ]
    ranges = [asq.approx_range(c) for c in np.split(x, cuts)]
    assert (min(r[0] for r in ranges), max(r[1] for r in ranges)) == (lo, hi)
    order = rng.permutation(nchunks)
    merged = parts[order[0]]
    for i in order[1:]:
        merged = asq.approx_merge(merged, parts[i])
    levels = asq.approx_finalize(merged, s)
    assert np.array_equal(levels, one.levels)
    assert np.isclose(asq.objective(x, levels, w), one.objective, rtol=1e-12)
    single = asq.approx_partial(x, lo, hi, m, weights=w)
    assert np.allclose(merged.hist, single.hist, rtol=1e-12, atol=1e-12 * np.abs(single.hist).max())


def test_adaptive_grid_beats_uniform_grid_on_heavy_tails():
    # measured ratios to the optimum (m = 100 / 400): LogNormal(0, 2) uniform 2.22 / 1.03,
    # adaptive 1.07 / 1.02; Pareto(1.5) + 1 uniform 36.8 / 5.70, adaptive 7.06 / 1.18
    rng = np.random.default_rng(1)
    for x, factor in ((rng.lognormal(0.0, 2.0, size=20000), 0.7), (rng.pareto(1.5, size=20000) + 1.0, 0.3)):
        opt = asq.solve(x, 16).objective
        uni = asq.solve(x, 16, method="quiver_approx", m=100).objective
        ada = asq.solve(x, 16, method="quiver_approx", m=100, grid="adaptive").objective
        assert opt <= ada < factor * uni
        ada400 = asq.solve(x, 16, method="quiver_approx", m=400, grid="adaptive").objective
        assert opt <= ada400 <= 1.25 * opt


@given(st.sampled_from(DISTS), st.integers(2, 150), st.integers(2, 8), st.integers(2, 40), SEEDS)
def test_adaptive_grid_keeps_the_guarantee_with_half_the_intervals(dist, d, s, m, seed):
    x = make(dist, d, seed)
    edges = asq.approx_edges(x.min(), x.max(), m, "adaptive", sample=x)
    assert edges.size <= m + 1 and np.all(np.diff(edges) > 0) and (edges[0], edges[-1]) == (x.min(), x.max())
    opt = asq.solve(x, s).objective
    apx = asq.solve(x, 2 * s - 2, method="quiver_approx", m=m, grid="adaptive").objective
    bound = d * (x.max() - x.min()) ** 2 / (4.0 * (m // 2) ** 2)
    assert apx <= opt + bound + 1e-9 * (opt + bound)


def test_approx_accepts_float32_without_changing_the_result_type():
    x = np.random.default_rng(2).normal(size=1000).astype(np.float32)
    r = asq.solve(x, 4, method="quiver_approx", m=50)
    r64 = asq.solve(x.astype(np.float64), 4, method="quiver_approx", m=50)
    assert r.levels.dtype == np.float64 and np.array_equal(r.levels, r64.levels)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s, text", [(1, "s=1"), (0, "s=0"), (2.5, "s=2.5"), (True, "s=True"), ("4", "s='4'")]
)
def test_bad_s(s, text):
    with pytest.raises(SchemeError, match=text):
        asq.solve([1.0, 2.0, 3.0], s)


def test_bad_parameters():
    x = [1.0, 2.0, 3.0]
    with pytest.raises(SchemeError, match="method='kmeans'"):
        asq.solve(x, 2, method="kmeans")
    with pytest.raises(SchemeError, match="m=0"):
        asq.solve(x, 2, method="quiver_approx", m=0)
    with pytest.raises(SchemeError, match="m=10"):
        asq.solve(x, 2, method="quiver", m=10)
    with pytest.raises(SchemeError, match="grid='log'"):
        asq.solve(x, 2, method="quiver_approx", grid="log")
    with pytest.raises(SchemeError, match="algorithm='fast'"):
        asq.solve(x, 2, algorithm="fast")
    with pytest.raises(SchemeError, match="s=1"):
        asq.approx_finalize(asq.approx_partial(x, 1.0, 3.0, 4), 1)


@pytest.mark.parametrize("method", asq.METHODS)
def test_non_finite_data(method):
    with pytest.raises(InputError, match=r"x contains a non-finite value nan at flat index 2"):
        asq.solve([1.0, 2.0, np.nan, 4.0], 3, method=method)
    with pytest.raises(InputError, match=r"x contains a non-finite value -?inf at flat index 0"):
        asq.solve([-np.inf, 2.0], 3, method=method)
    with pytest.raises(InputError, match=r"weights contains a non-finite value inf at flat index 1"):
        asq.solve([1.0, 2.0], 3, method=method, weights=[1.0, np.inf])
    with pytest.raises(InputError, match=r"weights\[1\]=-1\.0 is negative"):
        asq.solve([1.0, 2.0], 3, method=method, weights=[1.0, -1.0])
    with pytest.raises(InputError, match=r"weights has shape \(3,\)"):
        asq.solve([1.0, 2.0], 3, method=method, weights=[1.0, 1.0, 1.0])
    with pytest.raises(InputError, match="weights sum to 0"):
        asq.solve([1.0, 2.0], 3, method=method, weights=[0.0, 0.0])
    with pytest.raises(InputError, match="x is empty"):
        asq.solve([], 3, method=method)
    with pytest.raises(InputError, match="x has dtype complex128"):
        asq.solve(np.array([1j]), 3, method=method)


def test_memory_guard_fails_early_with_the_amount_needed():
    x = np.arange(100000, dtype=np.float64)
    need = asq.exact_memory(100000, 64, "quiver")
    with pytest.raises(SchemeError, match=r"s=64 on 100000 distinct values needs about 0\.0\d GiB") as info:
        asq.solve(x, 64, max_memory=10**6)
    assert "max_memory=0.00 GiB" in str(info.value)
    assert need > 4 * 61 * 100000  # the argmin table alone
    assert asq.solve(x[:1000], 64, max_memory=need).levels.shape == (64,)


def test_objective_and_merge_errors():
    with pytest.raises(InputError, match=r"levels span \[1\.0, 2\.0\] but x spans \[0\.0, 2\.0\]"):
        asq.objective([0.0, 2.0], [1.0, 2.0])
    with pytest.raises(InputError, match="levels contains a non-finite value nan"):
        asq.objective([0.0, 2.0], [0.0, np.nan, 2.0])
    a = asq.approx_partial([0.0, 1.0], 0.0, 1.0, 4)
    b = asq.approx_partial([0.0, 1.0], 0.0, 1.0, 5)
    with pytest.raises(SchemeError, match=r"m=4 on \[0\.0, 1\.0\] vs m=5"):
        asq.approx_merge(a, b)
    with pytest.raises(InputError, match=r"chunk spans \[0\.0, 3\.0\], outside the grid range"):
        asq.approx_partial([0.0, 3.0], 0.0, 1.0, 4)
    with pytest.raises(InputError, match="chunk contains a non-finite value nan"):
        asq.approx_partial([0.0, np.nan], 0.0, 1.0, 4)


@given(cases, st.integers(2, 7))
def test_asq_dp_parallel_row_blocks_give_the_serial_optimum(case, nparts):
    """The API splits SMAWK layers into row blocks only above 2^16 values; check the split
    kernel directly on small inputs (any number of blocks, including more blocks than rows)."""
    from nquant.kernels import asq_dp as k

    dist, d, s, seed = case
    x = np.sort(make(dist, d, seed))
    vals, wts = k.dedup_sorted(x, np.empty(0))
    if vals.size < 2:
        return
    tab, _ = k.build_table(vals, wts)
    _, serial = k.quiver_exact(tab, s, k.SMAWK, 1)
    idx, split = k.quiver_exact(tab, s, k.SMAWK, nparts)
    assert close(split, serial, x)
    assert close(asq_dp_ref.variance_sum(x, vals[idx]), asq_dp_ref.asq_dp(x, s), x)
    cmap = k.count_map(wts, x.size)
    idx, accel = k.quiver_accel_map(tab, cmap, s, k.SMAWK, nparts)
    assert close(asq_dp_ref.variance_sum(x, vals[idx]), asq_dp_ref.asq_dp(x, s), x)
