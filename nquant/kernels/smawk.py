"""Row minima of totally monotone implicit matrices (SMAWK) and the layered DP built on it.

One piece of machinery serves every 1-D dynamic program in nquant whose layer has the form

    F_new(j) = min_{0 <= k <= j} F_old(k) + cost(k, j),         j = 0 .. n-1,

with a ``cost`` that satisfies the quadrangle (Monge) inequality
``cost(a, c) + cost(b, e) <= cost(a, e) + cost(b, c)`` for ``a <= b <= c <= e``: the exact and
approximate QUIVER layers, the accelerated QUIVER layer (two levels per layer) and exact 1-D
k-means.  The implicit matrix ``A[j, k] = F_old(k) + cost(k, j)`` (``+inf`` for ``k > j``) is then
totally monotone, so SMAWK finds every row minimum in O(n) entry evaluations.

Design
------
Numba's nopython mode has no closures that cache well, so the cost is chosen by an integer
``kind`` and evaluated by :func:`entry`, which dispatches to small inline cost functions over a
shared *prefix table* ``tab`` of shape ``(n, 4)``, float64, C order (one cache line per index):

==================  ====  =====================================================================
kind                code  ``tab`` columns and cost
==================  ====  =====================================================================
``ASQ``             0     ``(x, W, P1, P2)`` with ``W, P1, P2`` cumulative sums of ``w, w x, w x^2``
                          *including* index ``j``;  ``C(k, j) = sum_{k < i <= j} w_i (x_j - x_i)
                          (x_i - x_k)`` (sum of stochastic-rounding variances), clamped at >= 0
``ACCEL_UNIT``      1     as ``ASQ``; ``C2(k, j) = C(k, b*) + C(b*, j)`` with the closed-form
                          middle index ``b* = ceil(t) - 1`` for unit weights (``W_b = b + 1``)
``ACCEL_MAP``       2     as 1 for integer counts: ``b* = bmap[ceil(t) - 1]`` where ``bmap`` maps
                          an expanded (repeated) position to its distinct index
``ACCEL_SEARCH``    3     as 1 for arbitrary weights: ``b*`` by binary search of ``W`` in [k, j]
``KMEANS``          4     ``(unused, W, S1, S2)`` over prefix positions ``0..n`` (row 0 = zeros);
                          ``cost(k, j) = S2 - S1^2 / W`` over ``(k, j]`` (weighted SSE), >= 0
==================  ====  =====================================================================

``t = (x_j W_j - x_k W_k - (P1_j - P1_k)) / (x_j - x_k)``: the middle value ``b`` is optimal iff
``W_b >= t > W_{b-1}``, i.e. the right-slope ``G(b) = (P1_j - P1_k) - x_k (W_b - W_k)
- x_j (W_j - W_b)`` of the piecewise-linear cost first becomes >= 0 (QUIVER.md section 2).  The
float ``t`` is clamped to ``[k, j]`` and corrected by one step with the sign of ``G`` computed
from the prefix sums; ``x_j == x_k`` gives ``b* = k`` (cost 0).

SMAWK is iterative with preallocated buffers (:func:`workspace`): level ``t`` works on rows
``2^t - 1 + i 2^t`` (implicit, no row lists), REDUCE keeps a stack of at most ``n_t`` columns
in a slice of one column buffer (sizes sum to < 2n) together with the cached stack values, and
INTERPOLATE walks the levels back down with one forward pointer per level.  Ties resolve to the
smallest column index (leftmost minimum).

Complexity: one :func:`row_minima` call costs O(n) entry evaluations (about 6-8 n in
practice) and no allocation.  Memory of :func:`workspace`: about 24 n bytes.
"""

import numpy as np

from nquant.kernels._jit import jit

ASQ = 0
ACCEL_UNIT = 1
ACCEL_MAP = 2
ACCEL_SEARCH = 3
KMEANS = 4

_MAX_LEVELS = 64


@jit
def asq_cost(tab, k, j):
    """``C(k, j)`` of the ASQ objective from the prefix table (kind ``ASQ``), clamped at >= 0."""
    xk = tab[k, 0]
    xj = tab[j, 0]
    c = (xj + xk) * (tab[j, 2] - tab[k, 2]) - xj * xk * (tab[j, 1] - tab[k, 1]) - (tab[j, 3] - tab[k, 3])
    if c > 0.0:
        return c
    return 0.0


@jit
def kmeans_cost(tab, k, j):
    """Weighted within-interval SSE over prefix positions ``(k, j]`` (kind ``KMEANS``), >= 0."""
    w = tab[j, 1] - tab[k, 1]
    if w <= 0.0:
        return 0.0
    s1 = tab[j, 2] - tab[k, 2]
    c = (tab[j, 3] - tab[k, 3]) - s1 * s1 / w
    if c > 0.0:
        return c
    return 0.0


@jit
def _slope(tab, k, b, j):
    """Right-slope ``G(b)`` of the cost of ``[x_k, x_j]`` with one middle value at ``x_b``."""
    return (tab[j, 2] - tab[k, 2]) - tab[k, 0] * (tab[b, 1] - tab[k, 1]) - tab[j, 0] * (tab[j, 1] - tab[b, 1])


@jit
def _near_integer_fix(tab, k, j, b, t, c, tol):
    """One-step correction of ``b`` by the slope sign when ``t`` is within ``tol`` of an integer."""
    if c - t < tol or t - (c - 1.0) < tol:
        if b > k and _slope(tab, k, b - 1, j) >= 0.0:
            return b - 1
        if b < j and _slope(tab, k, b, j) < 0.0:
            return b + 1
    return b


@jit
def mid_unit(tab, k, j):
    """``b*(k, j)`` for unit weights (``W_b = b + 1``): ``ceil(t) - 1`` clamped to ``[k, j]``."""
    xk = tab[k, 0]
    xj = tab[j, 0]
    if j - k < 2 or not (xj > xk):
        return k
    wk = tab[k, 1]
    wj = tab[j, 1]
    dp = tab[j, 2] - tab[k, 2]
    t = (xj * wj - xk * wk - dp) / (xj - xk)
    c = np.ceil(t)
    pf = c - 1.0
    if pf <= k:
        b = k
    elif pf >= j:
        b = j
    else:
        b = np.int64(pf)
    tol = 1e-10 * (abs(xj * wj) + abs(xk * wk) + abs(dp)) / (xj - xk)
    return _near_integer_fix(tab, k, j, b, t, c, tol)


@jit
def mid_map(tab, bmap, k, j):
    """``b*(k, j)`` for integer counts: ``bmap[ceil(t) - 1]`` clamped to ``[k, j]``."""
    xk = tab[k, 0]
    xj = tab[j, 0]
    if j - k < 2 or not (xj > xk):
        return k
    wk = tab[k, 1]
    wj = tab[j, 1]
    dp = tab[j, 2] - tab[k, 2]
    t = (xj * wj - xk * wk - dp) / (xj - xk)
    c = np.ceil(t)
    pf = c - 1.0
    pmax = bmap.shape[0] - 1
    if pf <= 0.0:
        b = np.int64(bmap[0])
    elif pf >= pmax:
        b = np.int64(bmap[pmax])
    else:
        b = np.int64(bmap[np.int64(pf)])
    if b < k:
        b = k
    elif b > j:
        b = j
    tol = 1e-10 * (abs(xj * wj) + abs(xk * wk) + abs(dp)) / (xj - xk)
    return _near_integer_fix(tab, k, j, b, t, c, tol)


@jit
def mid_search(tab, k, j):
    """``b*(k, j)`` for arbitrary weights: smallest ``b`` in ``(k, j]`` with ``W_b >= t``."""
    xk = tab[k, 0]
    xj = tab[j, 0]
    if j - k < 2 or not (xj > xk):
        return k
    t = (xj * tab[j, 1] - xk * tab[k, 1] - (tab[j, 2] - tab[k, 2])) / (xj - xk)
    lo = k + 1
    hi = j
    while lo < hi:
        mid = (lo + hi) >> 1
        if tab[mid, 1] >= t:
            hi = mid
        else:
            lo = mid + 1
    return lo


@jit
def accel_mid(kind, tab, bmap, k, j):
    """Optimal middle index ``b*(k, j)`` in ``[k, j]`` for the accelerated QUIVER cost.

    Returns ``k`` when ``x_j == x_k`` or ``j - k < 2`` (no interior point).  For kinds
    ``ACCEL_UNIT`` / ``ACCEL_MAP`` the float ``t`` is ceiled and clamped; only when ``t`` lies
    within a rounding tolerance of an integer is the choice re-checked with the sign of the
    slope ``G`` (one step), so the common path needs no extra loads.
    """
    if kind == ACCEL_UNIT:
        return mid_unit(tab, k, j)
    if kind == ACCEL_MAP:
        return mid_map(tab, bmap, k, j)
    return mid_search(tab, k, j)


@jit
def split_cost(tab, k, b, j):
    """``C(k, b) + C(b, j)``, each clamped at >= 0."""
    xk = tab[k, 0]
    xj = tab[j, 0]
    xb = tab[b, 0]
    wb = tab[b, 1]
    ab = tab[b, 2]
    qb = tab[b, 3]
    c1 = (xb + xk) * (ab - tab[k, 2]) - xb * xk * (wb - tab[k, 1]) - (qb - tab[k, 3])
    c2 = (xj + xb) * (tab[j, 2] - ab) - xj * xb * (tab[j, 1] - wb) - (tab[j, 3] - qb)
    if c1 < 0.0:
        c1 = 0.0
    if c2 < 0.0:
        c2 = 0.0
    return c1 + c2


@jit
def accel_cost(kind, tab, bmap, k, j):
    """``C2(k, j) = min_b C(k, b) + C(b, j)``: the cost of ``[x_k, x_j]`` with one extra level."""
    if kind == ACCEL_UNIT:
        return split_cost(tab, k, mid_unit(tab, k, j), j)
    if kind == ACCEL_MAP:
        return split_cost(tab, k, mid_map(tab, bmap, k, j), j)
    return split_cost(tab, k, mid_search(tab, k, j), j)


@jit
def cost(kind, tab, bmap, k, j):
    """The interval cost of ``kind`` for source ``k`` and target ``j`` (``k <= j``)."""
    if kind == ASQ:
        return asq_cost(tab, k, j)
    if kind == KMEANS:
        return kmeans_cost(tab, k, j)
    if kind == ACCEL_UNIT:
        return split_cost(tab, k, mid_unit(tab, k, j), j)
    if kind == ACCEL_MAP:
        return split_cost(tab, k, mid_map(tab, bmap, k, j), j)
    return split_cost(tab, k, mid_search(tab, k, j), j)


@jit
def entry(kind, tab, bmap, base, k, j):
    """Matrix entry ``A[j, k] = base[k] + cost(k, j)``, ``+inf`` when ``k > j``."""
    if k > j:
        return np.inf
    return base[k] + cost(kind, tab, bmap, k, j)


@jit
def workspace(n):
    """Scratch buffers for :func:`row_minima` on up to ``n`` rows and columns.

    Returns ``(cols0, colbuf, vbuf, offs, cnts)``: ``cols0 = arange(n)`` (int64), the column
    buffer (int64, ``2 n + 64``), the stack values (float64, ``n``) and two int64 arrays of
    per-level offsets and counts.  About 32 n bytes; allocate once per DP, reuse per layer.
    """
    n = max(n, 1)
    return (
        np.arange(n, dtype=np.int64),
        np.empty(2 * n + _MAX_LEVELS, dtype=np.int64),
        np.empty(n, dtype=np.float64),
        np.empty(_MAX_LEVELS, dtype=np.int64),
        np.empty(_MAX_LEVELS, dtype=np.int64),
    )


@jit
def row_minima(kind, tab, bmap, base, n, cols0, colbuf, vbuf, offs, cnts, fout, kout):
    """All row minima of ``A[j, k] = base[k] + cost(k, j)`` (``k <= j``), ``j, k`` in ``[0, n)``.

    Parameters
    ----------
    kind : int
        Cost selector (module constants ``ASQ``, ``ACCEL_*``, ``KMEANS``).
    tab : float64 array, shape (>= n, 4), C order
        Prefix table of the cost (see the module docstring).
    bmap : uint32 array, shape (d,)
        Expanded-position to distinct-index map (kind ``ACCEL_MAP`` only; else any array).
    base : float64 array, shape (>= n,)
        Previous DP layer ``F_old``.
    n : int
        Number of rows (targets ``j``) and columns (sources ``k``).
    cols0, colbuf, vbuf, offs, cnts : arrays
        Scratch from :func:`workspace` (``cols0`` must be ``arange``).
    fout : float64 array, shape (>= n,)
        Output: ``F_new(j) = min_k A[j, k]`` (must not alias ``base``).
    kout : integer array, shape (>= n,)
        Output: the smallest minimising ``k`` for every ``j``.

    Notes
    -----
    SMAWK (Aggarwal, Klawe, Moran, Shor, Wilber 1987), iterative.  O(n) time, no allocation.
    Requires the quadrangle inequality of ``cost``; with rounding errors of the prefix sums the
    result is optimal up to those errors.
    """
    if n <= 0:
        return
    # ---- REDUCE, level by level going up --------------------------------------------------
    t = 0
    in_start = 0
    in_len = n
    pos = 0
    while True:
        nt = n >> t
        step = 1 << t
        first = step - 1
        k = 0
        out = pos
        for q in range(in_len):
            if t == 0:
                c = cols0[q]
            else:
                c = colbuf[in_start + q]
            while True:
                if k == 0:
                    colbuf[out] = c
                    vbuf[0] = entry(kind, tab, bmap, base, c, first)
                    k = 1
                    break
                v = entry(kind, tab, bmap, base, c, first + (k - 1) * step)
                if vbuf[k - 1] <= v:
                    if k < nt:
                        colbuf[out + k] = c
                        vbuf[k] = entry(kind, tab, bmap, base, c, first + k * step)
                        k += 1
                    break
                k -= 1
        offs[t] = out
        cnts[t] = k
        in_start = out
        in_len = k
        pos = out + k
        if nt == 1:
            break
        t += 1
    # top level: a single row
    top = (1 << t) - 1
    kout[top] = colbuf[offs[t]]
    fout[top] = vbuf[0]
    # ---- INTERPOLATE, going down -----------------------------------------------------------
    while t > 0:
        t -= 1
        nt = n >> t
        step = 1 << t
        first = step - 1
        start = offs[t]
        last = start + cnts[t] - 1
        p = start
        for i in range(0, nt, 2):
            r = first + i * step
            if i + 1 < nt:
                stop = kout[r + step]
            else:
                stop = colbuf[last]
            best = np.inf
            arg = colbuf[p]
            while True:
                c = colbuf[p]
                v = entry(kind, tab, bmap, base, c, r)
                if v < best:
                    best = v
                    arg = c
                if c >= stop or p >= last:
                    break
                p += 1
            kout[r] = arg
            fout[r] = best


@jit
def row_minima_dc(kind, tab, bmap, base, n, fout, kout):
    """Same result as :func:`row_minima` by divide and conquer over rows (no scratch).

    Rows are processed top-down by levels: row ``r`` with ``r + 1`` an odd multiple of ``2^t``
    scans the columns between the argmins of rows ``r - 2^t`` and ``r + 2^t`` (monotone
    argmins).  O(n log n) evaluations, but the scans are independent evaluations (throughput
    bound) whereas SMAWK's REDUCE is a chain of dependent comparisons (latency bound); which one
    is faster depends on the cost (see :func:`layered_dp`).
    """
    if n <= 0:
        return
    top = 0
    while (2 << top) <= n:
        top += 1
    for t in range(top, -1, -1):
        step = 1 << t
        r = step - 1
        while r < n:
            lo = 0
            if r >= step:
                lo = kout[r - step]
            hi = r
            if r + step < n:
                h2 = kout[r + step]
                if h2 < hi:
                    hi = h2
            best = np.inf
            arg = lo
            for k in range(lo, hi + 1):
                v = base[k] + cost(kind, tab, bmap, k, r)
                if v < best:
                    best = v
                    arg = k
            fout[r] = best
            kout[r] = arg
            r += 2 * step


@jit
def column_min(kind, tab, bmap, base, j):
    """``min_{k <= j} base[k] + cost(k, j)`` and its smallest argmin (one column, O(j))."""
    best = np.inf
    arg = 0
    for k in range(j + 1):
        v = base[k] + cost(kind, tab, bmap, k, j)
        if v < best:
            best = v
            arg = k
    return best, arg


@jit
def layered_dp(kind, tab, bmap, f0, nlayers, ktab, cols0, colbuf, vbuf, offs, cnts):
    """Run ``nlayers`` DP layers from ``f0`` and return the last layer's value at ``j = n - 1``.

    Parameters
    ----------
    kind, tab, bmap : see :func:`row_minima`
    f0 : float64 array, shape (n,)
        First layer ``F_1``; ``n = f0.shape[0]``.  Not modified.
    nlayers : int
        Number of layers to add (>= 0).  Layers ``1 .. nlayers - 1`` are full SMAWK passes
        (their argmins go to ``ktab[layer - 1]``); the last one is a single column scan for
        ``j = n - 1`` (its argmin is returned).
    ktab : uint32 array, shape (>= max(nlayers - 1, 0), n)
        Argmin table for the walk back.

    Returns
    -------
    value : float
        ``F_{1 + nlayers}(n - 1)`` (``f0[n - 1]`` when ``nlayers == 0``).
    k_last : int
        Argmin of the last layer at ``j = n - 1`` (``n - 1`` when ``nlayers == 0``).

    Notes
    -----
    O(nlayers n) time; memory: two float64 rows of n plus ``ktab`` (4 bytes per entry).
    """
    n = f0.shape[0]
    if nlayers == 0:
        return f0[n - 1], n - 1
    fa = f0.copy()
    fb = np.empty(n, dtype=np.float64)
    kbuf = np.empty(n, dtype=np.int64)
    for layer in range(nlayers - 1):
        row_minima(kind, tab, bmap, fa, n, cols0, colbuf, vbuf, offs, cnts, fb, kbuf)
        krow = ktab[layer]
        for j in range(n):
            krow[j] = kbuf[j]
        tmp = fa
        fa = fb
        fb = tmp
    return column_min(kind, tab, bmap, fa, n - 1)
