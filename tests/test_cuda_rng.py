"""CUDA twin of ``nquant.kernels.rng`` (and the scalar helpers both targets compile from one source).

The counter-based stream's draws, mix and key on the device equal the CPU's bit for bit.
"""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from tests.cuda_common import small_launches  # noqa: F401  (autouse fixture)
from tests.cuda_common import cuda, key_of  # skips this module without numba-cuda

pytestmark = pytest.mark.cuda

from nquant.cuda import _device as g_device  # noqa: E402
from nquant.cuda import _launch  # noqa: E402
from nquant.cuda import rng as g_rng  # noqa: E402
from nquant.kernels import affine as c_affine  # noqa: E402
from nquant.kernels import rng as c_rng  # noqa: E402
from nquant.kernels import rounding as c_rounding  # noqa: E402
from nquant.kernels import scalar  # noqa: E402


@_launch.kernel
def _draws_kernel(key, base, z, out64, out32, mixed, keys):
    i = cuda.grid(1)
    while i < out64.shape[0]:
        out64[i] = g_rng.uniform64(key, base + i)
        out32[i] = g_rng.uniform32(key, base + i)
        mixed[i] = g_rng.mix64(z[i])
        keys[i] = g_rng.stream_key(z[i])
        i += cuda.gridsize(1)


def test_scalar_helpers_are_one_source_for_both_targets():
    cpu = scalar.cpu_helpers()
    assert set(cpu) == set(scalar.HELPERS)
    for name in scalar.HELPERS:
        assert cpu[name].py_func.__code__ is getattr(scalar, name).__code__
        assert getattr(g_device, name).py_func.__code__ is getattr(scalar, name).__code__
    assert c_rng.uniform32 is cpu["uniform32"] and c_rounding.round_value is cpu["round_value"]
    assert c_affine.snap is cpu["snap"] and c_affine.clip_code is cpu["clip_code"]


@pytest.mark.parametrize("seed", [0, 7, 2**63 + 5, -1])
def test_stream_draws_and_hash_match_cpu(seed):
    key = key_of(seed)
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
