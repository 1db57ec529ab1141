"""The counter-based stream (``nquant.kernels.rng``) against ``tests/reference/rng.py``."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from nquant.kernels import rng
from tests.reference import rng as rng_ref


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -1, -(2**63)])
def test_stream_key_and_draws_match_splitmix_reference(seed):
    s = np.uint64(seed % 2**64)
    key = np.uint64(rng.stream_key(s))  # numba boxes a uint64 result as a Python int
    assert int(key) == rng_ref.stream_key(seed)
    idx = np.array([0, 1, 2, 3, 1000, 2**31, 2**40 + 7, 2**62])
    d64 = np.array([rng.uniform64(key, int(i)) for i in idx])
    d32 = np.array([rng.uniform32(key, int(i)) for i in idx], dtype=np.float32)
    assert_array_equal(d64, rng_ref.uniform_draws(seed, idx, np.float64))
    assert_array_equal(d32, rng_ref.uniform_draws(seed, idx, np.float32))
    assert ((d64 >= 0) & (d64 < 1)).all() and ((d32 >= 0) & (d32 < 1)).all()


def test_splitmix_known_value():
    # SplitMix64 with state 0: the first output is mix64(GAMMA) = 0xE220A8397B1DCDAF
    assert int(rng_ref.mix64(rng_ref.GAMMA)[0]) == 0xE220A8397B1DCDAF
    assert int(rng.mix64(np.uint64(0x9E3779B97F4A7C15))) == 0xE220A8397B1DCDAF
    # and the stream of seed s is SplitMix64 seeded with mix64(s): draw i is output i + 1
    key = rng_ref.stream_key(7)
    assert int(rng_ref.stream_u64(7, [0])[0]) == int(rng_ref.mix64(np.uint64(key) + rng_ref.GAMMA)[0])
