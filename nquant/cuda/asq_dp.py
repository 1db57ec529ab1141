"""CUDA twin of :mod:`nquant.kernels.asq_dp`'s chunkable pass: the approximate-QUIVER histogram.

:func:`hist_pass` has the CPU function's arguments and result: per grid cell ``l`` it adds
``(sum w, sum w (x - e_l), sum w (x - e_l)^2)`` to ``hist`` and returns ``sum w x^2`` and
the number of values outside ``[e_0, e_m]``.  One thread per value; the cell is found by
the CPU's ``_cell`` compiled for the device (so every value lands in the CPU's cell), the
per-value terms are the CPU's (products rounded on their own, ``mul_rn``), and they are
summed with atomics into a per-block shared-memory histogram (when ``3 m`` float64 fit in
:data:`SHARED_BYTES`), then into ``hist``.  Cell counts (unit weights) and ``outside``
are exact; the float64 sums differ from the CPU's by rounding only (another summation
order, as the CPU's own result depends on its thread count).

The solvers (SMAWK, the DPs) run on the O(m) merged histogram and stay on the CPU.
"""

import numpy as np
from numba import cuda

from nquant.cuda._device import mul_rn, retarget
from nquant.cuda._launch import as_device, kernel, launch, output
from nquant.kernels import asq_dp as _cpu

__all__ = ["SHARED_BYTES", "hist_pass"]

SHARED_BYTES = 40960
"""Largest per-block shared-memory copy of the histogram (bytes)."""

_F64 = np.dtype(np.float64)

_cell = retarget(_cpu._cell)


@kernel
def _hist(x, w, edges, uniform, hist, totals, outside, private):
    part = cuda.shared.array(0, _F64)
    m = edges.shape[0] - 1
    if private:
        for t in range(cuda.threadIdx.x, 3 * m, cuda.blockDim.x):
            part[t] = 0.0
        cuda.syncthreads()
    lo = edges[0]
    hi = edges[m]
    scale = m / (hi - lo) if hi > lo else 0.0
    unit = w.shape[0] == 0
    nrm = 0.0
    out = 0
    n = x.shape[0]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        v = np.float64(x[i])
        if v < lo or v > hi:
            out += 1
        l = _cell(v, edges, m, lo, scale, uniform)
        y = v - edges[l]
        wi = 1.0 if unit else w[i]
        wy = mul_rn(wi, y)
        if private:
            cuda.atomic.add(part, 3 * l, wi)
            cuda.atomic.add(part, 3 * l + 1, wy)
            cuda.atomic.add(part, 3 * l + 2, mul_rn(wy, y))
        else:
            cuda.atomic.add(hist, (l, 0), wi)
            cuda.atomic.add(hist, (l, 1), wy)
            cuda.atomic.add(hist, (l, 2), mul_rn(wy, y))
        nrm += mul_rn(mul_rn(wi, v), v)
        i += stride
    if nrm != 0.0:
        cuda.atomic.add(totals, 0, nrm)
    if out != 0:
        cuda.atomic.add(outside, 0, out)
    if private:
        cuda.syncthreads()
        for t in range(cuda.threadIdx.x, 3 * m, cuda.blockDim.x):
            if part[t] != 0.0:
                cuda.atomic.add(hist, (t // 3, t - (t // 3) * 3), part[t])


def hist_pass(x, w, edges, uniform, hist, nthreads=1):
    """Add one chunk's per-cell statistics to ``hist`` (twin of the CPU ``hist_pass``).

    Parameters
    ----------
    x : array of shape (d,), float32 or float64, C-contiguous (host or device); finite
    w : array of shape (d,) or (0,), float64 (empty: all weights 1)
    edges : array of shape (m + 1,), float64, non-decreasing
    uniform : bool, True when ``edges`` is the uniform grid
    hist : array of shape (m, 3), float64, accumulated in place (host or device)
    nthreads : int
        Accepted for the CPU signature; the device uses one thread per value.

    Returns
    -------
    norm2 : float, ``sum w x^2`` of the chunk
    outside : int, number of values outside ``[e_0, e_m]``
    """
    d_hist, finish = output(hist, copy_in=True)
    m = d_hist.shape[0]
    nbytes = 24 * m
    shared = nbytes if nbytes <= SHARED_BYTES else 0
    totals = cuda.to_device(np.zeros(1, np.float64))
    outside = cuda.to_device(np.zeros(1, np.int64))
    dx = as_device(x)
    launch(_hist, dx.shape[0], dx, as_device(w, np.float64), as_device(edges, np.float64), bool(uniform),
           d_hist, totals, outside, shared > 0, shared=shared)
    finish()
    return float(totals.copy_to_host()[0]), int(outside.copy_to_host()[0])
