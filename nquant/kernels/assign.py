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

- :func:`bounded_pass` (Lloyd iterations over the same rows): the GEMM path on the rows whose
  nearest center may have changed since the previous pass, by per-row distance bounds.

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
    "bounded_pass",
    "center_drift",
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

BOUND_SLACK = 1e-12
"""Relative widening of the distance bounds of :func:`bounded_pass` (float64 rounding of the
bound updates)."""


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
        if ds == 8:
            _nearest8(xt, w, CT, j, best, idx)
            continue
        # sums over q in order, four terms per sweep over the rows: fewer loads and stores of
        # acc than one term per sweep, the same float sums
        for i in range(w):
            acc[i] = 0
        q = 0
        while q + 4 <= ds:
            c0, c1, c2, c3 = CT[q, j], CT[q + 1, j], CT[q + 2, j], CT[q + 3, j]
            x0, x1, x2, x3 = xt[q], xt[q + 1], xt[q + 2], xt[q + 3]
            for i in range(w):
                t0 = x0[i] - c0
                t1 = x1[i] - c1
                t2 = x2[i] - c2
                t3 = x3[i] - c3
                acc[i] = acc[i] + t0 * t0 + t1 * t1 + t2 * t2 + t3 * t3
            q += 4
        while q < ds:
            c = CT[q, j]
            xq = xt[q]
            for i in range(w):
                t = xq[i] - c
                acc[i] += t * t
            q += 1
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


@jit
def _nearest8(xt, w, CT, j, best, idx):
    """Center ``j`` of :func:`argmin_strip` for eight dimensions: the distances stay in registers
    (the same sums, in the same order, as the general loop)."""
    c0, c1, c2, c3 = CT[0, j], CT[1, j], CT[2, j], CT[3, j]
    c4, c5, c6, c7 = CT[4, j], CT[5, j], CT[6, j], CT[7, j]
    x0, x1, x2, x3, x4, x5, x6, x7 = xt[0], xt[1], xt[2], xt[3], xt[4], xt[5], xt[6], xt[7]
    for i in range(w):
        t0 = x0[i] - c0
        t1 = x1[i] - c1
        t2 = x2[i] - c2
        t3 = x3[i] - c3
        t4 = x4[i] - c4
        t5 = x5[i] - c5
        t6 = x6[i] - c6
        t7 = x7[i] - c7
        v = t0 * t0 + t1 * t1 + t2 * t2 + t3 * t3 + t4 * t4 + t5 * t5 + t6 * t6 + t7 * t7
        if j == 0:
            best[i] = v
            idx[i] = 0
        else:
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
def _argmin2_columns(G, cc, xx, ccmax, tau, rows, labels, d2, upper, lower):
    """As :func:`_argmin_columns` for the rows ``rows``, also setting their distance bounds.

    ``upper[r]`` bounds the distance to the chosen center from above and ``lower[r]`` the
    distance to every other center from below, both widened by the worst-case rounding of the
    GEMM identity: a dot product of length ``d`` is within ``gamma_d * ||x|| ||c||`` of the exact
    one, so every squared distance is within ``tau * (||x||^2 + max ||c||^2)`` of the exact one
    (``tau`` covers ``d`` products, the norms and the additions).
    """
    k, B = G.shape
    best = np.empty(STRIP, G.dtype)
    second = np.empty(STRIP, G.dtype)
    idx = np.empty(STRIP, np.int32)
    for c0 in range(0, B, STRIP):
        w = min(STRIP, B - c0)
        g = G[0, c0:c0 + w]
        c = cc[0]
        for i in range(w):
            best[i] = c - 2 * g[i]
            second[i] = np.inf
            idx[i] = 0
        for j in range(1, k):
            g = G[j, c0:c0 + w]
            c = cc[j]
            for i in range(w):
                v = c - 2 * g[i]
                b = best[i]
                s = second[i]
                take = v < b
                second[i] = b if take else (v if v < s else s)
                best[i] = v if take else b
                idx[i] = j if take else idx[i]
        for i in range(w):
            r = rows[c0 + i]
            x2 = np.float64(xx[c0 + i])
            labels[r] = idx[i]
            v = xx[c0 + i] + best[i]
            d2[r] = v if v > 0 else (v - v)
            err = tau * (x2 + ccmax)
            u = x2 + best[i] + err
            lo = x2 + second[i] - err
            if np.isnan(u) or np.isnan(lo):  # a NaN row: searched again by every pass
                upper[r] = np.inf
                lower[r] = -np.inf
            else:
                upper[r] = np.sqrt(max(u, 0.0)) * (1 + BOUND_SLACK)
                lower[r] = np.sqrt(max(lo, 0.0)) * (1 - BOUND_SLACK)


@jit
def _exact_sqdist(X, C, r, j):
    s = 0.0
    xr = X[r]
    cj = C[j]
    for q in range(X.shape[1]):
        t = np.float64(xr[q]) - np.float64(cj[q])
        s += t * t
    return s


@jit
def _filter_rows(X, C, lo, hi, labels, upper, lower, drift, dmax1, dmax2, jmax, need):
    """Rows of ``[lo, hi)`` whose nearest center may have changed after the centers moved.

    ``drift[j]`` bounds how far center ``j`` moved: the distance to the own center grows by at
    most its drift and the distance to any other center shrinks by at most the largest other
    drift (Hamerly 2010).  A row whose bounds still separate keeps its label; otherwise its upper
    bound is tightened to the exact distance (float64 differences), and if that does not
    separate either, its index goes to ``need``.  Returns the number of such rows.
    """
    m = 0
    for r in range(lo, hi):
        a = labels[r]
        u = upper[r] + drift[a]
        low = lower[r] - (dmax2 if a == jmax else dmax1)
        lower[r] = low
        if not u < low:
            u = np.sqrt(_exact_sqdist(X, C, r, a)) * (1 + BOUND_SLACK)
            if not u < low:
                need[m] = r
                m += 1
        upper[r] = u
    return m


@jit
def _gather_rows(X, xx, rows, xb, xxb):
    for i in range(rows.shape[0]):
        r = rows[i]
        xxb[i] = xx[r]
        xb[i] = X[r]


@jit
def _finish_rows(X, C, lo, hi, labels, sums, counts, d2, accumulate, exact):
    """Partial sums of the rows ``[lo, hi)`` by label and/or their exact squared distances."""
    if accumulate:
        _accumulate(X[lo:hi], labels[lo:hi], sums, counts)
    if exact:
        for r in range(lo, hi):
            d2[r] = _exact_sqdist(X, C, r, labels[r])


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


def _run_groups(run, ngroups, nthreads):
    """``run(g)`` for every row group, in ``nthreads`` Python threads (BLAS and serial kernels)."""
    nthreads = max(1, min(int(nthreads), ngroups))
    if nthreads == 1:
        for g in range(ngroups):
            run(g)
    else:
        with ThreadPoolExecutor(nthreads, thread_name_prefix="nquant-assign") as ex:
            list(ex.map(run, range(ngroups)))


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
    cc = np.empty(k, X.dtype)
    row_sqnorms_serial(C, cc)  # small: a parallel region would cost more than the work
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
        _run_groups(run, ngroups, nthreads)
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


def center_drift(new, old):
    """How far each center moved: ``||new_j - old_j||`` in float64, rounded up.

    Parameters
    ----------
    new, old : ndarray of shape (k, d), float32 or float64

    Returns
    -------
    ndarray of shape (k,), float64
    """
    diff = new.astype(np.float64) - old
    return np.sqrt(np.einsum("ij,ij->i", diff, diff)) * (1 + BOUND_SLACK)


def bounded_pass(X, C, xx, labels, d2, upper, lower, drift=None, *, accumulate=True, exact_d2=False,
                 nthreads=1):
    """Lloyd's assignment with distance bounds: only rows whose nearest center may change are searched.

    The first pass (``drift`` None) searches every row as :func:`gemm_pass` does and sets, per
    row, an upper bound of the distance to its center and a lower bound of the distance to the
    others.  Later passes (``drift``: how far each center moved since the previous pass) update
    the bounds (Hamerly 2010) and search, through the same blocked GEMM, only the rows whose
    bounds no longer separate.  Bounds include the worst-case rounding of the GEMM identity, so a
    row that is skipped keeps a label that is the exact nearest center (the search may differ
    only between centers within rounding of each other).

    Parameters
    ----------
    X : ndarray of shape (n, d), float32 or float64, C-contiguous
    C : ndarray of shape (k, d), dtype of X, C-contiguous
    xx : ndarray of shape (n,), dtype of X
        Squared row norms.
    labels : ndarray of shape (n,), int32
        In/out (read when ``drift`` is given).
    d2 : ndarray of shape (n,), dtype of X
        Out: squared distances of the searched rows (GEMM identity); of every row when
        ``exact_d2`` (float64 differences).  Other entries are left as they were.
    upper, lower : ndarray of shape (n,), float64
        In/out: the bounds.
    drift : ndarray of shape (k,), float64, optional
        :func:`center_drift` of the centers since the previous pass over these bounds.
    accumulate : bool
        Also return the per-center sums (float64) and counts.
    exact_d2 : bool
        Fill ``d2`` for every row.
    nthreads : int
        Python threads sharing the row groups (as :func:`gemm_pass`).

    Returns
    -------
    sums : ndarray of shape (k, d), float64, or None
    counts : ndarray of shape (k,), int64, or None
    searched : int
        Rows searched.
    """
    n, d = X.shape
    k = C.shape[0]
    cc = np.empty(k, X.dtype)
    row_sqnorms_serial(C, cc)
    ccmax = float(cc.max(initial=0.0))
    tau = (d + 8) * float(np.finfo(X.dtype).eps)
    group = group_rows(n)
    ngroups = max(1, -(-n // group))
    _, _, sums, counts = _outputs(X, k, labels, d2, accumulate, ngroups)
    if drift is not None:
        jmax = int(np.argmax(drift)) if k else 0
        dmax1 = float(drift[jmax]) if k else 0.0
        dmax2 = float(np.max(np.delete(drift, jmax), initial=0.0)) if k else 0.0
    searched = [0] * ngroups
    local = threading.local()

    def run(g):
        if getattr(local, "buf", None) is None:
            local.buf = np.empty(k * BLOCK, X.dtype)
            local.xb = np.empty((BLOCK, d), X.dtype)
            local.xxb = np.empty(BLOCK, X.dtype)
            local.need = np.empty(group, np.int64)
        lo, hi = g * group, min(n, (g + 1) * group)
        if drift is None:
            m = hi - lo
            need = np.arange(lo, hi)
        else:
            need = local.need
            m = _filter_rows(X, C, lo, hi, labels, upper, lower, drift, dmax1, dmax2, jmax, need)
        searched[g] = m
        for c0 in range(0, m, BLOCK):
            w = min(BLOCK, m - c0)
            rows = need[c0:c0 + w]
            if drift is None:
                xb, xxb = X[lo + c0:lo + c0 + w], xx[lo + c0:lo + c0 + w]
            else:
                xb, xxb = local.xb[:w], local.xxb[:w]
                _gather_rows(X, xx, rows, xb, xxb)
            G = local.buf[:k * w].reshape(k, w)
            np.matmul(C, xb.T, out=G)
            _argmin2_columns(G, cc, xxb, ccmax, tau, rows, labels, d2, upper, lower)
        if accumulate or exact_d2:
            _finish_rows(X, C, lo, hi, labels, sums[g], counts[g], d2, accumulate, exact_d2)

    if n:
        _run_groups(run, ngroups, nthreads)
    if not accumulate:
        return None, None, sum(searched)
    return sums.sum(axis=0), counts.sum(axis=0), sum(searched)
