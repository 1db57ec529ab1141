"""Kernels of adaptive stochastic quantization (ASQ): ZipML's DP, exact / accelerated /
approximate QUIVER, the chunkable histogram pass, and the helpers around them.

Conventions (0-based, see ``shared/QUIVER.md`` for the 1-based recurrences)
--------------------------------------------------------------------------
The solvers work on *distinct* sorted values ``v_0 < ... < v_{n-1}`` with weights ``w_i >= 0``
(counts after deduplication, or user weights), summarised in a prefix table ``tab`` of shape
``(n, 4)``, float64, C order, built by :func:`build_table`::

    tab[j] = (v_j - c,  W_j,  P1_j,  P2_j),   W_j = sum_{i<=j} w_i,
             P1_j = sum_{i<=j} w_i (v_i - c),  P2_j = sum_{i<=j} w_i (v_i - c)^2

with the centre ``c`` = the weighted mean (the objective is translation invariant; centring
removes the ``mean^2 d`` cancellation of the prefix sums, QUIVER.md section 6 item 1).  All
accumulation is float64.  Interval costs come from :mod:`nquant.kernels.smawk` (one SMAWK for
everything), clamped at >= 0.

DP: ``F_2(j) = C(0, j)``, ``F_i(j) = min_{k<=j} F_{i-1}(k) + C(k, j)``; the optimum is
``F_s(n-1)``; ``k == j`` is allowed (a repeated level), so fewer useful levels than ``s`` give
repeated values.  The solvers return the ``s`` chosen indices, ascending (repeats possible);
index 0 and ``n - 1`` are always included.

Kernels trust their inputs: the API (:mod:`nquant.asq`) validates once.
"""

import numpy as np
from numba import literally

from nquant.kernels._jit import jit, jit_parallel, prange
from nquant.kernels.smawk import (
    ACCEL_MAP,
    ACCEL_SEARCH,
    ACCEL_UNIT,
    ASQ,
    ASQ_SPLIT,
    DIVIDE_AND_CONQUER,
    SMAWK,
    cost,
    layered_dp,
    mid,
    split_table,
)

__all__ = [
    "SMAWK",
    "DIVIDE_AND_CONQUER",
    "ASQ",
    "ACCEL_UNIT",
    "ACCEL_MAP",
    "ACCEL_SEARCH",
    "is_sorted",
    "dedup_sorted",
    "build_table",
    "count_map",
    "quiver_exact",
    "quiver_accel",
    "quiver_accel_unit",
    "quiver_accel_map",
    "quiver_accel_search",
    "zipml",
    "scan_range",
    "hist_pass",
    "approx_table",
    "objective_sorted_levels",
    "solve_groups",
    "solve_rows",
    "hist_groups",
    "approx_groups",
]

# ----------------------------------------------------------------------------------------------
# preprocessing
# ----------------------------------------------------------------------------------------------


@jit
def is_sorted(x):
    """True when ``x`` (1-D) is non-decreasing.  O(d), stops at the first descent."""
    for i in range(1, x.shape[0]):
        if x[i] < x[i - 1]:
            return False
    return True


@jit
def dedup_sorted(x, w):
    """Distinct values of sorted ``x`` and their total weights.

    Parameters
    ----------
    x : float64 array, shape (d,), sorted ascending, finite
    w : float64 array, shape (d,) or (0,)
        Weights; an empty array means unit weights (the result is then the counts).

    Returns
    -------
    vals : float64 array, shape (n,)
        Distinct values, ascending.
    wts : float64 array, shape (n,)
        Sum of the weights (or the count) of each distinct value.

    Notes
    -----
    Two O(d) passes; memory 16 n bytes.
    """
    d = x.shape[0]
    n = 0
    for i in range(d):
        if i == 0 or x[i] != x[i - 1]:
            n += 1
    vals = np.empty(n, dtype=np.float64)
    wts = np.zeros(n, dtype=np.float64)
    unit = w.shape[0] == 0
    p = -1
    for i in range(d):
        if i == 0 or x[i] != x[i - 1]:
            p += 1
            vals[p] = x[i]
        if unit:
            wts[p] += 1.0
        else:
            wts[p] += w[i]
    return vals, wts


@jit
def build_table(vals, wts):
    """Prefix table ``(v - c, W, P1, P2)`` of shape ``(n, 4)`` about the weighted mean ``c``.

    Parameters
    ----------
    vals : float64 array, shape (n,), ascending
    wts : float64 array, shape (n,), >= 0

    Returns
    -------
    tab : float64 array, shape (n, 4), C order
    centre : float
        The weighted mean (the plain mean when all weights are 0).

    Notes
    -----
    O(n) time, 32 n bytes.
    """
    n = vals.shape[0]
    sw = 0.0
    swx = 0.0
    for i in range(n):
        sw += wts[i]
        swx += wts[i] * vals[i]
    if sw > 0.0:
        c = swx / sw
    else:
        c = 0.0
        for i in range(n):
            c += vals[i]
        c /= n
    # the mean can leave [v_0, v_{n-1}] by rounding only; keep it inside
    if c < vals[0]:
        c = vals[0]
    if c > vals[n - 1]:
        c = vals[n - 1]
    tab = np.empty((n, 4), dtype=np.float64)
    W = 0.0
    P1 = 0.0
    P2 = 0.0
    for i in range(n):
        y = vals[i] - c
        wi = wts[i]
        W += wi
        P1 += wi * y
        P2 += wi * y * y
        tab[i, 0] = y
        tab[i, 1] = W
        tab[i, 2] = P1
        tab[i, 3] = P2
    return tab, c


@jit
def count_map(wts, d):
    """Map from expanded position ``p`` (0-based, ``< d``) to the distinct index holding it.

    ``wts`` are integer counts summing to ``d``; entry ``p`` is the smallest ``b`` with
    ``W_b >= p + 1``.  uint32, ``4 d`` bytes; lets accelerated QUIVER find ``b*`` in O(1).
    """
    out = np.empty(d, dtype=np.uint32)
    p = 0
    for b in range(wts.shape[0]):
        cnt = np.int64(wts[b])
        for _ in range(cnt):
            if p < d:
                out[p] = b
            p += 1
    while p < d:
        out[p] = wts.shape[0] - 1
        p += 1
    return out


# ----------------------------------------------------------------------------------------------
# solvers: each returns the s chosen indices into the distinct values, ascending
# ----------------------------------------------------------------------------------------------


@jit
def quiver_exact(tab, s, algo, nparts):
    """Exact QUIVER: the optimal ``s`` levels by ``s - 2`` row-minima layers.

    Parameters
    ----------
    tab : float64 array, shape (n, 4)
        Prefix table from :func:`build_table`; ``n >= 2``.
    s : int
        Number of levels, ``>= 2``.
    algo : int
        ``SMAWK`` (O(n) per layer, the default of the API) or ``DIVIDE_AND_CONQUER``.
    nparts : int
        Row blocks per SMAWK layer solved in parallel (1: serial).

    Returns
    -------
    idx : int64 array, shape (s,)
        Indices of the levels into the distinct values, ascending (repeats possible).
    value : float
        The DP optimum (sum of variances, from prefix sums).

    Notes
    -----
    O(s n) time; memory 4 (s - 3) n bytes for the argmin table plus about 110 n bytes of rows,
    the separated table (``smawk.split_table``) and scratch.
    """
    n = tab.shape[0]
    aux = np.empty(0, dtype=np.uint32)
    idx = np.empty(s, dtype=np.int64)
    sep = split_table(tab)  # C(k, j) = A_j - A_k + x_k U_j - x_j U_k: shorter latency
    f0 = np.empty(n, dtype=np.float64)
    for j in range(n):
        f0[j] = cost(ASQ_SPLIT, sep, aux, 0, j)
    nlayers = s - 2
    ktab = np.empty((max(nlayers - 1, 0), n), dtype=np.uint32)
    value, k_last = layered_dp(ASQ_SPLIT, sep, aux, f0, nlayers, ktab, algo, nparts)
    p = s - 1
    idx[p] = n - 1
    if nlayers > 0:
        j = k_last
        p -= 1
        idx[p] = j
        for layer in range(nlayers - 2, -1, -1):
            j = np.int64(ktab[layer, j])
            p -= 1
            idx[p] = j
    idx[0] = 0
    return idx, value


@jit
def quiver_accel(kind, tab, aux, s, algo, nparts):
    """Accelerated QUIVER: two levels per layer with the closed-form middle ``b*``.

    Parameters
    ----------
    kind : int
        ``ACCEL_UNIT`` (all weights 1), ``ACCEL_MAP`` (integer counts; ``aux`` from
        :func:`count_map`) or ``ACCEL_SEARCH`` (any weights; ``b*`` by binary search, an extra
        O(log n) per evaluation).  A compile-time constant (one specialisation per kind).
    tab : float64 array, shape (n, 4)
        Prefix table from :func:`build_table`; ``n >= 2``.
    aux : uint32 array
        Count map for ``"map"`` (else an empty uint32 array).
    s : int
        Number of levels, ``>= 2``.
    algo : int
        ``SMAWK`` (about twice as fast for this cost, see :mod:`nquant.kernels.smawk`) or
        ``DIVIDE_AND_CONQUER``.
    nparts : int
        Row blocks per SMAWK layer solved in parallel (1: serial).

    Returns
    -------
    idx : int64 array, shape (s,)
        Level indices, ascending (repeats possible).
    value : float
        The DP optimum.

    Notes
    -----
    Even ``s`` starts from ``F_2 = C(0, .)``, odd ``s`` from ``F_3 = C2(0, .)``; then
    ``floor(s/2) - 1`` layers.  O(s n) (SMAWK) or O(s n log n) time; memory
    4 (s/2 - 2) n bytes of argmins plus O(n).
    """
    literally(kind)
    n = tab.shape[0]
    idx = np.empty(s, dtype=np.int64)
    odd = s % 2 == 1
    f0 = np.empty(n, dtype=np.float64)
    if odd:
        for j in range(n):
            f0[j] = cost(kind, tab, aux, 0, j)
        nlayers = (s - 3) // 2
    else:
        for j in range(n):
            f0[j] = cost(ASQ, tab, aux, 0, j)
        nlayers = (s - 2) // 2
    ktab = np.empty((max(nlayers - 1, 0), n), dtype=np.uint32)
    value, k_last = layered_dp(kind, tab, aux, f0, nlayers, ktab, algo, nparts)
    p = s - 1
    j = n - 1
    idx[p] = j
    for layer in range(nlayers - 1, -1, -1):
        if layer == nlayers - 1:
            k = k_last
        else:
            k = np.int64(ktab[layer, j])
        p -= 1
        idx[p] = mid(kind, tab, aux, k, j)
        p -= 1
        idx[p] = k
        j = k
    if odd:
        p -= 1
        idx[p] = mid(kind, tab, aux, 0, j)
    idx[0] = 0
    return idx, value


@jit
def zipml(tab, s):
    """ZipML's DP with O(1) prefix-sum costs: O(s n^2) time, O(s n) memory (paper App. A).

    Same inputs and outputs as :func:`quiver_exact`; scans every ``k <= j`` (smallest argmin on
    ties).  The reference against which the SMAWK solvers are checked.
    """
    n = tab.shape[0]
    aux = np.empty(0, dtype=np.uint32)
    idx = np.empty(s, dtype=np.int64)
    fa = np.empty(n, dtype=np.float64)
    fb = np.empty(n, dtype=np.float64)
    for j in range(n):
        fa[j] = cost(ASQ, tab, aux, 0, j)
    nlayers = s - 2
    ktab = np.empty((max(nlayers, 0), n), dtype=np.uint32)
    for layer in range(nlayers):
        jlo = 0
        if layer == nlayers - 1:
            jlo = n - 1  # the last layer is needed at j = n - 1 only
        for j in range(jlo, n):
            best = np.inf
            arg = 0
            for k in range(j + 1):
                v = fa[k] + cost(ASQ, tab, aux, k, j)
                if v < best:
                    best = v
                    arg = k
            fb[j] = best
            ktab[layer, j] = arg
        tmp = fa
        fa = fb
        fb = tmp
    value = fa[n - 1]
    p = s - 1
    j = n - 1
    idx[p] = j
    for layer in range(nlayers - 1, -1, -1):
        j = np.int64(ktab[layer, j])
        p -= 1
        idx[p] = j
    idx[0] = 0
    return idx, value


# ----------------------------------------------------------------------------------------------
# approximate QUIVER: range pass, histogram pass (chunkable), grid table
# ----------------------------------------------------------------------------------------------

_BLOCK = 65536
PARALLEL_MIN = 1 << 17
"""Inputs shorter than this run the serial twin of a parallel kernel (a parallel region costs
more than the work below it, most of all on a loaded machine)."""


@jit
def _range_block(x, i0, i1):
    """``(lo, hi, z)`` over ``x[i0:i1]``; ``z != 0`` iff a NaN/inf is present (64 lanes)."""
    lo = np.full(64, np.inf)
    hi = np.full(64, -np.inf)
    z = np.zeros(64)
    i = i0
    while i + 64 <= i1:
        for q in range(64):
            v = np.float64(x[i + q])
            lo[q] = v if v < lo[q] else lo[q]
            hi[q] = v if v > hi[q] else hi[q]
            z[q] += v * 0.0
        i += 64
    for q in range(i1 - i):
        v = np.float64(x[i + q])
        lo[q] = v if v < lo[q] else lo[q]
        hi[q] = v if v > hi[q] else hi[q]
        z[q] += v * 0.0
    return lo.min(), hi.max(), z.sum()


@jit
def _first_bad(x, i0, i1):
    for i in range(i0, i1):
        if not np.isfinite(x[i]):
            return i
    return -1


@jit_parallel
def scan_range_parallel(x):
    """Parallel :func:`scan_range` (blocks of 65536 values)."""
    d = x.shape[0]
    nb = (d + _BLOCK - 1) // _BLOCK
    los = np.empty(nb, dtype=np.float64)
    his = np.empty(nb, dtype=np.float64)
    zs = np.empty(nb, dtype=np.float64)
    for b in prange(nb):
        los[b], his[b], zs[b] = _range_block(x, b * _BLOCK, min(d, (b + 1) * _BLOCK))
    lo = np.inf
    hi = -np.inf
    bad = -1
    for b in range(nb):
        lo = min(lo, los[b])
        hi = max(hi, his[b])
        if zs[b] != 0.0 and bad < 0:  # NaN != 0 is True: a NaN or an inf in this block
            bad = _first_bad(x, b * _BLOCK, min(d, (b + 1) * _BLOCK))
    return lo, hi, bad


@jit
def scan_range_serial(x):
    """Serial :func:`scan_range`."""
    lo, hi, z = _range_block(x, 0, x.shape[0])
    bad = -1
    if z != 0.0:
        bad = _first_bad(x, 0, x.shape[0])
    return lo, hi, bad


def scan_range(x):
    """Minimum, maximum and finiteness of ``x`` in one pass (parallel for large ``x``).

    Parameters
    ----------
    x : float32 or float64 array, shape (d,), d >= 1, C-contiguous

    Returns
    -------
    lo, hi : float
        Minimum and maximum of the finite entries (meaningless when ``bad >= 0``).
    bad : int
        Index of the first NaN/inf entry, or -1.

    Notes
    -----
    O(d); 64 running minima/maxima so the loop vectorises (PERFORMANCE.md habit 1); serial
    below :data:`PARALLEL_MIN` values.
    """
    if x.shape[0] < PARALLEL_MIN:
        return scan_range_serial(x)
    return scan_range_parallel(x)


@jit
def _cell(v, edges, m, lo, scale, uniform):
    """Cell ``l`` in ``[0, m)`` of ``v``: ``edges[l] <= v < edges[l + 1]`` (last cell closed).

    Uniform grid: ``floor((v - lo) m / (hi - lo))`` clamped, with no check against ``edges``: a
    value within rounding of an edge may land in the neighbouring cell, which changes nothing
    but the last bits (a value on a grid point costs 0 in either cell) and is deterministic, so
    every chunk bins alike.  (The check made the pass markedly slower.)  Other grids: binary search.
    """
    if uniform:
        f = (v - lo) * scale
        if f <= 0.0:
            return 0
        if f >= m - 1:
            return m - 1
        return np.int64(f)
    a = 0
    b = m - 1
    while a < b:  # largest l with edges[l] <= v
        mid = (a + b + 1) >> 1
        if edges[mid] <= v:
            a = mid
        else:
            b = mid - 1
    return a


HIST_LANES = 4
"""Interleaved sub-histograms of :func:`_hist_block`: consecutive values (sorted data hits one
cell many times in a row) add into different copies, so the adds do not wait on each other."""


@jit
def _hist_block(x, w, edges, uniform, i0, i1, h):
    """Add ``x[i0:i1]`` to the histogram ``h``; returns ``(sum w x^2, number outside)``.

    Value ``i`` goes to sub-histogram ``(i - i0) % HIST_LANES``; the copies are summed into
    ``h`` at the end (a fixed order: the result depends only on the data and ``i0, i1``).
    """
    m = edges.shape[0] - 1
    lo = edges[0]
    hi = edges[m]
    scale = m / (hi - lo) if hi > lo else 0.0
    unit = w.shape[0] == 0
    acc = np.zeros((HIST_LANES, m, 3))
    nrm = np.zeros(HIST_LANES)
    out = 0
    for i in range(i0, i1):
        k = (i - i0) % HIST_LANES
        v = np.float64(x[i])
        if v < lo or v > hi:
            out += 1
        l = _cell(v, edges, m, lo, scale, uniform)
        y = v - edges[l]
        wi = 1.0 if unit else w[i]
        wy = wi * y
        acc[k, l, 0] += wi
        acc[k, l, 1] += wy
        acc[k, l, 2] += wy * y
        nrm[k] += wi * v * v
    for k in range(HIST_LANES):
        for l in range(m):
            h[l, 0] += acc[k, l, 0]
            h[l, 1] += acc[k, l, 1]
            h[l, 2] += acc[k, l, 2]
    return nrm.sum(), out


@jit_parallel
def hist_pass_parallel(x, w, edges, uniform, hist, nthreads):
    """Parallel :func:`hist_pass`: one private histogram per thread, then summed."""
    d = x.shape[0]
    m = edges.shape[0] - 1
    nt = max(1, nthreads)
    size = (d + nt - 1) // nt
    parts = np.zeros((nt, m, 3), dtype=np.float64)
    norms = np.zeros(nt, dtype=np.float64)
    outs = np.zeros(nt, dtype=np.int64)
    for t in prange(nt):
        norms[t], outs[t] = _hist_block(x, w, edges, uniform, t * size, min(d, (t + 1) * size), parts[t])
    norm2 = 0.0
    outside = 0
    for t in range(nt):
        for l in range(m):
            hist[l, 0] += parts[t, l, 0]
            hist[l, 1] += parts[t, l, 1]
            hist[l, 2] += parts[t, l, 2]
        norm2 += norms[t]
        outside += outs[t]
    return norm2, outside


@jit
def hist_pass_serial(x, w, edges, uniform, hist):
    """Serial :func:`hist_pass`."""
    return _hist_block(x, w, edges, uniform, 0, x.shape[0], hist)


def hist_pass(x, w, edges, uniform, hist, nthreads):
    """Add one chunk's per-cell statistics to ``hist`` (the approximate-QUIVER histogram).

    Parameters
    ----------
    x : float32 or float64 array, shape (d,), C-contiguous
        The chunk, any order; finite; values should lie in ``[edges[0], edges[m]]`` (values
        outside are put in the first/last cell and counted in the return value).
    w : float64 array, shape (d,) or (0,)
        Weights (empty: all 1).
    edges : float64 array, shape (m + 1,), non-decreasing
        Grid points ``e_0 <= ... <= e_m``; cell ``l`` is ``[e_l, e_{l+1})`` (the last one closed).
    uniform : bool
        True when ``edges`` is the uniform grid (cell found by arithmetic plus a check against
        ``edges``); False: binary search, O(log m) per value.
    hist : float64 array, shape (m, 3), C order
        Accumulated in place: ``hist[l] += (sum w, sum w (x - e_l), sum w (x - e_l)^2)`` over the
        values in cell ``l`` (sums relative to the cell's left edge: small, stable, and simply
        added across chunks).
    nthreads : int
        Number of threads (private histograms) for large chunks (``numba.get_num_threads()``).

    Returns
    -------
    norm2 : float
        ``sum w x^2`` of the chunk (for vNMSE).
    outside : int
        Number of values outside ``[e_0, e_m]``.

    Notes
    -----
    O(d) (uniform) or O(d log m) time; parallel above :data:`PARALLEL_MIN` values with
    ``nthreads x m x 3`` float64 of scratch.  The result depends only on the data, the grid
    and the thread count (summation order).
    """
    d = x.shape[0]
    nt = max(1, min(int(nthreads), d // (PARALLEL_MIN // 2)))
    if nt == 1:
        return hist_pass_serial(x, w, edges, uniform, hist)
    return hist_pass_parallel(x, w, edges, uniform, hist, nt)


@jit
def approx_table(edges, hist):
    """Prefix table over the ``m + 1`` grid points from the merged histogram.

    Parameters
    ----------
    edges : float64 array, shape (m + 1,)
    hist : float64 array, shape (m, 3)
        From :func:`hist_pass` (summed over chunks).

    Returns
    -------
    tab : float64 array, shape (m + 1, 4)
        ``(e_j - c, W_j, P1_j, P2_j)`` with the sums over the values in cells ``< j``, i.e. in
        ``[e_0, e_j)``, about the weighted mean ``c``: then ``C(k, j)`` is the exact sum of
        variances of the original values in ``(e_k, e_j]`` (values on a grid point cost 0).
    centre : float

    Notes
    -----
    O(m).  ``sum w (x - c) = S1 + W (e_l - c)`` and ``sum w (x - c)^2 = S2 + 2 (e_l - c) S1 +
    W (e_l - c)^2`` per cell.
    """
    m = edges.shape[0] - 1
    sw = 0.0
    sx = 0.0
    for l in range(m):
        sw += hist[l, 0]
        sx += hist[l, 1] + hist[l, 0] * edges[l]
    c = sx / sw if sw > 0.0 else 0.5 * (edges[0] + edges[m])
    if c < edges[0]:
        c = edges[0]
    if c > edges[m]:
        c = edges[m]
    tab = np.empty((m + 1, 4), dtype=np.float64)
    W = 0.0
    P1 = 0.0
    P2 = 0.0
    tab[0, 0] = edges[0] - c
    tab[0, 1] = 0.0
    tab[0, 2] = 0.0
    tab[0, 3] = 0.0
    for l in range(m):
        e = edges[l] - c
        n_l = hist[l, 0]
        s1 = hist[l, 1]
        s2 = hist[l, 2]
        W += n_l
        P1 += s1 + n_l * e
        P2 += s2 + 2.0 * e * s1 + n_l * e * e
        tab[l + 1, 0] = edges[l + 1] - c
        tab[l + 1, 1] = W
        tab[l + 1, 2] = P1
        tab[l + 1, 3] = P2
    return tab, c


# ----------------------------------------------------------------------------------------------
# objective
# ----------------------------------------------------------------------------------------------


@jit
def _objective_block(x, w, levels, i0, i1):
    s = levels.shape[0]
    unit = w.shape[0] == 0
    acc = 0.0
    for i in range(i0, i1):
        v = np.float64(x[i])
        # smallest l with levels[l] >= v
        lo = 0
        hi = s - 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if levels[mid] >= v:
                hi = mid
            else:
                lo = mid + 1
        ub = levels[lo]
        if ub > v and lo > 0:
            t = (ub - v) * (v - levels[lo - 1])
            if unit:
                acc += t
            else:
                acc += w[i] * t
    return acc


@jit_parallel
def objective_parallel(x, w, levels):
    """Parallel :func:`objective_sorted_levels` (blocks of 65536 values)."""
    d = x.shape[0]
    nb = (d + _BLOCK - 1) // _BLOCK
    parts = np.zeros(nb, dtype=np.float64)
    for b in prange(nb):
        parts[b] = _objective_block(x, w, levels, b * _BLOCK, min(d, (b + 1) * _BLOCK))
    total = 0.0
    for b in range(nb):
        total += parts[b]
    return total


@jit
def objective_serial(x, w, levels):
    """Serial :func:`objective_sorted_levels`."""
    return _objective_block(x, w, levels, 0, x.shape[0])


def objective_sorted_levels(x, w, levels):
    """``sum w (b_x - x)(x - a_x)`` for ascending ``levels`` covering every ``x``.

    Parameters
    ----------
    x : float32 or float64 array, shape (d,), any order, inside ``[levels[0], levels[-1]]``
    w : float64 array, shape (d,) or (0,) (unit weights)
    levels : float64 array, shape (s,), ascending (repeats allowed)

    Returns
    -------
    float
        The ASQ objective (sum of the unbiased-rounding variances), each term computed from
        differences ``b - x`` and ``x - a`` directly (no prefix-sum cancellation).

    Notes
    -----
    O(d log s) time; parallel above :data:`PARALLEL_MIN` values.
    """
    if x.shape[0] < PARALLEL_MIN:
        return objective_serial(x, w, levels)
    return objective_parallel(x, w, levels)


# ----------------------------------------------------------------------------------------------
# entry points with a fixed kind (callable from Python without literal dispatch)
# ----------------------------------------------------------------------------------------------


@jit
def quiver_accel_unit(tab, s, algo, nparts):
    """:func:`quiver_accel` with unit weights (no duplicates, no user weights)."""
    return quiver_accel(ACCEL_UNIT, tab, np.empty(0, dtype=np.uint32), s, algo, nparts)


@jit
def quiver_accel_map(tab, cmap, s, algo, nparts):
    """:func:`quiver_accel` for integer counts; ``cmap`` from :func:`count_map`."""
    return quiver_accel(ACCEL_MAP, tab, cmap, s, algo, nparts)


@jit
def quiver_accel_search(tab, s, algo, nparts):
    """:func:`quiver_accel` for arbitrary non-negative weights (binary search for ``b*``)."""
    return quiver_accel(ACCEL_SEARCH, tab, np.empty(0, dtype=np.uint32), s, algo, nparts)


# ----------------------------------------------------------------------------------------------
# one level set per group (per row of a matrix): independent solves in parallel over groups
# ----------------------------------------------------------------------------------------------

GROUP_QUIVER = 0
GROUP_QUIVER_ACCEL = 1
GROUP_ZIPML = 2


@jit
def _solve_distinct(vals, wts, s, method, out):
    """Optimal levels of one group's distinct sorted values into ``out`` (s,); returns the objective.

    Fewer than ``s + 1`` distinct values: the values themselves (the maximum repeated), objective
    0; no values: zeros.
    """
    n = vals.shape[0]
    if n == 0:
        out[:] = 0.0
        return 0.0
    if n <= s:
        for i in range(s):
            out[i] = vals[min(i, n - 1)]
        return 0.0
    tab, _c = build_table(vals, wts)
    if method == GROUP_ZIPML:
        idx, _v = zipml(tab, s)
    elif method == GROUP_QUIVER_ACCEL:
        idx, _v = quiver_accel_search(tab, s, SMAWK, 1)
    else:
        idx, _v = quiver_exact(tab, s, SMAWK, 1)
    for i in range(s):
        out[i] = vals[idx[i]]
    return objective_serial(vals, wts, out)


@jit_parallel
def solve_groups(vals, wts, offsets, s, method):
    """Exact levels of ``G`` independent groups, in parallel over the groups (``prange``).

    Parameters
    ----------
    vals : float64 array, shape (N,)
        Distinct values of every group, group after group, each group ascending.
    wts : float64 array, shape (N,), > 0
        Their counts (or weights).
    offsets : int64 array, shape (G + 1,)
        Group ``g`` is ``vals[offsets[g]:offsets[g + 1]]`` (possibly empty).
    s : int
        Levels per group, ``>= 2``.
    method : int
        ``GROUP_QUIVER`` (SMAWK layers), ``GROUP_QUIVER_ACCEL`` (two levels per layer) or
        ``GROUP_ZIPML`` (O(s n^2)).

    Returns
    -------
    levels : float64 array, shape (G, s)
        Each row sorted ascending (repeats possible), as :func:`quiver_exact` chooses them.
    objective : float64 array, shape (G,)
        Each group's sum of variances, computed from the levels directly.

    Notes
    -----
    Each group runs the serial solver (one SMAWK block per layer); memory per running group as
    for one solve on its ``n_g`` distinct values.
    """
    G = offsets.shape[0] - 1
    levels = np.empty((G, s), dtype=np.float64)
    obj = np.zeros(G, dtype=np.float64)
    for g in prange(G):
        a = offsets[g]
        b = offsets[g + 1]
        obj[g] = _solve_distinct(vals[a:b], wts[a:b], s, method, levels[g])
    return levels, obj


@jit_parallel
def hist_groups(x2d, edges2d, hist, norm2):
    """Approximate-QUIVER cell sums of ``G`` groups (rows), each over its own grid, in parallel.

    Parameters
    ----------
    x2d : float32 or float64 array, shape (G, L), C-contiguous
        Row ``g`` holds values of group ``g`` only (in their global order).
    edges2d : float64 array, shape (G, m + 1)
        Uniform grid of each group (``nquant.asq.approx_edges`` of its own range).
    hist : float64 array, shape (G, m, 3)
        Accumulated in place (as :func:`hist_pass` for each row).
    norm2 : float64 array, shape (G,)
        ``sum x^2`` per group, accumulated in place.

    Returns
    -------
    int
        Values outside their group's ``[e_0, e_m]``.
    """
    G = x2d.shape[0]
    L = x2d.shape[1]
    w = np.empty(0, dtype=np.float64)
    outs = np.zeros(G, dtype=np.int64)
    for g in prange(G):
        nrm, out = _hist_block(x2d[g], w, edges2d[g], True, 0, L, hist[g])
        norm2[g] += nrm
        outs[g] = out
    return outs.sum()


@jit_parallel
def approx_groups(edges2d, hist, s):
    """Approximate-QUIVER levels of ``G`` groups from their merged cell sums, in parallel.

    Parameters
    ----------
    edges2d : float64 array, shape (G, m + 1)
    hist : float64 array, shape (G, m, 3)
    s : int

    Returns
    -------
    levels : float64 array, shape (G, s)
        Grid points of each group; a group whose grid is one point (constant group, or no data)
        gets that point ``s`` times.
    value : float64 array, shape (G,)
        DP optimum per group (clamped at 0).
    """
    G = edges2d.shape[0]
    m = edges2d.shape[1] - 1
    levels = np.empty((G, s), dtype=np.float64)
    value = np.zeros(G, dtype=np.float64)
    for g in prange(G):
        e = edges2d[g]
        if e[0] == e[m]:
            levels[g, :] = e[0]
            continue
        tab, _c = approx_table(e, hist[g])
        idx, v = quiver_exact(tab, s, SMAWK, 1)
        for i in range(s):
            levels[g, i] = e[idx[i]]
        value[g] = max(v, 0.0)
    return levels, value


@jit_parallel
def solve_rows(x2d, s, method):
    """Exact levels of every row of an in-memory matrix: sort, deduplicate and solve each row in
    parallel over rows (``prange``); same outputs as :func:`solve_groups` on the rows' tables.

    Parameters
    ----------
    x2d : float64 array, shape (R, L), finite
    s, method : as :func:`solve_groups`
    """
    R = x2d.shape[0]
    levels = np.empty((R, s), dtype=np.float64)
    obj = np.zeros(R, dtype=np.float64)
    unit = np.empty(0, dtype=np.float64)
    for r in prange(R):
        vals, wts = dedup_sorted(np.sort(x2d[r]), unit)
        obj[r] = _solve_distinct(vals, wts, s, method, levels[r])
    return levels, obj
