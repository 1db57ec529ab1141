"""Clipping-range calibration from mergeable histograms: percentiles and MSE search."""

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, prange


@jit
def order_statistic(counts, k, lo, width):
    """Estimated ``k``-th smallest value (0-based) of a histogram row.

    The ``c`` values of a bin are taken at the midpoints of ``c`` equal parts of
    it, so the estimate lies in the bin of the true value (within one bin width).
    """
    cum = 0
    for b in range(counts.shape[0]):
        c = counts[b]
        if k < cum + c:
            return lo + (b + (k - cum + 0.5) / c) * width
        cum += c
    return lo + counts.shape[0] * width


@jit_parallel
def histogram_percentiles(counts, lo, hi, p_low, p_high):
    """Percentiles (in %) per group from histogram counts, as ``np.percentile`` defines them.

    ``np.percentile``'s linear method: rank ``r = p / 100 * (n - 1)``, interpolated
    between order statistics ``floor(r)`` and ``floor(r) + 1``, each estimated by
    :func:`order_statistic` -- so the result is within one bin width of the exact one.

    Parameters
    ----------
    counts : ndarray of shape (G, B), int64
    lo, hi : ndarray of shape (G,), float64, histogram range per group
    p_low, p_high : float, percentiles in [0, 100]

    Returns
    -------
    rmin, rmax : ndarray of shape (G,), float64 (``lo`` / ``hi`` for an empty histogram)
    """
    G, B = counts.shape
    rmin = np.empty(G)
    rmax = np.empty(G)
    for g in prange(G):
        n = counts[g].sum()
        width = (hi[g] - lo[g]) / B
        for k in range(2):
            p = p_low if k == 0 else p_high
            if n == 0:
                value = lo[g] if k == 0 else hi[g]
            else:
                r = p / 100.0 * (n - 1)
                k0 = min(int(np.floor(r)), n - 1)
                frac = r - k0
                v0 = order_statistic(counts[g], k0, lo[g], width)
                value = v0
                if frac > 0 and k0 + 1 < n:
                    value = v0 + frac * (order_statistic(counts[g], k0 + 1, lo[g], width) - v0)
            if k == 0:
                rmin[g] = min(max(value, lo[g]), hi[g])
            else:
                rmax[g] = min(max(value, lo[g]), hi[g])
    return rmin, rmax


MSE_FLOAT = 0
"""``mse_search`` grid mode: levels ``a + k s`` (real-valued offset)."""
MSE_INT = 1
"""Integer zero point: range widened to hold 0, levels ``(q - zp) s``."""
MSE_SYMMETRIC = 2
"""Symmetric: levels ``q s`` with ``s = absmax / qmax``."""

EXACT_CELLS = 4.0
"""Steps of at least this many histogram bins are scored level by level (see ``mse_search``)."""


@jit
def candidate_grid(a, b, qmin, qmax, mode):
    """``(first level, step)`` of the grid that the clipping range ``[a, b]`` gives.

    Mirrors ``nquant.families.uniform.finalize`` in float64 (without the float32 rounding of
    the scale): the ``qmax - qmin`` steps run from the first level upwards.
    """
    n_steps = qmax - qmin
    if mode == MSE_SYMMETRIC:
        step = max(abs(a), abs(b)) / qmax
        return qmin * step, step
    if mode == MSE_FLOAT:
        return a, (b - a) / n_steps
    lo = min(a, 0.0)
    step = (max(b, 0.0) - lo) / n_steps
    if not step > 0:
        return a, step
    zp = min(max(np.rint(qmin - lo / step), qmin), qmax)
    return (qmin - zp) * step, step


@jit
def grid_error(p0, p1, p2, lo, width, first, step, n_steps):
    """Squared error of rounding the histogram (mass at bin centres) onto a grid.

    ``p0, p1, p2``: prefix sums over bins of count, count * u, count * u**2 with
    ``u`` the bin centre minus ``lo``.  Values below the first level or above the
    last are clipped to it.  Steps of at least ``EXACT_CELLS`` bins are scored
    cell by cell (each bin centre rounds to its nearest level; O(cells) from the
    prefix sums); narrower ones, which bin centres cannot resolve, count ``step**2
    / 12`` per value in range (the limit of a density spread across each bin).
    """
    B = p0.shape[0] - 1
    f = first - lo  # levels relative to lo, like u
    last = f + n_steps * step
    if step >= EXACT_CELLS * width:
        # cell k holds the bins whose centre u satisfies f + (k - 1/2) step <= u < f + (k + 1/2) step
        k = int(min(max(np.floor((0.5 * width - f) / step + 0.5), 0.0), n_steps))
        prev = 0
        err = 0.0
        while prev < B:
            if k == n_steps:
                nxt = B
            else:
                t = (f + (k + 0.5) * step) / width - 0.5
                nxt = int(min(max(np.ceil(t), prev), B))
            if nxt > prev:
                L = f + k * step
                err += (p2[nxt] - p2[prev]) - 2.0 * L * (p1[nxt] - p1[prev]) + L * L * (p0[nxt] - p0[prev])
            prev = nxt
            k += 1
        return err
    # bins with centre < f are clipped to f; centre > last clipped to last
    ia = int(min(max(np.ceil(f / width - 0.5), 0.0), B))
    ib = int(min(max(np.floor(last / width - 0.5) + 1.0, ia), B))
    err = (p0[ib] - p0[ia]) * step * step / 12.0
    err += f * f * p0[ia] - 2 * f * p1[ia] + p2[ia]
    err += last * last * (p0[B] - p0[ib]) - 2 * last * (p1[B] - p1[ib]) + (p2[B] - p2[ib])
    return err


@jit_parallel
def mse_search(counts, lo, hi, qmin, qmax, mode, n_grid):
    """Clipping range per group that minimises the expected squared error.

    Each histogram bin stands for its count of values at the bin centre.  Every
    candidate range ``[a, b]`` is scored on the grid of levels it really gives
    (``candidate_grid``: integer zero point and symmetry included) by
    ``grid_error``: rounding error in range, clipping error outside.  Candidates:
    ``n_grid`` fractions of the full range for each end (asymmetric), or of
    ``max(|lo|, |hi|)`` (symmetric).

    Parameters
    ----------
    counts : ndarray of shape (G, B), int64
    lo, hi : ndarray of shape (G,), float64
    qmin, qmax : int, code range
    mode : int, ``MSE_FLOAT``, ``MSE_INT`` or ``MSE_SYMMETRIC``
    n_grid : int

    Returns
    -------
    rmin, rmax : ndarray of shape (G,), float64
    """
    G, B = counts.shape
    n_steps = qmax - qmin
    symmetric = mode == MSE_SYMMETRIC
    rmin = lo.copy()
    rmax = hi.copy()
    for g in prange(G):
        width = (hi[g] - lo[g]) / B
        if not width > 0:
            continue
        # prefix sums of count, count * u, count * u^2 over bin centres u (relative to lo)
        p0 = np.zeros(B + 1)
        p1 = np.zeros(B + 1)
        p2 = np.zeros(B + 1)
        for b in range(B):
            u = (b + 0.5) * width
            n = counts[g, b]
            p0[b + 1] = p0[b] + n
            p1[b + 1] = p1[b] + n * u
            p2[b + 1] = p2[b] + n * u * u
        best = np.inf
        amax = max(abs(lo[g]), abs(hi[g]))
        for i in range(n_grid):
            for j in range(n_grid if not symmetric else 1):
                if symmetric:
                    b_ = amax * (n_grid - i) / n_grid
                    a = -b_
                else:
                    a = lo[g] + (hi[g] - lo[g]) * i / (2 * n_grid)
                    b_ = hi[g] - (hi[g] - lo[g]) * j / (2 * n_grid)
                first, step = candidate_grid(a, b_, qmin, qmax, mode)
                if not step > 0:
                    continue
                err = grid_error(p0, p1, p2, lo[g], width, first, step, n_steps)
                if err < best:
                    best = err
                    rmin[g] = a
                    rmax[g] = b_
    return rmin, rmax
