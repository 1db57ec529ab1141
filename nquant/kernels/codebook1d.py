"""Sorted 1-D codebooks: code each value as the index of a level, decode by table lookup.

Every mode reduces to one primitive, ``code = #{i : x > t[i]}`` over a sorted threshold
table ``t`` of ``K - 1`` values *in the data's dtype*, built once per call from ``levels``
(K <= 256, sorted ascending, finite):

==========  =======================================================================  =============
mode        threshold ``t[i]``                                                       code of x
==========  =======================================================================  =============
nearest     largest representable value <= the exact midpoint (l[i] + l[i+1]) / 2     nearest level;
                                                                                     a tie goes to
                                                                                     the LOWER one
nearest_    as nearest, but strictly below the midpoint when the midpoint is > 0      ties away from
away                                                                                 zero (a tie at
                                                                                     0 goes lower)
floor       largest value < l[i+1]                                                   largest level
                                                                                     <= x; below
                                                                                     l[0] -> 0
ceil        largest value <= l[i]                                                    smallest level
                                                                                     >= x; above
                                                                                     l[K-1] -> K-1
stochastic  the floor table, then ``i + (u < (x - l[i]) / (l[i+1] - l[i]))``         unbiased
==========  =======================================================================  =============

Because the thresholds are rounded *towards* the right side in the data's dtype, the
comparison ``x > t`` is exact: float32 data with float32 levels gets true nearest rounding
(the midpoint of two float32 values is computed exactly in float64, float64 levels through an
error-free sum), with no dependence on how a midpoint happens to round.  (bitsandbytes
compares with midpoints rounded to float32, which can send a value just above an exact
midpoint down; the blockwise NF4 kernels in :mod:`nquant.kernels.blockwise` copy that rule
on purpose for bit identity.)  Stochastic rounding clips values outside [l[0], l[K-1]] to
the end level; ``u`` is ``uniform32(key, gidx)`` for float32 data and ``uniform64`` for
float64, ``gidx = row_index[r] + j``, so codes never depend on the chunking.

The search never scans all K levels per value:

- float32 data: a 65536-entry lookup table indexed by the top 16 bits of the value's
  order-preserving integer key (sign, exponent, 7 mantissa bits: buckets 2**-7 wide in
  relative terms) gives ``#{t < bucket start}``; one or two compares against ``t`` finish the
  count.  Cheap to build per call; used when no bucket holds more than two thresholds.
- otherwise (float64 data, or grids denser than 1/128 relative): a branch-free binary search
  of ``ceil(log2 K)`` fixed steps over ``t`` padded with +inf to a power of two.

On float32 data with NF4's 15 thresholds the lookup table is the fastest of the three
searches tried, ahead of a 15-compare linear count (it vectorizes, but scans every level) and
the fixed-step binary search.  Numba does not vectorize either table search (gathers), so both
run scalar.

NaN and +-inf are counted (the returned int); the code written for them is unspecified.
"""

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, over_rows, prange
from nquant.kernels.rng import uniform32, uniform64
from nquant.kernels.rounding import CEIL, NEAREST, NEAREST_AWAY, STOCHASTIC

__all__ = ["quantize_sorted", "dequantize_table", "quantize_sorted_groups", "dequantize_groups", "CHUNK"]

CHUNK = 16384
"""Elements per parallel task (a row longer than this is split across tasks)."""

LUT_SHIFT = 16
LUT_SIZE = 1 << (32 - LUT_SHIFT)
MAX_CORRECTIONS = 2
_SIGN32 = np.int32(-2147483648)
_TOP = np.uint32(0x80000000)
_LOW31 = np.uint32(0x7FFFFFFF)


# ---------------------------------------------------------------------------------------
# threshold tables
# ---------------------------------------------------------------------------------------
@jit
def _round_below(s, err, strict, tmp):
    """Largest value of ``tmp.dtype`` that is <= (``strict``: <) the exact number ``s + err``.

    ``s`` float64, ``|err| <= ulp(s)/2``; ``tmp`` is a 1-element scratch array of the target dtype.
    """
    tmp[0] = s
    t = tmp[0]
    while True:
        tf = np.float64(t)
        if tf < s or (tf == s and (err > 0.0 or (err == 0.0 and not strict))):
            return t
        tmp[0] = np.nextafter(t, tmp[1])
        t = tmp[0]


@jit
def fill_thresholds(levels, mode, thr):
    """Write the K-1 thresholds of ``mode`` into ``thr[:K-1]`` and +inf into the rest.

    ``thr`` has the data's dtype; ``mode`` is NEAREST, NEAREST_AWAY, FLOOR, CEIL or
    STOCHASTIC (which uses FLOOR's table).
    """
    K = levels.shape[0]
    tmp = np.empty(2, thr.dtype)
    tmp[1] = -np.inf
    for i in range(K - 1):
        lo = np.float64(levels[i])
        hi = np.float64(levels[i + 1])
        if mode == NEAREST or mode == NEAREST_AWAY:
            a = lo * 0.5
            b = hi * 0.5
            s = a + b
            bb = s - a
            err = (a - (s - bb)) + (b - bb)  # s + err == (lo + hi) / 2 exactly
            strict = mode == NEAREST_AWAY and (s > 0.0 or (s == 0.0 and err > 0.0))
            thr[i] = _round_below(s, err, strict, tmp)
        elif mode == CEIL:
            thr[i] = _round_below(lo, 0.0, False, tmp)
        else:  # FLOOR, STOCHASTIC
            thr[i] = _round_below(hi, 0.0, True, tmp)
    for i in range(K - 1, thr.shape[0]):
        thr[i] = np.inf


@jit
def _float_of_key(u):
    """Inverse of the order-preserving key: uint32 key -> float32 value."""
    if u & _TOP:
        return np.uint32(u & _LOW31).view(np.float32)
    return np.uint32(~u).view(np.float32)


@jit
def _key(v):
    """Order-preserving uint32 key of a float32 (negative values reversed, sign bit flipped)."""
    s = np.float32(v).view(np.int32)
    return np.uint32(s ^ ((s >> np.int32(31)) | _SIGN32))


@jit
def build_lut32(thr, n_thr, lut):
    """Bucket table for float32 search: ``lut[k] = #{t < smallest value of bucket k}``.

    Parameters
    ----------
    thr : ndarray of shape (>= n_thr,), float32, sorted (the first ``n_thr`` are real)
    n_thr : int
    lut : ndarray of shape (65536,), uint8, written

    Returns
    -------
    int
        The most thresholds any bucket holds, i.e. the number of compares
        ``c += x > thr[c]`` that complete ``lut[key(x) >> 16]`` to the exact count.
    """
    p = 0
    q = 0
    worst = 0
    for k in range(LUT_SIZE):
        lo = _float_of_key(np.uint32(k) << np.uint32(LUT_SHIFT))
        hi = _float_of_key((np.uint32(k) << np.uint32(LUT_SHIFT)) | np.uint32(LUT_SIZE - 1))
        while p < n_thr and thr[p] < lo:  # NaN lo (NaN buckets) leaves p as is
            p += 1
        if q < p:
            q = p
        while q < n_thr and thr[q] <= hi:
            q += 1
        lut[k] = p
        if q - p > worst:
            worst = q - p
    return worst


# ---------------------------------------------------------------------------------------
# searches (one value)
# ---------------------------------------------------------------------------------------
@jit(inline="always")
def search_lut(v, lut, thr, nc):
    """#{thr < v} from the lookup table ``lut`` of :func:`build_lut32` and at most ``nc`` compares."""
    c = np.uint32(lut[_key(v) >> np.uint32(LUT_SHIFT)])  # unsigned: no negative-index wrap
    c += np.uint32(v > thr[c])
    if nc > 1:
        c += np.uint32(v > thr[c])
    return np.int64(c)


@jit(inline="always")
def search_binary(v, table, nsteps):
    """#{table < v} for ``table`` of 2**nsteps entries, sorted, +inf padded (the last unused)."""
    c = np.int64(0)
    step = np.int64(1) << nsteps
    for _ in range(nsteps):
        step >>= 1
        c += step * (v > table[c + step - 1])
    return c


@jit(inline="always")
def _stochastic_code(v, i, levels, n_levels, key, gidx):
    """Floor index ``i`` -> ``i`` or ``i + 1`` with P(up) = (v - l[i]) / (l[i+1] - l[i])."""
    if i >= n_levels - 1:
        return i
    a = levels[i]
    b = levels[i + 1]
    if isinstance(v, np.float32):
        u = uniform32(key, gidx)
        p = (v - np.float32(a)) / (np.float32(b) - np.float32(a))
    else:
        u = uniform64(key, gidx)
        p = (v - np.float64(a)) / (np.float64(b) - np.float64(a))
    return i + (u < p)


@jit
def _encode_span(x2d, row_index, levels, mode, key, out, r, j0, j1, lut, thr, nc, table, nsteps):
    """Code ``x2d[r, j0:j1]`` into ``out``; return the number of NaN/inf seen."""
    xs = x2d[r, j0:j1]
    os = out[r, j0:j1]
    K = levels.shape[0]
    bad = 0
    base = row_index[r] + j0
    if mode == STOCHASTIC:
        for j in range(xs.shape[0]):
            v = xs[j]
            bad += not (v - v == 0)
            if nc >= 0:
                i = search_lut(v, lut, thr, nc)
            else:
                i = search_binary(v, table, nsteps)
            os[j] = _stochastic_code(v, i, levels, K, key, base + j)
    elif nc >= 0:
        if nc > 1:
            for j in range(xs.shape[0]):
                v = xs[j]
                bad += not (v - v == 0)
                os[j] = search_lut(v, lut, thr, 2)
        else:
            for j in range(xs.shape[0]):
                v = xs[j]
                bad += not (v - v == 0)
                os[j] = search_lut(v, lut, thr, 1)
    else:
        for j in range(xs.shape[0]):
            v = xs[j]
            bad += not (v - v == 0)
            os[j] = search_binary(v, table, nsteps)
    return bad


@jit_parallel
def quantize_sorted(x2d, row_index, levels, mode, key, out):
    """Code every value as an index into the sorted codebook ``levels``.

    Parameters
    ----------
    x2d : ndarray of shape (R, L), float32 or float64, C-contiguous (may be read-only)
    row_index : ndarray of shape (R,), int64
        Global flat index of each row's first element (feeds the stochastic stream).
    levels : ndarray of shape (K,), float32 or float64, 1 <= K <= 256
        Sorted ascending, finite, distinct.
    mode : int
        ``rounding.NEAREST`` (ties to the lower level), ``NEAREST_AWAY`` (ties away from
        zero), ``FLOOR``, ``CEIL`` or ``STOCHASTIC``; see the module docstring.
    key : numpy.uint64
        ``rng.seed_key(seed)`` (used by ``STOCHASTIC`` only; a ``np.uint64``: a Python int
        above 2**63 does not fit Numba's int64).
    out : ndarray of shape (R, L), uint8, written

    Returns
    -------
    int
        Number of NaN/inf inputs (their codes are unspecified).
    """
    R, L = x2d.shape
    K = levels.shape[0]
    n_thr = K - 1
    nsteps = 0
    while (1 << nsteps) < K:
        nsteps += 1
    size = max(1 << nsteps, n_thr + MAX_CORRECTIONS + 1)
    thr = np.empty(size, x2d.dtype)
    fill_thresholds(levels, mode, thr)
    lut = np.zeros(LUT_SIZE if x2d.itemsize == 4 else 1, np.uint8)
    nc = -1
    if x2d.itemsize == 4:
        worst = build_lut32(thr, n_thr, lut)
        if worst <= MAX_CORRECTIONS:
            nc = worst
    per_row = (L + CHUNK - 1) // CHUNK
    ntask = R * per_row
    bad = np.zeros(ntask, np.int64)
    for t in prange(ntask):
        r = t // per_row
        j0 = (t - r * per_row) * CHUNK
        j1 = min(L, j0 + CHUNK)
        bad[t] = _encode_span(x2d, row_index, levels, mode, key, out, r, j0, j1,
                              lut, thr, nc, thr, nsteps)
    return bad.sum()


@jit
def _decode_span(codes2d, levels, out, r, j0, j1):
    cs = codes2d[r, j0:j1]
    os = out[r, j0:j1]
    for j in range(cs.shape[0]):
        os[j] = levels[cs[j]]


@jit
def _decode_spans(t0, t1, codes2d, levels, out):
    """Spans ``[t0, t1)`` of :func:`dequantize_table`."""
    L = codes2d.shape[1]
    per_row = (L + CHUNK - 1) // CHUNK
    for t in range(t0, t1):
        r = t // per_row
        j0 = (t - r * per_row) * CHUNK
        _decode_span(codes2d, levels, out, r, j0, min(L, j0 + CHUNK))
    return 0


def dequantize_table(codes2d, levels, out):
    """Decode codes by table lookup: ``out[r, j] = levels[codes2d[r, j]]``.

    Parameters
    ----------
    codes2d : ndarray of shape (R, L), uint8, each < K
    levels : ndarray of shape (K,), float32 or float64
    out : ndarray of shape (R, L), float32 or float64, written (values cast to its dtype)
    """
    R, L = codes2d.shape
    over_rows(_decode_spans, R * ((L + CHUNK - 1) // CHUNK), min(L, CHUNK), codes2d, levels, out)


# ---------------------------------------------------------------------------------------
# one codebook per parameter group (per-row / per-channel levels)
# ---------------------------------------------------------------------------------------
@jit
def _group_thresholds(levels2d, n_levels, mode, dtype_like):
    """Threshold tables (G, 2**nsteps) in the data's dtype, +inf padded, and ``nsteps``."""
    G = levels2d.shape[0]
    kmax = 1
    for g in range(G):
        kmax = max(kmax, n_levels[g])
    nsteps = 0
    while (1 << nsteps) < kmax:
        nsteps += 1
    thr = np.empty((G, 1 << nsteps), dtype_like.dtype)
    for g in range(G):
        fill_thresholds(levels2d[g, :n_levels[g]], mode, thr[g])
    return thr, nsteps


@jit_parallel
def quantize_sorted_groups(x2d, row_index, row_group, col_step, levels2d, n_levels, mode, key, out):
    """:func:`quantize_sorted` with one sorted codebook per parameter group.

    Parameters
    ----------
    x2d : ndarray of shape (R, L), float32 or float64, C-contiguous (may be read-only)
    row_index : ndarray of shape (R,), int64, global flat index of each row's first element
    row_group : ndarray of shape (R,), int64
        Group of row ``r`` (``col_step = 0``) or of its column 0 (``col_step = 1``: column ``j``
        uses group ``row_group[r] + j``), as ``nquant._layout`` lays a chunk out.
    col_step : int, 0 or 1
    levels2d : ndarray of shape (G, K), float32 or float64
        Row ``g``: group ``g``'s levels, sorted ascending, the first ``n_levels[g]`` distinct.
    n_levels : ndarray of shape (G,), int64, each in 1..K
    mode, key, out : as :func:`quantize_sorted`

    Returns
    -------
    int
        Number of NaN/inf inputs.

    Notes
    -----
    Fixed-step binary search over each group's thresholds (no lookup table: building one per
    group costs more than it saves); the code of a value is the same as :func:`quantize_sorted` with that
    group's levels gives.
    """
    R, L = x2d.shape
    thr, nsteps = _group_thresholds(levels2d, n_levels, mode, x2d[:0, :0])
    per_row = (L + CHUNK - 1) // CHUNK
    ntask = R * per_row
    bad = np.zeros(ntask, np.int64)
    for t in prange(ntask):
        r = t // per_row
        j0 = (t - r * per_row) * CHUNK
        j1 = min(L, j0 + CHUNK)
        xs = x2d[r, j0:j1]
        os = out[r, j0:j1]
        base = row_index[r] + j0
        g0 = row_group[r] + col_step * j0
        nb = 0
        for j in range(xs.shape[0]):
            v = xs[j]
            nb += not (v - v == 0)
            g = g0 + col_step * j
            i = search_binary(v, thr[g], nsteps)
            if mode == STOCHASTIC:
                os[j] = _stochastic_code(v, i, levels2d[g], n_levels[g], key, base + j)
            else:
                os[j] = i
        bad[t] = nb
    return bad.sum()


@jit_parallel
def dequantize_groups(codes2d, row_group, col_step, levels2d, out):
    """Decode with one table per group: ``out[r, j] = levels2d[row_group[r] + col_step * j, codes2d[r, j]]``.

    Parameters
    ----------
    codes2d : ndarray of shape (R, L), uint8
    row_group : ndarray of shape (R,), int64; col_step : int, 0 or 1 (see
        :func:`quantize_sorted_groups`)
    levels2d : ndarray of shape (G, K), float32 or float64, codes < K
    out : ndarray of shape (R, L), float32 or float64, written
    """
    R, L = codes2d.shape
    per_row = (L + CHUNK - 1) // CHUNK
    for t in prange(R * per_row):
        r = t // per_row
        j0 = (t - r * per_row) * CHUNK
        j1 = min(L, j0 + CHUNK)
        g0 = row_group[r] + col_step * j0
        for j in range(j0, j1):
            out[r, j] = levels2d[g0 + col_step * (j - j0), codes2d[r, j]]
