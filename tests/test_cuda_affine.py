"""CUDA twin of ``nquant.kernels.affine``: uniform affine codes, decoding and group statistics."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from tests.cuda_common import small_launches  # noqa: F401  (autouse fixture)
from tests.cuda_common import DTYPES, adversarial_values, cuda, key_of  # skips this module without numba-cuda
from tests.helpers import readonly

pytestmark = pytest.mark.cuda

import nquant as nq  # noqa: E402
from nquant.cuda import affine as g_affine  # noqa: E402
from nquant.kernels import affine as c_affine  # noqa: E402


def _affine_case(dtype, layout, nan):
    rs = np.random.default_rng(3)
    x = adversarial_values(dtype, 48).reshape(4, 12)
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
    key = key_of(5 + mode)
    want = np.empty(x.shape, np.uint8)
    bad = c_affine.quantize_affine(x, ri, rg, col_step, inv, offset, c0, hi, nan_code, mode, key, want)
    got = np.empty(x.shape, np.uint8)
    args = [readonly(a) for a in (x, ri, rg)] + [col_step] + [readonly(a) for a in (inv, offset, c0)]
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
    from nquant.families import uniform

    x = adversarial_values(dtype, 60).reshape(5, 12)
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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", [0, 4])
def test_wide_codes_match_cpu(dtype, mode):
    """9..16-bit codes (uint16): the twin encodes and decodes them as the CPU kernel does."""
    x, ri, rg, col_step, scale, inv, offset, c0 = _affine_case(dtype, "rows", True)
    scale = (scale / 1000).astype(dtype)
    inv = (dtype(1) / scale).astype(dtype)
    c0 = (c0 * 100).astype(dtype)
    hi, nan_code = 65534, 65535
    key = key_of(9)
    want = np.empty(x.shape, np.uint16)
    bad = c_affine.quantize_affine(x, ri, rg, col_step, inv, offset, c0, hi, nan_code, mode, key, want)
    got = np.empty(x.shape, np.uint16)
    assert g_affine.quantize_affine(x, ri, rg, col_step, inv, offset, c0, hi, nan_code, mode, key, got) == bad
    ok = ~np.isinf(x)
    assert_array_equal(got[ok], want[ok])
    assert want[ok].max() > 255
    dec_want = np.empty(x.shape, dtype)
    c_affine.dequantize_affine(want, rg, col_step, scale, offset, c0, nan_code, dec_want)
    dec = np.empty(x.shape, dtype)
    g_affine.dequantize_affine(want, rg, col_step, scale, offset, c0, nan_code, dec)
    assert_array_equal(dec, dec_want)
