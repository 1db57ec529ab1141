"""Rounding modes as integer constants and a scalar rounding helper.

Modes (seed 001, "Rounding"):

==============  ====  ==========================================================
name            code  rule
==============  ====  ==========================================================
nearest         0     round half to even (``np.rint``)
nearest_away    1     round half away from zero
floor           2     largest integer <= v
ceil            3     smallest integer >= v
stochastic      4     ``floor(v) + (u < v - floor(v))``, ``u`` uniform in [0, 1):
                      rounds up with probability equal to the fractional part
==============  ====  ==========================================================
"""

import numpy as np

from nquant.kernels._jit import jit
from nquant.kernels.rng import uniform32, uniform64

NEAREST = 0
NEAREST_AWAY = 1
FLOOR = 2
CEIL = 3
STOCHASTIC = 4

MODES = {
    "nearest": NEAREST,
    "nearest_away": NEAREST_AWAY,
    "floor": FLOOR,
    "ceil": CEIL,
    "stochastic": STOCHASTIC,
}


@jit
def round_half_away(v):
    """Round to nearest, ties away from zero (exact: ``v - trunc(v)`` has no rounding error)."""
    t = np.trunc(v)
    d = v - t
    if d >= 0.5:
        return t + 1
    if d <= -0.5:
        return t - 1
    return t


@jit
def stochastic_round(v, u):
    """``floor(v) + 1`` with probability ``v - floor(v)`` given a uniform ``u`` in [0, 1)."""
    f = np.floor(v)
    return f + (u < v - f)


@jit
def round_value(v, mode, key, index):
    """Round the float ``v`` with ``mode``; ``key, index`` feed the stochastic stream.

    The draw has the precision of ``v``: 24 bits for float32, 53 for float64.
    """
    if mode == NEAREST:
        return np.rint(v)
    if mode == FLOOR:
        return np.floor(v)
    if mode == CEIL:
        return np.ceil(v)
    if mode == NEAREST_AWAY:
        return round_half_away(v)
    if isinstance(v, np.float32):
        return stochastic_round(v, uniform32(key, index))
    return stochastic_round(v, uniform64(key, index))
