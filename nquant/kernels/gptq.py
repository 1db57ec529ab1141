"""Error-feedback rounding (OBQ / GPTQ): the blocked inner loop.

Given working weights ``W`` (R, n) in float64, whose columns are visited in order, and
the upper Cholesky factor ``U`` of the (damped) inverse Hessian, ``H^-1 = U^T U``, each
column ``j`` is rounded and its error is spread over the columns not yet rounded::

    q_j      = Q(w_j)                      (nearest code, per element of the column)
    e_j      = (w_j - q_j) / U[j, j]
    w_{j+1:} = w_{j+1:} - e_j U[j, j+1:]

(Frantar et al., "GPTQ", 2022, algorithm 1).  Rows are independent, so the kernel runs
rows in parallel; columns are processed in blocks ``[i1, i2)`` as in GPTQ's "lazy batch"
update: :func:`gptq_block` applies the updates inside the block (its ``U`` block, at most
``B x B`` float64, stays in L2) and returns the scaled errors ``E`` (R, i2 - i1); the caller
applies the rest with one BLAS product, ``W[:, i2:] -= E @ U[i1:i2, i2:]``.

The quantizer ``Q`` is the scheme's nearest rounding, evaluated in float64:

- ``kind == AFFINE``: ``code = clip(rint((w - offset[g]) * inv[g]) + c0[g], 0, hi)``,
  ``q = (code - c0[g]) * scale[g] + offset[g]`` (the arithmetic of
  :mod:`nquant.kernels.affine`, in float64);
- ``kind == TABLE``: ``code = #{i : w > thr[i]}`` over sorted thresholds (the nearest-level
  table of :mod:`nquant.kernels.codebook1d`, ties to the lower level), ``q = levels[code]``;
- ``kind == SCALED_TABLE``: the table of ``w * inv[g]``, ``q = levels[code] * scale[g]``
  (absmax-scaled blocks coded to a grid: ``inv`` the reciprocal of the block's absmax, 0 for an
  all-zero block, ``scale`` the absmax).

``g = gidx[r, j]`` is the parameter group of element ``(r, j)`` (per channel, per block,
per tensor: any layout).
"""

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, prange

AFFINE = 0
TABLE = 1
SCALED_TABLE = 2


@jit
def _table_code(thr, w):
    """``#{i : thr[i] < w}`` for sorted ``thr`` (binary search)."""
    lo = 0
    hi = thr.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if thr[mid] < w:
            lo = mid + 1
        else:
            hi = mid
    return lo


@jit
def _quantize_value(w, g, kind, inv, scale, offset, c0, hi, thr, levels):
    """``(code, q)`` of one value ``w`` of group ``g``."""
    if kind == AFFINE:
        t = np.rint((w - offset[g]) * inv[g]) + c0[g]
        t = min(max(t, 0.0), hi)
        return np.int64(t), (t - c0[g]) * scale[g] + offset[g]
    if kind == SCALED_TABLE:
        k = _table_code(thr, w * inv[g])
        return np.int64(k), levels[k] * scale[g]
    k = _table_code(thr, w)
    return np.int64(k), levels[k]


@jit_parallel
def gptq_block(W, U, i1, i2, gidx, kind, inv, scale, offset, c0, hi, thr, levels, codes, E):
    """Round columns ``i1..i2-1`` of ``W`` with error feedback inside the block.

    Parameters
    ----------
    W : ndarray of shape (R, n), float64, C-contiguous
        Working weights; columns ``i1 + 1 .. i2 - 1`` are updated in place.
    U : ndarray of shape (n, n), float64, C-contiguous
        Upper Cholesky factor of the damped inverse Hessian (``H^-1 = U^T U``).
    i1, i2 : int, the column block ``[i1, i2)``
    gidx : ndarray of shape (R, n), int64, parameter group of every element
    kind : int, ``AFFINE``, ``TABLE`` or ``SCALED_TABLE``
    inv, scale, offset, c0 : ndarray of shape (G,), float64 (affine parameters; ``inv`` and
        ``scale`` of SCALED_TABLE; unused for TABLE)
    hi : float, largest code of a finite value (affine)
    thr : ndarray of shape (K - 1,), float64, sorted nearest-level thresholds (the tables)
    levels : ndarray of shape (K,), float64 (the tables)
    codes : ndarray of shape (R, n), uint8, columns ``i1..i2-1`` written
    E : ndarray of shape (R, i2 - i1), float64, written: ``(w_j - q_j) / U[j, j]``
    """
    R = W.shape[0]
    for r in prange(R):
        for j in range(i1, i2):
            w = W[r, j]
            code, q = _quantize_value(w, gidx[r, j], kind, inv, scale, offset, c0, hi, thr, levels)
            codes[r, j] = np.uint8(code)
            e = (w - q) / U[j, j]
            E[r, j - i1] = e
            for k in range(j + 1, i2):
                W[r, k] -= e * U[j, k]


@jit_parallel
def row_objective(E, HE):
    """``sum_j E[r, j] * HE[r, j]`` per row (the quadratic form ``e_r H e_r^T`` given ``HE = E H``).

    Parameters
    ----------
    E, HE : ndarray of shape (R, n), float64

    Returns
    -------
    ndarray of shape (R,), float64
    """
    R, n = E.shape
    out = np.zeros(R)
    for r in prange(R):
        s = 0.0
        for j in range(n):
            s += E[r, j] * HE[r, j]
        out[r] = s
    return out
