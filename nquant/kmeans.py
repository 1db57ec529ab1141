"""k-means clustering (vector quantization codebooks) for NumPy, Dask and Zarr inputs.

``KMeans`` follows scikit-learn's estimator (``fit``, ``partial_fit``, ``predict``,
``cluster_centers_``, ``inertia_``, ``n_iter_``); ``assign`` is the nearest-centroid search it
uses.  Product quantization (:mod:`nquant.pq`) shares the input checks and row-chunk reductions
(:mod:`nquant._rows`) and the k-means++ kernel.

Numerics
--------
- Assignment uses ``||x||^2 - 2 x.c + ||c||^2`` with the cross terms from BLAS GEMMs on blocks
  (``d > 16``) or squared differences in a Numba kernel (``d <= 16``), see
  :mod:`nquant.kernels.assign`.  To keep the identity accurate, k-means works on data shifted by
  the mean of the fitting sample (all rows of a NumPy input, the ``init_size`` sample of a Dask
  input); centers are reported in the original coordinates.
- Lloyd on a NumPy input (``d > 16``) keeps, per row, an upper bound of the distance to its
  center and a lower bound of the distance to the others (Hamerly 2010), moved by how far the
  centers move; an iteration searches only the rows whose bounds no longer separate.  The bounds
  include the worst-case rounding of the GEMM identity, so every label is the exact nearest
  center (as a full search, up to centers within rounding of each other), and the inertia of the
  final centers is summed from exact differences.
- Partial sums are float64; centers keep the data's dtype (float32 or float64; float16 is
  computed in float32).
- BLAS runs single-threaded while a fit or an assignment runs, and nquant spreads the GEMMs over
  its own threads (:func:`nquant._threads.single_blas`).

Streaming (Dask arrays, ``zarr.Array``)
---------------------------------------
- ``algorithm="lloyd"`` (exact map-reduce Lloyd): one pass over the chunks per iteration; every
  chunk gives ``(sums, counts, inertia, farthest points)``, merged in a tree
  (:func:`nquant.chunked.tree_reduce`), one ``compute`` per iteration, plus a last pass for the
  final inertia unless the last update moved no center.  The input is persisted first when it fits
  in half the available memory (``persist="auto"``).  Results equal the NumPy fit for the same
  initial centers up to the float64 summation order (centers agree to ~1e-6 relative in float32).
- ``algorithm="minibatch"``: chunks are read one at a time (the next one prefetched) in a seeded
  order per epoch; each chunk's rows are shuffled (seeded) and cut into ``batch_size`` batches;
  each batch moves every center it touches to the running mean of the points it has received
  (scikit-learn's ``MiniBatchKMeans`` without random reassignment).  At most two chunks are held.
  The centers depend on the chunking (the batch order changes); tests bound the inertia within
  10% of the exact Lloyd fit for any chunking.
- ``sample_size=m``: fit in memory on ``m`` seeded rows, then one pass over the rest reports the
  generalisation error ``heldout_inertia_`` (mean squared distance per held-out row).
- Initialisation for Dask inputs: ``"k-means++"`` or ``"random"`` on a seeded sample of
  ``init_size`` rows (row indices drawn from ``(seed, n)`` only, so any chunking gives the same
  centers), or ``"k-means||"`` (Bahmani et al. 2012): ``init_rounds`` rounds of oversampling
  ``oversampling_factor * n_clusters`` points with a counter-based random stream keyed by the
  global row index, then weighted k-means++ on the candidates (``2 * init_rounds + 2`` passes).

Empty clusters: a center that receives no point moves to the point farthest from its center
(largest squared distance, ties to the lower row index), as scikit-learn does.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import dask
import numpy as np
from numpy.typing import ArrayLike
from nquant._types import ArrayInput

from nquant import chunked, limits
from nquant._rows import (as_rows, check_int, check_seed, finite_mean, memory_budget, nonfinite_error,
                          reduce_rows, seeded_rng, shifted)
from nquant._threads import in_task, single_blas, task_threads
from nquant.chunked import is_dask
from nquant.errors import InputError, SchemeError
from nquant.kernels import assign as _assign
from nquant.kernels import lloyd as _lloyd
from nquant.kernels.rng import seed_key

__all__ = ["KMeans", "assign"]

_INITS = ("k-means++", "k-means||", "random")
_ALGORITHMS = ("lloyd", "minibatch")


# ---------------------------------------------------------------------------------------
# assignment
# ---------------------------------------------------------------------------------------
def _pass(X, C, xx=None, accumulate=False, nthreads=1, shift=None):
    """Assignment (and sums) of ``X - shift`` (``shift`` None: of ``X``) to the centers ``C``."""
    if X.shape[1] <= _assign.DIRECT_MAX_DIM:  # narrow rows: a shifted copy is cheap
        if shift is not None:
            X = shifted(X, shift)
        return _assign.direct_pass(X, C, accumulate=accumulate)
    if shift is not None:
        shift = shift.astype(X.dtype)
    return _assign.gemm_pass(X, C, xx, accumulate=accumulate, nthreads=nthreads, shift=shift)


def _nearest(x, centers_c, shift):
    """Labels of the rows of ``x`` and their squared distances, the same for any row chunking.

    The assignment pass gives ``||x||^2 - 2 x.c + ||c||^2`` from BLAS GEMMs, whose rounding
    depends on the block shapes BLAS sees (so on the chunking); the distance to the chosen
    center is summed again from the differences, row by row in float64, which is exact to
    the data's precision and independent of the blocking.
    """
    with single_blas():
        labels, _, _, _ = _pass(x, centers_c, nthreads=task_threads(), shift=shift)
    d2 = np.empty(x.shape[0], dtype=centers_c.dtype)
    step = max(1, (1 << 20) // max(1, x.shape[1]))  # rows per block: a bounded float64 buffer
    for s in range(0, x.shape[0], step):
        diff = np.asarray(x[s:s + step], np.float64)
        if shift is not None:
            diff -= shift
        diff -= centers_c[labels[s:s + step]]
        d2[s:s + step] = np.square(diff).sum(axis=1)
    return labels, d2


@in_task
def _labels_chunk(x, centers_c, shift, want):
    x = as_rows(x)
    labels, d2 = _nearest(x, centers_c, shift)
    if want == "labels":
        return labels
    if want == "d2":
        return d2
    out = np.empty((x.shape[0], 2))
    out[:, 0] = labels
    out[:, 1] = d2
    return out


def assign(X: ArrayInput, centers: ArrayLike) -> tuple[Any, Any]:
    """Nearest center of every row.

    Parameters
    ----------
    X : ndarray or dask.array.Array of shape (n, d), float16, float32 or float64
        (a ``zarr.Array`` is read as a Dask array).
    centers : ndarray of shape (k, d), float
        Cast to the dtype of ``X`` (float32 for float16 ``X``).

    Returns
    -------
    labels : ndarray of shape (n,), int32
        Index of the nearest center; ties go to the lower index; rows with NaN get 0.
    sq_distances : ndarray of shape (n,), dtype of X (float32 for float16)
        Squared Euclidean distance to it (NaN for rows with NaN).

    Both are lazy Dask arrays (chunked like ``X``'s rows) for a Dask ``X``.  The distances are
    computed on ``X - mean(centers)`` (translation-invariant, and it keeps the
    ``||x||^2 - 2x.c + ||c||^2`` identity accurate).
    """
    X = as_rows(X)
    C = np.asarray(centers)
    if C.ndim != 2 or C.shape[1] != X.shape[1] or C.shape[0] < 1:
        raise InputError(f"centers must have shape (k >= 1, {X.shape[1]}); got shape {C.shape}")
    if not np.isfinite(C).all():
        raise InputError("centers contains NaN or infinity")
    dtype = np.dtype(X.dtype)
    shift = C.astype(np.float64).mean(axis=0)
    Cc = np.ascontiguousarray((C - shift).astype(dtype))
    if is_dask(X):  # one task per chunk computes both
        both = X.map_blocks(_labels_chunk, Cc, shift, "both", dtype=np.float64,
                            chunks=(X.chunks[0], (2,)))
        return both[:, 0].astype(np.int32), both[:, 1].astype(dtype)
    return _nearest(X, Cc, shift)


# ---------------------------------------------------------------------------------------
# map-reduce Lloyd (chunk functions)
# ---------------------------------------------------------------------------------------
def _top_far(d2, m):
    """Indices of the ``m`` largest ``d2`` ordered by (-d2, index)."""
    n = d2.shape[0]
    m = min(int(m), n)
    if m <= 0:
        return np.empty(0, np.int64)
    if m < n:
        part = np.argpartition(-d2, m - 1)[:m]
        v = d2[part].min()
        above = np.flatnonzero(d2 > v)
        equal = np.flatnonzero(d2 == v)
        take = np.concatenate([above, equal[:m - above.size]])
    else:
        take = np.arange(n)
    return take[np.lexsort((take, -d2[take]))]


def _merge_far(a, b, m):
    d = np.concatenate([a[0], b[0]])
    i = np.concatenate([a[1], b[1]])
    x = np.concatenate([a[2], b[2]])
    order = np.lexsort((i, -d))[:m]
    return d[order], i[order], x[order]


@in_task
def _lloyd_chunk(x, start, centers_c, shift, accumulate, m_far):
    x = as_rows(x)
    with single_blas():
        _, d2, sums, counts = _pass(x, centers_c, accumulate=accumulate,
                                    nthreads=task_threads(), shift=shift)
    inertia = float(d2.sum(dtype=np.float64))
    far = _top_far(d2, m_far)
    return {"sums": sums, "counts": counts, "inertia": inertia, "n": x.shape[0],
            "far": (d2[far].astype(np.float64), far + start, shifted(x[far], shift)), "m_far": m_far}


def _merge_lloyd(a, b):
    out = {"inertia": a["inertia"] + b["inertia"], "n": a["n"] + b["n"], "m_far": a["m_far"],
           "far": _merge_far(a["far"], b["far"], a["m_far"])}
    out["sums"] = None if a["sums"] is None else a["sums"] + b["sums"]
    out["counts"] = None if a["counts"] is None else a["counts"] + b["counts"]
    return out


def _new_centers(sums, counts, centers, far_rows):
    """Means of the clusters; empty clusters take the farthest points ``far_rows(m)``."""
    new = centers.copy()
    nz = counts > 0
    new[nz] = (sums[nz] / counts[nz, None]).astype(centers.dtype)
    empty = np.flatnonzero(~nz)
    if empty.size:
        rows = far_rows(empty.size)
        new[empty[:rows.shape[0]]] = rows[:empty.size]
    return new


def _shift2(a, b):
    diff = a.astype(np.float64) - b
    return float(np.einsum("ij,ij->", diff, diff))


# ---------------------------------------------------------------------------------------
# k-means|| (chunk functions)
# ---------------------------------------------------------------------------------------
@in_task
def _kmpar_cost(x, start, cost, new_c, shift):
    """``min(cost, d^2(x, new_c))`` for one chunk (``cost`` None: no previous centers)."""
    with single_blas():
        _, d2, _, _ = _pass(as_rows(x), new_c, nthreads=task_threads(), shift=shift)
    d2 = d2.astype(np.float64)
    return d2 if cost is None else np.minimum(cost, d2)


@in_task
def _kmpar_sample(x, start, cost, key, scale, shift):
    """Rows with ``u(key, start + i) < scale * cost[i]`` (centered)."""
    u = _uniform(key, start, cost.shape[0])
    keep = np.flatnonzero(u < scale * cost)
    return shifted(as_rows(x)[keep], shift)


def _uniform(key, start, n):
    out = np.empty(n)
    _lloyd.uniform_fill(np.uint64(key), np.int64(start), out)
    return out


@in_task
def _count_chunk(x, start, cands, shift):
    with single_blas():
        labels, _, _, _ = _pass(as_rows(x), cands, nthreads=task_threads(), shift=shift)
    return np.bincount(labels, minlength=cands.shape[0]).astype(np.float64)


@in_task
def _heldout_chunk(x, start, centers_c, shift, sample_idx):
    x = as_rows(x)
    lo, hi = np.searchsorted(sample_idx, [start, start + x.shape[0]])
    mask = np.ones(x.shape[0], bool)
    mask[sample_idx[lo:hi] - start] = False
    x = np.ascontiguousarray(x[mask])
    with single_blas():
        _, d2, _, _ = _pass(x, centers_c, nthreads=task_threads(), shift=shift)
    return np.array([d2.sum(dtype=np.float64), x.shape[0]])


def _add(a, b):
    return a + b


# ---------------------------------------------------------------------------------------
# KMeans
# ---------------------------------------------------------------------------------------
class KMeans:
    """k-means clustering (vector quantization codebooks) for NumPy, Dask and Zarr inputs.

    Parameters
    ----------
    n_clusters : int
        Number of centers ``k >= 1``.
    init : {"k-means++", "k-means||", "random"} or ndarray of shape (n_clusters, n_features)
        Greedy k-means++ (``2 + ln k`` local trials, on all rows of a NumPy input or on
        ``init_size`` sampled rows of a Dask input); k-means|| (scalable, for Dask inputs);
        ``n_clusters`` distinct random rows; or given centers (then one run, whatever ``n_init``).
    n_init : int
        Runs with different seeds; the one with the lowest inertia is kept.
    max_iter : int
        Lloyd iterations (``"lloyd"``) or epochs (``"minibatch"``).
    tol : float
        Stop when the squared center shift of an update (Lloyd: an iteration; mini-batch: a
        batch) is at most ``tol * mean feature variance`` (of the fitting sample), as
        scikit-learn does.  ``tol=0`` stops only when no center moves.
    seed : int or None
        Seed of every random choice (initialisation, samples, batch order).
    algorithm : {"lloyd", "minibatch"}
        Exact Lloyd (map-reduce over chunks for Dask inputs) or streaming mini-batch k-means.
    batch_size : int
        Rows per mini-batch.
    init_size : int or None
        Rows sampled for the initialisation, the centering shift and the tolerance scale.
        None: all rows of a NumPy input fitted with Lloyd; ``min(n, max(100 * n_clusters,
        10000))`` otherwise (Dask inputs, mini-batch).
    sample_size : int or None
        Fit on this many sampled rows only and report ``heldout_inertia_`` on the others.
    oversampling_factor : float
        k-means||: points sampled per round, in units of ``n_clusters``.
    init_rounds : int
        k-means||: sampling rounds.
    persist : {"auto", True, False}
        Map-reduce Lloyd: persist the Dask input before the passes (``"auto"``: when it takes
        at most half the available memory, or half the cluster's memory with a client).
    max_no_improvement : int or None
        Mini-batch: stop after this many consecutive batches without improvement of the
        smoothed batch inertia (None: never).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features), float32 or float64
    inertia_ : float
        Sum of squared distances of the fitted rows to their nearest center (Lloyd, mini-batch:
        after the last update, one extra pass; ``partial_fit``: of the last batch, before its
        update).
    n_iter_ : int
        Lloyd iterations, or mini-batch epochs started.
    n_steps_ : int
        Mini-batch updates (``partial_fit`` and ``algorithm="minibatch"``).
    labels_ : ndarray of shape (n_samples,), int32
        Labels of the rows of a NumPy input fitted with Lloyd (not set for Dask inputs).
    counts_ : ndarray of shape (n_clusters,), float64
        Points per center (Lloyd: last assignment; mini-batch: points received).
    heldout_inertia_ : float
        With ``sample_size``: mean squared distance of the rows not in the sample (``inertia_``
        is then the sum over the sample, ``sample_indices_`` its sorted row indices).
    n_features_in_ : int
    """

    def __init__(self, n_clusters: int, init: str | ArrayLike = "k-means++", n_init: int = 1,
                 max_iter: int = 100, tol: float = 1e-4, seed: int = 0, *, algorithm: str = "lloyd",
                 batch_size: int = 4096, init_size: int | None = None, sample_size: int | None = None,
                 oversampling_factor: float = 2.0, init_rounds: int = 5, persist: str | bool = "auto",
                 max_no_improvement: int = 10) -> None:
        self.n_clusters = check_int("n_clusters", n_clusters, 1, limits.MAX_CLUSTERS)
        if isinstance(init, str):
            if init not in _INITS:
                raise SchemeError(f"init={init!r} is invalid: expected one of {list(_INITS)} or an array")
        else:
            init = np.asarray(init)
            if init.ndim != 2 or init.shape[0] != self.n_clusters:
                raise SchemeError(f"init array of shape {init.shape} is invalid: expected "
                                  f"(n_clusters={self.n_clusters}, n_features)")
            if not np.issubdtype(init.dtype, np.floating) or not np.isfinite(init).all():
                raise SchemeError("init array must hold finite floating-point values")
        self.init = init
        self.n_init = check_int("n_init", n_init, 1)
        self.max_iter = check_int("max_iter", max_iter, 1)
        if not isinstance(tol, (int, float, np.floating)) or isinstance(tol, bool) or not tol >= 0:
            raise SchemeError(f"tol={tol!r} is invalid: expected a float >= 0")
        self.tol = float(tol)
        self.seed = check_seed(seed)
        if algorithm not in _ALGORITHMS:
            raise SchemeError(f"algorithm={algorithm!r} is invalid: expected one of {list(_ALGORITHMS)}")
        self.algorithm = algorithm
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.init_size = None if init_size is None else check_int("init_size", init_size, 1)
        self.sample_size = None if sample_size is None else check_int("sample_size", sample_size, 1)
        if not isinstance(oversampling_factor, (int, float)) or not oversampling_factor > 0:
            raise SchemeError(f"oversampling_factor={oversampling_factor!r} is invalid: expected a float > 0")
        self.oversampling_factor = float(oversampling_factor)
        self.init_rounds = check_int("init_rounds", init_rounds, 1)
        if persist not in ("auto", True, False):
            raise SchemeError(f"persist={persist!r} is invalid: expected 'auto', True or False")
        self.persist = persist
        self.max_no_improvement = (None if max_no_improvement is None
                                   else check_int("max_no_improvement", max_no_improvement, 1))

    def __repr__(self):
        init = self.init if isinstance(self.init, str) else "array"
        return (f"KMeans(n_clusters={self.n_clusters}, init={init!r}, n_init={self.n_init}, "
                f"max_iter={self.max_iter}, tol={self.tol}, seed={self.seed}, "
                f"algorithm={self.algorithm!r})")

    # ----------------------------------------------------------------------- public
    def fit(self, X: ArrayInput) -> Self:
        """Fit the centers.

        Parameters
        ----------
        X : ndarray, dask.array.Array or zarr.Array of shape (n_samples, n_features)
            float16, float32 or float64; finite.

        Returns
        -------
        self
        """
        X = as_rows(X)
        n, d = X.shape
        if n < self.n_clusters:
            raise InputError(f"n_samples={n} should be >= n_clusters={self.n_clusters}")
        if not isinstance(self.init, str) and self.init.shape[1] != d:
            raise InputError(f"init has {self.init.shape[1]} features but X has n_features={d}")
        self.n_features_in_ = d
        self.dtype_ = np.dtype(X.dtype)
        if self.sample_size is not None and self.sample_size < n:
            return self._fit_sample(X)
        with single_blas():
            if self.algorithm == "lloyd" and is_dask(X):
                X = self._maybe_persist(X)  # before the sample: the source is read once
            # NumPy Lloyd seeds on all rows (as scikit-learn); Dask and mini-batch on a sample
            stats = self._sample_stats(X, full=not is_dask(X) and self.algorithm == "lloyd")
            best = None
            runs = 1 if not isinstance(self.init, str) else self.n_init
            for run in range(runs):
                res = self._fit_once(X, stats, run)
                if best is None or res["inertia"] < best["inertia"]:
                    best = res
        self._set(best)
        return self

    def partial_fit(self, X: ArrayInput) -> Self:
        """One mini-batch update with the rows of ``X`` (every chunk of a Dask ``X``, in seeded order).

        The first call initialises the centers with ``init`` on ``X`` (which needs
        ``n_samples >= n_clusters``; Dask: on ``init_size`` sampled rows).

        Parameters
        ----------
        X : ndarray, dask.array.Array or zarr.Array of shape (n_samples, n_features)

        Returns
        -------
        self
        """
        X = as_rows(X)
        n, d = X.shape
        if hasattr(self, "cluster_centers_"):
            if d != self.n_features_in_:
                raise InputError(f"X has n_features={d} but the model has {self.n_features_in_}")
        else:
            if n < self.n_clusters and not is_dask(X):
                raise InputError(f"the first partial_fit needs n_samples >= n_clusters={self.n_clusters}; "
                                 f"got n_samples={n}")
            self.n_features_in_ = d
            self.dtype_ = np.dtype(X.dtype)
            stats = self._sample_stats(X, full=not is_dask(X))
            self._shift = stats["shift"]
            self._tol_abs = self.tol * stats["var"]
            with single_blas():
                    centers = self._init_centers(X, stats, 0)
            self._centers_c = centers
            self._weights = np.zeros(self.n_clusters)
            self.n_steps_ = 0
            self.n_iter_ = 0
            self._set_centers()
        with single_blas():
            if is_dask(X):
                order = seeded_rng(self.seed, 40, self.n_iter_).permutation(X.numblocks[0])
                inertia = 0.0
                for i, chunk in _stream_chunks(X, order):
                    xc = shifted(chunk.astype(self.dtype_, copy=False), self._shift)
                    inertia += self._step(xc)
            else:
                inertia = self._step(shifted(X.astype(self.dtype_, copy=False), self._shift))
        self.n_iter_ += 1
        self.inertia_ = inertia
        self._set_centers()
        return self

    def predict(self, X: ArrayInput) -> Any:
        """Index of the nearest center of every row.

        Parameters
        ----------
        X : ndarray, dask.array.Array or zarr.Array of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,), int32 (lazy Dask array for a Dask ``X``)
        """
        return self._assign(X, "labels")

    def score(self, X: ArrayInput) -> float:
        """Opposite of the inertia of ``X`` (scikit-learn's convention; computed for Dask inputs)."""
        d2 = self._assign(X, "d2")
        total = d2.sum(dtype=np.float64)
        return -float(total.compute() if is_dask(total) else total)

    def fit_predict(self, X: ArrayInput) -> Any:
        """``fit(X)`` then ``predict(X)``."""
        return self.fit(X).predict(X)

    # ----------------------------------------------------------------------- internals
    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise SchemeError("this KMeans is not fitted yet: call fit or partial_fit first")

    def _assign(self, X, want):
        self._check_fitted()
        X = as_rows(X)
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"X has n_features={X.shape[1]} but the model has {self.n_features_in_}")
        centers = self._centers_c.astype(X.dtype)
        if is_dask(X):
            dtype = np.int32 if want == "labels" else X.dtype
            return X.map_blocks(_labels_chunk, centers, self._shift, want, drop_axis=1, dtype=dtype)
        labels, d2 = _nearest(X, centers, self._shift)
        return labels if want == "labels" else d2

    def _set(self, res):
        self._shift = res["shift"]
        self._centers_c = res["centers"]
        self.inertia_ = float(res["inertia"])
        self.n_iter_ = int(res["n_iter"])
        self.counts_ = res["counts"]
        if "labels" in res:
            self.labels_ = res["labels"]
        elif hasattr(self, "labels_"):
            del self.labels_
        if "n_steps" in res:
            self.n_steps_ = res["n_steps"]
            self._weights = res["counts"]
        self._set_centers()

    def _set_centers(self):
        c = self._centers_c.astype(np.float64) + self._shift
        self.cluster_centers_ = c.astype(self.dtype_)

    def _default_init_size(self, n):
        return min(n, max(100 * self.n_clusters, 10000))

    def _sample_idx(self, n, size):
        return np.sort(seeded_rng(self.seed, 1, n).choice(n, size=size, replace=False))

    def _sample_stats(self, X, full):
        """Sample rows (NumPy), their mean (shift) and mean feature variance."""
        n = X.shape[0]
        size = n if full and self.init_size is None else (self.init_size or self._default_init_size(n))
        size = min(size, n)
        if size == n and not is_dask(X):
            sample = X
        else:
            idx = self._sample_idx(n, size)
            sample = X[idx]
            if is_dask(sample):
                sample = sample.compute()
            sample = np.ascontiguousarray(sample)
        shift = finite_mean(sample)
        sample_c = shifted(sample, shift)
        xx = _assign.row_sqnorms(sample_c)
        var = float(xx.sum(dtype=np.float64)) / max(1, sample_c.size)
        return {"sample_c": sample_c, "xx": xx, "shift": shift, "var": var}

    def _init_centers(self, X, stats, run):
        k = self.n_clusters
        shift = stats["shift"]
        dtype = np.dtype(X.dtype)
        if not isinstance(self.init, str):
            return np.ascontiguousarray((self.init.astype(np.float64) - shift).astype(dtype))
        if self.init == "k-means||":
            return self._kmeans_parallel(X, shift, run)
        sample_c = stats["sample_c"]
        if sample_c.shape[0] < k:
            raise InputError(f"init_size={sample_c.shape[0]} should be >= n_clusters={k}")
        rng = seeded_rng(self.seed, 2, run)
        if self.init == "random":
            return np.ascontiguousarray(sample_c[np.sort(rng.choice(sample_c.shape[0], k, replace=False))])
        centers, _ = _lloyd.kmeans_plusplus(sample_c, k, rng, nthreads=task_threads())
        return centers

    def _fit_once(self, X, stats, run):
        centers = self._init_centers(X, stats, run)
        tol_abs = self.tol * stats["var"]
        if self.algorithm == "minibatch":
            return self._minibatch(X, stats["shift"], centers, tol_abs, run)
        if is_dask(X):
            return self._lloyd_dask(X, stats["shift"], centers, tol_abs)
        if stats["sample_c"].shape[0] == X.shape[0]:  # the sample is X itself
            Xc, xx = stats["sample_c"], stats["xx"]
        else:
            Xc, xx = shifted(X, stats["shift"]), None
        return self._lloyd_numpy(Xc, xx, stats["shift"], centers, tol_abs)

    def _lloyd_numpy(self, Xc, xx, shift, centers, tol_abs):
        nthreads = task_threads()
        if Xc.shape[1] <= _assign.DIRECT_MAX_DIM:
            return self._lloyd_direct(Xc, shift, centers, tol_abs)
        if xx is None:
            xx = _assign.row_sqnorms(Xc)
        n = Xc.shape[0]
        labels = np.empty(n, np.int32)
        d2 = np.empty(n, Xc.dtype)
        upper = np.empty(n)
        lower = np.empty(n)
        drift = None  # first pass: every row searched, bounds set

        def exact_d2(C):
            _assign.bounded_pass(Xc, C, xx, labels, d2, upper, lower, np.zeros(C.shape[0]),
                                 accumulate=False, exact_d2=True, nthreads=nthreads)
            return d2

        shift2 = np.inf
        n_iter = 0
        for it in range(self.max_iter):
            sums, counts, _ = _assign.bounded_pass(Xc, centers, xx, labels, d2, upper, lower, drift,
                                                   nthreads=nthreads)
            if it == 0 and not np.isfinite(d2.sum(dtype=np.float64)):
                raise nonfinite_error()
            # farthest rows for empty clusters: every row's distance (only the first pass has them all)
            far = (lambda m: Xc[_top_far(d2, m)]) if it == 0 else (
                lambda m, C=centers: Xc[_top_far(exact_d2(C), m)])
            new = _new_centers(sums, counts, centers, far)
            shift2 = _shift2(new, centers)
            drift = _assign.center_drift(new, centers)
            centers = new
            n_iter = it + 1
            if shift2 <= tol_abs:
                break
        # the final centers' labels, and every row's exact distance for the inertia
        _assign.bounded_pass(Xc, centers, xx, labels, d2, upper, lower, drift, accumulate=False,
                             exact_d2=True, nthreads=nthreads)
        counts = np.bincount(labels, minlength=self.n_clusters).astype(np.float64)
        return {"centers": centers, "inertia": float(d2.sum(dtype=np.float64)), "n_iter": n_iter,
                "labels": labels, "shift": shift, "counts": counts}

    def _lloyd_direct(self, Xc, shift, centers, tol_abs):
        labels = np.empty(Xc.shape[0], np.int32)
        d2 = np.empty(Xc.shape[0], Xc.dtype)
        shift2 = np.inf
        n_iter = 0
        for it in range(self.max_iter):
            labels, d2, sums, counts = _assign.direct_pass(Xc, centers, accumulate=True, labels=labels, d2=d2)
            if it == 0 and not np.isfinite(d2.sum(dtype=np.float64)):
                raise nonfinite_error()
            new = _new_centers(sums, counts, centers, lambda m, d2=d2: Xc[_top_far(d2, m)])
            shift2 = _shift2(new, centers)
            centers = new
            n_iter = it + 1
            if shift2 <= tol_abs:
                break
        if shift2 > 0:
            labels, d2, _, _ = _assign.direct_pass(Xc, centers, labels=labels, d2=d2)
        counts = np.bincount(labels, minlength=self.n_clusters).astype(np.float64)
        return {"centers": centers, "inertia": float(d2.sum(dtype=np.float64)), "n_iter": n_iter,
                "labels": labels, "shift": shift, "counts": counts}

    def _maybe_persist(self, X):
        if self.persist is True or (self.persist == "auto" and X.nbytes <= memory_budget()):
            return X.persist()
        return X

    def _lloyd_dask(self, X, shift, centers, tol_abs):
        k = self.n_clusters
        shift2 = np.inf
        n_iter = 0
        st = None
        for it in range(self.max_iter):
            st = reduce_rows(X, _lloyd_chunk, _merge_lloyd, centers, shift, True, k)
            if it == 0 and not np.isfinite(st["inertia"]):
                raise nonfinite_error()
            far_x = st["far"][2]
            new = _new_centers(st["sums"], st["counts"], centers, lambda m, far_x=far_x: far_x[:m])
            shift2 = _shift2(new, centers)
            centers = new
            n_iter = it + 1
            if shift2 <= tol_abs:
                break
        if shift2 > 0:
            st = reduce_rows(X, _lloyd_chunk, _merge_lloyd, centers, shift, True, 0)
        return {"centers": centers, "inertia": st["inertia"], "n_iter": n_iter, "shift": shift,
                "counts": st["counts"].astype(np.float64)}

    # ----------------------------------------------------------------------- k-means||
    def _kmeans_parallel(self, X, shift, run):
        k = self.n_clusters
        n = X.shape[0]
        rng = seeded_rng(self.seed, 3, run)
        first = int(rng.integers(n))
        row = X[first:first + 1]
        row = np.ascontiguousarray(row.compute() if is_dask(row) else row)
        cands = [shifted(row, shift)]
        new = cands[0]
        scale_l = self.oversampling_factor * k
        costs = [None] * (X.numblocks[0] if is_dask(X) else 1)

        def run_all(fn, *args, per_block=()):
            # fn(rows, first row, *its entries of per_block, *args) on every row chunk
            if not is_dask(X):
                return [fn(X, 0, *[a[0] for a in per_block], *args)]
            tasks = chunked.map_chunks(
                X, fn, lambda c: (c.start[0], *[a[c.block_index[0]] for a in per_block], *args))
            return list(dask.compute(*tasks))

        for r in range(self.init_rounds + 1):
            if new.shape[0]:
                costs = run_all(_kmpar_cost, new, shift, per_block=(costs,))
            if r == self.init_rounds:
                break
            psi = float(sum(c.sum() for c in costs))
            if not np.isfinite(psi):
                raise nonfinite_error()
            if psi <= 0:
                break
            key = int(seed_key((self.seed * 1000003 + run * 1009 + r) % (2**63)))
            parts = run_all(_kmpar_sample, key, scale_l / psi, shift, per_block=(costs,))
            new = np.ascontiguousarray(np.concatenate(parts)) if parts else cands[0][:0]
            cands.append(new)
        C = np.ascontiguousarray(np.concatenate(cands))
        if C.shape[0] < k:
            extra = seeded_rng(self.seed, 5, run).choice(n, k - C.shape[0], replace=False)
            rows = X[np.sort(extra)]
            rows = np.ascontiguousarray(rows.compute() if is_dask(rows) else rows)
            C = np.ascontiguousarray(np.concatenate([C, shifted(rows, shift)]))
        weights = run_all(_count_chunk, C, shift)
        w = np.sum(weights, axis=0)
        w = np.maximum(w, 1e-12)
        centers, _ = _lloyd.kmeans_plusplus(C, k, seeded_rng(self.seed, 4, run), weights=w,
                                            nthreads=task_threads())
        return centers

    # ----------------------------------------------------------------------- mini-batch
    def _step(self, xc):
        """One mini-batch update on centered rows; returns the batch's inertia before it."""
        _, d2, sums, counts = _pass(xc, self._centers_c, accumulate=True, nthreads=task_threads())
        self._last_shift = _lloyd.minibatch_update(self._centers_c, self._weights, sums, counts)
        self.n_steps_ += 1
        return float(d2.sum(dtype=np.float64))

    def _minibatch(self, X, shift, centers, tol_abs, run):
        n = X.shape[0]
        self._centers_c = np.ascontiguousarray(centers.copy())
        self._weights = np.zeros(self.n_clusters)
        self.n_steps_ = 0
        ewa = None
        best = np.inf
        no_improve = 0
        stop = False
        epoch = 0
        for epoch in range(self.max_iter):
            for xc in self._batches(X, shift, run, epoch):
                bi = self._step(xc) / xc.shape[0]
                if self.n_steps_ == 1:
                    ewa = bi
                    continue
                alpha = min(1.0, xc.shape[0] * 2.0 / (n + 1))
                ewa = ewa * (1 - alpha) + bi * alpha
                if self.tol > 0 and self._last_shift <= tol_abs:
                    stop = True
                if ewa < best:
                    best = ewa
                    no_improve = 0
                else:
                    no_improve += 1
                if self.max_no_improvement is not None and no_improve >= self.max_no_improvement:
                    stop = True
                if stop:
                    break
            if stop:
                break
        centers = self._centers_c
        if is_dask(X):
            st = reduce_rows(X, _lloyd_chunk, _merge_lloyd, centers, shift, False, 0)
            inertia = st["inertia"]
        else:
            _, d2, _, _ = _pass(X, centers, nthreads=task_threads(), shift=shift)
            inertia = float(d2.sum(dtype=np.float64))
        if not np.isfinite(inertia):
            raise nonfinite_error()
        return {"centers": centers, "inertia": inertia, "n_iter": epoch + 1, "shift": shift,
                "counts": self._weights.copy(), "n_steps": self.n_steps_}

    def _batches(self, X, shift, run, epoch):
        """Centered mini-batches: chunks in seeded order, rows shuffled within each chunk."""
        bs = self.batch_size
        if is_dask(X):
            order = seeded_rng(self.seed, 6, run, epoch).permutation(X.numblocks[0])
            chunks = _stream_chunks(X, order)
        else:
            chunks = iter([(0, X)])
        for i, chunk in chunks:
            perm = seeded_rng(self.seed, 7, run, epoch, i).permutation(chunk.shape[0])
            for b0 in range(0, chunk.shape[0], bs):
                rows = np.sort(perm[b0:b0 + bs])
                yield shifted(np.ascontiguousarray(chunk[rows]), shift)

    # ----------------------------------------------------------------------- sample fit
    def _fit_sample(self, X):
        n = X.shape[0]
        idx = np.sort(seeded_rng(self.seed, 8, n).choice(n, self.sample_size, replace=False))
        if self.sample_size < self.n_clusters:
            raise InputError(f"sample_size={self.sample_size} should be >= n_clusters={self.n_clusters}")
        Xs = X[idx]
        Xs = np.ascontiguousarray(Xs.compute() if is_dask(Xs) else Xs)
        sub = KMeans(self.n_clusters, init=self.init, n_init=self.n_init, max_iter=self.max_iter,
                     tol=self.tol, seed=self.seed, algorithm=self.algorithm, batch_size=self.batch_size,
                     init_size=self.init_size, max_no_improvement=self.max_no_improvement,
                     oversampling_factor=self.oversampling_factor, init_rounds=self.init_rounds)
        sub.fit(Xs)
        for name in ("_shift", "_centers_c", "inertia_", "n_iter_", "counts_", "n_steps_",
                     "_weights", "cluster_centers_", "n_features_in_", "dtype_"):
            if hasattr(sub, name):
                setattr(self, name, getattr(sub, name))
        if hasattr(self, "labels_"):
            del self.labels_
        if is_dask(X):
            tot = reduce_rows(X, _heldout_chunk, _add, self._centers_c, self._shift, idx)
        else:
            tot = _heldout_chunk(X, 0, self._centers_c, self._shift, idx)
        self.heldout_inertia_ = float(tot[0] / tot[1]) if tot[1] else float("nan")
        self.sample_indices_ = idx
        return self


def _stream_chunks(X, order, prefetch=1):
    """Yield ``(block index, ndarray)`` for the row chunks of ``X`` in ``order``, reading ahead."""
    order = list(order)

    def load(i):
        return np.ascontiguousarray(X.blocks[int(i), 0].compute())

    with ThreadPoolExecutor(1, thread_name_prefix="nquant-prefetch") as ex:
        pending = [ex.submit(load, i) for i in order[:prefetch]]
        for pos, i in enumerate(order):
            chunk = pending.pop(0).result()
            nxt = pos + prefetch
            if nxt < len(order):
                pending.append(ex.submit(load, order[nxt]))
            yield int(i), chunk
            del chunk
