"""Integer matmul: exact int32 accumulators, folded zero points, 4-bit weights, errors."""

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_array_equal

import nquant as nq
from nquant.containers import QuantizedArray
from nquant.errors import InputError, SchemeError
from nquant.packing import pack_codes
from nquant.qmatmul import block_k, int_matmul, prepare_weights, qmatmul
from tests.reference import intmm as intmm_ref

METHODS = ("blas", "int")


def make_q(values, scheme, scale, zero_point=None, offset=None):
    """A QuantizedArray holding exactly the integers ``values`` (natural, signed or not)."""
    qmin, _ = scheme.qrange
    codes = (np.asarray(values, np.int64) - qmin).astype(np.uint8)
    G = 1 if scheme.axis is None else codes.shape[scheme.axis]
    side = {"scale": np.broadcast_to(np.asarray(scale, np.float32), (G,)).copy()}
    if offset is not None:
        side["offset"] = np.full(G, offset, np.float32)
    else:
        side["zero_point"] = np.broadcast_to(np.asarray(0 if zero_point is None else zero_point, np.int32),
                                             (G,)).copy()
    return QuantizedArray(scheme=scheme, shape=codes.shape, dtype=np.dtype(np.float32),
                          codes=pack_codes(codes, scheme.bits), bits=scheme.bits, side=side)


W8 = nq.Uniform(bits=8, symmetric=True, axis=0)
W4 = nq.Uniform(bits=4, symmetric=True, axis=0)
XU8 = nq.Uniform(bits=8)
XI8 = nq.Uniform(bits=8, signed=True)


def float_reference(qw, qx):
    """float64 product of the dequantized operands."""
    return nq.dequantize(qw).astype(np.float64) @ nq.dequantize(qx).astype(np.float64)


def assert_close_to_dequantized(y, qw, qx):
    r = float_reference(qw, qx)
    bound = np.abs(nq.dequantize(qw).astype(np.float64)) @ np.abs(nq.dequantize(qx).astype(np.float64))
    assert y.dtype == np.float32 and y.shape == r.shape
    # one float32 rounding of the result, plus the float32 rounding of each dequantized operand
    assert np.all(np.abs(y - r) <= 4 * 2.0 ** -24 * bound + 1e-30)


# ----------------------------------------------------------------------------- exact accumulators


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("O, K, N", [(1, 1, 1), (33, 1023, 5), (7, 1025, 3), (65, 2051, 17), (3, 130, 64)])
def test_intmm_random_operands_exact(method, O, K, N):
    rng = np.random.default_rng(O * K + N)
    wv = rng.integers(-128, 128, (O, K))
    for xs, xv in ((XU8, rng.integers(0, 256, (K, N))), (XI8, rng.integers(-128, 128, (K, N)))):
        zp = int(rng.integers(*xs.qrange, endpoint=True))
        qw = make_q(wv, W8, rng.uniform(1e-3, 1e-2, O))
        qx = make_q(xv, xs, 0.02, zp)
        acc = int_matmul(qw, qx, method=method)
        assert acc.dtype == np.int32
        assert_array_equal(acc, intmm_ref.int_matmul(wv, xv))
        assert_close_to_dequantized(qmatmul(qw, qx, method=method), qw, qx)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("xscheme", [XU8, XI8])
def test_intmm_adversarial_operands_exact(method, xscheme):
    """-128 everywhere (the largest products), zero points at the range ends, K not a tile multiple."""
    O, K, N = 40, 3 * 1024 + 7, 9
    qmin, qmax = xscheme.qrange
    wv = np.full((O, K), -128)
    wv[1] = 127
    wv[2, ::2] = 127
    wv[2, 1::2] = -128
    for xfill in (qmin, qmax):
        xv = np.full((K, N), xfill)
        xv[:, 1] = qmax + qmin - xfill
        for zp in (qmin, qmax):
            qw = make_q(wv, W8, 0.5)
            qx = make_q(xv, xscheme, 0.25, zp)
            assert_array_equal(int_matmul(qw, qx, method=method), intmm_ref.int_matmul(wv, xv))
            y = qmatmul(qw, qx, method=method)
            assert_array_equal(y, (intmm_ref.int_matmul(wv, xv - zp) * 0.125).astype(np.float32))


def test_exactness_bound_is_tight():
    """A K-block of products at the 2^14 bound sums to exactly 2^24: still exact in float32."""
    kb = block_k(128, 128)
    assert kb == 1024 and kb * 128 * 128 == 2**24
    assert block_k(8, 128) == 2**14
    wv = np.full((2, kb + 1), -128)
    xv = np.zeros((kb + 1, 1), np.int64)  # codes 0: centred value -128
    acc = int_matmul(make_q(wv, W8, 1.0), make_q(xv, XU8, 1.0, 0), method="blas")
    assert_array_equal(acc, intmm_ref.int_matmul(wv, xv))


def test_methods_agree_on_quantized_data():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((96, 777)).astype(np.float32) * rng.lognormal(0, 0.5, (96, 1)).astype(np.float32)
    x = np.maximum(rng.standard_normal((777, 31)), 0).astype(np.float32)
    qw = nq.quantize(w, W8)
    qx = nq.quantize(x, XU8)
    pw = prepare_weights(qw)
    a = int_matmul(pw, qx, method="blas")
    assert_array_equal(a, int_matmul(pw, qx, method="int"))
    assert_array_equal(a, intmm_ref.int_matmul(qw.codes_unpacked, qx.codes_unpacked))
    y = qmatmul(pw, qx)
    assert_array_equal(y, qmatmul(qw, qx, method="int"))
    assert_close_to_dequantized(y, qw, qx)
    # close to the float product of the unquantized operands too (8-bit error)
    exact = w.astype(np.float64) @ x.astype(np.float64)
    assert np.linalg.norm(y - exact) / np.linalg.norm(exact) < 0.02


# ----------------------------------------------------------------------------- 4-bit weights


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("K", [64, 1023, 2 * 1024 + 1])
def test_int4_weights_packed(method, K):
    rng = np.random.default_rng(K)
    O, N = 21, 6
    wv = rng.integers(-8, 8, (O, K))
    wv[0] = -8
    qw = make_q(wv, W4, rng.uniform(0.1, 1.0, O))
    xv = rng.integers(0, 256, (K, N))
    xv[:, 0] = 0
    qx = make_q(xv, XU8, 0.01, 255)
    pw = prepare_weights(qw)
    assert pw.packed is not None and pw.int8 is None
    assert pw.packed.shape == (O, (K + 1) // 2)
    assert_array_equal(int_matmul(pw, qx, method=method), intmm_ref.int_matmul(wv, xv))
    unpacked = prepare_weights(qw, packed=False)
    assert unpacked.int8 is not None
    assert_array_equal(qmatmul(pw, qx, method=method), qmatmul(unpacked, qx))
    assert_close_to_dequantized(qmatmul(pw, qx, method=method), qw, qx)


def test_int4_memory_is_an_eighth_of_float32():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((256, 512)).astype(np.float32)
    pw4 = prepare_weights(nq.quantize(w, W4))
    pw8 = prepare_weights(nq.quantize(w, W8))
    assert pw4.weight_nbytes * 8 == w.nbytes
    assert pw8.weight_nbytes * 4 == w.nbytes
    # with the side arrays: a float32 scale and an int32 row sum per output channel
    assert pw4.nbytes == w.nbytes // 8 + 8 * w.shape[0]


# ----------------------------------------------------------------------------- schemes and errors


def test_float_zero_point_activations_and_per_tensor_weights():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((20, 50)).astype(np.float32)
    x = (rng.standard_normal((50, 7)) + 3).astype(np.float32)
    for ws, xs in ((nq.Uniform(bits=8, symmetric=True), nq.Uniform(bits=8, zero_point="float")),
                   (nq.Uniform(bits=8, symmetric=True, narrow_range=True, axis=0), nq.Uniform(bits=6)),
                   (nq.Uniform(bits=3, symmetric=True, axis=0), nq.Uniform(bits=8, symmetric=True)),
                   (W8, nq.Uniform(bits=7, signed=True))):
        qw, qx = nq.quantize(w, ws), nq.quantize(x, xs)
        for method in METHODS:
            assert_array_equal(int_matmul(qw, qx, method=method),
                               intmm_ref.int_matmul(qw.codes_unpacked, qx.codes_unpacked))
            assert_close_to_dequantized(qmatmul(qw, qx, method=method), qw, qx)


def test_dask_backed_operands_and_out():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((16, 24)).astype(np.float32)
    x = rng.standard_normal((24, 5)).astype(np.float32)
    qw = nq.quantize(da.from_array(w, chunks=(8, 8), name=False), W8)
    qx = nq.quantize(da.from_array(x, chunks=(12, 5), name=False), XU8)
    out = np.empty((16, 5), np.float32)
    y = qmatmul(qw, qx, out=out)
    assert y is out
    assert_array_equal(y, qmatmul(nq.quantize(w, W8), nq.quantize(x, XU8)))


def test_empty_dimensions():
    qw = make_q(np.zeros((3, 0)), W8, 1.0)
    qx = make_q(np.zeros((0, 2)), XU8, 1.0, 5)
    assert_array_equal(qmatmul(qw, qx), np.zeros((3, 2), np.float32))
    assert qmatmul(make_q(np.zeros((0, 4)), W8, 1.0), make_q(np.zeros((4, 2)), XU8, 1.0)).shape == (0, 2)


def test_errors():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    qx = nq.quantize(x, XU8)
    with pytest.raises(SchemeError, match="symmetric"):
        qmatmul(nq.quantize(w, nq.Uniform(bits=8, axis=0)), qx)
    with pytest.raises(SchemeError, match="axis"):
        qmatmul(nq.quantize(w, nq.Uniform(bits=8, symmetric=True, axis=1)), qx)
    with pytest.raises(SchemeError, match="axis"):
        qmatmul(nq.quantize(w, W8), nq.quantize(x, nq.Uniform(bits=8, axis=1)))
    with pytest.raises(SchemeError, match="block_size"):
        qmatmul(nq.quantize(w, W8), nq.quantize(x, nq.Uniform(bits=8, block_size=2)))
    with pytest.raises(SchemeError, match="nan"):
        qmatmul(nq.quantize(w, W8), nq.quantize(x, nq.Uniform(bits=8, nan="propagate")))
    with pytest.raises(SchemeError, match="signed"):
        qmatmul(nq.quantize(w, nq.Uniform(bits=8, symmetric=True, signed=False)), qx)
    with pytest.raises(InputError, match="align"):
        qmatmul(nq.quantize(w[:, :5], W8), qx)
    with pytest.raises(InputError, match="2-D"):
        qmatmul(nq.quantize(w.ravel(), nq.Uniform(bits=8, symmetric=True)), qx)
    with pytest.raises(InputError, match="QuantizedArray"):
        qmatmul(w, qx)
    with pytest.raises(InputError, match="method"):
        qmatmul(nq.quantize(w, W8), qx, method="gpu")
    with pytest.raises(InputError, match="out"):
        qmatmul(nq.quantize(w, W8), qx, out=np.empty((4, 3), np.float64))
    with pytest.raises(SchemeError, match="packed"):
        prepare_weights(nq.quantize(w, W8), packed=True)
    # K beyond the int32 accumulator's reach
    big = 65794
    with pytest.raises(InputError, match="int32"):
        qmatmul(make_q(np.zeros((1, big)), W8, 1.0), make_q(np.zeros((big, 1)), XU8, 1.0))
