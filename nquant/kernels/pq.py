"""Product quantization: encode (with Lloyd partial sums), decode, lookup tables, search, matmul.

Layout: ``d = M * ds``; sub-space ``m`` is columns ``[m*ds, (m+1)*ds)``; ``K = 2**nbits``
centroids per sub-space.  Codebooks are ``C`` of shape (M, K, ds); the encoder uses their
transpose ``CT`` (M, ds, K) so that the direct argmin kernel of :mod:`nquant.kernels.assign`
(:func:`~nquant.kernels.assign.argmin_strip`, squared differences, rows innermost) vectorizes.

Codes: ``nbits=8`` gives one uint8 per sub-space, shape (n, M); ``nbits=4`` packs two sub-spaces
per byte, the first (even ``m``) in the high nibble, shape (n, ceil(M/2)); an odd ``M`` leaves the
last low nibble 0.

Search (seed 001's four steps: prototypes, encoding, table construction, aggregation): per query,
a table ``T[m, j]`` = squared distance (or inner product) between the query's sub-vector ``m``
and centroid ``j``; the distance to a code is ``sum_m T[m, code_m]``.  Tables are turned into
*byte tables* ``BT[p, b]`` of 256 entries per code byte (for 4-bit codes
``BT[p, b] = T[2p, b >> 4] + T[2p+1, b & 15]``) so one scan kernel serves both widths.  The scan
keeps, per query and code range, the ``k`` smallest ``(distance, index)`` pairs in a sorted
buffer (ties to the lower index); ranges are merged afterwards, so the result does not depend
on how the codes were split across threads.  Inner products are searched as negated tables.

Tables, byte tables and the merge are serial kernels (small work: a parallel region costs more
than it saves when the cores are shared); the scan, encoding, decoding and ``lut_dot`` are
parallel over rows, queries or code ranges.

``dot``: ``A @ B`` for the rows of ``A`` encoded as codes: per sub-space the tables
``C[m] @ B[m*ds:(m+1)*ds]`` (K, p) (NumPy GEMMs) are summed along each code.
"""

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, prange
from nquant.kernels.assign import STRIP, argmin_strip

__all__ = [
    "ENCODE_GROUP",
    "byte_tables",
    "decode",
    "encode_pass",
    "lut_dot",
    "lut_search",
    "merge_topk",
    "tables",
    "tables_parallel",
]

ENCODE_GROUP = 4096
"""Rows per parallel task when encoding (fits use at most 64 groups, one partial sum each)."""

SCAN_QUERIES = 8
"""Queries scanned together over a block of codes (their tables stay in L2)."""

SCAN_CODES = 4096
"""Codes per block of the scan."""


@jit_parallel
def encode_pass(X, CT, nbits, codes, sums, counts, d2sum, accumulate, group):
    """Encode rows (and, for Lloyd, accumulate per-centroid sums).

    Parameters
    ----------
    X : ndarray of shape (n, M * ds), float32 or float64
    CT : ndarray of shape (M, ds, K), dtype of X
        Transposed codebooks.
    nbits : int
        8 or 4.
    codes : ndarray of shape (n, M) or (n, ceil(M/2)), uint8
        Output.
    sums : ndarray of shape (ngroups, M, K, ds), float64
        In/out partial sums per row group (shape (ngroups, 0, 0, 0) when not accumulating).
    counts : ndarray of shape (ngroups, M, K), int64
        In/out partial counts.
    d2sum : ndarray of shape (ngroups,), float64
        Output: sum of squared quantization errors per group.
    accumulate : bool
    group : int
        Rows per group; ``ngroups = d2sum.shape[0]`` must cover ``n``.
    """
    n = X.shape[0]
    M, ds, _ = CT.shape
    ngroups = d2sum.shape[0]
    for g in prange(ngroups):
        xt = np.empty((ds, STRIP), X.dtype)
        acc = np.empty(STRIP, X.dtype)
        best = np.empty(STRIP, X.dtype)
        idx = np.empty(STRIP, np.int32)
        s = 0.0
        lo = g * group
        hi = min(n, lo + group)
        for r0 in range(lo, hi, STRIP):
            w = min(STRIP, hi - r0)
            for m in range(M):
                argmin_strip(X, r0, w, m * ds, CT[m], xt, acc, best, idx)
                if nbits == 8:
                    for i in range(w):
                        codes[r0 + i, m] = np.uint8(idx[i])
                elif m % 2 == 0:
                    for i in range(w):
                        codes[r0 + i, m // 2] = np.uint8(idx[i] << 4)
                else:
                    for i in range(w):
                        codes[r0 + i, m // 2] |= np.uint8(idx[i])
                for i in range(w):
                    s += best[i]
                if accumulate:
                    cnt = counts[g, m]
                    sm = sums[g, m]
                    c0 = m * ds
                    for i in range(w):
                        j = idx[i]
                        cnt[j] += 1
                        xr = X[r0 + i]
                        row = sm[j]
                        for q in range(ds):
                            row[q] += xr[c0 + q]
        d2sum[g] = s


@jit
def _code(codes, i, m, nbits):
    if nbits == 8:
        return np.int64(codes[i, m])
    b = codes[i, m // 2]
    return np.int64(b >> 4) if m % 2 == 0 else np.int64(b & 15)


@jit_parallel
def decode(codes, C, nbits, out):
    """``out[i, m*ds:(m+1)*ds] = C[m, code(i, m)]``.

    Parameters
    ----------
    codes : ndarray of shape (n, M) or (n, ceil(M/2)), uint8
    C : ndarray of shape (M, K, ds), float32 or float64
    nbits : int
    out : ndarray of shape (n, M * ds), dtype of C
    """
    n = out.shape[0]
    M, _, ds = C.shape
    for i in prange(n):
        o = out[i]
        for m in range(M):
            c = C[m, _code(codes, i, m, nbits)]
            for q in range(ds):
                o[m * ds + q] = c[q]


@jit
def _query_tables(Q, qi, CT, metric, acc, out):
    M, ds, K = CT.shape
    for m in range(M):
        for j in range(K):
            acc[j] = 0.0
        for q in range(ds):
            a = np.float64(Q[qi, m * ds + q])
            c = CT[m, q]
            if metric == 0:
                for j in range(K):
                    t = a - c[j]
                    acc[j] += t * t
            else:
                for j in range(K):
                    acc[j] += a * c[j]
        for j in range(K):
            out[qi, m, j] = acc[j]


@jit
def tables(Q, CT, metric, out):
    """Per-query lookup tables (serial; see :func:`tables_parallel`).

    Parameters
    ----------
    Q : ndarray of shape (nq, M * ds), float32 or float64
    CT : ndarray of shape (M, ds, K), float64
        Transposed codebooks.
    metric : int
        0: squared L2 distance ``||q_m - c_mj||^2``; 1: inner product ``q_m . c_mj``.
    out : ndarray of shape (nq, M, K), float32
        Computed in float64 (differences for L2), stored in float32.
    """
    acc = np.empty(CT.shape[2])
    for qi in range(Q.shape[0]):
        _query_tables(Q, qi, CT, metric, acc, out)


@jit_parallel
def tables_parallel(Q, CT, metric, out):
    """:func:`tables`, parallel over the queries (for many queries)."""
    for qi in prange(Q.shape[0]):
        acc = np.empty(CT.shape[2])
        _query_tables(Q, qi, CT, metric, acc, out)


@jit
def byte_tables(T, nbits, sign, out):
    """Tables indexed by code bytes: ``out[qi, p, b]`` (see the module docstring).

    Parameters
    ----------
    T : ndarray of shape (nq, M, K), float32
    nbits : int
        8 (``K = 256``, ``out`` is ``sign * T``) or 4 (``K = 16``).
    sign : float
        1.0, or -1.0 to search the largest values.
    out : ndarray of shape (nq, M, 256) or (nq, ceil(M/2), 256), float32
    """
    nq, M, _ = T.shape
    nb = out.shape[1]
    for qi in range(nq):
        for p in range(nb):
            for b in range(256):
                if nbits == 8:
                    v = T[qi, p, b]
                else:
                    v = T[qi, 2 * p, b >> 4]
                    if 2 * p + 1 < M:
                        v += T[qi, 2 * p + 1, b & 15]
                out[qi, p, b] = sign * v


@jit
def _insert(td, ti, v, i):
    """Insert ``(v, i)`` into the sorted buffers, dropping the last (caller checked v < td[-1])."""
    p = td.shape[0] - 1
    while p > 0 and td[p - 1] > v:
        td[p] = td[p - 1]
        ti[p] = ti[p - 1]
        p -= 1
    td[p] = v
    ti[p] = i


@jit
def _scan_block(Tf, codes, c0, c1, dist):
    """``dist[i - c0] = sum_p Tf[p * 256 + codes[i, p]]`` for ``i`` in ``[c0, c1)``; returns the min.

    Four codes at a time: four independent sums keep the loads in flight (close to the load
    ports' bound).  Sums run over ``p`` in order in
    float32.  (Stopping sums that exceed the current k-th best half way was tried: on
    high-dimensional data partial sums rarely exceed it and the branch cost more than it saved.)
    """
    nb = codes.shape[1]
    mn = np.float32(np.inf)
    i = c0
    while i + 4 <= c1:
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        s3 = np.float32(0.0)
        for p in range(nb):
            b = p * 256
            s0 += Tf[b + codes[i, p]]
            s1 += Tf[b + codes[i + 1, p]]
            s2 += Tf[b + codes[i + 2, p]]
            s3 += Tf[b + codes[i + 3, p]]
        dist[i - c0] = s0
        dist[i + 1 - c0] = s1
        dist[i + 2 - c0] = s2
        dist[i + 3 - c0] = s3
        m01 = s0 if s0 < s1 else s1
        m23 = s2 if s2 < s3 else s3
        m = m01 if m01 < m23 else m23
        mn = m if m < mn else mn
        i += 4
    while i < c1:
        s = np.float32(0.0)
        for p in range(nb):
            s += Tf[p * 256 + codes[i, p]]
        dist[i - c0] = s
        mn = s if s < mn else mn
        i += 1
    return mn


@jit_parallel
def lut_search(BT, codes, nsplit, outD, outI):
    """Top-k smallest ``sum_p BT[q, p, codes[i, p]]`` per query and code range.

    Parameters
    ----------
    BT : ndarray of shape (nq, nb, 256), float32
        Byte tables.
    codes : ndarray of shape (n, nb), uint8
    nsplit : int
        Code ranges per query (``i`` in ``[s*n//nsplit, (s+1)*n//nsplit)``).
    outD : ndarray of shape (nq, nsplit, k), float32
        Output: per range, the ``k`` smallest sums ascending (+inf where fewer).
    outI : ndarray of shape (nq, nsplit, k), int64
        Output: their code indices (-1 where fewer); ties keep the lower index first.

    The sum for code ``i`` adds the bytes' table entries in byte order in float32 (the same
    value whatever the split).  NaN sums are never selected.
    """
    nq, nb, _ = BT.shape
    n = codes.shape[0]
    k = outD.shape[2]
    ngq = (nq + SCAN_QUERIES - 1) // SCAN_QUERIES
    for task in prange(ngq * nsplit):
        gq = task // nsplit
        part = task % nsplit
        q0 = gq * SCAN_QUERIES
        q1 = min(nq, q0 + SCAN_QUERIES)
        lo = part * n // nsplit
        hi = (part + 1) * n // nsplit
        td = np.full((SCAN_QUERIES, k), np.inf, np.float32)
        ti = np.full((SCAN_QUERIES, k), -1, np.int64)
        dist = np.empty(SCAN_CODES, np.float32)
        for c0 in range(lo, hi, SCAN_CODES):
            c1 = min(hi, c0 + SCAN_CODES)
            for qi in range(q0, q1):
                tq = td[qi - q0]
                iq = ti[qi - q0]
                thr = tq[k - 1]
                if not _scan_block(BT[qi].reshape(nb * 256), codes, c0, c1, dist) < thr:
                    continue  # nothing in this block enters the top-k
                for i in range(c1 - c0):
                    v = dist[i]
                    if v < thr:
                        _insert(tq, iq, v, c0 + i)
                        thr = tq[k - 1]
        for qi in range(q0, q1):
            for r in range(k):
                outD[qi, part, r] = td[qi - q0, r]
                outI[qi, part, r] = ti[qi - q0, r]


@jit
def merge_topk(pD, pI, D, I):
    """Merge sorted per-range lists into the global top-k by ``(distance, index)``.

    Parameters
    ----------
    pD : ndarray of shape (nq, nsplit, kk), float32
    pI : ndarray of shape (nq, nsplit, kk), int64
        Per-range lists sorted by ``(distance, index)``; index -1 marks an empty slot.
    D : ndarray of shape (nq, k), float32
        Output (+inf where fewer than ``k`` codes).
    I : ndarray of shape (nq, k), int64
        Output (-1 where fewer than ``k`` codes).
    """
    nq, ns, kk = pD.shape
    k = D.shape[1]
    for qi in range(nq):
        ptr = np.zeros(ns, np.int64)
        for r in range(k):
            bs = -1
            bd = np.inf
            bi = -1
            for s in range(ns):
                p = ptr[s]
                if p < kk and pI[qi, s, p] >= 0:
                    d = pD[qi, s, p]
                    i = pI[qi, s, p]
                    if bs < 0 or d < bd or (d == bd and i < bi):
                        bs = s
                        bd = d
                        bi = i
            if bs < 0:
                D[qi, r] = np.inf
                I[qi, r] = -1
            else:
                D[qi, r] = bd
                I[qi, r] = bi
                ptr[bs] += 1


@jit_parallel
def lut_dot(codes, T, nbits, out):
    """``out[i] = sum_m T[m, code(i, m)]`` (approximate row ``i`` of ``A @ B``).

    Parameters
    ----------
    codes : ndarray of shape (n, M) or (n, ceil(M/2)), uint8
    T : ndarray of shape (M, K, p), float32 or float64
        ``T[m] = C[m] @ B[m*ds:(m+1)*ds]``.
    nbits : int
    out : ndarray of shape (n, p), dtype of T
    """
    n, p = out.shape
    M = T.shape[0]
    for i in prange(n):
        o = out[i]
        for c in range(p):
            o[c] = 0
        for m in range(M):
            t = T[m, _code(codes, i, m, nbits)]
            for c in range(p):
                o[c] += t[c]
