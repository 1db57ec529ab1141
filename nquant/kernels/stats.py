"""Mergeable partial statistics over the row layout: min/max and histograms.

Partials merge associatively (min of mins, max of maxs, sums of counts), so
one chunk or a tree of chunks give the same fitted parameters exactly.  NaN is
ignored by min/max and counted; an infinity shows up as an infinite min or max
(the API decides what either means).
"""

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, over_rows, prange
from nquant.kernels.bits import bit_constants, float_view, int_view, uint_view



@jit
def _plain_minmax(v):
    """Min and max of the 1-D ``v`` with NaN skipped (+inf / -inf if none), and its NaN count."""
    lo = v.dtype.type(np.inf)
    hi = -lo
    nn = 0
    for k in range(v.shape[0]):
        lo = min(lo, v[k])  # min(m, NaN) is m: NaN is ignored
        hi = max(hi, v[k])
        nn += v[k] != v[k]
    return lo, hi, nn


@jit
def _minmax_rows(r0, r1, x, xi, xu, min_bits, max_bits, mins, maxs, n_nan):
    """Rows ``[r0, r1)`` of :func:`row_minmax` (``mins``/``maxs`` are the float views of the bits)."""
    L = x.shape[1]
    abs_mask, inf_bits = bit_constants(x)
    I = xi.dtype.type  # integer arithmetic is widened to 64 bits unless cast back
    U = xu.dtype.type
    smallest = I(~abs_mask)
    all_ones = U(~U(0))
    sign_u = U(U(abs_mask) + U(1))
    neg_inf_u = U(sign_u | U(inf_bits))
    for r in range(r0, r1):
        s = smallest
        mu = U(0)
        nu = all_ones
        for j in range(L):
            s = max(s, xi[r, j])
            v = xu[r, j]
            mu = max(mu, v)
            nu = min(nu, v)
        min_bits[r] = I(mu) if mu >= sign_u else I(nu)
        max_bits[r] = s if s >= 0 else I(nu)
        n_nan[r] = 0
        if L == 0 or s > inf_bits or mu > neg_inf_u:
            mins[r], maxs[r], n_nan[r] = _plain_minmax(x[r])
    return 0


def row_minmax(x):
    """Min and max of each row (NaN ignored) and the number of NaN per row.

    The reductions run on the integer views of the bits (``nquant.kernels.bits``),
    which vectorize where float min/max does not: with ``s`` the largest signed
    bit pattern, ``mu`` / ``nu`` the largest / smallest unsigned one, the max is
    ``s`` if any value is non-negative (``s >= 0``), else ``nu`` (the negative
    value nearest zero); the min is ``mu`` if any value is negative, else ``nu``.
    NaN shows as ``s`` above ``+inf`` or ``mu`` above ``-inf``; such rows (and
    empty ones) are redone by a plain loop that skips NaN and counts it.

    Parameters
    ----------
    x : ndarray of shape (R, L), float32 or float64, C-contiguous

    Returns
    -------
    mins, maxs : ndarray of shape (R,), dtype of ``x`` (+inf / -inf for empty rows)
    n_nan : ndarray of shape (R,), int64
    """
    R, L = x.shape
    xi = int_view(x)
    min_bits = np.empty(R, xi.dtype)
    max_bits = np.empty(R, xi.dtype)
    mins = float_view(min_bits)
    maxs = float_view(max_bits)
    n_nan = np.empty(R, np.int64)
    over_rows(_minmax_rows, R, L, x, xi, uint_view(x), min_bits, max_bits, mins, maxs, n_nan)
    return mins, maxs, n_nan


@jit_parallel
def column_minmax(x, n_tasks):
    """Min and max of each column (NaN ignored) and the number of NaN per column.

    The same integer reductions as :func:`row_minmax`, kept per column (so they
    vectorize along the rows), over ``n_tasks`` row blocks in parallel; columns
    that may hold a NaN (and all columns when there are no rows) are redone by a
    plain loop that skips NaN and counts it.

    Parameters
    ----------
    x : ndarray of shape (R, L), float32 or float64
    n_tasks : int, number of row blocks reduced in parallel

    Returns
    -------
    mins, maxs : ndarray of shape (L,), dtype of ``x`` (+inf / -inf for no rows)
    n_nan : ndarray of shape (L,), int64
    """
    R, L = x.shape
    xi = int_view(x)
    xu = uint_view(x)
    abs_mask, inf_bits = bit_constants(x)
    I = xi.dtype.type  # integer arithmetic is widened to 64 bits unless cast back
    U = xu.dtype.type
    sign_u = U(U(abs_mask) + U(1))
    neg_inf_u = U(sign_u | U(inf_bits))
    T = max(1, min(R, n_tasks))
    per = (R + T - 1) // T
    s = np.full((T, L), I(~abs_mask), xi.dtype)
    mu = np.zeros((T, L), xu.dtype)
    nu = np.full((T, L), U(~U(0)), xu.dtype)
    for t in prange(T):
        for r in range(t * per, min(R, (t + 1) * per)):
            for j in range(L):
                v = xu[r, j]
                s[t, j] = max(s[t, j], xi[r, j])
                mu[t, j] = max(mu[t, j], v)
                nu[t, j] = min(nu[t, j], v)
    min_bits = np.empty(L, xi.dtype)
    max_bits = np.empty(L, xi.dtype)
    redo = np.zeros(L, np.bool_)
    for j in range(L):
        sj = s[0, j]
        muj = mu[0, j]
        nuj = nu[0, j]
        for t in range(1, T):
            sj = max(sj, s[t, j])
            muj = max(muj, mu[t, j])
            nuj = min(nuj, nu[t, j])
        min_bits[j] = I(muj) if muj >= sign_u else I(nuj)
        max_bits[j] = sj if sj >= 0 else I(nuj)
        redo[j] = R == 0 or sj > inf_bits or muj > neg_inf_u
    mins = float_view(min_bits)
    maxs = float_view(max_bits)
    n_nan = np.zeros(L, np.int64)
    for j in prange(L):
        if redo[j]:
            mins[j], maxs[j], n_nan[j] = _plain_minmax(x[:, j])
    return mins, maxs, n_nan


@jit_parallel
def histogram_rows(x, row_group, col_step, lo, hi, n_bins, n_tasks):
    """Per-group histogram counts on equal bins over ``[lo[g], hi[g]]``.

    Values outside the range go to the end bins; NaN and infinities are skipped.
    Counts are integers, so merged histograms are exact for any chunking.

    Returns
    -------
    count : ndarray of shape (G, n_bins), int64
    """
    R, L = x.shape
    G = lo.shape[0]
    nthreads = max(1, min(R, n_tasks))
    per = (R + nthreads - 1) // nthreads
    cnt = np.zeros((nthreads, G, n_bins), np.int64)
    for t in prange(nthreads):
        for r in range(t * per, min(R, (t + 1) * per)):
            for j in range(L):
                g = row_group[r] + j * col_step
                v = np.float64(x[r, j])
                if not abs(v) < np.inf:
                    continue
                width = hi[g] - lo[g]
                b = int((v - lo[g]) / width * n_bins) if width > 0 else 0
                b = min(max(b, 0), n_bins - 1)
                cnt[t, g, b] += 1
    return cnt.sum(axis=0)


@jit
def _moment_tasks(t0, t1, x, y, per, part):
    """Slices ``t`` in ``[t0, t1)`` of :func:`error_moments`, summed into ``part[t]``."""
    n = x.shape[0]
    for t in range(t0, t1):
        cnt = 0.0
        se = 0.0
        sx = 0.0
        s = 0.0
        mx = 0.0
        for i in range(t * per, min(n, (t + 1) * per)):
            a = np.float64(x[i])
            b = np.float64(y[i])
            if a != a and b != b:
                continue
            e = b - a
            cnt += 1.0
            se += e * e
            sx += a * a
            s += e
            mx = max(mx, abs(e)) if e == e else np.nan
        part[t, 0] = cnt
        part[t, 1] = se
        part[t, 2] = sx
        part[t, 3] = s
        part[t, 4] = mx
    return 0


def error_moments(x, y, n_tasks):
    """Error statistics of ``y`` against ``x``: ``[n, sum e^2, sum x^2, sum e, max |e|]``.

    Positions where both are NaN are skipped.  ``e = y - x`` in float64.

    Parameters
    ----------
    x, y : ndarray of shape (n,), float32 or float64
    n_tasks : int, number of slices summed in parallel

    Returns
    -------
    ndarray of shape (5,), float64
    """
    n = x.shape[0]
    T = max(1, min(int(n_tasks), n))
    per = (n + T - 1) // T
    part = np.zeros((T, 5))
    over_rows(_moment_tasks, T, per, x, y, per, part)
    out = np.zeros(5)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN, as in compiled code
        for t in range(T):  # in task order: the sums do not depend on the threads
            out[:4] += part[t, :4]
            out[4] = max(out[4], part[t, 4]) if part[t, 4] == part[t, 4] else np.nan
    return out


@jit_parallel
def histogram_pow2(x, row_group, col_step, inv_width, origin, n_bins, n_tasks):
    """Per-group histogram counts on power-of-two-aligned bins (exact bin assignment).

    Group ``g``'s bin ``b`` holds the values ``v`` with
    ``floor(v * inv_width[g]) - origin[g] == b`` (``inv_width = 2^-e``, so the
    product is exact and every bin edge is an integer multiple of ``2^e``);
    values outside ``[0, n_bins)`` go to the end bins, NaN and infinities are
    skipped.  Used by ``nquant.observers`` for histograms that re-bin exactly
    when their range grows.

    Parameters
    ----------
    x : ndarray of shape (R, L), float32 or float64
    row_group : ndarray of shape (R,), int64
    col_step : int, 0 or 1 (see ``nquant._layout``)
    inv_width : ndarray of shape (G,), float64, powers of two
    origin : ndarray of shape (G,), int64
    n_bins : int
    n_tasks : int, number of row slices counted in parallel

    Returns
    -------
    count : ndarray of shape (G, n_bins), int64
    """
    R, L = x.shape
    G = inv_width.shape[0]
    T = max(1, min(R, n_tasks))
    per = (R + T - 1) // T
    cnt = np.zeros((T, G, n_bins), np.int64)
    for t in prange(T):
        for r in range(t * per, min(R, (t + 1) * per)):
            for j in range(L):
                g = row_group[r] + j * col_step
                v = np.float64(x[r, j])
                if not abs(v) < np.inf:
                    continue
                b = np.int64(np.floor(v * inv_width[g])) - origin[g]
                b = min(max(b, 0), n_bins - 1)
                cnt[t, g, b] += 1
    return cnt.sum(axis=0)
