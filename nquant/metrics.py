"""Error figures of a reconstruction."""

import numpy as np

from nquant.errors import InputError


def metrics(x, x_hat):
    """Error of ``x_hat`` against ``x``.

    Positions where both are NaN (missing values kept by ``nan="propagate"``)
    are left out.

    Returns
    -------
    dict with ``mse``, ``rmse``, ``max_abs``, ``sqnr_db`` (``10 log10(sum x^2 /
    sum e^2)``, inf for an exact reconstruction) and ``bias`` (mean of
    ``x_hat - x``); floats.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(x_hat, dtype=np.float64)
    if x.shape != y.shape:
        raise InputError(f"x_hat shape={y.shape} does not match x shape={x.shape}")
    keep = ~(np.isnan(x) & np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size == 0:
        return {"mse": 0.0, "rmse": 0.0, "max_abs": 0.0, "sqnr_db": float("inf"), "bias": 0.0}
    e = y - x
    se = float(np.dot(e, e))
    sx = float(np.dot(x, x))
    mse = se / x.size
    sqnr = float("inf") if se == 0 else (10 * np.log10(sx / se) if sx > 0 else float("-inf"))
    return {"mse": mse, "rmse": mse ** 0.5, "max_abs": float(np.abs(e).max()),
            "sqnr_db": float(sqnr), "bias": float(e.mean())}
