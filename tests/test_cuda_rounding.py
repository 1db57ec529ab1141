"""CUDA twin of ``nquant.kernels.rounding``: every rounding mode and the encoder's helpers, bit for bit."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from tests.cuda_common import small_launches  # noqa: F401  (autouse fixture)
from tests.cuda_common import DTYPES, adversarial_values, cuda, key_of  # skips this module without numba-cuda

pytestmark = pytest.mark.cuda

from nquant.cuda import _device as g_device  # noqa: E402
from nquant.cuda import _launch  # noqa: E402
from nquant.cuda import rounding as g_rounding  # noqa: E402
from nquant.kernels import scalar  # noqa: E402


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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", range(5))
def test_rounding_helpers_match_cpu(dtype, mode):
    v = adversarial_values(dtype, 40)
    v = np.concatenate([v, np.array([np.nan, np.inf, -np.inf], dtype)])
    key = key_of(99)
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
