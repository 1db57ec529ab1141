"""Adaptive rounding of weight matrices against calibration data (OBQ / GPTQ error feedback).

Nearest rounding minimises each weight's own error.  What matters for a linear layer is the
error of its output on representative inputs, ``||W X - W_hat X||_F^2 = tr(E H E^T)`` with
``E = W - W_hat`` and ``H = X X^T`` the (uncentred) second moment of the calibration inputs.
:func:`adaptive_round` chooses every weight's rounding direction for that objective:

1. **Clipping search** (``clip_search=True``, Uniform schemes): for every parameter group
   (channel, block, tensor) the clipping range ``alpha * [min, max]`` is chosen from
   ``clip_grid`` to minimise the output error of nearest rounding, ``e H e^T`` summed over
   the group's rows.  The objective is exact for per-channel (``axis=0``) and per-tensor
   schemes and for blocks that hold whole rows; blocks inside a row use the block's diagonal
   block of ``H`` (cross-block terms ignored), and per-input-column scales (``axis=1``) and
   blocks that straddle rows use ``diag(H)``.
2. **Error-feedback rounding** (GPTQ, Frantar et al. 2022): with the parameters fixed, the
   input columns are visited in order (or by decreasing ``diag(H)``, ``act_order=True``);
   each column is rounded to its nearest code and its error is propagated to the columns
   not yet rounded through the upper Cholesky factor ``U`` of the damped inverse Hessian
   (``H + damp * mean(diag(H)) * I``; ``H^-1 = U^T U``).  The inner loop is the Numba kernel
   :func:`nquant.kernels.gptq.gptq_block`, blocked over ``column_block`` columns; the rest of
   each update is one BLAS product.  The Cholesky factorisations use NumPy (LAPACK).
3. **Keep the best** per row: the candidates are the error-feedback codes, nearest rounding
   with the searched parameters and plain nearest rounding with the scheme's own parameters
   (exactly what ``nq.quantize(W, scheme)`` gives).  Each row of the result takes the
   candidate with the smallest calibration objective ``e H e^T`` (undamped ``H``), so the
   result is **never worse than nearest rounding on the calibration data**; greedy error
   feedback can lose to nearest rounding on a row (on random problems mostly when ``H`` is
   rank-deficient, with fewer samples than inputs), and then that row keeps nearest rounding.
   Rows choose independently when every parameter group lies in one row (``axis=0``,
   blocks inside rows, codebooks); otherwise rows choose among candidates with the same
   parameters and the parameter set with the smaller total wins.

The result is an ordinary :class:`~nquant.containers.QuantizedArray` of the given scheme
(decoding is unchanged); ``q.info["adaptive_round"]`` records the procedure and the
calibration objectives, and ``nq.save`` stores it with the array.

Calibration statistics are mergeable, as in every other fit: ``H`` is a sum of ``X_b X_b^T``
over batches, so :func:`hessian` accumulates it from a NumPy array, a Dask array (a tree
reduction of :func:`hessian_partial` / :func:`hessian_merge`) or an iterable of batches.

Threads (``threads=None``, automatic): a matrix whose search products are small
(``2 * out * in**2 < SMALL_FLOPS``, about 2 GFLOP: every layer of MiniLM, a 1536 x 384 matrix
is 0.45 GFLOP) runs on one thread, BLAS included (:func:`nquant._threads.blas_limit`: that
limit is process-wide for the call); larger ones use Numba's and BLAS' threads.  On a few
shared cores, waiting OpenMP (Numba) and OpenBLAS threads made such a matrix several times
slower with two threads than with one (a Cholesky factorisation included).

Conventions: ``W`` has shape (out, in) and the layer computes ``W @ X`` with ``X`` of shape
(in, n_samples): **samples are columns** (pass ``X.T`` for activations stored one sample per
row).
"""

import contextlib
import dataclasses

import numba
import numpy as np
from numpy.typing import ArrayLike
from nquant._types import ArrayInput
from nquant.schemes import Scheme

from nquant import chunked
from nquant._threads import blas_limit, in_task
from nquant.api import check_input
from nquant.containers import QuantizedArray
from nquant.errors import InputError, SchemeError
from nquant.codebooks.optimal1d import kmeans1d
from nquant.families import blockwise, codebook, uniform
from nquant.families.registry import family
from nquant.kernels import gptq
from nquant.kernels.codebook1d import fill_thresholds
from nquant.kernels.rounding import NEAREST
from nquant.packing import pack_codes
from nquant.schemes import Blockwise, Codebook, Uniform

__all__ = ["adaptive_round", "adaptive_codebook", "factor_hessian", "FactoredHessian", "fit_levels",
           "hessian", "hessian_partial", "hessian_merge", "hessian_finalize", "DEFAULT_CLIP_GRID"]

FORMAT_VERSION = 1

DEFAULT_CLIP_GRID = tuple(round(1.0 - 0.05 * k, 2) for k in range(11))
"""Default shrink factors of the clipping search: 1.00, 0.95, ..., 0.50."""

CLIP_REFINE = 4
"""Default refinement steps on each side of the best grid value (0.01 apart by default)."""


# ----------------------------------------------------------------------------- Hessian statistics


def _as_samples(X, name="X"):
    """``X`` as a 2-D float64 array (in, n); a 1-D array is one sample."""
    a = np.asarray(X)
    if a.dtype.kind not in "fiu":
        raise InputError(f"{name} dtype={a.dtype} is invalid: expected real numbers")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise InputError(f"{name} shape={a.shape} is invalid: expected (in, n_samples)")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains {int((~np.isfinite(a)).sum())} non-finite value(s) "
                         "(NaN or inf); calibration inputs must be finite")
    return a


def hessian_partial(X, start=None, global_shape=None):
    """Mergeable statistics of one batch (or chunk) of calibration inputs.

    Parameters
    ----------
    X : array_like of shape (in, n) (or (in,) for one sample), float or integer
        Inputs as columns: the layer computes ``W @ X``.
    start, global_shape : ignored (the chunk protocol's arguments)

    Returns
    -------
    dict
        ``H``: ndarray of shape (in, in), float64, ``X @ X.T``; ``n``: int, samples.
    """
    a = _as_samples(X)
    return {"H": a @ a.T, "n": int(a.shape[1])}


def hessian_merge(a, b):
    """Merge two :func:`hessian_partial` results (associative and commutative)."""
    if a["H"].shape != b["H"].shape:
        raise InputError(f"cannot merge Hessians of shapes {a['H'].shape} and {b['H'].shape}: "
                         "every batch must have the same number of input features (rows)")
    return {"H": a["H"] + b["H"], "n": a["n"] + b["n"]}


def hessian_finalize(stats):
    """``H`` (in, in) float64 from merged statistics, made exactly symmetric."""
    H = np.asarray(stats["H"], dtype=np.float64)
    return (H + H.T) * 0.5


def _is_batches(X):
    """Whether ``X`` is a stream of batches: an iterator, or a list/tuple of arrays."""
    if chunked.is_dask(X) or isinstance(X, np.ndarray) or hasattr(X, "__array__") or np.isscalar(X):
        return False
    if isinstance(X, (list, tuple)):
        return len(X) == 0 or all(isinstance(b, np.ndarray) or hasattr(b, "__array__") for b in X)
    return hasattr(X, "__iter__")


@in_task
def _partial_task(block):
    return hessian_partial(block)


def hessian_stats(X, *, split_every=chunked.SPLIT_EVERY):
    """Merged :func:`hessian_partial` statistics of ``X`` (see :func:`hessian`)."""
    if chunked.is_dask(X):
        if X.ndim not in (1, 2):
            raise InputError(f"X shape={X.shape} is invalid: expected (in, n_samples)")
        if X.ndim == 1:
            X = X[:, None]
        X = X.rechunk({0: -1})  # every partial needs whole columns (all input features)
        return chunked.tree_reduce(X, _partial_task, hessian_merge, split_every=split_every)
    if not _is_batches(X):
        return hessian_partial(X)
    try:
        batches = iter(X)
    except TypeError:
        raise InputError(f"X of type {type(X).__name__} is invalid: expected an array (in, n), "
                         "a Dask array or an iterable of batches") from None
    st = None
    for b in batches:
        p = hessian_partial(b)
        st = p if st is None else hessian_merge(st, p)
    if st is None:
        raise InputError("X is an empty iterable: expected at least one batch of inputs")
    return st


def hessian(X: ArrayInput, *, split_every: int = chunked.SPLIT_EVERY) -> np.ndarray:
    """Hessian ``H = sum of X_b X_b^T`` of a layer's calibration inputs.

    Parameters
    ----------
    X : ndarray of shape (in, n), dask.array.Array of shape (in, n), or iterable of arrays
        of shape (in, n_b)
        Inputs as columns (the layer computes ``W @ X``).  A Dask array is reduced chunk by
        chunk (chunks along ``in`` are merged first: every partial needs whole columns) in a
        tree of :func:`hessian_merge` calls, ``split_every`` at a time; an iterable is a
        stream of batches, merged one by one.
    split_every : int

    Returns
    -------
    ndarray of shape (in, in), float64, symmetric
        Sums in float64; any chunking gives the in-memory result to float tolerance.
    """
    return hessian_finalize(hessian_stats(X, split_every=split_every))


# ----------------------------------------------------------------------------- validation


def _check_weights(W):
    if chunked.is_dask(W):
        W = W.compute()
    a = check_input(W, "W")
    if a.ndim != 2:
        raise InputError(f"W shape={a.shape} is invalid: expected a 2-D weight matrix (out, in)")
    if a.size == 0:
        raise InputError(f"W shape={a.shape} is invalid: expected a non-empty matrix")
    if not np.isfinite(a).all():
        raise InputError(f"W contains {int((~np.isfinite(a)).sum())} non-finite value(s) (NaN or "
                         "inf); adaptive rounding needs finite weights")
    return a


SYMMETRY_TOL = 1e-5
"""Relative tolerance (to ``max |H|``) of the symmetry check: a Hessian summed in float32 passes,
a square matrix of inputs practically never does."""


def _looks_symmetric(a):
    scale = float(np.abs(a).max()) if a.size else 0.0
    return bool(np.allclose(a, a.T, rtol=0.0, atol=SYMMETRY_TOL * scale))


def _hessian_of(X_or_H, n_in, kind):
    """``(H float64 (in, in), n_samples or None)`` from inputs, a Hessian or merged stats."""
    if kind not in ("auto", "inputs", "hessian"):
        raise SchemeError(f"kind={kind!r} is invalid: expected 'auto', 'inputs' or 'hessian'")
    if isinstance(X_or_H, FactoredHessian):  # checked and symmetrised when it was factored
        if X_or_H.H.shape != (n_in, n_in):
            raise InputError(f"H shape={X_or_H.H.shape} does not match W with in={n_in} columns: expected "
                             f"({n_in}, {n_in})")
        return X_or_H.H, X_or_H.n_samples
    if isinstance(X_or_H, dict):
        if "H" not in X_or_H:
            raise InputError("X_or_H is a dict without 'H': expected hessian_partial/hessian_merge "
                             "statistics")
        H, n = hessian_finalize(X_or_H), X_or_H.get("n")
    elif chunked.is_dask(X_or_H) or _is_batches(X_or_H):
        if kind == "hessian":
            X_or_H = np.asarray(X_or_H)
            H, n = X_or_H, None
        else:
            st = hessian_stats(X_or_H)
            H, n = hessian_finalize(st), st["n"]
    else:
        a = np.asarray(X_or_H)
        if a.dtype.kind not in "fiu":
            raise InputError(f"X_or_H dtype={a.dtype} is invalid: expected real numbers")
        square = a.ndim == 2 and a.shape == (n_in, n_in)
        if kind == "hessian" or (kind == "auto" and square and np.isfinite(a).all()
                                 and _looks_symmetric(a) and (np.diag(a) >= 0).all()):
            H, n = a, None
        else:
            if a.ndim == 2 and a.shape[0] != n_in:
                hint = "; X looks like samples-as-rows, pass X.T" if a.shape[1] == n_in else ""
                raise InputError(f"X shape={a.shape} does not match W with in={n_in} columns: "
                                 f"expected inputs (in={n_in}, n_samples) for W @ X{hint}")
            st = hessian_partial(a)
            H, n = hessian_finalize(st), st["n"]
    H = np.asarray(H, dtype=np.float64)
    if n is not None and H.shape != (n_in, n_in):
        raise InputError(f"X has {H.shape[0]} input features (rows) but W has in={n_in} columns: "
                         f"expected inputs (in={n_in}, n_samples) for W @ X")
    if H.shape != (n_in, n_in):
        raise InputError(f"H shape={H.shape} does not match W with in={n_in} columns: expected "
                         f"({n_in}, {n_in})")
    if not np.isfinite(H).all():
        raise InputError(f"H contains {int((~np.isfinite(H)).sum())} non-finite value(s) (NaN or inf)")
    if not _looks_symmetric(H):
        raise InputError("H is not symmetric: expected H = X @ X.T (see nquant.adaptive.hessian)")
    if (np.diag(H) < 0).any():
        raise InputError("H has negative diagonal entries: expected a positive semi-definite X @ X.T")
    return (H + H.T) * 0.5, n


def _check_options(scheme, damp, column_block, clip_grid):
    if not isinstance(scheme, (Uniform, Codebook, Blockwise)):
        family(scheme)  # SchemeError for non-schemes
        raise SchemeError(f"scheme type={scheme.type!r} is not supported by adaptive_round: expected "
                          "a Uniform (per tensor, per channel or per block), a Codebook or a Blockwise "
                          "scheme")
    if getattr(scheme, "rounding", "nearest") != "nearest":
        raise SchemeError(f"rounding={scheme.rounding!r} is invalid for adaptive_round: expected "
                          "'nearest' (adaptive rounding chooses each rounding direction itself)")
    if not (isinstance(damp, (int, float)) and not isinstance(damp, bool) and 0 <= damp < np.inf):
        raise SchemeError(f"damp={damp!r} is invalid: expected a number >= 0 (a fraction of the "
                          "mean diagonal of H)")
    if isinstance(column_block, bool) or not isinstance(column_block, (int, np.integer)) or column_block < 1:
        raise SchemeError(f"column_block={column_block!r} is invalid: expected an integer >= 1")
    grid = np.asarray(DEFAULT_CLIP_GRID if clip_grid is None else clip_grid, dtype=np.float64).reshape(-1)
    if grid.size == 0 or not np.isfinite(grid).all() or (grid <= 0).any() or (grid > 1).any():
        raise SchemeError(f"clip_grid={clip_grid!r} is invalid: expected shrink factors in (0, 1]")
    return grid


# ----------------------------------------------------------------------------- helpers


SMALL_FLOPS = 2 ** 31
"""Below this many flops per search product (``2 * out * in**2``), ``threads=None`` means 1."""

@contextlib.contextmanager
def thread_limit(n):
    """Numba kernels called from this thread use ``n`` threads, and BLAS ``n`` (process-wide).

    ``n=None``: unchanged.
    """
    if n is None:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        with blas_limit(n):
            yield
    finally:
        numba.set_num_threads(old)


def auto_threads(shape, threads=None):
    """Threads for a weight of ``shape``: ``threads`` if given, 1 for small problems, else None."""
    if threads is not None:
        return threads
    out, n = shape
    return 1 if 2.0 * out * n * n < SMALL_FLOPS else None


def group_index(scheme, shape):
    """Parameter group of every element of a 2-D ``W`` of ``shape``: int64 (out, in)."""
    out, n = shape
    if isinstance(scheme, Codebook):
        return np.zeros(shape, np.int64)
    if scheme.block_size is not None:
        return (np.arange(out * n, dtype=np.int64) // scheme.block_size).reshape(shape)
    axis = uniform.norm_axis(scheme, 2)
    if axis is None:
        return np.zeros(shape, np.int64)
    if axis == 0:
        return np.repeat(np.arange(out, dtype=np.int64)[:, None], n, axis=1)
    return np.repeat(np.arange(n, dtype=np.int64)[None, :], out, axis=0)


def row_separable(scheme, shape):
    """Whether every parameter group lies within one row of ``W`` (rows then choose freely)."""
    out, n = shape
    if out == 1 or isinstance(scheme, Codebook):
        return True
    if scheme.block_size is not None:
        return n % scheme.block_size == 0
    return uniform.norm_axis(scheme, 2) == 0


def search_segments(scheme, shape):
    """How the clipping search evaluates ``e H e^T`` per group.

    Returns
    -------
    ``("row", None)`` (exact: groups hold whole rows), ``("block", B)`` (blocks of ``B``
    columns inside rows: the block's diagonal block of ``H``) or ``("diag", None)``
    (``diag(H)`` only).
    """
    out, n = shape
    if scheme.block_size is not None:
        B = scheme.block_size
        if B % n == 0 or out == 1 and B >= n:
            return "row", None
        if n % B == 0:
            return "block", B
        return "diag", None
    axis = uniform.norm_axis(scheme, 2)
    if axis is None or axis == 0 or out == 1:
        return "row", None
    return "diag", None


def _element_objective(E, H, segments):
    """Per-element contributions ``E * (E H)`` restricted to the search segments."""
    mode, B = segments
    if mode == "row":
        return E * (E @ H)
    if mode == "diag":
        return E * E * np.diag(H)[None, :]
    c = np.empty_like(E)
    for s in range(0, E.shape[1], B):
        Ek = E[:, s:s + B]
        c[:, s:s + B] = Ek * (Ek @ H[s:s + B, s:s + B])
    return c


def row_objective(W64, W_hat, H):
    """``e_r H e_r^T`` for every row ``r`` of ``E = W - W_hat``: float64 (out,)."""
    E = W64 - np.asarray(W_hat, dtype=np.float64)
    return gptq.row_objective(E, E @ H)


def search_clipping(scheme, W, H, grid, refine=CLIP_REFINE):
    """Uniform parameters with each group's clipping range chosen for the output error.

    Every group tries the shrink factors ``alpha`` of ``grid`` (its range is
    ``alpha * [min, max]``, parameters as ``uniform.finalize`` computes them for that
    range), then ``alpha_best + k * step`` for ``k = +-1 .. +-refine`` with
    ``step = refine_step(grid, refine)`` (kept in (0, 1]).  The objective is the output
    error of nearest rounding, ``e H e^T`` restricted as :func:`search_segments` says.  A
    group keeps the first ``alpha`` (in that order) with the smallest objective.

    Parameters
    ----------
    scheme : Uniform
    W : ndarray of shape (out, in), float16/32/64, finite
    H : ndarray of shape (in, in), float64 (undamped)
    grid : ndarray of float64, shrink factors in (0, 1]
    refine : int >= 0, refinement steps on each side of the best grid value

    Returns
    -------
    params : dict of side arrays (as ``uniform.finalize``), per group the best ``alpha``
    alpha : ndarray of shape (G,), float64, the chosen shrink factors
    objective : ndarray of shape (G,), float64, the group's objective at ``alpha``
    """
    base = scheme.replace(range="minmax")
    Wc = np.ascontiguousarray(W, dtype=uniform.compute_dtype(W.dtype))
    W64 = W.astype(np.float64)
    st = uniform.partial(base, Wc)
    gidx = group_index(scheme, W.shape).reshape(-1)
    G = len(st["min"])
    segments = search_segments(scheme, W.shape)
    best = np.full(G, np.inf)
    alpha = np.ones(G)
    params = None

    def evaluate(a):
        nonlocal params
        p = uniform.finalize(base, {"min": st["min"] * a, "max": st["max"] * a, "n_nan": 0})
        codes = uniform.encode(base, p, Wc)
        W_hat = uniform.decode(base, p, codes, dtype=W.dtype)
        c = _element_objective(W64 - W_hat.astype(np.float64), H, segments)
        obj = np.bincount(gidx, weights=c.reshape(-1), minlength=G)
        if params is None:
            params = {k: v.copy() for k, v in p.items()}
            better = np.ones(G, bool)
        else:
            better = obj < best
        for k in params:
            params[k][better] = p[k][better]
        best[better] = obj[better]
        alpha[better] = a[better]

    for a in grid:
        evaluate(np.full(G, a))
    step = refine_step(grid, refine)
    centre = alpha.copy()
    for k in range(1, refine + 1):
        for sign in (-1.0, 1.0):
            evaluate(np.clip(centre + sign * k * step, step, 1.0))
    return params, alpha, best


def refine_step(grid, refine):
    """Step of the refinement around the best grid value: the grid's smallest spacing
    divided by ``refine + 1`` (so that the refinement fills the gap between grid values)."""
    g = np.unique(np.asarray(grid, dtype=np.float64))
    gap = float(np.diff(g).min()) if g.size > 1 else float(g[0]) / 2
    return gap / (refine + 1)


def _factor(H, damp, perm):
    """Upper Cholesky factor ``U`` of ``(P H P^T + damp I)^-1`` (``H^-1 = U^T U``).

    Columns with ``H[j, j] == 0`` (inputs that are always zero) get ``H[j, j] = 1``: their
    error reaches no output and propagates nowhere.
    """
    H = H[np.ix_(perm, perm)].copy()
    d = np.diag(H).copy()
    d[d == 0] = 1.0
    n = H.shape[0]
    H[np.diag_indices(n)] = d + damp * float(d.mean())
    singular = InputError(f"H is singular (not positive definite) with damp={damp!r}: the "
                          "calibration inputs do not span the input space (fewer samples than "
                          "inputs, or linearly dependent inputs); pass damp > 0 (e.g. 0.01) or "
                          "more calibration data")
    try:
        L = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        raise singular from None
    piv = np.diag(L) ** 2
    if not (piv > n * np.finfo(np.float64).eps * np.diag(H).max()).all():
        raise singular
    Linv = np.linalg.inv(L)
    Hinv = Linv.T @ Linv
    try:
        U = np.linalg.cholesky((Hinv + Hinv.T) * 0.5).T
    except np.linalg.LinAlgError:
        raise singular from None
    return np.ascontiguousarray(U)


@dataclasses.dataclass(frozen=True, eq=False)
class FactoredHessian:
    """A checked Hessian with the factor error feedback uses (:func:`factor_hessian`).

    Attributes
    ----------
    H : float64 (in, in), symmetric; n_samples : int or None
    damp : float; act_order : bool; perm : int64 (in,), the column order
    U : float64 (in, in), upper Cholesky factor of the damped, permuted inverse Hessian
    """

    H: np.ndarray
    n_samples: int | None
    damp: float
    act_order: bool
    perm: np.ndarray
    U: np.ndarray


def factor_hessian(X_or_H: ArrayInput, *, damp: float = 0.01, act_order: bool = True,
                   kind: str = "auto") -> FactoredHessian:
    """The Hessian of ``X_or_H`` checked and factored once, for several roundings of weights that
    read the same inputs (or one weight at several schemes).

    Pass the result as ``X_or_H`` of :func:`adaptive_round` / :func:`adaptive_codebook`: with the
    same ``damp`` and ``act_order`` they skip the checks and the factorisation (``O(in**3)``, the
    larger part of a small layer's rounding); with others they factor ``H`` again.

    Parameters
    ----------
    X_or_H : as :func:`adaptive_round` (inputs (in, n_samples), a Hessian (in, in), statistics)
    damp, act_order, kind : as :func:`adaptive_round` (``act_order`` defaults to True, as in
        :func:`adaptive_codebook`)
    """
    if not (isinstance(damp, (int, float)) and not isinstance(damp, bool) and 0 <= damp < np.inf):
        raise SchemeError(f"damp={damp!r} is invalid: expected a number >= 0 (a fraction of the "
                          "mean diagonal of H)")
    lazy = isinstance(X_or_H, dict) or chunked.is_dask(X_or_H) or _is_batches(X_or_H)
    a = X_or_H if lazy else np.asarray(X_or_H)
    n_in = int(np.shape(a["H"] if isinstance(a, dict) else a)[0])
    H, n = _hessian_of(a, n_in, kind)
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(n_in)
    return FactoredHessian(H, None if n is None else int(n), float(damp), bool(act_order), perm,
                           _factor(H, float(damp), perm))


def fit_levels(V, weights, k, bins=None):
    """``k`` levels of minimum weighted squared error for the values ``V`` (mostly in [-1, 1]).

    ``bins=None``: exact weighted 1-D k-means over every value (:func:`nquant.codebooks.kmeans1d`).
    Otherwise the values are first merged into ``bins`` equal bins over [-1, 1] (each bin one
    point at its weighted mean, with its total weight), then exact weighted k-means runs over the
    bins' means: the fit's cost no longer grows with the tensor's size, and the levels differ
    from the exact ones only where a bin (``2 / bins`` wide) holds values of two clusters.
    ``weights=None``: every value weighs 1.
    """
    V = np.asarray(V, np.float64).reshape(-1)
    w = np.ones_like(V) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if bins is None:
        return kmeans1d(V, k, weights=None if weights is None else w).centers
    idx = np.clip(np.floor((V + 1.0) * (bins / 2.0)), 0, bins - 1).astype(np.int64)  # outside: the end bins
    wb = np.bincount(idx, weights=w, minlength=bins)
    sb = np.bincount(idx, weights=w * V, minlength=bins)
    keep = wb > 0
    return kmeans1d(sb[keep] / wb[keep], k, weights=wb[keep]).centers


def _kernel_quantizer(scheme, params, W_dtype):
    """Kernel arguments ``(kind, inv, scale, offset, c0, hi, thr, levels)`` in float64."""
    f64 = np.dtype(np.float64)
    empty = np.zeros(1)
    if isinstance(scheme, (Codebook, Blockwise)):
        if isinstance(scheme, Codebook):
            levels = np.asarray(codebook._levels(scheme, params, uniform.compute_dtype(W_dtype)), f64)
        else:
            levels = np.asarray(np.float32(scheme.codebook), f64)
        thr = np.empty(max(len(levels) - 1, 0), f64)
        if thr.size:
            fill_thresholds(levels, NEAREST, thr)
        if isinstance(scheme, Codebook):
            return gptq.TABLE, empty, empty, empty, empty, 0.0, thr, levels
        # the blocks' absmax as decoding uses it, and its float32 reciprocal as encoding does
        absmax = blockwise.block_absmax(scheme, params)
        inv = np.where(absmax > 0, np.float32(1) / np.maximum(absmax, np.float32(1e-38)), np.float32(0))
        return gptq.SCALED_TABLE, inv.astype(f64), absmax.astype(f64), empty, empty, 0.0, thr, levels
    scale, inv, offset, c0 = uniform.kernel_params(scheme, params, f64)
    hi, _ = uniform.code_limits(scheme)
    return gptq.AFFINE, inv, scale, offset, c0, float(hi), np.zeros(0), np.zeros(1)


def gptq_codes(W64, U, perm, gidx, quantizer, column_block):
    """Error-feedback codes (uint8, unsigned as stored) of ``W64`` (out, in), float64.

    ``U`` is the factor of the permuted Hessian (:func:`_factor`); ``perm`` the column order.
    """
    R, n = W64.shape
    Wp = np.ascontiguousarray(W64[:, perm])
    gp = np.ascontiguousarray(gidx[:, perm])
    codes = np.empty((R, n), np.uint8)
    kind, inv, scale, offset, c0, hi, thr, levels = quantizer
    for i1 in range(0, n, column_block):
        i2 = min(i1 + column_block, n)
        E = np.empty((R, i2 - i1))
        gptq.gptq_block(Wp, U, i1, i2, gp, kind, inv, scale, offset, c0, hi, thr, levels, codes, E)
        if i2 < n:
            Wp[:, i2:] -= E @ U[i1:i2, i2:]
    out = np.empty_like(codes)
    out[:, perm] = codes
    return out


def select_rows(scheme, shape, candidates, objs):
    """Best candidate per row on the calibration objective.

    Parameters
    ----------
    scheme : Uniform or Codebook
    shape : (out, in) of ``W``
    candidates : list of ``(label, params, codes)``; codes uint8 (out, in)
    objs : ndarray of shape (len(candidates), out), float64, ``e_r H e_r^T`` per row

    Returns
    -------
    codes : ndarray of shape (out, in), uint8
    params : dict of side arrays
    which : ndarray of shape (out,), int64, the candidate each row took

    When every parameter group lies in one row (:func:`row_separable`), each row takes its
    best candidate and the groups of that row its parameters.  Otherwise rows choose only
    among candidates sharing the parameters of the first candidate with the smallest total
    objective over such per-row choices.
    """
    out = shape[0]
    rows = np.arange(out)
    # candidates sharing parameters (by identity)
    sets = []
    for i, (_, p, _) in enumerate(candidates):
        for s in sets:
            if candidates[s[0]][1] is p:
                s.append(i)
                break
        else:
            sets.append([i])
    if row_separable(scheme, shape) or len(sets) == 1:
        allowed = [list(range(len(candidates)))]
    else:
        allowed = sets
    best_total, best = np.inf, None
    for members in allowed:
        which = np.full(out, members[0], np.int64)
        for i in members[1:]:
            which[objs[i] < objs[which, rows]] = i
        total = objs[which, rows].sum()
        if total < best_total or best is None:
            best_total, best = total, which
    which = best
    codes = np.empty_like(candidates[0][2])
    for i, (_, _, c) in enumerate(candidates):
        codes[which == i] = c[which == i]
    used = [s for s in sets if np.isin(which, s).any()]
    params = {k: v.copy() for k, v in candidates[used[0][0]][1].items()}
    if len(used) > 1:  # row-separable: every group takes the parameters of its row's candidate
        row_of_group = np.zeros(len(params["scale"]), np.int64)
        row_of_group[group_index(scheme, shape).reshape(-1)] = np.repeat(rows, shape[1])
        for s in used[1:]:
            groups = np.isin(which, s)[row_of_group]
            p = candidates[s[0]][1]
            for k in params:
                params[k][groups] = p[k][groups]
    return codes, params, which


def _stored_result(W, W64, Wc, H, scheme, params, codes, obj, obj_nearest, rows, rerun):
    """The result in ``scheme``'s stored layout from that of its plain form (per-group
    ``params``, ``codes``, row objectives ``obj``, ``obj_nearest``, ``rows`` counts).

    Packed or absent zero points are the same grid: the codes stay.  Double-quantized scales
    are raised to their 8-bit codes' levels: the codes are chosen again on the stored grid
    (``rerun(side)``: error feedback, and nearest rounding per row: rows ``"gptq"`` and
    ``"nearest_stored"``), and the scheme's own ``nq.quantize`` result (``"nearest"``) is taken
    instead when its total objective is lower.
    """
    side = uniform.stored_side(scheme, params)
    if not scheme.double_quant:
        return codes, side, obj, obj_nearest, rows
    out = W64.shape[0]
    candidates = [("gptq", side, rerun(side)), ("nearest_stored", side, uniform.encode(scheme, side, Wc))]
    fit_params = uniform.fit(scheme, Wc)
    nearest = ("nearest", fit_params, uniform.encode(scheme, fit_params, Wc))
    objs = np.stack([row_objective(W64, uniform.decode(scheme, p, c, dtype=W.dtype), H)
                     for _, p, c in candidates + [nearest]])
    codes, side, which = select_rows(scheme, W64.shape, candidates, objs[:2])
    obj = objs[which, np.arange(out)]
    rows = {label: int((which == i).sum()) for i, (label, _, _) in enumerate(candidates)}
    rows["nearest"] = 0
    if objs[2].sum() < obj.sum():  # the scheme's own rounding wins on the stored grid
        codes, side, obj = nearest[2], fit_params, objs[2]
        rows = {"gptq": 0, "nearest_stored": 0, "nearest": out}
    return codes, side, obj, objs[2], rows


# ----------------------------------------------------------------------------- adaptive_round


def adaptive_round(W: ArrayLike, X_or_H: ArrayInput, scheme: Scheme, *, damp: float = 0.01, act_order: bool = False,
                   clip_search: bool = True, clip_grid: ArrayLike | None = None, clip_refine: int = CLIP_REFINE,
                   column_block: int = 128, kind: str = "auto", threads: int | None = None) -> QuantizedArray:
    """Quantize a weight matrix, choosing every rounding against calibration inputs.

    Minimises the layer's output error ``||W X - W_hat X||_F`` on the calibration inputs
    (module docstring: clipping search, GPTQ error-feedback rounding, best-of per row).

    Parameters
    ----------
    W : ndarray of shape (out, in), float16, float32 or float64, finite
        The weight of a layer computing ``W @ X`` (PyTorch's ``Linear.weight``).
    X_or_H : calibration data, one of
        - inputs, ndarray of shape (in, n_samples) (samples as columns),
        - a Dask array of shape (in, n_samples) or an iterable of batches (in, n_b),
        - the Hessian ``H = X @ X.T``, ndarray of shape (in, in) (:func:`hessian`),
        - merged statistics from :func:`hessian_partial` / :func:`hessian_merge`.
    scheme : Uniform, Codebook or Blockwise, with ``rounding="nearest"``
        Any Uniform granularity (per tensor, ``axis=0`` per output channel, ``axis=1``,
        ``block_size``), code range and side array options (``scale_dtype``, packed or absent
        zero points; with ``double_quant`` the searched block scales are double-quantized and
        the codes chosen again on that stored grid); any sorted grid (Codebook); absmax-scaled
        blocks coded to a grid (Blockwise: NF4, fitted codebooks, double quantization), the
        absmax values fixed by the scheme's fit (see :func:`adaptive_codebook`).
    damp : float >= 0, default 0.01
        Damping added to the diagonal of ``H``, as a fraction of its mean.  ``damp=0`` with a
        singular ``H`` raises ``InputError``.
    act_order : bool, default False
        Visit the columns by decreasing ``diag(H)`` (GPTQ's activation order).
    clip_search : bool, default True
        Search each group's clipping range (Uniform schemes; ignored for Codebook).
    clip_grid : sequence of float in (0, 1], default ``DEFAULT_CLIP_GRID`` (1.00, 0.95 .. 0.50)
        Shrink factors ``alpha`` of the min/max range tried by the search.
    clip_refine : int >= 0, default 4
        Then ``alpha_best +- k * step``, ``k = 1..clip_refine``, with ``step`` the grid's
        spacing over ``clip_refine + 1`` (0.01 by default).
    column_block : int, default 128
        Columns per block of the error-feedback loop (cache blocking; the result does not
        depend on it beyond float rounding).
    kind : "auto", "inputs" or "hessian"
        How to read an ndarray ``X_or_H``: ``"auto"`` takes an (in, in) array that is symmetric
        (to ``SYMMETRY_TOL`` relative) with a non-negative diagonal as ``H``, anything else as
        inputs; pass ``kind="inputs"`` for inputs that happen to be a symmetric square matrix.
    threads : int or None
        Threads for the Numba kernels and BLAS during the call; ``None``: one thread for
        small matrices (``2 * out * in**2 < SMALL_FLOPS``), the current settings otherwise
        (see the module notes).

    Returns
    -------
    QuantizedArray
        Of ``scheme`` and the dtype of ``W``, built as ``nq.quantize`` builds one (packed
        codes, side arrays of the scheme's family), so ``nq.dequantize`` decodes it unchanged.
        ``q.info["adaptive_round"]`` (JSON-serialisable, stored by ``nq.save``) holds
        ``method``, the options, ``n_samples``, the calibration objectives
        ``objective_nearest`` / ``objective`` (``tr(E H E^T)``) and the relative output
        errors ``rel_error_nearest`` / ``rel_error`` (``||E X|| / ||W X||``), and how many rows
        took each candidate (``rows``).

    Raises
    ------
    SchemeError : unsupported scheme or invalid option
    InputError : W not a finite 2-D float matrix, inputs of the wrong shape, NaN/inf in the
        inputs or ``H``, ``H`` singular without damping
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise SchemeError(f"threads={threads!r} is invalid: expected None or an integer >= 1")
    shape = np.shape(W)
    with thread_limit(auto_threads(shape, threads) if len(shape) == 2 else None):
        return _adaptive_round(W, X_or_H, scheme, damp, act_order, clip_search, clip_grid,
                               clip_refine, column_block, kind)


def _adaptive_round(W, X_or_H, scheme, damp, act_order, clip_search, clip_grid, clip_refine,
                    column_block, kind):
    W = _check_weights(W)
    grid = _check_options(scheme, damp, column_block, clip_grid)
    if isinstance(clip_refine, bool) or not isinstance(clip_refine, (int, np.integer)) or clip_refine < 0:
        raise SchemeError(f"clip_refine={clip_refine!r} is invalid: expected an integer >= 0")
    out, n = W.shape
    H, n_samples = _hessian_of(X_or_H, n, kind)
    fam = family(scheme)
    # the search and the rounding run on one scale and zero point per group (side arrays that
    # mix per group); the result is stored as the scheme says at the end (_stored_result)
    work = uniform.plain_scheme(scheme) if isinstance(scheme, Uniform) else scheme
    Wc = np.ascontiguousarray(W, dtype=uniform.compute_dtype(W.dtype))
    W64 = W.astype(np.float64)
    gidx = group_index(scheme, W.shape)

    if isinstance(X_or_H, FactoredHessian) and X_or_H.damp == float(damp) and X_or_H.act_order == bool(act_order):
        perm, U = X_or_H.perm, X_or_H.U     # factored once for several roundings
    else:
        perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(n)
        U = _factor(H, float(damp), perm)

    # the scheme's own fit (nearest rounding with it is nq.quantize) and the searched ranges
    fit_params = fam.fit(work, Wc)
    alpha = None
    if clip_search and isinstance(scheme, Uniform):
        params, alpha, _ = search_clipping(work, W, H, grid, int(clip_refine))
    else:
        params = fit_params
    quantizer = _kernel_quantizer(work, params, W.dtype)
    candidates = [  # (label, params, codes), in order of preference: ties keep the earlier one
        ("gptq", params, gptq_codes(W64, U, perm, gidx, quantizer, int(column_block))),
        ("nearest", fit_params, fam.encode(work, fit_params, Wc)),
    ]
    if alpha is not None:
        candidates.insert(1, ("nearest_clipped", params, fam.encode(work, params, Wc)))
    objs = np.stack([row_objective(W64, fam.decode(work, p, c, dtype=W.dtype), H)
                     for _, p, c in candidates])                        # (candidates, out)
    codes, params, which = select_rows(work, W.shape, candidates, objs)
    obj = objs[which, np.arange(out)]
    obj_nearest = objs[len(candidates) - 1]
    rows = {label: int((which == i).sum()) for i, (label, _, _) in enumerate(candidates)}
    if work is not scheme:
        codes, params, obj, obj_nearest, rows = _stored_result(
            W, W64, Wc, H, scheme, params, codes, obj, obj_nearest, rows,
            lambda p: gptq_codes(W64, U, perm, gidx, _kernel_quantizer(scheme, p, W.dtype), int(column_block)))
    ref = float(np.einsum("ij,ij->", W64 @ H, W64))
    total, total_nearest = float(obj.sum()), float(obj_nearest.sum())
    info = {
        "format_version": FORMAT_VERSION,
        "method": "gptq",
        "damp": float(damp),
        "act_order": bool(act_order),
        "clip_search": alpha is not None,
        "clip_grid": [float(v) for v in grid] if alpha is not None else None,
        "clip_refine": int(clip_refine) if alpha is not None else None,
        "alpha_mean": float(alpha.mean()) if alpha is not None else None,
        "column_block": int(column_block),
        "n_samples": None if n_samples is None else int(n_samples),
        "objective": total,
        "objective_nearest": total_nearest,
        "rel_error": float(np.sqrt(max(total, 0.0) / ref)) if ref > 0 else 0.0,
        "rel_error_nearest": float(np.sqrt(max(total_nearest, 0.0) / ref)) if ref > 0 else 0.0,
        "rows": rows,
    }
    return QuantizedArray(scheme=scheme, shape=W.shape, dtype=W.dtype,
                          codes=pack_codes(codes, scheme.bits), bits=scheme.bits,
                          side=chunked.public(params), info={"adaptive_round": info})


# ----------------------------------------------------------------------------- fitted codebooks


def adaptive_codebook(W: ArrayLike, X_or_H: ArrayInput, bits: int = 4, *, block_size: int | None = None,
                      damp: float = 0.01, act_order: bool = True, column_block: int = 128, kind: str = "auto",
                      threads: int | None = None, bins: int | None = None,
                      **blockwise_options) -> QuantizedArray:
    """Calibrated rounding of a weight matrix to a codebook fitted to it, blocks scaled by their absmax.

    ``W`` is coded as a :class:`~nquant.schemes.Blockwise` array whose blocks are its rows (or
    ``block_size`` columns of a row): ``W_hat = levels[code] * s`` with ``s`` the block's absmax.
    The ``2**bits`` levels are the exact weighted 1-D k-means (:func:`nquant.codebooks.kmeans1d`)
    of ``V = W / s``, each value weighted by its share of the layer's output error,
    ``s**2 * H_jj``; :func:`adaptive_round` then chooses the codes with error feedback.

    Parameters
    ----------
    W : ndarray of shape (out, in), float16/32/64, finite
    X_or_H : calibration inputs (in, n_samples) or the Hessian (in, in), as :func:`adaptive_round`
    bits : int in [1, 8], default 4
        Code bits: the codebook has ``2**bits`` levels (fewer where ``W`` has fewer distinct
        scaled values).
    block_size : int, optional
        Columns per absmax block, dividing ``in`` (even for 4-bit or smaller codes); default
        ``in`` (one absmax per row).
    damp, act_order, column_block, kind, threads
        As :func:`adaptive_round` (``act_order`` defaults to True here); ``X_or_H`` may be a
        :func:`factor_hessian` result, factored once for several calls.
    bins : int, optional
        Fit the levels over ``bins`` equal bins of the scaled values (:func:`fit_levels`: the
        fit's time no longer grows with the matrix); default None, exact over every value.
    **blockwise_options
        Further :class:`~nquant.schemes.Blockwise` parameters of how the absmax values are
        stored (``double_quant=True``); the levels are fitted over the absmax values that
        decoding uses.

    Returns
    -------
    QuantizedArray
        Of scheme ``Blockwise(codebook=levels, block_size=block_size or in, **blockwise_options)``:
        the packed codes and the scheme's side arrays (float32 absmax per block, or its double
        quantization); the levels are float32 values within [-1, 1].  ``q.info["adaptive_round"]``
        as :func:`adaptive_round` gives it, with ``levels_fit: "kmeans1d"``.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise SchemeError(f"bits={bits!r} is invalid: expected an integer in [1, 8]")
    if "codebook" in blockwise_options:
        raise SchemeError("codebook is invalid for adaptive_codebook: the codebook is fitted to W")
    Wa = _check_weights(W)
    out, n = Wa.shape
    B = n if block_size is None else block_size
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1 or n % B:
        raise SchemeError(f"block_size={block_size!r} is invalid: expected None or a divisor of in={n}")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2):
        raise SchemeError(f"bins={bins!r} is invalid: expected None or an integer >= 2")
    H, _ = _hessian_of(X_or_H, n, kind)
    layout = Blockwise(codebook=(-1.0, 1.0), block_size=int(B), **blockwise_options)
    params = family(layout).fit(layout, Wa)
    s = np.repeat(blockwise.block_absmax(layout, params).astype(np.float64).reshape(out, n // B), B, axis=1)
    s[s == 0] = 1.0           # an all-zero block decodes to 0 whatever its code
    weights = s ** 2 * np.maximum(np.diag(H), 0.0)[None, :]
    centers = fit_levels(Wa.astype(np.float64) / s, weights if weights.any() else None, 2 ** int(bits),
                         bins)  # no input at all: plain k-means
    levels = np.unique(np.clip(centers.astype(np.float32), -1, 1))
    if levels.size < 2:       # one distinct scaled value: any second level keeps the codebook valid
        levels = np.unique(np.concatenate([levels, np.array([-1.0, 1.0], np.float32)]))
    scheme = layout.replace(codebook=tuple(float(v) for v in levels))
    q = adaptive_round(Wa, X_or_H if isinstance(X_or_H, FactoredHessian) else H, scheme, damp=damp,
                       act_order=act_order, column_block=column_block, kind="hessian", threads=threads)
    q.info["adaptive_round"]["levels_fit"] = "kmeans1d" if bins is None else f"kmeans1d over {int(bins)} bins"
    return q
