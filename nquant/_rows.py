"""Row matrices for k-means and product quantization: input checks, seeds, row-chunk reductions.

Inputs are 2-D (``n_samples, n_features``) NumPy arrays, Dask arrays chunked by rows only, or
``zarr.Array`` (read as Dask).  Every random choice draws from a generator seeded by a tuple of
integers, so a fit depends on the seed and the data only, never on the chunking.
"""

import dask.array as da
import numpy as np

from nquant.chunked import is_dask, tree_reduce
from nquant.errors import InputError, SchemeError

__all__ = [
    "as_rows",
    "check_int",
    "check_seed",
    "finite_mean",
    "memory_budget",
    "nonfinite_error",
    "reduce_rows",
    "seeded_rng",
    "shifted",
]


def as_rows(X, name="X"):
    """A C-contiguous float32/float64 2-D NumPy array, or a Dask array chunked by rows only."""
    try:
        import zarr

        if isinstance(X, zarr.Array):
            X = da.from_zarr(X)
    except ImportError:  # pragma: no cover - zarr is a dependency
        pass
    if is_dask(X):
        if X.ndim != 2:
            raise InputError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}")
        dt = np.dtype(X.dtype)
        if dt == np.float16:
            X = X.astype(np.float32)
        elif dt not in (np.float32, np.float64):
            raise InputError(f"{name} dtype={dt} is not supported: expected float16, float32 or float64")
        if X.numblocks[1] > 1:
            X = X.rechunk({1: -1})
        return X
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}")
    if X.dtype == np.float16:
        X = X.astype(np.float32)
    elif X.dtype not in (np.float32, np.float64):
        raise InputError(f"{name} dtype={X.dtype} is not supported: expected float16, float32 or float64")
    return np.ascontiguousarray(X)


def check_int(name, value, low, high=None):
    """``value`` as an int in ``[low, high]`` (``high`` None: no bound); SchemeError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        allowed = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise SchemeError(f"{name}={value!r} is invalid: expected {allowed}")
    return int(value)


def check_seed(seed):
    """A seed >= 0 as an int; None draws one from the operating system's entropy."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return check_int("seed", seed, 0)


def seeded_rng(*keys):
    """NumPy generator seeded by the integers ``keys`` (e.g. the seed, a purpose tag, a run)."""
    return np.random.default_rng([int(k) for k in keys])


def finite_mean(X, name="X"):
    """Column means (float64); raises InputError on NaN or infinity."""
    mean = X.mean(axis=0, dtype=np.float64) if X.shape[0] else np.zeros(X.shape[1])
    if not np.isfinite(mean).all() and not np.isfinite(X).all():
        raise InputError(f"{name} contains NaN or infinity; k-means needs finite values")
    return mean


def nonfinite_error(name="X"):
    """The InputError raised when a pass meets NaN or infinity in ``name``."""
    return InputError(f"{name} contains NaN or infinity; k-means needs finite values")


def shifted(x, shift):
    """``x - shift`` in x's dtype, C-contiguous (a new array)."""
    return np.subtract(x, shift.astype(x.dtype), dtype=x.dtype)


def reduce_rows(X, fn, merge, *args):
    """``merge`` of ``fn(chunk, start, *args)`` over the row chunks of the Dask array ``X`` (chunked by
    rows only; ``start`` is the chunk's first row)."""
    return tree_reduce(X, fn, merge, lambda c: (c.start[0], *args))


def memory_budget():
    """Bytes an input may take to be persisted: half the cluster's (or this machine's) free memory."""
    try:
        from distributed import get_client

        client = get_client()
        workers = client.scheduler_info().get("workers", {})
        total = sum(w.get("memory_limit", 0) or 0 for w in workers.values())
        if total:
            return total // 2
    except (ImportError, ValueError):
        pass
    try:
        import psutil

        return psutil.virtual_memory().available // 2
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return 0
