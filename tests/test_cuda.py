"""CUDA twins against their CPU kernels (the CUDA simulator in CI, a GPU with NUMBA_ENABLE_CUDASIM=0).

Every function of ``nquant/cuda/<module>.py`` is compared with the CPU function of the same
name in ``nquant/kernels/<module>.py`` on small adversarial inputs: codes, labels, counts and
table lookups exactly; float64 sums accumulated with atomics within rounding.  Launches are
kept to 3 blocks of 8 threads (the simulator runs one Python thread per CUDA thread), which
also makes every grid-stride loop go round several times.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed: pip install 'nquant[cuda]'")

from numba import cuda  # noqa: E402

if not cuda.is_available():  # a GPU run without a GPU (NUMBA_ENABLE_CUDASIM=0)
    pytest.skip("no CUDA device and the simulator is off", allow_module_level=True)

import nquant as nq  # noqa: E402
from nquant import _device as selection  # noqa: E402
from nquant.cuda import _device as g_device  # noqa: E402
from nquant.cuda import _launch  # noqa: E402
from nquant.cuda import affine as g_affine  # noqa: E402
from nquant.cuda import asq_dp as g_asq  # noqa: E402
from nquant.cuda import assign as g_assign  # noqa: E402
from nquant.cuda import bitpack as g_bitpack  # noqa: E402
from nquant.cuda import blockwise as g_bw  # noqa: E402
from nquant.cuda import codebook1d as g_cb  # noqa: E402
from nquant.cuda import pq as g_pq  # noqa: E402
from nquant.cuda import rng as g_rng  # noqa: E402
from nquant.cuda import rounding as g_rounding  # noqa: E402
from nquant.errors import DeviceError, InputError, SchemeError  # noqa: E402
from nquant.grids import dynamic_map, normal_float, uniform_grid  # noqa: E402
from nquant.kernels import affine as c_affine  # noqa: E402
from nquant.kernels import asq_dp as c_asq  # noqa: E402
from nquant.kernels import assign as c_assign  # noqa: E402
from nquant.kernels import bitpack as c_bitpack  # noqa: E402
from nquant.kernels import blockwise as c_bw  # noqa: E402
from nquant.kernels import codebook1d as c_cb  # noqa: E402
from nquant.kernels import pq as c_pq  # noqa: E402
from nquant.kernels import rng as c_rng  # noqa: E402
from nquant.kernels import rounding as c_rounding  # noqa: E402
from nquant.kernels import scalar  # noqa: E402

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[1]
DTYPES = [np.float32, np.float64]
NF4 = normal_float(4)


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    """3 blocks of 8 threads: cheap in the simulator, and every grid-stride loop loops."""
    monkeypatch.setattr(_launch, "THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(_launch, "MAX_BLOCKS", 3)


def _readonly(a):
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _key(seed):
    return np.uint64(c_rng.stream_key(np.uint64(seed % 2**64)))


def _values(dtype, n=48, seed=0):
    """Ties, near-ties, signed zeros, huge, tiny and random values (finite)."""
    dt = np.dtype(dtype).type
    f = np.finfo(dtype)
    special = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 254.5, 3.0000001, -7.0, float(f.tiny),
               float(np.nextafter(dt(2.5), dt(3))), float(np.nextafter(dt(2.5), dt(2))), 1e6 + 0.5]
    rs = np.random.default_rng(seed)
    rand = rs.standard_normal(n - len(special)) * 60
    return np.concatenate([special, rand]).astype(dtype)


# ----------------------------------------------------------------------------- scalar helpers


@_launch.kernel
def _draws_kernel(key, base, z, out64, out32, mixed, keys):
    i = cuda.grid(1)
    while i < out64.shape[0]:
        out64[i] = g_rng.uniform64(key, base + i)
        out32[i] = g_rng.uniform32(key, base + i)
        mixed[i] = g_rng.mix64(z[i])
        keys[i] = g_rng.stream_key(z[i])
        i += cuda.gridsize(1)


@_launch.kernel
def _round_kernel(v, mode, key, out, away, stoch, u, snapped, coded, clipped, hi):
    i = cuda.grid(1)
    while i < v.shape[0]:
        out[i] = g_rounding.round_value(v[i], mode, key, i)
        away[i] = g_rounding.round_half_away(v[i])
        stoch[i] = g_rounding.stochastic_round(v[i], u[i])
        snapped[i] = g_device.snap(v[i])
        coded[i] = g_device.round_code(v[i], mode, key, i)
        clipped[i] = g_device.clip_code(v[i], hi)
        i += cuda.gridsize(1)


def test_scalar_helpers_are_one_source_for_both_targets():
    cpu = scalar.cpu_helpers()
    assert set(cpu) == set(scalar.HELPERS)
    for name in scalar.HELPERS:
        assert cpu[name].py_func.__code__ is getattr(scalar, name).__code__
        assert getattr(g_device, name).py_func.__code__ is getattr(scalar, name).__code__
    assert c_rng.uniform32 is cpu["uniform32"] and c_rounding.round_value is cpu["round_value"]
    assert c_affine._snap is cpu["snap"] and c_affine._clip_code is cpu["clip_code"]


@pytest.mark.parametrize("seed", [0, 7, 2**63 + 5, -1])
def test_stream_draws_and_hash_match_cpu(seed):
    key = _key(seed)
    base = 2**40 + 3
    n = 40
    z = np.random.default_rng(1).integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    out64, out32, mixed = np.empty(n), np.empty(n, np.float32), np.empty(n, np.uint64)
    d = [cuda.to_device(a) for a in (out64, out32, mixed, mixed)]
    _launch.launch(_draws_kernel, n, key, np.int64(base), cuda.to_device(z), *d)
    assert_array_equal(d[0].copy_to_host(), [c_rng.uniform64(key, base + i) for i in range(n)])
    assert_array_equal(d[1].copy_to_host(), np.array([c_rng.uniform32(key, base + i) for i in range(n)],
                                                     np.float32))
    assert_array_equal(d[2].copy_to_host(), np.array([c_rng.mix64(v) for v in z], np.uint64))
    assert_array_equal(d[3].copy_to_host(), np.array([c_rng.stream_key(v) for v in z], np.uint64))
    assert int(c_rng.stream_key(np.uint64(seed % 2**64))) == int(key)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", range(5))
def test_rounding_helpers_match_cpu(dtype, mode):
    v = _values(dtype, 40)
    v = np.concatenate([v, np.array([np.nan, np.inf, -np.inf], dtype)])
    key = _key(99)
    u = np.random.default_rng(2).random(v.size).astype(dtype)
    hi = dtype(200)
    outs = [np.empty(v.size, dtype) for _ in range(5)] + [np.empty(v.size, np.uint8)]
    d = [cuda.to_device(a) for a in outs]
    _launch.launch(_round_kernel, v.size, cuda.to_device(v), mode, key, d[0], d[1], d[2], cuda.to_device(u),
                   d[3], d[4], d[5], hi)
    got = [a.copy_to_host() for a in d]
    cpu = scalar.cpu_helpers()
    with np.errstate(all="ignore"):
        want = [
            np.array([cpu["round_value"](t, mode, key, i) for i, t in enumerate(v)], dtype),
            np.array([cpu["round_half_away"](t) for t in v], dtype),
            np.array([cpu["stochastic_round"](t, w) for t, w in zip(v, u)], dtype),
            np.array([cpu["snap"](t) for t in v], dtype),
            np.array([cpu["round_code"](t, mode, key, i) for i, t in enumerate(v)], dtype),
        ]
    for g, w in zip(got[:5], want):
        assert_array_equal(g, w)
        num = ~np.isnan(w)  # the sign of zero is kept (a GPU's NaN results are canonical)
        assert_array_equal(np.signbit(g[num]), np.signbit(w[num]))
    finite = np.isfinite(v)  # the code of NaN is unspecified
    assert_array_equal(got[5][finite], [cpu["clip_code"](t, hi) for t in v[finite]])


# ----------------------------------------------------------------------------- affine


def _affine_case(dtype, layout, nan):
    rs = np.random.default_rng(3)
    x = _values(dtype, 48).reshape(4, 12)
    if nan:
        x[1, 3] = np.nan
    x[2, 5] = np.inf
    ri = np.arange(4, dtype=np.int64) * 12 + 1000
    if layout == "tensor":
        rg, col_step, G = np.zeros(4, np.int64), 0, 1
    elif layout == "rows":
        rg, col_step, G = np.array([0, 1, 1, 2], np.int64), 0, 3
    else:
        rg, col_step, G = np.zeros(4, np.int64), 1, 12
    scale = rs.uniform(0.3, 2.0, G).astype(dtype)
    inv = (dtype(1) / scale).astype(dtype)
    offset = np.where(rs.random(G) < 0.5, 0, rs.uniform(-3, 3, G)).astype(dtype)
    c0 = rs.integers(0, 200, G).astype(dtype)
    return x, ri, rg, col_step, scale, inv, offset, c0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["tensor", "rows", "columns"])
@pytest.mark.parametrize("mode", range(5))
def test_quantize_dequantize_affine_match_cpu(dtype, layout, mode):
    nan = mode % 2 == 0
    x, ri, rg, col_step, scale, inv, offset, c0 = _affine_case(dtype, layout, nan)
    nan_code = 255 if nan else -1
    hi = 254 if nan else 255
    key = _key(5 + mode)
    want = np.empty(x.shape, np.uint8)
    bad = c_affine.quantize_affine(x, ri, rg, col_step, inv, offset, c0, hi, nan_code, mode, key, want)
    got = np.empty(x.shape, np.uint8)
    args = [_readonly(a) for a in (x, ri, rg)] + [col_step] + [_readonly(a) for a in (inv, offset, c0)]
    assert g_affine.quantize_affine(*args, hi, nan_code, mode, key, got) == bad
    ok = ~np.isinf(x)  # the code of inf is unspecified
    assert_array_equal(got[ok], want[ok])
    dec_want = np.empty(x.shape, dtype)
    c_affine.dequantize_affine(want, rg, col_step, scale, offset, c0, nan_code, dec_want)
    d_out = cuda.device_array(x.shape, dtype)  # device output: stays there
    g_affine.dequantize_affine(cuda.to_device(want), rg, col_step, scale, offset, c0, nan_code, d_out)
    assert_array_equal(d_out.copy_to_host(), dec_want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_minmax_matches_the_cpu_statistics(dtype):
    from nquant import uniform

    x = _values(dtype, 60).reshape(5, 12)
    x[0, 0] = x[3, 7] = np.nan
    for scheme in [nq.Uniform(), nq.Uniform(axis=0), nq.Uniform(axis=1), nq.Uniform(block_size=7)]:
        want = uniform.partial(scheme, x)
        lay = uniform.layout(scheme, x.shape)
        G = want["min"].size
        mins, maxs = np.full(G, np.inf), np.full(G, -np.inf)
        flat = x.reshape(-1)
        n_nan = sum(g_affine.group_minmax(p.view(flat), p.row_group, lay.col_step, mins, maxs)
                    for p in lay.parts)
        assert n_nan == want["n_nan"] == 2
        assert_array_equal(mins, want["min"])
        assert_array_equal(maxs, want["max"])


# ----------------------------------------------------------------------------- sorted codebooks


CODEBOOKS = {
    "nf4": NF4,
    "uniform": uniform_grid(-3.0, 5.0, 9),
    "dense": (1.0 + np.arange(40) * 2.0**-12).astype(np.float32),  # the CPU's binary-search path
    "one": np.array([0.25], np.float32),
    "k256": np.sort(np.random.default_rng(4).standard_normal(256)).astype(np.float32),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("book", list(CODEBOOKS))
def test_quantize_sorted_and_table_match_cpu(dtype, book):
    levels = np.unique(CODEBOOKS[book]).astype(dtype)
    rs = np.random.default_rng(5)
    mids = (levels[:-1].astype(np.float64) + levels[1:]) / 2 if levels.size > 1 else levels
    x = np.concatenate([rs.choice(levels, 8), rs.choice(mids, 8).astype(dtype),
                        np.nextafter(rs.choice(mids, 4).astype(dtype), dtype(np.inf)),
                        rs.uniform(levels[0] - 1, levels[-1] + 1, 12).astype(dtype),
                        np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30], dtype)]).astype(dtype)
    x2 = x[:38].reshape(2, 19)
    ri = np.array([7, 26], np.int64)
    finite_or_inf = ~np.isnan(x2)  # codes of NaN are unspecified
    for mode in range(5):
        key = _key(11)
        want = np.empty(x2.shape, np.uint8)
        bad = c_cb.quantize_sorted(x2, ri, levels, mode, key, want)
        got = np.empty(x2.shape, np.uint8)
        assert g_cb.quantize_sorted(_readonly(x2), ri, levels, mode, key, got) == bad
        assert_array_equal(got[finite_or_inf], want[finite_or_inf], err_msg=f"mode {mode}")
    dec = [np.empty(x2.shape, dtype) for _ in range(2)]
    c_cb.dequantize_table(want, levels, dec[0])
    g_cb.dequantize_table(want, levels, dec[1])
    assert_array_equal(dec[1], dec[0])


# ----------------------------------------------------------------------------- blockwise / NF4


def _blockwise_data(n, seed=6):
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    x[8:16] = 0.0  # an all-zero block (block sizes 4 and 8)
    x[3] = (NF4[9] + NF4[10]) / 2 * np.abs(x[:4]).max()  # near a midpoint
    return x


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("n,block_size", [(37, 4), (64, 8), (41, 6)])
def test_nf4_blockwise_matches_cpu(n, block_size, packed):
    x = _blockwise_data(n)
    nb = -(-n // block_size)
    m = (n + 1) // 2 if packed else n
    res = []
    for mod in (c_bw, g_bw):
        absmax, codes = np.empty(nb, np.float32), np.empty(m, np.uint8)
        mod.absmax_quantize_blockwise(_readonly(x), block_size, NF4, absmax, codes, packed)
        codes2 = np.empty(m, np.uint8)
        mod.quantize_blockwise(x, _readonly(absmax), block_size, NF4, codes2, packed)
        dec32, dec64 = np.empty(n, np.float32), np.empty(n, np.float64)
        mod.dequantize_blockwise(codes, absmax, block_size, NF4, dec32, packed)
        mod.dequantize_blockwise(codes, absmax, block_size, NF4, dec64, packed)
        res.append((absmax, codes, codes2, dec32, dec64))
    for a, b in zip(*res):
        assert_array_equal(b, a)


def test_blockwise_absmax_is_bit_identical_with_nan_and_inf():
    x = _blockwise_data(40)
    x[5] = np.inf
    x[17] = np.nan
    x[18] = -np.inf
    x[33] = -np.nan
    want, got = np.empty(10, np.float32), np.empty(10, np.float32)
    c_bw.blockwise_absmax(x, 4, want)
    g_bw.blockwise_absmax(cuda.to_device(x), 4, got)
    assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_double_quantization_matches_cpu():
    rs = np.random.default_rng(8)
    absmax = np.abs(rs.standard_normal(300)).astype(np.float32) * 3
    absmax[:256][rs.random(256) < 0.1] = 0.0
    absmax[260:] = absmax[1]  # a constant tail block
    for offset in (None, np.float32(1.25)):
        want = c_bw.double_quantize(absmax, offset=offset, block_size=256)
        got = g_bw.double_quantize(_readonly(absmax), offset=offset, block_size=256)
        for a, b in zip(want, got):
            assert_array_equal(b, a)
        d_codes = cuda.to_device(want[0])
        back = g_bw.double_dequantize(d_codes, want[1], want[2], block_size=256)
        assert not isinstance(back, np.ndarray)  # device codes: device result
        assert_array_equal(back.copy_to_host(), c_bw.double_dequantize(*want, block_size=256))
    x = (rs.standard_normal(70) * 0.7).astype(np.float32)
    res = []
    for mod in (c_bw, g_bw):
        a, c = np.empty(3, np.float32), np.empty(70, np.uint8)
        mod.quantize_blockwise_lut8(x, 32, dynamic_map(signed=True), a, c)
        res.append((a, c))
    for a, b in zip(*res):
        assert_array_equal(b, a)


def test_exact_absmax_sum_matches_the_api_statistic():
    from nquant.blockwise import exact_sum_partial

    a = np.abs(np.random.default_rng(9).standard_normal(90)).astype(np.float32)
    a[:3] = [0.0, 1e-40, 3e38]  # zero, subnormal, huge
    assert_array_equal(g_bw.exact_sum_partial(a), exact_sum_partial(a))


# ----------------------------------------------------------------------------- bit packing


@pytest.mark.parametrize("bits", range(1, 9))
def test_bitpack_matches_cpu(bits):
    rs = np.random.default_rng(bits)
    for n in (0, 1, 7, 8, 9, 35):
        codes = rs.integers(0, 1 << bits, n).astype(np.uint8)
        m = (n * bits + 7) // 8
        want, got = np.empty(m, np.uint8), np.empty(m, np.uint8)
        c_bitpack.pack_bits(codes, bits, want)
        g_bitpack.pack_bits(_readonly(codes), bits, got)
        assert_array_equal(got, want)
        back = np.empty(n, np.uint8)
        g_bitpack.unpack_bits(want, bits, n, back)
        assert_array_equal(back, codes)
    codes = rs.integers(0, 1 << bits, (3, 11)).astype(np.uint8)
    m = (11 * bits + 7) // 8
    want, got = np.empty((3, m), np.uint8), np.empty((3, m), np.uint8)
    c_bitpack.pack_rows(codes, bits, want)
    g_bitpack.pack_rows(codes, bits, got)
    assert_array_equal(got, want)
    back = np.empty((3, 11), np.uint8)
    g_bitpack.unpack_rows(want, bits, 11, back)
    assert_array_equal(back, codes)


# ----------------------------------------------------------------------------- nearest-centroid assignment


def _clusters(dtype, n=45, k=5, d=3, seed=10, tie=True):
    rs = np.random.default_rng(seed)
    C = (rs.standard_normal((k, d)) * 4).astype(dtype)
    X = (C[rs.integers(0, k, n)] + rs.standard_normal((n, d)) * 0.5).astype(dtype)
    X[4] = C[2]  # a point on a center
    if tie:
        X[9] = (C[0] + C[1]) / 2  # a near-tie
    return X, C


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("accumulate,shared", [(False, False), (True, True), (True, False)],
                         ids=["labels", "sums-shared-memory", "sums-global-atomics"])
def test_direct_pass_matches_cpu(dtype, accumulate, shared, monkeypatch):
    if not shared:
        monkeypatch.setattr(g_assign, "SHARED_BYTES", 0)
    X, C = _clusters(dtype)
    X[7, 1] = np.nan  # label 0, NaN distance
    want = c_assign.direct_pass(X, C, accumulate=accumulate)
    got = g_assign.direct_pass(_readonly(X), _readonly(C), accumulate=accumulate)
    assert_array_equal(got[0], want[0])
    assert_array_equal(got[1], want[1])
    if accumulate:
        assert_array_equal(got[3], want[3])
        assert_allclose(got[2], want[2], rtol=1e-13, equal_nan=True)
    else:
        assert got[2] is None and got[3] is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_pass_and_assign_block_match_cpu(dtype):
    X, C = _clusters(dtype, d=20, tie=False)
    want = c_assign.gemm_pass(X, C, accumulate=True)
    got = g_assign.gemm_pass(X, C, accumulate=True)
    assert_array_equal(got[0], want[0])  # well separated: no ties within rounding
    assert_allclose(got[1], want[1], rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-3)
    assert_array_equal(got[3], want[3])
    assert_allclose(got[2], want[2], rtol=1e-12)
    xx, cc = c_assign.row_sqnorms(X), c_assign.row_sqnorms(C)
    assert_array_equal(g_assign.row_sqnorms(X), xx)
    if hasattr(c_assign, "row_sqnorms_serial"):
        out = np.empty(len(X), dtype)
        g_assign.row_sqnorms_serial(X, out)
        assert_array_equal(out, xx)
    shift = X.mean(axis=0).astype(dtype)
    if "shift" in c_assign.gemm_pass.__code__.co_varnames:  # the CPU's centred variant
        want_s = c_assign.gemm_pass(X, C - shift, accumulate=True, shift=shift)
        got_s = g_assign.gemm_pass(X, C - shift, accumulate=True, shift=shift)
        assert_array_equal(got_s[0], want_s[0])
        assert_allclose(got_s[1], want_s[1], rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-3)
        assert_array_equal(got_s[3], want_s[3])
        assert_allclose(got_s[2], want_s[2], rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-9)
    G = np.ascontiguousarray(C @ X.T)  # given cross terms: exact
    res = []
    for mod in (c_assign, g_assign):
        labels, d2 = np.empty(len(X), np.int32), np.empty(len(X), dtype)
        sums, counts = np.ones(C.shape), np.ones(len(C), np.int64)
        mod.assign_block(G, cc, X, xx, labels, d2, sums, counts, True)
        res.append((labels, d2, sums, counts))
    for i, (a, b) in enumerate(zip(*res)):
        if i == 2:
            assert_allclose(b, a, rtol=1e-13)
        else:
            assert_array_equal(b, a)


def test_assignment_on_device_arrays_stays_on_device():
    X, C = _clusters(np.float32)
    labels, d2, sums, counts = g_assign.direct_pass(cuda.to_device(X), cuda.to_device(C), accumulate=True)
    assert not isinstance(labels, np.ndarray) and not isinstance(sums, np.ndarray)
    want = c_assign.direct_pass(X, C, accumulate=True)
    assert_array_equal(labels.copy_to_host(), want[0])
    assert_array_equal(counts.copy_to_host(), want[3])


# ----------------------------------------------------------------------------- product quantization


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nbits", [8, 4])
def test_pq_encode_tables_and_search_match_cpu(dtype, nbits):
    rs = np.random.default_rng(12)
    M, ds, n, nq_ = 3, 2, 30, 3
    K = 16 if nbits == 4 else 20
    X = rs.standard_normal((n, M * ds)).astype(dtype)
    C = rs.standard_normal((M, K, ds)).astype(dtype)
    CT = np.ascontiguousarray(C.transpose(0, 2, 1))
    nb = M if nbits == 8 else (M + 1) // 2
    res = []
    for mod in (c_pq, g_pq):
        codes = np.zeros((n, nb), np.uint8)
        sums, counts, d2 = np.zeros((2, M, K, ds)), np.zeros((2, M, K), np.int64), np.zeros(2)
        mod.encode_pass(X, CT, nbits, codes, sums, counts, d2, True, 16)
        res.append((codes, counts, sums, d2))
    assert_array_equal(res[1][0], res[0][0])
    assert_array_equal(res[1][1], res[0][1])
    assert_allclose(res[1][2], res[0][2], rtol=1e-13)
    assert_allclose(res[1][3], res[0][3], rtol=1e-12)
    codes = res[0][0]
    outs = [np.empty((n, M * ds), dtype) for _ in range(2)]
    c_pq.decode(codes, C, nbits, outs[0])
    g_pq.decode(codes, C, nbits, outs[1])
    assert_array_equal(outs[1], outs[0])
    Tm = rs.standard_normal((M, K, 3)).astype(dtype)
    dots = [np.empty((n, 3), dtype) for _ in range(2)]
    c_pq.lut_dot(codes, Tm, nbits, dots[0])
    g_pq.lut_dot(codes, Tm, nbits, dots[1])
    assert_array_equal(dots[1], dots[0])
    Q = rs.standard_normal((nq_, M * ds)).astype(dtype)
    CT64 = CT.astype(np.float64)
    for metric in (0, 1):
        T = [np.empty((nq_, M, K), np.float32) for _ in range(3)]
        c_pq.tables(Q, CT64, metric, T[0])
        g_pq.tables(Q, CT64, metric, T[1])
        g_pq.tables_parallel(Q, CT64, metric, T[2])
        assert_array_equal(T[1], T[0])
        assert_array_equal(T[2], T[0])
        T8 = T[0]
        if nbits == 8:  # byte tables need K = 256
            T8 = np.full((nq_, M, 256), 1e9, np.float32)
            T8[:, :, :K] = T[0]
        sign = -1.0 if metric else 1.0
        BT = [np.empty((nq_, nb, 256), np.float32) for _ in range(2)]
        c_pq.byte_tables(T8, nbits, sign, BT[0])
        g_pq.byte_tables(T8, nbits, sign, BT[1])
        assert_array_equal(BT[1], BT[0])
        k = 4
        D1, I1 = np.empty((nq_, 1, k), np.float32), np.empty((nq_, 1, k), np.int64)
        c_pq.lut_search(BT[0], codes, 1, D1, I1)
        for nsplit in (1, 4):  # the same nsplit: the same lists; any nsplit: the same merged top-k
            pD, pI = np.empty((nq_, nsplit, k), np.float32), np.empty((nq_, nsplit, k), np.int64)
            g_pq.lut_search(BT[0], codes, nsplit, pD, pI)
            if nsplit == 1:
                assert_array_equal(pD, D1)
                assert_array_equal(pI, I1)
            cD, cI = np.empty_like(pD), np.empty_like(pI)
            c_pq.lut_search(BT[0], codes, nsplit, cD, cI)
            assert_array_equal(pD, cD)
            assert_array_equal(pI, cI)
            D, I = np.empty((nq_, k), np.float32), np.empty((nq_, k), np.int64)
            g_pq.merge_topk(pD, pI, D, I)
            Dc, Ic = np.empty_like(D), np.empty_like(I)
            c_pq.merge_topk(D1, I1, Dc, Ic)
            assert_array_equal(D, Dc)
            assert_array_equal(I, Ic)


# ----------------------------------------------------------------------------- approximate QUIVER histogram


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_hist_pass_matches_cpu(dtype, uniform, weighted):
    rs = np.random.default_rng(13)
    x = rs.standard_normal(60).astype(dtype)
    x[:3] = [-1.5, 1.5, 0.0]  # grid points
    x[3:5] = [-3.0, 3.0]  # outside the grid
    m = 9
    edges = np.linspace(-1.5, 1.5, m + 1) if uniform else np.sort(rs.uniform(-1.5, 1.5, m + 1))
    w = rs.uniform(0.0, 2.0, x.size) if weighted else np.empty(0)
    h_cpu, h_gpu = np.full((m, 3), 0.5), np.full((m, 3), 0.5)
    norm_cpu, out_cpu = c_asq.hist_pass(x, w, edges, uniform, h_cpu, 1)
    norm_gpu, out_gpu = g_asq.hist_pass(_readonly(x), w, edges, uniform, h_gpu, 1)
    assert out_gpu == out_cpu
    assert_allclose(norm_gpu, norm_cpu, rtol=1e-13)
    assert_allclose(h_gpu, h_cpu, rtol=1e-12, atol=1e-14)
    if not weighted:  # counts are exact
        assert_array_equal(h_gpu[:, 0], h_cpu[:, 0])


def test_hist_pass_without_shared_memory(monkeypatch):
    monkeypatch.setattr(g_asq, "SHARED_BYTES", 0)
    x = np.random.default_rng(14).standard_normal(50)
    edges = np.linspace(-2, 2, 6)
    h_cpu, h_gpu = np.zeros((5, 3)), cuda.to_device(np.zeros((5, 3)))
    want = c_asq.hist_pass(x, np.empty(0), edges, True, h_cpu, 1)
    got = g_asq.hist_pass(cuda.to_device(x), np.empty(0), edges, True, h_gpu, 1)
    assert got[1] == want[1]
    assert_allclose(h_gpu.copy_to_host(), h_cpu, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- the API on the device


SCHEMES = [
    nq.Uniform(bits=8),
    nq.Uniform(bits=4, symmetric=True, axis=0),
    nq.Uniform(bits=3, axis=-1, rounding="stochastic", seed=3),
    nq.Uniform(bits=5, block_size=16, zero_point="float", rounding="floor"),
    nq.Uniform(bits=8, range=(-2.0, 2.0), rounding="ceil", signed=True),
    nq.Uniform(bits=6, rounding="nearest_away", nan="propagate"),
    nq.Codebook(np.linspace(-3, 3, 11), rounding="stochastic", seed=1),
    nq.Codebook(NF4),
    nq.NF4(block_size=8),
    nq.NF4(block_size=4, double_quant=True),
]


def _same_quantized(a, b):
    assert (a.shape, np.dtype(a.dtype), a.bits, a.scheme) == (b.shape, np.dtype(b.dtype), b.bits, b.scheme)
    assert_array_equal(b.codes, a.codes)
    assert list(b.side) == list(a.side)
    for k in a.side:
        assert_array_equal(b.side[k], a.side[k])


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.to_json()[:60])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_quantize_device_cuda_equals_cpu(scheme, dtype):
    x = (np.random.default_rng(15).standard_normal((6, 10)) * 3).astype(dtype)
    if getattr(scheme, "nan", "raise") == "propagate":
        x[2, 2] = np.nan
    q_cpu = nq.quantize(x, scheme)
    q_gpu = nq.quantize(_readonly(x), scheme, device="cuda")
    assert isinstance(q_gpu.codes, np.ndarray)  # a host input gives host results
    _same_quantized(q_cpu, q_gpu)
    assert_array_equal(nq.dequantize(q_gpu), nq.dequantize(q_cpu))


@pytest.mark.parametrize("scheme", [SCHEMES[0], SCHEMES[2], SCHEMES[6], SCHEMES[9]], ids=lambda s: s.type)
def test_device_input_keeps_results_on_the_device(scheme):
    x = (np.random.default_rng(16).standard_normal((5, 12)) * 2).astype(np.float32)
    q_cpu = nq.quantize(x, scheme)
    q = nq.quantize(cuda.to_device(x), scheme)  # selected by the input, device="cpu" by default
    assert _launch.is_device(q.codes)
    host = {k: (v.copy_to_host() if _launch.is_device(v) else v) for k, v in q.side.items()}
    assert_array_equal(q.codes.copy_to_host(), q_cpu.codes)
    for k in q_cpu.side:
        assert_array_equal(host[k], q_cpu.side[k])
    if scheme.type == "blockwise":
        assert all(_launch.is_device(q.side[k]) for k in ("absmax_codes", "absmax2"))
    x_hat = nq.dequantize(q)
    assert _launch.is_device(x_hat) and tuple(x_hat.shape) == x.shape
    assert_array_equal(x_hat.copy_to_host(), nq.dequantize(q_cpu))
    out = cuda.device_array(x.shape, np.float64)
    assert nq.dequantize(q, dtype=np.float64, out=out) is out
    assert_array_equal(out.copy_to_host(), nq.dequantize(q_cpu, dtype=np.float64))
    host_out = np.empty(x.shape, np.float32)
    nq.dequantize(q, out=host_out)
    assert_array_equal(host_out, nq.dequantize(q_cpu))


@pytest.mark.parametrize("scheme", [nq.Uniform(bits=3), nq.Uniform(bits=2, zero_point="float", rounding="ceil"),
                                    nq.NF4(block_size=2, double_quant=True), nq.NF4(block_size=4)],
                         ids=lambda s: s.to_json()[:60])
@pytest.mark.parametrize("dtype, top", [(np.float32, 3.4e38), (np.float16, 65504)])
def test_device_decodes_finite_near_the_limit_as_the_cpu(scheme, dtype, top):
    x = np.array([-top, top, 0, top / 3, -top * 0.9, 1, top * 0.99, -1], dtype)
    q_cpu = nq.quantize(x, scheme)
    q = nq.quantize(cuda.to_device(x), scheme)
    host = {k: (v.copy_to_host() if _launch.is_device(v) else v) for k, v in q.side.items()}
    assert_array_equal(q.codes.copy_to_host(), q_cpu.codes)
    for k in q_cpu.side:
        assert_array_equal(host[k], q_cpu.side[k])
    x_hat = nq.dequantize(q).copy_to_host()
    assert x_hat.dtype == dtype and np.isfinite(x_hat).all()
    assert_array_equal(x_hat, nq.dequantize(q_cpu))


def test_device_refuses_levels_beyond_unit_times_a_huge_absmax():
    scheme = nq.Blockwise(codebook=(-2.0, 0.0, 2.0), block_size=2)
    x = np.float32([3e38, 1, -2, 0.5])
    with pytest.raises(InputError, match="exceeds the float32 range"):
        nq.quantize(x, scheme)
    with pytest.raises(InputError, match="exceeds the float32 range"):
        nq.quantize(cuda.to_device(x), scheme)


@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (1,), (7,), (2, 3, 5)])
def test_quantize_device_cuda_odd_shapes(shape):
    x = np.random.default_rng(17).standard_normal(shape).astype(np.float32)
    for scheme in (nq.Uniform(bits=4), nq.NF4(block_size=4)):
        _same_quantized(nq.quantize(x, scheme), nq.quantize(x, scheme, device="cuda"))


def test_device_errors_and_refusals():
    x = np.array([1.0, np.nan, 2.0], np.float32)
    with pytest.raises(InputError, match="1 NaN value"):
        nq.quantize(x, nq.Uniform(), device="cuda")
    with pytest.raises(InputError, match="infinite values"):
        nq.quantize(np.array([1.0, -np.inf]), nq.Uniform(nan="propagate"), device="cuda")
    with pytest.raises(InputError, match="NaN or infinite"):
        nq.quantize(x, nq.NF4(block_size=2), device="cuda")
    with pytest.raises(InputError, match="codebook needs finite"):
        nq.quantize(np.array([1.0, np.inf]), nq.Codebook([0.0, 1.0]), device="cuda")
    with pytest.raises(InputError, match="dtype=int64"):
        nq.quantize(cuda.to_device(np.arange(3)), nq.Uniform())
    with pytest.raises(DeviceError, match="range='percentile' is not available with device='cuda'"):
        nq.quantize(np.ones(4), nq.Uniform(range="percentile"), device="cuda")
    with pytest.raises(DeviceError, match="scheme type='asq' has no CUDA implementation"):
        nq.quantize(np.ones(4), nq.ASQ(bits=2), device="cuda")
    with pytest.raises(SchemeError):
        nq.quantize(np.ones(4), "int8", device="cuda")
    with pytest.raises(DeviceError, match="device='gpu' is not available"):
        nq.quantize(np.ones(4), nq.Uniform(), device="gpu")
    da = pytest.importorskip("dask.array")
    with pytest.raises(DeviceError, match="Dask array is not supported"):
        nq.quantize(da.ones(8, chunks=4), nq.Uniform(), device="cuda")


def test_device_error_without_gpu_or_numba_cuda(monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(cuda, "is_available", lambda: False)
        with pytest.raises(DeviceError, match=r"numba.cuda.is_available\(\) is False"):
            nq.quantize(np.ones(4), nq.Uniform(), device="cuda")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "numba.cuda", None)  # as if numba-cuda were not installed
        with pytest.raises(DeviceError, match="needs numba-cuda"):
            nq.quantize(np.ones(4), nq.Uniform(), device="cuda")
    assert nq.quantize(np.ones(4), nq.Uniform()).shape == (4,)  # the CPU never needs it


def test_resolve_device():
    class CAI:  # anything exposing the CUDA array interface (CuPy, torch.cuda) selects CUDA
        __cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "data": (0, False), "version": 3}

    assert selection.resolve_device(np.ones(3)) == "cpu"
    assert selection.resolve_device(np.ones(3), "cuda") == "cuda"
    assert selection.resolve_device(cuda.to_device(np.ones(3))) == "cuda"
    assert selection.resolve_device(CAI()) == "cuda"
    da = pytest.importorskip("dask.array")
    assert selection.resolve_device(da.ones(4, chunks=2)) == "cpu"
    dask_of_cupy = type("Array", (), {"__module__": "dask.array.core", "_meta": CAI()})()
    assert selection.is_cuda_array(dask_of_cupy)
    with pytest.raises(DeviceError, match="expected 'cpu' or 'cuda'"):
        selection.resolve_device(np.ones(3), "tpu")


def test_import_nquant_never_imports_cuda():
    code = ("import sys, numpy, nquant as nq\n"
            "nq.dequantize(nq.quantize(numpy.ones(5), nq.NF4(block_size=4)))\n"
            "prefixes = ('numba.cuda', 'numba_cuda', 'nquant.cuda')\n"
            "bad = sorted(m for m in sys.modules if m.startswith(prefixes))\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not _launch.SIMULATOR, reason="the refusal is for the simulator")
def test_benchmark_refuses_the_simulator_and_runs_as_a_smoke_test():
    script = str(ROOT / "benchmarks" / "compare_cuda.py")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    env.pop("NQUANT_CUDA_BENCH_SMOKE", None)
    r = subprocess.run([sys.executable, script], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "simulator" in r.stderr and "NUMBA_ENABLE_CUDASIM=0" in r.stderr
    env["NQUANT_CUDA_BENCH_SMOKE"] = "1"
    r = subprocess.run([sys.executable, "-W", "error", script, "--gib", "1e-6", "--repeat", "1", "--k", "3",
                        "--dim", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "copy bandwidth" in r.stdout and "NF4 decode" in r.stdout and "k-means assignment" in r.stdout
