"""Slow NumPy references of the scalar helpers of the encoders (``nquant.kernels.scalar``).

The stream's helpers (``mix64``, ``stream_key``, ``uniform64``, ``uniform32``) are checked against
``tests/reference/rng.py`` and the rounding helpers against ``tests/reference/rounding.py``; the
encoder's steps are here, vectorised over arrays.
"""

import numpy as np

from tests.reference.rng import uniform_draws
from tests.reference.rounding import round_mode

# Quantizer snapping (``nquant.kernels.scalar.snap``): before floor, ceil and
# stochastic rounding, a value within SNAP * |n| of a nonzero integer n counts
# as n, so values on the grid are not pushed one code down or up by the
# rounding of the float32 scale and of its reciprocal.
SNAP = 2.0 ** -21


def snap(t):
    """``t`` (array) with every value within ``SNAP * |n|`` of a nonzero integer ``n`` moved to ``n``."""
    r = np.rint(t)
    with np.errstate(invalid="ignore"):
        close = np.abs(t - r) <= np.abs(r) * SNAP
    return np.where(close, r, t).astype(t.dtype)


def round_code(t, mode, seed, index):
    """The encoder's rounding of the array ``t`` (mode name; ``index`` the stream indices):
    snapped first in the floor, ceil and stochastic modes."""
    t = np.asarray(t)
    if mode in ("floor", "ceil", "stochastic"):
        t = snap(t)
    u = uniform_draws(seed, index, t.dtype) if mode == "stochastic" else None
    return round_mode(t, mode, u).astype(t.dtype)


def clip_code(t, hi):
    """``t`` (no NaN) clipped to [0, hi] as uint8."""
    return np.clip(np.asarray(t, np.float64), 0, hi).astype(np.uint8)


def clip_code16(t, hi):
    """``t`` (no NaN) clipped to [0, hi] as uint16."""
    return np.clip(np.asarray(t, np.float64), 0, hi).astype(np.uint16)
