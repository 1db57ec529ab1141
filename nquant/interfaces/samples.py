"""Samples for a report's figures: values, their quantization levels, errors, fraction clipped.

:func:`level_view` puts a sample of values on the axis where the scheme's levels are
one grid, by the scheme's family (its ``level_view`` hook): the values themselves for
one grid per tensor (uniform per tensor, codebooks, ASQ levels); *quantization steps*
``x / scale + zero_point`` for uniform schemes with one scale per channel or block
(levels are then the integer codes); ``x / block scale`` for absmax-scaled and MX blocks
(levels: the codebook, e.g. NF4's, or the element values).  A value is *clipped* when it
lies outside its grid: beyond half a step past the last uniform level, or outside the
first and last levels of a codebook.
"""

import numpy as np

from nquant.families.base import view
from nquant.families.registry import family

MAX_SAMPLE = 1 << 18


def first_rows(shape, max_values=MAX_SAMPLE):
    """Index of the leading rows of an array of ``shape`` holding at most ``max_values`` values."""
    if not shape:
        return ()
    row = int(np.prod(shape[1:], dtype=np.int64)) or 1
    return (slice(0, max(1, min(shape[0], max_values // row))),)


def level_view(scheme, side, x, x_hat):
    """Values, levels, axis label and fraction clipped of a sample ``x`` (leading rows) and ``x_hat``
    (the family's ``level_view``).

    Parameters
    ----------
    scheme : Scheme
    side : dict of NumPy side arrays covering the sample (per-channel and per-block ones from
        index 0)
    x, x_hat : ndarray, the sample and its reconstruction
    """
    x = np.asarray(x, np.float64)
    x_hat = np.asarray(x_hat, np.float64)
    return family(scheme).level_view(scheme, side, x, x_hat)


def pq_view(X, codebooks):
    """Coordinate 0 of the vectors and the values the product quantizer can give it."""
    return view(np.asarray(X)[:, 0], np.asarray(codebooks)[0, :, 0], "coordinate 0 of the vectors", None)
