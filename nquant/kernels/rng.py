"""Counter-based random stream: a uniform draw from ``(seed, global element index)``.

The draw for element ``i`` depends only on the seed and ``i`` (its flat index in
the whole array, C order), never on chunking, scheduling or thread count, so a
Dask task recomputed on another worker gives the same bytes.

The mixer is SplitMix64's finaliser (Steele, Lea and Flood, 2014):
``u64 = mix64(key + (i + 1) * GAMMA)`` with ``key = mix64(seed)``.

The functions are written once in :mod:`nquant.kernels.scalar` and compiled here
for the CPU; ``nquant.cuda.rng`` compiles the same source for CUDA, so both
targets draw bit-identical streams.
"""

import functools

import numpy as np

from nquant.kernels import scalar
from nquant.kernels.scalar import GAMMA, cpu_helpers  # noqa: F401  (re-exported)

_cpu = cpu_helpers()

mix64 = _cpu["mix64"]
stream_key = _cpu["stream_key"]
uniform64 = _cpu["uniform64"]
uniform32 = _cpu["uniform32"]


def seed_key(seed):
    """The stream key of an integer ``seed`` (taken modulo 2**64), as a ``np.uint64``.

    The same value as the compiled ``stream_key(np.uint64(seed % 2**64))``, computed by
    the plain-Python source on NumPy scalars: callers outside compiled code need no
    compilation for it.
    """
    return _seed_key(int(seed) % (1 << 64))


@functools.lru_cache(maxsize=64)  # a few seeds recur on every call (costs more than a small chunk)
def _seed_key(seed):
    with np.errstate(over="ignore"):  # uint64 products wrap, as in compiled code
        return np.uint64(scalar.stream_key(np.uint64(seed)))
