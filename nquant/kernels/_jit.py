"""The one place where Numba compile options live.

Every kernel in :mod:`nquant.kernels` is decorated with :func:`jit` or
:func:`jit_parallel` from here, never with ``numba.njit`` directly (a test
enforces it).  Options:

- ``cache``: on unless the environment variable ``NQUANT_NUMBA_CACHE=0``.
- ``nogil``: always, so Dask's threaded scheduler runs chunk tasks in parallel.
- ``fastmath``: always off; NaN and infinity handling is part of the spec.
- ``error_model="numpy"``: ``x / 0`` gives inf/nan as NumPy does.
- ``parallel``: only in :func:`jit_parallel`.
"""

import os

import numba

CACHE = os.environ.get("NQUANT_NUMBA_CACHE", "1") != "0"

OPTIONS = {
    "cache": CACHE,
    "nogil": True,
    "fastmath": False,
    "error_model": "numpy",
}


def jit(*args, **overrides):
    """``numba.njit`` with nquant's options (serial kernels and inline helpers)."""
    options = {**OPTIONS, **overrides}
    if args and callable(args[0]):
        return numba.njit(**options)(args[0])
    return numba.njit(*args, **options)


def jit_parallel(*args, **overrides):
    """``numba.njit(parallel=True)`` with nquant's options (``prange`` kernels)."""
    return jit(*args, parallel=True, **overrides)


prange = numba.prange
