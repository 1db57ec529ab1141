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
``offset = rmin`` and ``c0 = 0``.

Floor, ceil and stochastic rounding first *snap* ``t = (x - offset) * inv_scale``
onto a nonzero integer ``n`` when ``|t - n| <= SNAP * |n|`` (``SNAP = 2**-21``,
eight float32 rounding units): the float32 scale and its reciprocal are
rounded, so a value on the grid (a constant, the data's max, the end of an
explicit range, a dequantized value) can land just below or above its integer
and floor or ceil would move it a whole code.  Nearest modes need no snapping.  Arithmetic is in the dtype of ``x``
(float32 or float64); ``inv_scale`` is the reciprocal computed in that dtype.
If ``nan_code >= 0``, NaN inputs get that code and decode to NaN.
"""

import functools

import numpy as np
from numba import types
from numba.extending import overload

from nquant.kernels._jit import OPTIONS, jit, over_rows
from nquant.kernels.bits import bit_constants, int_view
from nquant.kernels.rounding import CEIL, FLOOR, NEAREST, NEAREST_AWAY, STOCHASTIC, round_value  # noqa: F401
from nquant.kernels.scalar import SNAP, cpu_helpers  # noqa: F401

# The scalar steps are written once in nquant.kernels.scalar (shared with nquant.cuda.affine).
_cpu = cpu_helpers()
snap = _cpu["snap"]
"""``t`` moved onto the nearest integer ``n != 0`` when ``|t - n| <= SNAP * |n|``."""
round_code = _cpu["round_code"]
"""Round ``t`` for the encoder: snapped first in floor, ceil and stochastic modes."""
clip_code = _cpu["clip_code"]
"""uint8 of ``t`` clipped to [0, hi] (NaN gives an unspecified code)."""
clip_code16 = _cpu["clip_code16"]
"""uint16 of ``t`` clipped to [0, hi] (9..16-bit codes)."""
code_value = _cpu["code_value"]
"""A code as a float of the decoder's type."""


def param_at(p, k):
    """``p[k]`` for an array of per-column parameters, ``p`` itself for a scalar."""
    return p[k] if isinstance(p, np.ndarray) else p


@overload(param_at, jit_options=OPTIONS)
def _param_at_overload(p, k):
    if isinstance(p, types.Array):
        return lambda p, k: p[k]
    return lambda p, k: p


def store_code(out, j, t, hi):
    """``out[j] = t`` clipped to [0, hi], in the code dtype of ``out`` (uint8 or uint16)."""
    out[j] = min(max(int(t), 0), int(hi))


@overload(store_code, jit_options=OPTIONS)
def _store_code_overload(out, j, t, hi):
    if isinstance(out, types.Array) and out.dtype == types.uint16:
        def store16(out, j, t, hi):
            out[j] = clip_code16(t, hi)
        return store16

    def store8(out, j, t, hi):
        out[j] = clip_code(t, hi)
    return store8


@jit(inline="always")
def _encode_row(x, xi, out, inv, off, c, hi, nan_code, mode, key, base):
    """Encode one row ``x`` (1-D, ``xi`` its integer view) into ``out``.

    ``inv, off, c`` are scalars or arrays indexed by column; ``mode`` is a
    constant where this is inlined, so the loop has one rounding mode and
    vectorizes.  Returns the number of non-finite values (NaN excluded when
    ``nan_code >= 0``; those get ``nan_code``).
    """
    abs_mask, inf_bits = bit_constants(x)
    I = xi.dtype.type  # integer arithmetic is widened to 64 bits unless cast back
    m = I(0)  # largest |bits|: at least inf_bits iff the row holds a NaN or an infinity
    for j in range(x.shape[0]):
        t = round_code((x[j] - param_at(off, j)) * param_at(inv, j), mode, key, base + j)
        store_code(out, j, t + param_at(c, j), hi)
        m = max(m, I(xi[j] & abs_mask))
    if m < inf_bits:  # all finite: nothing to count or mark
        return 0
    nb = 0
    for j in range(x.shape[0]):
        if not (abs(x[j]) < np.inf):
            if nan_code >= 0 and x[j] != x[j]:
                out[j] = nan_code
            else:
                nb += 1
    return nb


@functools.cache
def _encoder(mode, col_step):
    """The row encoder for one rounding mode and ``col_step``, compiled when first needed.

    A kernel per mode, rather than one with a switch on ``mode``, compiles only the
    modes in use (each with its own vectorized loop); likewise for per-tensor
    (``col_step == 0``: scalar parameters) and per-column parameters.
    """

    @jit
    def encode_rows(r0, r1, x, xi, row_index, row_group, inv_scale, offset, c0, hi, nan_code, key,
                    out):
        L = x.shape[1]
        bad = 0
        for r in range(r0, r1):
            g = row_group[r]
            if col_step == 0:
                bad += _encode_row(x[r], xi[r], out[r], inv_scale[g], offset[g], c0[g], hi,
                                   nan_code, mode, key, row_index[r])
            else:
                bad += _encode_row(x[r], xi[r], out[r], inv_scale[g:g + L], offset[g:g + L],
                                   c0[g:g + L], hi, nan_code, mode, key, row_index[r])
        return bad

    return encode_rows


def quantize_affine(x, row_index, row_group, col_step, inv_scale, offset, c0, hi,
                    nan_code, mode, key, out):
    """Encode rows of ``x`` into uint8 (1..8-bit) or uint16 (9..16-bit) codes.

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
    out : ndarray of shape (R, L), uint8 or uint16, written

    Returns
    -------
    int : number of NaN or infinite inputs (NaN excluded when ``nan_code >= 0``).
    """
    R, L = x.shape
    # scalars cast here, so each rounding mode and dtype compiles one signature
    return sum(over_rows(_encoder(int(mode), int(col_step)), R, L, x, int_view(x), row_index,
                         row_group, inv_scale, offset, c0, x.dtype.type(hi), int(nan_code),
                         np.uint64(key), out))


@functools.cache
def _decoder(col_step):
    """Rows ``[r0, r1)`` of :func:`dequantize_affine` for one ``col_step`` (compiled when first needed)."""

    @jit
    def decode_rows(r0, r1, codes, row_group, scale, offset, c0, nan_code, out):
        L = codes.shape[1]
        for r in range(r0, r1):
            g = row_group[r]
            if col_step == 0:
                s = scale[g]
                off = offset[g]
                c = c0[g]
                for j in range(L):
                    out[r, j] = (code_value(codes[r, j], s) - c) * s + off
            else:
                for j in range(L):
                    out[r, j] = (code_value(codes[r, j], c0[g + j]) - c0[g + j]) * scale[g + j] + offset[g + j]
            if nan_code >= 0:
                for j in range(L):
                    if codes[r, j] == nan_code:
                        out[r, j] = np.nan
        return 0

    return decode_rows


def dequantize_affine(codes, row_group, col_step, scale, offset, c0, nan_code, out):
    """Decode codes: ``out = (code - c0) * scale + offset`` (NaN for ``nan_code``).

    Parameters
    ----------
    codes : ndarray of shape (R, L), uint8 or uint16
    row_group : ndarray of shape (R,), int64
    col_step : int, 0 or 1
    scale, offset, c0 : ndarray of shape (G,), dtype of ``out``
    nan_code : int, or -1
    out : ndarray of shape (R, L), float32 or float64, written
    """
    R, L = codes.shape
    over_rows(_decoder(int(col_step)), R, L, codes, row_group, scale, offset, c0, int(nan_code), out)
