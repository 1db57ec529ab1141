"""The one place where Numba compile options live.

Every kernel in :mod:`nquant.kernels` is decorated with :func:`jit` or
:func:`jit_parallel` from here, never with ``numba.njit`` directly (a test
enforces it).  Options:

- ``cache``: on unless the environment variable ``NQUANT_NUMBA_CACHE=0``.  A cached
  kernel holds the machine code of the helpers it calls from other modules, and
  Numba checks only the stamp of the kernel's own file: so the cache key of every
  kernel also holds a hash of all of ``nquant/kernels`` (:class:`KernelCache`).
- ``nogil``: always, so Dask's threaded scheduler runs chunk tasks in parallel.
- ``fastmath``: always off; NaN and infinity handling is part of the spec.
- ``error_model="numpy"``: ``x / 0`` gives inf/nan as NumPy does.
- ``parallel``: only in :func:`jit_parallel`.
"""

import hashlib
import os
import pathlib

import numba
from numba.core.caching import FunctionCache

CACHE = os.environ.get("NQUANT_NUMBA_CACHE", "1") != "0"


def sources_hash(folder=pathlib.Path(__file__).parent):
    """SHA-256 (hex) of the names and contents of the ``.py`` files in ``folder``."""
    h = hashlib.sha256()
    for path in sorted(pathlib.Path(folder).glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


SOURCES_HASH = sources_hash()


class KernelCache(FunctionCache):
    """Numba's on-disk function cache, keyed also by :data:`SOURCES_HASH`."""

    def _index_key(self, sig, codegen):
        return (*super()._index_key(sig, codegen), SOURCES_HASH)


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
        return _keyed(numba.njit(**options)(args[0]))
    decorate = numba.njit(*args, **options)
    return lambda f: _keyed(decorate(f))


def _keyed(dispatcher):
    """``dispatcher`` with a :class:`KernelCache` in place of Numba's cache (when caching)."""
    if dispatcher._cache.__class__ is FunctionCache:
        dispatcher._cache = KernelCache(dispatcher.py_func)
    return dispatcher


def jit_parallel(*args, **overrides):
    """``numba.njit(parallel=True)`` with nquant's options (``prange`` kernels)."""
    return jit(*args, parallel=True, **overrides)


prange = numba.prange
