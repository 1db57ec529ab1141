"""Blockwise absmax quantization to a k-means-fitted codebook (``KMeansBlockwise`` schemes).

Family hooks in :data:`FAMILY` (protocol: :mod:`nquant.families.base`); blocks, absmax and
double quantization exactly as :mod:`nquant.families.blockwise` (whose block functions this
module reuses), but the levels are fitted to the tensor.

Objective.  With ``y_i = x_i / absmax_b`` the value normalised by its block's absmax, a level
``c`` reconstructs ``absmax_b * c``, so the squared error of the tensor is
``sum_b absmax_b**2 * sum_{i in b} (y_i - c(y_i))**2``: an exact *weighted* 1-D k-means of
``y`` with weights ``absmax_b**2`` (:func:`nquant.optimal1d.kmeans1d`), solved with
``2**bits`` centres.  (Weights are taken relative to the largest absmax ``A``, ``(absmax_b /
A)**2``, which does not change the optimum.)

Fits.

- ``fit="histogram"`` (default; NumPy and Dask inputs alike, so both give the same codebook):
  pass 1 collects the exact mergeable mean absmax (double quantization), the largest absmax
  ``A`` and the count ``n``; pass 2 builds a weighted histogram of ``y`` over [-1, 1]
  (``bins`` bins) holding per bin the sum of the weights and the sum of weight times ``y``,
  both in int64 fixed point (``round(w * 2**F)`` and ``round(round(w * 2**F) * y)`` with
  ``F = min(52, 62 - bit_length(n))``, so sums never overflow).  Integer sums merge exactly, so
  every chunking gives the same histogram and the same codebook, bit for bit.  The bin
  centroids (sum of w y over sum of w: exact means of the values in the bin) with the bin
  weights then go through the exact weighted k-means.  What is lost against the exact
  optimum: cluster boundaries can only fall between bins (one bin is ``2 / bins`` wide), and
  the fixed point rounds each weight to ``2**-F`` of the largest.  Measured on the 39 matrices
  of all-MiniLM-L6-v2 that get a codebook (``bins=16384``, block 66, ``benchmarks/compare_models.py``
  prints the figures): the objective exceeds the exact optimum by 1.8e-7 (relative) on average,
  4.4e-7 at most, and the final RMSE (with double quantization) differs from the exact fit's by
  at most 2.4e-5 relative, either way.
- ``fit="exact"``: the exact weighted k-means over all the values of an in-memory (NumPy)
  array; ``O(d log d + K d)`` time and about ``(4 K + 140)`` bytes per distinct value.

The fit weighs each block by its exact absmax; with ``scale_dtype`` float16 or bfloat16 the
values are then encoded against the stored (rounded up) absmax, as :mod:`nquant.families.blockwise`.

Side arrays: ``codebook`` (float32, the fitted levels, ascending; fewer than ``2**bits``
when the data has fewer distinct normalised values) when the tensor has at least
``min_size`` values, plus the absmax arrays of :mod:`nquant.families.blockwise` (``absmax``, or
``absmax_codes``, ``absmax2`` and ``offset`` with double quantization).  Codes are the
nearest level (ties at a float32 midpoint to the lower level), by the same kernels as NF4.
"""

import numpy as np

from nquant import _alloc, limits
from nquant.errors import InputError
from nquant.families import base
from nquant.families import blockwise as bw
from nquant.kernels import blockwise as kb
from nquant.kernels.kmeans1d import sse_nearest
from nquant.codebooks.optimal1d import kmeans1d

MAX_FRACTION_BITS = 52


# ----------------------------------------------------------------------------- protocol


def needs_stats(scheme):
    """Always: the fit needs the largest absmax and the count (and the mean absmax with dq)."""
    return True


def needs_histogram(scheme):
    """``fit="histogram"`` needs the second (histogram) pass."""
    return scheme.fit == "histogram"


def block_quantum(scheme):
    """Values per chunk quantum: as :func:`nquant.families.blockwise.block_quantum`."""
    return bw.block_quantum(scheme)


def param_specs(scheme, n):
    """Per-block side arrays on ``n`` values (as :mod:`nquant.families.blockwise`)."""
    return bw.param_specs(scheme, n)


def chunk_params(scheme, chunk, start=None, global_shape=None, params=None):
    """Per-block side arrays of one chunk (as :mod:`nquant.families.blockwise`)."""
    return bw.chunk_params(scheme, chunk, start=start, global_shape=global_shape, params=params)


def partial(scheme, chunk, start=None, global_shape=None):
    """Pass 1: exact partial sum of the block absmax values, their maximum, the count."""
    absmax = bw._absmax(scheme, bw._flat32(chunk))
    amax = absmax.max() if absmax.size else np.float32(0)
    return {"absmax_sum": kb.exact_sum_partial(absmax), "absmax_max": np.array([amax], np.float32),
            "n": np.array([chunk.size], np.int64)}


def _scale(st):
    return float(st["absmax_max"][0])


def _frac_bits(st):
    return int(min(MAX_FRACTION_BITS, 62 - int(st["n"][0]).bit_length()))


histogram_range = (_scale, _frac_bits)


def partial_histogram(scheme, chunk, scale, frac_bits, start=None, global_shape=None):
    """Pass 2: the fixed-point weighted histogram of the chunk's normalised values."""
    hw = np.zeros(scheme.bins, np.int64)
    hs = np.zeros(scheme.bins, np.int64)
    flat = bw._flat32(chunk)
    if flat.size and scale > 0:
        absmax = bw._absmax(scheme, flat)
        kb.weighted_histogram(flat, absmax, scheme.block_size, float(scale), int(frac_bits), scheme.bins, hw, hs)
    return {"hist_w": hw, "hist_s": hs}


def merge(a, b):
    """Merge two partials (max for ``absmax_max``, exact integer sums otherwise)."""
    return {k: (np.maximum(a[k], b[k]) if k == "absmax_max" else a[k] + b[k]) for k in a}


def _fallback(scheme):
    return np.asarray(scheme.codebook, np.float32)


def _as_levels(centers):
    return np.unique(np.asarray(centers, np.float64).astype(np.float32))


def fit_histogram_levels(scheme, hist_w, hist_s):
    """Levels from a merged fixed-point histogram: exact weighted k-means of the bin centroids."""
    w = np.asarray(hist_w)
    keep = w > 0
    if not keep.any():
        return _fallback(scheme)
    wk = w[keep].astype(np.float64)
    centroids = np.asarray(hist_s)[keep].astype(np.float64) / wk
    return _as_levels(kmeans1d(centroids, scheme.levels, weights=wk).centers)


def normalised(scheme, x):
    """``(y, w)``: the normalised values ``x * float32(1 / absmax)`` (float32) and their
    weights ``(absmax / A)**2`` (float64) of an in-memory array (the exact objective)."""
    flat = bw._flat32(x)
    absmax = bw._absmax(scheme, flat)
    big = absmax.max() if absmax.size else np.float32(0)
    inv = (np.float32(1) / np.maximum(absmax, np.float32(1e-38))).astype(np.float32)
    y = flat * np.repeat(inv, scheme.block_size)[:flat.size]
    np.clip(y, np.float32(-1), np.float32(1), out=y)
    r = absmax.astype(np.float64) / float(big) if big > 0 else np.zeros(absmax.size)
    w = np.repeat(r * r, scheme.block_size)[:flat.size]
    return y, w


def fit_exact_levels(scheme, x):
    """Levels by exact weighted k-means over every value of the in-memory array ``x``."""
    y, w = normalised(scheme, x)
    if not (w > 0).any():
        return _fallback(scheme)
    return _as_levels(kmeans1d(y, scheme.levels, weights=w).centers)


def finalize(scheme, stats=None, data=None):
    """Global parameters: ``codebook`` (at least ``min_size`` values) and, with double
    quantization, ``offset`` (the exact mean absmax)."""
    params = {}
    if scheme.double_quant:
        params["offset"] = np.array([kb.exact_mean(stats["absmax_sum"])], np.float32)
    n = int(stats["n"][0])
    if n == 0 or n < scheme.min_size:
        return params
    if scheme.fit == "exact":
        if data is None:
            raise InputError("fit='exact' needs the data in memory (NumPy input); use fit='histogram' "
                             "for Dask arrays")
        params["codebook"] = fit_exact_levels(scheme, data)
    else:
        params["codebook"] = fit_histogram_levels(scheme, stats["hist_w"], stats["hist_s"])
    return params


def fit(scheme, x):
    """All side arrays of an in-memory array, by the same statistics as Dask (one chunk)."""
    st = partial(scheme, x)
    if needs_histogram(scheme) and x.size >= max(scheme.min_size, 1):
        st.update(partial_histogram(scheme, x, _scale(st), _frac_bits(st)))
    glob = finalize(scheme, st, data=x)
    return {**glob, **chunk_params(scheme, x, params=glob)}


def levels(scheme, params):
    """The float32 levels that encoding and decoding use: the fitted codebook, else the scheme's."""
    cb = params.get("codebook")
    return _fallback(scheme) if cb is None else np.asarray(cb, np.float32)


def encode(scheme, params, chunk, start=None, global_shape=None, group_offset=0, out=None):
    """Codes (uint8, shape of the chunk): each value over its block's absmax, to the nearest level."""
    flat = bw._flat32(chunk)
    codes = _alloc.empty(flat.size, np.uint8) if out is None else out.reshape(-1)
    if flat.size:
        absmax = params.get("_absmax", params.get("absmax"))
        absmax = bw._absmax(scheme, flat) if absmax is None else base.widen(absmax)
        kb.quantize_blockwise(flat, absmax, scheme.block_size, levels(scheme, params),
                              codes)
    return codes.reshape(chunk.shape)


def decode(scheme, params, codes, dtype=np.float32, start=None, global_shape=None, group_offset=0,
           out=None):
    """``codebook[code] * absmax[block]`` (float32), cast to ``dtype``."""
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    res = _alloc.empty(flat.size, np.float32, fault_in=False)
    if flat.size:
        bw.dequantize_checked(scheme, params, flat, flat.size, levels(scheme, params), res, start=start)
    return limits.finite_cast(res.reshape(codes.shape), dtype)


def objective(scheme, x, codebook):
    """The weighted k-means objective ``sum (absmax_b / A)**2 (y - c(y))**2`` of ``codebook``
    on the in-memory array ``x`` (nearest level; used to measure a fit against the optimum)."""
    y, w = normalised(scheme, x)
    return float(sse_nearest(y, w, np.sort(np.asarray(codebook, np.float64))))


# ----------------------------------------------------------------------------- stored layout, report


def expected_side(scheme, shape, dtype):
    """Stored side arrays: the absmax arrays of :mod:`nquant.families.blockwise`, and the fitted
    ``codebook`` (float32, strictly increasing, at most ``2**bits`` levels) when the tensor has at
    least ``min_size`` values."""
    out = bw.expected_side(scheme, shape, dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if n and n >= scheme.min_size:
        out["codebook"] = base.Side(np.dtype(np.float32), (None,), max_len=1 << scheme.bits,
                                    check="increasing")
    return out


def bits_per_value(scheme, shape, dtype=np.float32):
    """Bits per value stored: codes, absmax arrays and a fitted codebook of ``2**bits`` levels
    (data with fewer distinct normalised values get fewer levels, and slightly fewer bits)."""
    return base.stored_bits_per_value(expected_side(scheme, shape, dtype), shape, scheme.bits)


def level_view(scheme, side, x, x_hat):
    """The values over their block's absmax against the fitted levels."""
    return base.block_view(x, x_hat, scheme.block_size, levels(scheme, side))


FAMILY = base.Family(
    name="kmeans_blockwise", needs_stats=needs_stats, needs_histogram=needs_histogram, partial=partial,
    merge=merge, finalize=finalize, fit=fit, encode=encode, decode=decode, block_quantum=block_quantum,
    expected_side=expected_side, bits_per_value=bits_per_value, level_view=level_view,
    partial_histogram=partial_histogram, histogram_range=histogram_range, param_specs=param_specs,
    chunk_params=chunk_params)
