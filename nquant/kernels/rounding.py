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

The helpers are written once in :mod:`nquant.kernels.scalar` and compiled here for
the CPU (``nquant.cuda.rounding`` compiles the same source for CUDA).
"""

from nquant.kernels.rng import uniform32, uniform64  # noqa: F401  (historical import path)
from nquant.kernels.scalar import CEIL, FLOOR, NEAREST, NEAREST_AWAY, STOCHASTIC, cpu_helpers

MODES = {
    "nearest": NEAREST,
    "nearest_away": NEAREST_AWAY,
    "floor": FLOOR,
    "ceil": CEIL,
    "stochastic": STOCHASTIC,
}

_cpu = cpu_helpers()

round_half_away = _cpu["round_half_away"]
stochastic_round = _cpu["stochastic_round"]
round_value = _cpu["round_value"]
