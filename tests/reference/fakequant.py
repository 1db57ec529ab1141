"""Slow NumPy reference of fake quantization (``nquant.kernels.fakequant``).
"""

import numpy as np


def fake_quantize(x, scale, zero_point, qmin, qmax):
    """Per-tensor integer-zero-point fake quantization in NumPy (float32 data).

    ``t = rint(x * float32(1 / s)) + z`` (multiply by the reciprocal, ties to even),
    ``y = (clip(t, qmin, qmax) - z) * s``; mask ``qmin <= t <= qmax``.
    """
    x = np.asarray(x, np.float32)
    s = np.float32(scale)
    inv = np.float32(1) / s
    z = np.float32(zero_point - qmin)
    t = np.rint(x * inv) + z  # code space: t - z + qmin is the integer
    hi = np.float32(qmax - qmin)
    code = np.clip(t, np.float32(0), hi).astype(np.uint8)
    y = ((code.astype(np.float32) - z) * s).astype(np.float32)
    mask = (t >= 0) & (t <= hi)
    return y, mask
