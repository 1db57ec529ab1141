"""CUDA twin of ``nquant.kernels.blockwise``: NF4 blocks, double quantization, exact absmax sums."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from tests.cuda_common import small_launches  # noqa: F401  (autouse fixture)
from tests.cuda_common import NF4, cuda  # skips this module without numba-cuda
from tests.helpers import readonly

pytestmark = pytest.mark.cuda

from nquant.cuda import blockwise as g_bw  # noqa: E402
from nquant.codebooks.grids import dynamic_map  # noqa: E402
from nquant.kernels import blockwise as c_bw  # noqa: E402


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
        mod.absmax_quantize_blockwise(readonly(x), block_size, NF4, absmax, codes, packed)
        codes2 = np.empty(m, np.uint8)
        mod.quantize_blockwise(x, readonly(absmax), block_size, NF4, codes2, packed)
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
        got = g_bw.double_quantize(readonly(absmax), offset=offset, block_size=256)
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
    from nquant.kernels.blockwise import exact_sum_partial

    a = np.abs(np.random.default_rng(9).standard_normal(90)).astype(np.float32)
    a[:3] = [0.0, 1e-40, 3e38]  # zero, subnormal, huge
    assert_array_equal(g_bw.exact_sum_partial(a), exact_sum_partial(a))
