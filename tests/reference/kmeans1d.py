"""Slow, obviously correct NumPy references of exact 1-D k-means (``nquant.kernels.kmeans1d``).

Cluster costs are summed directly (no prefix sums, no SMAWK).  Sizes: a few hundred values.
"""

import numpy as np

from tests.reference.asq_dp import distinct


def kmeans_dp(x, k, w=None):
    """O(k n^2) DP of exact 1-D k-means with directly summed cluster SSEs: the optimal SSE."""
    vals, wts = distinct(x, w)
    n = vals.size

    def sse(a, b):
        ww = wts[a:b]
        tw = ww.sum()
        if b <= a or tw == 0:
            return 0.0
        mu = np.sum(ww * vals[a:b]) / tw
        return float(np.sum(ww * (vals[a:b] - mu) ** 2))

    C = np.zeros((n + 1, n + 1))
    for a in range(n + 1):
        for b in range(a + 1, n + 1):
            C[a, b] = sse(a, b)
    D = C[0].copy()
    for _ in range(2, k + 1):
        D = np.array([min(D[a] + C[a, b] for a in range(b + 1)) for b in range(n + 1)])
    return float(D[n])


def sse_nearest(x, centers, w=None):
    """``sum w (x - nearest centre)^2`` (direct)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
    c = np.asarray(centers, dtype=np.float64)
    d2 = np.min((x[:, None] - c[None, :]) ** 2, axis=1)
    return float(np.sum(w * d2))
