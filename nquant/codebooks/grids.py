"""Codebook constructors: sorted float32 grids of 1-D quantization levels.

Every constructor returns a sorted, duplicate-free float32 array; codes are indices into it
(uint8, so at most 256 levels).

====================  =====  =============================================================
constructor           K      what
====================  =====  =============================================================
normal_float(bits)    2**b   QLoRA NormalFloat; ``normal_float(4)`` is bitsandbytes' NF4
seed_nf3()            8      the 3-bit NF grid of seed 000 (see ``docs/seed_examples.md``)
fp4_e2m1()            15     every finite FP4 (E2M1) value, +0 and -0 merged
fp8_e4m3()            253    every finite FP8 E4M3 ("E4M3FN", max 448) value, +-0 merged
power_of_two(bits)    2**b-1 "logarithmic" grid: 0 and +-2**-k (seed 001's rounding list)
uniform_grid(lo,hi,n) n      ``n`` evenly spaced levels
dynamic_map()         256    bitsandbytes' 8-bit "dynamic" map (QLoRA double quantization)
====================  =====  =============================================================

Normal quantiles come from :class:`statistics.NormalDist` (no scipy).  Where bitsandbytes
builds a grid with ``torch.linspace`` in float32, :func:`_linspace32` reproduces torch's CPU
kernel bit for bit (each point is one rounding of ``start + step*i`` from the start, or
``end - step*(n-1-i)`` from the end for the second half), so the grids match bitsandbytes
exactly, not just to a tolerance.
"""

import math
from statistics import NormalDist

import numpy as np

from nquant.errors import SchemeError

__all__ = [
    "normal_float",
    "seed_nf3",
    "fp4_e2m1",
    "fp8_e4m3",
    "power_of_two",
    "uniform_grid",
    "dynamic_map",
    "NF4_BITSANDBYTES",
]

# bitsandbytes.functional.get_4bit_type("nf4"), also in the QLoRA paper's appendix.
NF4_BITSANDBYTES = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=np.float32,
)
NF4_BITSANDBYTES.setflags(write=False)

_F32 = np.float32


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise SchemeError(f"{name}={value!r}: expected an integer in [{lo}, {hi}]")
    return int(value)


def _linspace32(start, end, n):
    """``torch.linspace(start, end, n, dtype=torch.float32)`` as torch's CPU kernel computes it.

    ``step = float32((end - start) / (n - 1))``; point ``i < n // 2`` is ``start + step*i``,
    the others ``end - step*(n-1-i)``, each rounded once to float32 (the vectorized kernel
    contracts the multiply-add).
    """
    a = _F32(start)
    b = _F32(end)
    if n == 1:
        return np.array([a], dtype=_F32)
    step = _F32((b - a) / _F32(n - 1))
    i = np.arange(n, dtype=np.float64)
    head = (np.float64(a) + np.float64(step) * i).astype(_F32)
    tail = (np.float64(b) - np.float64(step) * (n - 1 - i)).astype(_F32)
    return np.where(np.arange(n) < n // 2, head, tail).astype(_F32)


def _qlora_offset(bits):
    """QLoRA's outermost quantile ``1 - (1/(2(2^b-1)) + 1/(2*2^b))/2``, rounded to 7 decimals.

    For 4 bits this is bitsandbytes' constant 0.9677083 (the unrounded 0.96770833... gives a
    table that differs from bitsandbytes' in the last bits).
    """
    n = 2**bits
    return round(1.0 - 0.5 * (1.0 / (2 * (n - 1)) + 1.0 / (2 * n)), 7)


def normal_float(bits: int = 4, offset: float | None = None) -> np.ndarray:
    """QLoRA NormalFloat grid with ``2**bits`` levels in [-1, 1].

    The construction of ``bitsandbytes.functional.create_normal_map(offset, use_extra_value=True)``
    generalised to ``bits``: the standard-normal quantiles at ``2**(bits-1)`` points evenly
    spaced from ``offset`` down to 0.5 (0.5 excluded) give the positive levels, the negated
    quantiles at ``2**(bits-1) - 1`` such points the negative ones, plus an exact 0; the
    grid is divided by its largest value (so it spans exactly [-1, 1], asymmetric: one more
    positive level than negative).

    Parameters
    ----------
    bits : int in [2, 8]
    offset : float in (0.5, 1), optional
        Outermost quantile; default :func:`_qlora_offset` (0.9677083 for 4 bits).

    Returns
    -------
    ndarray of shape (2**bits,), float32
        ``normal_float(4)`` equals :data:`NF4_BITSANDBYTES` exactly.
    """
    bits = _check_int("bits", bits, 2, 8)
    if offset is None:
        offset = _qlora_offset(bits)
    elif not (isinstance(offset, (float, int, np.floating)) and 0.5 < float(offset) < 1.0):
        raise SchemeError(f"offset={offset!r}: expected a float in (0.5, 1)")
    half = 2 ** (bits - 1)
    nd = NormalDist()
    pos = [nd.inv_cdf(float(p)) for p in _linspace32(offset, 0.5, half + 1)[:-1]]
    neg = [-nd.inv_cdf(float(p)) for p in _linspace32(offset, 0.5, half)[:-1]]
    v = np.sort(np.array(pos + [0.0] + neg, dtype=_F32))
    return (v / v.max()).astype(_F32)


def seed_nf3():
    """The 3-bit NormalFloat grid of seed 000.

    Negated standard-normal quantiles at p = 0.98, 0.82, 0.66, then 0, then the quantiles at
    p = 0.62, 0.74, 0.86, 0.98, all divided by the largest magnitude; that is
    :func:`normal_float` with ``bits=3, offset=0.98`` (points ``linspace(0.98, 0.5, ...)``).

    Returns
    -------
    ndarray of shape (8,), float32
        approximately (-1, -0.4457, -0.2009, 0, 0.1488, 0.3133, 0.5260, 1).
    """
    return normal_float(3, offset=0.98)


def _minifloat_values(exp_bits, man_bits, bias, drop_top_mantissa=False):
    """All finite non-negative values of a sign/exponent/mantissa format without infinities."""
    vals = set()
    for e in range(2**exp_bits):
        for m in range(2**man_bits):
            if drop_top_mantissa and e == 2**exp_bits - 1 and m == 2**man_bits - 1:
                continue  # the NaN encoding of E4M3FN
            if e == 0:
                v = math.ldexp(m / 2**man_bits, 1 - bias)
            else:
                v = math.ldexp(1 + m / 2**man_bits, e - bias)
            vals.add(v)
    return vals


def _signed_grid(nonneg):
    vals = sorted(set(nonneg) | {-v for v in nonneg})
    return np.array(vals, dtype=_F32)


def fp4_e2m1():
    """Every finite FP4 E2M1 value (OCP MX): 0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6.

    Returns
    -------
    ndarray of shape (15,), float32 (+0 and -0 merged into one level)
    """
    return _signed_grid(_minifloat_values(2, 1, 1))


def fp8_e4m3():
    """Every finite FP8 E4M3 value (OCP "E4M3FN": bias 7, no infinities, max 448).

    Returns
    -------
    ndarray of shape (253,), float32
        126 positive values (7 subnormals ``m * 2**-9`` and 119 normals up to 448), their
        negatives and one 0.
    """
    return _signed_grid(_minifloat_values(4, 3, 7, drop_top_mantissa=True))


def power_of_two(bits=4, max_exponent=0, signed=True):
    """Logarithmic grid: 0 and powers of two ``2**(max_exponent - k)``.

    Parameters
    ----------
    bits : int in [2, 8]
    max_exponent : int
        Exponent of the largest level (0: the grid spans [-1, 1], ready for absmax scaling).
    signed : bool
        ``True``: 0 and ±2**(max_exponent-k), k = 0..2**(bits-1)-2 (``2**bits - 1`` levels,
        one code unused, as in symmetric integer grids). ``False``: 0 and
        2**(max_exponent-k), k = 0..2**bits-2 (``2**bits`` levels).

    Returns
    -------
    ndarray of shape (2**bits - 1,) or (2**bits,), float32
    """
    bits = _check_int("bits", bits, 2, 8)
    if isinstance(max_exponent, bool) or not isinstance(max_exponent, (int, np.integer)):
        raise SchemeError(f"max_exponent={max_exponent!r}: expected an integer")
    n = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    lo_exp = int(max_exponent) - (n - 1)
    if lo_exp < -149 or int(max_exponent) > 127:
        raise SchemeError(
            f"max_exponent={max_exponent!r} with bits={bits}: levels 2**{lo_exp}..2**{max_exponent} "
            "leave float32's range [2**-149, 2**127]"
        )
    mags = [math.ldexp(1.0, int(max_exponent) - k) for k in range(n)]
    vals = sorted({0.0, *mags, *([-m for m in mags] if signed else [])})
    return np.array(vals, dtype=_F32)


def uniform_grid(lo, hi, n):
    """``n`` evenly spaced levels from ``lo`` to ``hi`` (seed 000's grid is ``uniform_grid(-4, 4, 8)``).

    Parameters
    ----------
    lo, hi : float, finite, lo < hi
    n : int in [2, 256]

    Returns
    -------
    ndarray of shape (n,), float32 (computed in float64, then rounded)
    """
    n = _check_int("n", n, 2, 256)
    for name, v in (("lo", lo), ("hi", hi)):
        if not (isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v)):
            raise SchemeError(f"{name}={v!r}: expected a finite number")
    if not lo < hi:
        raise SchemeError(f"lo={lo!r}, hi={hi!r}: expected lo < hi")
    g = np.linspace(float(lo), float(hi), n).astype(_F32)
    if np.unique(g).size != n:
        raise SchemeError(f"lo={lo!r}, hi={hi!r}, n={n}: levels collide in float32")
    return g


def dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes' "dynamic" 8-bit map (``create_dynamic_map``), used by QLoRA double quantization.

    For exponent ``i = 0..max_exponent_bits-1`` the interval [0.1, 1] is split into
    ``2**(i + total_bits - 1 - max_exponent_bits) + 1`` float32 ``linspace`` boundaries (twice
    as many fraction items when unsigned); the midpoints of consecutive boundaries, scaled by
    ``10**(i - max_exponent_bits + 1)`` in float32, are levels (and their negatives when
    signed); then 0 and 1.0 are added, zeros pad to 256 and the list is sorted.  The signed
    default has 256 distinct levels from -0.99296875 to 1.0.

    Returns
    -------
    ndarray of shape (256,), float32, sorted
    """
    max_exponent_bits = _check_int("max_exponent_bits", max_exponent_bits, 1, 7)
    total_bits = _check_int("total_bits", total_bits, max_exponent_bits + 1, 8)
    data = []
    non_sign_bits = total_bits - 1
    additional = 2 ** (non_sign_bits - max_exponent_bits) - 1
    i = 0
    for i in range(max_exponent_bits):
        if signed:
            items = 2 ** (i + non_sign_bits - max_exponent_bits) + 1
        else:
            items = 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        bnd = _linspace32(0.1, 1.0, items)
        means = ((bnd[:-1] + bnd[1:]) / _F32(2)).astype(_F32)
        scale = _F32(10.0 ** (-(max_exponent_bits - 1) + i))
        data += list((scale * means).astype(_F32))
        if signed:
            data += list((-scale * means).astype(_F32))
    if additional > 0:
        bnd = _linspace32(0.1, 1.0, additional + 1)
        means = ((bnd[:-1] + bnd[1:]) / _F32(2)).astype(_F32)
        scale = _F32(10.0 ** (-(max_exponent_bits - 1) + i))
        data += list((scale * means).astype(_F32))
        if signed:
            data += list((-scale * means).astype(_F32))
    data += [0.0, 1.0]
    data += [0.0] * (256 - len(data))
    return np.sort(np.array(data, dtype=_F32))
