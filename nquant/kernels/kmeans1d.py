"""Exact 1-D k-means (optimal K-level scalar quantizer for squared error) and Lloyd-Max.

Exact method: sort, deduplicate to distinct values ``v_0 < ... < v_{n-1}`` with weights, and run
the interval DP over prefix positions ``0..n``::

    D_1(j) = SSE(0, j),   D_i(j) = min_{k <= j} D_{i-1}(k) + SSE(k, j),   optimum D_K(n),

where ``SSE(k, j)`` is the weighted sum of squared deviations from their mean of the values at
positions ``(k, j]`` (``k == j``: an empty cluster, cost 0, so fewer distinct values than K give
repeated centres).  ``SSE`` satisfies the quadrangle inequality, so every layer is one call of the
shared SMAWK machinery of :mod:`nquant.kernels.smawk` (cost kind ``KMEANS``): O(K n) time after
the O(d log d) sort.  The table is centred about the weighted mean (float64) so ``S2 - S1^2 / W``
does not cancel catastrophically.

Kernels trust their inputs; :mod:`nquant.optimal1d` validates.
"""

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, prange
from nquant.kernels.asq_dp import PARALLEL_MIN
from nquant.kernels.smawk import KMEANS, cost, layered_dp

_BLOCK = 65536


@jit
def kmeans_table(vals, wts):
    """Prefix table ``(v - c, W, S1, S2)`` of shape ``(n + 1, 4)`` for the ``KMEANS`` cost.

    Parameters
    ----------
    vals : float64 array, shape (n,), ascending (distinct)
    wts : float64 array, shape (n,), >= 0

    Returns
    -------
    tab : float64 array, shape (n + 1, 4), C order
        Row 0 is zeros; row ``i`` holds ``v_{i-1} - c`` and the cumulative ``W``, ``S1 = sum w (v
        - c)``, ``S2 = sum w (v - c)^2`` over the first ``i`` values.
    centre : float
        The weighted mean ``c``.

    Notes
    -----
    O(n) time, 32 (n + 1) bytes.
    """
    n = vals.shape[0]
    sw = 0.0
    swx = 0.0
    for i in range(n):
        sw += wts[i]
        swx += wts[i] * vals[i]
    c = swx / sw if sw > 0.0 else vals[0]
    if c < vals[0]:
        c = vals[0]
    if c > vals[n - 1]:
        c = vals[n - 1]
    tab = np.zeros((n + 1, 4), dtype=np.float64)
    W = 0.0
    S1 = 0.0
    S2 = 0.0
    for i in range(n):
        y = vals[i] - c
        W += wts[i]
        S1 += wts[i] * y
        S2 += wts[i] * y * y
        tab[i + 1, 0] = y
        tab[i + 1, 1] = W
        tab[i + 1, 2] = S1
        tab[i + 1, 3] = S2
    return tab, c


@jit
def kmeans_dp(tab, k, algo, nparts):
    """Optimal partition of the values behind ``tab`` into ``k`` contiguous clusters.

    Parameters
    ----------
    tab : float64 array, shape (n + 1, 4)
        From :func:`kmeans_table`.
    k : int
        Number of clusters, ``>= 1``.
    algo : int
        ``smawk.SMAWK`` or ``smawk.DIVIDE_AND_CONQUER``.
    nparts : int
        Row blocks per SMAWK layer solved in parallel (1: serial).

    Returns
    -------
    bounds : int64 array, shape (k + 1,)
        Cluster ``i`` holds the distinct values ``bounds[i] .. bounds[i + 1] - 1`` (empty when
        equal); ``bounds[0] = 0``, ``bounds[k] = n``.
    value : float
        The DP optimum (total weighted SSE, from prefix sums).

    Notes
    -----
    O(k n) time with SMAWK; memory 4 (k - 2) n bytes of argmins plus about 80 n bytes.
    """
    m = tab.shape[0]  # n + 1 prefix positions
    aux = np.empty(0, dtype=np.uint32)
    f0 = np.empty(m, dtype=np.float64)
    for j in range(m):
        f0[j] = cost(KMEANS, tab, aux, 0, j)
    nlayers = k - 1
    ktab = np.empty((max(nlayers - 1, 0), m), dtype=np.uint32)
    value, k_last = layered_dp(KMEANS, tab, aux, f0, nlayers, ktab, algo, nparts)
    bounds = np.empty(k + 1, dtype=np.int64)
    bounds[k] = m - 1
    if nlayers > 0:
        j = k_last
        bounds[k - 1] = j
        for layer in range(nlayers - 2, -1, -1):
            j = np.int64(ktab[layer, j])
            bounds[layer + 1] = j
    bounds[0] = 0
    return bounds, value


@jit
def centers_from_bounds(tab, centre, bounds, vals):
    """Weighted mean of every cluster (``tab`` sums); an empty cluster takes its neighbour's
    boundary value so the result stays sorted.  Returns float64 ``(k,)``."""
    k = bounds.shape[0] - 1
    out = np.empty(k, dtype=np.float64)
    for i in range(k):
        a = bounds[i]
        b = bounds[i + 1]
        w = tab[b, 1] - tab[a, 1]
        if b > a and w > 0.0:
            mu = centre + (tab[b, 2] - tab[a, 2]) / w
            # the mean lies in [v_a, v_{b-1}]; keep it there despite rounding
            if mu < vals[a]:
                mu = vals[a]
            if mu > vals[b - 1]:
                mu = vals[b - 1]
            out[i] = mu
        elif b > a:
            out[i] = 0.5 * (vals[a] + vals[b - 1])
        else:
            out[i] = vals[min(a, vals.shape[0] - 1)]
    return out


@jit
def _sse_block(x, w, centers, i0, i1):
    k = centers.shape[0]
    unit = w.shape[0] == 0
    acc = 0.0
    for i in range(i0, i1):
        v = np.float64(x[i])
        lo = 0
        hi = k - 1
        while lo < hi:  # first centre >= v
            mid = (lo + hi) >> 1
            if centers[mid] >= v:
                hi = mid
            else:
                lo = mid + 1
        e = abs(centers[lo] - v)
        if lo > 0:
            e2 = v - centers[lo - 1]
            if e2 < e:
                e = e2
        if unit:
            acc += e * e
        else:
            acc += w[i] * e * e
    return acc


@jit_parallel
def sse_parallel(x, w, centers):
    """Parallel :func:`sse_nearest` (blocks of 65536 values)."""
    d = x.shape[0]
    nb = (d + _BLOCK - 1) // _BLOCK
    parts = np.zeros(nb, dtype=np.float64)
    for b in prange(nb):
        parts[b] = _sse_block(x, w, centers, b * _BLOCK, min(d, (b + 1) * _BLOCK))
    total = 0.0
    for b in range(nb):
        total += parts[b]
    return total


@jit
def sse_serial(x, w, centers):
    """Serial :func:`sse_nearest`."""
    return _sse_block(x, w, centers, 0, x.shape[0])


def sse_nearest(x, w, centers):
    """``sum w (x - nearest centre)^2`` for ascending ``centers``; O(d log k).

    Parameters
    ----------
    x : float32 or float64 array, shape (d,)
    w : float64 array, shape (d,) or (0,) (unit weights)
    centers : float64 array, shape (k,), ascending

    Parallel above ``asq_dp.PARALLEL_MIN`` values.
    """
    if x.shape[0] < PARALLEL_MIN:
        return sse_serial(x, w, centers)
    return sse_parallel(x, w, centers)


@jit
def lloyd_max(x, w, centers, max_iter, tol):
    """Lloyd-Max iterations (nearest-centre assignment, weighted means) from ``centers``.

    Parameters
    ----------
    x : float64 array, shape (d,), any order
    w : float64 array, shape (d,) or (0,) (unit weights)
    centers : float64 array, shape (k,)
        Initial centres (sorted on entry is not required; the result is sorted).
    max_iter : int
        Maximum number of iterations.
    tol : float
        Stop when the relative decrease of the SSE falls below ``tol``.

    Returns
    -------
    centers : float64 array, shape (k,), ascending
    sse : float
        Weighted SSE of the returned centres.
    n_iter : int
        Iterations run.

    Notes
    -----
    O(d log k) per iteration (binary search among the midpoints), O(k) memory.  An empty cluster
    keeps its previous centre.  Lloyd-Max converges to a local optimum only.
    """
    d = x.shape[0]
    k = centers.shape[0]
    c = np.sort(centers.astype(np.float64))
    unit = w.shape[0] == 0
    sw = np.zeros(k)
    sx = np.zeros(k)
    mids = np.empty(max(k - 1, 0))
    prev = np.inf
    sse = np.inf
    n_iter = 0
    for it in range(max_iter + 1):
        for i in range(k - 1):
            mids[i] = 0.5 * (c[i] + c[i + 1])
        sw[:] = 0.0
        sx[:] = 0.0
        sse = 0.0
        for i in range(d):
            v = x[i]
            lo = 0
            hi = k - 1
            while lo < hi:  # first midpoint >= v -> cluster lo
                m = (lo + hi) >> 1
                if mids[m] >= v:
                    hi = m
                else:
                    lo = m + 1
            wi = 1.0 if unit else w[i]
            sw[lo] += wi
            sx[lo] += wi * v
            e = v - c[lo]
            sse += wi * e * e
        # sse is the error of the current centres c
        if it == max_iter or prev - sse <= tol * sse or sse == 0.0:
            break
        prev = sse
        for i in range(k):
            if sw[i] > 0.0:
                c[i] = sx[i] / sw[i]
        c.sort()
        n_iter += 1
    return c, sse, n_iter
