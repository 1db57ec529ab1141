"""Counter-based random stream: a uniform draw from ``(seed, global element index)``.

The draw for element ``i`` depends only on the seed and ``i`` (its flat index in
the whole array, C order), never on chunking, scheduling or thread count, so a
Dask task recomputed on another worker gives the same bytes.

The mixer is SplitMix64's finaliser (Steele, Lea and Flood, 2014):
``u64 = mix64(key + (i + 1) * GAMMA)`` with ``key = mix64(seed)``.
"""

import numpy as np

from nquant.kernels._jit import jit

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ONE = np.uint64(1)


@jit
def mix64(z):
    """SplitMix64 finaliser of a uint64 (bijective, full avalanche)."""
    z = np.uint64(z)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@jit
def stream_key(seed):
    """The per-seed key of the stream (``seed`` any int64)."""
    return mix64(np.uint64(seed))


@jit
def uniform64(key, index):
    """Uniform float64 in [0, 1) with 53 random bits for element ``index`` (int64 >= 0)."""
    h = mix64(key + (np.uint64(index) + _ONE) * GAMMA)
    return np.float64(h >> np.uint64(11)) * 1.1102230246251565e-16


@jit
def uniform32(key, index):
    """Uniform float32 in [0, 1) with 24 random bits (same hash as :func:`uniform64`)."""
    h = mix64(key + (np.uint64(index) + _ONE) * GAMMA)
    return np.float32(h >> np.uint64(40)) * np.float32(5.9604645e-08)
