"""Adaptive stochastic quantization (ASQ): optimal and approximate level sets.

Given ``x`` (d values, optional weights ``w >= 0``) and a number of levels ``s``, find the
values ``Q`` (``|Q| = s``, ``Q[0] = min x``, ``Q[-1] = max x``) that minimise the variance of
unbiased stochastic rounding to ``Q``::

    objective(Q) = sum_i w_i (b_i - x_i)(x_i - a_i),    a_i = max{q <= x_i},  b_i = min{q >= x_i}
    vNMSE(Q)     = objective(Q) / sum_i w_i x_i^2

(Ben Basat, Ben-Itzhak, Mitzenmacher, Vargaftik, "Optimal and Approximate Adaptive Stochastic
Quantization", NeurIPS 2024; notation and pitfalls in ``shared/QUIVER.md``).

Methods of :func:`solve`
------------------------
``"quiver"`` (default)
    Exact: SMAWK per DP layer, O(s n) time and memory after sorting (n = number of distinct
    values).
``"quiver_accel"``
    Exact: two levels per layer with the closed-form middle value, ``floor(s/2) - 1`` layers.
``"zipml"``
    Exact: ZipML's O(s n^2) DP (with O(1) prefix-sum costs, O(s n) memory).  A reference; use
    for n up to a few thousand.
``"quiver_approx"``
    Approximate QUIVER: the levels are restricted to a grid of ``m + 1`` points (``m`` intervals,
    the paper's convention; all ``m + 1`` points are kept, empty cells included), O(d + s m),
    no sort.  Guarantee for the uniform grid (Lemma 6.1): with ``2 s - 2`` levels its objective
    is at most ``opt_s + W (max x - min x)^2 / (4 m^2)`` (``W`` = total weight, ``d`` unweighted).

Robustness
----------
- ``x`` may have any shape (it is flattened in C order) and any order: the exact methods sort
  it, after an O(d) check that skips the sort when ``x`` is already non-decreasing.
- Duplicates are merged into (value, count) pairs and the weighted DP is run on the distinct
  values; constant vectors, ``d = 1``, ``d < s`` and fewer distinct values than ``s`` give
  objective 0 with the distinct values repeated so that exactly ``s`` sorted values are returned.
- The prefix sums are centred at the weighted mean and accumulated in float64, so an offset
  such as ``1e7 + N(0, 1)`` gives the optimum of the centred problem.
- NaN/inf in ``x`` or ``weights`` -> :class:`~nquant.errors.InputError`; ``s < 2`` or a bad
  ``method``/``m``/``grid`` -> :class:`~nquant.errors.SchemeError`; an exact solve whose tables
  would exceed ``max_memory`` fails before allocating with a :class:`~nquant.errors.SchemeError`
  that says how much it needs.

Chunked (Dask) use of approximate QUIVER
----------------------------------------
Pass 1: ``lo, hi = approx_range(chunk)`` per chunk, reduced with min/max.  Pass 2:
``stats = approx_partial(chunk, lo, hi, m)`` per chunk, reduced with :func:`approx_merge`
(associative and commutative: elementwise sums), then ``approx_finalize(stats, s)``.  Pure
NumPy/Numba; this module never imports Dask.
"""

import math
import os
from typing import NamedTuple

import numba
import numpy as np
from numpy.typing import ArrayLike

from nquant import limits
from nquant.errors import InputError, SchemeError
from nquant.kernels import asq_dp as _k

__all__ = [
    "ASQResult",
    "ApproxStats",
    "METHODS",
    "GRIDS",
    "DEFAULT_M",
    "solve",
    "objective",
    "vnmse",
    "exact_memory",
    "approx_edges",
    "approx_range",
    "approx_partial",
    "approx_merge",
    "approx_finalize",
    "uniform_edges",
    "solve_rows",
    "row_tables",
    "merge_tables",
    "solve_tables",
    "rows_partial",
    "rows_finalize",
]

METHODS = ("zipml", "quiver", "quiver_accel", "quiver_approx")
GRIDS = ("uniform", "adaptive")
DEFAULT_M = 1000
"""Default number of grid intervals of ``quiver_approx`` (the paper finds m >= 400 near-optimal)."""

_ALGOS = {"smawk": _k.SMAWK, "dc": _k.DIVIDE_AND_CONQUER}


class ASQResult(NamedTuple):
    """Result of :func:`solve`.

    Attributes
    ----------
    levels : float64 ndarray, shape (s,)
        Sorted ascending; ``levels[0] = min x``, ``levels[-1] = max x``; values repeat when fewer
        than ``s`` distinct levels help.
    objective : float
        Sum of the rounding variances ``sum w (b - x)(x - a)`` (>= 0).
    vnmse : float
        ``objective / sum w x^2`` (0 when both are 0).
    """

    levels: np.ndarray
    objective: float
    vnmse: float


class ApproxStats(NamedTuple):
    """Mergeable statistics of approximate QUIVER over a fixed grid.

    Attributes
    ----------
    edges : float64 ndarray, shape (m + 1,)
        Grid points ``e_0 = lo <= ... <= e_m = hi``; cell ``l`` is ``[e_l, e_{l+1})`` (the last
        one closed).
    hist : float64 ndarray, shape (m, 3)
        Per cell: ``(sum w, sum w (x - e_l), sum w (x - e_l)^2)``, i.e. sums relative to the
        cell's left edge (small, numerically stable).
    norm2 : float
        ``sum w x^2`` (for vNMSE).

    Merging two stats over the same ``edges`` adds ``hist`` and ``norm2`` elementwise.
    """

    edges: np.ndarray
    hist: np.ndarray
    norm2: float


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------


def _check_s(s):
    if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)):
        raise SchemeError(f"s={s!r}: the number of levels must be an integer >= 2")
    s = int(s)
    if s < 2:
        raise SchemeError(f"s={s}: the number of levels must be an integer >= 2")
    limits.check_count("s", s, limits.MAX_LEVELS)
    return s


def _check_m(m, s=2, groups=1):
    """``m`` (default :data:`DEFAULT_M`), checked against ``limits.MAX_GRID`` and, before anything
    is allocated, against the memory of ``groups`` histograms of ``m`` cells and of the DP over
    its ``m + 1`` points with ``s`` levels."""
    if m is None:
        m = DEFAULT_M
    if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)) or int(m) < 1:
        raise SchemeError(f"m={m!r}: the number of grid intervals must be an integer >= 1")
    m = int(m)
    limits.check_count("m", m, limits.MAX_GRID)
    limits.check_memory("m", m, 24 * m * groups + exact_memory(m + 1, s))
    return m


def as_data(x, name="x", allow_float32=False):
    """Flattened, C-contiguous float64 (or float32) copy-or-view of ``x``, validated finite."""
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {a.dtype}; a real numeric array is required")
    if a.size == 0:
        raise InputError(f"{name} is empty (size 0); at least one value is required")
    if allow_float32 and a.dtype == np.float32:
        a = np.ascontiguousarray(a.reshape(-1))
    else:
        a = np.ascontiguousarray(a.reshape(-1), dtype=np.float64)
    lo, hi, bad = _k.scan_range(a)
    if bad >= 0:
        raise InputError(
            f"{name} contains a non-finite value {float(a[bad])!r} at flat index {bad}; "
            "finite values are required"
        )
    return a, float(lo), float(hi)


def as_weights(weights, x_shape, d):
    """Weights matching ``x`` (``d`` values of shape ``x_shape``) as float64, finite, >= 0, not all 0."""
    if weights is None:
        return None
    w = np.asarray(weights)
    if w.dtype.kind not in "biuf":
        raise InputError(f"weights has dtype {w.dtype}; a real numeric array is required")
    if w.size != d or (w.ndim > 1 and w.shape != tuple(x_shape)):
        raise InputError(f"weights has shape {w.shape}; it must match x (shape {tuple(x_shape)})")
    w = np.ascontiguousarray(w.reshape(-1), dtype=np.float64)
    lo, _hi, bad = _k.scan_range(w)
    if bad >= 0:
        raise InputError(f"weights contains a non-finite value {float(w[bad])!r} at flat index {bad}")
    if lo < 0:
        i = int(np.argmax(w < 0))
        raise InputError(f"weights[{i}]={float(w[i])!r} is negative; weights must be >= 0")
    if not (w.sum() > 0):
        raise InputError("weights sum to 0; at least one weight must be positive")
    return w


def sorted_data(a, w):
    """Sort ``a`` (and ``w``) unless already sorted: O(d) check, O(d log d) otherwise."""
    if _k.is_sorted(a):
        return a, w
    if w is None:
        return np.sort(a, kind="stable"), None
    order = np.argsort(a, kind="stable")
    return a[order], w[order]


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 << 30


def exact_memory(n, s, method="quiver", d=None):
    """Estimated peak bytes of an exact solve on ``n`` distinct values (``d`` values in all).

    Parameters
    ----------
    n : int
        Number of distinct values.
    s : int
        Number of levels.
    method : {"quiver", "quiver_accel", "zipml"}
    d : int, optional
        Number of values before deduplication (default ``n``).

    Returns
    -------
    int
        Argmin table (uint32: ``4 (s - 3) n``; ``4 (s/2 - 2) n`` for ``quiver_accel``;
        ``4 (s - 2) n`` for ``zipml``) + prefix tables ``64 n`` + DP rows and SMAWK scratch
        ``80 n`` + sort/dedup copies ``8 d + 16 n`` (+ ``4 d`` count map for ``quiver_accel``).
    """
    d = n if d is None else d
    if method == "quiver_accel":
        layers = max(s // 2 - 2, 0)
        extra = 4 * d
    elif method == "zipml":
        layers = max(s - 2, 0)
        extra = 0
    else:
        layers = max(s - 3, 0)
        extra = 0
    return 4 * layers * n + (32 + 32 + 80 + 16) * n + 8 * d + extra


def check_memory(n, s, method, d, max_memory, label=None):
    """Refuse an exact DP on ``n`` distinct values whose tables would exceed ``max_memory``."""
    if n >= 2**32 - 1:
        raise InputError(f"x has {n} distinct values; at most 2**32 - 2 are supported (uint32 indices)")
    limit = _physical_memory() // 2 if max_memory is None else int(max_memory)
    need = exact_memory(n, s, method, d)
    if need > limit:
        what = label or f"method={method!r} with s={s}"
        raise SchemeError(
            f"{what} on {n} distinct values needs about {need / 2**30:.2f} GiB "
            f"(argmin table of {(s - 2) * n} entries), more than max_memory={limit / 2**30:.2f} GiB; "
            "use method='quiver_approx', a smaller s, or raise max_memory"
            if label is None
            else f"{what} on {n} distinct values needs about {need / 2**30:.2f} GiB, "
            f"more than max_memory={limit / 2**30:.2f} GiB; use a smaller k or raise max_memory"
        )


DP_PARALLEL_MIN = 1 << 16
"""Below this many distinct values a DP layer runs serially (a parallel region costs more)."""


def dp_threads(n):
    """Row blocks per SMAWK layer for ``n`` distinct values: the Numba thread count of the
    calling thread (1 below :data:`DP_PARALLEL_MIN`)."""
    return 1 if n < DP_PARALLEL_MIN else max(1, numba.get_num_threads())


def _repeat_levels(vals, s):
    """``vals`` (<= s sorted distinct values) padded to ``s`` entries by repeating the maximum."""
    out = np.empty(s, dtype=np.float64)
    out[: vals.size] = vals
    out[vals.size :] = vals[-1]
    return out


def _vnmse(obj, norm2):
    if norm2 > 0:
        return float(obj / norm2)
    return 0.0 if obj == 0 else math.inf


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def solve(x: ArrayLike, s: int, method: str = "quiver", m: int | None = None, weights: ArrayLike | None = None,
          grid: str = "uniform", *, max_memory: int | None = None, algorithm: str = "smawk") -> ASQResult:
    """Optimal (or approximate) adaptive stochastic quantization levels.

    Parameters
    ----------
    x : array_like, any shape, real numeric
        The data (flattened in C order).  float32 is kept for ``quiver_approx`` and cast to
        float64 otherwise; all sums are float64.
    s : int
        Number of levels, ``>= 2``.
    method : {"quiver", "quiver_accel", "zipml", "quiver_approx"}
        See the module docstring.
    m : int, optional
        ``quiver_approx`` only: number of grid intervals (``m + 1`` candidate points, all kept);
        default :data:`DEFAULT_M`.
    weights : array_like, optional
        Non-negative finite weights, same shape as ``x`` (a value with weight ``w`` counts as
        ``w`` copies).  ``quiver_accel`` with weights finds its middle value by binary search
        (O(log n) per evaluation).
    grid : {"uniform", "adaptive"}
        ``quiver_approx`` only.  ``"uniform"``: the paper's grid ``min x + l (max x - min x) / m``
        (Lemma 6.1 holds).  ``"adaptive"``: for heavy-tailed data, where a uniform grid puts
        almost every value in its first cell: the union of the uniform grid with ``m // 2``
        intervals and the grid of weighted quantiles ``l / (m - m // 2)`` of a seeded subsample
        of ``64 (m + 1)`` values (at most ``m + 1`` points; it contains the uniform ``m // 2``
        grid, so Lemma 6.1 holds with ``m // 2`` in place of ``m``).  A pure quantile grid is
        *not* offered: the ASQ objective is dominated by the wide gaps in the tail, which a
        quantile grid leaves to one huge last cell.  Measured (d = 2^20, m = 400, seed 0; vNMSE
        of uniform / quantile-only / adaptive grid vs the exact optimum):

        ================  ==  =======  ========  ========  ========
        data              s   uniform  quantile  adaptive  optimum
        ================  ==  =======  ========  ========  ========
        LogNormal(0, 2)   8   0.18191  5.48484   0.17837   0.17762
        LogNormal(0, 2)   16  0.06581  5.47853   0.03371   0.03237
        Pareto(1.5) + 1   8   0.16386  6.01736   0.13087   0.13041
        Pareto(1.5) + 1   16  0.09024  6.01545   0.02064   0.01989
        LogNormal(0, 1)   16  0.02064  0.23392   0.02037   0.02031
        Normal(0, 1)      16  0.02523  0.02531   0.02523   0.02520
        ================  ==  =======  ========  ========  ========

        i.e. at s = 16 the uniform grid is 2.0x (LogNormal(0, 2)) and 4.5x (Pareto) above the
        optimum, the adaptive grid 4% above, and no worse on light tails.  For chunked data the
        adaptive grid needs a sample first: compute ``edges = approx_edges(lo, hi, m,
        "adaptive", sample=...)`` and pass them to :func:`approx_partial`.
    max_memory : int, optional
        Byte limit of the exact methods' tables (default: half the physical memory); see
        :func:`exact_memory`.
    algorithm : {"smawk", "dc"}
        Row-minima algorithm of the ``quiver`` / ``quiver_accel`` layers: SMAWK (O(n) per
        layer, default) or divide and conquer (O(n log n) per layer, no scratch).

    Returns
    -------
    ASQResult
        ``(levels, objective, vnmse)``; ``levels`` float64 of shape ``(s,)``, sorted, with
        ``levels[0] = min x`` and ``levels[-1] = max x`` (exact methods: values of ``x``;
        ``quiver_approx``: grid points).  The exact methods compute ``objective`` directly from
        the levels (no prefix-sum cancellation); ``quiver_approx`` reports the DP value over its
        grid, which is the exact sum of variances up to rounding.

    Notes
    -----
    Time: ``quiver`` O(d log d + s n) (O(d + s n) when ``x`` is sorted); ``quiver_accel`` the
    same with half the layers (each evaluation costs more; measured slower than ``quiver`` for
    even ``s``); ``zipml`` O(s n^2); ``quiver_approx`` O(d + s m) (O(d log m) for
    the adaptive grid).  Memory: see :func:`exact_memory`; ``quiver_approx`` O(m) beyond the
    input (plus ``threads x m x 3`` float64 of histogram scratch).  Parallelism: above
    :data:`DP_PARALLEL_MIN` distinct values every SMAWK layer is split into one row block per
    Numba thread (``numba.set_num_threads`` limits it); the range, histogram and objective passes
    are parallel above ``nquant.kernels.asq_dp.PARALLEL_MIN`` values.

    Examples
    --------
    >>> r = solve([0.0, 1.0, 2.0, 10.0], 3)
    >>> r.levels.tolist(), r.objective
    ([0.0, 2.0, 10.0], 1.0)
    """
    s = _check_s(s)
    if method not in METHODS:
        raise SchemeError(f"method={method!r} is not one of {', '.join(map(repr, METHODS))}")
    if algorithm not in _ALGOS:
        raise SchemeError(f"algorithm={algorithm!r} is not one of 'smawk', 'dc'")
    if method == "quiver_approx":
        m = _check_m(m, s)
        if grid not in GRIDS:
            raise SchemeError(f"grid={grid!r} is not one of {', '.join(map(repr, GRIDS))}")
        return _solve_approx(x, s, m, weights, grid)
    if m is not None:
        raise SchemeError(f"m={m!r} applies to method='quiver_approx' only (method={method!r})")
    if grid != "uniform":
        raise SchemeError(f"grid={grid!r} applies to method='quiver_approx' only (method={method!r})")
    x_shape = np.shape(x)
    a, _lo, _hi = as_data(x)
    w = as_weights(weights, x_shape, a.size)
    a, w = sorted_data(a, w)
    vals, wts = _k.dedup_sorted(a, np.empty(0) if w is None else w)
    # |x| > 1e154 overflows the norm: vNMSE is then 0, the levels (data points) are unaffected
    with np.errstate(over="ignore", invalid="ignore"):
        norm2 = float(np.dot(wts, vals * vals))
    n = vals.size
    if n <= s:
        return ASQResult(_repeat_levels(vals, s), 0.0, 0.0)
    check_memory(n, s, method, a.size, max_memory)
    tab, _centre = _k.build_table(vals, wts)
    algo = _ALGOS[algorithm]
    nparts = dp_threads(n)
    if method == "zipml":
        idx, _ = _k.zipml(tab, s)
    elif method == "quiver":
        idx, _ = _k.quiver_exact(tab, s, algo, nparts)
    elif w is None and n == a.size:
        idx, _ = _k.quiver_accel_unit(tab, s, algo, nparts)
    elif w is None:
        idx, _ = _k.quiver_accel_map(tab, _k.count_map(wts, a.size), s, algo, nparts)
    else:
        idx, _ = _k.quiver_accel_search(tab, s, algo, nparts)
    levels = vals[idx]
    obj = float(_k.objective_sorted_levels(vals, wts, levels))
    return ASQResult(levels, obj, _vnmse(obj, norm2))


def _solve_approx(x, s, m, weights, grid):
    x_shape = np.shape(x)
    a, lo, hi = as_data(x, allow_float32=True)
    w = as_weights(weights, x_shape, a.size)
    if lo == hi:
        return ASQResult(np.full(s, lo), 0.0, 0.0)
    edges = approx_edges(lo, hi, m, grid, sample=a if grid == "adaptive" else None, sample_weights=w)
    stats, _outside = _partial(a, w, edges, grid == "uniform")
    levels, obj = _finalize(stats, s)
    return ASQResult(levels, obj, _vnmse(obj, stats.norm2))


def objective(x, levels, weights=None):
    """Sum of the unbiased-rounding variances ``sum w (b - x)(x - a)`` for a level set.

    Parameters
    ----------
    x : array_like, any shape
        Finite data.
    levels : array_like, shape (s,)
        Finite levels in any order (sorted internally); must cover ``[min x, max x]``.
    weights : array_like, optional
        Non-negative weights, same shape as ``x``.

    Returns
    -------
    float

    Raises
    ------
    InputError
        Non-finite data or levels, or levels that do not cover ``x``.

    Notes
    -----
    O(d log s), parallel; each term from direct differences (accurate for offset data).
    """
    x_shape = np.shape(x)
    a, lo, hi = as_data(x, allow_float32=True)
    q, qlo, qhi = as_data(levels, name="levels")
    w = as_weights(weights, x_shape, a.size)
    if qlo > lo or qhi < hi:
        raise InputError(
            f"levels span [{qlo!r}, {qhi!r}] but x spans [{lo!r}, {hi!r}]; "
            "the levels must cover min(x) and max(x)"
        )
    q = np.sort(q)
    return float(_k.objective_sorted_levels(a, np.empty(0) if w is None else w, q))


def vnmse(x, levels, weights=None):
    """``objective(x, levels, weights) / sum w x^2`` (0 when both are 0); see :func:`objective`."""
    obj = objective(x, levels, weights)
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if weights is None:
        norm2 = float(np.dot(a, a))
    else:
        norm2 = float(np.dot(np.asarray(weights, dtype=np.float64).reshape(-1), a * a))
    return _vnmse(obj, norm2)


# ----------------------------------------------------------------------------------------------
# approximate QUIVER as mergeable statistics
# ----------------------------------------------------------------------------------------------


def approx_edges(lo, hi, m, grid="uniform", sample=None, sample_weights=None):
    """Grid points of approximate QUIVER.

    Parameters
    ----------
    lo, hi : float
        Global minimum and maximum of the data (finite, ``lo <= hi``).
    m : int
        Number of intervals; ``m + 1`` points are returned.
    grid : {"uniform", "adaptive"}
        ``"uniform"``: ``lo + (hi - lo) * (l / m)`` with the last point exactly ``hi``.
        ``"adaptive"``: the union of the uniform grid with ``m // 2`` intervals and the weighted
        quantiles ``l / (m - m // 2)`` of ``sample`` (a seeded subsample of at most
        ``64 (m + 1)`` of its values); at most ``m + 1`` distinct points (see :func:`solve`).
    sample, sample_weights : array_like, optional
        Data (and weights) for the adaptive grid.

    Returns
    -------
    float64 ndarray, shape (m + 1,) for ``"uniform"`` (non-decreasing), at most ``m + 1``
    strictly increasing points for ``"adaptive"``; first point ``lo``, last ``hi``.
    """
    m = _check_m(m)
    lo = float(lo)
    hi = float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise InputError(f"lo={lo!r}, hi={hi!r}: a finite range with lo <= hi is required")
    if grid == "uniform":
        return uniform_edges(np.array([lo]), np.array([hi]), m)[0]
    if grid == "adaptive":
        if sample is None:
            raise SchemeError("grid='adaptive' needs a sample of the data (sample=...)")
        mu = max(m // 2, 1)
        mq = max(m - mu, 1)
        smp = np.asarray(sample).reshape(-1).astype(np.float64, copy=False)
        sw = None if sample_weights is None else np.asarray(sample_weights, dtype=np.float64).reshape(-1)
        cap = 64 * (m + 1)
        if smp.size > cap:
            pick = np.random.default_rng(0).integers(0, smp.size, size=cap)
            smp = smp[pick]
            sw = None if sw is None else sw[pick]
        order = np.argsort(smp, kind="stable")
        smp = smp[order]
        cw = np.cumsum(np.ones(smp.size) if sw is None else sw[order])
        if cw[-1] <= 0:
            cw = np.arange(1, smp.size + 1, dtype=np.float64)
        targets = np.arange(mq + 1, dtype=np.float64) / mq * cw[-1]
        pos = np.minimum(np.searchsorted(cw, targets, side="left"), smp.size - 1)
        uni = lo + (hi - lo) * (np.arange(mu + 1, dtype=np.float64) / mu)
        uni[-1] = hi
        e = np.union1d(uni, np.clip(smp[pos], lo, hi))
        e[0] = lo
        e[-1] = hi
        return e
    raise SchemeError(f"grid={grid!r} is not one of {', '.join(map(repr, GRIDS))}")


def uniform_edges(lo, hi, m):
    """Uniform grids of several ranges at once: row ``g`` is ``approx_edges(lo[g], hi[g], m)``.

    Parameters
    ----------
    lo, hi : float64 arrays, shape (G,), finite, ``lo <= hi``
    m : int, number of intervals

    Returns
    -------
    float64 ndarray, shape (G, m + 1)
        ``lo + (hi - lo) * (l / m)``, clipped, first point ``lo`` and last ``hi`` exactly,
        non-decreasing.
    """
    lo = np.asarray(lo, dtype=np.float64)[:, None]
    hi = np.asarray(hi, dtype=np.float64)[:, None]
    e = lo + (hi - lo) * (np.arange(m + 1, dtype=np.float64) / m)[None, :]
    e = np.clip(e, lo, hi)
    e[:, 0] = lo[:, 0]
    e[:, -1] = hi[:, 0]
    return np.maximum.accumulate(e, axis=1)


def approx_range(chunk):
    """``(min, max)`` of a chunk (first pass of the chunked approximate solver; reduce with
    ``min``/``max``).  Raises :class:`InputError` on NaN/inf."""
    _a, lo, hi = as_data(chunk, name="chunk", allow_float32=True)
    return lo, hi


def _partial(a, w, edges, uniform):
    m = edges.size - 1
    hist = np.zeros((m, 3), dtype=np.float64)
    wk = np.empty(0) if w is None else w
    norm2, outside = _k.hist_pass(a, wk, edges, uniform, hist, numba.get_num_threads())
    return ApproxStats(edges, hist, float(norm2)), int(outside)


def approx_partial(chunk, lo, hi, m=None, weights=None, *, edges=None):
    """Per-cell statistics of one chunk over the grid fixed by the global range.

    Parameters
    ----------
    chunk : array_like, any shape
        Finite values inside ``[lo, hi]``, any order (no sort).
    lo, hi : float
        The global minimum and maximum (from :func:`approx_range` over all chunks).
    m : int, optional
        Number of grid intervals (default :data:`DEFAULT_M`); ignored when ``edges`` is given.
    weights : array_like, optional
        Non-negative weights, same shape as ``chunk``.
    edges : array_like, optional
        A precomputed grid from :func:`approx_edges` (e.g. ``grid="adaptive"``); every chunk must
        use the same one.

    Returns
    -------
    ApproxStats
        Merge with :func:`approx_merge`, finish with :func:`approx_finalize`.

    Notes
    -----
    O(d) for the uniform grid (O(d log m) for explicit edges), parallel over the chunk; memory
    ``24 m`` bytes plus per-thread scratch.  Merging chunk statistics in any grouping gives the
    one-pass result up to float64 summation order (relative differences ~1e-15; levels are
    identical except at exact ties of the DP).
    """
    if edges is None:
        e = approx_edges(lo, hi, m)
        uniform = True
    else:
        e = np.ascontiguousarray(edges, dtype=np.float64).reshape(-1)
        if e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) < 0):
            raise InputError(f"edges must be finite, non-decreasing, with >= 2 points (got {e.size} points)")
        uniform = False
    if edges is None and lo == hi:
        # a constant vector: the grid degenerates; keep one cell
        e = np.array([float(lo), float(hi)])
    chunk_shape = np.shape(chunk)
    a, clo, chi = as_data(chunk, name="chunk", allow_float32=True)
    w = as_weights(weights, chunk_shape, a.size)
    if clo < e[0] or chi > e[-1]:
        raise InputError(
            f"chunk spans [{clo!r}, {chi!r}], outside the grid range [lo, hi] = "
            f"[{float(e[0])!r}, {float(e[-1])!r}]"
        )
    stats, _outside = _partial(a, w, e, uniform)
    return stats


def approx_merge(a, b):
    """Merge two :class:`ApproxStats` over the same grid (elementwise sums; associative)."""
    if a.edges.shape != b.edges.shape or not np.array_equal(a.edges, b.edges):
        raise SchemeError(
            f"cannot merge approximate-QUIVER statistics over different grids "
            f"(m={a.edges.size - 1} on [{float(a.edges[0])!r}, {float(a.edges[-1])!r}] "
            f"vs m={b.edges.size - 1} on [{float(b.edges[0])!r}, {float(b.edges[-1])!r}])"
        )
    return ApproxStats(a.edges, a.hist + b.hist, a.norm2 + b.norm2)


def _finalize(stats, s):
    edges = np.ascontiguousarray(stats.edges, dtype=np.float64)
    hist = np.ascontiguousarray(stats.hist, dtype=np.float64)
    if edges[0] == edges[-1]:
        return np.full(s, edges[0]), 0.0
    tab, _c = _k.approx_table(edges, hist)
    idx, value = _k.quiver_exact(tab, s, _k.SMAWK, 1)
    return edges[idx], max(float(value), 0.0)


def approx_finalize(stats, s):
    """Levels of approximate QUIVER from merged statistics.

    Parameters
    ----------
    stats : ApproxStats
    s : int
        Number of levels, ``>= 2``.

    Returns
    -------
    float64 ndarray, shape (s,)
        Sorted grid points with ``levels[0] = lo`` and ``levels[-1] = hi`` (repeats possible).

    Notes
    -----
    O(s m) (SMAWK over the ``m + 1`` grid points).
    """
    s = _check_s(s)
    return _finalize(stats, s)[0]


# ----------------------------------------------------------------------------------------------
# one level set per row (group): tables and histograms per group, solved in parallel
# ----------------------------------------------------------------------------------------------

_GROUP_METHODS = {"quiver": _k.GROUP_QUIVER, "quiver_accel": _k.GROUP_QUIVER_ACCEL, "zipml": _k.GROUP_ZIPML}


def row_tables(x2d, first_group=0):
    """The (group, value, count) table of every row of ``x2d``: row ``r`` is group ``first_group + r``.

    Parameters
    ----------
    x2d : ndarray of shape (R, L), finite real values
    first_group : int

    Returns
    -------
    groups : int64 ndarray, shape (N,)
    values : float64 ndarray, shape (N,)
    counts : int64 ndarray, shape (N,)
        Sorted by (group, value); each (group, value) once.  Merge tables with
        :func:`merge_tables`; solve them with :func:`solve_tables`.
    """
    xs = np.sort(np.asarray(x2d, dtype=np.float64), axis=1)
    R, L = xs.shape
    if xs.size == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    new = np.ones(xs.shape, dtype=bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]
    pos = np.flatnonzero(new)
    counts = np.diff(np.append(pos, xs.size)).astype(np.int64)
    return pos // L + first_group, xs.reshape(-1)[pos], counts


def merge_tables(a, b):
    """Union of two (groups, values, counts) tables, counts added (associative, commutative)."""
    g = np.concatenate([a[0], b[0]])
    v = np.concatenate([a[1], b[1]])
    c = np.concatenate([a[2], b[2]])
    if g.size == 0:
        return g, v, c
    order = np.lexsort((v, g))
    g, v, c = g[order], v[order], c[order]
    new = np.ones(g.size, dtype=bool)
    new[1:] = (g[1:] != g[:-1]) | (v[1:] != v[:-1])
    starts = np.flatnonzero(new)
    return g[starts], v[starts], np.add.reduceat(c, starts)


def solve_tables(table, G, s, method="quiver", *, max_memory=None):
    """Exact levels of every group of a (groups, values, counts) table, in parallel over groups.

    Parameters
    ----------
    table : (groups, values, counts) from :func:`row_tables` / :func:`merge_tables`
    G : int, number of groups (groups without values get zeros)
    s : int, levels per group
    method : {"quiver", "quiver_accel", "zipml"}
    max_memory : int, optional
        Byte limit of one group's tables (default: half the physical memory), checked for the
        largest group.

    Returns
    -------
    levels : float64 ndarray, shape (G, s)
        Row ``g`` is what :func:`solve` returns for the values of group ``g`` (up to ties:
        the same objective).
    objective : float64 ndarray, shape (G,)
    """
    s = _check_s(s)
    groups, values, counts = table
    offsets = np.searchsorted(groups, np.arange(G + 1)).astype(np.int64)
    if G:
        nmax = int(np.diff(offsets).max())
        if nmax > s:
            check_memory(nmax, s, method, nmax, max_memory)
    return _k.solve_groups(np.ascontiguousarray(values, np.float64), counts.astype(np.float64),
                           offsets, s, _GROUP_METHODS[method])


def rows_partial(x2d, lo, hi, m):
    """Approximate-QUIVER statistics of every row of ``x2d`` over its own uniform grid.

    Parameters
    ----------
    x2d : ndarray of shape (G, L), float32 or float64, finite
        Row ``g`` holds values of group ``g``.
    lo, hi : float64 ndarrays, shape (G,)
        Each group's global minimum and maximum (over all chunks).
    m : int

    Returns
    -------
    hist : float64 ndarray, shape (G, m, 3)
        Per group and cell ``(count, sum (x - e_l), sum (x - e_l)^2)``; merged by addition.
    norm2 : float64 ndarray, shape (G,)
    """
    m = _check_m(m, groups=np.shape(x2d)[0])
    x2d = np.asarray(x2d)
    if x2d.dtype not in (np.float32, np.float64):
        x2d = x2d.astype(np.float64)
    x2d = np.ascontiguousarray(x2d)
    G = x2d.shape[0]
    hist = np.zeros((G, m, 3), dtype=np.float64)
    norm2 = np.zeros(G, dtype=np.float64)
    if x2d.size:
        _k.hist_groups(x2d, uniform_edges(lo, hi, m), hist, norm2)
    return hist, norm2


def rows_finalize(lo, hi, hist, s):
    """Approximate-QUIVER levels (G, s) of every group from merged :func:`rows_partial` sums."""
    s = _check_s(s)
    m = hist.shape[1]
    levels, _value = _k.approx_groups(uniform_edges(lo, hi, m), np.ascontiguousarray(hist), s)
    return levels


def solve_rows(x, s, method="quiver", m=None):
    """Optimal (or approximate) levels of every row of a matrix, solved in parallel over rows.

    Row ``r`` gets the levels that :func:`solve` finds for ``x[r]`` alone (exact methods: the
    same objective; ``quiver_approx``: the same levels for rows shorter than
    ``asq_dp.PARALLEL_MIN / 2``, whose histogram :func:`solve` sums serially too).

    Parameters
    ----------
    x : array_like of shape (R, L), finite real values
    s : int, levels per row (``>= 2``)
    method : {"quiver", "quiver_accel", "zipml", "quiver_approx"}
    m : int, optional, grid intervals of ``quiver_approx`` (default :data:`DEFAULT_M`)

    Returns
    -------
    ASQResult
        ``levels`` float64 (R, s) (rows sorted, repeats possible), ``objective`` and ``vnmse``
        float64 (R,).

    Notes
    -----
    Exact methods: each row sorted, deduplicated and solved serially inside one ``prange`` loop
    over rows (``numba.set_num_threads`` limits it).  ``quiver_approx``: per-row range, one histogram
    per row over that row's grid, and one DP per row, all parallel over rows; no sort.
    """
    s = _check_s(s)
    if method not in METHODS:
        raise SchemeError(f"method={method!r} is not one of {', '.join(map(repr, METHODS))}")
    a = np.asarray(x)
    if a.ndim != 2:
        raise InputError(f"x has shape {a.shape}; solve_rows needs a 2-D array (rows, values)")
    if a.shape[1] == 0:
        raise InputError(f"x has shape {a.shape}; every row needs at least one value")
    if a.dtype.kind not in "biuf":
        raise InputError(f"x has dtype {a.dtype}; a real numeric array is required")
    if a.dtype != np.float32:
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise InputError("x contains NaN or infinite values; finite values are required")
    with np.errstate(over="ignore", invalid="ignore"):
        norm2 = np.einsum("ij,ij->i", a, a, dtype=np.float64)
    if method == "quiver_approx":
        m = _check_m(m, s, groups=a.shape[0])
        lo = a.min(axis=1).astype(np.float64)
        hi = a.max(axis=1).astype(np.float64)
        hist, _n2 = rows_partial(a, lo, hi, m)
        levels, obj = _k.approx_groups(uniform_edges(lo, hi, m), hist, s)
    else:
        if m is not None:
            raise SchemeError(f"m={m!r} applies to method='quiver_approx' only (method={method!r})")
        if a.shape[1] > s:
            check_memory(a.shape[1], s, method, a.shape[1], None)
        levels, obj = _k.solve_rows(np.ascontiguousarray(a, dtype=np.float64), s, _GROUP_METHODS[method])
    with np.errstate(divide="ignore", invalid="ignore"):
        vn = np.where(norm2 > 0, obj / np.where(norm2 > 0, norm2, 1.0), np.where(obj == 0, 0.0, np.inf))
    return ASQResult(levels, obj, vn)
