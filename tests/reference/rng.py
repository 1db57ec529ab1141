"""Slow NumPy references of the counter-based stream (``nquant.kernels.rng``).

SplitMix64: ``key = mix64(seed mod 2**64)``, the draw of element ``i`` is
``mix64(key + (i + 1) * GAMMA)``, its top 53 bits (float64) or 24 bits (float32) scaled to
[0, 1).  Two independent forms: vectorised uint64 NumPy (``uniform_draws``) and Python
integers (``uniform_int``).
"""

import numpy as np

MASK64 = (1 << 64) - 1
GAMMA = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def mix64(z):
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic, no warnings on arrays)."""
    z = np.atleast_1d(np.asarray(z, dtype=np.uint64)).copy()
    z = (z ^ (z >> np.uint64(30))) * M1
    z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed):
    """``mix64(seed mod 2**64)`` as a Python int."""
    return int(mix64(np.array([int(seed) % (1 << 64)], dtype=np.uint64))[0])


def stream_u64(seed, index):
    """``mix64(key + (index + 1) * GAMMA)`` for an int array of global flat indices."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    key = np.full(index.shape, stream_key(seed), dtype=np.uint64)
    return mix64(key + (index.astype(np.uint64) + np.uint64(1)) * GAMMA)


def uniform_draws(seed, index, dtype):
    """Uniform draws in [0, 1): 53 bits for float64, 24 bits for float32."""
    u = stream_u64(seed, index)
    if np.dtype(dtype) == np.float64:
        return (u >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return (u >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)


def mix64_int(z):
    """SplitMix64 finaliser on a Python integer."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * int(M1)) & MASK64
    z = ((z ^ (z >> 27)) * int(M2)) & MASK64
    return z ^ (z >> 31)


def uniform_int(seed, index, dtype):
    """The stream's uniform draw for element ``index``, computed with Python integers."""
    key = mix64_int(seed & MASK64)
    h = mix64_int(key + (index + 1) * int(GAMMA))
    if np.dtype(dtype) == np.float32:
        return np.float32((h >> 40) / 2.0**24)
    return np.float64((h >> 11) / 2.0**53)
