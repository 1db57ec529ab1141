"""Fused fake quantization: quantize-dequantize and the straight-through mask in one pass.

Same row layout and parameters as ``nquant.kernels.affine`` and, value for
value, the same arithmetic as ``quantize_affine`` followed by
``dequantize_affine`` (so the result equals ``dequantize(quantize(x))`` bit for
bit); the encoder's scalar helpers (``snap``, ``round_code``, ``clip_code``)
are reused, not copied:

    t     = round((x - offset) * inv_scale) + c0      # inv_scale = 1 / scale in x's dtype
    code  = uint8(clip(t, 0, hi))
    y     = (code - c0) * scale + offset
    mask  = 0 <= t <= hi                               # inside the clip range

(``round`` snaps onto a nearby integer first in floor, ceil and stochastic
modes, exactly as the encoder does.)

The mask is PyTorch's ``fake_quantize_*_cachemask`` mask: the gradient of the
straight-through estimator passes where the rounded value was not clipped.
NaN gives ``mask = False`` and, with ``nan_code >= 0``, ``y = NaN``.
"""

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, prange
from nquant.kernels.affine import clip_code, round_code, snap
from nquant.kernels.rounding import CEIL, FLOOR, NEAREST


@jit
def _fq_one(t, c, s, off, hi, y, mask, r, j):
    code = clip_code(t, hi)
    y[r, j] = (code - c) * s + off
    mask[r, j] = (t >= 0) & (t <= hi)


@jit
def _fq_row(x, r, y, mask, s, inv, off, c, hi, mode, key, base):
    """One row with one parameter set; a loop per mode as in ``affine._encode_row``."""
    L = x.shape[1]
    if mode == NEAREST:
        for j in range(L):
            _fq_one(np.rint((x[r, j] - off) * inv) + c, c, s, off, hi, y, mask, r, j)
    elif mode == FLOOR:
        for j in range(L):
            _fq_one(np.floor(snap((x[r, j] - off) * inv)) + c, c, s, off, hi, y, mask, r, j)
    elif mode == CEIL:
        for j in range(L):
            _fq_one(np.ceil(snap((x[r, j] - off) * inv)) + c, c, s, off, hi, y, mask, r, j)
    else:
        for j in range(L):
            t = round_code((x[r, j] - off) * inv, mode, key, base + j)
            _fq_one(t + c, c, s, off, hi, y, mask, r, j)


@jit_parallel
def fake_quantize_affine(x, row_index, row_group, col_step, scale, inv_scale, offset, c0, hi,
                         nan_code, mode, key, y, mask):
    """Quantize-dequantize rows of ``x`` and flag the values inside the clip range.

    Parameters
    ----------
    x : ndarray of shape (R, L), float32 or float64, C-contiguous
    row_index, row_group : ndarray of shape (R,), int64
    col_step : int, 0 or 1
    scale, inv_scale, offset, c0 : ndarray of shape (G,), dtype of ``x``
    hi : float, largest code for a finite value
    nan_code : int, code for NaN inputs, or -1
    mode : int, rounding mode (``nquant.kernels.rounding``)
    key : uint64, stream key of the seed
    y : ndarray of shape (R, L), dtype of ``x``, written
    mask : ndarray of shape (R, L), bool, written

    Returns
    -------
    int : number of NaN or infinite inputs (NaN excluded when ``nan_code >= 0``).
    """
    R, L = x.shape
    bad = np.zeros(R, np.int64)
    hi = x.dtype.type(hi)
    for r in prange(R):
        g = row_group[r]
        base = row_index[r]
        if col_step == 0:
            _fq_row(x, r, y, mask, scale[g], inv_scale[g], offset[g], c0[g], hi, mode, key, base)
        else:
            for j in range(L):
                c = c0[g + j]
                off = offset[g + j]
                t = round_code((x[r, j] - off) * inv_scale[g + j], mode, key, base + j)
                _fq_one(t + c, c, scale[g + j], off, hi, y, mask, r, j)
        nb = 0
        for j in range(L):
            v = x[r, j]
            if not (abs(v) < np.inf):
                if np.isnan(v) and nan_code >= 0:
                    y[r, j] = np.nan
                    mask[r, j] = False
                else:
                    nb += 1
        bad[r] = nb
    return bad.sum()
