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
- ``parallel``: only in :func:`jit_parallel`, and only for explicit ``prange``
  loops (:data:`PARALLEL`): Numba would otherwise turn every NumPy call on an
  array in the kernel (``np.zeros``, ``a.sum()``, ``a[:] = v``) into a parallel
  loop of its own, each compiled as one more gufunc, for arrays too small to
  gain from threads.

:func:`over_rows` runs a serial kernel on blocks of rows in a few threads: a
kernel whose parallel loop is that simple compiles several times faster
without ``parallel=True`` (no parfor pass, no gufunc), and runs as fast.
"""

import hashlib
import os
import pathlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
from numba.core.caching import FunctionCache
from numba.core.cpu import ParallelOptions

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


PARALLEL = ParallelOptions({"prange": True, "fusion": True, "comprehension": False, "reduction": False,
                            "inplace_binop": False, "setitem": False, "numpy": False, "stencil": False})
"""Numba's ``parallel`` options for :func:`jit_parallel`: explicit ``prange`` loops only (an
options object, not a dict: Numba empties a dict as it reads it)."""


def jit_parallel(*args, **overrides):
    """``numba.njit(parallel=PARALLEL)`` with nquant's options (``prange`` kernels)."""
    return jit(*args, parallel=PARALLEL, **overrides)


prange = numba.prange

MIN_BLOCK = 1 << 16
"""Fewest values per block of :func:`over_rows` (smaller calls stay in the calling thread)."""

BLOCKS_PER_THREAD = 4
"""Blocks per thread in :func:`over_rows`: threads take the next block when done with one, so a
thread slowed down (by another process on its core) does less of the work."""

_POOL = {"pid": None, "executor": None}
_POOL_LOCK = threading.Lock()


def _executor():
    # one pool per process (a forked child gets a new one: the parent's threads are not copied)
    with _POOL_LOCK:
        if _POOL["pid"] != os.getpid():
            _POOL["executor"] = ThreadPoolExecutor(max(1, numba.config.NUMBA_NUM_THREADS - 1),
                                                   thread_name_prefix="nquant-rows")
            _POOL["pid"] = os.getpid()
        return _POOL["executor"]


def over_rows(kernel, n_rows, row_length, *args):
    """Run ``kernel(r0, r1, *args)`` on blocks of rows ``[r0, r1)`` covering ``[0, n_rows)``.

    The calling thread and up to ``numba.get_num_threads() - 1`` threads of a shared pool
    (the calling thread's Numba thread count, which ``nquant._threads`` sets inside Dask
    tasks) take the blocks in turn, :data:`BLOCKS_PER_THREAD` per thread, none under
    :data:`MIN_BLOCK` values; ``kernel`` must release the GIL (every kernel here does:
    ``nogil``).  A kernel whose parallel loop is this simple compiles several times faster
    than with ``parallel=True`` (no parfor pass, no gufunc) and runs as fast.

    Parameters
    ----------
    kernel : compiled function ``(r0, r1, *args) -> value``
    n_rows, row_length : int, the rows and their length (values per row)
    *args : the kernel's other arguments

    Returns
    -------
    list : the kernel's results, block by block in row order
    """
    n_threads = 1
    if numba.config.NUMBA_NUM_THREADS > 1:
        n_threads = min(numba.get_num_threads(), n_rows, max(1, n_rows * row_length // MIN_BLOCK))
    if n_threads <= 1:
        return [kernel(0, n_rows, *args)]
    n = min(n_rows, n_threads * BLOCKS_PER_THREAD, max(1, n_rows * row_length // MIN_BLOCK))
    bounds = [n_rows * k // n for k in range(n + 1)]
    results = [None] * n
    blocks = iter(range(n))  # next() on it is atomic: each block is taken once

    def drain():
        for k in blocks:
            results[k] = kernel(bounds[k], bounds[k + 1], *args)

    pool = _executor()
    futures = [pool.submit(drain) for _ in range(n_threads - 1)]
    try:
        drain()
    finally:  # never return (or raise) while another block still runs
        for f in futures:
            f.exception()
    for f in futures:
        f.result()
    return results
