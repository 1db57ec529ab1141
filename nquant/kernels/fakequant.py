"""Fused fake quantization: quantize-dequantize and the straight-through mask in one pass.

Same row layout and parameters as ``nquant.kernels.affine`` and, value for
value, the same arithmetic as ``quantize_affine`` followed by
``dequantize_affine`` (so the result equals ``dequantize(quantize(x))`` bit for
bit); the encoder's scalar helpers (``round_code``, ``clip_code``)
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

import functools

import numpy as np

from nquant.kernels._jit import jit, over_rows
from nquant.kernels.affine import clip_code, param_at, round_code


@jit(inline="always")
def _fq_row(x, y, mask, s, inv, off, c, hi, nan_code, mode, key, base):
    """One row ``x`` (1-D) into ``y`` and ``mask``; parameters are scalars or arrays indexed by
    column.  ``mode`` is a constant where this is inlined (one loop per mode, as in
    ``affine._encode_row``).  Returns the number of non-finite values (NaN excluded when
    ``nan_code >= 0``)."""
    for j in range(x.shape[0]):
        cj = param_at(c, j)
        offj = param_at(off, j)
        t = round_code((x[j] - offj) * param_at(inv, j), mode, key, base + j) + cj
        code = clip_code(t, hi)
        y[j] = (code - cj) * param_at(s, j) + offj
        mask[j] = (t >= 0) & (t <= hi)
    nb = 0
    for j in range(x.shape[0]):
        v = x[j]
        if not (abs(v) < np.inf):
            if np.isnan(v) and nan_code >= 0:
                y[j] = np.nan
                mask[j] = False
            else:
                nb += 1
    return nb


@functools.cache
def _fake_quantizer(mode, col_step):
    """Rows ``[r0, r1)`` of :func:`fake_quantize_affine` for one rounding mode and ``col_step``,
    compiled when first needed (as ``affine``'s encoders)."""

    @jit
    def fake_quantize_rows(r0, r1, x, row_index, row_group, scale, inv_scale, offset, c0, hi,
                           nan_code, key, y, mask):
        L = x.shape[1]
        bad = 0
        for r in range(r0, r1):
            g = row_group[r]
            if col_step == 0:
                bad += _fq_row(x[r], y[r], mask[r], scale[g], inv_scale[g], offset[g], c0[g], hi,
                               nan_code, mode, key, row_index[r])
            else:
                bad += _fq_row(x[r], y[r], mask[r], scale[g:g + L], inv_scale[g:g + L],
                               offset[g:g + L], c0[g:g + L], hi, nan_code, mode, key, row_index[r])
        return bad

    return fake_quantize_rows


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
    return sum(over_rows(_fake_quantizer(int(mode), int(col_step)), R, L, x, row_index, row_group,
                         scale, inv_scale, offset, c0, x.dtype.type(hi), int(nan_code),
                         np.uint64(key), y, mask))
