"""Error figures of a reconstruction."""

import numba
import numpy as np
from nquant._types import ArrayInput

from nquant.errors import InputError
from nquant.kernels.stats import error_moments


def metrics(x: ArrayInput, x_hat: ArrayInput) -> dict[str, float]:
    """Error of ``x_hat`` against ``x``.

    Positions where both are NaN (missing values kept by ``nan="propagate"``)
    are left out.

    Returns
    -------
    dict with ``mse``, ``rmse``, ``max_abs``, ``sqnr_db``
    (``10 log10(sum x^2 / sum e^2)``, inf for an exact reconstruction) and ``bias``
    (mean of ``x_hat - x``); floats.
    """
    x = np.asarray(x)
    y = np.asarray(x_hat)
    if x.shape != y.shape:
        raise InputError(f"x_hat shape={y.shape} does not match x shape={x.shape}")
    return metrics_from_stats(error_stats(x, y))


def error_stats(x, x_hat):
    """Mergeable error statistics of one chunk: float64 array ``[n, sum e^2, sum x^2, sum e, max |e|]``.

    Sums merge by addition and the maximum by ``max``; :func:`metrics_from_stats`
    turns merged statistics into the figures of :func:`metrics`.
    """
    def flat(a):
        a = np.asarray(a)
        return np.ascontiguousarray(a, dtype=np.float64 if a.dtype == np.float64 else np.float32).reshape(-1)

    return error_moments(flat(x), flat(x_hat), 4 * numba.get_num_threads())


def merge_error_stats(a, b):
    """Merge two :func:`error_stats` arrays."""
    out = a + b
    out[4] = max(a[4], b[4])
    return out


def metrics_from_stats(s):
    """The :func:`metrics` dict from merged :func:`error_stats`."""
    n, se, sx, sum_e, max_abs = (float(v) for v in s)
    if n == 0:
        return {"mse": 0.0, "rmse": 0.0, "max_abs": 0.0, "sqnr_db": float("inf"), "bias": 0.0}
    mse = se / n
    sqnr = float("inf") if se == 0 else (10 * np.log10(sx / se) if sx > 0 else float("-inf"))
    return {"mse": mse, "rmse": mse ** 0.5, "max_abs": max_abs, "sqnr_db": float(sqnr), "bias": sum_e / n}
