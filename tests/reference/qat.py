"""Slow NumPy references for observers, fake quantization and integer matmul.

Written independently of the kernels: plain loops or NumPy reductions over all
observed data at once.
"""

import math

import numpy as np


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


def ema_minmax(batches, c, axis):
    """PyTorch's MovingAverageMinMaxObserver, batch by batch (NaN-only groups skipped)."""
    cur_lo = cur_hi = None
    for b in batches:
        blo, bhi = minmax([b], axis)
        if cur_lo is None:
            cur_lo = np.full(blo.shape, np.nan)
            cur_hi = np.full(bhi.shape, np.nan)
        for g in range(len(blo)):
            if not np.isfinite(blo[g]):
                continue
            if np.isnan(cur_lo[g]):
                cur_lo[g], cur_hi[g] = blo[g], bhi[g]
            else:
                cur_lo[g] = cur_lo[g] + c * (blo[g] - cur_lo[g])
                cur_hi[g] = cur_hi[g] + c * (bhi[g] - cur_hi[g])
    return np.nan_to_num(cur_lo, nan=0.0), np.nan_to_num(cur_hi, nan=0.0)


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


def histogram_percentiles(counts, lo, hi, p_low, p_high):
    """np.percentile's linear rule on a histogram: rank p/100 (n - 1) between two order
    statistics, the j-th of a bin's c values taken at lo + (b + (j + 1/2) / c) width."""
    G, B = counts.shape
    out = np.zeros((2, G))
    for g in range(G):
        n = int(counts[g].sum())
        width = (hi[g] - lo[g]) / B
        if n == 0:
            out[:, g] = lo[g], hi[g]
            continue
        # every value's estimated position, in order
        pos = np.concatenate([lo[g] + (b + (np.arange(c) + 0.5) / c) * width
                              for b, c in enumerate(counts[g]) if c])
        for k, p in enumerate((p_low, p_high)):
            out[k, g] = min(max(np.percentile(pos, p), lo[g]), hi[g])
    return out[0], out[1]


EXACT_CELLS = 4.0  # steps of at least this many bins are scored by rounding each bin centre


def candidate_grid(a, b, qmin, qmax, mode):
    """First level and step of the grid the range [a, b] gives (``nquant.families.uniform.finalize``,
    float64): mode "float" (levels a + k s), "int" (range widened to hold 0, integer zero
    point) or "symmetric" (levels q * absmax / qmax)."""
    n_steps = qmax - qmin
    if mode == "symmetric":
        step = max(abs(a), abs(b)) / qmax
        return qmin * step, step
    if mode == "float":
        return a, (b - a) / n_steps
    lo, hi = min(a, 0.0), max(b, 0.0)
    step = (hi - lo) / n_steps
    zp = np.clip(np.rint(qmin - lo / step), qmin, qmax)
    return (qmin - zp) * step, step


def grid_error(counts, lo, hi, first, step, n_steps):
    """Squared error of the histogram's bin centres on the grid ``first + k step``, k = 0..n_steps.

    Steps of at least EXACT_CELLS bins: each centre rounds to its nearest level (half up)
    or is clipped to an end.  Narrower steps: step**2 / 12 per value in range, clipping
    error outside.
    """
    B = counts.shape[0]
    width = (hi - lo) / B
    c = lo + (np.arange(B) + 0.5) * width
    n = counts.astype(np.float64)
    last = first + n_steps * step
    if step >= EXACT_CELLS * width:
        k = np.clip(np.floor((c - first) / step + 0.5), 0, n_steps)
        return float(np.sum(n * (c - (first + k * step)) ** 2))
    cost = np.where(c < first, (c - first) ** 2, np.where(c > last, (c - last) ** 2, step * step / 12.0))
    return float(np.sum(n * cost))


def mse_candidates(lo, hi, symmetric, n_grid):
    """The candidate ranges of the MSE search for one histogram range."""
    if symmetric:
        amax = max(abs(lo), abs(hi))
        return [(-amax * (n_grid - i) / n_grid, amax * (n_grid - i) / n_grid) for i in range(n_grid)]
    return [(lo + (hi - lo) * i / (2 * n_grid), hi - (hi - lo) * j / (2 * n_grid))
            for i in range(n_grid) for j in range(n_grid)]


def range_error(counts, lo, hi, a, b, qmin, qmax, mode):
    """Expected squared error of the clipping range ``[a, b]`` for one histogram."""
    first, step = candidate_grid(a, b, qmin, qmax, mode)
    return grid_error(counts, lo, hi, first, step, qmax - qmin)


def mse_range(counts, lo, hi, qmin, qmax, mode, n_grid):
    """Brute-force MSE search: the candidate of least ``range_error`` per group."""
    G = counts.shape[0]
    rmin = np.asarray(lo, np.float64).copy()
    rmax = np.asarray(hi, np.float64).copy()
    for g in range(G):
        if not hi[g] > lo[g]:
            continue
        best = np.inf
        for a, b in mse_candidates(lo[g], hi[g], mode == "symmetric", n_grid):
            err = range_error(counts[g], lo[g], hi[g], a, b, qmin, qmax, mode)
            if err < best * (1 - 1e-12):
                best = err
                rmin[g], rmax[g] = a, b
    return rmin, rmax


def fake_quantize(x, scale, zero_point, qmin, qmax):
    """Per-tensor integer-zero-point fake quantization in NumPy (float32 data).

    ``t = rint(x * float32(1 / s)) + z`` (multiply by the reciprocal, ties to even),
    ``y = (clip(t, qmin, qmax) - z) * s``; mask ``qmin <= t <= qmax``.
    """
    x = np.asarray(x, np.float32)
    s = np.float32(scale)
    inv = np.float32(1) / s
    z = np.float32(zero_point - qmin)
    t = np.rint(x * inv) + z  # code space: t - z + qmin is the integer
    hi = np.float32(qmax - qmin)
    code = np.clip(t, np.float32(0), hi).astype(np.uint8)
    y = ((code.astype(np.float32) - z) * s).astype(np.float32)
    mask = (t >= 0) & (t <= hi)
    return y, mask


def int_matmul(w_q, x_q):
    """Exact integer product in int64."""
    return np.asarray(w_q, np.int64) @ np.asarray(x_q, np.int64)
