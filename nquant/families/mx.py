"""OCP Microscaling formats MXFP4 and MXFP8 (``MXFP4`` / ``MXFP8`` schemes, OCP MX v1.0).

Family hooks in :data:`FAMILY` (protocol: :mod:`nquant.families.base`).  Blocks of
``block_size`` consecutive values of the flattened array (float64 data rounded to float32
first, as blockwise schemes do) share one E8M0 scale ``X = 2**(e - 127)``: side array
``scale_e8m0`` (uint8, one per block; 255 is NaN).  Per block, with ``emax`` the element
format's largest exponent (2 for E2M1, 8 for E4M3):

- ``e - 127 = floor(log2(absmax)) - emax``, clamped to [-127, 127]; an all-zero block gets
  ``e = 0`` (its elements are all zero whatever the scale); a block holding NaN or an
  infinity gets ``e = 255`` (X is NaN: the whole block decodes to NaN) and element codes 0.
- each element is ``x / X`` (a power of two) rounded to the nearest value of the
  element format, ties to the even mantissa, and clamped to the largest normal magnitude
  (6 for E2M1, 448 for E4M3): values saturate, never become NaN.  Negative values that
  round to zero keep their sign (-0).

Codes are the element bit patterns (sign, exponent, mantissa): a 4-bit E2M1 code is the
nibble ``s ee m``, an 8-bit E4M3 code the byte ``s eeee mmm``.  Decoding
is ``element[code] * X`` in float32, every product exact, by the blockwise table-lookup
kernel (the absmax of NF4 replaced by ``X``).  The largest scale encoding gives is
``e = 254 - emax``; a stored scale above that (other than NaN) would decode beyond the float32
range and is refused as corrupt.

The encoder runs vectorized NumPy in float32 (the block absmax, the exponent from ``frexp``,
the rounding by ``rint`` at the element's step, the code from the step count).  It needs no
statistics beyond each block, so NumPy and any chunking of a Dask array give the same bytes.
"""

import dataclasses
from typing import ClassVar

import numpy as np

from nquant import _alloc, limits
from nquant.errors import InputError, StoreError
from nquant.families import base
from nquant.families.blockwise import nibbles_flat
from nquant.kernels import blockwise as kb
from nquant.packing import unpack_codes
from nquant import schemes
from nquant.schemes import invalid, is_int

@dataclasses.dataclass(frozen=True)
class Microscaling(schemes.Scheme):
    """OCP Microscaling (MX v1.0): blocks of ``block_size`` values share one power-of-two scale.

    Each block of ``block_size`` consecutive values of the flattened, C-ordered array (the
    last block may be partial) stores one E8M0 scale ``X = 2**(e - 127)`` (an 8-bit biased
    exponent, side array ``scale_e8m0``, uint8; 255 is NaN) and one element per value, the
    value over ``X`` in the element format: ``e - 127 = floor(log2(absmax)) - emax_elem``,
    elements rounded to the nearest element value (ties to even mantissa) and clamped to the
    largest normal magnitude.  Codes are the elements' bit patterns.  An all-zero block gets
    the smallest scale (``e = 0``); a block holding NaN or an infinity gets ``X = NaN`` and
    decodes to NaN (the spec: a NaN scale makes every value of the block NaN).  float64 data
    is rounded to float32 first.

    Parameters
    ----------
    block_size : int >= 1 (the spec's k, 32)
    """

    block_size: int = 32

    element: ClassVar[str] = ""
    bits: ClassVar[int] = 8

    def __post_init__(self):
        if not is_int(self.block_size) or self.block_size < 1:
            invalid("block_size", self.block_size, "an integer >= 1")


@schemes.register
@dataclasses.dataclass(frozen=True)
class MXFP4(Microscaling):
    """MXFP4: FP4 E2M1 elements (values ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}), 4.25 bits per value
    with 32-value blocks.  See :class:`Microscaling`."""

    type: ClassVar[str] = "mxfp4"
    element: ClassVar[str] = "e2m1"
    bits: ClassVar[int] = 4


@schemes.register
@dataclasses.dataclass(frozen=True)
class MXFP8(Microscaling):
    """MXFP8: FP8 E4M3 elements (largest 448, no infinities, NaN unused), 8.25 bits per value
    with 32-value blocks.  See :class:`Microscaling`."""

    type: ClassVar[str] = "mxfp8"
    element: ClassVar[str] = "e4m3"
    bits: ClassVar[int] = 8


SCALE = "scale_e8m0"
E8M0_BIAS = 127
E8M0_NAN = 255


@dataclasses.dataclass(frozen=True)
class Element:
    """A minifloat element format: ``mbits`` mantissa bits, exponent ``bias``, largest normal
    magnitude ``max_normal`` (its exponent ``emax``), NaN bit patterns (positive half)."""

    name: str
    bits: int
    mbits: int
    bias: int
    emax: int
    max_normal: float
    nan_codes: tuple = ()

    @property
    def max_code(self):
        """The code of the largest normal magnitude."""
        return int(np.flatnonzero(self.positive() == self.max_normal)[0])

    @property
    def emin(self):
        """Exponent of the smallest normal value (subnormals share its step)."""
        return 1 - self.bias

    def positive(self):
        """The values of the positive codes ``0 .. 2**(bits - 1) - 1`` (float64; NaN codes NaN)."""
        c = np.arange(1 << (self.bits - 1))
        e, m = c >> self.mbits, c & ((1 << self.mbits) - 1)
        sub = m * 2.0 ** (self.emin - self.mbits)
        norm = (1 + m / (1 << self.mbits)) * np.exp2(e - self.bias)
        vals = np.where(e == 0, sub, norm)
        vals[list(self.nan_codes)] = np.nan
        return vals

    def table(self):
        """The value of every code (float32, ``2**bits`` entries: positive half, then negative)."""
        pos = self.positive()
        return np.concatenate([pos, -pos]).astype(np.float32)


E2M1 = Element("e2m1", bits=4, mbits=1, bias=1, emax=2, max_normal=6.0)
E4M3 = Element("e4m3", bits=8, mbits=3, bias=7, emax=8, max_normal=448.0, nan_codes=(0x7F,))
ELEMENTS = {"e2m1": E2M1, "e4m3": E4M3}
_TABLES = {k: v.table() for k, v in ELEMENTS.items()}
_E8M0 = np.append(np.exp2(np.arange(255.0) - E8M0_BIAS), np.nan).astype(np.float32)
"""The value of every E8M0 scale (float32: 2**-127 is subnormal there, and exact)."""


def element(scheme):
    """The scheme's element format."""
    return ELEMENTS[scheme.element]


# ----------------------------------------------------------------------------- encoding


def _flat32(chunk):
    """The chunk as flat float32; ``InputError`` for finite float64 values beyond float32."""
    a = np.asarray(chunk)
    if a.dtype == np.float64:
        with np.errstate(over="ignore"):
            flat = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
        over = np.isinf(flat) & np.isfinite(a.reshape(-1))
        if over.any():
            src = a.reshape(-1)[over]
            limits.check_float32_range("x", src, src, InputError)
        return flat
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1)


def _blocks(flat, block_size):
    """``flat`` as (blocks, block_size) rows, the last one padded with zeros."""
    pad = -flat.size % block_size
    return np.pad(flat, (0, pad)).reshape(-1, block_size) if pad else flat.reshape(-1, block_size)


def shared_exponents(fmt, flat, block_size):
    """``(e8m0, bad)``: the biased E8M0 scale of every block (uint8) and the blocks holding
    NaN or an infinity (their scale is 255, NaN)."""
    return _scales(fmt, _blocks(flat, block_size))


def _scales(fmt, blocks):
    if blocks.size == 0:
        return np.zeros(blocks.shape[0], np.uint8), np.zeros(blocks.shape[0], bool)
    with np.errstate(invalid="ignore"):
        amax = np.abs(blocks).max(axis=1)
    bad = ~np.isfinite(amax)
    # frexp: amax = m * 2**k with m in [0.5, 1), so floor(log2(amax)) = k - 1, exact for every
    # positive float32 (subnormals included); amax == 0 gives the smallest scale
    k = np.frexp(np.where(bad, np.float32(1), amax))[1] - 1
    shared = np.where(amax > 0, k - fmt.emax, -E8M0_BIAS)
    e8m0 = (np.clip(shared, -E8M0_BIAS, E8M0_BIAS) + E8M0_BIAS).astype(np.uint8)
    e8m0[bad] = E8M0_NAN
    return e8m0, bad


def round_to_element(fmt, y):
    """Codes (uint8 bit patterns) of the float32 values ``y`` in the element format: nearest
    value, ties to the even mantissa, magnitudes clamped to the largest normal."""
    mag = np.abs(y)
    k = np.frexp(mag)[1] - 1  # floor(log2 |y|) for |y| > 0; zero takes emin's (subnormal) step
    step = np.maximum(np.where(mag > 0, k, fmt.emin), fmt.emin) - fmt.mbits  # log2 of y's binade spacing
    # |y| / 2**step is exact (a power of two) and below 2**(mbits + 1); rint rounds half to even,
    # and an even number of steps is an even mantissa.  The code of n steps in binade k is
    # (k - emin) * 2**mbits + n (subnormals: n), a carry into the next binade included; codes
    # grow with the value, so saturating the code saturates the value
    n = np.rint(np.ldexp(mag, -step)).astype(np.int32)
    codes = np.minimum((step - (fmt.emin - fmt.mbits)) * (1 << fmt.mbits) + n, fmt.max_code)
    return codes.astype(np.uint8) | (np.signbit(y).astype(np.uint8) << np.uint8(fmt.bits - 1))


def _encode_flat(scheme, flat):
    """``(e8m0, codes)`` of the flat float32 ``flat``."""
    fmt = element(scheme)
    blocks = _blocks(flat, scheme.block_size)
    e8m0, bad = _scales(fmt, blocks)
    shared = e8m0.astype(np.int32) - E8M0_BIAS
    shared[bad] = 0
    # x / X in float32: exact, but where the quotient falls below 2**-126 (subnormal), which
    # is far below half the smallest element (2**-2 and 2**-10): it rounds to zero either way
    y = np.ldexp(blocks, -shared[:, None])
    y[bad] = 0
    return e8m0, round_to_element(fmt, y).reshape(-1)[:flat.size]


# ----------------------------------------------------------------------------- protocol


def block_quantum(scheme):
    """Values per chunk quantum: whole blocks."""
    return scheme.block_size


def param_specs(scheme, n):
    """Per-block side array on ``n`` values: ``scale_e8m0`` (uint8)."""
    return {SCALE: (-(-n // scheme.block_size), np.uint8)}


def finalize(scheme, stats=None, data=None):
    """No global parameters: every block's scale is its own."""
    return {}


def chunk_params(scheme, chunk, start=None, global_shape=None, params=None):
    """The scales of one chunk's blocks."""
    return {SCALE: shared_exponents(element(scheme), _flat32(chunk), scheme.block_size)[0]}


def fit(scheme, x):
    """The scales of an in-memory array."""
    return chunk_params(scheme, x)


def fit_encode(scheme, x):
    """Scales and codes of an in-memory array in one pass."""
    e8m0, codes = _encode_flat(scheme, _flat32(x))
    return {SCALE: e8m0}, codes.reshape(np.shape(x))


def encode(scheme, params, chunk, start=None, global_shape=None, group_offset=0, out=None):
    """Element codes of a chunk (its scales are recomputed from its own blocks, which equal
    the stored ones: each block's scale depends on the block alone)."""
    codes = _encode_flat(scheme, _flat32(chunk))[1].reshape(np.shape(chunk))
    if out is not None:
        out[...] = codes
        return out
    return codes


def scales(scheme, params, n):
    """The float32 scale ``X`` of each of the ``ceil(n / block_size)`` blocks (NaN for 255);
    ``StoreError`` for missing scales or a scale that encoding never gives."""
    e8m0 = np.asarray(params[SCALE])
    if e8m0.dtype != np.uint8 or e8m0.ndim != 1:
        raise StoreError(f"side array {SCALE!r} has dtype={e8m0.dtype}, ndim={e8m0.ndim}; expected 1-d uint8")
    nb = -(-n // scheme.block_size)
    base.check_length(SCALE, e8m0.size, nb)
    e8m0 = e8m0[:nb]
    top = 2 * E8M0_BIAS - element(scheme).emax
    over = (e8m0 > top) & (e8m0 != E8M0_NAN)
    if over.any():
        raise StoreError(f"side array {SCALE!r} holds scale {int(e8m0[over].max())}, above {top}, the "
                         "largest that encoding gives (the values would leave the float32 range): corrupt "
                         "side arrays")
    return _E8M0[e8m0]


def _decode(scheme, params, flat_codes, packed, shape, dtype, out):
    n = int(np.prod(shape, dtype=np.int64))
    direct = out is not None and out.dtype == np.float32 and out.flags.c_contiguous and out.size == n
    res = out.reshape(-1) if direct else _alloc.empty(n, np.float32, fault_in=False)
    if n:
        x = scales(scheme, params, n)
        base.check_length("codes", flat_codes.size, (n + 1) // 2 if packed else n)
        kb.dequantize_blockwise(flat_codes, x, scheme.block_size, _TABLES[scheme.element], res, packed=packed)
    return limits.finite_cast(out if direct else res.reshape(shape), dtype)


def decode(scheme, params, codes, dtype=np.float32, start=None, global_shape=None, group_offset=0,
           out=None):
    """``element[code] * X[block]`` (float32, exact), cast to ``dtype``."""
    return _decode(scheme, params, np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1), False,
                   np.shape(codes), dtype, out)


def decode_packed(scheme, params, packed, shape, dtype=np.float32, out=None):
    """:func:`decode` of row-packed codes; 4-bit codes of even blocks and rows are decoded
    straight from the packed bytes."""
    shape = tuple(shape)
    if not nibbles_flat(scheme, shape):
        return decode(scheme, params, unpack_codes(packed, scheme.bits, shape), dtype, out=out)
    return _decode(scheme, params, np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1), True, shape,
                   dtype, out)


# ----------------------------------------------------------------------------- stored layout, report


def expected_side(scheme, shape, dtype):
    """Stored side array: ``scale_e8m0`` (uint8), one per block."""
    n = int(np.prod(shape, dtype=np.int64))
    (length, dt), = param_specs(scheme, n).values()
    return {SCALE: base.Side(np.dtype(dt), (length,), block=True)}


def bits_per_value(scheme, shape, dtype=np.float32):
    """Bits per value stored: the row-packed element codes and one byte per block (exact:
    4.25 and 8.25 for blocks of 32 on rows of whole bytes)."""
    return base.stored_bits_per_value(expected_side(scheme, shape, dtype), shape, scheme.bits)


def level_view(scheme, side, x, x_hat):
    """The values over their block's scale ``X`` against the element values; a value is clipped
    when its magnitude passes the block's largest reconstructed one."""
    nb = -(-x.size // scheme.block_size)
    e8m0 = np.asarray(side.get(SCALE, ()))
    if e8m0.size < nb:
        return base.generic_view(scheme, side, x, x_hat)
    x_scale = _E8M0[e8m0[:nb].astype(np.uint8)]
    levels = np.unique(_TABLES[scheme.element][np.isfinite(_TABLES[scheme.element])])
    return base.block_view(x, x_hat, scheme.block_size, levels, xlabel="value / block scale (E8M0)",
                           scale=x_scale)


FAMILY = base.Family(
    name="mx", needs_stats=base.no_stats, needs_histogram=base.no_stats, partial=base.no_partial,
    merge=base.no_merge, finalize=finalize, fit=fit, encode=encode, decode=decode,
    block_quantum=block_quantum, expected_side=expected_side, bits_per_value=bits_per_value,
    level_view=level_view, param_specs=param_specs, chunk_params=chunk_params, fit_encode=fit_encode,
    decode_packed=decode_packed)
