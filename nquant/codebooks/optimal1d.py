"""Optimal scalar codebooks for squared error: exact 1-D k-means, Lloyd-Max, restart baseline.

:func:`kmeans1d` returns the *global* minimum of ``sum w (x - nearest centre)^2`` over ``k``
centres (an interval DP over the sorted distinct values, one SMAWK pass per cluster, shared with
QUIVER: :mod:`nquant.kernels.smawk`).  :func:`lloyd_max` refines given centres to a local optimum
and :func:`kmeans1d_restarts` is the classical baseline (seed 000, section 4: several random
initialisations, keep the best), so the benefit of the exact method can be measured.
"""

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from nquant import limits
from nquant.codebooks.asq import as_data, as_weights, check_memory, dp_threads, sorted_data
from nquant.errors import SchemeError
from nquant.kernels import asq_dp as _a
from nquant.kernels import kmeans1d as _k
from nquant.kernels.smawk import DIVIDE_AND_CONQUER, SMAWK

__all__ = ["KMeans1DResult", "LloydResult", "kmeans1d", "lloyd_max", "kmeans1d_restarts"]


class KMeans1DResult(NamedTuple):
    """Centres (float64, shape (k,), ascending; repeated when fewer than k distinct values) and
    their weighted sum of squared errors ``sse``."""

    centers: np.ndarray
    sse: float


class LloydResult(NamedTuple):
    """Result of :func:`lloyd_max`: centres (ascending), their SSE and the iterations run."""

    centers: np.ndarray
    sse: float
    n_iter: int


def _check_k(k, name="k"):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise SchemeError(f"{name}={k!r}: the number of centres must be an integer >= 1")
    limits.check_count(name, int(k), limits.MAX_LEVELS)
    return int(k)


def kmeans1d(x: ArrayLike, k: int, weights: ArrayLike | None = None, *, max_memory: int | None = None,
             algorithm: str = "smawk") -> KMeans1DResult:
    """Exact 1-D k-means: the ``k`` centres of minimum (weighted) squared error.

    Parameters
    ----------
    x : array_like, any shape, real numeric, finite
        Flattened in C order; any order (sorted internally, the sort is skipped when ``x`` is
        already non-decreasing).
    k : int
        Number of centres, ``>= 1``.
    weights : array_like, optional
        Non-negative finite weights, same shape as ``x``.
    max_memory : int, optional
        Byte limit of the DP tables (default half the physical memory).
    algorithm : {"smawk", "dc"}
        Row-minima algorithm per layer.

    Returns
    -------
    KMeans1DResult
        ``centers`` float64 (k,), ascending, each the weighted mean of its cluster (fewer than
        ``k`` distinct values: the distinct values, the largest repeated); ``sse`` computed
        directly from the data.

    Notes
    -----
    O(d log d + k n) time (n distinct values; O(d + k n) for sorted input), memory about
    ``4 (k - 2) n + 130 n + 8 d`` bytes.  Duplicates are merged into weights first.
    """
    k = _check_k(k)
    if algorithm not in ("smawk", "dc"):
        raise SchemeError(f"algorithm={algorithm!r} is not one of 'smawk', 'dc'")
    x_shape = np.shape(x)
    a, _lo, _hi = as_data(x)
    w = as_weights(weights, x_shape, a.size)
    a, w = sorted_data(a, w)
    vals, wts = _a.dedup_sorted(a, np.empty(0) if w is None else w)
    n = vals.size
    if n <= k:
        centers = np.empty(k)
        centers[:n] = vals
        centers[n:] = vals[-1]
        return KMeans1DResult(centers, 0.0)
    check_memory(n + 1, k + 1, "quiver", a.size, max_memory, label=f"kmeans1d with k={k}")
    tab, centre = _k.kmeans_table(vals, wts)
    algo = SMAWK if algorithm == "smawk" else DIVIDE_AND_CONQUER
    bounds, _value = _k.kmeans_dp(tab, k, algo, dp_threads(n + 1))
    centers = _k.centers_from_bounds(tab, centre, bounds, vals)
    centers = np.sort(centers)
    sse = float(_k.sse_nearest(vals, wts, centers))
    return KMeans1DResult(centers, sse)


def lloyd_max(x, centers, weights=None, max_iter=100, tol=1e-10):
    """Lloyd-Max refinement of 1-D centres (a local optimum of the weighted squared error).

    Parameters
    ----------
    x : array_like, any shape, finite
    centers : array_like, shape (k,)
        Initial centres (finite; any order).
    weights : array_like, optional
        Non-negative weights, same shape as ``x``.
    max_iter : int
        Maximum number of centre updates.
    tol : float
        Stop when the relative SSE decrease falls below ``tol``.

    Returns
    -------
    LloydResult
        ``(centers, sse, n_iter)``; centres ascending.

    Notes
    -----
    O(d log k) per iteration; an empty cluster keeps its centre.
    """
    x_shape = np.shape(x)
    a, _lo, _hi = as_data(x)
    c, _clo, _chi = as_data(centers, name="centers")
    w = as_weights(weights, x_shape, a.size)
    max_iter = _check_k(max_iter, "max_iter") if max_iter != 0 else 0
    cs, sse, it = _k.lloyd_max(a, np.empty(0) if w is None else w, c, max_iter, float(tol))
    return LloydResult(cs, float(sse), int(it))


def kmeans1d_restarts(x, k, n_init=10, seed=0, weights=None, max_iter=100, tol=1e-10):
    """Baseline: Lloyd-Max from ``n_init`` random initialisations, best SSE kept.

    Each initialisation draws ``k`` distinct data points (``numpy.random.default_rng(seed)``;
    fewer than ``k`` distinct values gives the exact answer directly).

    Returns
    -------
    KMeans1DResult
        The best local optimum found (its ``sse`` is >= the exact optimum of :func:`kmeans1d`).

    Notes
    -----
    O(n_init max_iter d log k) time.
    """
    k = _check_k(k)
    n_init = _check_k(n_init, "n_init")
    x_shape = np.shape(x)
    a, _lo, _hi = as_data(x)
    w = as_weights(weights, x_shape, a.size)
    wk = np.empty(0) if w is None else w
    vals = np.unique(a)
    if vals.size <= k:
        return kmeans1d(a, k, weights=w)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_init):
        init = rng.choice(vals, size=k, replace=False)
        cs, sse, _it = _k.lloyd_max(a, wk, init, max_iter, float(tol))
        if best is None or sse < best.sse:
            best = KMeans1DResult(cs, float(sse))
    return best
