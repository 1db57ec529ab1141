"""Slow NumPy references of the histogram calibration (``nquant.kernels.calibrate``).

Percentiles of a histogram and the brute-force MSE search of a clipping range, written
independently of the kernels: plain loops over bins and candidates.
"""

import numpy as np


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
