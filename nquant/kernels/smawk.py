"""Row minima of totally monotone implicit matrices (SMAWK) and the layered DP built on it.

One piece of machinery serves every 1-D dynamic program in nquant whose layer has the form

    F_new(j) = min_{0 <= k <= j} F_old(k) + cost(k, j),         j = 0 .. n-1,

with a ``cost`` that satisfies the quadrangle (Monge) inequality
``cost(a, c) + cost(b, e) <= cost(a, e) + cost(b, c)`` for ``a <= b <= c <= e``: the exact and
approximate QUIVER layers, the accelerated QUIVER layer (two levels per layer) and exact 1-D
k-means.  The implicit matrix ``A[j, k] = F_old(k) + cost(k, j)`` (``+inf`` for ``k > j``) is then
totally monotone (leftmost row argmins are non-decreasing), so SMAWK finds every row minimum in
O(n) entry evaluations.

Design: an integer ``kind`` made a compile-time constant
-------------------------------------------------------
Every cost reads a *prefix table* ``tab`` of shape ``(n, 4)``, float64, C order (one 32-byte row
per index, so an evaluation touches two or three cache lines), plus an optional auxiliary uint32
array ``aux``.  The machinery (:func:`row_minima`, :func:`row_minima_dc`, :func:`column_min`,
:func:`layered_dp`) takes an integer ``kind`` and calls :func:`cost`, which dispatches to small
inline cost functions.  Every function of the chain calls ``numba.literally(kind)``, so Numba
compiles (and caches on disk) one specialisation per kind with the other kinds' branches pruned
before LLVM sees them: no branch in the innermost loop, small code, short compiles.  (Rejected
alternatives: a run-time ``kind`` switch made the accelerated cost an order of magnitude slower
(non-inlined calls with reference counting); forcing inlining of every kind made every kernel's
compile long; a
jitted cost function passed as an argument cannot be cached by Numba once the callee is not
inlined.)

==================  ====  =====================================================================
kind                code  ``tab`` columns and cost
==================  ====  =====================================================================
``ASQ``             0     ``(x, W, P1, P2)``: ``W, P1, P2`` cumulative sums of ``w, w x, w x^2``
                          *including* index ``j``;  ``C(k, j) = sum_{k < i <= j} w_i (x_j - x_i)
                          (x_i - x_k)`` (sum of stochastic-rounding variances), clamped >= 0
``ACCEL_UNIT``      1     same table; ``C2(k, j) = min_b C(k, b) + C(b, j)`` with the closed-form
                          middle ``b* = ceil(t) - 1`` for unit weights (``W_b = b + 1``)
``ACCEL_MAP``       2     same for integer counts: ``b* = aux[ceil(t) - 1]``, ``aux`` mapping an
                          expanded (repeated) position to its distinct index
``ACCEL_SEARCH``    3     same for arbitrary weights: ``b*`` by binary search of ``W`` in [k, j]
``KMEANS``          4     ``(unused, W, S1, S2)`` over prefix positions ``0..n`` (row 0 = zeros);
                          weighted SSE ``S2 - S1^2 / W`` over ``(k, j]``, clamped >= 0
``ASQ_SPLIT``       5     ``(x, U, A, 0)`` from :func:`split_table`: the ``ASQ`` cost as
                          ``A_j - A_k + x_k U_j - x_j U_k`` (fewer dependent operations: faster
                          layers; used by exact QUIVER)
==================  ====  =====================================================================

``t = (x_j W_j - x_k W_k - (P1_j - P1_k)) / (x_j - x_k)``: the middle value ``x_b`` is optimal iff
``W_b >= t > W_{b-1}``, i.e. where the right-slope ``G(b) = (P1_j - P1_k) - x_k (W_b - W_k)
- x_j (W_j - W_b)`` of the piecewise-linear cost first becomes >= 0 (QUIVER.md section 2).  The
float ``t`` is ceiled and clamped to ``[k, j]``; when ``t`` is within a rounding tolerance of an
integer the choice is corrected by one step with the sign of ``G``; ``x_j == x_k`` gives
``b* = k`` (cost 0).

Row-minima algorithms sharing the costs:

- :func:`row_minima` (SMAWK, :func:`row_minima_range` on a submatrix), iterative with
  preallocated buffers (:func:`workspace`): level ``t`` works on rows ``2^t - 1 + i 2^t``
  (implicit, no row lists); REDUCE keeps a stack of at most ``n_t`` columns in a slice of one
  column buffer (sizes sum to < 2n) with the cached stack values (a popped comparison's value is
  reused for the push); INTERPOLATE walks the levels back down with one forward pointer per
  level.  O(n) evaluations (about 9 n measured for the ASQ layers), but each REDUCE step depends
  on the previous comparison, so it is bound by the latency of one evaluation.
- :func:`row_minima_split`: the rows cut into ``nparts`` blocks whose boundary rows are solved
  first; the blocks are then independent SMAWK submatrices run with ``prange`` (the layered
  DP uses it above ``asq.DP_PARALLEL_MIN`` values, one block per Numba thread).
- :func:`row_minima_dc`: divide and conquer over rows, no scratch, O(n log n) evaluations that
  are independent of each other (throughput bound); with the previous layer's argmins as lower
  bounds (``K_i(j) <= K_{i+1}(j)``).  Kept as the simple, easily checked alternative.

Serial, with the cheap ``ASQ`` cost, D&C is about as fast as SMAWK (its evaluations are
independent); with the accelerated costs, an order of magnitude dearer per evaluation (a division
followed by a dependent load of ``tab[b*]``), SMAWK's fewer evaluations win.  The unit-weight cost
is inlined for the same reason.  (Timings belong in the asv benchmarks.)

Ties resolve to the smallest column index (leftmost minimum) in all of them.
"""

import numpy as np

from numba import literally

from nquant.kernels._jit import jit, jit_parallel, prange

_MAX_LEVELS = 64

SMAWK = 0
DIVIDE_AND_CONQUER = 1

ASQ = 0
ACCEL_UNIT = 1
ACCEL_MAP = 2
ACCEL_SEARCH = 3
KMEANS = 4
ASQ_SPLIT = 5

# ----------------------------------------------------------------------------------------------
# costs (leaf functions are inlined; k <= j)
# ----------------------------------------------------------------------------------------------


@jit(inline="always")
def _asq(tab, k, j):
    xk = tab[k, 0]
    xj = tab[j, 0]
    c = (xj + xk) * (tab[j, 2] - tab[k, 2]) - xj * xk * (tab[j, 1] - tab[k, 1]) - (tab[j, 3] - tab[k, 3])
    if c > 0.0:
        return c
    return 0.0


@jit(inline="always")
def _kmeans(tab, k, j):
    w = tab[j, 1] - tab[k, 1]
    if w <= 0.0:
        return 0.0
    s1 = tab[j, 2] - tab[k, 2]
    c = (tab[j, 3] - tab[k, 3]) - s1 * s1 / w
    if c > 0.0:
        return c
    return 0.0


@jit(inline="always")
def _slope(tab, k, b, j):
    """Right-slope ``G(b)`` of the cost of ``[x_k, x_j]`` with one middle value at ``x_b``."""
    return (tab[j, 2] - tab[k, 2]) - tab[k, 0] * (tab[b, 1] - tab[k, 1]) - tab[j, 0] * (tab[j, 1] - tab[b, 1])


@jit(inline="always")
def _frac(tab, k, j):
    """``(f, tol)``: ``t - W_k = sum_{(k, j]} w_i (x_j - x_i) / (x_j - x_k)`` in ``[0, W_j - W_k]``
    and a bound on its rounding error (``x_j > x_k`` required)."""
    xj = tab[j, 0]
    dx = xj - tab[k, 0]
    dw = tab[j, 1] - tab[k, 1]
    dp = tab[j, 2] - tab[k, 2]
    num = xj * dw - dp
    tol = 64.0 * 2.220446049250313e-16 * (abs(xj * dw) + abs(dp) + abs(tab[j, 2])) / dx
    return num / dx, tol


@jit(inline="always")
def _fix(tab, k, j, b, f, tol):
    """One-step correction of ``b`` by the slope sign when ``f`` is within ``tol`` of an integer.

    Skipped when ``tol >= 0.25``: then the prefix sums cannot locate ``b*`` to one position and
    the interval is so short that any ``b`` in ``[k, j]`` costs the same up to rounding.
    """
    if tol < 0.25:
        c = np.ceil(f)
        if c - f < tol or f - (c - 1.0) < tol:
            if b > k and _slope(tab, k, b - 1, j) >= 0.0:
                return b - 1
            if b < j and _slope(tab, k, b, j) < 0.0:
                return b + 1
    return b


@jit(inline="always")
def _split(tab, k, b, j):
    """``C(k, b) + C(b, j)``, each clamped at >= 0 (shares the loads of ``tab[b]``)."""
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


@jit(inline="always")
def _mid_unit(tab, k, j):
    if j - k < 2 or not (tab[j, 0] > tab[k, 0]):
        return k
    f, tol = _frac(tab, k, j)
    # W_b = b + 1: the first b with W_b >= W_k + f is k + ceil(f)
    c = np.ceil(f)
    if c <= 0.0:
        b = k
    elif c >= j - k:
        b = j
    else:
        b = k + np.int64(c)
    return _fix(tab, k, j, b, f, tol)


@jit(inline="always")
def _mid_map(tab, aux, k, j):
    if j - k < 2 or not (tab[j, 0] > tab[k, 0]):
        return k
    f, tol = _frac(tab, k, j)
    # expanded 0-based position of the first point with W >= W_k + f
    pf = tab[k, 1] + np.ceil(f) - 1.0
    pmax = aux.shape[0] - 1
    if pf <= 0.0:
        b = np.int64(aux[0])
    elif pf >= pmax:
        b = np.int64(aux[pmax])
    else:
        b = np.int64(aux[np.int64(pf)])
    if b < k:
        b = k
    elif b > j:
        b = j
    return _fix(tab, k, j, b, f, tol)


@jit(inline="always")
def _mid_search(tab, k, j):
    xk = tab[k, 0]
    xj = tab[j, 0]
    if j - k < 2 or not (xj > xk):
        return k
    f, tol = _frac(tab, k, j)
    t = tab[k, 1] + f
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
def mid(kind, tab, aux, k, j):
    """Optimal middle index ``b*(k, j)`` in ``[k, j]`` of an accelerated kind.

    ``ACCEL_UNIT``: ``ceil(t) - 1``; ``ACCEL_MAP``: ``aux[ceil(t) - 1]``; both clamped to
    ``[k, j]`` and, when ``t`` is within a rounding tolerance of an integer, corrected by one
    step with the sign of the slope ``G``.  ``ACCEL_SEARCH``: binary search of ``W``.
    Returns ``k`` when ``x_j == x_k`` or ``j - k < 2`` (no interior point).  (Run-time
    ``kind``: used O(s) times by the walk back, not in hot loops.)
    """
    if kind == ACCEL_UNIT:
        return _mid_unit(tab, k, j)
    if kind == ACCEL_MAP:
        return _mid_map(tab, aux, k, j)
    return _mid_search(tab, k, j)


@jit
def asq_cost(tab, aux, k, j):
    """``C(k, j)``: sum of rounding variances of the values in ``(x_k, x_j]``, clamped >= 0."""
    return _asq(tab, k, j)


@jit
def asq_split_cost(tab, aux, k, j):
    """``C(k, j)`` from the separated table ``(x, U, A, _)`` (:func:`split_table`), clamped >= 0.

    ``C(k, j) = A_j - A_k + x_k U_j - x_j U_k`` with ``U = P1 - x W`` and ``A = x P1 - P2``:
    two multiplications on the critical path instead of four (SMAWK's REDUCE is latency bound).
    """
    c = (tab[j, 2] - tab[k, 2]) + (tab[k, 0] * tab[j, 1] - tab[j, 0] * tab[k, 1])
    if c > 0.0:
        return c
    return 0.0


@jit
def split_table(tab):
    """``(x, U, A, 0)`` with ``U = P1 - x W``, ``A = x P1 - P2`` from an ``ASQ`` table."""
    n = tab.shape[0]
    out = np.zeros((n, 4), dtype=np.float64)
    for i in range(n):
        x = tab[i, 0]
        out[i, 0] = x
        out[i, 1] = tab[i, 2] - x * tab[i, 1]
        out[i, 2] = x * tab[i, 2] - tab[i, 3]
    return out


@jit
def kmeans_cost(tab, aux, k, j):
    """Weighted within-interval SSE over prefix positions ``(k, j]``, clamped >= 0."""
    return _kmeans(tab, k, j)


@jit(inline="always")
def accel_unit_cost(tab, aux, k, j):
    """``C2(k, j)``, the cost of ``[x_k, x_j]`` with the optimal extra level (unit weights)."""
    return _split(tab, k, _mid_unit(tab, k, j), j)


@jit
def accel_map_cost(tab, aux, k, j):
    """``C2(k, j)`` for integer counts (``aux`` from ``asq_dp.count_map``)."""
    return _split(tab, k, _mid_map(tab, aux, k, j), j)


@jit
def accel_search_cost(tab, aux, k, j):
    """``C2(k, j)`` for arbitrary weights (binary search, O(log n))."""
    return _split(tab, k, _mid_search(tab, k, j), j)


@jit
def cost(kind, tab, aux, k, j):
    """The interval cost of ``kind`` for source ``k`` and target ``j`` (``k <= j``).

    ``ASQ``: ``C(k, j)``; ``ACCEL_*``: ``C2(k, j) = C(k, b*) + C(b*, j)``; ``KMEANS``: the
    weighted SSE of prefix positions ``(k, j]``.  All clamped at >= 0.  ``kind`` is made a
    compile-time constant (``numba.literally``): one small specialisation per kind.
    """
    literally(kind)
    if kind == ASQ:
        return asq_cost(tab, aux, k, j)
    if kind == ASQ_SPLIT:
        return asq_split_cost(tab, aux, k, j)
    if kind == KMEANS:
        return kmeans_cost(tab, aux, k, j)
    if kind == ACCEL_UNIT:
        return accel_unit_cost(tab, aux, k, j)
    if kind == ACCEL_MAP:
        return accel_map_cost(tab, aux, k, j)
    return accel_search_cost(tab, aux, k, j)


@jit
def workspace(n):
    """Scratch buffers for :func:`row_minima` on up to ``n`` rows and columns.

    Returns ``(colbuf, vbuf, offs, cnts)``: the column buffer (int64, ``2 n + 64``), the stack
    values (float64, ``n``) and two int64 arrays of per-level offsets and counts.  About 24 n
    bytes; allocate once per DP and reuse for every layer.
    """
    n = max(n, 1)
    return (
        np.empty(2 * n + _MAX_LEVELS, dtype=np.int64),
        np.empty(n, dtype=np.float64),
        np.empty(_MAX_LEVELS, dtype=np.int64),
        np.empty(_MAX_LEVELS, dtype=np.int64),
    )


@jit
def row_minima_range(kind, tab, aux, base, r0, n, c0, nc, colbuf, vbuf, offs, cnts, fout, kout):
    """Row minima of the submatrix rows ``[r0, r0 + n)`` x columns ``[c0, c0 + nc)`` of
    ``A[j, k] = base[k] + cost(k, j)`` (``+inf`` for ``k > j``).

    Parameters
    ----------
    kind : int
        The cost (module constants ``ASQ``, ``ACCEL_*``, ``KMEANS``): a compile-time constant
        (``numba.literally``), one compiled specialisation per kind.
    tab : float64 array, shape (>= n, 4), C order
        Prefix table of the cost.
    aux : uint32 array
        Auxiliary array of the cost (e.g. the count map), else any (empty) uint32 array.
    base : float64 array, shape (>= n,)
        Previous DP layer ``F_old``.
    r0, n : int
        First row (target ``j``) and number of rows.
    c0, nc : int
        First column (source ``k``) and number of columns; every row must have a finite entry
        (``c0 <= r0``).
    colbuf, vbuf, offs, cnts : arrays
        Scratch from :func:`workspace`.
    fout : float64 array, shape (>= n,)
        Output ``F_new(j) = min_k A[j, k]`` (must not alias ``base``).
    kout : int64 array, shape (>= n,)
        Output: the smallest minimising ``k`` for every ``j``.

    Notes
    -----
    SMAWK (Aggarwal, Klawe, Moran, Shor, Wilber 1987), iterative.  O(n + nc) time, no
    allocation; scratch sized for ``n`` rows.
    Relies on the quadrangle inequality of ``cost``; with the rounding errors of the prefix sums
    the result is optimal up to those errors.
    """
    literally(kind)
    if n <= 0:
        return
    # ---- REDUCE, level by level going up --------------------------------------------------
    t = 0
    in_start = 0
    in_len = nc
    pos = 0
    while True:
        nt = n >> t
        step = 1 << t
        first = step - 1
        k = 0
        out = pos
        for q in range(in_len):
            if t == 0:
                c = c0 + q
            else:
                c = colbuf[in_start + q]
            # pop while the top of the stack loses to c on its own row; a popped comparison's
            # value A[row(k), c] is the value needed when c is then pushed at position k
            have = False
            vnext = 0.0
            while k > 0:
                r = r0 + first + (k - 1) * step
                v = np.inf
                if c <= r:
                    v = base[c] + cost(kind, tab, aux, c, r)
                if vbuf[k - 1] <= v:
                    break
                k -= 1
                have = True
                vnext = v
            if k < nt:
                if not have:
                    r = r0 + first + k * step
                    vnext = np.inf
                    if c <= r:
                        vnext = base[c] + cost(kind, tab, aux, c, r)
                colbuf[out + k] = c
                vbuf[k] = vnext
                k += 1
        offs[t] = out
        cnts[t] = k
        in_start = out
        in_len = k
        pos = out + k
        if nt == 1:
            break
        t += 1
    # top level: a single row, whose minimum is the one surviving column
    top = r0 + (1 << t) - 1
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
            r = r0 + first + i * step
            if i + 1 < nt:
                stop = kout[r + step]
            else:
                stop = colbuf[last]
            best = np.inf
            arg = colbuf[p]
            while True:
                c = colbuf[p]
                if c <= r:
                    v = base[c] + cost(kind, tab, aux, c, r)
                    if v < best:
                        best = v
                        arg = c
                if c >= stop or p >= last:
                    break
                p += 1
            kout[r] = arg
            fout[r] = best


@jit
def row_minima(kind, tab, aux, base, n, colbuf, vbuf, offs, cnts, fout, kout):
    """All row minima of ``A[j, k] = base[k] + cost(k, j)`` (``k <= j``), ``j, k`` in ``[0, n)``.

    Parameters
    ----------
    kind : int
        The cost (module constants ``ASQ``, ``ACCEL_*``, ``KMEANS``): a compile-time constant
        (``numba.literally``), one compiled specialisation per kind.
    tab : float64 array, shape (>= n, 4), C order
        Prefix table of the cost.
    aux : uint32 array
        Auxiliary array of the cost (e.g. the count map), else any (empty) uint32 array.
    base : float64 array, shape (>= n,)
        Previous DP layer ``F_old``.
    n : int
        Number of rows (targets ``j``) and columns (sources ``k``).
    colbuf, vbuf, offs, cnts : arrays
        Scratch from :func:`workspace`.
    fout : float64 array, shape (>= n,)
        Output ``F_new(j) = min_k A[j, k]`` (must not alias ``base``).
    kout : int64 array, shape (>= n,)
        Output: the smallest minimising ``k`` for every ``j``.

    Notes
    -----
    SMAWK (Aggarwal, Klawe, Moran, Shor, Wilber 1987), iterative: :func:`row_minima_range` on
    the whole matrix.  O(n) time (about 9 n evaluations measured), no allocation.  Relies on the
    quadrangle inequality of ``cost``; with the rounding errors of the prefix sums the result is
    optimal up to those errors.
    """
    literally(kind)
    row_minima_range(kind, tab, aux, base, 0, n, 0, n, colbuf, vbuf, offs, cnts, fout, kout)


@jit_parallel
def row_minima_split(kind, tab, aux, base, n, nparts, colbufs, vbufs, offss, cntss, fout, kout):
    """:func:`row_minima` on ``nparts`` threads: split rows, then independent SMAWKs.

    The last row of every part but the last (a *splitter*) is solved first by a scan of the
    columns between the previous splitter's argmin and itself (O(n) in all: the ranges only
    overlap at their ends).  Leftmost argmins are monotone, so the rows of part ``p`` need only
    the columns between the argmins of splitters ``p - 1`` and ``p``: a submatrix of a totally
    monotone matrix, solved by :func:`row_minima_range` in parallel (``prange``).  About 10%
    more evaluations than one SMAWK; scratch per part from :func:`workspace`
    (``colbufs``/``vbufs``/``offss``/``cntss`` stacked as ``(nparts, ...)``).
    """
    literally(kind)
    size = (n + nparts - 1) // nparts
    kprev = 0
    for p in range(nparts - 1):
        r = min(n, (p + 1) * size) - 1
        best = np.inf
        arg = kprev
        for k in range(kprev, r + 1):
            v = base[k] + cost(kind, tab, aux, k, r)
            if v < best:
                best = v
                arg = k
        fout[r] = best
        kout[r] = arg
        kprev = arg
    for p in prange(nparts):
        r0 = p * size
        if r0 >= n:
            continue
        c0 = kout[r0 - 1] if p > 0 else 0
        if p < nparts - 1:
            nr = min(n, (p + 1) * size) - 1 - r0  # the splitter row is done
            c1 = kout[r0 + nr]
        else:
            nr = n - r0
            c1 = n - 1
        if nr > 0:
            nc = c1 - c0 + 1
            row_minima_range(
                kind, tab, aux, base, r0, nr, c0, nc, colbufs[p], vbufs[p], offss[p], cntss[p], fout, kout
            )


@jit
def row_minima_dc(kind, tab, aux, base, n, lower, fout, kout):
    """Same result as :func:`row_minima` by divide and conquer over rows (no scratch).

    Rows are processed top-down by levels: row ``r`` with ``r + 1`` an odd multiple of ``2^t``
    scans the columns between the argmins of rows ``r - 2^t`` and ``r + 2^t`` (leftmost argmins
    are monotone).  O(n log n) evaluations, independent of each other.
    """
    literally(kind)
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
            if lower.shape[0] > 0 and lower[r] > lo:
                lo = lower[r]
            hi = r
            if r + step < n:
                h2 = kout[r + step]
                if h2 < hi:
                    hi = h2
            best = np.inf
            arg = lo
            for k in range(lo, hi + 1):
                v = base[k] + cost(kind, tab, aux, k, r)
                if v < best:
                    best = v
                    arg = k
            fout[r] = best
            kout[r] = arg
            r += 2 * step


@jit
def column_min(kind, tab, aux, base, j):
    """``min_{k <= j} base[k] + cost(k, j)`` and its smallest argmin (one column, O(j))."""
    literally(kind)
    best = np.inf
    arg = 0
    for k in range(j + 1):
        v = base[k] + cost(kind, tab, aux, k, j)
        if v < best:
            best = v
            arg = k
    return best, arg


@jit
def layered_dp(kind, tab, aux, f0, nlayers, ktab, algo, nparts):
    """Run ``nlayers`` DP layers from ``f0``; return the last layer's value at ``j = n - 1``.

    Parameters
    ----------
    kind, tab, aux : see :func:`row_minima`
    f0 : float64 array, shape (n,)
        First layer; ``n = f0.shape[0]``.  Not modified.
    nlayers : int
        Number of layers to add (>= 0).  Layers ``1 .. nlayers - 1`` are full row-minima passes
        (their argmins go to ``ktab[layer - 1]``); the last one is a single column scan for
        ``j = n - 1`` (its argmin is returned).
    ktab : uint32 array, shape (>= max(nlayers - 1, 0), n)
        Argmin table for the walk back.
    algo : int
        ``SMAWK`` (0) or ``DIVIDE_AND_CONQUER`` (1).
    nparts : int
        SMAWK only: number of row blocks solved in parallel (:func:`row_minima_split`); 1 runs
        the serial :func:`row_minima`.

    Returns
    -------
    value : float
        ``F_{1 + nlayers}(n - 1)`` (``f0[n - 1]`` when ``nlayers == 0``).
    k_last : int
        Argmin of the last layer at ``j = n - 1`` (``n - 1`` when ``nlayers == 0``).

    Notes
    -----
    O(nlayers n) time with SMAWK (O(nlayers n log n) with divide and conquer); memory: two
    float64 rows, an int64 row and the SMAWK scratch (about 48 n bytes) plus ``ktab``.
    """
    literally(kind)
    n = f0.shape[0]
    if nlayers == 0:
        return f0[n - 1], n - 1
    fa = f0.copy()
    fb = np.empty(n, dtype=np.float64)
    kbuf = np.empty(n, dtype=np.int64)
    split = algo == SMAWK and nparts > 1
    colbuf, vbuf, offs, cnts = workspace(n if (algo == SMAWK and not split) else 1)
    np_ = nparts if split else 1
    size = (n + np_ - 1) // np_
    colbufs = np.empty((np_, 2 * size + 64), dtype=np.int64)
    vbufs = np.empty((np_, size), dtype=np.float64)
    offss = np.empty((np_, 64), dtype=np.int64)
    cntss = np.empty((np_, 64), dtype=np.int64)
    lower = np.zeros(n if algo == DIVIDE_AND_CONQUER else 0, dtype=np.int64)
    for layer in range(nlayers - 1):
        if split:
            row_minima_split(kind, tab, aux, fa, n, np_, colbufs, vbufs, offss, cntss, fb, kbuf)
        elif algo == SMAWK:
            row_minima(kind, tab, aux, fa, n, colbuf, vbuf, offs, cnts, fb, kbuf)
        else:
            row_minima_dc(kind, tab, aux, fa, n, lower, fb, kbuf)
        krow = ktab[layer]
        for j in range(n):
            krow[j] = kbuf[j]
        if algo == DIVIDE_AND_CONQUER:
            # K_i(j) <= K_{i+1}(j): this layer's argmins bound the next layer's from below
            lower[:] = kbuf
        tmp = fa
        fa = fb
        fb = tmp
    return column_min(kind, tab, aux, fa, n - 1)
