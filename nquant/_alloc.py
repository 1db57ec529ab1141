"""Output allocation for kernels that stream over large arrays.

A fresh large allocation costs the operating system a page fault and a zeroed
page per page written (many times more in a virtual machine whose host reclaims
freed memory), a sizeable part of an 8-bit quantization's time.  So the large outputs of :func:`empty` come from a small pool of
buffers freed by earlier outputs: a buffer goes back to the pool only when the
last array (or view) on it is gone, and the pool keeps at most
``NQUANT_BUFFER_POOL_BYTES`` bytes (default 256 MiB; 0 turns it off).
"""

import functools
import math
import mmap
import os
import threading

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


class BufferPool:
    """Byte buffers (1-D uint8, C-contiguous) released by their last user, for reuse.

    Parameters
    ----------
    limit : int, most bytes kept; the oldest buffers are dropped beyond it
    """

    def __init__(self, limit):
        self.limit = limit
        self._free = []
        self._lock = threading.Lock()

    @property
    def nbytes(self):
        """Bytes held for reuse now."""
        with self._lock:
            return sum(b.size for b in self._free)

    def take(self, nbytes):
        """A free buffer of exactly ``nbytes`` bytes (the newest), or None."""
        with self._lock:
            for i in range(len(self._free) - 1, -1, -1):
                if self._free[i].size == nbytes:
                    return self._free.pop(i)
        return None

    def give(self, buf):
        """Keep ``buf`` for reuse, dropping the oldest buffers beyond :attr:`limit`."""
        if buf.size > self.limit:
            return
        with self._lock:
            self._free.append(buf)
            total = sum(b.size for b in self._free)
            while total > self.limit:
                total -= self._free.pop(0).size

    def lease(self, nbytes, fault_in=True):
        """A writable uint8 array of ``nbytes`` bytes whose buffer returns here when the
        array and all its views are gone; a new buffer's pages are faulted in first
        when ``fault_in``."""
        buf = self.take(nbytes)
        if buf is None:
            buf = np.empty(nbytes, np.uint8)
            if fault_in:
                prefault(buf)
        return np.asarray(_Lease(buf, self))


class _Lease:
    """Owner of a pooled buffer while arrays use it (their ``base``)."""

    __slots__ = ("buf", "pool", "__array_interface__")

    def __init__(self, buf, pool):
        self.buf, self.pool = buf, pool
        self.__array_interface__ = buf.__array_interface__

    def __del__(self):
        self.pool.give(self.buf)


def pool_limit(environ=os.environ):
    """``NQUANT_BUFFER_POOL_BYTES`` (default 256 MiB) as a non-negative int."""
    value = environ.get("NQUANT_BUFFER_POOL_BYTES", str(256 << 20))
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise ValueError(f"NQUANT_BUFFER_POOL_BYTES must be a non-negative integer, got {value!r}")
    return limit


POOL = BufferPool(pool_limit())


def empty(shape, dtype, fault_in=True):
    """``np.empty(shape, dtype)``; when large, from :data:`POOL` or new (its pages
    faulted in from all threads when ``fault_in``).

    The contents are unspecified, as with ``np.empty``.  ``fault_in=False`` suits
    outputs several times larger than the kernel's input (decoded floats), whose
    pages are cheaper to fault in while the kernel writes them.
    """
    dtype = np.dtype(dtype)
    if not isinstance(shape, tuple):  # (np.ndim costs more than a small allocation)
        shape = (shape,) if np.ndim(shape) == 0 else tuple(shape)
    nbytes = math.prod(int(s) for s in shape) * dtype.itemsize
    if nbytes < PREFAULT_BYTES:
        return np.empty(shape, dtype)
    if POOL.limit < nbytes:
        a = np.empty(shape, dtype)
        if fault_in:
            prefault(a)
        return a
    return POOL.lease(nbytes, fault_in).view(dtype).reshape(shape)
