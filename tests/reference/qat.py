"""Slow NumPy references of the observers (``nquant.observers``) and QAT.

Written independently of the kernels: plain loops or NumPy reductions over all observed data
at once.  The kernel-level references are ``stats`` (min/max, aligned histograms),
``calibrate`` (percentiles, MSE search) and ``fakequant``.
"""

import numpy as np

from tests.reference.stats import minmax


def ema_minmax(batches, c, axis):
    """PyTorch's MovingAverageMinMaxObserver, batch by batch (NaN-only groups skipped)."""
    cur_lo = cur_hi = None
    for b in batches:
        blo, bhi = minmax([b], axis)
        if cur_lo is None:
            cur_lo = np.full(blo.shape, np.nan)
            cur_hi = np.full(bhi.shape, np.nan)
        for g in range(len(blo)):
            if not np.isfinite(blo[g]):
                continue
            if np.isnan(cur_lo[g]):
                cur_lo[g], cur_hi[g] = blo[g], bhi[g]
            else:
                cur_lo[g] = cur_lo[g] + c * (blo[g] - cur_lo[g])
                cur_hi[g] = cur_hi[g] + c * (bhi[g] - cur_hi[g])
    return np.nan_to_num(cur_lo, nan=0.0), np.nan_to_num(cur_hi, nan=0.0)
