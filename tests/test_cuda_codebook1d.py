"""CUDA twin of ``nquant.kernels.codebook1d``: sorted-codebook search and table decoding."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from tests.cuda_common import small_launches  # noqa: F401  (autouse fixture)
from tests.cuda_common import DTYPES, NF4, key_of  # skips this module without numba-cuda
from tests.helpers import readonly

pytestmark = pytest.mark.cuda

from nquant.cuda import codebook1d as g_cb  # noqa: E402
from nquant.codebooks.grids import uniform_grid  # noqa: E402
from nquant.kernels import codebook1d as c_cb  # noqa: E402


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
        key = key_of(11)
        want = np.empty(x2.shape, np.uint8)
        bad = c_cb.quantize_sorted(x2, ri, levels, mode, key, want)
        got = np.empty(x2.shape, np.uint8)
        assert g_cb.quantize_sorted(readonly(x2), ri, levels, mode, key, got) == bad
        assert_array_equal(got[finite_or_inf], want[finite_or_inf], err_msg=f"mode {mode}")
    dec = [np.empty(x2.shape, dtype) for _ in range(2)]
    c_cb.dequantize_table(want, levels, dec[0])
    g_cb.dequantize_table(want, levels, dec[1])
    assert_array_equal(dec[1], dec[0])
