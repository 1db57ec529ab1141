"""Slow, obvious NumPy references for the codebook and blockwise kernels.

Each function says what the kernel must compute in the plainest terms available, with no
shared code: brute-force nearest levels, ``np.searchsorted`` for floor/ceil, the counter-based
stream in pure Python integers, bitsandbytes' blockwise rules written as bitsandbytes writes
them (torch ops translated to NumPy).
"""

from fractions import Fraction

import numpy as np

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


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


def _mix64(z):
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def uniform(seed, index, dtype):
    """The stream's uniform draw for element ``index``, computed with Python integers."""
    key = _mix64(seed & MASK64)
    h = _mix64(key + (index + 1) * GAMMA)
    if np.dtype(dtype) == np.float32:
        return np.float32((h >> 40) / 2.0**24)
    return np.float64((h >> 11) / 2.0**53)


def stochastic(x2d, row_index, levels, seed):
    """Stochastic codes element by element: floor index i, up with P = (x - l[i]) / (l[i+1] - l[i]).

    Arithmetic in the data's dtype (levels rounded to it), draw from :func:`uniform`.
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
            u = uniform(seed, int(row_index[r]) + j, x2d.dtype)
            out[r, j] = i + int(u < p)
    return out


def blockwise_absmax(x, block_size):
    """max |x| per block of consecutive values (NaN propagates), float32."""
    x = np.asarray(x, np.float32)
    pad = -x.size % block_size
    xp = np.concatenate([x, np.zeros(pad, np.float32)]).reshape(-1, block_size)
    return np.abs(xp).max(axis=1).astype(np.float32)


def bnb_quantize_4bit(x, block_size, levels):
    """bitsandbytes' CPU ``quantize_4bit`` (backends/default/ops.py) in NumPy: codes (unpacked), absmax.

    Full blocks: ``clamp(x * (1 / clamp(absmax, min=1e-38)), -1, 1)``; the partial last block:
    ``clamp(x / clamp(absmax, min=1e-38), -1, 1)`` and its stored absmax is the clamped one;
    then ``bucketize`` on float32 midpoints ``(l[:-1] + l[1:]) / 2`` (right=False).
    """
    f32 = np.float32
    x = np.asarray(x, f32)
    n = x.size
    rem = n % block_size
    full = n - rem
    blocks = full // block_size
    a_com = x[:full].reshape(blocks, block_size)
    absmax = np.abs(a_com).max(axis=1) if blocks else np.zeros(0, f32)
    scale = (f32(1.0) / np.maximum(absmax, f32(1e-38))).astype(f32)
    scaled = np.clip((a_com * scale[:, None]).astype(f32), -1, 1).reshape(-1)
    if rem:
        am = np.maximum(np.abs(x[full:]).max(), f32(1e-38))
        absmax = np.concatenate([absmax, [am]]).astype(f32)
        scaled = np.concatenate([scaled, np.clip((x[full:] / am).astype(f32), -1, 1)])
    lv = np.asarray(levels, f32)
    bounds = ((lv[:-1] + lv[1:]) / f32(2)).astype(f32)
    return np.searchsorted(bounds, scaled, side="left").astype(np.uint8), absmax.astype(f32)


def dequantize_blockwise(codes, absmax, block_size, levels):
    """``levels[code] * absmax[block]`` in float32."""
    codes = np.asarray(codes)
    scale = np.repeat(np.asarray(absmax, np.float32), block_size)[: codes.size]
    return (np.asarray(levels, np.float32)[codes] * scale).astype(np.float32)


def pack4(codes):
    """Two codes per byte, the first in the high nibble; an odd count pads a zero low nibble."""
    c = np.asarray(codes, np.uint8)
    if c.size % 2:
        c = np.concatenate([c, np.zeros(1, np.uint8)])
    return ((c[0::2] << 4) | c[1::2]).astype(np.uint8)


def bnb_quantize_blockwise_8bit(x, block_size, code):
    """bitsandbytes 0.50's CPU 8-bit ``quantize_blockwise`` (csrc/cpu_ops.cpp, LUT path) in NumPy."""
    f32 = np.float32
    x = np.asarray(x, f32)
    code = np.asarray(code, f32)
    mids = (f32(0.5) * (code[:-1] + code[1:])).astype(f32)
    i = np.arange(65536)
    pts = (f32(-1.0) + ((f32(2.0) * i.astype(f32)) / f32(65535.0)).astype(f32)).astype(f32)
    lut = np.searchsorted(mids, pts, side="left").astype(np.uint8)
    nb = -(-x.size // block_size)
    absmax = np.zeros(nb, f32)
    out = np.zeros(x.size, np.uint8)
    for b in range(nb):
        blk = x[b * block_size:(b + 1) * block_size]
        a = np.abs(blk).max()
        absmax[b] = a
        if a == 0:
            continue
        y = np.clip((blk * (f32(1.0) / a)).astype(f32), f32(-1), f32(1))
        t = (((y + f32(1)).astype(f32) * f32(0.5)).astype(f32) * f32(65535)).astype(f32)
        idx = (t + f32(0.5)).astype(f32).astype(np.uint16)
        out[b * block_size:(b + 1) * block_size] = lut[idx]
    return out, absmax


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
