"""Rounding modes and the counter-based stream against the NumPy references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from strategies import chunkings, iter_chunks

import nquant as nq
from nquant.families import uniform
from nquant.kernels import rng, rounding
from tests.reference import affine as affine_ref
from tests.reference import rng as rng_ref
from tests.reference import rounding as rounding_ref

MODES = ("nearest", "nearest_away", "floor", "ceil", "stochastic")


def _adversarial(dtype):
    dtype = np.dtype(dtype).type
    f = np.finfo(dtype)
    one = dtype(1)
    big = dtype(2.0 ** (f.nmant - 1))  # from here on every value is a multiple of 0.5
    vals = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, -3.5, 1e-30, -1e-30,
            float(f.tiny), float(f.smallest_subnormal), -float(f.smallest_subnormal),
            float(np.nextafter(dtype(0.5), dtype(0))), -float(np.nextafter(dtype(0.5), dtype(0))),
            float(np.nextafter(dtype(2.5), dtype(3))), float(np.nextafter(dtype(2.5), dtype(2))),
            float(np.nextafter(dtype(-2.5), dtype(-3))), float(np.nextafter(dtype(-2.5), dtype(-2))),
            float(big - dtype(0.5)), float(-(big - dtype(0.5))), float(big + one), float(big * 2 + one),
            float(f.max), -float(f.max), np.inf, -np.inf, np.nan, 7.0, -7.0, 0.3, -0.3, 255.75, 1e6 + 0.5]
    return np.array(vals, dtype=dtype)


EXPECTED_TIES = {
    # v:            nearest, nearest_away, floor, ceil
    0.5: (0.0, 1.0, 0.0, 1.0),
    -0.5: (-0.0, -1.0, -1.0, -0.0),
    1.5: (2.0, 2.0, 1.0, 2.0),
    2.5: (2.0, 3.0, 2.0, 3.0),
    -2.5: (-2.0, -3.0, -3.0, -2.0),
    3.5: (4.0, 4.0, 3.0, 4.0),
    -3.5: (-4.0, -4.0, -4.0, -3.0),
    0.3: (0.0, 0.0, 0.0, 1.0),
    -0.3: (-0.0, -0.0, -1.0, -0.0),
    255.75: (256.0, 256.0, 255.0, 256.0),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_known_values_by_hand(dtype):
    for v, expected in EXPECTED_TIES.items():
        for mode, e in zip(MODES[:4], expected):
            got = rounding.round_value(dtype(v), rounding.MODES[mode], np.uint64(0), 0)
            assert got == e, (v, mode, got, e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
def test_scalar_round_value_matches_reference(dtype, mode):
    v = _adversarial(dtype)
    seed = 12345
    key = rng.stream_key(np.uint64(seed))
    got = np.array([rounding.round_value(t, rounding.MODES[mode], key, i) for i, t in enumerate(v)],
                   dtype=dtype)
    u = rng_ref.uniform_draws(seed, np.arange(v.size), dtype) if mode == "stochastic" else None
    with np.errstate(invalid="ignore"):
        want = rounding_ref.round_mode(v, mode, u)
    assert_array_equal(got, want)
    # the sign of zero is kept by every mode
    assert_array_equal(np.signbit(got[np.isfinite(got) & (got == 0)]),
                       np.signbit(want[np.isfinite(want) & (want == 0)]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_away_reference_agrees_with_decimal(dtype):
    v = _adversarial(dtype)
    v = v[np.isfinite(v)]
    assert_array_equal(rounding_ref.round_half_away(v), rounding_ref.round_half_away_decimal(v))
    rs = np.random.default_rng(0)
    w = (rs.integers(-2000, 2000, 3000) / 4 + rs.choice([0, 1e-9, -1e-9, 0.25], 3000)).astype(dtype)
    assert_array_equal(rounding_ref.round_half_away(w), rounding_ref.round_half_away_decimal(w))


@settings(max_examples=40)
@given(st.data())
def test_nearest_away_kernel_random(data):
    width = data.draw(st.sampled_from([32, 64]))
    dtype = np.float32 if width == 32 else np.float64
    values = data.draw(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=width),
                                min_size=1, max_size=30))
    v = np.array(values, dtype=dtype)
    got = np.array([rounding.round_half_away(t) for t in v], dtype=dtype)
    assert_array_equal(got, rounding_ref.round_half_away_decimal(v))
    assert_array_equal(got, rounding_ref.round_half_away(v))


def _unit_scheme(mode, seed=0, bits=8):
    """Scale exactly 1 and offset 0: the code of x is clip(round(x), 0, 2**bits - 1)."""
    return nq.Uniform(bits=bits, range=(0.0, float(2**bits - 1)), zero_point="float", rounding=mode, seed=seed)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
def test_vector_kernel_rounds_like_reference(mode, dtype):
    s = _unit_scheme(mode, seed=99)
    rs = np.random.default_rng(1)
    x = np.concatenate([rs.uniform(-2, 258, 3000), np.arange(-2, 258) + 0.5, np.arange(0, 256.0),
                        np.arange(0, 255) + 0.25]).astype(dtype)
    p = uniform.fit(s, x)
    assert p["scale"][0] == 1.0 and p["offset"][0] == 0.0
    codes = uniform.encode(s, p, x)
    assert_array_equal(codes, affine_ref.encode(s, p, x))
    # away from integers (no snapping) the codes are the plain rounding of x, clipped
    xc = x.astype(affine_ref.compute_dtype(dtype))
    far = np.abs(xc - np.rint(xc)) > 1e-3
    u = rng_ref.uniform_draws(99, np.arange(x.size), xc.dtype)
    plain = np.clip(rounding_ref.round_mode(xc, mode, u), 0, 255)
    assert_array_equal(codes[far], plain[far])
    if mode != "stochastic":
        # exact ties k + 0.5
        ties = np.arange(0, 255) + 0.5
        got = uniform.encode(s, p, ties.astype(dtype)).astype(int)
        k = np.arange(0, 255)
        want = {"nearest": k + (k % 2), "nearest_away": k + 1, "floor": k, "ceil": k + 1}[mode]
        assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stochastic_rounding_is_unbiased(dtype):
    n = 10**6
    s = _unit_scheme("stochastic", seed=2024)
    x = np.random.default_rng(5).uniform(0.0, 254.0, n).astype(dtype)
    q = nq.quantize(x, s)
    err = nq.dequantize(q).astype(np.float64) - x.astype(np.float64)
    f = x.astype(np.float64) - np.floor(x.astype(np.float64))
    sd = np.sqrt(np.sum(f * (1 - f)))  # standard deviation of the summed error
    assert abs(err.sum()) <= 5 * sd
    assert np.abs(err).max() < 1.0
    # deterministic: the same seed gives the same bytes, another seed other bytes
    assert_array_equal(nq.quantize(x, s).codes, q.codes)
    other = nq.quantize(x, s.replace(seed=2025)).codes
    assert (other != q.codes).mean() > 0.1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("frac", [0.001, 0.1, 0.3, 0.5, 0.75, 0.999])
def test_stochastic_rounds_up_with_probability_equal_to_fraction(frac, dtype):
    n = 10**6
    s = _unit_scheme("stochastic", seed=11)
    x = np.full(n, 7 + frac, dtype=dtype)
    f = float(x[0]) - 7.0  # the fraction actually stored
    codes = uniform.encode(s, uniform.fit(s, x), x)
    assert set(np.unique(codes)) <= {7, 8}
    up = (codes == 8).mean()
    assert abs(up - f) <= 5 * np.sqrt(f * (1 - f) / n) + 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stochastic_one_chunk_equals_many_chunks(dtype):
    rs = np.random.default_rng(8)
    x = rs.uniform(0, 255, (300, 333)).astype(dtype)
    for s in [_unit_scheme("stochastic", seed=3),
              nq.Uniform(bits=4, axis=1, rounding="stochastic", seed=-5),
              nq.Uniform(bits=3, axis=0, rounding="stochastic", seed=2**63 + 9),
              nq.Uniform(bits=6, block_size=37, rounding="stochastic", seed=1)]:
        p = uniform.fit(s, x)
        whole = uniform.encode(s, p, x)
        assert_array_equal(whole, affine_ref.encode(s, p, x))
        if s.block_size is None:
            chunks = ((100, 50, 150), (1, 200, 132))
        else:
            chunks = ((37, 74, 189), (333,))  # 37 rows of 333 values: whole blocks of 37
        out = np.empty_like(whole)
        for sl, start in iter_chunks(chunks):
            out[sl] = uniform.encode(s, p, x[sl], start=start, global_shape=x.shape)
        assert_array_equal(out, whole)


@settings(max_examples=15)
@given(st.data())
def test_stochastic_chunk_invariance_random_chunkings(data):
    shape = data.draw(st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    axis = data.draw(st.sampled_from([None, 0, 1, 2, -1]))
    seed = data.draw(st.integers(-(2**63), 2**64 - 1))
    x = np.random.default_rng(data.draw(st.integers(0, 1000))).normal(size=shape).astype(dtype)
    s = nq.Uniform(bits=data.draw(st.integers(1, 8)), axis=axis, rounding="stochastic", seed=seed)
    p = uniform.fit(s, x)
    whole = uniform.encode(s, p, x)
    assert_array_equal(whole, affine_ref.encode(s, p, x))
    out = np.empty_like(whole)
    for sl, start in iter_chunks(data.draw(chunkings(shape))):
        out[sl] = uniform.encode(s, p, x[sl], start=start, global_shape=shape)
    assert_array_equal(out, whole)


def test_seeds_equal_modulo_2_64():
    x = np.random.default_rng(0).uniform(0, 255, 5000)
    a = uniform.encode(_unit_scheme("stochastic", seed=-1), {"scale": np.ones(1, np.float32),
                                                            "offset": np.zeros(1, np.float32)}, x)
    b = uniform.encode(_unit_scheme("stochastic", seed=2**64 - 1), {"scale": np.ones(1, np.float32),
                                                                   "offset": np.zeros(1, np.float32)}, x)
    assert_array_equal(a, b)
