"""Lloyd and mini-batch centroid updates, and the greedy k-means++ seeding kernels.

Greedy k-means++ (Arthur & Vassilvitskii 2007, with scikit-learn's ``2 + ln k`` local trials)
picks each new center among ``t`` candidates sampled with probability proportional to the
current squared distance ``closest[i]`` (times the sample weight), keeping the candidate whose
addition gives the lowest potential ``sum_i w_i min(closest[i], d(x_i, c))``.  Every step needs
the distances of all points to the ``t`` candidates: the cross terms ``cand @ X.T`` are BLAS
GEMMs on blocks of ``KPP_BLOCK`` rows (NumPy, outside any Numba kernel), spread over Python
threads that run single-threaded BLAS (the caller limits BLAS threads), and a serial kernel per
block turns them into ``||x||^2 + ||c||^2 - 2 x.c`` (float64) and the block's partial
potentials.  Then another serial kernel per block takes the best candidate: ``closest`` and the
per-block sums used for sampling are updated from the stored cross terms.  (Serial kernels in
Python threads, not ``prange``: an OpenMP region per step costs more than its work when the
cores are shared.)

(A triangle-inequality test that skips points whose current center is far from a candidate was
tried and dropped: on Gaussian mixtures it skips at most half of the rows, less early on, and a
gathered GEMM costs more than it saves.)

Partial potentials and block sums are kept per block and added in block order, so the result
does not depend on the number of threads.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, prange
from nquant.kernels.rng import uniform64

__all__ = [
    "KPP_BLOCK",
    "kmeans_plusplus",
    "minibatch_update",
    "sq_distances",
    "uniform_fill",
]

KPP_BLOCK = 16384
"""Rows per block of the k-means++ kernels (one task of the thread pool; smaller blocks cost
more in thread-pool overhead, larger ones balance the threads worse)."""

GEMM_ROWS = 1024
"""Rows per ``cand @ X.T`` GEMM: GEMMs this small run BLAS's copy-free small-matrix kernel and
cost less in all than 8192-row ones."""


@jit_parallel
def _row_sqnorms64(X, out):
    n, d = X.shape
    for r in prange(n):
        s = 0.0
        for q in range(d):
            v = np.float64(X[r, q])
            s += v * v
        out[r] = s


@jit
def sq_distances(A, B, out):
    """``out[i, j] = ||A[i] - B[j]||^2`` in float64 (differences; small inputs only).

    Parameters
    ----------
    A : ndarray of shape (a, d), float32 or float64
    B : ndarray of shape (b, d), float32 or float64
    out : ndarray of shape (a, >= b), float64
    """
    d = A.shape[1]
    for i in range(A.shape[0]):
        for j in range(B.shape[0]):
            s = 0.0
            for q in range(d):
                t = np.float64(A[i, q]) - np.float64(B[j, q])
                s += t * t
            out[i, j] = s


@jit
def _kpp_block_pots(G, xx, ccand, w, closest, pots):
    """``pots[t] = sum_i w_i min(closest_i, xx_i + ccand_t - 2 G[t, i])`` over one block (rows ``i``
    in order; ``G`` may have more rows than ``ccand``)."""
    n = G.shape[1]
    t = ccand.shape[0]
    weighted = w.shape[0] > 0
    for tt in range(t):
        pots[tt] = 0.0
    for i in range(n):
        cl = closest[i]
        wi = w[i] if weighted else 1.0
        for tt in range(t):
            v = xx[i] + ccand[tt] - 2.0 * G[tt, i]
            pots[tt] += wi * (v if v < cl else cl)


@jit
def _kpp_update(G, row, xx, cc, w, closest):
    """``closest = min(closest, xx + cc - 2 G[row])`` (clipped at 0) over one block.

    Returns the block's sum of ``w * closest``.
    """
    n = closest.shape[0]
    weighted = w.shape[0] > 0
    g = G[row]
    s = 0.0
    for i in range(n):
        v = xx[i] + cc - 2.0 * g[i]
        v = v if v > 0 else 0.0
        cl = closest[i]
        cl = v if v < cl else cl
        closest[i] = cl
        s += w[i] * cl if weighted else cl
    return s


@jit
def _kpp_sample(closest, w, blocksums, rvals, out):
    """``out[t]`` = first ``i`` whose running sum of ``w * closest`` reaches ``rvals[t]``.

    (``searchsorted(cumsum(w * closest), r)`` clipped to ``n - 1``, with the prefix taken over
    the block sums.)
    """
    n = closest.shape[0]
    nb = blocksums.shape[0]
    weighted = w.shape[0] > 0
    for t in range(rvals.shape[0]):
        r = rvals[t]
        acc = 0.0
        b = 0
        while b < nb - 1 and acc + blocksums[b] < r:
            acc += blocksums[b]
            b += 1
        hi = min(n, (b + 1) * KPP_BLOCK)
        pos = hi - 1
        for i in range(b * KPP_BLOCK, hi):
            acc += w[i] * closest[i] if weighted else closest[i]
            if acc >= r:
                pos = i
                break
        out[t] = pos


def kmeans_plusplus(X, n_clusters, rng, *, weights=None, n_local_trials=None, nthreads=1):
    """Greedy k-means++ seeding.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32 or float64, C-contiguous
        Best centered (the distances use the ``||x||^2 - 2x.c + ||c||^2`` identity).
    n_clusters : int
        ``1 <= n_clusters <= n``.
    rng : numpy.random.Generator
        Draws the first center (``rng.integers(n)``, or ``rng.choice(n, p=w / w.sum())`` with
        weights) and, per step, ``rng.random(n_local_trials)`` scaled by the potential.
    weights : ndarray of shape (n,), float64, optional
        Sample weights (k-means|| uses the candidates' cluster sizes).
    n_local_trials : int, optional
        Candidates per step; ``2 + int(ln(n_clusters))`` by default (scikit-learn's).
    nthreads : int
        Python threads running the block GEMMs; with more than one the caller should limit
        BLAS to one thread.

    Returns
    -------
    centers : ndarray of shape (n_clusters, d), dtype of X
    indices : ndarray of shape (n_clusters,), int64
        Rows of ``X`` chosen.
    """
    n, d = X.shape
    k = int(n_clusters)
    t = int(n_local_trials) if n_local_trials is not None else 2 + int(np.log(k))
    w = np.empty(0) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    xx = np.empty(n)
    _row_sqnorms64(X, xx)
    nb = -(-n // KPP_BLOCK)
    closest = np.full(n, np.inf)
    blocksums = np.empty(nb)
    pots = np.empty((nb, t))
    # cross terms (candidates x rows): BLAS runs a candidate count that is a multiple of 8 faster
    # (its register blocking), so the candidates are padded with copies of the last one
    tp = -(-t // 8) * 8
    G = np.empty((tp, n), X.dtype)
    candp = np.empty((tp, d), X.dtype)
    ids = np.empty(t, np.int64)
    centers = np.empty((k, d), X.dtype)
    indices = np.empty(k, np.int64)

    if w.shape[0]:
        first = int(rng.choice(n, p=w / w.sum()))
    else:
        first = int(rng.integers(n))
    indices[0] = first
    centers[0] = X[first]

    def wb(s, e):
        return w[s:e] if w.shape[0] else w

    def first_block(b, c):
        s, e = b * KPP_BLOCK, min(n, (b + 1) * KPP_BLOCK)
        g = np.matmul(c, X[s:e].T)
        blocksums[b] = _kpp_update(g, 0, xx[s:e], xx[first], wb(s, e), closest[s:e])

    def trial_block(b, ccand):
        s, e = b * KPP_BLOCK, min(n, (b + 1) * KPP_BLOCK)
        for s2 in range(s, e, GEMM_ROWS):  # small GEMMs: OpenBLAS' small-matrix path, no packing
            e2 = min(e, s2 + GEMM_ROWS)
            np.matmul(candp, X[s2:e2].T, out=G[:, s2:e2])
        _kpp_block_pots(G[:, s:e], xx[s:e], ccand, wb(s, e), closest[s:e], pots[b])

    def update_block(b, row, cc):
        s, e = b * KPP_BLOCK, min(n, (b + 1) * KPP_BLOCK)
        blocksums[b] = _kpp_update(G[:, s:e], row, xx[s:e], cc, wb(s, e), closest[s:e])

    nthreads = max(1, min(int(nthreads), nb))
    ex = ThreadPoolExecutor(nthreads, thread_name_prefix="nquant-kpp") if nthreads > 1 else None
    try:
        def run(fn, *args):
            if ex is None:
                for b in range(nb):
                    fn(b, *args)
            else:
                list(ex.map(lambda b: fn(b, *args), range(nb)))

        run(first_block, np.ascontiguousarray(X[first:first + 1]))
        for s in range(1, k):
            pot = blocksums.sum()
            rvals = rng.random(t) * pot
            _kpp_sample(closest, w, blocksums, rvals, ids)
            candp[:t] = X[ids]
            candp[t:] = candp[t - 1]
            ccand = xx[ids]
            run(trial_block, ccand)
            best = int(np.argmin(pots.sum(axis=0)))
            indices[s] = ids[best]
            centers[s] = candp[best]
            run(update_block, best, ccand[best])
    finally:
        if ex is not None:
            ex.shutdown()
    return centers, indices


@jit
def minibatch_update(centers, weight_sums, sums, counts):
    """Mini-batch step: move each center to the running mean of all points it has received.

    ``c_j <- (c_j W_j + S_j) / (W_j + n_j)``, ``W_j <- W_j + n_j`` for the centers with
    ``n_j > 0`` points in the batch (scikit-learn's ``_mini_batch_step`` without reassignment).

    Parameters
    ----------
    centers : ndarray of shape (k, d), float32 or float64
        Updated in place.
    weight_sums : ndarray of shape (k,), float64
        Points received so far per center; updated in place.
    sums : ndarray of shape (k, d), float64
        The batch's per-center sums.
    counts : ndarray of shape (k,), int64
        The batch's per-center counts.

    Returns
    -------
    float
        Squared shift of the centers, summed.
    """
    k, d = centers.shape
    shift = 0.0
    for j in range(k):
        nj = counts[j]
        if nj == 0:
            continue
        tot = weight_sums[j] + nj
        for q in range(d):
            old = np.float64(centers[j, q])
            new = (old * weight_sums[j] + sums[j, q]) / tot
            centers[j, q] = new
            diff = np.float64(centers[j, q]) - old
            shift += diff * diff
        weight_sums[j] = tot
    return shift


@jit
def uniform_fill(key, start, out):
    """``out[i] = uniform64(key, start + i)``: k-means|| sampling keyed by the global row index."""
    for i in range(out.shape[0]):
        out[i] = uniform64(key, start + i)
