"""Uniform affine quantize / dequantize over the row layout.

Data arrive as a C-contiguous ``(R, L)`` array of rows (see ``nquant._layout``);
``row_index[r]`` is the global flat index of row ``r``'s first element, so the
stochastic stream is keyed by ``row_index[r] + j`` and codes do not depend on
chunking.  Parameters live in per-group arrays of length ``G``: row ``r`` uses
group ``row_group[r]`` (``col_step == 0``) or ``row_group[r] + j`` for column
``j`` (``col_step == 1``, one group per index of the last axis).

Codes are unsigned offsets ``q - qmin`` in ``[0, hi]``.  With
``c0 = zero_point - qmin``:

    code  = clip(round((x - offset) * inv_scale) + c0, 0, hi)
    x_hat = (code - c0) * scale + offset

The integer zero-point convention has ``offset = 0``; the real-valued one has
``offset = rmin`` and ``c0 = 0``.  Arithmetic is in the dtype of ``x``
(float32 or float64); ``inv_scale`` is the reciprocal computed in that dtype.
If ``nan_code >= 0``, NaN inputs get that code and decode to NaN.
"""

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, prange
from nquant.kernels.rounding import round_value


@jit
def _encode_one(v, inv, off, c0, hi, mode, key, index):
    t = round_value((v - off) * inv, mode, key, index) + c0
    if t < 0:
        t = 0
    if t > hi:
        t = hi
    return np.uint8(t)


@jit_parallel
def quantize_affine(x, row_index, row_group, col_step, inv_scale, offset, c0, hi,
                    nan_code, mode, key, out):
    """Encode rows of ``x`` into uint8 codes.

    Parameters
    ----------
    x : ndarray of shape (R, L), float32 or float64, C-contiguous
    row_index, row_group : ndarray of shape (R,), int64
    col_step : int, 0 or 1
    inv_scale, offset, c0 : ndarray of shape (G,), dtype of ``x``
    hi : float, largest code for a finite value
    nan_code : int, code for NaN inputs, or -1
    mode : int, rounding mode (``nquant.kernels.rounding``)
    key : uint64, stream key of the seed
    out : ndarray of shape (R, L), uint8, written

    Returns
    -------
    int : number of NaN or infinite inputs (NaN excluded when ``nan_code >= 0``).
    """
    R, L = x.shape
    bad = np.zeros(R, np.int64)
    hi = x.dtype.type(hi)
    inf = np.inf
    for r in prange(R):
        g = row_group[r]
        base = row_index[r]
        nb = 0
        if col_step == 0:
            inv = inv_scale[g]
            off = offset[g]
            c = c0[g]
            for j in range(L):
                v = x[r, j]
                nb += not (abs(v) < inf)
                out[r, j] = _encode_one(v, inv, off, c, hi, mode, key, base + j)
        else:
            for j in range(L):
                v = x[r, j]
                nb += not (abs(v) < inf)
                out[r, j] = _encode_one(v, inv_scale[g + j], offset[g + j], c0[g + j],
                                        hi, mode, key, base + j)
        if nan_code >= 0:
            nn = 0
            for j in range(L):
                if x[r, j] != x[r, j]:
                    out[r, j] = nan_code
                    nn += 1
            nb -= nn
        bad[r] = nb
    return bad.sum()


@jit_parallel
def dequantize_affine(codes, row_group, col_step, scale, offset, c0, nan_code, out):
    """Decode uint8 codes: ``out = (code - c0) * scale + offset`` (NaN for ``nan_code``).

    Parameters
    ----------
    codes : ndarray of shape (R, L), uint8
    row_group : ndarray of shape (R,), int64
    col_step : int, 0 or 1
    scale, offset, c0 : ndarray of shape (G,), dtype of ``out``
    nan_code : int, or -1
    out : ndarray of shape (R, L), float32 or float64, written
    """
    R, L = codes.shape
    for r in prange(R):
        g = row_group[r]
        if col_step == 0:
            s = scale[g]
            off = offset[g]
            c = c0[g]
            for j in range(L):
                out[r, j] = (codes[r, j] - c) * s + off
        else:
            for j in range(L):
                out[r, j] = (codes[r, j] - c0[g + j]) * scale[g + j] + offset[g + j]
        if nan_code >= 0:
            for j in range(L):
                if codes[r, j] == nan_code:
                    out[r, j] = np.nan
