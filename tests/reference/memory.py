"""Slow NumPy reference of the first-touch kernel (``nquant.kernels.memory``)."""


def first_touch(a, page, first):
    """A copy of the 1-D array ``a`` with element 0 and every ``page``-th element from ``first`` zeroed."""
    out = a.copy()
    out[:1] = 0
    out[first::page] = 0
    return out
