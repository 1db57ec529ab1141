"""Slow, obviously correct NumPy references for uniform affine quantization.

Written from the documentation (``nquant/kernels/rng.py``, ``rounding.py``,
``affine.py``, the docstrings of ``nquant.families.uniform`` and ``nquant.schemes.Uniform``
and ``shared/API.md``), not from the kernels: plain vectorised NumPy, one
formula per line, no layout tricks.

Conventions
-----------
- Arithmetic of encode/decode runs in the *compute dtype*: float64 for float64
  data, float32 otherwise (float16 is widened to float32).
- Codes are unsigned offsets ``q - qmin`` in ``[0, hi]`` with ``hi = qmax - qmin``;
  ``nan='propagate'`` reserves ``hi + 1`` for NaN.
- Groups: one per tensor, one per index of ``axis``, or one per block of
  ``block_size`` consecutive values of the C-ordered flattened array.
"""

import warnings
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

# ----------------------------------------------------------------------------- stream

GAMMA = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def mix64(z):
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic, no warnings on arrays)."""
    z = np.atleast_1d(np.asarray(z, dtype=np.uint64)).copy()
    z = (z ^ (z >> np.uint64(30))) * M1
    z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed):
    """``mix64(seed mod 2**64)`` as a Python int."""
    return int(mix64(np.array([int(seed) % (1 << 64)], dtype=np.uint64))[0])


def stream_u64(seed, index):
    """``mix64(key + (index + 1) * GAMMA)`` for an int array of global flat indices."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    key = np.full(index.shape, stream_key(seed), dtype=np.uint64)
    return mix64(key + (index.astype(np.uint64) + np.uint64(1)) * GAMMA)


def uniform_draws(seed, index, dtype):
    """Uniform draws in [0, 1): 53 bits for float64, 24 bits for float32."""
    u = stream_u64(seed, index)
    if np.dtype(dtype) == np.float64:
        return (u >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return (u >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)


# ----------------------------------------------------------------------------- rounding


def round_half_away(v):
    """Ties away from zero, exactly: on ``|v|``, ``|v| - floor(|v|)`` has no rounding error."""
    v = np.asarray(v)
    a = np.abs(v)
    f = np.floor(a)
    with np.errstate(invalid="ignore"):  # inf - inf
        frac = a - f
    r = np.where(frac >= 0.5, f + 1, f).astype(v.dtype)
    return np.copysign(r, v)


def round_half_away_decimal(v):
    """Ties away from zero with exact decimal arithmetic (a second, independent reference)."""
    out = [float(Decimal(float(t)).to_integral_value(rounding=ROUND_HALF_UP)) for t in np.ravel(v)]
    return np.array(out, dtype=np.asarray(v).dtype).reshape(np.shape(v))


def stochastic_round(v, u):
    """``floor(v) + (u < v - floor(v))``."""
    f = np.floor(v)
    return f + (u < v - f)


def round_mode(v, mode, u=None):
    """Round the array ``v`` with a mode name (``u``: uniform draws for ``stochastic``)."""
    if mode == "nearest":
        return np.rint(v)
    if mode == "nearest_away":
        return round_half_away(v)
    if mode == "floor":
        return np.floor(v)
    if mode == "ceil":
        return np.ceil(v)
    if mode == "stochastic":
        return stochastic_round(v, u)
    raise ValueError(mode)


# Quantizer snapping (see ``nquant.kernels.affine``): before floor, ceil and
# stochastic rounding, a value within SNAP * |n| of a nonzero integer n counts
# as n, so values on the grid are not pushed one code down or up by the
# rounding of the float32 scale and of its reciprocal.
SNAP = 2.0 ** -21


def snap(t):
    r = np.rint(t)
    with np.errstate(invalid="ignore"):
        close = np.abs(t - r) <= np.abs(r) * SNAP
    return np.where(close, r, t).astype(t.dtype)


# ----------------------------------------------------------------------------- layout / groups


def compute_dtype(dtype):
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
    n = int(np.prod(shape, dtype=np.int64))
    if scheme.block_size is not None:
        return -(-n // scheme.block_size)
    if scheme.axis is not None:
        return shape[scheme.axis % len(shape)]
    return 1


def group_rows(scheme, x):
    """List of 1-D float64 arrays, the values of each group."""
    x = np.asarray(x, dtype=np.float64)
    if scheme.block_size is not None:
        flat = x.reshape(-1)
        return [flat[i:i + scheme.block_size] for i in range(0, flat.size, scheme.block_size)]
    if scheme.axis is not None:
        moved = np.moveaxis(x, scheme.axis % x.ndim, 0)
        return [moved[i].reshape(-1) for i in range(moved.shape[0])]
    return [x.reshape(-1)]


def group_minmax(scheme, x):
    """(mins, maxs) per group with np.nanmin / np.nanmax; groups without numbers give (0, 0)."""
    mins, maxs = [], []
    for g in group_rows(scheme, x):
        if g.size == 0 or np.isnan(g).all():
            mins.append(0.0)
            maxs.append(0.0)
        else:
            mins.append(np.nanmin(g))
            maxs.append(np.nanmax(g))
    return np.array(mins, np.float64), np.array(maxs, np.float64)


def raw_minmax(scheme, x):
    """(mins, maxs, n_nan) with +inf / -inf for groups without numbers (what ``partial`` returns)."""
    mins, maxs = [], []
    for g in group_rows(scheme, x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mins.append(np.nanmin(g) if g.size else np.nan)
            maxs.append(np.nanmax(g) if g.size else np.nan)
    mins = np.where(np.isnan(mins), np.inf, mins)
    maxs = np.where(np.isnan(maxs), -np.inf, maxs)
    return mins, maxs, int(np.isnan(np.asarray(x, np.float64)).sum())


def histogram_counts(scheme, x, lo, hi):
    """Counts (G, bins): bin ``trunc((v - lo) / (hi - lo) * bins)`` clipped to [0, bins - 1]."""
    # bins: the scheme's, or the documented default (2048 per tensor, 256 per channel)
    B = scheme.bins if scheme.bins is not None else (2048 if scheme.axis is None else 256)
    rows = group_rows(scheme, x)
    counts = np.zeros((len(rows), B), np.int64)
    for g, v in enumerate(rows):
        v = v[np.isfinite(v)]
        width = hi[g] - lo[g]
        if width > 0:
            b = np.trunc((v - lo[g]) / width * B)
        else:
            b = np.zeros(v.shape)
        b = np.clip(b, 0, B - 1).astype(np.int64)
        counts[g] = np.bincount(b, minlength=B)
    return counts


# ----------------------------------------------------------------------------- parameters


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
    return qmin, qmax


def exact_percentiles(scheme, x):
    lows, highs = [], []
    for g in group_rows(scheme, x):
        g = g[~np.isnan(g)]
        if g.size == 0:
            lows.append(0.0)
            highs.append(0.0)
        else:
            lows.append(np.percentile(g, scheme.percentile[0]))
            highs.append(np.percentile(g, scheme.percentile[1]))
    return np.array(lows), np.array(highs)


def params_from_range(scheme, rmin, rmax):
    """Side arrays from the clipping range, as the docstrings state them.

    - symmetric: zero point 0, ``scale = absmax / qmax`` (a constant ``c``: ``|c|``).
    - zero_point="float": ``scale = (rmax - rmin) / (qmax - qmin)``, ``offset = rmin``
      (as float32, rounded up).
    - zero_point="int": range widened to contain 0, ``scale = (hi - lo) / (qmax - qmin)``
      (a constant ``c``: ``|c|``), ``zero_point = clip(round(qmin - lo / scale), qmin, qmax)``.
    A zero scale becomes 1; float32 scales are at least the smallest normal float32.
    """
    qmin, qmax = qrange(scheme)
    rmin = np.asarray(rmin, np.float64)
    rmax = np.asarray(rmax, np.float64)
    tiny = np.float32(np.finfo(np.float32).tiny)

    def f32_scale(s):
        s = np.where(s > 0, s, 1.0).astype(np.float32)
        return np.maximum(s, tiny)

    const = rmin == rmax
    if scheme.symmetric:
        amax = np.maximum(np.abs(rmin), np.abs(rmax))
        scale = f32_scale(np.where(const, amax, amax / qmax))
        return {"scale": scale, "zero_point": np.zeros(len(scale), np.int32)}
    if scheme.zero_point == "float":
        scale = f32_scale((rmax - rmin) / (qmax - qmin))
        # the float32 offset is rmin rounded up (so that rmin itself is code 0 in every mode)
        offset = rmin.astype(np.float32)
        offset = np.where(offset.astype(np.float64) < rmin, np.nextafter(offset, np.float32(np.inf)), offset)
        return {"scale": scale, "offset": offset.astype(np.float32)}
    lo = np.minimum(rmin, 0.0)
    hi = np.maximum(rmax, 0.0)
    scale = f32_scale(np.where(const, np.abs(rmin), (hi - lo) / (qmax - qmin)))
    zp = np.clip(np.round(qmin - lo / scale.astype(np.float64)), qmin, qmax)
    return {"scale": scale, "zero_point": zp.astype(np.int32)}


def fit(scheme, x):
    """Parameters for ``range`` explicit, "minmax" or "percentile_exact" (others: not here)."""
    G = n_groups(scheme, np.shape(x))
    r = scheme.range
    if isinstance(r, tuple):
        rmin, rmax = np.full(G, r[0]), np.full(G, r[1])
    elif r == "minmax":
        rmin, rmax = group_minmax(scheme, x)
    elif r == "percentile_exact":
        rmin, rmax = exact_percentiles(scheme, x)
    else:
        raise ValueError(f"no plain reference for range={r!r}")
    return params_from_range(scheme, rmin, rmax)


# ----------------------------------------------------------------------------- encode / decode


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
        c0 = (params["zero_point"].astype(np.int64) - qmin).astype(dtype)
    return scale, inv, offset, c0


def encode(scheme, params, x):
    """Codes (uint8, shape of ``x``): ``clip(round((x - offset) * inv_scale) + c0, 0, hi)``.

    Every element's stochastic draw is keyed by its flat index in ``x`` (the
    whole array).  NaN gets the reserved code under ``nan='propagate'``.
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
    codes = np.where(nan, 0, codes).astype(np.uint8)
    if scheme.nan == "propagate":
        codes[nan] = hi + 1
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
    if scheme.nan == "propagate":
        qmin, qmax = qrange(scheme)
        res = np.where(c == qmax - qmin + 1, np.nan, res).astype(cd)
    return res.reshape(codes.shape).astype(dtype)


# ----------------------------------------------------------------------------- packing


def pack(codes, bits):
    """MSB-first bit string of the codes, zero-padded to whole bytes."""
    s = "".join(format(int(c), f"0{bits}b") for c in np.ravel(codes))
    s += "0" * (-len(s) % 8)
    return np.array([int(s[i:i + 8], 2) for i in range(0, len(s), 8)], dtype=np.uint8)


def unpack(packed, bits, n):
    s = "".join(format(int(b), "08b") for b in np.ravel(packed))
    return np.array([int(s[i * bits:(i + 1) * bits], 2) for i in range(n)], dtype=np.uint8)


# ----------------------------------------------------------------------------- metrics


def metrics(x, x_hat):
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(x_hat, np.float64).reshape(-1)
    e = y - x
    mse = float(np.mean(e ** 2))
    return {"mse": mse, "rmse": mse ** 0.5, "max_abs": float(np.max(np.abs(e))),
            "sqnr_db": float(10 * np.log10(np.sum(x ** 2) / np.sum(e ** 2))), "bias": float(np.mean(e))}
