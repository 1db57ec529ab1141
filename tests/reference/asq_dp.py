"""Slow, obviously correct NumPy references of the ASQ solvers (``nquant.kernels.asq_dp``).

Every cost is summed point by point (no prefix sums, no SMAWK, no centring tricks), so these
functions are independent of the kernels they check.  Sizes: a few hundred values at most.
"""

import itertools

import numpy as np


def distinct(x, w=None):
    """Distinct values of ``x`` (ascending, float64) and their summed weights."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
    vals, inv = np.unique(x, return_inverse=True)
    wts = np.bincount(inv, weights=w, minlength=vals.size)
    return vals, wts


def variance_sum(x, levels, w=None):
    """``sum w (b - x)(x - a)`` with a, b the neighbouring levels (levels must cover x)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
    q = np.sort(np.asarray(levels, dtype=np.float64))
    total = 0.0
    for xi, wi in zip(x, w):
        a = q[q <= xi].max()
        b = q[q >= xi].min()
        total += wi * (b - xi) * (xi - a)
    return total


def interval_cost(vals, wts, k, j):
    """Sum of rounding variances of the points strictly between vals[k] and vals[j] (direct)."""
    inner = slice(k + 1, j)
    v = vals[inner]
    return float(np.sum(wts[inner] * (vals[j] - v) * (v - vals[k])))


def asq_dp(x, s, w=None):
    """O(s n^2) DP with point-by-point interval costs (no SMAWK): the optimal objective."""
    vals, wts = distinct(x, w)
    n = vals.size
    if n <= s:
        return 0.0
    C = np.zeros((n, n))
    for k in range(n):
        for j in range(k + 1, n):
            C[k, j] = interval_cost(vals, wts, k, j)
    F = C[0].copy()
    for _ in range(3, s + 1):
        F = np.array([min(F[k] + C[k, j] for k in range(j + 1)) for j in range(n)])
    return float(F[n - 1])


def asq_exhaustive(x, s, w=None):
    """Minimum over every level set of at most ``s`` distinct values of x containing min and max."""
    vals, wts = distinct(x, w)
    n = vals.size
    if n <= s:
        return 0.0
    best = np.inf
    inner = range(1, n - 1)
    for r in range(s - 1):
        for comb in itertools.combinations(inner, r):
            q = vals[[0, *comb, n - 1]]
            best = min(best, variance_sum(vals, q, wts))
    return float(best)


def grid_dp(x, s, edges, w=None):
    """Optimal objective when the levels are restricted to the grid ``edges`` (which must contain
    min x and max x as its end points): DP over grid points, costs summed over the data."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
    e = np.asarray(edges, dtype=np.float64)
    g = e.size

    def cost(k, j):
        sel = (x > e[k]) & (x < e[j])
        return float(np.sum(w[sel] * (e[j] - x[sel]) * (x[sel] - e[k])))

    C = np.full((g, g), np.inf)
    for k in range(g):
        C[k, k] = 0.0
        for j in range(k + 1, g):
            C[k, j] = cost(k, j)
    F = C[0].copy()
    for _ in range(3, s + 1):
        F = np.array([min(F[k] + C[k, j] for k in range(j + 1)) for j in range(g)])
    return float(F[g - 1])
