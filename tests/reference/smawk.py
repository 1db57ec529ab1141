"""Slow NumPy reference of row minima of ``A[j, k] = base[k] + cost(k, j)`` (``nquant.kernels.smawk``).

Every entry is evaluated (O(n^2)); no monotonicity is assumed.
"""

import numpy as np


def row_minima(base, cost):
    """Row minima over ``k <= j`` of ``base[k] + cost[k, j]`` for ``base`` (n,) and ``cost`` (n, n).

    Returns the minima (n,) float64 and the smallest minimising ``k`` per row (n,) int64.
    """
    n = len(base)
    A = np.full((n, n), np.inf)
    for j in range(n):
        for k in range(j + 1):
            A[j, k] = base[k] + cost[k, j]
    k = A.argmin(axis=1) if n else np.zeros(0, np.int64)  # argmin: the first of equal values
    return A[np.arange(n), k], k
