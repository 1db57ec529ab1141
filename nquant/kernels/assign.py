"""Nearest-centroid assignment: argmin over BLAS GEMM blocks, partial sums and counts.

For points ``x`` (rows of ``X``) and centers ``c_j`` (rows of ``C``)::

    ||x - c_j||^2 = ||x||^2 - 2 x.c_j + ||c_j||^2

so the nearest center of ``x`` is ``argmin_j (||c_j||^2 - 2 x.c_j)``: the cross terms of a block of
``B`` points are one BLAS GEMM ``G = C @ Xb.T`` of shape (k, B), computed by NumPy *outside* any
Numba kernel, and a serial jitted kernel reduces each column of ``G`` to ``(label, min)`` with a
select-based running minimum that vectorizes over the columns.  Ties go to the lowest center index
(as ``np.argmin``).  The squared distance is ``max(||x||^2 + min, 0)`` in the data's dtype.

Two paths, one result convention:

- :func:`gemm_pass` (``d > DIRECT_MAX_DIM``): blocks of ``BLOCK`` rows; row *groups* are spread
  over ``nthreads`` Python threads, each running single-threaded BLAS (the caller limits BLAS to
  one thread while ``nthreads > 1``, see ``nquant._threads.single_blas``) and the serial kernel, so that BLAS
  threads and Numba threads never compete for the cores.  Partial sums and counts (for Lloyd)
  are kept per fixed row group and added in group order, so the result does not depend on the
  number of threads.
- :func:`direct_pass` (``d <= DIRECT_MAX_DIM``): a parallel Numba kernel computes the squared
  differences itself (a GEMM with ``d`` this small is memory bound, and differences do not
  cancel); used by k-means on low-dimensional data and by product quantization
  (:mod:`nquant.kernels.pq`) through :func:`argmin_strip`.

Rows containing NaN get label 0 and a NaN distance (no comparison with NaN succeeds).
Partial sums are accumulated in float64 whatever the data's dtype.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, prange

__all__ = [
    "BLOCK",
    "DIRECT_MAX_DIM",
    "STRIP",
    "argmin_strip",
    "assign_block",
    "direct_pass",
    "gemm_pass",
    "row_sqnorms",
    "row_sqnorms_serial",
]

BLOCK = 1024
"""Rows per GEMM block: ``G`` (k x BLOCK) stays in the 2 MiB L2 for k <= 512 (float32)."""

STRIP = 256
"""Columns of ``G`` reduced together (running minima of one strip stay in L1)."""

DIRECT_MAX_DIM = 16
"""Largest dimension handled by the direct (no-GEMM) kernel."""

MAX_GROUPS = 64
"""At most this many per-group partial-sum arrays per pass."""


# ---------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------
@jit
def _argmin_columns(G, cc, xx, labels, d2):
    """Reduce the columns of ``G`` (k, B): ``labels[i] = argmin_j cc[j] - 2 G[j, i]``."""
    k, B = G.shape
    best = np.empty(STRIP, G.dtype)
    idx = np.empty(STRIP, np.int32)
    for c0 in range(0, B, STRIP):
        w = min(STRIP, B - c0)
        g = G[0, c0:c0 + w]
        c = cc[0]
        for i in range(w):
            best[i] = c - 2 * g[i]
            idx[i] = 0
        for j in range(1, k):
            g = G[j, c0:c0 + w]
            c = cc[j]
            for i in range(w):
                v = c - 2 * g[i]
                b = best[i]
                take = v < b
                best[i] = v if take else b
                idx[i] = j if take else idx[i]
        for i in range(w):
            labels[c0 + i] = idx[i]
            v = xx[c0 + i] + best[i]
            d2[c0 + i] = v if v > 0 else (v - v)  # keeps NaN, clips cancellation below 0


@jit
def _accumulate(X, labels, sums, counts):
    d = X.shape[1]
    for r in range(X.shape[0]):
        lab = labels[r]
        counts[lab] += 1
        xr = X[r]
        s = sums[lab]
        for q in range(d):
            s[q] += xr[q]


@jit
def assign_block(G, cc, X, xx, labels, d2, sums, counts, accumulate):
    """Labels and squared distances of one block; optionally accumulate partial sums.

    Parameters
    ----------
    G : ndarray of shape (k, B), float32 or float64
        ``C @ X.T`` for the block's rows.
    cc : ndarray of shape (k,), dtype of G
        Squared norms of the centers.
    X : ndarray of shape (B, d), dtype of G
        The block's rows (read only when ``accumulate``).
    xx : ndarray of shape (B,), dtype of G
        Squared norms of the rows.
    labels : ndarray of shape (B,), int32
        Output: nearest center.
    d2 : ndarray of shape (B,), dtype of G
        Output: squared distance to it.
    sums : ndarray of shape (k, d), float64
        In/out: ``sums[j] += x`` for every row labelled ``j``.
    counts : ndarray of shape (k,), int64
        In/out: rows per label.
    accumulate : bool
    """
    _argmin_columns(G, cc, xx, labels, d2)
    if accumulate:
        _accumulate(X, labels, sums, counts)


@jit
def argmin_strip(X, r0, w, col0, CT, xt, acc, best, idx):
    """Nearest of the centers ``CT.T`` for the sub-vectors ``X[r0:r0+w, col0:col0+ds]``.

    Direct kernel for small ``ds``: the squared distances ``sum_q (x_q - c_q)^2`` are computed
    in the data's dtype as differences (no cancellation, unlike the GEMM identity).  ``CT`` is
    the transposed centers (ds, k); ``xt`` (ds, >= w), ``acc``, ``best`` (>= w, dtype of X) and
    ``idx`` (>= w, int32) are scratch; on return ``idx[:w]`` holds the labels and
    ``best[:w]`` the squared distances.  The loop over the ``w`` rows is innermost, so it
    vectorizes.
    """
    ds, k = CT.shape
    for i in range(w):
        xr = X[r0 + i]
        for q in range(ds):
            xt[q, i] = xr[col0 + q]
    for j in range(k):
        for i in range(w):
            acc[i] = 0
        for q in range(ds):
            c = CT[q, j]
            xq = xt[q]
            for i in range(w):
                t = xq[i] - c
                acc[i] += t * t
        if j == 0:
            for i in range(w):
                best[i] = acc[i]
                idx[i] = 0
        else:
            for i in range(w):
                v = acc[i]
                b = best[i]
                take = v < b
                best[i] = v if take else b
                idx[i] = j if take else idx[i]


@jit_parallel
def _direct_pass(X, CT, labels, d2, sums, counts, accumulate, group):
    n, d = X.shape
    ngroups = sums.shape[0]
    for g in prange(ngroups):
        xt = np.empty((d, STRIP), X.dtype)
        acc = np.empty(STRIP, X.dtype)
        best = np.empty(STRIP, X.dtype)
        idx = np.empty(STRIP, np.int32)
        lo = g * group
        hi = min(n, lo + group)
        for r0 in range(lo, hi, STRIP):
            w = min(STRIP, hi - r0)
            argmin_strip(X, r0, w, 0, CT, xt, acc, best, idx)
            for i in range(w):
                labels[r0 + i] = idx[i]
                d2[r0 + i] = best[i]
            if accumulate:
                _accumulate(X[r0:r0 + w], idx[:w], sums[g], counts[g])


@jit
def row_sqnorms_serial(X, out):
    """``out[r] = ||X[r]||^2`` (float64 accumulation), serial: for use inside worker threads."""
    n, d = X.shape
    for r in range(n):
        s = 0.0
        xr = X[r]
        for q in range(d):
            s += np.float64(xr[q]) * xr[q]
        out[r] = s


@jit_parallel
def _row_sqnorms(X, out):
    n, d = X.shape
    for r in prange(n):
        s = 0.0
        xr = X[r]
        for q in range(d):
            s += np.float64(xr[q]) * xr[q]
        out[r] = s


# ---------------------------------------------------------------------------------------
# drivers (NumPy GEMM + the kernels above)
# ---------------------------------------------------------------------------------------
def row_sqnorms(X):
    """Squared L2 norm of every row, accumulated in float64, returned in ``X.dtype``.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32 or float64, C-contiguous

    Returns
    -------
    ndarray of shape (n,), dtype of X
    """
    out = np.empty(X.shape[0], X.dtype)
    if X.shape[0]:
        _row_sqnorms(X, out)
    return out


def group_rows(n):
    """Rows per partial-sum group: a multiple of BLOCK, at most MAX_GROUPS groups."""
    per = -(-max(n, 1) // MAX_GROUPS)
    return max(8 * BLOCK, -(-per // BLOCK) * BLOCK)


def _outputs(X, k, labels, d2, accumulate, ngroups):
    n, d = X.shape
    labels = np.empty(n, np.int32) if labels is None else labels
    d2 = np.empty(n, X.dtype) if d2 is None else d2
    shape = (ngroups, k, d) if accumulate else (ngroups, 0, 0)
    sums = np.zeros(shape, np.float64)
    counts = np.zeros((ngroups, k if accumulate else 0), np.int64)
    return labels, d2, sums, counts


def gemm_pass(X, C, xx=None, *, accumulate=False, nthreads=1, labels=None, d2=None, shift=None):
    """Nearest center of every row through blocked GEMMs, optionally with partial sums.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32 or float64, C-contiguous
    C : ndarray of shape (k, d), dtype of X, C-contiguous
    xx : ndarray of shape (n,), dtype of X, optional
        Squared row norms (computed when omitted).
    accumulate : bool
        Also return the per-center sums (float64) and counts of the rows.
    nthreads : int
        Python threads sharing the row groups.  With more than one, the caller should limit
        BLAS to one thread (otherwise BLAS and the threads oversubscribe the cores).
    labels, d2 : ndarray, optional
        Preallocated outputs (int32, dtype of X).
    shift : ndarray of shape (d,), dtype of X, optional
        Work on ``X - shift`` (subtracted block by block into a thread-local buffer, so no
        shifted copy of ``X`` is made; ``xx`` is then ignored and the sums are of the shifted
        rows).  ``C`` must be given in the shifted coordinates.

    Returns
    -------
    labels : ndarray of shape (n,), int32
    d2 : ndarray of shape (n,), dtype of X
        Squared distances to the nearest center.
    sums : ndarray of shape (k, d), float64, or None
    counts : ndarray of shape (k,), int64, or None
    """
    n, d = X.shape
    k = C.shape[0]
    if shift is None and xx is None:
        xx = row_sqnorms(X)
    cc = row_sqnorms(C)
    group = group_rows(n)
    ngroups = max(1, -(-n // group))
    labels, d2, sums, counts = _outputs(X, k, labels, d2, accumulate, ngroups)
    local = threading.local()

    def run(g):
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty(k * BLOCK, X.dtype)
            if shift is not None:
                local.xb = np.empty((BLOCK, d), X.dtype)
                local.xxb = np.empty(BLOCK, X.dtype)
        for s in range(g * group, min(n, (g + 1) * group), BLOCK):
            e = min(n, s + BLOCK)
            G = buf[:k * (e - s)].reshape(k, e - s)
            if shift is None:
                xb, xxb = X[s:e], xx[s:e]
            else:
                xb, xxb = local.xb[:e - s], local.xxb[:e - s]
                np.subtract(X[s:e], shift, out=xb)
                row_sqnorms_serial(xb, xxb)
            np.matmul(C, xb.T, out=G)
            assign_block(G, cc, xb, xxb, labels[s:e], d2[s:e], sums[g], counts[g], accumulate)

    if n:
        nthreads = max(1, min(int(nthreads), ngroups))
        if nthreads == 1:
            for g in range(ngroups):
                run(g)
        else:
            with ThreadPoolExecutor(nthreads, thread_name_prefix="nquant-assign") as ex:
                list(ex.map(run, range(ngroups)))
    if not accumulate:
        return labels, d2, None, None
    return labels, d2, sums.sum(axis=0), counts.sum(axis=0)


def direct_pass(X, C, *, accumulate=False, labels=None, d2=None):
    """As :func:`gemm_pass` without BLAS, for ``d <= DIRECT_MAX_DIM`` (parallel Numba kernel).

    Distances are computed as sums of squared differences (exact up to rounding, whatever the
    offset of the data).  Parameters and returns as :func:`gemm_pass` (no ``xx``/``nthreads``).
    """
    n = X.shape[0]
    k = C.shape[0]
    group = group_rows(n)
    ngroups = max(1, -(-n // group))
    labels, d2, sums, counts = _outputs(X, k, labels, d2, accumulate, ngroups)
    if n:
        _direct_pass(X, np.ascontiguousarray(C.T), labels, d2, sums, counts, accumulate, group)
    if not accumulate:
        return labels, d2, None, None
    return labels, d2, sums.sum(axis=0), counts.sum(axis=0)
