"""Slow, obvious NumPy references for nquant.kmeans, nquant.pq and their kernels (float64 throughout)."""

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


# --------------------------------------------------------------------------- product quantization
def pq_encode(X, C):
    """Unpacked codes (n, M): nearest centroid per sub-space (exact distances)."""
    M, _, ds = C.shape
    codes = np.empty((X.shape[0], M), np.int64)
    for m in range(M):
        codes[:, m] = assign(X[:, m * ds:(m + 1) * ds], C[m])[0]
    return codes


def pack4(codes):
    """Two 4-bit codes per byte, the first in the high nibble; odd M pads a zero low nibble."""
    n, M = codes.shape
    c = np.zeros((n, M + M % 2), np.uint8)
    c[:, :M] = codes
    return ((c[:, 0::2] << 4) | c[:, 1::2]).astype(np.uint8)


def unpack4(packed, M):
    hi = packed >> 4
    lo = packed & 15
    out = np.empty((packed.shape[0], 2 * packed.shape[1]), np.int64)
    out[:, 0::2] = hi
    out[:, 1::2] = lo
    return out[:, :M]


def pq_decode(codes, C):
    """Vectors from unpacked codes."""
    M = C.shape[0]
    return np.concatenate([C[m][codes[:, m]] for m in range(M)], axis=1)


def pq_tables(Q, C, metric):
    """(nq, M, K) tables: squared L2 distances or inner products, float64."""
    M, K, ds = C.shape
    Q = np.asarray(Q, np.float64)
    out = np.empty((Q.shape[0], M, K))
    for m in range(M):
        q = Q[:, m * ds:(m + 1) * ds]
        c = np.asarray(C[m], np.float64)
        out[:, m] = sq_dists(q, c) if metric == "l2" else q @ c.T
    return out


def adc(T, codes):
    """(nq, n) sums of table entries along unpacked codes."""
    nq, M, _ = T.shape
    out = np.zeros((nq, codes.shape[0]))
    for m in range(M):
        out += T[:, m, codes[:, m]]
    return out


def topk(dist, k, largest=False):
    """Top-k per row by (value, index): ascending (descending for ``largest``), lower index first."""
    n = dist.shape[1]
    key = -dist if largest else dist
    idx = np.lexsort((np.broadcast_to(np.arange(n), dist.shape), key), axis=1)[:, :k]
    return np.take_along_axis(dist, idx, 1), idx


def pq_dot(codes, C, B):
    """``decode(codes) @ B`` in float64."""
    return pq_decode(codes, np.asarray(C, np.float64)) @ np.asarray(B, np.float64)
