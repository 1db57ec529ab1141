"""Mergeable partial statistics over the row layout: min/max and histograms.

Partials merge associatively (min of mins, max of maxs, sums of counts), so
one chunk or a tree of chunks give the same fitted parameters exactly.  NaN is
ignored by min/max and counted; an infinity shows up as an infinite min or max
(the API decides what either means).
"""

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, prange

LANES = 64


@jit_parallel
def row_minmax(x):
    """Min and max of each row (NaN ignored) and the number of NaN per row.

    64 independent running minima/maxima per row let the loop vectorize.

    Parameters
    ----------
    x : ndarray of shape (R, L), float32 or float64

    Returns
    -------
    mins, maxs : ndarray of shape (R,), dtype of ``x`` (+inf / -inf for empty rows)
    n_nan : ndarray of shape (R,), int64
    """
    R, L = x.shape
    mins = np.empty(R, x.dtype)
    maxs = np.empty(R, x.dtype)
    n_nan = np.zeros(R, np.int64)
    nfull = L - L % LANES
    for r in prange(R):
        lo = np.full(LANES, np.inf, x.dtype)
        hi = np.full(LANES, -np.inf, x.dtype)
        nn = np.zeros(LANES, np.int32)
        for j0 in range(0, nfull, LANES):
            for k in range(LANES):
                v = x[r, j0 + k]
                lo[k] = min(v, lo[k])  # min(NaN, m) is m: NaN is ignored
                hi[k] = max(v, hi[k])
                nn[k] += np.int32(v != v)
        for j in range(nfull, L):
            v = x[r, j]
            lo[0] = min(v, lo[0])
            hi[0] = max(v, hi[0])
            nn[0] += np.int32(v != v)
        mins[r] = lo.min()
        maxs[r] = hi.max()
        n_nan[r] = nn.sum()
    return mins, maxs, n_nan


@jit_parallel
def column_minmax(x, n_tasks):
    """Min and max of each column (NaN ignored) and the number of NaN per column.

    Parameters
    ----------
    x : ndarray of shape (R, L), float32 or float64
    n_tasks : int, number of row blocks reduced in parallel

    Returns
    -------
    mins, maxs : ndarray of shape (L,), dtype of ``x``
    n_nan : ndarray of shape (L,), int64
    """
    R, L = x.shape
    T = max(1, min(R, n_tasks))
    per = (R + T - 1) // T
    lo = np.full((T, L), np.inf, x.dtype)
    hi = np.full((T, L), -np.inf, x.dtype)
    nn = np.zeros((T, L), np.int64)
    for t in prange(T):
        for r in range(t * per, min(R, (t + 1) * per)):
            for j in range(L):
                v = x[r, j]
                lo[t, j] = min(v, lo[t, j])
                hi[t, j] = max(v, hi[t, j])
                nn[t, j] += v != v
    mins = np.empty(L, x.dtype)
    maxs = np.empty(L, x.dtype)
    n_nan = np.zeros(L, np.int64)
    for j in range(L):
        mins[j] = lo[:, j].min()
        maxs[j] = hi[:, j].max()
        n_nan[j] = nn[:, j].sum()
    return mins, maxs, n_nan


@jit_parallel
def histogram_rows(x, row_group, col_step, lo, hi, n_bins, n_tasks):
    """Per-group histogram counts on equal bins over ``[lo[g], hi[g]]``.

    Values outside the range go to the end bins; NaN and infinities are skipped.
    Counts are integers, so merged histograms are exact for any chunking.

    Returns
    -------
    count : ndarray of shape (G, n_bins), int64
    """
    R, L = x.shape
    G = lo.shape[0]
    nthreads = max(1, min(R, n_tasks))
    per = (R + nthreads - 1) // nthreads
    cnt = np.zeros((nthreads, G, n_bins), np.int64)
    for t in prange(nthreads):
        for r in range(t * per, min(R, (t + 1) * per)):
            for j in range(L):
                g = row_group[r] + j * col_step
                v = np.float64(x[r, j])
                if not abs(v) < np.inf:
                    continue
                width = hi[g] - lo[g]
                b = int((v - lo[g]) / width * n_bins) if width > 0 else 0
                b = min(max(b, 0), n_bins - 1)
                cnt[t, g, b] += 1
    return cnt.sum(axis=0)
