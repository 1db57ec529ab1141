"""Slow NumPy references of blockwise absmax quantization (``nquant.kernels.blockwise``).

bitsandbytes' blockwise rules written as bitsandbytes writes them (torch ops translated to
NumPy), with no code shared with the kernel.
"""

import numpy as np


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
