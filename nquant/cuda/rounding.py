"""CUDA twin of :mod:`nquant.kernels.rounding`: the rounding modes as device functions.

Same integer mode constants and the same source (:mod:`nquant.kernels.scalar`) as the CPU.
"""

from nquant.cuda._device import round_half_away, round_value, stochastic_round
from nquant.kernels.rounding import CEIL, FLOOR, MODES, NEAREST, NEAREST_AWAY, STOCHASTIC

__all__ = ["CEIL", "FLOOR", "MODES", "NEAREST", "NEAREST_AWAY", "STOCHASTIC", "round_half_away",
           "round_value", "stochastic_round"]
