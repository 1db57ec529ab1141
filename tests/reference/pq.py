"""Slow NumPy references of product quantization (``nquant.kernels.pq``), float64 throughout.
"""

import numpy as np

from tests.reference.assign import assign, sq_dists
from tests.reference.bitpack import pack, unpack


def pq_encode(X, C):
    """Unpacked codes (n, M): nearest centroid per sub-space (exact distances)."""
    M, _, ds = C.shape
    codes = np.empty((X.shape[0], M), np.int64)
    for m in range(M):
        codes[:, m] = assign(X[:, m * ds:(m + 1) * ds], C[m])[0]
    return codes


def pack4(codes):
    """Two 4-bit codes per byte, row by row (``tests/reference/bitpack.py``): the first in the high
    nibble; odd M pads a zero low nibble."""
    n, M = codes.shape
    return np.array([pack(row, 4) for row in codes], np.uint8).reshape(n, (M + 1) // 2)


def unpack4(packed, M):
    """The ``M`` 4-bit codes (int64) of every row of ``packed``."""
    return np.array([unpack(row, 4, M) for row in packed], np.int64).reshape(len(packed), M)


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
