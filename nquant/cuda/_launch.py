"""Launch configuration and host/device array plumbing for the CUDA kernels.

Every kernel in :mod:`nquant.cuda` walks its work items with a grid-stride loop::

    i = cuda.grid(1)
    while i < n:
        ...
        i += cuda.gridsize(1)

so any launch size is correct.  :func:`launch` sizes the grid from the number of
work items: ``ceil(n / THREADS_PER_BLOCK)`` blocks, at most ``MAX_BLOCKS``.  The
two module attributes are read at every launch, so tests patch them small
(``monkeypatch.setattr(_launch, "THREADS_PER_BLOCK", 8)``): the CUDA simulator
runs one Python thread per CUDA thread.

Kernels take device arrays.  The host wrappers in the kernel modules accept
NumPy arrays too (copied in with :func:`as_device`, results copied back by
:func:`output`), so each twin can be called exactly like its CPU kernel.
"""

import functools
import types
import warnings

import numpy as np
from numba import cuda

try:  # numba-cuda
    from numba.cuda.core import config as _cuda_config
    from numba.cuda.core.errors import NumbaPerformanceWarning
except ImportError:  # the numba.cuda that older numba releases ship
    from numba.core import config as _cuda_config
    from numba.core.errors import NumbaPerformanceWarning

__all__ = [
    "MAX_BLOCKS",
    "SIMULATOR",
    "THREADS_PER_BLOCK",
    "as_device",
    "blocks_for",
    "device",
    "is_device",
    "kernel",
    "launch",
    "output",
    "scalar_out",
]

THREADS_PER_BLOCK = 256
"""Threads per block (a multiple of the warp size on a GPU)."""

MAX_BLOCKS = 8192
"""Most blocks per launch; with 256 threads, 2M threads stride over larger inputs."""

SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)
"""Whether numba-cuda runs the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` before numba's import)."""


# ----------------------------------------------------------------------------- decorators


def _quiet(fn):
    """``fn`` run under ``np.errstate(all="ignore")``, with ``fn``'s own globals.

    The simulator evaluates kernels with NumPy scalars, which warn where the hardware
    silently wraps (uint64 products of the hash) or saturates (NaN to integer); under
    ``-W error`` a warning would kill the simulated thread.  The wrapper is rebuilt
    on ``fn.__globals__`` because the simulator swaps its fake ``cuda`` module into
    the globals of the function it runs.
    """
    errstate = np.errstate

    def run(*args):
        with errstate(all="ignore"):
            return fn(*args)

    q = types.FunctionType(run.__code__, fn.__globals__, fn.__name__, None, run.__closure__)
    functools.update_wrapper(q, fn)
    return q


def kernel(fn):
    """``numba.cuda.jit`` for a kernel (lazy: compiled per argument types on first launch)."""
    if SIMULATOR:
        fn = _quiet(fn)
    return cuda.jit(fn)


def device(fn):
    """``numba.cuda.jit(device=True)``: a device function callable from kernels."""
    return cuda.jit(device=True)(fn)


# ----------------------------------------------------------------------------- launches


def blocks_for(n):
    """Blocks for ``n`` work items: ``ceil(n / THREADS_PER_BLOCK)``, clipped to [1, MAX_BLOCKS]."""
    tpb = int(THREADS_PER_BLOCK)
    return max(1, min(int(MAX_BLOCKS), -(-int(n) // tpb)))


def launch(kern, n, *args, shared=0):
    """Launch ``kern`` over ``n`` work items (nothing when ``n <= 0``).

    Parameters
    ----------
    kern : kernel from :func:`kernel`
    n : int
        Work items the kernel's grid-stride loop covers (sizes the grid only).
    *args
        Kernel arguments (device arrays and scalars).
    shared : int
        Bytes of dynamic shared memory per block.
    """
    if n <= 0:
        return
    with warnings.catch_warnings():
        # small inputs give small grids; the low-occupancy advice is not an error here
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        configured = kern[blocks_for(n), int(THREADS_PER_BLOCK), 0, int(shared)]
    configured(*args)


# ----------------------------------------------------------------------------- arrays


def is_device(a):
    """Whether ``a`` is in device memory (a numba device array or any CUDA array interface)."""
    return bool(getattr(a, "__cuda_ndarray__", False)) or hasattr(a, "__cuda_array_interface__")


def as_device(a, dtype=None):
    """``a`` as an array the kernels accept: device arrays as they are, host arrays copied in.

    Parameters
    ----------
    a : ndarray, numba device array, or an object with ``__cuda_array_interface__`` (CuPy)
    dtype : dtype, optional
        Host arrays are converted to it (C-contiguous) before the copy; device arrays
        must already have it.
    """
    if getattr(a, "__cuda_ndarray__", False):
        return a
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a)
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def output(out, copy_in=False):
    """A device array to write ``out``'s results into, and the function that finishes.

    Parameters
    ----------
    out : ndarray or device array
    copy_in : bool
        Copy a host ``out``'s current values to the device first (in/out arrays such as
        accumulated histograms and partial sums).

    Returns
    -------
    dev : device array
        ``out`` itself when it is on the device, else a fresh device array like it.
    finish : callable
        Copies ``dev`` into a host ``out`` (no-op for a device ``out``).
    """
    if is_device(out):
        return as_device(out), lambda: None
    if copy_in:
        dev = cuda.to_device(np.ascontiguousarray(out))
    else:
        dev = cuda.device_array(out.shape, out.dtype)

    def finish():
        dev.copy_to_host(out)

    return dev, finish


def scalar_out(dtype=np.int64, n=1):
    """A zeroed device array of ``n`` values (counters written with atomics)."""
    return cuda.to_device(np.zeros(n, dtype))
