"""CUDA twin of :mod:`nquant.kernels.assign`: nearest-centroid assignment and Lloyd partial sums.

Same functions, arguments and result conventions as the CPU module (ties to the lowest
center index, rows holding NaN get label 0 and a NaN distance, partial sums in float64,
counts int64).  One thread per row (grid-stride).

- :func:`direct_pass`: squared differences ``sum_q (x_q - c_q)^2`` accumulated in the
  data's dtype in the CPU's order with every product rounded on its own (``mul_rn``):
  labels and distances are bit-identical to the CPU kernel's.
- :func:`gemm_pass`: the CPU takes the cross terms from a BLAS GEMM; here each thread
  computes its dot products in the data's dtype (no BLAS on the device), so the cross
  terms differ from BLAS's in the last bits: distances agree within rounding and labels
  agree except between centers whose distances tie within rounding.
- :func:`assign_block`: the argmin over given cross terms ``G`` (e.g. from cuBLAS/CuPy):
  bit-identical to the CPU kernel.
- :func:`row_sqnorms` (and ``row_sqnorms_serial``): float64 accumulation, bit-identical.

With ``accumulate``, the per-center sums and counts are added with atomics (into a
per-block shared-memory copy when ``k * (d + 1)`` float64 fit in :data:`SHARED_BYTES`):
counts are exact, float64 sums agree with the CPU's within rounding (the order of the
additions differs).
"""

import numpy as np
from numba import cuda

from nquant.cuda._device import cast_like, mul_rn
from nquant.cuda._launch import as_device, device, is_device, kernel, launch, output

__all__ = ["SHARED_BYTES", "assign_block", "direct_pass", "gemm_pass", "row_sqnorms", "row_sqnorms_serial"]

SHARED_BYTES = 40960
"""Largest per-block shared-memory copy of the partial sums and counts (bytes)."""

_F64 = np.dtype(np.float64)  # a dtype instance: the form both numba-cuda and the simulator take


# ----------------------------------------------------------------------------- shared pieces


@kernel
def _row_sqnorms(X, out):
    n = X.shape[0]
    d = X.shape[1]
    r = cuda.grid(1)
    stride = cuda.gridsize(1)
    while r < n:
        s = 0.0
        for q in range(d):
            s += mul_rn(np.float64(X[r, q]), np.float64(X[r, q]))
        out[r] = s
        r += stride


@device
def _x(X, shift, r, q):
    """``X[r, q]``, or ``X[r, q] - shift[q]`` when a shift is given (in X's dtype, as the CPU)."""
    if shift.shape[0] == 0:
        return X[r, q]
    return X[r, q] - shift[q]


@device
def _add_row(X, shift, r, lab, part, private, sums, counts):
    """Add (shifted) row ``r`` to center ``lab``'s sum and count (shared copy or global arrays)."""
    d = X.shape[1]
    if private:
        k = counts.shape[0]
        for q in range(d):
            cuda.atomic.add(part, lab * d + q, np.float64(_x(X, shift, r, q)))
        cuda.atomic.add(part, k * d + lab, 1.0)
    else:
        for q in range(d):
            cuda.atomic.add(sums, (lab, q), np.float64(_x(X, shift, r, q)))
        cuda.atomic.add(counts, lab, 1)


@device
def _init_private(part, nvals):
    for t in range(cuda.threadIdx.x, nvals, cuda.blockDim.x):
        part[t] = 0.0
    cuda.syncthreads()


@device
def _flush_private(part, sums, counts):
    cuda.syncthreads()
    k = sums.shape[0]
    d = sums.shape[1]
    for t in range(cuda.threadIdx.x, k * d, cuda.blockDim.x):
        v = part[t]
        if v != 0.0:
            cuda.atomic.add(sums, (t // d, t - (t // d) * d), v)
    for t in range(cuda.threadIdx.x, k, cuda.blockDim.x):
        c = part[k * d + t]
        if c != 0.0:
            cuda.atomic.add(counts, t, np.int64(c))


# ----------------------------------------------------------------------------- kernels


@kernel
def _direct(X, C, labels, d2, sums, counts, accumulate, private):
    part = cuda.shared.array(0, _F64)
    n = X.shape[0]
    d = X.shape[1]
    k = C.shape[0]
    if accumulate and private:
        _init_private(part, k * (d + 1))
    r = cuda.grid(1)
    stride = cuda.gridsize(1)
    while r < n:
        t = X[r, 0] - C[0, 0]
        best = mul_rn(t, t)
        for q in range(1, d):
            t = X[r, q] - C[0, q]
            best += mul_rn(t, t)
        idx = 0
        for j in range(1, k):
            t = X[r, 0] - C[j, 0]
            acc = mul_rn(t, t)
            for q in range(1, d):
                t = X[r, q] - C[j, q]
                acc += mul_rn(t, t)
            if acc < best:
                best = acc
                idx = j
        labels[r] = idx
        d2[r] = best
        if accumulate:
            _add_row(X, X[0, :0], r, idx, part, private, sums, counts)
        r += stride
    if accumulate and private:
        _flush_private(part, sums, counts)


@kernel
def _gemm(X, shift, C, xx, cc, labels, d2, sums, counts, accumulate, private):
    part = cuda.shared.array(0, _F64)
    n = X.shape[0]
    d = X.shape[1]
    k = C.shape[0]
    if accumulate and private:
        _init_private(part, k * (d + 1))
    r = cuda.grid(1)
    stride = cuda.gridsize(1)
    while r < n:
        # as the CPU's assign_block: v in float64, the running minimum stored in X's dtype
        g = mul_rn(_x(X, shift, r, 0), C[0, 0])
        for q in range(1, d):
            g += mul_rn(_x(X, shift, r, q), C[0, q])
        best = cast_like(np.float64(cc[0]) - 2.0 * np.float64(g), g)
        idx = 0
        for j in range(1, k):
            g = mul_rn(_x(X, shift, r, 0), C[j, 0])
            for q in range(1, d):
                g += mul_rn(_x(X, shift, r, q), C[j, q])
            v = np.float64(cc[j]) - 2.0 * np.float64(g)
            if v < best:
                best = cast_like(v, g)
                idx = j
        labels[r] = idx
        if shift.shape[0] == 0:
            xr = xx[r]
        else:  # the squared norm of the shifted row, float64 sum stored in X's dtype (the CPU's)
            s2 = 0.0
            for q in range(d):
                u = np.float64(_x(X, shift, r, q))
                s2 += mul_rn(u, u)
            xr = cast_like(s2, best)
        v = xr + best
        d2[r] = v if v > 0 else (v - v)  # keeps NaN, clips cancellation below 0
        if accumulate:
            _add_row(X, shift, r, idx, part, private, sums, counts)
        r += stride
    if accumulate and private:
        _flush_private(part, sums, counts)


@kernel
def _argmin_columns(G, cc, xx, labels, d2):
    k = G.shape[0]
    B = G.shape[1]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < B:
        # as the CPU: v in float64 (its ``c - 2 * g``), the running minimum stored in G's dtype
        g0 = G[0, i]
        best = cast_like(np.float64(cc[0]) - 2.0 * np.float64(g0), g0)
        idx = 0
        for j in range(1, k):
            v = np.float64(cc[j]) - 2.0 * np.float64(G[j, i])
            if v < best:
                best = cast_like(v, g0)
                idx = j
        labels[i] = idx
        v = xx[i] + best
        d2[i] = v if v > 0 else (v - v)
        i += stride


@kernel
def _accumulate(X, labels, sums, counts, private):
    part = cuda.shared.array(0, _F64)
    n = X.shape[0]
    d = X.shape[1]
    k = counts.shape[0]
    if private:
        _init_private(part, k * (d + 1))
    r = cuda.grid(1)
    stride = cuda.gridsize(1)
    while r < n:
        _add_row(X, X[0, :0], r, labels[r], part, private, sums, counts)
        r += stride
    if private:
        _flush_private(part, sums, counts)


# ----------------------------------------------------------------------------- drivers


def row_sqnorms(X):
    """Squared L2 norm of every row, accumulated in float64, returned in ``X.dtype``.

    Parameters
    ----------
    X : array of shape (n, d), float32 or float64, C-contiguous (host or device)

    Returns
    -------
    array of shape (n,), dtype of X (on the device when ``X`` is)
    """
    dX = as_device(X)
    out = cuda.device_array(dX.shape[0], dX.dtype)
    launch(_row_sqnorms, dX.shape[0], dX, out)
    return out if is_device(X) else out.copy_to_host()


def row_sqnorms_serial(X, out):
    """``out[r] = ||X[r]||^2`` (float64 accumulation, stored in ``out``'s dtype).

    Twin of the CPU ``row_sqnorms_serial`` (the CPU's serial variant for worker threads;
    on the device it is :func:`row_sqnorms` writing into ``out``, host or device).
    """
    d_out, finish = output(out)
    dX = as_device(X)
    launch(_row_sqnorms, dX.shape[0], dX, d_out)
    finish()


def _shared_bytes(k, d):
    nbytes = 8 * k * (d + 1)
    return nbytes if nbytes <= SHARED_BYTES else 0


def _outputs(dX, k, labels, d2, accumulate):
    n, d = dX.shape
    labels = cuda.device_array(n, np.int32) if labels is None else labels
    d2 = cuda.device_array(n, dX.dtype) if d2 is None else d2
    d_labels, fin_labels = output(labels)
    d_d2, fin_d2 = output(d2)
    shape = (k, d) if accumulate else (1, 1)
    sums = cuda.to_device(np.zeros(shape, np.float64))
    counts = cuda.to_device(np.zeros(k if accumulate else 1, np.int64))

    def finish():
        fin_labels()
        fin_d2()

    return labels, d2, d_labels, d_d2, sums, counts, finish


def _results(host, labels, d2, sums, counts, accumulate):
    def back(a):
        return a.copy_to_host() if host and is_device(a) else a

    if not accumulate:
        return back(labels), back(d2), None, None
    return back(labels), back(d2), back(sums), back(counts)


def direct_pass(X, C, *, accumulate=False, labels=None, d2=None):
    """Nearest center of every row by squared differences (twin of the CPU ``direct_pass``).

    Bit-identical to the CPU kernel (labels, distances; counts when accumulating; sums
    within rounding).  The CPU uses it for ``d <= DIRECT_MAX_DIM``; the device accepts
    any ``d``.

    Parameters
    ----------
    X : array of shape (n, d), float32 or float64, C-contiguous (host or device)
    C : array of shape (k, d), dtype of X
    accumulate : bool
        Also return the per-center sums (float64) and counts of the rows.
    labels, d2 : array, optional
        Preallocated outputs (int32, dtype of X), host or device.

    Returns
    -------
    labels : array of shape (n,), int32
    d2 : array of shape (n,), dtype of X
    sums : array of shape (k, d), float64, or None
    counts : array of shape (k,), int64, or None
        Device arrays when ``X`` is on the device, else NumPy.
    """
    host = not is_device(X)
    dX = as_device(X)
    dC = as_device(C, dX.dtype)
    n, d = dX.shape
    k = dC.shape[0]
    labels, d2, d_labels, d_d2, sums, counts, finish = _outputs(dX, k, labels, d2, accumulate)
    shared = _shared_bytes(k, d) if accumulate else 0
    launch(_direct, n, dX, dC, d_labels, d_d2, sums, counts, bool(accumulate), shared > 0, shared=shared)
    finish()
    return _results(host, labels, d2, sums, counts, accumulate)


def gemm_pass(X, C, xx=None, *, accumulate=False, nthreads=1, labels=None, d2=None, shift=None):
    """Nearest center by ``argmin_j ||c_j||^2 - 2 x.c_j`` (twin of the CPU ``gemm_pass``).

    Same conventions as the CPU function; the cross terms are computed per thread in the
    data's dtype instead of by BLAS, so distances agree within rounding and labels except
    at near-ties.  ``nthreads`` is accepted for the CPU signature and ignored.

    Parameters
    ----------
    X, C, xx, accumulate, labels, d2 : as the CPU function (host or device arrays)
    nthreads : int, ignored
    shift : array of shape (d,), dtype of X, optional
        Work on ``X - shift`` (subtracted on the fly, in X's dtype; ``xx`` is then ignored
        and the sums are of the shifted rows); ``C`` is given in the shifted coordinates.

    Returns
    -------
    labels, d2, sums, counts : as :func:`direct_pass`
    """
    host = not is_device(X)
    dX = as_device(X)
    dC = as_device(C, dX.dtype)
    n, d = dX.shape
    k = dC.shape[0]
    if shift is None:
        dshift = cuda.device_array(0, dX.dtype)
        dxx = as_device(row_sqnorms(dX) if xx is None else xx, dX.dtype)
    else:
        dshift = as_device(shift, dX.dtype)
        dxx = cuda.device_array(0, dX.dtype)
    dcc = as_device(row_sqnorms(dC), dX.dtype)
    labels, d2, d_labels, d_d2, sums, counts, finish = _outputs(dX, k, labels, d2, accumulate)
    shared = _shared_bytes(k, d) if accumulate else 0
    launch(_gemm, n, dX, dshift, dC, dxx, dcc, d_labels, d_d2, sums, counts, bool(accumulate), shared > 0,
           shared=shared)
    finish()
    return _results(host, labels, d2, sums, counts, accumulate)


def assign_block(G, cc, X, xx, labels, d2, sums, counts, accumulate):
    """Labels and squared distances from cross terms ``G``; optionally accumulate partial sums.

    Twin of the CPU ``assign_block`` (same arguments; ``labels``, ``d2`` written, ``sums``
    (k, d) float64 and ``counts`` (k,) int64 added to in place; host or device arrays).
    """
    d_labels, fin_labels = output(labels)
    d_d2, fin_d2 = output(d2)
    dG = as_device(G)
    B = dG.shape[1]
    launch(_argmin_columns, B, dG, as_device(cc, dG.dtype), as_device(xx, dG.dtype), d_labels, d_d2)
    if accumulate:
        d_sums, fin_sums = output(sums, copy_in=True)
        d_counts, fin_counts = output(counts, copy_in=True)
        dX = as_device(X, dG.dtype)
        shared = _shared_bytes(d_counts.shape[0], dX.shape[1])
        launch(_accumulate, dX.shape[0], dX, d_labels, d_sums, d_counts, shared > 0, shared=shared)
        fin_sums()
        fin_counts()
    fin_labels()
    fin_d2()
