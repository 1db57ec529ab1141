"""Product quantization (Jégou et al. 2011) for NumPy, Dask and Zarr inputs.

``ProductQuantizer`` follows faiss' ``ProductQuantizer``/``IndexPQ`` (``encode``, ``decode``,
lookup tables, ``search``) and adds the table-based approximate matrix product ``dot``.  Every
sub-space has a k-means codebook, trained by Lloyd iterations in which all sub-spaces advance
together (one pass over the data per iteration; Dask inputs: a tree reduction over the row
chunks).  An empty centroid splits the largest cluster of its sub-space, as faiss does.
Encoding, decoding, search and ``dot`` run chunk by chunk (lazy for Dask inputs).
"""

from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike
from nquant._types import ArrayInput

from nquant._rows import (as_rows, check_int, check_seed, finite_mean, memory_budget, nonfinite_error,
                          reduce_rows, seeded_rng, shifted)
from nquant._threads import in_task, single_blas, task_threads
from nquant.chunked import is_dask
from nquant.errors import InputError, SchemeError
from nquant.kernels import assign as _assign
from nquant.kernels import lloyd as _lloyd
from nquant.kernels import pq as _pq

__all__ = ["ProductQuantizer"]

_METRICS = {"l2": 0, "ip": 1}
_PARALLEL_QUERIES = 64  # lookup tables of at least this many queries are built in parallel
_QUERY_BATCH = 256  # queries searched together (their tables: at most 256 x M x 1 KiB)


@in_task
def _pq_stats(x, start, CT, nbits, accumulate):
    x = as_rows(x)
    n = x.shape[0]
    M, ds, K = CT.shape
    nbytes = M if nbits == 8 else (M + 1) // 2
    codes = np.empty((n, nbytes), np.uint8)
    if accumulate:
        group = _assign.group_rows(n)
        ngroups = max(1, -(-n // group))
        sums = np.zeros((ngroups, M, K, ds))
        counts = np.zeros((ngroups, M, K), np.int64)
    else:
        group = _pq.ENCODE_GROUP
        ngroups = max(1, -(-n // group))
        sums = np.zeros((ngroups, 0, 0, 0))
        counts = np.zeros((ngroups, 0, 0), np.int64)
    d2 = np.zeros(ngroups)
    if n:
        _pq.encode_pass(x, CT.astype(x.dtype), nbits, codes, sums, counts, d2, accumulate, group)
    if not accumulate:
        return codes, float(d2.sum())
    return {"sums": sums.sum(axis=0), "counts": counts.sum(axis=0), "inertia": float(d2.sum())}


def _merge_pq(a, b):
    return {"sums": a["sums"] + b["sums"], "counts": a["counts"] + b["counts"],
            "inertia": a["inertia"] + b["inertia"]}


@in_task
def _pq_encode_chunk(x, CT, nbits):
    return _pq_stats(x, 0, CT, nbits, False)[0]


@in_task
def _pq_decode_chunk(codes, C, nbits):
    out = np.empty((codes.shape[0], C.shape[0] * C.shape[2]), C.dtype)
    if codes.shape[0]:
        _pq.decode(np.ascontiguousarray(codes), C, nbits, out)
    return out


@in_task
def _pq_dot_chunk(codes, T, nbits):
    out = np.empty((codes.shape[0], T.shape[2]), T.dtype)
    if codes.shape[0]:
        _pq.lut_dot(np.ascontiguousarray(codes), T, nbits, out)
    return out


@in_task
def _pq_search_chunk(codes, start, BT, k):
    codes = np.ascontiguousarray(codes)
    D, I = _search_bytes(BT, codes, k)
    I = np.where(I >= 0, I + start, -1)
    return D, I


def _merge_search(a, b):
    outD = np.empty_like(a[0])
    outI = np.empty_like(a[1])
    _pq.merge_topk(np.stack([a[0], b[0]], axis=1), np.stack([a[1], b[1]], axis=1), outD, outI)
    return outD, outI


def _search_bytes(BT, codes, k):
    nq = BT.shape[0]
    n = codes.shape[0]
    threads = max(1, task_threads())
    groups = -(-nq // _pq.SCAN_QUERIES)
    nsplit = max(1, min(-(-2 * threads // groups), max(1, n // _pq.SCAN_CODES)))
    pD = np.empty((nq, nsplit, k), np.float32)
    pI = np.empty((nq, nsplit, k), np.int64)
    _pq.lut_search(BT, codes, nsplit, pD, pI)
    D = np.empty((nq, k), np.float32)
    I = np.empty((nq, k), np.int64)
    _pq.merge_topk(pD, pI, D, I)
    return D, I


class ProductQuantizer:
    """Product quantizer (Jégou et al. 2011): ``M`` sub-spaces, ``2**nbits`` centroids each.

    Parameters
    ----------
    M : int
        Sub-spaces; ``n_features`` must be a multiple of ``M``.
    nbits : {8, 4}
        Bits per sub-space code: 8 gives one uint8 per sub-space; 4 packs two sub-spaces per
        byte, the first in the high nibble.
    seed : int or None
        Seed of the initialisation.
    max_iter : int
        Lloyd iterations per fit (all sub-spaces advance together: one pass per iteration).
    tol : float
        Stop when the squared codebook shift of an iteration is at most
        ``tol * mean feature variance`` (of the initialisation sample).
    init : {"random", "k-means++"}
        Initial centroids of every sub-space: ``2**nbits`` distinct random rows of the
        initialisation sample (as faiss does), or greedy k-means++ on it.  Random is the default:
        on the all-MiniLM-L6-v2 token embeddings (M=48), k-means++ gave a lower reconstruction
        error but recall@10 0.22 against 0.29 (k-means++ spends centroids on outliers); on
        Gaussian mixtures both give the same recall.
    init_size : int or None
        Rows sampled for the initialisation and the tolerance scale (None:
        ``min(n, 64 * 2**nbits)``); drawn from ``(seed, n)`` only, so any chunking of a Dask
        input gives the same codebooks (up to float64 summation order).

    Attributes
    ----------
    codebooks_ : ndarray of shape (M, 2**nbits, ds), float32 or float64
        ``ds = n_features // M``.
    inertia_ : float
        Sum of squared quantization errors at the last assignment pass (before the last update).
    n_iter_ : int
    """

    def __init__(self, M: int, nbits: int = 8, seed: int = 0, *, max_iter: int = 25, tol: float = 1e-4,
                 init: str = "random", init_size: int | None = None) -> None:
        self.M = check_int("M", M, 1)
        if init not in ("k-means++", "random"):
            raise SchemeError(f"init={init!r} is invalid: expected 'k-means++' or 'random'")
        self.init = init
        if isinstance(nbits, bool) or nbits not in (4, 8):
            raise SchemeError(f"nbits={nbits!r} is invalid: expected 4 or 8")
        self.nbits = int(nbits)
        self.seed = check_seed(seed)
        self.max_iter = check_int("max_iter", max_iter, 1)
        if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0:
            raise SchemeError(f"tol={tol!r} is invalid: expected a float >= 0")
        self.tol = float(tol)
        self.init_size = None if init_size is None else check_int("init_size", init_size, 1)

    def __repr__(self):
        return f"ProductQuantizer(M={self.M}, nbits={self.nbits}, seed={self.seed})"

    @property
    def ksub(self) -> int:
        """Centroids per sub-space, ``2**nbits``."""
        return 1 << self.nbits

    @property
    def code_size(self) -> int:
        """Bytes per encoded vector."""
        return self.M if self.nbits == 8 else (self.M + 1) // 2

    def _check_d(self, d, name="X"):
        if d % self.M:
            raise InputError(f"{name} has n_features={d}, which is not a multiple of M={self.M}")

    def _check_fitted(self):
        if not hasattr(self, "codebooks_"):
            raise SchemeError("this ProductQuantizer is not fitted yet: call fit first")

    def fit(self, X: ArrayInput) -> Self:
        """Train one k-means codebook per sub-space.

        Parameters
        ----------
        X : ndarray, dask.array.Array or zarr.Array of shape (n_samples, n_features)
            float16, float32 or float64, finite; ``n_samples >= 2**nbits``.

        Returns
        -------
        self
        """
        X = as_rows(X)
        n, d = X.shape
        self._check_d(d)
        K = self.ksub
        if n < K:
            raise InputError(f"n_samples={n} should be >= 2**nbits={K}")
        M, ds = self.M, d // self.M
        dtype = np.dtype(X.dtype)
        size = min(n, self.init_size or 64 * K)
        if size < K:
            raise InputError(f"init_size={size} should be >= 2**nbits={K}")
        if is_dask(X) and X.nbytes <= memory_budget():
            X = X.persist()  # max_iter passes: read the source once
        if size == n and not is_dask(X):
            sample = X
        else:
            idx = np.sort(seeded_rng(self.seed, 1, n).choice(n, size, replace=False))
            sample = X[idx]
            sample = np.ascontiguousarray(sample.compute() if is_dask(sample) else sample)
        mean = finite_mean(sample)
        var = float(((sample - mean) ** 2).mean()) if sample.size else 0.0
        tol_abs = self.tol * var
        C = np.empty((M, K, ds), dtype)
        with single_blas():
            for m in range(M):
                sub = np.ascontiguousarray(sample[:, m * ds:(m + 1) * ds])
                mu = mean[m * ds:(m + 1) * ds]
                rng = seeded_rng(self.seed, 2, m)
                if self.init == "random":
                    C[m] = sub[np.sort(rng.choice(sub.shape[0], K, replace=False))]
                    continue
                centers, _ = _lloyd.kmeans_plusplus(shifted(sub, mu), K, rng,
                                                    nthreads=task_threads())
                C[m] = (centers.astype(np.float64) + mu).astype(dtype)
        n_iter = 0
        inertia = np.nan
        for it in range(self.max_iter):
            CT = np.ascontiguousarray(C.transpose(0, 2, 1))
            if is_dask(X):
                st = reduce_rows(X, _pq_stats, _merge_pq, CT, self.nbits, True)
            else:
                st = _pq_stats(X, 0, CT, self.nbits, True)
            inertia = st["inertia"]
            if it == 0 and not np.isfinite(inertia):
                raise nonfinite_error()
            new = _pq_update(C, st["sums"], st["counts"])
            shift2 = float(((new.astype(np.float64) - C) ** 2).sum())
            C = new
            n_iter = it + 1
            if shift2 <= tol_abs:
                break
        self.codebooks_ = C
        self.inertia_ = float(inertia)
        self.n_iter_ = n_iter
        self.n_features_in_ = d
        return self

    def encode(self, X: ArrayInput) -> Any:
        """Codes of the rows of ``X``.

        Parameters
        ----------
        X : ndarray, dask.array.Array or zarr.Array of shape (n, n_features)

        Returns
        -------
        ndarray of shape (n, code_size), uint8 (lazy for a Dask ``X``)
            ``nbits=8``: code of sub-space ``m`` in byte ``m``; ``nbits=4``: sub-space ``2p``
            in the high nibble of byte ``p``, ``2p+1`` in its low nibble.
        """
        self._check_fitted()
        X = as_rows(X)
        self._check_d(X.shape[1])
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"X has n_features={X.shape[1]} but the quantizer has {self.n_features_in_}")
        CT = np.ascontiguousarray(self.codebooks_.transpose(0, 2, 1))
        if is_dask(X):
            return X.map_blocks(_pq_encode_chunk, CT, self.nbits, dtype=np.uint8,
                                chunks=(X.chunks[0], (self.code_size,)))
        return _pq_stats(X, 0, CT, self.nbits, False)[0]

    def _check_codes(self, codes):
        if not is_dask(codes):
            codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.code_size or codes.dtype != np.uint8:
            raise InputError(f"codes must be uint8 of shape (n, {self.code_size}); "
                             f"got {codes.dtype} {codes.shape}")
        if is_dask(codes):
            return codes.rechunk({1: -1}) if codes.numblocks[1] > 1 else codes
        return np.ascontiguousarray(codes)

    def decode(self, codes: ArrayInput) -> Any:
        """Reconstruct vectors from codes.

        Parameters
        ----------
        codes : ndarray or dask.array.Array of shape (n, code_size), uint8

        Returns
        -------
        ndarray of shape (n, n_features), dtype of the codebooks (lazy for Dask codes)
        """
        self._check_fitted()
        codes = self._check_codes(codes)
        C = self.codebooks_
        if is_dask(codes):
            return codes.map_blocks(_pq_decode_chunk, C, self.nbits, dtype=C.dtype,
                                    chunks=(codes.chunks[0], (self.n_features_in_,)))
        return _pq_decode_chunk(codes, C, self.nbits)

    def tables(self, queries: ArrayLike, metric: str = "l2") -> np.ndarray:
        """Per-query lookup tables.

        Parameters
        ----------
        queries : ndarray of shape (nq, n_features) or (n_features,)
        metric : {"l2", "ip"}
            Squared L2 distances ``||q_m - c_mj||^2`` or inner products ``q_m . c_mj``.

        Returns
        -------
        ndarray of shape (nq, M, 2**nbits), float32
        """
        Q = self._queries(queries, metric)
        out = np.empty((Q.shape[0], self.M, self.ksub), np.float32)
        CT = np.ascontiguousarray(self.codebooks_.transpose(0, 2, 1), dtype=np.float64)
        kernel = _pq.tables_parallel if Q.shape[0] >= _PARALLEL_QUERIES else _pq.tables
        if Q.shape[0]:
            kernel(Q, CT, _METRICS[metric], out)
        return out

    def _queries(self, queries, metric):
        self._check_fitted()
        if metric not in _METRICS:
            raise SchemeError(f"metric={metric!r} is invalid: expected 'l2' or 'ip'")
        Q = np.asarray(queries)
        if Q.ndim == 1:
            Q = Q[None]
        Q = as_rows(Q, "queries")
        if Q.shape[1] != self.n_features_in_:
            raise InputError(f"queries have n_features={Q.shape[1]} but the quantizer has "
                             f"{self.n_features_in_}")
        return Q

    def _byte_tables(self, Q, metric):
        """Tables indexed by code bytes (8 bits: the tables themselves), negated for ``"ip"``."""
        T = self.tables(Q, metric)
        if self.nbits == 8:
            if metric == "ip":
                np.negative(T, out=T)
            return T
        BT = np.empty((T.shape[0], self.code_size, 256), np.float32)
        _pq.byte_tables(T, self.nbits, 1.0 if metric == "l2" else -1.0, BT)
        return BT

    def search(self, queries: ArrayLike, k: int, *, codes: ArrayInput = None,
               metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
        """k nearest codes of every query by table lookup (asymmetric distance computation).

        Parameters
        ----------
        queries : ndarray of shape (nq, n_features) or (n_features,)
        k : int
        codes : ndarray or dask.array.Array of shape (n, code_size), uint8
            The database, as returned by :meth:`encode`.
        metric : {"l2", "ip"}
            Smallest approximate squared distances, or largest approximate inner products.

        Returns
        -------
        D : ndarray of shape (nq, k), float32
            Approximate squared distances ascending (``"l2"``) or inner products descending
            (``"ip"``); +inf (-inf for ``"ip"``) where the database has fewer than ``k`` codes.
        I : ndarray of shape (nq, k), int64
            Row indices into ``codes``; ties go to the lower index; -1 where missing.
        """
        k = check_int("k", k, 1)
        if codes is None:
            raise InputError("codes= is required: the encoded database to search")
        codes = self._check_codes(codes)
        Q = self._queries(queries, metric)
        if is_dask(codes):  # one pass over the chunks for all queries
            D, I = reduce_rows(codes, _pq_search_chunk, _merge_search, self._byte_tables(Q, metric), k)
        else:
            D = np.empty((Q.shape[0], k), np.float32)
            I = np.empty((Q.shape[0], k), np.int64)
            for q0 in range(0, Q.shape[0], _QUERY_BATCH):  # tables of a batch stay in cache
                q1 = min(Q.shape[0], q0 + _QUERY_BATCH)
                D[q0:q1], I[q0:q1] = _search_bytes(self._byte_tables(Q[q0:q1], metric), codes, k)
        if metric == "ip":
            D = -D
        return D, I

    def dot(self, codes: ArrayInput, B: ArrayLike) -> Any:
        """Approximate ``A @ B`` for the rows of ``A`` given as codes, from per-sub-space tables.

        Parameters
        ----------
        codes : ndarray or dask.array.Array of shape (n, code_size), uint8
        B : ndarray of shape (n_features, p) or (n_features,)

        Returns
        -------
        ndarray of shape (n, p) or (n,), dtype of the codebooks (lazy for Dask codes)
            ``sum_m C[m, code_m] . B[m*ds:(m+1)*ds]``, i.e. ``decode(codes) @ B``.
        """
        self._check_fitted()
        codes = self._check_codes(codes)
        B = np.asarray(B)
        vec = B.ndim == 1
        B2 = B[:, None] if vec else B
        if B2.ndim != 2 or B2.shape[0] != self.n_features_in_:
            raise InputError(f"B must have shape ({self.n_features_in_}, p); got {B.shape}")
        C = self.codebooks_
        ds = C.shape[2]
        B2 = B2.astype(C.dtype)
        T = np.stack([C[m] @ B2[m * ds:(m + 1) * ds] for m in range(self.M)])
        T = np.ascontiguousarray(T)
        if is_dask(codes):
            out = codes.map_blocks(_pq_dot_chunk, T, self.nbits, dtype=C.dtype,
                                   chunks=(codes.chunks[0], (T.shape[2],)))
        else:
            out = _pq_dot_chunk(codes, T, self.nbits)
        return out[:, 0] if vec else out


def _pq_update(C, sums, counts):
    """New codebooks: means; an empty centroid splits the largest cluster of its sub-space."""
    M, _, ds = C.shape
    new = C.astype(np.float64).copy()
    counts = counts.astype(np.float64).copy()
    nz = counts > 0
    new[nz] = sums[nz] / counts[nz][:, None]
    eps = 1.0 / 1024
    for m in range(M):
        for j in np.flatnonzero(counts[m] == 0):
            big = int(np.argmax(counts[m]))
            new[m, j] = new[m, big]
            sign = np.where(np.arange(ds) % 2 == 0, 1.0, -1.0)
            new[m, j] *= 1 + sign * eps
            new[m, big] *= 1 - sign * eps
            counts[m, j] = counts[m, big] / 2
            counts[m, big] -= counts[m, j]
    return new.astype(C.dtype)
