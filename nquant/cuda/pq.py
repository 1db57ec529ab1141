"""CUDA twin of :mod:`nquant.kernels.pq`: product-quantization encode, decode, tables and search.

Same functions, arguments and layouts as the CPU module (``d = M * ds``, codebooks
``C`` (M, K, ds) and their transpose ``CT`` (M, ds, K), 8-bit codes one byte per
sub-space, 4-bit codes two sub-spaces per byte with the even one in the high nibble).

- :func:`encode_pass`: one thread per (row, code byte); squared differences in the data's
  dtype in the CPU's order, every product rounded on its own (``mul_rn``), ties to the
  lowest centroid: codes are bit-identical.  Per-group partial sums / counts / squared
  errors are added with atomics: counts exact, float64 sums within rounding.
- :func:`tables` (and ``tables_parallel``), :func:`byte_tables`, :func:`decode`,
  :func:`lut_dot`: one thread per output entry, the CPU's arithmetic in the CPU's order:
  bit-identical.
- :func:`lut_search`: one thread per (query, code range) scanning its range with the
  CPU's sum (the bytes' table entries in byte order, in float32) and its sorted insertion
  (``_insert``, compiled for the device) into the output lists: bit-identical for the same
  ``nsplit``; use a large ``nsplit`` on a GPU (one thread per range) and
  :func:`merge_topk`, whose result does not depend on ``nsplit``.
"""

import numpy as np
from numba import cuda

from nquant.cuda._device import mul_rn, retarget
from nquant.cuda._launch import as_device, kernel, launch, output
from nquant.kernels import pq as _cpu

__all__ = ["byte_tables", "decode", "encode_pass", "lut_dot", "lut_search", "merge_topk", "tables",
           "tables_parallel"]

_code = retarget(_cpu._code)
_insert = retarget(_cpu._insert)


# ----------------------------------------------------------------------------- encode


@kernel
def _encode(X, CT, nbits, codes, sums, counts, d2sum, accumulate, group):
    n = X.shape[0]
    M = CT.shape[0]
    ds = CT.shape[1]
    K = CT.shape[2]
    nb = codes.shape[1]
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < n * nb:
        r = t // nb
        p = t - r * nb
        g = r // group
        m0 = p if nbits == 8 else 2 * p
        m1 = m0 + 1 if nbits == 8 else min(M, m0 + 2)
        byte = np.uint8(0)
        for m in range(m0, m1):
            c0 = m * ds
            u = X[r, c0] - CT[m, 0, 0]
            best = mul_rn(u, u)
            for q in range(1, ds):
                u = X[r, c0 + q] - CT[m, q, 0]
                best += mul_rn(u, u)
            idx = 0
            for j in range(1, K):
                u = X[r, c0] - CT[m, 0, j]
                acc = mul_rn(u, u)
                for q in range(1, ds):
                    u = X[r, c0 + q] - CT[m, q, j]
                    acc += mul_rn(u, u)
                if acc < best:
                    best = acc
                    idx = j
            if nbits == 8:
                byte = np.uint8(idx)
            elif m == m0:
                byte = np.uint8(idx << 4)
            else:
                byte = np.uint8(byte | idx)
            cuda.atomic.add(d2sum, g, np.float64(best))
            if accumulate:
                cuda.atomic.add(counts, (g, m, idx), 1)
                for q in range(ds):
                    cuda.atomic.add(sums, (g, m, idx, q), np.float64(X[r, c0 + q]))
        codes[r, p] = byte
        t += stride


def encode_pass(X, CT, nbits, codes, sums, counts, d2sum, accumulate, group):
    """Encode rows (and, for Lloyd, accumulate per-centroid sums); twin of the CPU kernel.

    Parameters
    ----------
    X : array of shape (n, M * ds), float32 or float64 (host or device)
    CT : array of shape (M, ds, K), dtype of X
    nbits : int, 8 or 4
    codes : array of shape (n, M) or (n, ceil(M/2)), uint8, written
    sums : array of shape (ngroups, M, K, ds), float64, added to (shape (ngroups, 0, 0, 0)
        when not accumulating)
    counts : array of shape (ngroups, M, K), int64, added to
    d2sum : array of shape (ngroups,), float64, written: sum of squared errors per group
    accumulate : bool
    group : int, rows per group
    """
    dX = as_device(X)
    n = dX.shape[0]
    d_codes, fin_codes = output(codes)
    d_d2, fin_d2 = output(d2sum)
    d_d2.copy_to_device(np.zeros(d_d2.shape[0], np.float64))
    if accumulate:
        d_sums, fin_sums = output(sums, copy_in=True)
        d_counts, fin_counts = output(counts, copy_in=True)
    else:
        d_sums, fin_sums = cuda.to_device(np.zeros((1, 1, 1, 1))), lambda: None
        d_counts, fin_counts = cuda.to_device(np.zeros((1, 1, 1), np.int64)), lambda: None
    launch(_encode, n * d_codes.shape[1], dX, as_device(CT, dX.dtype), int(nbits), d_codes, d_sums, d_counts,
           d_d2, bool(accumulate), int(group))
    fin_codes()
    fin_d2()
    fin_sums()
    fin_counts()


# ----------------------------------------------------------------------------- decode, tables


@kernel
def _decode(codes, C, nbits, out):
    n = out.shape[0]
    M = C.shape[0]
    ds = C.shape[2]
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < n * M:
        i = t // M
        m = t - i * M
        j = _code(codes, i, m, nbits)
        for q in range(ds):
            out[i, m * ds + q] = C[m, j, q]
        t += stride


def decode(codes, C, nbits, out):
    """``out[i, m*ds:(m+1)*ds] = C[m, code(i, m)]`` (twin of the CPU kernel)."""
    d_out, finish = output(out)
    launch(_decode, d_out.shape[0] * C.shape[0], as_device(codes, np.uint8), as_device(C, d_out.dtype),
           int(nbits), d_out)
    finish()


@kernel
def _tables(Q, CT, metric, out):
    nq = Q.shape[0]
    M = CT.shape[0]
    ds = CT.shape[1]
    K = CT.shape[2]
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < nq * M * K:
        qi = t // (M * K)
        rest = t - qi * (M * K)
        m = rest // K
        j = rest - m * K
        s = 0.0
        for q in range(ds):
            a = np.float64(Q[qi, m * ds + q])
            c = np.float64(CT[m, q, j])
            if metric == 0:
                u = a - c
                s += mul_rn(u, u)
            else:
                s += mul_rn(a, c)
        out[qi, m, j] = s
        t += stride


def tables(Q, CT, metric, out):
    """Per-query lookup tables ``out[qi, m, j]`` (twin of the CPU kernel).

    Parameters
    ----------
    Q : array of shape (nq, M * ds), float32 or float64
    CT : array of shape (M, ds, K), float64, the transposed codebooks
    metric : int, 0: squared L2 distance (of differences), 1: inner product
    out : array of shape (nq, M, K), float32: float64 sums in the CPU's order, stored in float32
    """
    d_out, finish = output(out)
    launch(_tables, d_out.shape[0] * d_out.shape[1] * d_out.shape[2], as_device(Q), as_device(CT),
           int(metric), d_out)
    finish()


def tables_parallel(Q, CT, metric, out):
    """The CPU's parallel variant of :func:`tables`; on the device the same kernel."""
    tables(Q, CT, metric, out)


@kernel
def _byte_tables(T, nbits, sign, out):
    nq = out.shape[0]
    nbt = out.shape[1]
    M = T.shape[1]
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < nq * nbt * 256:
        qi = t // (nbt * 256)
        rest = t - qi * (nbt * 256)
        p = rest // 256
        b = rest - p * 256
        if nbits == 8:
            v = T[qi, p, b]
        else:
            v = T[qi, 2 * p, b >> 4]
            if 2 * p + 1 < M:
                v += T[qi, 2 * p + 1, b & 15]
        out[qi, p, b] = sign * v
        t += stride


def byte_tables(T, nbits, sign, out):
    """Tables indexed by code bytes ``out[qi, p, b]`` (twin of the CPU kernel)."""
    d_out, finish = output(out)
    launch(_byte_tables, d_out.shape[0] * d_out.shape[1] * 256, as_device(T, np.float32), int(nbits),
           float(sign), d_out)
    finish()


# ----------------------------------------------------------------------------- search


@kernel
def _lut_search(BT, codes, nsplit, outD, outI):
    nq = BT.shape[0]
    nb = BT.shape[1]
    n = codes.shape[0]
    k = outD.shape[2]
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < nq * nsplit:
        qi = t // nsplit
        part = t - qi * nsplit
        lo = part * n // nsplit
        hi = (part + 1) * n // nsplit
        td = outD[qi, part]
        ti = outI[qi, part]
        for r in range(k):
            td[r] = np.inf
            ti[r] = -1
        thr = td[k - 1]
        T = BT[qi]
        for i in range(lo, hi):
            v = np.float32(0.0)  # in byte order, in float32: the CPU's _scan_block sum
            for p in range(nb):
                v += T[p, codes[i, p]]
            if v < thr:
                _insert(td, ti, v, i)
                thr = td[k - 1]
        t += stride


def lut_search(BT, codes, nsplit, outD, outI):
    """Top-k smallest ``sum_p BT[q, p, codes[i, p]]`` per query and code range (twin of the CPU kernel).

    Parameters
    ----------
    BT : array of shape (nq, nb, 256), float32
    codes : array of shape (n, nb), uint8
    nsplit : int, code ranges per query (``i`` in ``[s*n//nsplit, (s+1)*n//nsplit)``)
    outD : array of shape (nq, nsplit, k), float32, written (+inf where fewer)
    outI : array of shape (nq, nsplit, k), int64, written (-1 where fewer)
    """
    d_D, fin_D = output(outD)
    d_I, fin_I = output(outI)
    launch(_lut_search, d_D.shape[0] * int(nsplit), as_device(BT, np.float32), as_device(codes, np.uint8),
           int(nsplit), d_D, d_I)
    fin_D()
    fin_I()


@kernel
def _merge_topk(pD, pI, D, I, ptr):
    nq = pD.shape[0]
    ns = pD.shape[1]
    kk = pD.shape[2]
    k = D.shape[1]
    qi = cuda.grid(1)
    stride = cuda.gridsize(1)
    while qi < nq:
        for s in range(ns):
            ptr[qi, s] = 0
        for r in range(k):
            bs = -1
            bd = np.inf
            bi = -1
            for s in range(ns):
                p = ptr[qi, s]
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
                ptr[qi, bs] += 1
        qi += stride


def merge_topk(pD, pI, D, I):
    """Merge sorted per-range lists into the global top-k by ``(distance, index)`` (twin)."""
    d_D, fin_D = output(D)
    d_I, fin_I = output(I)
    dpD = as_device(pD, np.float32)
    ptr = cuda.device_array(dpD.shape[:2], np.int64)
    launch(_merge_topk, dpD.shape[0], dpD, as_device(pI, np.int64), d_D, d_I, ptr)
    fin_D()
    fin_I()


@kernel
def _lut_dot(codes, T, nbits, out):
    n = out.shape[0]
    p = out.shape[1]
    M = T.shape[0]
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < n * p:
        i = t // p
        c = t - i * p
        out[i, c] = 0
        for m in range(M):
            out[i, c] += T[m, _code(codes, i, m, nbits), c]
        t += stride


def lut_dot(codes, T, nbits, out):
    """``out[i] = sum_m T[m, code(i, m)]`` (approximate row ``i`` of ``A @ B``); twin of the CPU kernel."""
    d_out, finish = output(out)
    launch(_lut_dot, d_out.shape[0] * d_out.shape[1], as_device(codes, np.uint8), as_device(T, d_out.dtype),
           int(nbits), d_out)
    finish()

