"""MXFP4 / MXFP8 (OCP Microscaling v1.0) against a NumPy reference of the spec's rules.

The reference enumerates every value of the element format and picks the nearest one, a
tie going to the code with the even mantissa (its last bit 0), saturating at the largest
normal; the shared scale is ``floor(log2(absmax)) - emax`` from ``np.log2``.  It shares
nothing with the family's arithmetic (``frexp`` and ``rint`` at the element's step).
"""

import math

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nquant as nq
from nquant.errors import InputError, SchemeError
from nquant.families import mx
from nquant.interfaces.presets import resolve_scheme

# ----------------------------------------------------------------------------- reference

FORMATS = {  # element: (mantissa bits, exponent bias, exponent bits, emax, NaN codes of the positive half)
    "e2m1": (1, 1, 2, 2, ()),
    "e4m3": (3, 7, 4, 8, (0x7F,)),
}


def ref_values(element):
    """Every positive code's value by the format's definition (NaN codes NaN)."""
    mbits, bias, ebits, _, nans = FORMATS[element]
    out = []
    for code in range(1 << (mbits + ebits)):
        e, m = code >> mbits, code & ((1 << mbits) - 1)
        if code in nans:
            out.append(math.nan)
        elif e == 0:
            out.append(m * 2.0 ** (1 - bias - mbits))
        else:
            out.append((1 + m / 2 ** mbits) * 2.0 ** (e - bias))
    return out


def ref_round(element, v):
    """Code of the value ``v`` (a float): nearest element value, ties to the even mantissa,
    saturating at the largest finite value."""
    vals = ref_values(element)
    sign = 1 << (FORMATS[element][0] + FORMATS[element][2])
    mag = abs(v)
    best = None
    for code, val in enumerate(vals):
        if math.isnan(val):
            continue
        d = abs(mag - val)
        if best is None or d < best[0] or (d == best[0] and code % 2 == 0):
            best = (d, code)
    return best[1] | (sign if math.copysign(1.0, v) < 0 else 0)


def ref_mx(element, x, block_size):
    """``(e8m0, codes)`` of the flat float32 array ``x`` by the spec's rules."""
    emax = FORMATS[element][3]
    scales, codes = [], []
    for s in range(0, x.size, block_size):
        blk = x[s:s + block_size].astype(np.float64)
        if not np.isfinite(blk).all():
            scales.append(255)
            codes += [0] * blk.size
            continue
        amax = float(np.abs(blk).max())
        shared = -127 if amax == 0 else int(np.floor(np.log2(amax))) - emax
        shared = min(max(shared, -127), 127)
        scales.append(shared + 127)
        codes += [ref_round(element, float(v) / 2.0 ** shared) for v in blk]
    return np.array(scales, np.uint8), np.array(codes, np.uint8)


def ref_decode(element, e8m0, codes, block_size):
    vals = ref_values(element)
    table = vals + [-v for v in vals]
    out = []
    for i, c in enumerate(codes):
        e = int(e8m0[i // block_size])
        out.append(math.nan if e == 255 else table[c] * 2.0 ** (e - 127))
    return np.array(out, np.float64)


def scheme_of(element, block_size=32):
    return nq.MXFP4(block_size=block_size) if element == "e2m1" else nq.MXFP8(block_size=block_size)


def run(element, x, block_size=32):
    q = nq.quantize(np.asarray(x, np.float32), scheme_of(element, block_size))
    return q, np.asarray(q.scale_e8m0), np.asarray(q.codes_unpacked).reshape(-1)


# ----------------------------------------------------------------------------- exact values


def test_element_tables_are_the_spec_values():
    assert ref_values("e2m1") == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    np.testing.assert_array_equal(mx.E2M1.table()[:8], ref_values("e2m1"))
    np.testing.assert_array_equal(mx.E2M1.table()[8:], [-v for v in ref_values("e2m1")])
    e4m3 = mx.E4M3.table()
    assert e4m3[0x7E] == 448.0 and e4m3[0xFE] == -448.0
    assert e4m3[0x38] == 1.0 and e4m3[0x08] == 2.0 ** -6 and e4m3[0x01] == 2.0 ** -9
    assert np.isnan(e4m3[0x7F]) and np.isnan(e4m3[0xFF])
    assert np.isnan(e4m3).sum() == 2
    np.testing.assert_array_equal(e4m3[:0x7F], ref_values("e4m3")[:0x7F])


@pytest.mark.parametrize("amax, e8m0, code", [
    (1.0, 125, 0x6),     # 2**0: X = 2**-2, 1 / X = 4
    (6.0, 127, 0x7),     # floor(log2 6) = 2: X = 1, 6 is the largest normal
    (7.99, 127, 0x7),    # X = 1, 7.99 saturates to 6
    (8.0, 128, 0x6),     # 2**3: X = 2, 8 / X = 4
    (2.0 ** -130, 0, 0x0),  # the scale clamps at 2**-127: 2**-130 / X = 0.125, below half of 0.5
])
def test_mxfp4_scale_at_powers_of_two(amax, e8m0, code):
    x = np.zeros(32, np.float32)
    x[0] = amax
    _, scale, codes = run("e2m1", x)
    assert scale.tolist() == [e8m0]
    assert codes[0] == code == ref_round("e2m1", float(np.float32(amax)) / 2.0 ** (e8m0 - 127))


def test_mxfp4_ties_go_to_the_even_mantissa():
    # X = 1 (absmax 4 in [4, 8)): the values themselves are rounded
    x = np.array([4.0, 2.5, 3.5, 5.0, 0.25, 0.75, 1.25, 1.75, -2.5, -0.25, 7.0, -7.0], np.float32)
    _, scale, codes = run("e2m1", x)
    assert scale.tolist() == [127]
    #            4    2.5->2  3.5->4  5->4  .25->0  .75->1  1.25->1 1.75->2  -2    -0    6     -6
    assert codes.tolist() == [6, 4, 6, 6, 0, 2, 2, 4, 12, 8, 7, 15]
    np.testing.assert_array_equal(codes, [ref_round("e2m1", float(v)) for v in x])


def test_mxfp8_saturates_and_rounds_to_even():
    x = np.array([448.0, 500.0, 464.0, -479.0, 1.0, 1.0625, 1.1875, 2.0 ** -10, 3 * 2.0 ** -10, 0.0, -0.0],
                 np.float32)
    _, scale, codes = run("e4m3", x)
    assert scale.tolist() == [127]  # floor(log2 500) = 8 = emax
    # 464 is the tie between 448 (mantissa 110) and 480 (111, beyond the largest normal): 448
    assert codes[:4].tolist() == [0x7E, 0x7E, 0x7E, 0xFE]
    # 1.0625 ties 1 and 1.125 -> 1 (even); 1.1875 ties 1.125 and 1.25 -> 1.25; 2**-10 ties 0 and
    # 2**-9 -> 0; 3 * 2**-10 ties 2**-9 and 2**-8 -> 2**-8 (mantissa 010)
    assert codes[4:].tolist() == [0x38, 0x38, 0x3A, 0x00, 0x02, 0x00, 0x80]
    np.testing.assert_array_equal(codes, [ref_round("e4m3", float(v)) for v in x])


def test_nan_or_inf_makes_the_block_nan_and_leaves_the_others():
    x = np.arange(96, dtype=np.float32) / 7
    x[40] = np.nan
    x[70] = -np.inf
    q, scale, codes = run("e4m3", x)
    assert scale.tolist()[1:] == [255, 255]
    assert (codes[32:] == 0).all()
    y = nq.dequantize(q)
    assert np.isnan(y[32:]).all() and np.isfinite(y[:32]).all()
    np.testing.assert_array_equal(y[:32], ref_decode("e4m3", scale, codes, 32)[:32].astype(np.float32))


def test_zero_block_and_negative_zero():
    x = np.zeros(64, np.float32)
    x[32] = 1.0
    x[33] = -1e-30  # rounds to zero, keeps its sign
    q, scale, codes = run("e2m1", x)
    assert scale.tolist() == [0, 125]
    assert (codes[:32] == 0).all() and codes[33] == 8
    y = nq.dequantize(q)
    assert (y[:32] == 0).all() and np.signbit(y[33]) and y[33] == 0


def test_partial_last_block_has_its_own_scale():
    x = np.concatenate([np.full(32, 100.0), np.full(6, 0.001)]).astype(np.float32)
    q, scale, codes = run("e2m1", x)
    assert scale.tolist() == [127 + 6 - 2, 127 - 10 - 2]
    assert codes[32:].tolist() == [6] * 6  # 0.001 / 2**-12 = 4.096: the element 4
    np.testing.assert_array_equal(nq.dequantize(q)[32:], [0.0009765625] * 6)  # 2**-10 exactly


def test_bits_per_value_and_presets():
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    assert nq.quantize(x, nq.MXFP4()).bits_per_value == 4.25
    assert nq.quantize(x, nq.MXFP8()).bits_per_value == 8.25
    assert resolve_scheme("mxfp4") == nq.MXFP4(block_size=32)
    assert resolve_scheme("mxfp8", block_size=16) == nq.MXFP8(block_size=16)
    assert nq.scheme_from_json(nq.MXFP8(block_size=16).to_json()) == nq.MXFP8(block_size=16)


def test_bad_parameters_and_input():
    with pytest.raises(SchemeError, match="block_size=0"):
        nq.MXFP4(block_size=0)
    with pytest.raises(InputError, match="dtype=int32"):
        nq.quantize(np.arange(4, dtype=np.int32), nq.MXFP4())
    with pytest.raises(InputError, match="float32"):
        nq.quantize(np.array([1e300]), nq.MXFP8())


def test_corrupt_scale_is_refused():
    q = nq.quantize(np.ones(32, np.float32), nq.MXFP4())
    bad = nq.QuantizedArray(scheme=q.scheme, shape=q.shape, dtype=q.dtype, codes=q.codes, bits=4,
                            side={"scale_e8m0": np.array([253], np.uint8)})
    with pytest.raises(nq.errors.StoreError, match="scale 253"):
        nq.dequantize(bad)


# ----------------------------------------------------------------------------- properties

finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
specials = st.sampled_from([0.0, -0.0, 6.0, 448.0, 2.0 ** -126, 1e-45, 3.0, 0.25, 2.5, 1.0625])
values = hnp.arrays(np.float32, st.integers(0, 80), elements=st.one_of(finite32, specials))


@pytest.mark.parametrize("element", ["e2m1", "e4m3"])
@given(x=values, block_size=st.sampled_from([1, 2, 5, 32]),
       scale=st.sampled_from([1.0, 2.0 ** -40, 2.0 ** 60]))
def test_matches_the_reference(element, x, block_size, scale):
    with np.errstate(over="ignore"):
        x = (x * np.float32(scale)).astype(np.float32)
    x[~np.isfinite(x)] = 0.0
    q, e8m0, codes = run(element, x, block_size)
    want_scale, want_codes = ref_mx(element, x, block_size)
    np.testing.assert_array_equal(e8m0, want_scale)
    np.testing.assert_array_equal(codes, want_codes)
    y = nq.dequantize(q)
    ref = ref_decode(element, want_scale, want_codes, block_size).astype(np.float32)
    np.testing.assert_array_equal(y, ref)
    assert np.isfinite(y).all()


@pytest.mark.parametrize("element", ["e2m1", "e4m3"])
def test_dask_and_store_like_nf4(element, tmp_path):
    x = np.random.default_rng(1).standard_normal((10, 48)).astype(np.float32) * 100
    s = scheme_of(element)
    q = nq.quantize(x, s)
    qd = nq.quantize(da.from_array(x, chunks=(3, 48)), s)
    np.testing.assert_array_equal(np.asarray(qd.codes_unpacked), np.asarray(q.codes_unpacked))
    np.testing.assert_array_equal(np.asarray(qd.scale_e8m0), q.scale_e8m0)
    zarr.create_array(str(tmp_path / "src.zarr"), shape=x.shape, chunks=(4, 48), dtype=x.dtype)[...] = x
    z = nq.quantize_zarr(str(tmp_path / "src.zarr"), str(tmp_path / "q.zarr"), s)
    np.testing.assert_array_equal(nq.dequantize(z).compute(), nq.dequantize(q))
    np.testing.assert_array_equal(np.asarray(z.scale_e8m0), q.scale_e8m0)
