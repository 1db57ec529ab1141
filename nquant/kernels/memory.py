"""First touch of freshly allocated memory, in parallel.

A large NumPy allocation is fresh virtual memory: the operating system maps
(and zeroes) each page when it is first written.  Faulting the pages in from
all threads, before a streaming kernel writes the array, is cheaper than taking
the faults one by one inside that kernel's loop.
"""

from nquant.kernels._jit import jit_parallel, prange


@jit_parallel
def first_touch(a, page, first):
    """Write 0 to ``a[0]`` and to ``a[first + k * page]`` for every ``k >= 0`` in range.

    With ``first`` the index of the first page boundary, this writes once into
    every page that ``a`` overlaps.

    Parameters
    ----------
    a : ndarray of shape (n,), uint8, C-contiguous (a byte view of the array)
    page : int, bytes per page (> 0)
    first : int, 0 <= first < page
    """
    n = a.size
    if n:
        a[0] = 0
    for k in prange(max(n - first + page - 1, 0) // page):
        a[first + k * page] = 0
