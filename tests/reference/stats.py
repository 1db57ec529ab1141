"""Slow NumPy references of the group reductions (``nquant.kernels.stats``).

Per-group minimum and maximum, histograms on a range and on an aligned power-of-two grid, and
the error moments behind ``nquant.metrics``: plain NumPy over all values of a group at once.
"""

import math
import warnings

import numpy as np


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


def groups_2d(x, axis):
    """``x`` as (G, n) float64: one row per group (per tensor: one row)."""
    x = np.asarray(x, dtype=np.float64)
    if axis is None:
        return x.reshape(1, -1)
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def concat_groups(batches, axis):
    """All batches' values per group, (G, total) float64."""
    return np.concatenate([groups_2d(b, axis) for b in batches], axis=1)


def minmax(batches, axis):
    """Per-group min and max ignoring NaN (inf / -inf for groups without finite values)."""
    g = concat_groups(batches, axis)
    lo = np.array([np.min(r[~np.isnan(r)]) if (~np.isnan(r)).any() else np.inf for r in g])
    hi = np.array([np.max(r[~np.isnan(r)]) if (~np.isnan(r)).any() else -np.inf for r in g])
    return lo, hi


def row_minmax(x):
    """Per row of ``x`` (R, L): min and max of the non-NaN values in ``x.dtype`` (inf / -inf if
    none; the sign of a zero result is not specified) and the NaN count (R,)."""
    lo = np.array([min(r[~np.isnan(r)].tolist(), default=np.inf) for r in x], x.dtype)
    hi = np.array([max(r[~np.isnan(r)].tolist(), default=-np.inf) for r in x], x.dtype)
    return lo, hi, np.isnan(x).sum(axis=1)


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


def aligned_grid(lo, hi, bins, extra_bits=40):
    """Smallest exponent e >= exponent(max|v|) - extra_bits with fewer than ``bins`` aligned bins."""
    if lo == hi == 0:
        return 0, 0
    amax = max(abs(lo), abs(hi))
    e = math.frexp(amax)[1] - extra_bits
    while math.floor(math.ldexp(hi, -e)) - math.floor(math.ldexp(lo, -e)) >= bins:
        e += 1
    return e, math.floor(math.ldexp(lo, -e))


def aligned_histogram(batches, bins, axis):
    """The histogram an observer should hold: all data binned at once on the final grid."""
    g = concat_groups(batches, axis)
    lo, hi = minmax(batches, axis)
    G = g.shape[0]
    exps = np.zeros(G, np.int64)
    origins = np.zeros(G, np.int64)
    counts = np.zeros((G, bins), np.int64)
    for i in range(G):
        a = np.where(np.isfinite(lo[i]), lo[i], 0.0)
        b = np.where(np.isfinite(hi[i]), hi[i], 0.0)
        e, o = aligned_grid(float(a), float(b), bins)
        exps[i], origins[i] = e, o
        v = g[i][np.isfinite(g[i])]
        idx = np.floor(v * 2.0 ** -e).astype(np.int64) - o
        assert idx.size == 0 or (idx.min() >= 0 and idx.max() < bins)
        counts[i] = np.bincount(idx, minlength=bins)
    return exps, origins, counts


def error_moments(x, y):
    """``[n, sum e^2, sum x^2, sum e, max |e|]`` over positions not NaN in both, in float64.

    Returns the moments (5,), the errors ``e = y - x`` and the values of ``x`` they cover.
    """
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    keep = ~(np.isnan(x) & np.isnan(y))
    with np.errstate(invalid="ignore", over="ignore"):
        e = y[keep] - x[keep]
        mx = np.nan if np.isnan(e).any() else (np.abs(e).max() if e.size else 0.0)
        return np.array([keep.sum(), np.sum(e * e), np.sum(x[keep] ** 2), np.sum(e), mx]), e, x[keep]


def metrics(x, x_hat):
    """``nquant.metrics`` of ``x_hat`` against ``x``, in float64."""
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(x_hat, np.float64).reshape(-1)
    e = y - x
    mse = float(np.mean(e ** 2))
    return {"mse": mse, "rmse": mse ** 0.5, "max_abs": float(np.max(np.abs(e))),
            "sqnr_db": float(10 * np.log10(np.sum(x ** 2) / np.sum(e ** 2))), "bias": float(np.mean(e))}
