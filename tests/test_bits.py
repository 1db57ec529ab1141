"""Kernels that reduce over IEEE bit patterns: row min/max and the encoder's finiteness test.

Inputs are drawn as raw bit patterns (every float32/float64 value is reachable:
signed zeros, subnormals, infinities, quiet and signalling NaN with either
sign), mixed with a few special values, against plain Python references.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nquant.kernels import affine, bits, stats
from nquant.kernels.rounding import NEAREST, STOCHASTIC
from tests.reference import bits as bits_ref
from tests.reference import stats as stats_ref

UINT = {np.float32: np.uint32, np.float64: np.uint64}
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0, 5e-324, -1e-45, 3.0e38]


@st.composite
def bit_rows(draw):
    """(R, L) float32/float64 array of arbitrary bit patterns, some replaced by special values."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = (draw(st.integers(1, 5)), draw(st.integers(0, 70)))
    raw = draw(hnp.arrays(UINT[dtype], shape))
    x = raw.view(dtype).copy()
    mask = draw(hnp.arrays(np.bool_, shape))
    picks = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, len(SPECIALS) - 1)))
    x[mask] = np.array(SPECIALS, dtype)[picks[mask]]
    sign = draw(st.sampled_from(["any", "negative", "non-negative"]))
    if sign != "any":  # one-signed rows take the other branch of the bit-pattern reduction
        x = np.copysign(x, -1.0 if sign == "negative" else 1.0).astype(dtype)
    return x


@settings(max_examples=150, deadline=None)
@given(bit_rows())
def test_stats_row_minmax_matches_reference_on_any_bit_pattern(x):
    lo, hi, n_nan = stats.row_minmax(x)
    want_lo, want_hi, want_nan = stats_ref.row_minmax(x)
    assert lo.dtype == hi.dtype == x.dtype
    np.testing.assert_array_equal(lo, want_lo)  # == : -0.0 and 0.0 are equal
    np.testing.assert_array_equal(hi, want_hi)
    np.testing.assert_array_equal(n_nan, want_nan)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stats_row_minmax_signed_zero_and_empty_rows(dtype):
    x = np.array([[-0.0, 0.0], [-0.0, -0.0], [-5.0, -0.0], [np.nan, np.nan]], dtype)
    lo, hi, n_nan = stats.row_minmax(x)
    assert lo.tolist() == [0.0, 0.0, -5.0, np.inf] and hi.tolist() == [0.0, 0.0, 0.0, -np.inf]
    assert np.signbit(lo[0]) and not np.signbit(hi[0])  # -0.0 sorts below +0.0
    assert n_nan.tolist() == [0, 0, 0, 2]
    lo, hi, n_nan = stats.row_minmax(np.empty((3, 0), dtype))
    assert lo.tolist() == [np.inf] * 3 and hi.tolist() == [-np.inf] * 3 and n_nan.tolist() == [0] * 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_views_and_constants(dtype):
    x = np.array([[1.5, -np.inf, np.nan]], dtype)
    mask, inf_bits = bits.bit_constants(x)
    b = bits.int_view(x)
    assert b.dtype.itemsize == x.dtype.itemsize and b.dtype.kind == "i"
    assert ((b & mask) >= inf_bits).tolist() == [[False, True, True]]
    assert bits.uint_view(x).dtype.kind == "u"
    np.testing.assert_array_equal(bits.float_view(b), x)


@settings(max_examples=80, deadline=None)
@given(bit_rows(), st.sampled_from([NEAREST, STOCHASTIC]), st.booleans(), st.booleans())
def test_affine_encoder_counts_and_marks_exactly_the_non_finite_values(x, mode, nan_code_on, per_column):
    R, L = x.shape
    G = L if per_column else 1
    dt = x.dtype.type
    inv = np.full(G, 2.0 ** -120, x.dtype)  # keeps every finite value inside the 8-bit range
    offset = np.zeros(G, x.dtype)
    c0 = np.full(G, 128, x.dtype)
    nan_code = 255 if nan_code_on else -1
    out = np.zeros((R, L), np.uint8)
    zeros = np.zeros(R, np.int64)
    bad = affine.quantize_affine(x, np.arange(R, dtype=np.int64) * L, zeros, int(per_column), inv,
                                 offset, c0, 254.0, nan_code, mode, np.uint64(7), out)
    nonfinite = ~np.isfinite(x)
    nan = np.isnan(x)
    assert bad == nonfinite.sum() - (nan.sum() if nan_code_on else 0)
    if nan_code_on:
        assert (out[nan] == 255).all() and (out[~nan] <= 254).all()
    finite = np.isfinite(x) & (np.abs(x) < dt(2.0 ** 120))
    if mode == NEAREST:
        want = np.clip(np.rint(x[finite] * dt(2.0 ** -120)) + 128, 0, 254)
        np.testing.assert_array_equal(out[finite], want.astype(np.uint8))


@settings(max_examples=150, deadline=None)
@given(bit_rows(), st.integers(1, 6))
def test_stats_column_minmax_matches_reference_on_any_bit_pattern(x, n_tasks):
    lo, hi, n_nan = stats.column_minmax(x, n_tasks)
    want_lo, want_hi, want_nan = stats_ref.row_minmax(x.T.copy())
    assert lo.dtype == hi.dtype == x.dtype
    np.testing.assert_array_equal(lo, want_lo)
    np.testing.assert_array_equal(hi, want_hi)
    np.testing.assert_array_equal(n_nan, want_nan)
    assert (np.signbit(lo) == np.signbit(stats.row_minmax(x.T.copy())[0])).all()  # -0.0 below +0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stats_column_minmax_without_rows(dtype):
    lo, hi, n_nan = stats.column_minmax(np.empty((0, 3), dtype), 4)
    assert lo.tolist() == [np.inf] * 3 and hi.tolist() == [-np.inf] * 3 and n_nan.tolist() == [0] * 3


@settings(max_examples=40, deadline=None)
@given(bit_rows())
def test_bits_views_and_constants_match_reference(x):
    for fn in ("int_view", "uint_view"):
        got, want = getattr(bits, fn)(x), getattr(bits_ref, fn)(x)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    b = bits.int_view(x)
    assert bits.float_view(b).tobytes() == bits_ref.float_view(b).tobytes() == x.tobytes()
    mask, inf_bits = bits.bit_constants(x)
    want_mask, want_inf = bits_ref.bit_constants(x)
    assert (mask, inf_bits) == (want_mask, want_inf) and mask.dtype == want_mask.dtype
    assert ((b & mask) >= inf_bits).tolist() == (~np.isfinite(x)).tolist()
