"""Sorted-codebook quantization (``Codebook`` schemes): any 1-D grid, every rounding mode.

Family hooks in :data:`FAMILY` (protocol: :mod:`nquant.families.base`); a codebook needs no statistics, so
its only parameter is the grid itself (side array ``codebook``, float32).
"""

import numpy as np

from nquant import _alloc, _layout, limits
from nquant.errors import InputError
from nquant.families import base
from nquant.families.uniform import compute_dtype
from nquant.kernels import codebook1d
from nquant.kernels.rng import seed_key
from nquant.kernels.rounding import MODES


def needs_stats(scheme):
    return False


def needs_histogram(scheme):
    return False


def block_quantum(scheme):
    return None


def finalize(scheme, stats=None, data=None):
    """``{"codebook": float32 levels}``."""
    return {"codebook": np.asarray(scheme.values, dtype=np.float32)}


def fit(scheme, x):
    return finalize(scheme)


def _levels(scheme, params, dtype):
    # float64 data is coded against the scheme's exact (float64) values
    if dtype == np.float64:
        return np.asarray(scheme.values, dtype=np.float64)
    return np.asarray(params["codebook"], dtype=np.float32)


def encode(scheme, params, chunk, start=None, global_shape=None, group_offset=0, out=None):
    """Codes (uint8 indices into the grid) of a chunk; ``InputError`` on NaN/inf."""
    shape = chunk.shape
    flat = np.ascontiguousarray(chunk, dtype=compute_dtype(chunk.dtype)).reshape(-1)
    levels = _levels(scheme, params, flat.dtype)
    lay = _layout.row_layout(shape, start, shape if global_shape is None else global_shape)
    codes = _alloc.empty(flat.size, np.uint8) if out is None else out.reshape(-1)
    key = seed_key(scheme.seed)
    bad = 0
    for part in lay.parts:
        if part.R and part.L:
            bad += codebook1d.quantize_sorted(part.view(flat), part.row_index, levels,
                                              MODES[scheme.rounding], key, part.view(codes))
    if bad:
        raise InputError(f"x contains {bad} non-finite value(s) (NaN or inf): a codebook needs finite data")
    return codes.reshape(shape)


def decode(scheme, params, codes, dtype=np.float32, start=None, global_shape=None, group_offset=0,
           out=None):
    """Table lookup: ``codebook[code]`` in ``dtype``."""
    dtype = np.dtype(dtype)
    cdtype = compute_dtype(dtype)
    levels = _levels(scheme, params, cdtype)
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    res = _alloc.empty(flat.size, cdtype, fault_in=False)
    if flat.size:
        base.check_codes(flat, levels.size, scheme.bits, start=start)
        codebook1d.dequantize_table(flat.reshape(1, -1), levels, res.reshape(1, -1))
    return limits.finite_cast(res.reshape(codes.shape), dtype)


def expected_side(scheme, shape, dtype):
    """Stored side array: ``codebook`` (float32), the scheme's values exactly."""
    values = np.asarray(scheme.values, np.float32)
    return {"codebook": base.Side(np.dtype(np.float32), values.shape, check="values", expect=values)}


def bits_per_value(scheme, shape, dtype=np.float32):
    """Bits per value stored: the row-packed codes and the codebook (exact)."""
    return base.stored_bits_per_value(expected_side(scheme, shape, dtype), shape, scheme.bits)


def level_view(scheme, side, x, x_hat):
    """The values against the grid; clipped outside its first and last levels."""
    return base.levels_view(side.get("codebook", scheme.values), x, x_hat)


FAMILY = base.Family(
    name="codebook", needs_stats=needs_stats, needs_histogram=needs_histogram, partial=base.no_partial,
    merge=base.no_merge, finalize=finalize, fit=fit, encode=encode, decode=decode,
    block_quantum=block_quantum, expected_side=expected_side, bits_per_value=bits_per_value,
    level_view=level_view, cuda=base.CudaTwin("fit_encode_codebook", "decode_codebook"))
