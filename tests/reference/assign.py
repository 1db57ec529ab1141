"""Slow NumPy references of nearest-centre assignment (``nquant.kernels.assign``), float64 throughout.
"""

import numpy as np


def sq_dists(X, C):
    """(n, k) squared distances from exact differences in float64."""
    X = np.asarray(X, np.float64)
    C = np.asarray(C, np.float64)
    return ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)


def assign(X, C):
    """Nearest center (lowest index on ties) and its squared distance."""
    D = sq_dists(X, C)
    labels = D.argmin(axis=1) if D.shape[0] else np.empty(0, np.int64)
    return labels, D[np.arange(D.shape[0]), labels]


def margin(X, C):
    """Per row: second-smallest minus smallest squared distance (inf for k = 1)."""
    D = np.sort(sq_dists(X, C), axis=1)
    return D[:, 1] - D[:, 0] if D.shape[1] > 1 else np.full(D.shape[0], np.inf)


def partial_sums(X, labels, k):
    """Per-label sums (float64) and counts."""
    X = np.asarray(X, np.float64)
    sums = np.zeros((k, X.shape[1]))
    np.add.at(sums, labels, X)
    return sums, np.bincount(labels, minlength=k)
