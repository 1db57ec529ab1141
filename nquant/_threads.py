"""Thread policy: Numba threads inside Dask tasks, and BLAS threads.

Dask runs several tasks at once (the threaded scheduler's pool has one thread
per core; a ``distributed`` worker runs ``nthreads`` tasks), and each task's
parallel Numba kernel would start its own ``NUMBA_NUM_THREADS`` threads: on a
2-core machine, 2 x 2 threads fight for 2 cores.  Inside a task, nquant gives
each task ``max(1, NUMBA_NUM_THREADS // concurrent tasks)`` Numba threads
(``numba.set_num_threads`` is per calling thread, so this touches only the
task's thread).  Outside Dask (or with the synchronous scheduler, which runs
tasks in the calling thread) kernels use every Numba thread.

``NQUANT_TASK_THREADS=<n>`` in the environment overrides the per-task count.

BLAS (through ``threadpoolctl``): code that runs its GEMMs from its own threads (k-means,
product quantization) holds :func:`single_blas`, which limits BLAS to one thread for the whole
process while any caller holds it (the limit is set by the first holder and restored by the last,
so overlapping Dask tasks never restore each other's limit halfway), and spreads the GEMMs over
:func:`task_threads` threads itself; BLAS' own threads and Numba's then never compete for the
cores.  :func:`blas_limit` sets another count for a block.
"""

import contextlib
import functools
import os
import threading

import numba
from threadpoolctl import ThreadpoolController


def _concurrent_tasks():
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        pass
    import dask

    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def task_threads():
    """Numba threads a kernel called from the current thread should use."""
    override = os.environ.get("NQUANT_TASK_THREADS")
    if override:
        return max(1, min(int(override), numba.config.NUMBA_NUM_THREADS))
    if threading.current_thread() is threading.main_thread():
        return numba.config.NUMBA_NUM_THREADS
    return max(1, numba.config.NUMBA_NUM_THREADS // _concurrent_tasks())


@contextlib.contextmanager
def limited():
    """Context in which parallel kernels use :func:`task_threads` threads."""
    n = task_threads()
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(old)


def in_task(func):
    """Decorator for Dask task functions: run ``func`` under :func:`limited`."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with limited():
            return func(*args, **kwargs)

    return wrapper


_BLAS_LOCK = threading.Lock()
_BLAS = {"controller": None, "holders": 0, "limiter": None}


def _controller():
    # built on first use: it lists the BLAS libraries loaded by then (NumPy's, at the latest)
    if _BLAS["controller"] is None:
        _BLAS["controller"] = ThreadpoolController()
    return _BLAS["controller"]


def blas_limit(n):
    """Context limiting BLAS to ``n`` threads (process-wide) for the block."""
    with _BLAS_LOCK:
        controller = _controller()
    return controller.limit(limits=int(n), user_api="blas")


@contextlib.contextmanager
def single_blas():
    """Context in which BLAS runs one thread (process-wide) while any thread holds it."""
    with _BLAS_LOCK:
        if _BLAS["holders"] == 0:
            _BLAS["limiter"] = _controller().limit(limits=1, user_api="blas")
        _BLAS["holders"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS["holders"] -= 1
            if _BLAS["holders"] == 0:
                _BLAS["limiter"].restore_original_limits()
                _BLAS["limiter"] = None
