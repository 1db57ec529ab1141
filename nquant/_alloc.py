"""Output allocation for kernels that stream over large arrays."""

import mmap

import numpy as np

from nquant.kernels.memory import first_touch

PREFAULT_BYTES = 1 << 22
"""Arrays of at least this many bytes (4 MiB) are faulted in before use."""


def empty(shape, dtype):
    """``np.empty(shape, dtype)``, its pages faulted in from all threads when it is large.

    The contents are unspecified, as with ``np.empty``.
    """
    a = np.empty(shape, dtype)
    if a.nbytes >= PREFAULT_BYTES:
        first_touch(a.reshape(-1).view(np.uint8), mmap.PAGESIZE)
    return a
