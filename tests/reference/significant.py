"""Slow NumPy reference of ``nquant.kernels.significant``: rounding on float64 bit patterns.

Every float16/float32 value, and every float64 value of the float32 range, is a normal
float64, so rounding its 52-bit mantissa field to ``keepbits`` bits on the integer pattern
(add half a step less one plus the last kept bit, clear the dropped bits: ties to even, a
carry into the exponent field for free) is the rounding to ``keepbits + 1`` significant bits.
The kernel uses ``frexp`` and float arithmetic instead.
"""

import numpy as np

E_OFFSET = 150
E_SPECIAL = 278


def round_bits(v, keepbits):
    """Finite float64 ``v`` rounded to ``keepbits`` mantissa bits, ties to even."""
    b = np.asarray(v, np.float64).reshape(-1).copy().view(np.uint64)
    drop = np.uint64(52 - keepbits)
    lsb = (b >> drop) & np.uint64(1)
    b = (b + (np.uint64(1) << (drop - np.uint64(1))) - np.uint64(1) + lsb) & ~((np.uint64(1) << drop) - np.uint64(1))
    return b.view(np.float64)


def top(dtype, keepbits):
    """The largest value with ``keepbits`` mantissa bits not above the largest finite value of
    ``dtype`` (float32's for float64): that value with its dropped bits cleared."""
    fmax = np.finfo(np.float32 if np.dtype(dtype) == np.float64 else dtype).max
    b = np.array([fmax], np.float64).view(np.uint64)
    return float((b & ~((np.uint64(1) << np.uint64(52 - keepbits)) - np.uint64(1))).view(np.float64)[0])


def encode(x, keepbits):
    """Codes (uint16, flat) of ``x`` (float16/32/64, finite float64 values in float32's range)."""
    x = np.asarray(x)
    v = x.astype(np.float64).reshape(-1)
    fin = np.isfinite(v) & (v != 0)
    r = np.zeros_like(v)
    r[fin] = np.minimum(np.abs(round_bits(v[fin], keepbits)), top(x.dtype, keepbits))
    bits = r.view(np.uint64)
    e = (bits >> np.uint64(52)).astype(np.int64) - 1023
    m = ((bits >> np.uint64(52 - keepbits)) & np.uint64((1 << keepbits) - 1)).astype(np.int64)
    field = np.where(fin, e + E_OFFSET, 0)
    m = np.where(fin, m, 0)
    field[~np.isfinite(v)] = E_SPECIAL
    m[np.isnan(v)] = 1
    return ((((field << keepbits) | m) << 1) | np.signbit(v)).astype(np.uint16)


def decode(codes, keepbits):
    """float64 values of the codes."""
    c = np.asarray(codes).astype(np.int64).reshape(-1)
    sign = np.where(c & 1, -1.0, 1.0)
    field, m = c >> (keepbits + 1), (c >> 1) & ((1 << keepbits) - 1)
    mag = np.ldexp(1.0 + m / 2.0 ** keepbits, np.where(field > 0, field - E_OFFSET, 0))
    mag[field == 0] = 0.0
    mag[field == E_SPECIAL] = np.where(m[field == E_SPECIAL] == 0, np.inf, np.nan)
    return sign * mag
