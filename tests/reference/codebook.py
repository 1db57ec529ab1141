"""Slow references for the codebook family (``nquant.families.codebook``) and its grids.

The kernel-level references are ``codebook1d`` (nearest, floor, ceil, stochastic codes) and
``blockwise`` (bitsandbytes' blockwise rules).
"""

import numpy as np


def seed000_interval_lookup(x, grid):
    """What seed 000's notebook evidently did: scan the half-open intervals [s_i, s_{i+1}).

    ``w`` starts at 0 and becomes ``i`` when ``s_i <= x < s_{i+1}``; a value equal to the top
    level lies in no interval and keeps the default 0.
    """
    out = []
    for v in np.asarray(x):
        w = 0
        for i in range(len(grid) - 1):
            if grid[i] <= v < grid[i + 1]:
                w = i
        out.append(w)
    return np.array(out)
