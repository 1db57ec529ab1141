"""Slow NumPy references of the rounding modes (``nquant.kernels.rounding``).

Vectorised over arrays, one formula per mode; ties away from zero twice (exact float
arithmetic, and decimal arithmetic as an independent check).
"""

from decimal import ROUND_HALF_UP, Decimal

import numpy as np


def round_half_away(v):
    """Ties away from zero, exactly: on ``|v|``, ``|v| - floor(|v|)`` has no rounding error."""
    v = np.asarray(v)
    a = np.abs(v)
    f = np.floor(a)
    with np.errstate(invalid="ignore"):  # inf - inf
        frac = a - f
    r = np.where(frac >= 0.5, f + 1, f).astype(v.dtype)
    return np.copysign(r, v)


def round_half_away_decimal(v):
    """Ties away from zero with exact decimal arithmetic (a second, independent reference)."""
    out = [float(Decimal(float(t)).to_integral_value(rounding=ROUND_HALF_UP)) for t in np.ravel(v)]
    return np.array(out, dtype=np.asarray(v).dtype).reshape(np.shape(v))


def stochastic_round(v, u):
    """``floor(v) + (u < v - floor(v))``."""
    f = np.floor(v)
    return f + (u < v - f)


def round_mode(v, mode, u=None):
    """Round the array ``v`` with a mode name (``u``: uniform draws for ``stochastic``)."""
    if mode == "nearest":
        return np.rint(v)
    if mode == "nearest_away":
        return round_half_away(v)
    if mode == "floor":
        return np.floor(v)
    if mode == "ceil":
        return np.ceil(v)
    if mode == "stochastic":
        return stochastic_round(v, u)
    raise ValueError(mode)
