"""IEEE-754 bit patterns of float arrays, for exact tests that vectorize.

Without fast-math, LLVM does not vectorize a floating-point min/max or
"is finite" reduction (NaN makes them order dependent), but it does vectorize
integer ones.  The helpers here let kernels work on the integer views of a
float32/float64 array instead:

- ``int_view(x)``: the bits as signed integers (int32/int64).  Non-negative
  floats (sign bit clear) are exactly the non-negative integers, in float
  order, ``+inf`` being ``inf_bits`` and NaN anything above it.
- ``uint_view(x)``: the bits as unsigned integers (uint32/uint64).  Negative
  floats are the integers ``>= sign_bit``, in reverse float order (``-0.0`` is
  ``sign_bit``, ``-inf`` is ``sign_bit | inf_bits``, NaN anything above).
- ``float_view(b)``: the inverse, int32/int64 bits back to float32/float64.
- ``bit_constants(x)``: ``(abs_mask, inf_bits)`` in the signed type, so
  ``(b & abs_mask) >= inf_bits`` tests for NaN or infinity.

These are plain Python functions too (NumPy semantics), so they can be called
outside compiled code.
"""

import numpy as np
from numba import types
from numba.extending import overload

from nquant.kernels._jit import OPTIONS

_INT = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}
_UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def int_view(x):
    """``x`` (float32/float64, C-contiguous) viewed as int32/int64."""
    return x.view(_INT[x.dtype])


def uint_view(x):
    """``x`` (float32/float64, C-contiguous) viewed as uint32/uint64."""
    return x.view(_UINT[x.dtype])


def float_view(b):
    """``b`` (int32/int64 bits, C-contiguous) viewed as float32/float64."""
    return b.view(np.float32 if b.dtype.itemsize == 4 else np.float64)


def bit_constants(x):
    """``(abs_mask, inf_bits)`` for the dtype of ``x``, in its signed integer type."""
    if x.dtype == np.float32:
        return np.int32(0x7FFFFFFF), np.int32(0x7F800000)
    return np.int64(0x7FFFFFFFFFFFFFFF), np.int64(0x7FF0000000000000)


_JIT_OPTIONS = {k: v for k, v in OPTIONS.items() if k in ("cache", "nogil", "fastmath", "error_model")}


def _is_float32(x):
    if not isinstance(x, types.Array) or x.dtype not in (types.float32, types.float64):
        return None
    return x.dtype == types.float32


@overload(int_view, jit_options=_JIT_OPTIONS)
def _int_view(x):
    f32 = _is_float32(x)
    if f32 is None:
        return None
    if f32:
        return lambda x: x.view(np.int32)
    return lambda x: x.view(np.int64)


@overload(uint_view, jit_options=_JIT_OPTIONS)
def _uint_view(x):
    f32 = _is_float32(x)
    if f32 is None:
        return None
    if f32:
        return lambda x: x.view(np.uint32)
    return lambda x: x.view(np.uint64)


@overload(bit_constants, jit_options=_JIT_OPTIONS)
def _bit_constants(x):
    f32 = _is_float32(x)
    if f32 is None:
        return None
    if f32:
        return lambda x: (np.int32(0x7FFFFFFF), np.int32(0x7F800000))
    return lambda x: (np.int64(0x7FFFFFFFFFFFFFFF), np.int64(0x7FF0000000000000))


@overload(float_view, jit_options=_JIT_OPTIONS)
def _float_view(b):
    if not isinstance(b, types.Array) or b.dtype not in (types.int32, types.int64):
        return None
    if b.dtype == types.int32:
        return lambda b: b.view(np.float32)
    return lambda b: b.view(np.float64)
