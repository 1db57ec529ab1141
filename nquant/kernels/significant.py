"""Rounding to ``keepbits`` significant bits: codes of sign, binade and kept mantissa bits.

A finite nonzero ``|x| = f * 2**q`` (``f`` in [0.5, 1)) is rounded to ``keepbits + 1``
significant bits, ``n = round(f * 2**(keepbits + 1))`` with ties to the even ``n``, a carry
``n == 2**(keepbits + 1)`` moving to the next binade: the value ``n * 2**(q - keepbits - 1)``,
whose leading bit has exponent ``e = q - 1``.  Every step is exact in float64 (``frexp``,
scaling by powers of two, ``floor``), so the error is at most half a step,
``2**(e - keepbits - 1) <= 2**-(keepbits + 1) * |x|``, for normal and subnormal inputs alike.

A code (``keepbits + 10`` bits) is ``((E << keepbits) | m) << 1 | sign``: the sign in the
lowest bit, so codes grow with the magnitude; ``E = e + E_OFFSET`` (1..``E_TOP``) covers the
binades of float32, subnormal ones included (``e`` in [-149, 127]); ``m = n - 2**keepbits``.
``E = 0`` is zero (signed), ``E = E_SPECIAL`` infinity (``m = 0``) or NaN (``m = 1``).
"""

import math

from nquant.kernels._jit import jit

EMIN = -149
"""Exponent of the lowest binade codes hold (float32's smallest subnormal, 2**-149)."""
EMAX = 127
"""Exponent of the highest binade codes hold (float32's largest)."""
E_OFFSET = 1 - EMIN
E_TOP = EMAX + E_OFFSET
E_SPECIAL = E_TOP + 1
"""Binade field of infinity and NaN; fields above it are never written."""


@jit
def encode_significant(x, keepbits, limit, top, out):
    """Codes of ``x`` rounded to ``keepbits`` significant bits (see the module docstring).

    Parameters
    ----------
    x : (n,) float32 or float64
    keepbits : int, 1..6
    limit : float, the largest finite magnitude accepted (larger finite values are refused)
    top : float, the largest magnitude with ``keepbits`` bits that is ``<= limit``; a value
        between ``top`` and ``limit`` (which would round beyond ``limit``) becomes ``top``
    out : (n,) uint16, the codes

    Returns
    -------
    int : index of the first finite value that codes cannot hold (``|x| > limit`` or below
        2**-149), -1 when there is none (``out`` is then complete)
    """
    one = 1 << keepbits
    scale = math.ldexp(1.0, keepbits + 1)
    for i in range(x.size):
        v = float(x[i])
        s = 1 if math.copysign(1.0, v) < 0 else 0
        a = abs(v)
        if math.isnan(a):
            r = (E_SPECIAL << keepbits) | 1
        elif a == math.inf:
            r = E_SPECIAL << keepbits
        elif a == 0.0:
            r = 0
        else:
            if a > limit:
                return i
            a = min(a, top)  # above top, rounding would pass the largest finite value: saturate
            f, q = math.frexp(a)
            t = f * scale
            n = math.floor(t)
            d = t - n
            if d > 0.5 or (d == 0.5 and n % 2.0 == 1.0):
                n += 1.0
            k = int(n)
            if k == 2 * one:
                k = one
                q += 1
            e = q - 1
            if e < EMIN or e > EMAX:
                return i
            r = ((e + E_OFFSET) << keepbits) | (k - one)
        out[i] = (r << 1) | s
    return -1


@jit
def decode_significant(codes, keepbits, out):
    """Values of the codes of :func:`encode_significant`, exact in float64 (and in float32
    for every code encoding gives).

    Parameters
    ----------
    codes : (n,) uint16, binade fields at most ``E_SPECIAL`` (checked by the caller)
    keepbits : int, 1..6
    out : (n,) float32 or float64
    """
    mask = (1 << keepbits) - 1
    for i in range(codes.size):
        c = int(codes[i])
        r = c >> 1
        b = r >> keepbits
        m = r & mask
        if b == 0:
            v = 0.0
        elif b >= E_SPECIAL:
            v = math.inf if m == 0 else math.nan
        else:
            v = math.ldexp(float((1 << keepbits) + m), b - E_OFFSET - keepbits)
        out[i] = math.copysign(v, -1.0) if c & 1 else v
