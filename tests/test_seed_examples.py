"""The seeds' worked examples, with the values the issue states."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import nquant as nq
from nquant.families import uniform
from tests.reference import affine as affine_ref
from tests.reference import bitpack as bitpack_ref

# seed 000, Example 1.1: the grid {-4 + 8i/7}, i = 0..7
V = [3.2, -1.4, 2.5, -0.9, 1.8, -3.7, 0.0, 4.0, 2.2, -1.3]
SEED_000 = nq.Uniform(bits=3, range=(-4, 4), zero_point="float")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_seed_000_nearest(dtype):
    q = nq.quantize(np.array(V, dtype), SEED_000)
    assert q.codes_unpacked.tolist() == [6, 2, 6, 3, 5, 0, 3, 7, 5, 2]
    assert q.scale[0] == np.float32(8 / 7) and q.offset[0] == -4.0
    # the reconstruction is the grid point of each code
    y = nq.dequantize(q, dtype=np.float64)
    assert_array_equal(y, -4.0 + np.array([6, 2, 6, 3, 5, 0, 3, 7, 5, 2]) * np.float64(np.float32(8 / 7)))
    assert np.abs(y - np.array(V)).max() <= 4 / 7 + 1e-6


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_seed_000_printed_codes_are_floor(dtype):
    """The seed prints (6,2,5,2,5,0,3,7,5,2): rounding='floor' (4.0, the end of the range, keeps code 7)."""
    q = nq.quantize(np.array(V, dtype), SEED_000.replace(rounding="floor"))
    assert q.codes_unpacked.tolist() == [6, 2, 5, 2, 5, 0, 3, 7, 5, 2]


def test_seed_000_other_modes():
    x = np.array(V)
    q = nq.quantize(x, SEED_000.replace(rounding="ceil"))
    assert q.codes_unpacked.tolist() == [7, 3, 6, 3, 6, 1, 4, 7, 6, 3]
    q = nq.quantize(x, SEED_000.replace(rounding="nearest_away"))
    assert q.codes_unpacked.tolist() == [6, 2, 6, 3, 5, 0, 3, 7, 5, 2]
    # stochastic: each code is the floor or the ceil code, and the stream is the documented one
    s = SEED_000.replace(rounding="stochastic", seed=0)
    c = nq.quantize(x, s).codes_unpacked
    lo, hi = np.array([6, 2, 5, 2, 5, 0, 3, 7, 5, 2]), np.array([7, 3, 6, 3, 6, 1, 4, 7, 6, 3])
    assert ((c == lo) | (c == hi)).all()
    assert_array_equal(c, affine_ref.encode(s, uniform.fit(s, x), x))
    # 3 bits: 10 codes pack into 30 bits -> 4 bytes, MSB first
    q = nq.quantize(x, SEED_000)
    assert_array_equal(q.codes, bitpack_ref.pack([6, 2, 6, 3, 5, 0, 3, 7, 5, 2], 3))
    # 110 010 110 011 101 000 011 111 101 010 (+ 2 zero bits)
    assert q.codes.tolist() == [0b11001011, 0b00111010, 0b00011111, 0b10101000]


# seed 003: the 2 x 9 example where one global 4-bit range collapses the second row
X2 = np.array([[8.2, 10.3, 290.1, 278.1, 310.3, 299.9, 308.7, 289.7, 300.1],
               [0.1, 7.3, 8.9, 9.7, 6.9, 9.55, 8.1, 8.5, 8.99]])


def test_seed_003_global_range_collapses_small_row():
    q = nq.quantize(X2, nq.Uniform(bits=4))
    c = q.codes_unpacked
    assert c.max() <= 15
    assert set(c[1].tolist()) <= {0, 1}
    assert c[1].tolist() == [0] * 9  # scale 310.3 / 15 = 20.69: all of row 1 rounds to 0
    assert nq.metrics(X2[1], nq.dequantize(q)[1])["max_abs"] > 9


@pytest.mark.parametrize("zero_point", ["int", "float"])
def test_seed_003_per_row_quantization_fixes_it(zero_point):
    q = nq.quantize(X2, nq.Uniform(bits=4, axis=0, zero_point=zero_point))
    c = q.codes_unpacked
    assert c.max() <= 15  # the seed's printed code 16 cannot exist in 4 bits
    assert len(np.unique(c[0])) >= 4 and len(np.unique(c[1])) >= 5
    y = nq.dequantize(q)
    for r in range(2):
        assert np.abs(y[r] - X2[r]).max() <= q.scale[r] / 2 * (1 + 1e-6)
    if zero_point == "int":
        # by hand: scale = max / 15, codes = round(x / scale)
        assert c.tolist() == [[0, 0, 14, 13, 15, 14, 15, 14, 15], [0, 11, 14, 15, 11, 15, 13, 13, 14]]
        assert_array_equal(q.scale, np.float32([310.3 / 15, 9.7 / 15]))
    else:
        # round((x - 0.1) / (9.6 / 15)); 8.1 is the exact tie 12.5 (either neighbour)
        assert c[1, [0, 1, 2, 3, 4, 5, 7, 8]].tolist() == [0, 11, 14, 15, 11, 15, 13, 14]
        assert c[1, 6] in (12, 13)


def test_seed_003_vector_db_uint8_per_dimension():
    rs = np.random.default_rng(3)
    X = (rs.standard_normal((2000, 256)) * rs.uniform(0.5, 2, 256) + rs.uniform(-1, 1, 256)).astype(np.float32)
    s = nq.Uniform(bits=8, axis=1, zero_point="float")
    q = nq.quantize(X, s)
    codes = q.codes_unpacked
    assert codes.dtype == np.uint8 and codes.shape == X.shape
    assert q.nbytes == 2000 * 256 + 256 * 4 * 2
    # the seed's formula in exact float64 arithmetic
    mn, mx = X.min(axis=0).astype(np.float64), X.max(axis=0).astype(np.float64)
    t = (X - mn) / ((mx - mn) / 255)
    seed_codes = np.round(t)
    diff = codes.astype(np.int64) - seed_codes
    # identical except (at most one code) where t is within float32 rounding of a tie k + 1/2
    near_tie = np.abs(t - np.floor(t) - 0.5) < 1e-4
    assert np.abs(diff).max() <= 1 and not diff[~near_tie].any()
    assert (diff != 0).mean() < 1e-4
    # and bit-identical to the float32 reference of the documented kernel formula
    assert_array_equal(codes, affine_ref.encode(s, uniform.fit(s, X), X))
    # every dimension uses its whole range: min -> 0, max -> 255
    assert (codes.min(axis=0) == 0).all() and (codes.max(axis=0) == 255).all()
    y = nq.dequantize(q)
    assert (np.abs(y - X) <= (mx - mn) / 255 / 2 * (1 + 1e-5) + 1e-6).all()
