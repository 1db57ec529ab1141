"""Sorted-codebook kernels (``nquant.kernels.codebook1d``) against ``tests/reference/codebook1d.py``."""

import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nquant.codebooks.grids import fp8_e4m3, normal_float, power_of_two, uniform_grid
from nquant.kernels import codebook1d as cb
from nquant.kernels.rng import stream_key
from nquant.kernels.rounding import CEIL, FLOOR, NEAREST, NEAREST_AWAY, STOCHASTIC
from tests.helpers import readonly
from tests.reference import codebook1d as codebook1d_ref

NF4 = normal_float(4)


# ---------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------
@st.composite
def codebooks(draw):
    kind = draw(st.sampled_from(["nf", "fp8", "pow2", "uniform", "random", "dense", "tiny", "one"]))
    if kind == "nf":
        return normal_float(draw(st.integers(2, 8)))
    if kind == "fp8":
        return fp8_e4m3()
    if kind == "pow2":
        return power_of_two(draw(st.integers(2, 8)))
    if kind == "uniform":
        return uniform_grid(-3.0, 5.0, draw(st.integers(2, 256)))
    if kind == "dense":  # more than 2 thresholds per 2**-7 relative bucket: binary-search path
        return (1.0 + np.arange(draw(st.integers(8, 256))) * 2.0**-12).astype(np.float32)
    if kind == "one":
        return np.array([draw(st.floats(-2, 2, width=32))], np.float32)
    k = draw(st.integers(2, 256))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = 1e-20 if kind == "tiny" else 1.0
    lv = np.unique((rng.standard_normal(k) * scale).astype(np.float32))
    return lv


def adversarial_values(levels, n, seed, dtype):
    """Random values mixed with levels, exact midpoints (and neighbours), extremes, NaN/inf."""
    rng = np.random.default_rng(seed)
    lv = levels.astype(np.float64)
    lo, hi = lv[0], lv[-1]
    span = max(hi - lo, 1e-30)
    parts = [rng.uniform(lo - 0.2 * span, hi + 0.2 * span, n)]
    parts.append(rng.choice(lv, n))
    if lv.size > 1:
        mids = ((lv[:-1] + lv[1:]) / 2).astype(dtype)  # exact for float64 data
        parts += [rng.choice(mids, n), np.nextafter(rng.choice(mids, n).astype(dtype), np.inf),
                  np.nextafter(rng.choice(mids, n).astype(dtype), -np.inf)]
    parts.append(rng.standard_normal(n) * 10.0 ** rng.integers(-40, 38, n))
    parts.append(np.array([0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38, np.inf, -np.inf, np.nan]))
    x = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
    with np.errstate(over="ignore"):
        x = x.astype(dtype)
    return x[rng.permutation(x.size)]


def layouts(x, n_rows_options=(1, 2, 3, 5)):
    """The same flat data as several (R, L) row layouts with their row_index."""
    out = []
    for r in n_rows_options:
        if x.size % r == 0:
            x2 = np.ascontiguousarray(x.reshape(r, -1))
            out.append((x2, np.arange(r, dtype=np.int64) * x2.shape[1]))
    return out


def run_sorted(x2d, row_index, levels, mode, seed=0):
    out = np.empty(x2d.shape, np.uint8)
    bad = cb.quantize_sorted(x2d, row_index, levels, mode, np.uint64(stream_key(seed)), out)
    return out, bad


# ---------------------------------------------------------------------------------------
# quantize_sorted
# ---------------------------------------------------------------------------------------
@given(levels=codebooks(), seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]))
def test_nearest_floor_ceil_match_references(levels, seed, dtype):
    x = adversarial_values(levels, 40, seed, dtype)
    x = x[: x.size - x.size % 3]
    finite = np.isfinite(x)
    for x2, ri in layouts(x, (1, 3)):
        xr, rir, lvr = readonly(x2), readonly(ri), readonly(levels)
        for mode, expect in [
            (NEAREST, codebook1d_ref.nearest(x, levels, "lower")),
            (NEAREST_AWAY, codebook1d_ref.nearest(x, levels, "away")),
            (FLOOR, codebook1d_ref.floor_codes(x, levels)),
            (CEIL, codebook1d_ref.ceil_codes(x, levels)),
        ]:
            got, bad = run_sorted(xr, rir, lvr, mode)
            assert bad == np.count_nonzero(~finite)
            np.testing.assert_array_equal(got.reshape(-1)[finite], expect[finite], err_msg=f"mode {mode}")
            if mode != NEAREST_AWAY:  # infinities go to the end levels
                inf = np.isinf(x)
                np.testing.assert_array_equal(got.reshape(-1)[inf], np.where(x[inf] > 0, levels.size - 1, 0))


def test_ties_go_to_the_lower_level_and_levels_map_to_themselves():
    lv = np.array([-1.0, 0.0, 0.5, 2.0], np.float32)
    x = np.array([[-0.5, 0.25, 1.25, -1.0, 0.0, 0.5, 2.0, 7.0, -7.0]], np.float32)
    got, _ = run_sorted(x, np.zeros(1, np.int64), lv, NEAREST)
    np.testing.assert_array_equal(got[0], [0, 1, 2, 0, 1, 2, 3, 3, 0])
    got, _ = run_sorted(x, np.zeros(1, np.int64), lv, NEAREST_AWAY)
    np.testing.assert_array_equal(got[0], [0, 2, 3, 0, 1, 2, 3, 3, 0])


def test_float32_midpoint_that_rounds_up_is_still_exact():
    # levels whose exact midpoint is not a float32: a value just above it must go up
    a = np.float32(1.0)
    b = np.nextafter(np.nextafter(a, np.float32(2)), np.float32(2))  # 1 + 2 ulp: midpoint 1 + 1 ulp
    c = np.nextafter(a, np.float32(2))  # 1 + 1 ulp, exactly the midpoint: a tie -> lower
    lv = np.array([a, b], np.float32)
    got, _ = run_sorted(np.array([[c]], np.float32), np.zeros(1, np.int64), lv, NEAREST)
    assert got[0, 0] == 0
    lv2 = np.array([1.0, 1.0 + 2.0**-23 * 3], np.float32)  # midpoint 1 + 1.5 ulp: not a float32
    x = np.array([[1.0 + 2.0**-22]], np.float32)  # 1 + 2 ulp > midpoint -> upper level
    got, _ = run_sorted(x, np.zeros(1, np.int64), lv2, NEAREST)
    assert got[0, 0] == 1


@given(levels=codebooks(), seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]),
       rng_seed=st.integers(-(2**63), 2**63 - 1))
def test_stochastic_matches_reference_stream(levels, seed, dtype, rng_seed):
    x = adversarial_values(levels, 5, seed, dtype)
    x = x[np.isfinite(x)][:36]
    x2 = x.reshape(6, 6) if x.size == 36 else x.reshape(1, -1)
    ri = np.arange(x2.shape[0], dtype=np.int64) * x2.shape[1] + 1000  # a chunk inside a bigger array
    got, _ = run_sorted(readonly(x2), readonly(ri), readonly(levels), STOCHASTIC, seed=rng_seed)
    np.testing.assert_array_equal(got, codebook1d_ref.stochastic(x2, ri, levels, rng_seed))


@given(levels=codebooks(), seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]))
def test_codes_do_not_depend_on_the_row_layout(levels, seed, dtype):
    x = adversarial_values(levels, 60, seed, dtype)
    x = x[: x.size - x.size % 30]
    for mode in (NEAREST, FLOOR, CEIL, STOCHASTIC):
        results = [run_sorted(x2, ri, levels, mode, seed=seed)[0].reshape(-1) for x2, ri in layouts(x)]
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])


def test_long_rows_split_into_tasks_give_the_same_codes():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(3 * cb.CHUNK + 17).astype(np.float32)
    lv = normal_float(4)
    flat, _ = run_sorted(x[None, :], np.zeros(1, np.int64), lv, STOCHASTIC, seed=9)
    n0 = cb.CHUNK + 5
    a, _ = run_sorted(x[None, :n0], np.zeros(1, np.int64), lv, STOCHASTIC, seed=9)
    b, _ = run_sorted(x[None, n0:], np.array([n0], np.int64), lv, STOCHASTIC, seed=9)
    np.testing.assert_array_equal(flat[0], np.concatenate([a[0], b[0]]))
    near, _ = run_sorted(x[None, :], np.zeros(1, np.int64), lv, NEAREST)
    np.testing.assert_array_equal(near[0], codebook1d_ref.nearest(x, lv))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stochastic_rounding_is_unbiased(dtype):
    # 10**6 draws of one value between two NF4 levels: the mean of the decoded values must be
    # within 5 standard errors of the value (the per-draw std is (b - a) sqrt(p (1 - p))).
    n = 10**6
    lv = normal_float(4)
    a, b = float(lv[9]), float(lv[10])
    for v in (a + 0.3 * (b - a), a + 0.01 * (b - a)):
        x = np.full((1, n), v, dtype)
        codes, _ = run_sorted(x, np.zeros(1, np.int64), lv, STOCHASTIC, seed=12345)
        assert set(np.unique(codes)) <= {9, 10}
        dec = lv.astype(np.float64)[codes]
        p = (float(dtype(v)) - a) / (b - a)
        se = (b - a) * np.sqrt(p * (1 - p) / n)
        assert abs(dec.mean() - float(dtype(v))) < 5 * se + 1e-7 * (b - a)


def test_dequantize_table():
    lv = fp8_e4m3()
    rng = np.random.default_rng(0)
    codes = rng.integers(0, lv.size, (4, 1000)).astype(np.uint8)
    for dt in (np.float32, np.float64):
        out = np.empty(codes.shape, dt)
        cb.dequantize_table(readonly(codes), readonly(lv), out)
        np.testing.assert_array_equal(out, lv[codes].astype(dt))


def test_codebook1d_uses_only_the_jit_wrappers():
    src = pathlib.Path(cb.__file__).read_text()
    assert "numba.njit" not in src and "@njit" not in src
