"""Slow, obvious NumPy references of codebook encoding (``nquant.kernels.codebook1d``).

Brute-force nearest levels, ``np.searchsorted`` for floor/ceil, stochastic rounding element by
element on the stream in Python integers.
"""

from fractions import Fraction

import numpy as np

from tests.reference.rng import uniform_int


def nearest(x, levels, ties="lower"):
    """Index of the nearest level by brute force (argmin |x - level|), exact.

    ``ties``: "lower" (the lower level wins an exact tie) or "away" (the level of larger
    magnitude wins; a tie at 0 goes lower).  Distances are compared in float64 and, where
    the two smallest are within rounding of each other, again in exact rational arithmetic.
    NaN inputs get code 0 (callers mask them).
    """
    x = np.asarray(x)
    lv = np.asarray(levels, dtype=np.float64)
    flat = x.reshape(-1).astype(np.float64)
    finite = np.isfinite(flat)
    xf = np.where(finite, flat, 0.0)
    d = np.abs(xf[:, None] - lv[None, :])
    code = np.argmin(d, axis=1)  # argmin takes the first (lower) index of equal distances
    srt = np.sort(d, axis=1)
    if lv.size > 1:
        close = srt[:, 1] - srt[:, 0] <= 1e-9 * np.maximum(srt[:, 1], 1e-300)
    else:
        close = np.zeros(flat.shape, bool)
    exact_lv = [Fraction(float(v)) for v in lv]
    for i in np.nonzero(close & finite)[0]:
        xv = Fraction(float(xf[i]))
        dist = [abs(xv - v) for v in exact_lv]
        best = min(dist)
        cands = [k for k, dk in enumerate(dist) if dk == best]
        k = cands[0]
        if len(cands) > 1 and ties == "away":
            mid = (exact_lv[cands[0]] + exact_lv[cands[1]]) / 2
            k = cands[1] if mid > 0 else cands[0]
        code[i] = k
    # +-inf: the end levels
    code[np.isposinf(flat)] = lv.size - 1
    code[np.isneginf(flat)] = 0
    return code.reshape(x.shape)


def floor_codes(x, levels):
    """Largest level <= x (0 below the first level)."""
    K = len(levels)
    return np.clip(np.searchsorted(np.asarray(levels), x, side="right") - 1, 0, K - 1)


def ceil_codes(x, levels):
    """Smallest level >= x (K-1 above the last level)."""
    K = len(levels)
    return np.clip(np.searchsorted(np.asarray(levels), x, side="left"), 0, K - 1)


def stochastic(x2d, row_index, levels, seed):
    """Stochastic codes element by element: floor index i, up with P = (x - l[i]) / (l[i+1] - l[i]).

    Arithmetic in the data's dtype (levels rounded to it), draw from :func:`tests.reference.rng.uniform_int`.
    """
    x2d = np.asarray(x2d)
    dt = x2d.dtype.type
    lv = np.asarray(levels)
    K = lv.size
    out = np.empty(x2d.shape, np.uint8)
    for r in range(x2d.shape[0]):
        for j in range(x2d.shape[1]):
            v = x2d[r, j]
            i = int(floor_codes(v, lv))
            if i >= K - 1:
                out[r, j] = K - 1
                continue
            a, b = dt(lv[i]), dt(lv[i + 1])
            with np.errstate(all="ignore"):
                p = dt((v - a) / (b - a))
            u = uniform_int(seed, int(row_index[r]) + j, x2d.dtype)
            out[r, j] = i + int(u < p)
    return out
