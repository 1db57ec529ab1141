"""CUDA twin of ``nquant.kernels.bitpack``: MSB-first packing of 1- to 8-bit codes."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from tests.cuda_common import small_launches  # noqa: F401  (autouse fixture; skips this module without numba-cuda)
from tests.helpers import readonly

pytestmark = pytest.mark.cuda

from nquant.cuda import bitpack as g_bitpack  # noqa: E402
from nquant.kernels import bitpack as c_bitpack  # noqa: E402


@pytest.mark.parametrize("bits", range(1, 9))
def test_bitpack_matches_cpu(bits):
    rs = np.random.default_rng(bits)
    for n in (0, 1, 7, 8, 9, 35):
        codes = rs.integers(0, 1 << bits, n).astype(np.uint8)
        m = (n * bits + 7) // 8
        want, got = np.empty(m, np.uint8), np.empty(m, np.uint8)
        c_bitpack.pack_bits(codes, bits, want)
        g_bitpack.pack_bits(readonly(codes), bits, got)
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
