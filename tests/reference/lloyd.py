"""Slow NumPy references of Lloyd's algorithm, k-means++ and mini-batch updates (``nquant.kernels.lloyd``).
"""

import numpy as np

from tests.reference.assign import assign, partial_sums


def farthest(d2, m):
    """Indices of the ``m`` largest ``d2`` ordered by (-d2, index)."""
    order = np.lexsort((np.arange(d2.shape[0]), -d2))
    return order[:m]


def lloyd(X, C0, max_iter, tol_abs=0.0):
    """Lloyd's algorithm with nquant's rules.

    Each iteration assigns to the current centers and moves every center to its cluster's mean;
    an empty cluster takes the farthest points (ordered by -d2, then index); stop after the update
    whose squared shift is <= ``tol_abs``.  Returns ``centers, labels, n_iter, inertia`` with
    labels and inertia for the final centers.
    """
    X = np.asarray(X, np.float64)
    C = np.asarray(C0, np.float64).copy()
    k = C.shape[0]
    n_iter = 0
    for it in range(max_iter):
        labels, d2 = assign(X, C)
        sums, counts = partial_sums(X, labels, k)
        new = C.copy()
        nz = counts > 0
        new[nz] = sums[nz] / counts[nz, None]
        empty = np.flatnonzero(~nz)
        if empty.size:
            new[empty] = X[farthest(d2, empty.size)]
        shift = ((new - C) ** 2).sum()
        C = new
        n_iter = it + 1
        if shift <= tol_abs:
            break
    labels, d2 = assign(X, C)
    return C, labels, n_iter, d2.sum()


def kmeans_plusplus(X, k, rng, weights=None, n_local_trials=None):
    """Greedy k-means++ as scikit-learn's ``_kmeans_plusplus`` (exact distances); row indices."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    t = n_local_trials or 2 + int(np.log(k))
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    first = int(rng.choice(n, p=w / w.sum())) if weights is not None else int(rng.integers(n))
    idx = [first]
    closest = ((X - X[first]) ** 2).sum(1)
    for _ in range(1, k):
        pot = (w * closest).sum()
        r = rng.random(t) * pot
        cand = np.minimum(np.searchsorted(np.cumsum(w * closest), r), n - 1)
        dist = ((X[None, :, :] - X[cand][:, None, :]) ** 2).sum(-1)
        new = np.minimum(closest[None], dist)
        best = int(np.argmin((w[None] * new).sum(1)))
        idx.append(int(cand[best]))
        closest = new[best]
    return np.array(idx)


def minibatch_step(C, W, batch):
    """One mini-batch update (running means); returns new centers and weight sums."""
    C = np.asarray(C, np.float64).copy()
    W = np.asarray(W, np.float64).copy()
    labels, _ = assign(batch, C)
    sums, counts = partial_sums(batch, labels, C.shape[0])
    for j in np.flatnonzero(counts):
        C[j] = (C[j] * W[j] + sums[j]) / (W[j] + counts[j])
        W[j] += counts[j]
    return C, W
