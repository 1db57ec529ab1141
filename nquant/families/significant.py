"""Significant-bit rounding (``Significant`` scheme): each value rounded to ``keepbits``
mantissa bits, a pointwise relative error bound, comparable to numcodecs' ``BitRound``.

Family hooks in :data:`FAMILY` (protocol: :mod:`nquant.families.base`).  Every value is
rounded on its own (nearest, ties to even) to ``keepbits + 1`` significant bits by
:mod:`nquant.kernels.significant`, so nothing is fitted, there are no side arrays, and NumPy
and any Dask chunking give the same codes.  For normal float32 values the result is
``BitRound(keepbits)``'s, bit for bit; the differences, each keeping the bound
``|x - x_hat| <= 2**-(keepbits + 1) * |x|`` for every finite ``x``:

- subnormal values keep ``keepbits`` bits below their own leading bit (``BitRound`` rounds
  their bit pattern, an absolute step of ``2**(-149 + 23 - keepbits)``);
- a value that would round beyond the largest finite value of its dtype becomes the largest
  value with ``keepbits`` bits below it (``BitRound`` gives infinity): finite data decodes to
  finite values, float16 included;
- NaN decodes to a quiet NaN of its sign (the payload is not kept), infinities exactly.

Codes are ``keepbits + 10`` bits, stored as uint16 (so ``keepbits`` is at most 6): the sign
in the lowest bit, then the mantissa bits, then a 9-bit binade field covering float32's
exponents from the smallest subnormal (``2**-149``) to the largest (``2**127``) plus zero
and the non-finite values.  Codes grow with the magnitude and hold long runs of equal high
bytes, which a byte shuffle and a lossless compressor turn into few bytes.  float16 and
float32 data are rounded exactly as given; float64 data must lie in the float32 range
(``2**-149 <= |x| <= 3.4e38`` or zero, an ``InputError`` otherwise) and keeps its own bits
until the single rounding.
"""

import dataclasses
import math
from typing import ClassVar

import numpy as np

from nquant import _alloc, limits, schemes
from nquant.errors import InputError
from nquant.families import base
from nquant.kernels import significant as ks
from nquant.schemes import invalid, is_int

MAX_KEEPBITS = 6
"""Widest mantissa: codes of ``keepbits + 10`` bits fit uint16."""


def keepbits_for(rel_error):
    """The fewest mantissa bits (>= 1) whose rounding error ``2**-(keepbits + 1)`` is at most
    ``rel_error``."""
    k = 1
    while math.ldexp(1.0, -(k + 1)) > rel_error:
        k += 1
    return k


@schemes.register
@dataclasses.dataclass(frozen=True)
class Significant(schemes.Scheme):
    """Each value rounded to ``keepbits`` mantissa bits (nearest, ties to even): a pointwise
    relative bound ``|x - x_hat| <= 2**-(keepbits + 1) * |x|`` for every finite ``x``.

    Give exactly one of ``keepbits`` and ``rel_error``.  Codes hold the sign, the binade
    and the kept mantissa bits (``keepbits + 10`` bits, uint16); there are no side arrays.
    NaN and infinities are carried; a value that would round beyond its dtype's largest
    finite value saturates below it.  float64 data must lie in the float32 range.

    Parameters
    ----------
    keepbits : int, 1..6, mantissa bits kept (as numcodecs' ``BitRound(keepbits)``)
    rel_error : float in [2**-7, 1), the pointwise relative bound; ``keepbits`` is then the
        fewest bits that guarantee it
    """

    keepbits: int | None = None
    rel_error: float | None = None

    type: ClassVar[str] = "significant"
    block_size: ClassVar[None] = None

    def __post_init__(self):
        if (self.keepbits is None) == (self.rel_error is None):
            invalid("keepbits", self.keepbits, f"exactly one of keepbits and rel_error (rel_error={self.rel_error!r})")
        if self.keepbits is not None and (not is_int(self.keepbits) or not 1 <= self.keepbits <= MAX_KEEPBITS):
            invalid("keepbits", self.keepbits, f"an integer in 1..{MAX_KEEPBITS} (codes of keepbits + 10 bits "
                                               "are stored as uint16)")
        if self.rel_error is not None:
            r = self.rel_error
            low = math.ldexp(1.0, -(MAX_KEEPBITS + 1))
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not low <= r < 1:
                invalid("rel_error", r, f"a number in [{low}, 1) (at most {MAX_KEEPBITS} mantissa bits kept)")

    @property
    def kept(self) -> int:
        """Mantissa bits kept."""
        return self.keepbits if self.keepbits is not None else keepbits_for(self.rel_error)

    @property
    def bits(self) -> int:
        """Bits per code: sign, 9-bit binade field, kept mantissa bits."""
        return self.kept + 10


N_BINADES = ks.E_SPECIAL + 1
"""Binade field values that codes may hold (zero, the finite binades, non-finite)."""


def code_count(scheme):
    """Codes encoding can give: every code at or above this one is corrupt."""
    return N_BINADES << (scheme.kept + 1)


def code_range(dtype, keepbits):
    """``(limit, top)`` of :func:`nquant.kernels.significant.encode_significant` for data of
    ``dtype``: its largest finite value (float32's for float64) and the largest value with
    ``keepbits`` mantissa bits not above it."""
    fmax = float(np.finfo(np.float32 if dtype == np.float64 else dtype).max)
    emax = math.frexp(fmax)[1] - 1
    return fmax, math.ldexp(2.0 - math.ldexp(1.0, -keepbits), emax)


# ----------------------------------------------------------------------------- protocol


def fit(scheme, x):
    """No parameters: every value is rounded on its own."""
    return {}


def finalize(scheme, stats=None, data=None):
    """No parameters."""
    return {}


def block_quantum(scheme):
    """No blocks: ``None``."""


def encode(scheme, params, chunk, start=None, global_shape=None, group_offset=0, out=None):
    """Codes (uint16, the chunk's shape) of a float16/32/64 chunk; ``InputError`` for a float64
    value that codes cannot hold."""
    a = np.asarray(chunk)
    dtype = a.dtype
    flat = np.ascontiguousarray(a, dtype=np.float32 if dtype == np.float16 else dtype).reshape(-1)
    direct = out is not None and out.dtype == np.uint16 and out.flags.c_contiguous and out.size == flat.size
    codes = out.reshape(-1) if direct else _alloc.empty(flat.size, np.uint16, fault_in=False)
    limit, top = code_range(dtype, scheme.kept)
    bad = ks.encode_significant(flat, scheme.kept, limit, top, codes)
    if bad >= 0:
        raise InputError(f"x holds {float(flat[bad]):.6g}, outside the range Significant codes hold "
                         f"(zero or 2**-149 <= |x| <= {limit:.8g}, float32's)")
    if direct:
        return out
    codes = codes.reshape(a.shape)
    if out is not None:
        out[...] = codes
        return out
    return codes


def fit_encode(scheme, x):
    """Codes of an in-memory array (no parameters)."""
    return {}, encode(scheme, {}, x)


def decode(scheme, params, codes, dtype=np.float32, start=None, global_shape=None, group_offset=0,
           out=None):
    """Values of the codes in ``dtype`` (float16 via float32); ``StoreError`` for a code that
    encoding never gives (a binade field beyond the non-finite one)."""
    dtype = np.dtype(dtype)
    shape = np.shape(codes)
    flat = np.ascontiguousarray(codes, dtype=np.uint16).reshape(-1)
    base.check_codes(flat, code_count(scheme), 16, what=f"the {scheme.bits}-bit significant code range",
                     start=start)
    cdtype = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    direct = out is not None and out.dtype == cdtype and out.flags.c_contiguous and out.size == flat.size
    res = out.reshape(-1) if direct else _alloc.empty(flat.size, cdtype, fault_in=False)
    ks.decode_significant(flat, scheme.kept, res)
    res = out if direct else res.reshape(shape)
    if dtype == np.float16:
        # the values of codes from float16 data are float16 values; finite_cast clips what a
        # corrupt code puts beyond the range, and the infinities, which are put back
        inf = np.isinf(res)
        infs = res[inf]  # finite_cast clips res in place
        y = limits.finite_cast(res, dtype)
        y[inf] = infs
        return y
    return limits.finite_cast(res, dtype)


# ----------------------------------------------------------------------------- stored layout, report


def expected_side(scheme, shape, dtype):
    """No side arrays."""
    return {}


def bits_per_value(scheme, shape, dtype=np.float32):
    """Bits per value stored: 16 (one uint16 code per value, before any lossless stage)."""
    return base.stored_bits_per_value({}, shape, scheme.bits)


def level_view(scheme, side, x, x_hat):
    """The finite nonzero values over their binade's power of two (in [1, 2)) against the
    ``2**keepbits + 1`` levels ``1 + m / 2**keepbits``; a value is clipped when its magnitude
    passes the largest reconstructed one (it saturated)."""
    x = np.asarray(x, np.float64).reshape(-1)
    a = np.abs(x[np.isfinite(x) & (x != 0)])
    norm = np.ldexp(np.frexp(a)[0], 1)  # a / 2**floor(log2 a), exact
    levels = 1.0 + np.arange((1 << scheme.kept) + 1) / (1 << scheme.kept)
    h = np.abs(np.asarray(x_hat, np.float64).reshape(-1))
    top = h[np.isfinite(h)].max(initial=0.0)
    return base.view(norm, levels, "value / its power of two", a > top)


FAMILY = base.Family(
    name="significant", needs_stats=base.no_stats, needs_histogram=base.no_stats, partial=base.no_partial,
    merge=base.no_merge, finalize=finalize, fit=fit, encode=encode, decode=decode,
    block_quantum=block_quantum, expected_side=expected_side, bits_per_value=bits_per_value,
    level_view=level_view, fit_encode=fit_encode)
