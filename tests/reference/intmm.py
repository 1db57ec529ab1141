"""Slow NumPy reference of the integer matrix product (``nquant.kernels.intmm``).
"""

import numpy as np


def int_matmul(w_q, x_q):
    """Exact integer product in int64."""
    return np.asarray(w_q, np.int64) @ np.asarray(x_q, np.int64)
