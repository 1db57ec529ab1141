"""First touch of freshly allocated memory, in parallel.

A large NumPy allocation is fresh virtual memory: the operating system maps
(and zeroes) each page when it is first written.  Faulting the pages in from
all threads, before a streaming kernel writes the array, is cheaper than taking
the faults one by one inside that kernel's loop (measured: 64 MiB of uint8
codes, 2 cores, about 3 ms saved per call).
"""

from nquant.kernels._jit import jit_parallel, prange


@jit_parallel
def first_touch(a, page):
    """Write 0 to the first byte of every ``page`` bytes of ``a``.

    Parameters
    ----------
    a : ndarray of shape (n,), uint8, C-contiguous (a byte view of the array)
    page : int, bytes per page (> 0)
    """
    n = a.size
    for p in prange((n + page - 1) // page):
        a[p * page] = 0
