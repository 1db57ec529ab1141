"""Slow NumPy reference of GPTQ (``nquant.kernels.gptq``), without lazy batching.

One column at a time, the whole trailing part updated with an outer product, ``U`` from
``np.linalg.inv`` of the damped Hessian (not through its Cholesky factor), the nearest code by
``rint`` (affine) or by brute-force nearest level (codebook, ties to the lower level).
"""

import numpy as np

from nquant.families import blockwise, codebook, uniform
from nquant.schemes import Blockwise, Codebook
from tests.reference.affine import zero_points


def groups_of(scheme, shape):
    """Group of every element, by the definitions (block of the flat index, row, column)."""
    out, n = shape
    g = np.zeros(shape, np.int64)
    for i in range(out):
        for j in range(n):
            if isinstance(scheme, Codebook):
                g[i, j] = 0
            elif scheme.block_size is not None:
                g[i, j] = (i * n + j) // scheme.block_size
            elif scheme.axis is None:
                g[i, j] = 0
            elif scheme.axis % 2 == 0:
                g[i, j] = i
            else:
                g[i, j] = j
    return g


def inverse_factor(H, damp, perm):
    """Upper ``U`` with ``U^T U = (P H P^T, dead diagonal 1, + damp * mean diag)^-1``."""
    Hp = H[perm][:, perm].copy()
    d = np.diag(Hp).copy()
    d[d == 0] = 1.0
    Hp[np.diag_indices(len(d))] = d + damp * d.mean()
    Hinv = np.linalg.inv(Hp)
    return np.linalg.cholesky((Hinv + Hinv.T) / 2).T


def quantize_value(scheme, params, W_dtype, w, g):
    """``(code, q)`` of a float64 value in group ``g``: the scheme's nearest rounding in float64."""
    if isinstance(scheme, Blockwise):  # the value over its block's absmax (float32 reciprocal)
        levels = np.float32(scheme.codebook).astype(np.float64)
        a = float(blockwise.block_absmax(scheme, params)[g])
        inv = float(np.float32(1) / np.float32(a)) if a > 0 else 0.0
        k = int(np.argmin(np.abs(w * inv - levels)))  # ties: the lower level
        return k, levels[k] * a
    if isinstance(scheme, Codebook):
        levels = np.asarray(codebook._levels(scheme, params, uniform.compute_dtype(W_dtype)), np.float64)
        d = np.abs(w - levels)
        k = int(np.argmin(d))  # ties: the lower level
        return k, levels[k]
    qmin, qmax = scheme.qrange
    hi = qmax - qmin
    scale = float(params["scale"][g])
    inv = 1.0 / scale
    if "offset" in params:
        off, c0 = float(params["offset"][g]), 0.0
    else:
        off, c0 = 0.0, float(int(zero_points(scheme, params, len(params["scale"]))[g]) - qmin)
    t = min(max(np.rint((w - off) * inv) + c0, 0.0), hi)
    return int(t), (t - c0) * scale + off


def gptq(scheme, params, W, H, damp=0.01, act_order=False):
    """Textbook GPTQ codes (out, in) uint8: one column at a time, full trailing update."""
    out, n = W.shape
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(n)
    U = inverse_factor(H, damp, perm)
    g = groups_of(scheme, W.shape)[:, perm]
    Wp = W.astype(np.float64)[:, perm].copy()
    codes = np.zeros((out, n), np.uint8)
    for j in range(n):
        err = np.zeros(out)
        for i in range(out):
            code, q = quantize_value(scheme, params, W.dtype, Wp[i, j], g[i, j])
            codes[i, j] = code
            err[i] = (Wp[i, j] - q) / U[j, j]
        Wp[:, j + 1:] -= np.outer(err, U[j, j + 1:])
    res = np.zeros_like(codes)
    res[:, perm] = codes
    return res
