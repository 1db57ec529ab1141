"""Blockwise absmax quantization to a grid (``Blockwise`` / ``NF4`` schemes, QLoRA).

Family hooks in :data:`FAMILY` (protocol: :mod:`nquant.families.base`).  Blocks run over the flattened,
C-ordered array (float64 data is cast to float32 first, as bitsandbytes does).
Side arrays: ``absmax`` (float32 per block), or with double quantization
``absmax_codes`` (uint8 per block), ``absmax2`` (float32 per 256 blocks) and
``offset`` (float32, the mean absmax).  The mean is exact and mergeable: each
chunk sums the float32 absmax values exactly as integer mantissas per exponent,
so a NumPy array and any chunking of a Dask array get the same offset.
Parameter keys starting with ``_`` are working values that are not stored.
With ``scale_dtype`` float16 or bfloat16 (stored as uint16 bits) the absmax is rounded up
to that dtype and the values are encoded with the rounded absmax, so decoding gives exactly
the levels that encoding chose and no value clips.
"""


import numpy as np

from nquant import _alloc, limits
from nquant.errors import InputError, StoreError
from nquant.families import base
from nquant.kernels import blockwise as kb
from nquant.packing import pack_codes, packed_shape, unpack_codes

DQ_BLOCK = kb.DOUBLE_QUANT_BLOCK


def _levels(scheme):
    return np.asarray(scheme.codebook, dtype=np.float32)


def _flat32(chunk):
    """The chunk as flat float32; ``InputError`` for float64 values beyond the float32 range
    (the cast would make them infinite)."""
    if np.asarray(chunk).dtype != np.float64:
        return np.ascontiguousarray(chunk, dtype=np.float32).reshape(-1)
    with np.errstate(over="ignore"):
        flat = np.ascontiguousarray(chunk, dtype=np.float32).reshape(-1)
    if not np.isfinite(flat).all():
        src = np.asarray(chunk).reshape(-1)
        over = np.isinf(flat) & np.isfinite(src)
        if over.any():
            limits.check_float32_range("x", src[over], src[over], InputError)
    return flat


def _absmax(scheme, flat):
    out = np.empty(-(-flat.size // scheme.block_size), np.float32)
    if flat.size:
        kb.blockwise_absmax(flat, scheme.block_size, out)
    return _checked(out)


def _checked(absmax):
    """``absmax``, or InputError when a block held NaN or inf (its absmax is not finite)."""
    if not np.isfinite(absmax).all():
        raise InputError("x contains NaN or infinite values: blockwise quantization needs finite data")
    return absmax


# ----------------------------------------------------------------------------- protocol


def needs_stats(scheme):
    """Double quantization needs the global mean absmax; plain blocks need nothing global."""
    return scheme.double_quant


def needs_histogram(scheme):
    return False


def block_quantum(scheme):
    """Values per chunk quantum: whole blocks, whole groups of 256 blocks with double_quant."""
    return scheme.block_size * (DQ_BLOCK if scheme.double_quant else 1)


def partial(scheme, chunk, start=None, global_shape=None):
    """Exact partial sum of the chunk's block absmax values (double quantization)."""
    return {"absmax_sum": kb.exact_sum_partial(_absmax(scheme, _flat32(chunk)))}


def merge(a, b):
    return {"absmax_sum": a["absmax_sum"] + b["absmax_sum"]}


def finalize(scheme, stats=None, data=None):
    """Global parameters: ``offset`` (the mean absmax) with double quantization, else none."""
    if not scheme.double_quant:
        return {}
    return {"offset": np.array([kb.exact_mean(stats["absmax_sum"])], np.float32)}


def param_specs(scheme, n):
    """Per-block side arrays on ``n`` values: name -> (length, dtype)."""
    nb = -(-n // scheme.block_size)
    if scheme.double_quant:
        return {"absmax_codes": (nb, np.uint8), "absmax2": (-(-nb // DQ_BLOCK), np.float32)}
    return {"absmax": (nb, base.scale_storage(scheme.scale_dtype))}


def chunk_params(scheme, chunk, start=None, global_shape=None, params=None):
    """Side arrays of one chunk's blocks (plus the exact ``_absmax`` working value)."""
    return _block_params(scheme, _absmax(scheme, _flat32(chunk)), params)


def _block_params(scheme, absmax, params):
    """Side arrays of blocks with exact ``absmax``; ``params`` hold the global ``offset``."""
    if not scheme.double_quant and scheme.scale_dtype != "float32":
        stored = base.to_storage(absmax, scheme.scale_dtype, +1, what="block absmax")
        out = {"absmax": stored, "_absmax": base.widen(stored)}
    elif not scheme.double_quant:
        out = {"absmax": absmax}
    else:
        codes, absmax2, _ = kb.double_quantize(absmax, offset=params["offset"][0])
        if absmax.size and float(absmax.max()) > DQ_NEAR_LIMIT:
            finite_absmax2(codes, absmax2, params["offset"][0])
        out = {"absmax_codes": codes, "absmax2": absmax2, "_absmax": absmax}
    check_products(scheme, {**params, **out} if params else out)
    return out


DQ_NEAR_LIMIT = limits.F32_MAX / 4
"""Largest absmax below which double quantization cannot overflow: a decoded absmax is at most
``absmax2 + offset <= 2 max(absmax)``."""


def finite_absmax2(codes, absmax2, offset):
    """Lower (in place) the code of a block whose decoded absmax ``map[code] * absmax2 +
    offset`` overflows float32 (absmax values near the limit, rounded up by the 8-bit map)
    to the next lower level of the map, until it is finite."""
    for _ in range(len(kb.DYNAMIC)):
        with np.errstate(over="ignore", invalid="ignore"):
            bad = ~np.isfinite(kb.double_dequantize(codes, absmax2, np.float32(offset)))
        if not bad.any():
            return
        if (codes[bad] == 0).any():
            break
        codes[bad] -= 1
    raise InputError("x: its block absmax values cannot be double-quantized to finite float32 values")


def check_products(scheme, params):
    """``InputError`` where a level beyond [-1, 1] times a block's absmax (as decoding sees it)
    would exceed the float32 range; levels within [-1, 1] never can."""
    big = float(np.max(np.abs(np.asarray(scheme.codebook, np.float64))))
    if big <= 1:
        return
    absmax = block_absmax(scheme, params)
    if absmax.size and float(absmax.max()) * big > limits.F32_MAX:
        raise InputError(f"x has a block absmax of {float(absmax.max()):.6g}: times the codebook's level "
                         f"{big:.6g} it exceeds the float32 range (|value| <= {limits.F32_MAX:.8g}); "
                         "use a codebook within [-1, 1]")


def _params(scheme, absmax):
    """All side arrays of a whole array from its exact block ``absmax``."""
    glob = finalize(scheme, {"absmax_sum": kb.exact_sum_partial(absmax)}) if scheme.double_quant else {}
    return {**glob, **_block_params(scheme, absmax, glob)}


def fit(scheme, x):
    """All side arrays of an in-memory array (one chunk of the Dask protocol)."""
    return _params(scheme, _absmax(scheme, _flat32(x)))


def fit_encode(scheme, x):
    """``fit`` then ``encode`` of an in-memory array, in one pass over the data.

    Returns
    -------
    params : dict, as :func:`fit` gives them
    codes : ndarray of the shape of ``x``, uint8
    """
    if scheme.scale_dtype != "float32":  # the values are encoded with the rounded absmax
        params = fit(scheme, x)
        return params, encode(scheme, params, x)
    flat = _flat32(x)
    absmax = np.empty(-(-flat.size // scheme.block_size), np.float32)
    codes = _alloc.empty(flat.size, np.uint8)
    if flat.size:
        kb.absmax_quantize_blockwise(flat, scheme.block_size, _levels(scheme), absmax, codes)
    return _params(scheme, _checked(absmax)), codes.reshape(np.shape(x))


def block_absmax(scheme, params):
    """The float32 absmax per block that decoding uses (dequantized with double_quant)."""
    if "absmax" in params:
        return base.widen(params["absmax"])
    return double_dequantized(params, ("absmax_codes", "absmax2", "offset"))


def double_dequantized(params, names):
    """The float32 values that double quantization stored in ``params`` under ``names``:
    (8-bit codes, float32 scale per 256 codes, float32 offset), lengths checked first."""
    codes, absmax2, offset = (np.asarray(params[k]) for k in names)
    offset = offset.reshape(-1)
    # the kernel indexes the 256-entry map by code and absmax2 by group of DQ_BLOCK codes
    if codes.dtype != np.uint8 or codes.ndim != 1:
        raise StoreError(f"side array {names[0]!r} has dtype={codes.dtype}, ndim={codes.ndim}; "
                         "expected 1-d uint8")
    base.check_length(names[1], absmax2.size, -(-codes.size // DQ_BLOCK))
    base.check_length(names[2], offset.size, 1)
    return kb.double_dequantize(codes, np.asarray(absmax2, np.float32), np.float32(offset[0]))


def double_quantize_up(values, offset):
    """Double quantization (``kb.double_quantize`` about ``offset``) of positive float32
    ``values`` whose decoded values are not below them: a code whose level decodes below its
    value is raised to the next level of the (ascending) dynamic map while one is left.

    Returns
    -------
    codes : ndarray of shape (m,), uint8
    scale2 : ndarray of shape (ceil(m / 256),), float32
    """
    values = np.ascontiguousarray(values, np.float32)
    codes, scale2, _ = kb.double_quantize(values, offset=offset)
    for _ in range(len(kb.DYNAMIC)):
        with np.errstate(over="ignore", invalid="ignore"):
            low = (kb.double_dequantize(codes, scale2, np.float32(offset)) < values) & (codes < 255)
        if not low.any():
            break
        codes[low] += 1
    return codes, scale2


def dequantize_checked(scheme, params, codes, n, levels, out, packed=False, start=None):
    """``kb.dequantize_blockwise`` of ``n`` values once the arrays it indexes are known to fit:
    codes for ``n`` values, an absmax per block, codes below the number of ``levels``
    (``start``: the chunk's position, for the message)."""
    absmax = block_absmax(scheme, params)
    base.check_length("codes", codes.size, (n + 1) // 2 if packed else n)
    base.check_length("absmax", absmax.size, -(-n // scheme.block_size))
    if packed:
        base.check_nibbles(codes, levels.size, start=start)
    else:
        base.check_codes(codes, levels.size, scheme.bits, start=start)
    kb.dequantize_blockwise(codes, absmax, scheme.block_size, levels, out, packed=packed)


def encode(scheme, params, chunk, start=None, global_shape=None, group_offset=0, out=None):
    """Codes (uint8, shape of the chunk): each value over its block's absmax, to the nearest level."""
    flat = _flat32(chunk)
    codes = _alloc.empty(flat.size, np.uint8) if out is None else out.reshape(-1)
    absmax = params.get("_absmax", params.get("absmax"))
    if absmax is not None:
        absmax = base.widen(absmax)
    if flat.size:
        if absmax is None:
            tmp = np.empty(-(-flat.size // scheme.block_size), np.float32)
            kb.absmax_quantize_blockwise(flat, scheme.block_size, _levels(scheme), tmp, codes)
            _checked(tmp)
        else:
            kb.quantize_blockwise(flat, np.asarray(absmax, np.float32), scheme.block_size, _levels(scheme),
                                  codes)
    return codes.reshape(chunk.shape)


def decode(scheme, params, codes, dtype=np.float32, start=None, global_shape=None, group_offset=0,
           out=None):
    """``codebook[code] * absmax[block]`` (float32), cast to ``dtype``; into ``out`` when it
    is a C-contiguous float32 array of the codes' size."""
    return _decode(scheme, params, np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1), False,
                   np.shape(codes), dtype, out, start)


def nibbles_flat(scheme, shape):
    """Whether the codes of ``shape``, row-packed (``packing.pack_codes``), are the
    kernels' flat two-per-byte stream: 4-bit codes, even blocks, even rows."""
    return scheme.bits == 4 and scheme.block_size % 2 == 0 and (len(shape) <= 1 or shape[-1] % 2 == 0)


def fit_encode_packed(scheme, x):
    """:func:`fit_encode` with the codes row-packed as ``packing.pack_codes`` packs them;
    in one pass when :func:`nibbles_flat`."""
    shape = np.shape(x)
    if not nibbles_flat(scheme, shape) or scheme.scale_dtype != "float32":
        params, codes = fit_encode(scheme, x)
        return params, pack_codes(codes, scheme.bits)
    flat = _flat32(x)
    absmax = np.empty(-(-flat.size // scheme.block_size), np.float32)
    packed = _alloc.empty(packed_shape(shape, 4), np.uint8)
    if flat.size:
        kb.absmax_quantize_blockwise(flat, scheme.block_size, _levels(scheme), absmax, packed.reshape(-1),
                                     packed=True)
    return _params(scheme, _checked(absmax)), packed


def decode_packed(scheme, params, packed, shape, dtype=np.float32, out=None):
    """:func:`decode` of row-packed codes of ``shape``; unpacked on the fly when
    :func:`nibbles_flat`."""
    shape = tuple(shape)
    if not nibbles_flat(scheme, shape):
        return decode(scheme, params, unpack_codes(packed, scheme.bits, shape), dtype, out=out)
    return _decode(scheme, params, np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1), True, shape,
                   dtype, out)


def _decode(scheme, params, flat_codes, packed, shape, dtype, out, start=None):
    n = int(np.prod(shape, dtype=np.int64))
    direct = out is not None and out.dtype == np.float32 and out.flags.c_contiguous and out.size == n
    res = out.reshape(-1) if direct else _alloc.empty(n, np.float32, fault_in=False)
    if n:
        dequantize_checked(scheme, params, flat_codes, n, _levels(scheme), res, packed=packed, start=start)
    return limits.finite_cast(out if direct else res.reshape(shape), dtype)


# ----------------------------------------------------------------------------- stored layout, report


def expected_side(scheme, shape, dtype):
    """Stored side arrays: ``absmax`` per block (finite), or with double quantization
    ``absmax_codes`` per block, ``absmax2`` per 256 blocks and ``offset`` (finite)."""
    n = int(np.prod(shape, dtype=np.int64))
    out = {name: base.Side(np.dtype(dt), (length,), block=True,
                           check=None if name == "absmax_codes" else "finite")
           for name, (length, dt) in param_specs(scheme, n).items()}
    if scheme.double_quant:
        out["offset"] = base.Side(np.dtype(np.float32), (1,), check="finite")
    return out


def bits_per_value(scheme, shape, dtype=np.float32):
    """Bits per value stored: the row-packed codes and the absmax arrays (exact)."""
    return base.stored_bits_per_value(expected_side(scheme, shape, dtype), shape, scheme.bits)


def level_view(scheme, side, x, x_hat):
    """The values over their block's absmax against the codebook (NF4's levels)."""
    return base.block_view(x, x_hat, scheme.block_size, scheme.codebook)


FAMILY = base.Family(
    name="blockwise", needs_stats=needs_stats, needs_histogram=needs_histogram, partial=partial, merge=merge,
    finalize=finalize, fit=fit, encode=encode, decode=decode, block_quantum=block_quantum,
    expected_side=expected_side, bits_per_value=bits_per_value, level_view=level_view,
    param_specs=param_specs, chunk_params=chunk_params, fit_encode=fit_encode,
    fit_encode_packed=fit_encode_packed, decode_packed=decode_packed,
    cuda=base.CudaTwin("fit_encode_blockwise", "decode_blockwise"), cuda_refuses=base.compact_cuda_refuses)
