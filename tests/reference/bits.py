"""NumPy references of the IEEE-754 bit views (``nquant.kernels.bits``), from the format's definition.

float32 / float64 have 8 / 11 exponent bits and 23 / 52 fraction bits; the sign is the top bit.
"""

import numpy as np

# dtype: (signed and unsigned integers of its width, fraction bits, exponent bits)
LAYOUT = {np.dtype(np.float32): (np.int32, np.uint32, 23, 8),
          np.dtype(np.float64): (np.int64, np.uint64, 52, 11)}


def int_view(x):
    """The bits of ``x`` as signed integers of the same width."""
    return np.asarray(x).view(LAYOUT[np.asarray(x).dtype][0])


def uint_view(x):
    """The bits of ``x`` as unsigned integers of the same width."""
    return np.asarray(x).view(LAYOUT[np.asarray(x).dtype][1])


def float_view(b):
    """Signed or unsigned integer bits back to the float of the same width."""
    b = np.asarray(b)
    return b.view({4: np.float32, 8: np.float64}[b.dtype.itemsize])


def bit_constants(x):
    """``(abs_mask, inf_bits)``: every bit but the sign, and the bits of ``+inf`` (exponent all ones,
    fraction zero), both in the signed integer type of ``x``."""
    sint, _, frac, exp = LAYOUT[np.asarray(x).dtype]
    return sint((1 << (frac + exp)) - 1), sint(((1 << exp) - 1) << frac)
