"""``Significant`` (keep ``keepbits`` mantissa bits) against a NumPy reference that rounds
float64 bit patterns, against numcodecs' ``BitRound``, and its pointwise relative bound."""

import math

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nquant as nq
from nquant.errors import InputError, SchemeError, StoreError
from nquant.families import significant
from nquant.interfaces.presets import resolve_scheme
from nquant.kernels import significant as ks
from tests.reference import significant as ref

F32_MAX = float(np.finfo(np.float32).max)
TINY = 2.0 ** -149
# ties at 1 to 6 kept bits (1 + odd / 2**(k + 1)), binade edges, subnormals, the largest values
SPECIALS = [0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, F32_MAX, -F32_MAX, TINY, -TINY, 3 * TINY,
            2.0 ** -126, 2.0 ** -126 - TINY, 1.0, 1.25, 1.75, 1.125, 1.375, 1.0625, 1.1875, 1.03125,
            1.015625, 1.0078125, 1.9999999, 3.0e38, 65504.0, 65519.0, 6.1e-5, 5.96e-8]


def run(x, keepbits):
    """Codes and float values of ``x`` by the family (NumPy path)."""
    q = nq.quantize(x, nq.Significant(keepbits=keepbits))
    return np.asarray(q.codes_unpacked).reshape(-1), nq.dequantize(q)


def assert_bound(x, y, keepbits):
    """``|x - y| <= 2**-(keepbits + 1) * |x|`` for finite x, NaN and infinities carried."""
    x64, y64 = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    fin = np.isfinite(x64)
    assert np.isfinite(y64[fin]).all()
    assert (np.abs(x64[fin] - y64[fin]) <= math.ldexp(1.0, -(keepbits + 1)) * np.abs(x64[fin])).all()
    np.testing.assert_array_equal(np.isnan(y64), np.isnan(x64))
    inf = np.isinf(x64)
    np.testing.assert_array_equal(y64[inf], x64[inf])
    np.testing.assert_array_equal(np.signbit(y64[~np.isnan(x64)]), np.signbit(x64[~np.isnan(x64)]))


def values(dtype):
    width = {np.float16: 16, np.float32: 32}[dtype]
    fmax = float(np.finfo(dtype).max)
    specials = [float(dtype(v)) for v in SPECIALS if not abs(v) > fmax]
    return hnp.arrays(dtype, st.integers(0, 40), elements=st.one_of(st.floats(width=width),
                                                                   st.sampled_from(specials)))


@settings(max_examples=60, deadline=None)
@given(x=st.one_of(values(np.float32), values(np.float16)), keepbits=st.integers(1, 6))
def test_significant_matches_the_reference_and_keeps_the_bound(x, keepbits):
    codes, y = run(x, keepbits)
    np.testing.assert_array_equal(codes, ref.encode(x, keepbits))
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y.astype(np.float64).reshape(-1), ref.decode(codes, keepbits))
    assert_bound(x, y, keepbits)


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(0, 30), elements=st.one_of(
    st.floats(min_value=TINY, max_value=F32_MAX), st.floats(min_value=-F32_MAX, max_value=-TINY),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, F32_MAX, 1 + 2.0 ** -40, 1.5 + 2.0 ** -52]))),
    keepbits=st.integers(1, 6))
def test_float64_rounds_once_from_its_own_bits(x, keepbits):
    codes, y = run(x, keepbits)
    np.testing.assert_array_equal(codes, ref.encode(x, keepbits))
    np.testing.assert_array_equal(y.reshape(-1), ref.decode(codes, keepbits))
    assert_bound(x, y, keepbits)


def test_kernel_against_reference_directly():
    x = np.array(SPECIALS, np.float32)
    limit, top = F32_MAX, ref.top(np.float32, 3)
    out = np.zeros(x.size, np.uint16)
    assert ks.encode_significant(x, 3, limit, top, out) == -1
    np.testing.assert_array_equal(out, ref.encode(x, 3))
    back = np.empty(x.size, np.float64)
    ks.decode_significant(out, 3, back)
    np.testing.assert_array_equal(back, ref.decode(out, 3))


def test_ties_go_to_even_and_largest_values_stay_finite():
    # 1 + 1/16 lies halfway between 1 and 1.125 (3 bits): even mantissa 1.0; 1 + 3/16: 1.25
    _, y = run(np.array([1.0625, 1.1875, -1.0625, 2.0 ** -140 * 1.0625], np.float32), 3)
    np.testing.assert_array_equal(y, np.array([1.0, 1.25, -1.0, 2.0 ** -140], np.float32))
    _, y = run(np.array([F32_MAX, -F32_MAX, 3.3e38], np.float32), 2)
    np.testing.assert_array_equal(y, np.float32([1.75 * 2.0 ** 127, -1.75 * 2.0 ** 127, 1.75 * 2.0 ** 127]))
    _, y = run(np.array([65504.0, 65000.0], np.float16), 4)
    assert y.dtype == np.float16 and np.isfinite(y).all() and y[0] == 1.9375 * 2 ** 15


def test_empty_zero_d_views_and_subnormals():
    codes, y = run(np.zeros((0, 3), np.float32), 3)
    assert codes.size == 0 and y.shape == (0, 3)
    _, y = run(np.float32(3.3), 2)
    assert y.shape == () and y == np.float32(3.5)
    base = np.random.default_rng(0).standard_normal((12, 10)).astype(np.float32)
    for view in (base[::2, 1::3], base.T, base[:, ::-1]):
        np.testing.assert_array_equal(run(view, 5)[0], run(np.ascontiguousarray(view), 5)[0])
    # every float32 subnormal keeps the bound (BitRound's fixed step does not)
    sub = (np.arange(1, 1 << 12, dtype=np.uint32) * 2047).view(np.float32)
    _, y = run(sub, 2)
    assert_bound(sub, y, 2)


@pytest.mark.parametrize("keepbits", [1, 3, 6])
def test_same_values_as_numcodecs_bitround(keepbits):
    numcodecs = pytest.importorskip("numcodecs")
    rng = np.random.default_rng(keepbits)
    x = (rng.standard_normal(3000) * np.exp2(rng.integers(-120, 120, 3000))).astype(np.float32)
    x[:len(SPECIALS)] = np.float32(SPECIALS)
    normal = ~np.isfinite(x) | (np.abs(x) >= 2.0 ** -126) & (np.abs(x) < 3.0e38) | (x == 0)
    want = numcodecs.BitRound(keepbits=keepbits).decode(numcodecs.BitRound(keepbits=keepbits).encode(x))
    want = np.frombuffer(want, np.float32)
    _, y = run(x, keepbits)
    assert normal.sum() > 2900
    np.testing.assert_array_equal(y[normal], want[normal])
    assert np.isinf(want[np.abs(x) == F32_MAX]).all() and np.isfinite(y[np.abs(x) == F32_MAX]).all()


@pytest.mark.parametrize("rel_error, keepbits", [(0.5, 1), (0.25, 1), (0.2, 2), (0.01, 6), (2.0 ** -7, 6)])
def test_rel_error_picks_the_fewest_bits(rel_error, keepbits):
    s = nq.Significant(rel_error=rel_error)
    assert s.kept == keepbits and s.bits == keepbits + 10
    x = np.array(SPECIALS + list(np.geomspace(1e-30, 1e30, 500)), np.float32)
    y = nq.dequantize(nq.quantize(x, s))
    fin = np.isfinite(x)
    assert (np.abs(x[fin].astype(np.float64) - y[fin]) <= rel_error * np.abs(x[fin].astype(np.float64))).all()


def test_parameters_presets_and_input_errors():
    for kw, match in [({}, "exactly one"), ({"keepbits": 3, "rel_error": 0.1}, "exactly one"),
                      ({"keepbits": 7}, r"keepbits=7 is invalid.*1\.\.6"), ({"keepbits": True}, "keepbits=True"),
                      ({"rel_error": 0.001}, "rel_error=0.001"), ({"rel_error": 1.0}, "rel_error=1.0")]:
        with pytest.raises(SchemeError, match=match) as info:
            nq.Significant(**kw)
        assert "\n" not in str(info.value)
    s = nq.Significant(rel_error=0.05)
    assert nq.scheme_from_json(s.to_json()) == s
    assert resolve_scheme("significant6") == nq.Significant(keepbits=6)
    assert nq.quantize(np.ones((4, 4), np.float32), s).bits_per_value == 16.0
    for bad in (1e300, 1e-300, -1e39):
        with pytest.raises(InputError, match="outside the range Significant codes hold"):
            nq.quantize(np.array([1.0, bad]), s)
    with pytest.raises(InputError, match="dtype=int32"):
        nq.quantize(np.arange(4, dtype=np.int32), s)


def test_dask_chunkings_quantize_zarr_and_corrupt_codes(tmp_path):
    x = (np.random.default_rng(3).standard_normal((20, 33)) * 1e3).astype(np.float32)
    x[2, 2], x[3, 3], x[4, 4] = np.nan, -np.inf, 1e-42
    s = nq.Significant(keepbits=4)
    q = nq.quantize(x, s)
    for chunks in ((7, 10), (20, 5), (3, 33)):
        qd = nq.quantize(da.from_array(x, chunks=chunks), s)
        np.testing.assert_array_equal(np.asarray(qd.codes_unpacked), np.asarray(q.codes_unpacked))
    src, dst = str(tmp_path / "src.zarr"), str(tmp_path / "q.zarr")
    zarr.create_array(src, shape=x.shape, chunks=(6, 11), dtype=x.dtype)[...] = x
    z = nq.quantize_zarr(src, dst, s)
    np.testing.assert_array_equal(nq.dequantize(z).compute(), nq.dequantize(q))
    opened = nq.open(dst)
    np.testing.assert_array_equal(nq.dequantize(opened).compute(), nq.dequantize(q))
    g = zarr.open_group(dst, mode="r+")
    bad = g["codes"][...]
    bad[1, 1] = significant.code_count(s)  # binade field past the non-finite one
    g["codes"][...] = bad
    with pytest.raises(StoreError, match=rf"codes hold code {significant.code_count(s)}.*14-bit significant") as info:
        nq.dequantize(nq.open(dst)).compute()
    assert "\n" not in str(info.value)
