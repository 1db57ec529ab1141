"""CUDA twin of :mod:`nquant.kernels.rng`: the counter-based stream as device functions.

Compiled from the same source as the CPU functions (:mod:`nquant.kernels.scalar`), so a
kernel drawing ``uniform32(key, i)`` on the GPU gets the CPU's bits.  ``key`` is a
``numpy.uint64`` from the (host) :func:`stream_key`.
"""

from nquant.cuda._device import mix64, stream_key, uniform32, uniform64
from nquant.kernels.scalar import GAMMA

__all__ = ["GAMMA", "mix64", "stream_key", "uniform32", "uniform64"]
