"""Slow, obviously correct NumPy references of the uniform affine family (``nquant.families.uniform``).

Parameters from the clipping range, as the docstrings state them; encoding and decoding with
given parameters are the affine kernel's (``tests/reference/affine.py``).
"""

import numpy as np

from tests.reference.affine import n_groups, qrange
from tests.reference.bitpack import pack
from tests.reference.stats import group_minmax, group_rows


def exact_percentiles(scheme, x):
    """Per group, ``np.percentile`` of the non-NaN values at the scheme's two percentiles (0, 0 if none)."""
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
        return stored(scheme, {"scale": scale, "zero_point": np.zeros(len(scale), np.int32)})
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
    return stored(scheme, {"scale": scale, "zero_point": zp.astype(np.int32)})


def stored(scheme, params):
    """The side arrays as ``zero_point_storage`` stores integer zero points: an int32 array
    (``"int32"``), or (``"packed"``) none for symmetric schemes and otherwise the codes
    ``zero_point - qmin`` (uint16 for 9..16 bits; an MSB-first bit string with ``block_size``)."""
    if scheme.zero_point_storage == "int32" or "zero_point" not in params:
        return params
    if scheme.symmetric:
        return {"scale": params["scale"]}
    codes = params["zero_point"].astype(np.int64) - qrange(scheme)[0]
    if scheme.bits > 8:
        return {"scale": params["scale"], "zero_point_codes": codes.astype(np.uint16)}
    if scheme.block_size is not None:
        return {"scale": params["scale"], "zero_point_codes": pack(codes, scheme.bits)}
    return {"scale": params["scale"], "zero_point_codes": codes.astype(np.uint8)}


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
