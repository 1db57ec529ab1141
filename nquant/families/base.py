"""The family type: what a quantization family implements, declared as data.

A *family* implements one or more scheme classes (``nquant.schemes``).  Its hooks are the
fields of a frozen :class:`Family` (flox's ``Aggregation`` is the model): every hook is
named, the optional ones are ``None`` when absent, and nothing is found by probing.  The
registry (:mod:`nquant.families.registry`) maps each scheme class to its family; ``api``,
``store``, ``codec``, ``validate``, the report and workflow helpers and the CUDA dispatch all
read from it.

The protocol (the Dask executor runs the same functions as the NumPy path, on chunks)::

    stats  = partial(scheme, chunk, start, global_shape)   # per chunk
    stats  = merge(a, b)                                   # associative
    params = finalize(scheme, stats, data=None)            # side arrays
    codes  = encode(scheme, params, chunk, start, global_shape, group_offset, out)
    x_hat  = decode(scheme, params, codes, dtype, start, global_shape, group_offset, out)

``encode`` and ``decode`` may write into ``out``; :func:`nquant.dequantize` copies the result
into ``out`` when they did not.  Block families (``block_quantum`` not None) compute their
per-block side arrays chunk by chunk (``param_specs``, ``chunk_params``).  This module also
holds what families share and that sits below them: the description of a stored side array
(:class:`Side`), the checks that keep decoding memory safe whatever a store holds, and the
report's view of values against levels (:func:`view`).
"""

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from nquant.errors import InputError, StoreError
from nquant.packing import code_dtype, packed_shape


@dataclasses.dataclass(frozen=True)
class CudaTwin:
    """The CUDA path of a family: names of two functions of :mod:`nquant.cuda.api` (imported
    only when a CUDA path runs, so that ``import nquant`` never touches CUDA).

    ``fit_encode(scheme, d_x, shape, dtype) -> (device codes, params)`` and
    ``decode(q, d_codes, n, compute_dtype) -> device values``.
    """

    fit_encode: str
    decode: str


@dataclasses.dataclass(frozen=True)
class Family:
    """A quantization family: its hooks, as data.

    Required hooks
    --------------
    name : str, the scheme ``type`` (or types) it implements, for messages
    needs_stats(scheme) -> bool : whether fitting needs a global statistics pass
    needs_histogram(scheme) -> bool : whether it needs the second (histogram) pass
    partial, merge, finalize : the mergeable fit (see the module docstring)
    fit(scheme, x) -> params : parameters of an in-memory array (same statistics as Dask)
    encode, decode : chunk-local, given the parameters
    block_quantum(scheme) -> int or None : values a chunk must hold a whole number of
    expected_side(scheme, shape, dtype) -> {name: Side} : the stored side arrays and how
        ``nquant.open`` validates them
    bits_per_value(scheme, shape, dtype) -> float : bits per value of the stored array, side
        arrays included (exact where the sizes do not depend on the data, see each family)
    level_view(scheme, side, x, x_hat) -> dict : values against the scheme's levels for a
        report (:func:`view`)

    Optional hooks (None when absent)
    ---------------------------------
    partial_histogram(scheme, chunk, lo, hi, start, global_shape), histogram_range : the
        second pass (``histogram_range``: two functions of the merged first-pass statistics)
    param_specs(scheme, n) -> {name: (length, dtype)} : per-block side arrays of a block
        family on ``n`` values; chunk_params(scheme, chunk, start, global_shape, params) : those
        of one chunk
    side_dtypes(scheme) -> {name: dtype} : per-group side arrays (one per tensor, channel or
        block) that a chunk holding whole channels can fit on its own
    fit_encode(scheme, x), fit_encode_packed(scheme, x), decode_packed(scheme, params, packed,
        shape, dtype, out) : fused one-pass paths for in-memory arrays
    cuda : CudaTwin, the CUDA path
    cuda_refuses(scheme) -> str or None : why the CUDA path cannot run this scheme (options
        its twins do not implement), or None
    codec : bool, whether the Zarr codec ``nquant.quantize`` (per-chunk calibration) supports it
    """

    name: str
    needs_stats: Callable
    needs_histogram: Callable
    partial: Callable
    merge: Callable
    finalize: Callable
    fit: Callable
    encode: Callable
    decode: Callable
    block_quantum: Callable
    expected_side: Callable
    bits_per_value: Callable
    level_view: Callable
    partial_histogram: Callable | None = None
    histogram_range: tuple | None = None
    param_specs: Callable | None = None
    chunk_params: Callable | None = None
    side_dtypes: Callable | None = None
    fit_encode: Callable | None = None
    fit_encode_packed: Callable | None = None
    decode_packed: Callable | None = None
    cuda: CudaTwin | None = None
    cuda_refuses: Callable | None = None
    codec: bool = False

    def __post_init__(self):
        if (self.param_specs is None) != (self.chunk_params is None):
            raise TypeError(f"family {self.name!r}: param_specs and chunk_params come together")
        if (self.partial_histogram is None) != (self.histogram_range is None):
            raise TypeError(f"family {self.name!r}: partial_histogram and histogram_range come together")

    def __repr__(self):
        return f"Family({self.name!r})"

    def __dask_tokenize__(self):
        return ("nquant.Family", self.name)


# ----------------------------------------------------------------------------- defaults


def no_stats(scheme):
    """``needs_stats`` / ``needs_histogram`` of a family that fits nothing globally."""
    return False


def no_partial(scheme, chunk, start=None, global_shape=None):
    """``partial`` of a family without statistics: nothing."""
    return {}


def no_merge(a, b):
    """``merge`` of a family without statistics."""
    return {}


# ----------------------------------------------------------------------------- stored layout


@dataclasses.dataclass(frozen=True)
class Side:
    """What a stored side array must be.

    ``shape``: the exact shape, or ``(None,)``: ``(k,)`` for any ``min_len <= k <= max_len``.
    ``block``: one entry per block, read lazily per data chunk.  ``check``: a value check of
    the array (or of each chunk of a block array): ``finite``, ``zero_point`` (``qrange``),
    ``increasing`` (strictly), ``rows`` (each row non-decreasing), ``index`` (strictly
    increasing in ``[0, size)``), ``values`` (equal to ``expect``) or None.
    """

    dtype: np.dtype
    shape: tuple
    max_len: int | None = None
    min_len: int = 1
    block: bool = False
    check: str | None = None
    expect: object = None


def stored_bits_per_value(side, shape, bits, counts=None):
    """Bits per value of an array of ``shape`` stored as row-packed ``bits``-bit codes plus the
    side arrays ``side`` ({name: Side}); a variable-length array counts ``counts[name]``
    entries (default: its ``max_len``).  0.0 for an empty array (as ``QuantizedArray``)."""
    n = math.prod(shape)
    if n == 0:
        return 0.0
    nbytes = math.prod(packed_shape(tuple(shape), bits)) * code_dtype(bits).itemsize
    for name, s in side.items():
        if s.shape == (None,):
            length = (counts or {}).get(name, s.max_len)
        else:
            length = math.prod(s.shape)
        nbytes += int(length) * np.dtype(s.dtype).itemsize
    return 8.0 * nbytes / n


# ----------------------------------------------------------------------------- compact side arrays

_STORAGE = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}
_F16_MAX = float(np.finfo(np.float16).max)


def scale_storage(name):
    """NumPy dtype that stores float side arrays of ``scale_dtype=name``: float32, float16, or
    uint16 holding the upper half of the float32 bit pattern (bfloat16)."""
    return _STORAGE[name]


def widen(a):
    """A stored float side array as float32 (uint16 is bfloat16: its bits, shifted up)."""
    a = np.asarray(a)
    if a.dtype == np.uint16:
        return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return a.astype(np.float32)


def to_storage(values, name, direction, what="scale"):
    """Finite float32 ``values`` rounded to ``scale_dtype=name``: ``direction`` +1 rounds toward
    +inf (a scale that must not shrink), -1 toward -inf (an offset that must not grow); the
    result's :func:`widen` is then ``>= values`` (``<=`` for -1).

    ``InputError`` naming ``scale_dtype`` when a value lies beyond the dtype's range (no
    silent fallback to a wider dtype: the stored format is what the scheme says).
    """
    v = np.ascontiguousarray(values, dtype=np.float32)
    if name == "float32":
        return v
    if name == "float16":
        with np.errstate(over="ignore"):
            h = v.astype(np.float16)
        back = h.astype(np.float32)
        step = (back < v) if direction > 0 else (back > v)
        if step.any():
            h[step] = np.nextafter(h[step], np.float16(np.inf if direction > 0 else -np.inf))
        limit = _F16_MAX
    else:
        u = v.view(np.uint32)
        h = (u >> np.uint32(16)).astype(np.uint16)  # toward zero
        back = widen(h)
        # away from zero where the truncation moved the wrong way for the direction
        step = (back < v) if direction > 0 else (back > v)
        h[step] += np.uint16(1)
        limit = float(np.finfo(np.float32).max)
    if not np.isfinite(widen(h)).all():
        big = float(np.max(np.abs(v)))
        raise InputError(f"scale_dtype={name!r} cannot hold the {what} {big:.6g} of x (beyond "
                         f"{limit:.6g}): use scale_dtype='float32'")
    return h


def compact_cuda_refuses(scheme):
    """``cuda_refuses`` of the families whose CUDA twins store float32 side arrays only."""
    fields = {"scale_dtype": "float32", "zero_point_storage": "int32"}
    for name, default in fields.items():
        value = getattr(scheme, name, default)
        if value != default:
            return f"{name}={value!r} (the CUDA path stores {name}={default!r})"
    return None


# ----------------------------------------------------------------------------- decode safety


def check_codes(codes, n_levels, bits, what="codebook", start=None):
    """Raise ``StoreError`` when a code of ``codes`` (unpacked, uint8 or uint16) is ``>= n_levels``.

    Nothing to check (no cost) when ``n_levels >= 2**bits``: no code of ``bits`` bits can
    then pass the last level.
    """
    if n_levels >= (1 << bits) or codes.size == 0:
        return
    top = int(codes.max())
    if top >= n_levels:
        _codes_error(top, n_levels, what, start)


def check_nibbles(packed, n_levels, what="codebook", start=None):
    """:func:`check_codes` of 4-bit codes packed two per byte (``packed``, uint8)."""
    if n_levels >= 16 or packed.size == 0:
        return
    top = max(int((packed >> 4).max()), int((packed & 15).max()))
    if top >= n_levels:
        _codes_error(top, n_levels, what, start)


def _codes_error(top, n_levels, what, start):
    where = "" if start is None else f" in the chunk at {tuple(int(s) for s in start)}"
    raise StoreError(f"codes hold code {top}{where}, above the last level (index {n_levels - 1}) of "
                     f"{what}: corrupt codes or side arrays")


def check_length(name, length, need):
    """Raise ``StoreError`` when side array ``name`` has fewer than ``need`` entries (what a
    kernel indexes)."""
    if length < need:
        raise StoreError(f"side array {name!r} has {length} entries, expected {need}: corrupt side arrays")


def check_groups(layout, sizes):
    """Raise ``StoreError`` unless every parameter group the row ``layout`` indexes lies in
    ``[0, n)`` for each ``name: n`` of ``sizes``."""
    lo, hi = 0, -1
    for part in layout.parts:
        if part.R and part.L:
            lo = min(lo, int(part.row_group.min()))
            hi = max(hi, int(part.row_group.max()) + layout.col_step * (part.L - 1))
    for name, n in sizes.items():
        if lo < 0 or hi >= n:
            raise StoreError(f"side array {name!r} has {n} entries, expected at least {hi + 1}: "
                             "corrupt side arrays")


# ----------------------------------------------------------------------------- report view


def view(values, levels, xlabel, clipped):
    """A report's view of a sample: ``values`` on the axis where the scheme's ``levels`` are
    one grid, the axis label, and the fraction of values ``clipped`` (None: unknown)."""
    return {"values": np.asarray(values, np.float64).reshape(-1), "levels": np.asarray(levels, np.float64),
            "xlabel": xlabel, "clipped": None if clipped is None else float(np.mean(clipped))}


def generic_view(scheme, side, x, x_hat):
    """The values against the distinct reconstructed values (at most 256 of them shown)."""
    levels = np.unique(x_hat)
    return view(x, levels if levels.size <= 256 else [], "value", None)


def levels_view(levels, x, x_hat):
    """The values against one grid of ``levels`` (a codebook): clipped outside its ends."""
    levels = np.asarray(levels, np.float64).reshape(-1)
    if not levels.size:
        return generic_view(None, None, x, x_hat)
    return view(x, levels, "value", (x < levels[0]) | (x > levels[-1]))


def block_view(x, x_hat, block_size, levels, xlabel="value / block absmax", scale=None):
    """The values over their block's scale (default: the block's absmax) against ``levels``;
    a value is clipped when its magnitude passes the block's largest reconstructed one."""
    flat, hat = x.reshape(-1), x_hat.reshape(-1)
    pad = -flat.size % block_size
    blocks = np.pad(flat, (0, pad)).reshape(-1, block_size)
    hblocks = np.pad(np.abs(hat), (0, pad)).reshape(-1, block_size)
    if scale is None:
        scale = np.abs(blocks).max(axis=1, keepdims=True)
    else:
        scale = np.asarray(scale, np.float64).reshape(-1, 1)
    top = hblocks.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(scale > 0, blocks / scale, 0.0).reshape(-1)[:flat.size]
        clipped = (np.abs(blocks) > top * (1 + 1e-6)).reshape(-1)[:flat.size]
    return view(norm, levels, xlabel, clipped)
