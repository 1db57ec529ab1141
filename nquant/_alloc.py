"""Output allocation for kernels that stream over large arrays."""

import functools
import mmap

import numpy as np

from nquant.kernels.memory import first_touch

PREFAULT_BYTES = 1 << 22
"""Arrays of at least this many bytes (4 MiB) are faulted in before use."""


@functools.cache
def huge_page_bytes():
    """Size of a transparent huge page, or 0 when the system does not use them.

    NumPy asks for huge pages (``madvise``) on allocations of 4 MiB or more, which
    Linux grants with ``transparent_hugepage`` set to ``always`` or ``madvise``.
    """
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read()
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            size = int(f.read())
    except (OSError, ValueError):
        return 0
    return size if "[never]" not in mode else 0


def prefault(a, huge=None):
    """Fault in the pages of the C-contiguous array ``a`` from all threads (writes zeros).

    One write per page: per huge page (``huge`` bytes, default
    :func:`huge_page_bytes`; 0 for none) on the huge-page-aligned middle of ``a``,
    where Linux maps huge pages, and per base page on the ends.
    """
    b = a.reshape(-1).view(np.uint8)
    page = mmap.PAGESIZE
    huge = huge_page_bytes() if huge is None else huge
    addr, n = a.ctypes.data, b.size
    head = min(-addr % huge, n) if huge else n
    tail = max(head, n - (addr + n) % huge) if huge else n
    for lo, hi, step in ((0, head, page), (head, tail, huge), (tail, n, page)):
        if hi > lo:
            first_touch(b[lo:hi], step, -(addr + lo) % step)


def empty(shape, dtype):
    """``np.empty(shape, dtype)``, its pages faulted in from all threads when it is large.

    The contents are unspecified, as with ``np.empty``.
    """
    a = np.empty(shape, dtype)
    if a.nbytes >= PREFAULT_BYTES:
        prefault(a)
    return a
