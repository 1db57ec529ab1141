"""Thread policy: Numba threads inside Dask tasks.

Dask runs several tasks at once (the threaded scheduler's pool has one thread
per core; a ``distributed`` worker runs ``nthreads`` tasks), and each task's
parallel Numba kernel would start its own ``NUMBA_NUM_THREADS`` threads: on a
2-core machine, 2 x 2 threads fight for 2 cores.  Inside a task, nquant gives
each task ``max(1, NUMBA_NUM_THREADS // concurrent tasks)`` Numba threads
(``numba.set_num_threads`` is per calling thread, so this touches only the
task's thread).  Outside Dask (or with the synchronous scheduler, which runs
tasks in the calling thread) kernels use every Numba thread.

``NQUANT_TASK_THREADS=<n>`` in the environment overrides the per-task count.
"""

import contextlib
import functools
import os
import threading

import numba


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
