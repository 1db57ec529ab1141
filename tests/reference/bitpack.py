"""Slow references of bit packing (``nquant.kernels.bitpack``): codes as an MSB-first bit string.
"""

import numpy as np


def pack(codes, bits):
    """MSB-first bit string of the codes, zero-padded to whole bytes."""
    s = "".join(format(int(c), f"0{bits}b") for c in np.ravel(codes))
    s += "0" * (-len(s) % 8)
    return np.array([int(s[i:i + 8], 2) for i in range(0, len(s), 8)], dtype=np.uint8)


def unpack(packed, bits, n):
    """The first ``n`` codes (uint8) of the MSB-first bit string ``packed``."""
    s = "".join(format(int(b), "08b") for b in np.ravel(packed))
    return np.array([int(s[i * bits:(i + 1) * bits], 2) for i in range(n)], dtype=np.uint8)
