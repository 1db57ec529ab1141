"""CUDA twin of :mod:`nquant.kernels.codebook1d`: sorted-codebook quantize and table dequantize.

The CPU kernel reduces every rounding mode to ``code = #{i : x > t[i]}`` over a threshold
table ``t`` built in the data's dtype (see the CPU module).  The twin builds the very
same table on the host (the CPU's ``fill_thresholds``, K <= 256 entries) and counts with
the CPU's fixed-step binary search compiled for the device (one thread per value,
grid-stride); stochastic rounding uses the CPU's ``_stochastic_code`` compiled for the
device with the device stream.  Codes equal the CPU kernel's for every finite or
infinite value (the CPU's float32 bucket table and the binary search count the same
thresholds); codes of NaN are unspecified on both, and NaN/inf are counted.
"""

import numpy as np
from numba import cuda

from nquant.cuda._device import retarget, uniform32, uniform64
from nquant.cuda._launch import as_device, kernel, launch, output, scalar_out
from nquant.kernels import codebook1d as _cpu
from nquant.kernels.rounding import STOCHASTIC

__all__ = ["quantize_sorted", "dequantize_table"]

_search_binary = retarget(_cpu.search_binary)
_stochastic_code = retarget(_cpu._stochastic_code, uniform32=uniform32, uniform64=uniform64)


def _threshold_table(levels, mode, dtype):
    """The CPU kernel's threshold table for ``mode``, padded with +inf to a power of two.

    Returns
    -------
    table : ndarray of shape (2**nsteps,) or longer, ``dtype``
    nsteps : int, ``ceil(log2 K)``
    """
    K = levels.shape[0]
    nsteps = 0
    while (1 << nsteps) < K:
        nsteps += 1
    size = max(1 << nsteps, K - 1 + _cpu.MAX_CORRECTIONS + 1)
    thr = np.empty(size, dtype)
    _cpu.fill_thresholds(np.ascontiguousarray(levels), mode, thr)
    return thr, nsteps


@kernel
def _quantize(x2d, row_index, levels, mode, key, table, nsteps, out, bad):
    R = x2d.shape[0]
    L = x2d.shape[1]
    K = levels.shape[0]
    n = R * L
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        r = i // L
        j = i - r * L
        v = x2d[r, j]
        if not (v - v == 0):
            cuda.atomic.add(bad, 0, 1)
        c = _search_binary(v, table, nsteps)
        if mode == STOCHASTIC:
            c = _stochastic_code(v, c, levels, K, key, row_index[r] + j)
        out[r, j] = c
        i += stride


def quantize_sorted(x2d, row_index, levels, mode, key, out):
    """Code every value as an index into the sorted codebook ``levels`` (twin of the CPU kernel).

    Parameters
    ----------
    x2d : array of shape (R, L), float32 or float64, C-contiguous (host or device)
    row_index : array of shape (R,), int64
        Global flat index of each row's first element (feeds the stochastic stream).
    levels : ndarray of shape (K,), float32 or float64, 1 <= K <= 256, sorted, finite, distinct
        On the host (the threshold table is built there).
    mode : int
        ``rounding.NEAREST`` (ties to the lower level), ``NEAREST_AWAY``, ``FLOOR``, ``CEIL``
        or ``STOCHASTIC``.
    key : numpy.uint64
        ``np.uint64(rng.stream_key(seed))``.
    out : array of shape (R, L), uint8, written (host or device)

    Returns
    -------
    int
        Number of NaN/inf inputs (their codes are unspecified).
    """
    levels = np.ascontiguousarray(levels)
    table, nsteps = _threshold_table(levels, int(mode), np.dtype(x2d.dtype))
    R, L = x2d.shape
    d_out, finish = output(out)
    bad = scalar_out()
    launch(_quantize, R * L, as_device(x2d), as_device(row_index, np.int64), as_device(levels), int(mode),
           np.uint64(key), as_device(table), int(nsteps), d_out, bad)
    finish()
    return int(bad.copy_to_host()[0])


@kernel
def _dequantize(codes2d, levels, out):
    R = codes2d.shape[0]
    L = codes2d.shape[1]
    n = R * L
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        r = i // L
        j = i - r * L
        out[r, j] = levels[codes2d[r, j]]
        i += stride


def dequantize_table(codes2d, levels, out):
    """Decode by table lookup: ``out[r, j] = levels[codes2d[r, j]]`` (twin of the CPU kernel).

    Parameters
    ----------
    codes2d : array of shape (R, L), uint8, each < K (host or device)
    levels : array of shape (K,), float32 or float64
    out : array of shape (R, L), float32 or float64, written (values cast to its dtype)
    """
    R, L = codes2d.shape
    d_out, finish = output(out)
    launch(_dequantize, R * L, as_device(codes2d, np.uint8), as_device(levels), d_out)
    finish()
