"""Slow NumPy references of affine encoding and decoding (``nquant.kernels.affine``).

Written from the documentation (``nquant/kernels/affine.py`` and the docstrings of
``nquant.families.uniform`` and ``nquant.schemes.Uniform``), not from the kernel.

Conventions
-----------
- Arithmetic of encode/decode runs in the *compute dtype*: float64 for float64
  data, float32 otherwise (float16 is widened to float32).
- Codes are unsigned offsets ``q - qmin`` in ``[0, hi]`` with ``hi = qmax - qmin``;
  ``nan='propagate'`` reserves ``hi + 1`` for NaN.
- Groups: one per tensor, one per index of ``axis``, or one per block of
  ``block_size`` consecutive values of the C-ordered flattened array.
"""

import numpy as np

from tests.reference.bitpack import unpack
from tests.reference.rng import uniform_draws
from tests.reference.rounding import round_mode
from tests.reference.scalar import snap


def compute_dtype(dtype):
    """float64 for float64 data, float32 for every other float dtype."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def group_ids(scheme, shape):
    """Group number of every element (array of ``shape``, int64)."""
    n = int(np.prod(shape, dtype=np.int64))
    if scheme.block_size is not None:
        return (np.arange(n, dtype=np.int64) // scheme.block_size).reshape(shape)
    if scheme.axis is not None:
        ax = scheme.axis % len(shape)
        idx = np.arange(shape[ax], dtype=np.int64)
        bshape = [1] * len(shape)
        bshape[ax] = shape[ax]
        return np.broadcast_to(idx.reshape(bshape), shape).copy()
    return np.zeros(shape, np.int64)


def n_groups(scheme, shape):
    """Number of groups of an array of ``shape``."""
    n = int(np.prod(shape, dtype=np.int64))
    if scheme.block_size is not None:
        return -(-n // scheme.block_size)
    if scheme.axis is not None:
        return shape[scheme.axis % len(shape)]
    return 1


def qrange(scheme):
    """(qmin, qmax) from the documented code ranges."""
    b = scheme.bits
    signed = scheme.symmetric if scheme.signed is None else scheme.signed
    if signed:
        qmin, qmax = -(2 ** (b - 1)), 2 ** (b - 1) - 1
        if scheme.narrow_range:
            qmin += 1
    else:
        qmin, qmax = 0, 2 ** b - 1
    if scheme.nan == "propagate":
        qmax -= 1
    if scheme.fill_value is not None:
        qmax -= 1
    return qmin, qmax


def code_dtype(scheme):
    """uint8 codes for 1..8 bits, uint16 for 9..16 bits."""
    return np.uint8 if scheme.bits <= 8 else np.uint16


def kernel_params(scheme, params, dtype):
    """(scale, inv_scale, offset, c0) per group in ``dtype``; ``inv_scale = 1 / scale`` in ``dtype``."""
    qmin, _ = qrange(scheme)
    scale = params["scale"].astype(dtype)
    inv = (dtype.type(1) / scale).astype(dtype)
    if "offset" in params:
        offset = params["offset"].astype(dtype)
        c0 = np.zeros(len(scale), dtype)
    else:
        offset = np.zeros(len(scale), dtype)
        c0 = (zero_points(scheme, params, len(scale)) - qmin).astype(dtype)
    return scale, inv, offset, c0


def zero_points(scheme, params, groups):
    """int64 zero point per group: ``zero_point``, or ``zero_point_codes`` (``zero_point - qmin``;
    an MSB-first bit string of ``bits``-bit codes with ``block_size`` and at most 8 bits), or
    none stored (0: symmetric schemes with ``zero_point_storage="packed"``)."""
    if "zero_point" in params:
        return params["zero_point"].astype(np.int64)
    if "zero_point_codes" not in params:
        return np.zeros(groups, np.int64)
    codes = params["zero_point_codes"]
    if scheme.block_size is not None and scheme.bits <= 8:
        codes = unpack(codes, scheme.bits, groups)
    return codes[:groups].astype(np.int64) + qrange(scheme)[0]


def encode(scheme, params, x):
    """Codes (uint8 or uint16, shape of ``x``): ``clip(round((x - offset) * inv_scale) + c0, 0, hi)``.

    Every element's stochastic draw is keyed by its flat index in ``x`` (the
    whole array).  NaN gets the reserved code under ``nan='propagate'``, the fill value the
    code after it.
    """
    x = np.asarray(x)
    dtype = compute_dtype(x.dtype)
    xf = x.astype(dtype).reshape(-1)
    g = group_ids(scheme, x.shape).reshape(-1)
    _, inv, offset, c0 = kernel_params(scheme, params, dtype)
    qmin, qmax = qrange(scheme)
    hi = qmax - qmin
    with np.errstate(invalid="ignore", over="ignore"):
        t = (xf - offset[g]) * inv[g]
        if scheme.rounding in ("floor", "ceil", "stochastic"):
            t = snap(t)
        u = uniform_draws(scheme.seed, np.arange(xf.size), dtype) if scheme.rounding == "stochastic" else None
        r = round_mode(t, scheme.rounding, u).astype(dtype) + c0[g]
    codes = np.clip(r, 0, hi)
    nan = np.isnan(xf)
    codes = np.where(nan, 0, codes).astype(code_dtype(scheme))
    if scheme.nan == "propagate":
        codes[nan] = hi + 1
    if scheme.fill_value is not None:
        codes[x.reshape(-1) == x.dtype.type(scheme.fill_value)] = hi + 1 + (scheme.nan == "propagate")
    return codes.reshape(x.shape)


def decode(scheme, params, codes, dtype):
    """``(code - c0) * scale + offset`` in the compute dtype of ``dtype``, then cast to ``dtype``."""
    dtype = np.dtype(dtype)
    cd = compute_dtype(dtype)
    scale, _, offset, c0 = kernel_params(scheme, params, cd)
    codes = np.asarray(codes)
    g = group_ids(scheme, codes.shape).reshape(-1)
    c = codes.reshape(-1)
    res = (c.astype(cd) - c0[g]) * scale[g] + offset[g]
    qmin, qmax = qrange(scheme)
    if scheme.nan == "propagate":
        res = np.where(c == qmax - qmin + 1, np.nan, res).astype(cd)
    if scheme.fill_value is not None:
        fill = np.asarray(scheme.fill_value).astype(dtype)
        res = np.where(c == qmax - qmin + 1 + (scheme.nan == "propagate"), fill, res).astype(cd)
    return res.reshape(codes.shape).astype(dtype)
