"""CUDA twin of :mod:`nquant.kernels.affine`: uniform quantize / dequantize over the row layout.

Same arguments, same conventions (see the CPU module): ``x`` is an ``(R, L)`` C-contiguous
array of rows, element ``(r, j)`` has global flat index ``row_index[r] + j`` (the key of
the stochastic stream) and parameter group ``row_group[r] + col_step * j``.  One thread
per element (grid-stride), the encoder's snap / round / clip steps are the device
compilation of the CPU's source (:mod:`nquant.kernels.scalar`), so codes are
bit-identical to the CPU kernel's in every rounding mode, stochastic included.

Arrays may be NumPy (copied to the device and back, like the CPU kernel's in/out
arrays) or device arrays (numba, CuPy: results stay on the device).
"""

import numpy as np
from numba import cuda

from nquant.cuda._device import clip_code16, code_value, mul_rn, round_code
from nquant.cuda._launch import as_device, kernel, launch, output, scalar_out

__all__ = ["quantize_affine", "dequantize_affine", "group_minmax"]


@kernel
def _quantize(x, row_index, row_group, col_step, inv_scale, offset, c0, hi, nan_code, mode, key, out,
              bad):
    R = x.shape[0]
    L = x.shape[1]
    n = R * L
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        r = i // L
        j = i - r * L
        g = row_group[r] + col_step * j
        v = x[r, j]
        t = round_code((v - offset[g]) * inv_scale[g], mode, key, row_index[r] + j)
        # uint16 for every width: stored into uint8 codes it narrows without loss (hi <= 255)
        code = clip_code16(t + c0[g], hi)
        if not (abs(v) < np.inf):
            if nan_code >= 0 and v != v:
                code = np.uint16(nan_code)
            else:
                cuda.atomic.add(bad, 0, 1)
        out[r, j] = code
        i += stride


def quantize_affine(x, row_index, row_group, col_step, inv_scale, offset, c0, hi,
                    nan_code, mode, key, out):
    """Encode rows of ``x`` into uint8 or uint16 codes (twin of ``kernels.affine.quantize_affine``).

    Parameters
    ----------
    x : array of shape (R, L), float32 or float64, C-contiguous (host or device)
    row_index, row_group : array of shape (R,), int64
    col_step : int, 0 or 1
    inv_scale, offset, c0 : array of shape (G,), dtype of ``x``
    hi : float, largest code for a finite value
    nan_code : int, code for NaN inputs, or -1
    mode : int, rounding mode (``nquant.kernels.rounding``)
    key : uint64, stream key of the seed
    out : array of shape (R, L), uint8 or uint16, written (host or device)

    Returns
    -------
    int : number of NaN or infinite inputs (NaN excluded when ``nan_code >= 0``).
    """
    dt = np.dtype(x.dtype)
    R, L = x.shape
    d_out, finish = output(out)
    bad = scalar_out()
    launch(_quantize, R * L, as_device(x), as_device(row_index, np.int64), as_device(row_group, np.int64),
           int(col_step), as_device(inv_scale, dt), as_device(offset, dt), as_device(c0, dt), dt.type(hi),
           int(nan_code), int(mode), np.uint64(key), d_out, bad)
    finish()
    return int(bad.copy_to_host()[0])


@kernel
def _dequantize(codes, row_group, col_step, scale, offset, c0, nan_code, out):
    R = codes.shape[0]
    L = codes.shape[1]
    n = R * L
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        r = i // L
        j = i - r * L
        g = row_group[r] + col_step * j
        c = codes[r, j]
        if nan_code >= 0 and c == nan_code:
            out[r, j] = np.nan
        else:
            out[r, j] = mul_rn(code_value(c, scale[g]) - c0[g], scale[g]) + offset[g]
        i += stride


def dequantize_affine(codes, row_group, col_step, scale, offset, c0, nan_code, out):
    """Decode uint8 or uint16 codes: ``out = (code - c0) * scale + offset`` (twin of the CPU kernel).

    The product is rounded before the sum (no fused multiply-add), as on the CPU.

    Parameters
    ----------
    codes : array of shape (R, L), uint8 or uint16 (host or device)
    row_group : array of shape (R,), int64
    col_step : int, 0 or 1
    scale, offset, c0 : array of shape (G,), dtype of ``out``
    nan_code : int, or -1
    out : array of shape (R, L), float32 or float64, written (host or device)
    """
    dt = np.dtype(out.dtype)
    R, L = codes.shape
    d_out, finish = output(out)
    launch(_dequantize, R * L, as_device(codes, np.dtype(codes.dtype)), as_device(row_group, np.int64), int(col_step),
           as_device(scale, dt), as_device(offset, dt), as_device(c0, dt), int(nan_code), d_out)
    finish()


# ----------------------------------------------------------------------------- calibration statistics


@kernel
def _minmax(x, row_group, col_step, mins, maxs, nan_count):
    R = x.shape[0]
    L = x.shape[1]
    n = R * L
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    cur = -1
    lo = np.inf
    hi = -np.inf
    nn = 0
    while i < n:
        r = i // L
        j = i - r * L
        g = row_group[r] + col_step * j
        if g != cur:
            if cur >= 0:
                cuda.atomic.nanmin(mins, cur, lo)
                cuda.atomic.nanmax(maxs, cur, hi)
            cur = g
            lo = np.inf
            hi = -np.inf
        v = np.float64(x[r, j])
        if v != v:
            nn += 1
        else:
            lo = min(lo, v)
            hi = max(hi, v)
        i += stride
    if cur >= 0:
        cuda.atomic.nanmin(mins, cur, lo)
        cuda.atomic.nanmax(maxs, cur, hi)
    if nn:
        cuda.atomic.add(nan_count, 0, nn)


def group_minmax(x, row_group, col_step, mins, maxs):
    """Per-group min and max (NaN ignored) over the row layout, and the number of NaN.

    The statistics of ``nquant.families.uniform.partial`` (the CPU's ``stats.row_minmax`` /
    ``column_minmax`` folded into groups): exact, whatever the order of the atomics
    (up to the sign of a zero extreme).

    Parameters
    ----------
    x : array of shape (R, L), float32 or float64 (host or device)
    row_group : array of shape (R,), int64
    col_step : int, 0 or 1
    mins, maxs : array of shape (G,), float64, updated in place (start from +inf / -inf)

    Returns
    -------
    int : number of NaN values
    """
    d_mins, fin_mins = output(mins, copy_in=True)
    d_maxs, fin_maxs = output(maxs, copy_in=True)
    nan_count = scalar_out()
    R, L = x.shape
    launch(_minmax, R * L, as_device(x), as_device(row_group, np.int64), int(col_step), d_mins, d_maxs,
           nan_count)
    fin_mins()
    fin_maxs()
    return int(nan_count.copy_to_host()[0])
