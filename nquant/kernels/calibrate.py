"""Clipping-range calibration from mergeable histograms: percentiles and MSE search."""

import numpy as np

from nquant.kernels._jit import jit_parallel, prange


@jit_parallel
def histogram_percentiles(counts, lo, hi, p_low, p_high):
    """Percentiles (in %) per group from histogram counts, linear within a bin.

    Parameters
    ----------
    counts : ndarray of shape (G, B), int64
    lo, hi : ndarray of shape (G,), float64, histogram range per group
    p_low, p_high : float, percentiles in [0, 100]

    Returns
    -------
    rmin, rmax : ndarray of shape (G,), float64
    """
    G, B = counts.shape
    rmin = np.empty(G)
    rmax = np.empty(G)
    for g in prange(G):
        n = counts[g].sum()
        width = (hi[g] - lo[g]) / B
        for k in range(2):
            p = p_low if k == 0 else p_high
            target = p / 100.0 * n
            cum = 0.0
            value = hi[g]
            for b in range(B):
                c = counts[g, b]
                if c > 0 and cum + c >= target:
                    frac = (target - cum) / c
                    value = lo[g] + (b + frac) * width
                    break
                cum += c
            if n == 0:
                value = lo[g] if k == 0 else hi[g]
            if k == 0:
                rmin[g] = max(value, lo[g])
            else:
                rmax[g] = min(value, hi[g])
    return rmin, rmax


@jit_parallel
def mse_search(counts, lo, hi, n_steps, symmetric, n_grid):
    """Clipping range per group that minimises the expected squared error.

    Each histogram bin stands for its count of values at the bin centre.  For a
    candidate range ``[a, b]`` with step ``s = (b - a) / n_steps``, values
    inside cost ``s^2 / 12`` (rounding noise) and values outside cost their
    squared distance to the range (clipping error), both in O(1) per candidate
    from prefix sums.  Candidates: ``n_grid`` fractions of the full range for
    each end (asymmetric), or of ``max(|lo|, |hi|)`` (symmetric).

    Parameters
    ----------
    counts : ndarray of shape (G, B), int64
    lo, hi : ndarray of shape (G,), float64
    n_steps : int, number of quantization steps (levels - 1)
    symmetric : bool
    n_grid : int

    Returns
    -------
    rmin, rmax : ndarray of shape (G,), float64
    """
    G, B = counts.shape
    rmin = lo.copy()
    rmax = hi.copy()
    for g in prange(G):
        width = (hi[g] - lo[g]) / B
        if not width > 0:
            continue
        # prefix sums of count, count * c, count * c^2 over bin centres c
        p0 = np.zeros(B + 1)
        p1 = np.zeros(B + 1)
        p2 = np.zeros(B + 1)
        for b in range(B):
            c = lo[g] + (b + 0.5) * width
            n = counts[g, b]
            p0[b + 1] = p0[b] + n
            p1[b + 1] = p1[b] + n * c
            p2[b + 1] = p2[b] + n * c * c
        best = np.inf
        amax = max(abs(lo[g]), abs(hi[g]))
        for i in range(n_grid):
            for j in range(n_grid if not symmetric else 1):
                if symmetric:
                    b_hi = amax * (n_grid - i) / n_grid
                    a = -b_hi
                    b_ = b_hi
                else:
                    a = lo[g] + (hi[g] - lo[g]) * i / (2 * n_grid)
                    b_ = hi[g] - (hi[g] - lo[g]) * j / (2 * n_grid)
                # bins with centre < a are clipped to a; centre > b_ clipped to b_
                ia = int(np.ceil((a - lo[g]) / width - 0.5))
                ib = int(np.floor((b_ - lo[g]) / width - 0.5)) + 1
                ia = min(max(ia, 0), B)
                ib = min(max(ib, ia), B)
                step = (b_ - a) / n_steps
                err = (p0[ib] - p0[ia]) * step * step / 12.0
                err += a * a * p0[ia] - 2 * a * p1[ia] + p2[ia]
                err += b_ * b_ * (p0[B] - p0[ib]) - 2 * b_ * (p1[B] - p1[ib]) + (p2[B] - p2[ib])
                if err < best:
                    best = err
                    rmin[g] = a
                    rmax[g] = b_
    return rmin, rmax
