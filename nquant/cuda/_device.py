"""Device functions: the scalar helpers of :mod:`nquant.kernels.scalar` compiled for CUDA.

The same plain-Python source that :mod:`nquant.kernels.rng`, ``rounding`` and
``affine`` compile for the CPU is compiled here with ``numba.cuda.jit(device=True)``
(lazily: numba-cuda compiles a device function when the first kernel using it is
compiled).  :func:`retarget` does the same for a CPU helper that lives in another
kernel module (``codebook1d.search_binary``, ``bitpack._pack_group``, ...): its
Python source is compiled for the device with the CPU helpers it calls replaced by
their device twins.  One source, two targets, identical results.

:func:`mul_rn` is the one target-specific helper: NVVM contracts ``a * b + c`` into a
fused multiply-add by default, which the CPU never does (no ``fastmath``).  Products
that feed a sum whose exact value matters (squared distances, dequantized values,
the 8-bit table index of double quantization) go through ``mul_rn``, which on a GPU is
libdevice's ``__fmul_rn`` / ``__dmul_rn`` (never contracted) and in the simulator a
plain product.
"""

import types

import numpy as np

from nquant.cuda._launch import SIMULATOR, device
from nquant.kernels import scalar

__all__ = [
    "clip_code",
    "clip_code16",
    "code_value",
    "mix64",
    "mul_rn",
    "retarget",
    "round_code",
    "round_half_away",
    "round_value",
    "snap",
    "stochastic_round",
    "stream_key",
    "uniform32",
    "uniform64",
]

_H = scalar.compile_helpers(device)

mix64 = _H["mix64"]
stream_key = _H["stream_key"]
uniform64 = _H["uniform64"]
uniform32 = _H["uniform32"]
round_half_away = _H["round_half_away"]
stochastic_round = _H["stochastic_round"]
round_value = _H["round_value"]
snap = _H["snap"]
round_code = _H["round_code"]
clip_code = _H["clip_code"]
clip_code16 = _H["clip_code16"]
code_value = _H["code_value"]


def retarget(fn, **overrides):
    """Compile a CPU helper's Python source as a device function.

    Parameters
    ----------
    fn : numba CPU dispatcher or plain function
        Its ``py_func`` (or itself) is compiled; its module globals are used as they
        are, except for the names in ``overrides``.
    **overrides
        Globals to replace, typically CPU helpers by their device twins
        (``uniform32=uniform32``).

    Returns
    -------
    device function
    """
    py = getattr(fn, "py_func", fn)
    g = dict(py.__globals__)
    g.update(overrides)
    f = types.FunctionType(py.__code__, g, py.__name__, py.__defaults__, py.__closure__)
    f.__doc__ = py.__doc__
    f.__qualname__ = py.__qualname__
    return device(f)


if SIMULATOR:

    def _mul_rn(a, b):
        """``a * b`` rounded once (the simulator never contracts)."""
        return a * b

else:
    from numba.cuda import libdevice

    def _mul_rn(a, b):
        """``a * b`` rounded to nearest, never fused into a following add (``__fmul_rn``)."""
        if isinstance(a, np.float32):
            return libdevice.fmul_rn(a, b)
        return libdevice.dmul_rn(a, b)


mul_rn = device(_mul_rn)
