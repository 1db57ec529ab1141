"""Scalar helpers written once, compiled for the CPU and for CUDA.

The functions below are plain Python: the counter-based stream (SplitMix64,
see :mod:`nquant.kernels.rng`), the rounding modes (:mod:`nquant.kernels.rounding`)
and the encoder's snap / round / clip steps (:mod:`nquant.kernels.affine`).  They
are never called as they are; :func:`compile_helpers` wraps every one of them
with a target's decorator -- ``nquant.kernels._jit.jit`` for the CPU (see
:func:`cpu_helpers`), ``numba.cuda.jit(device=True)`` for CUDA
(``nquant.cuda._device``) -- so that the same source gives bit-identical draws,
roundings and codes on both targets.

Each compiled helper calls the *same target's* versions of the others: the
copies share one globals dictionary in which every helper name is bound to its
compiled twin.  The bodies therefore use only what nopython mode on both
targets and plain Python (the CUDA simulator) accept: NumPy scalar constructors,
``np.rint``/``np.floor``/``np.ceil``/``np.trunc``, ``abs``/``min``/``max`` and a
compile-time ``isinstance`` on ``np.float32``.
"""

import functools
import types

import numpy as np

__all__ = [
    "GAMMA",
    "SNAP",
    "HELPERS",
    "NEAREST",
    "NEAREST_AWAY",
    "FLOOR",
    "CEIL",
    "STOCHASTIC",
    "compile_helpers",
    "cpu_helpers",
]

# ----------------------------------------------------------------------------- constants

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ONE = np.uint64(1)

NEAREST = 0
NEAREST_AWAY = 1
FLOOR = 2
CEIL = 3
STOCHASTIC = 4

SNAP = 2.0 ** -21
"""Relative distance within which floor/ceil/stochastic snap onto an integer (affine encoder)."""


# ----------------------------------------------------------------------------- the stream


def mix64(z):
    """SplitMix64 finaliser of a uint64 (bijective, full avalanche)."""
    z = np.uint64(z)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed):
    """The per-seed key of the stream (``seed`` any int64)."""
    return mix64(np.uint64(seed))


def uniform64(key, index):
    """Uniform float64 in [0, 1) with 53 random bits for element ``index`` (int64 >= 0)."""
    h = mix64(key + (np.uint64(index) + _ONE) * GAMMA)
    return np.float64(h >> np.uint64(11)) * 1.1102230246251565e-16


def uniform32(key, index):
    """Uniform float32 in [0, 1) with 24 random bits (same hash as :func:`uniform64`)."""
    h = mix64(key + (np.uint64(index) + _ONE) * GAMMA)
    return np.float32(h >> np.uint64(40)) * np.float32(5.9604645e-08)


# ----------------------------------------------------------------------------- rounding


def round_half_away(v):
    """Round to nearest, ties away from zero (exact: ``v - trunc(v)`` has no rounding error)."""
    t = np.trunc(v)
    d = v - t
    one = np.float32(1) if isinstance(v, np.float32) else 1.0  # stays in the type of v
    if d >= one / 2:
        return t + one
    if d <= -one / 2:
        return t - one
    return t


def stochastic_round(v, u):
    """``floor(v) + 1`` with probability ``v - floor(v)`` given a uniform ``u`` in [0, 1)."""
    f = np.floor(v)
    return f + (u < v - f)


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


# ----------------------------------------------------------------------------- affine encoder steps


def snap(t):
    """``t`` moved onto the nearest integer ``n != 0`` when ``|t - n| <= SNAP * |n|``."""
    n = np.rint(t)
    tol = np.float32(SNAP) if isinstance(t, np.float32) else SNAP  # exact: a power of two
    return n if abs(t - n) <= abs(n) * tol else t


def round_code(t, mode, key, index):
    """Round ``t`` for the encoder: snapped first in floor, ceil and stochastic modes."""
    if mode >= FLOOR:  # FLOOR, CEIL, STOCHASTIC
        t = snap(t)
    return round_value(t, mode, key, index)


def clip_code(t, hi):
    """uint8 of ``t`` clipped to [0, hi] (NaN gives an unspecified code)."""
    return np.uint8(np.int32(min(max(t, hi - hi), hi)))


def code_value(code, like):
    """``code`` as a float of the type of ``like`` (float32 or float64), so that the decoder's
    arithmetic stays in that type (uint16 minus float32 would widen to float64)."""
    if isinstance(like, np.float32):
        return np.float32(code)
    return np.float64(code)


def clip_code16(t, hi):
    """uint16 of ``t`` clipped to [0, hi] (9..16-bit codes; NaN gives an unspecified code)."""
    return np.uint16(np.int32(min(max(t, hi - hi), hi)))


# ----------------------------------------------------------------------------- compilation

HELPERS = ("mix64", "stream_key", "uniform64", "uniform32", "round_half_away", "stochastic_round",
           "round_value", "snap", "round_code", "clip_code", "clip_code16", "code_value")
"""Names of the helpers :func:`compile_helpers` compiles (callees before callers)."""


def compile_helpers(decorator, names=HELPERS):
    """Wrap every helper with ``decorator``, each calling the others' wrapped versions.

    Parameters
    ----------
    decorator : callable
        Takes a plain function, returns the compiled one (e.g. ``jit`` or
        ``numba.cuda.jit(device=True)``).
    names : tuple of str
        Helpers to compile (default: all of :data:`HELPERS`).

    Returns
    -------
    dict of str -> compiled function
        The helpers share one globals dictionary (this module's constants plus
        the compiled helpers), so ``round_value`` calls the compiled
        ``uniform32`` of the same target.
    """
    shared = {k: v for k, v in globals().items() if not k.startswith("__")}
    out = {}
    for name in names:
        f = globals()[name]
        g = types.FunctionType(f.__code__, shared, f.__name__, f.__defaults__, f.__closure__)
        g.__doc__ = f.__doc__
        g.__module__ = f.__module__
        g.__qualname__ = f.__qualname__
        shared[name] = out[name] = decorator(g)
    return out


INLINE = ("round_value", "round_code")
"""Helpers inlined into their CPU callers (Numba IR): where the caller passes a constant ``mode``,
the other modes' branches are pruned before typing, so only the helpers that mode uses compile."""


@functools.cache
def cpu_helpers():
    """The helpers compiled with :func:`nquant.kernels._jit.jit` (one set per process)."""
    from nquant.kernels._jit import jit

    inline = jit(inline="always")
    return compile_helpers(lambda f: inline(f) if f.__name__ in INLINE else jit(f))
