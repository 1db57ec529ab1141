"""NumPy reference of the prediction kernels (``nquant.kernels.predict``), from their definition:
wrapping differences along the predicted axes, zigzag in the codes' width, byte planes."""

import numpy as np


def residuals(q3, left, up):
    """Wrapping residuals (same unsigned dtype) of the (A, N, B) codes ``q3``."""
    r = np.asarray(q3)
    if left:
        r = np.concatenate([r[:, :, :1], np.diff(r, axis=2)], axis=2)  # wraps modulo 2**w
    if up:
        r = np.concatenate([r[:, :1], np.diff(r, axis=1)], axis=1)
    return r


def zigzag(r):
    s = r.view(r.dtype.str.replace("u", "i"))
    w = 8 * r.dtype.itemsize
    return ((s << 1) ^ (s >> (w - 1))).view(r.dtype)


def encode(q3, left, up):
    """Byte planes (itemsize, size) of the zigzag residuals."""
    z = zigzag(residuals(q3, left, up)).astype(np.dtype(q3.dtype).newbyteorder("<"))
    return z.reshape(-1).view(np.uint8).reshape(-1, z.dtype.itemsize).T.copy()


def decode(planes, left, up, shape, dtype):
    """Codes (shape (A, N, B), ``dtype``) from byte planes."""
    z = np.ascontiguousarray(planes.T).view(np.dtype(dtype).newbyteorder("<")).reshape(shape).astype(dtype)
    s = z.view(z.dtype.str.replace("u", "i"))
    r = ((z >> 1) ^ -(s & 1).view(z.dtype)).view(z.dtype)
    if up:
        r = np.cumsum(r, axis=1, dtype=r.dtype)
    if left:
        r = np.cumsum(r, axis=2, dtype=r.dtype)
    return r


def entropy_bits(planes):
    """Order-0 entropy in bits of each byte plane, summed."""
    total = 0.0
    for plane in np.asarray(planes):
        _, counts = np.unique(plane, return_counts=True)
        total -= float((counts * np.log2(counts / plane.size)).sum())
    return total
