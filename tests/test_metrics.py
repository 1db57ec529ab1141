"""Error statistics of a chunk (``nquant.metrics.error_stats``) against a NumPy reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nquant.kernels.stats import error_moments
from nquant.metrics import error_stats, merge_error_stats, metrics_from_stats
from tests.reference import stats as stats_ref


def assert_close(got, want, e, x):
    assert got[0] == want[0]
    assert (np.isnan(got[4]) and np.isnan(want[4])) or got[4] == want[4]
    with np.errstate(invalid="ignore", over="ignore"):
        scales = [np.sum(e * e), np.sum(x * x), np.sum(np.abs(e))]
    for k, scale in zip((1, 2, 3), scales):
        if np.isfinite(want[k]) and np.isfinite(scale):
            assert abs(got[k] - want[k]) <= 1e-12 * scale
        else:
            assert (np.isnan(got[k]) and np.isnan(want[k])) or got[k] == want[k]


@st.composite
def pairs(draw):
    n = draw(st.integers(0, 41))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mag = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e6, 1e30]))
    x = (rng.standard_normal(n) * mag).astype(dtype)
    y = (x + rng.standard_normal(n) * mag * 0.01).astype(dtype)
    for arr in (x, y):
        for special in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3)):
            if n:
                arr[rng.integers(n)] = special
    if n and draw(st.booleans()):  # NaN at the same place in both: skipped
        i = rng.integers(n)
        x[i] = y[i] = np.nan
    return x, y


@settings(max_examples=150, deadline=None)
@given(pairs(), st.integers(1, 9))
def test_stats_error_moments_match_reference(xy, n_tasks):
    x, y = xy
    want, e, xs = stats_ref.error_moments(x, y)
    assert_close(error_moments(x, y, n_tasks), want, e, xs)


def test_error_stats_of_chunks_merge_to_the_whole():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 33)).astype(np.float32)
    y = x + np.float32(0.01) * rng.standard_normal(x.shape).astype(np.float32)
    parts = [error_stats(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    merged = parts[0]
    for p in parts[1:]:
        merged = merge_error_stats(merged, p)
    want, e, xs = stats_ref.error_moments(x, y)
    assert_close(merged, want, e, xs)
    m = metrics_from_stats(merged)
    assert m["mse"] == pytest.approx(np.mean((y.astype(np.float64) - x) ** 2), rel=1e-12)
    assert m["max_abs"] == np.abs(y.astype(np.float64) - x).max()


def test_error_stats_views_and_nan():
    x = np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2]  # non-contiguous
    y = x + 0.5
    y[1, 1] = np.nan
    want, e, xs = stats_ref.error_moments(x, y)
    got = error_stats(x, y)
    assert got[0] == 12 and np.isnan(got[4])
    assert_close(got, want, e, xs)
