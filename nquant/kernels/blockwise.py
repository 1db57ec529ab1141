"""Blockwise absmax quantization (QLoRA / bitsandbytes NF4) and double quantization.

The data is a flat, contiguous float32 array cut into blocks of ``block_size`` consecutive
values (the last block may be partial), as bitsandbytes does for ``quantize_4bit``.  The API
casts float64 input to float32 first, as bitsandbytes does.

Encoding rule, bit-identical to bitsandbytes' CPU ``quantize_4bit`` (0.50.2, checked against
golden vectors in ``tests/fixtures/bnb_nf4_golden.npz``):

- ``absmax[b] = max |x|`` over block ``b`` (float32, exact).  A block holding a NaN gets a
  NaN absmax, one holding an inf an inf absmax, so the API checks finiteness on the absmax
  vector (1/block_size of the data) instead of the data.
- full blocks: ``y = x * (1 / max(absmax, 1e-38))`` with the reciprocal rounded to float32;
  the last, partial block: ``y = x / max(absmax, 1e-38)`` (bitsandbytes divides there).
- ``code = #{i : y > m[i]}`` with float32 midpoints ``m[i] = (l[i] + l[i+1]) / 2`` computed in
  float32: the nearest level, a value at a (float32) midpoint going to the LOWER level.
  (``y`` is clamped to [-1, 1] first; that only matters for levels outside [-1, 1].)
- an all-zero block has ``absmax == 0``, every ``y == 0``, so its codes are the nearest level
  to 0 (NF4: code 7, the level 0.0) and it decodes to exactly 0.  bitsandbytes stores
  ``1e-38`` instead of 0 as the absmax of an all-zero *partial last* block (it clamps before
  storing there only); the codes agree, the stored absmax differs.  A block whose absmax is
  below 1e-38 (subnormal) is scaled by 1e38, as in bitsandbytes, not by ``1/absmax``.

Search: with at most 16 levels (NF4 and every 4-bit grid) the count is 15 branch-free compares
against the thresholds, +inf padded, which vectorizes over a block (a NaN counts 0); with more
levels, the lookup table or binary search of :mod:`nquant.kernels.codebook1d` (scalar: gathers).

Decoding: ``x_hat = levels[code] * absmax[block]`` in float32.

4-bit packing is fused into encode and decode (``packed=True``): two codes per byte, the
first value in the HIGH nibble (bitsandbytes' order, and nquant's MSB-first bit stream); an
odd count leaves the last low nibble 0.  Packing needs an even ``block_size`` (blocks then
start on byte boundaries).

Double quantization (QLoRA): the float32 absmax vector minus its mean ``offset`` is quantized
blockwise (block 256) with bitsandbytes' 8-bit dynamic map, with bitsandbytes' CPU 8-bit rule
(:func:`quantize_blockwise_lut8`), see :func:`double_quantize`.
"""

from fractions import Fraction

import numpy as np

from nquant.codebooks.grids import dynamic_map
from nquant.kernels._jit import jit, jit_parallel, over_rows, prange
from nquant.kernels.codebook1d import LUT_SIZE, MAX_CORRECTIONS, search_binary, search_lut, build_lut32

__all__ = [
    "blockwise_absmax",
    "quantize_blockwise",
    "absmax_quantize_blockwise",
    "dequantize_blockwise",
    "quantize_blockwise_lut8",
    "double_quantize",
    "double_dequantize",
    "DOUBLE_QUANT_BLOCK",
    "weighted_histogram",
    "exact_sum_partial",
    "exact_mean",
]

TASK_VALUES = 16384
"""Values per parallel task (rounded to whole blocks)."""

DOUBLE_QUANT_BLOCK = 256
_TINY = np.float32(1e-38)
_ABS = np.uint32(0x7FFFFFFF)
_F1 = np.float32(1.0)
DYNAMIC = dynamic_map(signed=True)
DYNAMIC.setflags(write=False)
"""The signed dynamic map (bitsandbytes' 8-bit code) that double quantization uses by default."""


@jit
def _absmax(xb):
    """max |x| of a float32 slice through integer compares (vectorizes; NaN wins over inf)."""
    xi = xb.view(np.uint32)
    m = np.uint32(0)
    for i in range(xi.shape[0]):
        v = np.uint32(xi[i] & _ABS)
        m = v if v > m else m
    return np.uint32(m).view(np.float32)


@jit
def _blocks_per_task(block_size):
    return max(1, TASK_VALUES // block_size)


@jit_parallel
def blockwise_absmax(xflat, block_size, out_absmax):
    """Absolute maximum of each block of ``block_size`` consecutive values.

    Parameters
    ----------
    xflat : ndarray of shape (n,), float32, contiguous (may be read-only)
    block_size : int >= 1
    out_absmax : ndarray of shape (ceil(n / block_size),), float32, written
        NaN for a block holding a NaN, inf for one holding an inf (and no NaN).
    """
    n = xflat.shape[0]
    nb = (n + block_size - 1) // block_size
    per = _blocks_per_task(block_size)
    for t in prange((nb + per - 1) // per):
        for b in range(t * per, min(nb, t * per + per)):
            s = b * block_size
            out_absmax[b] = _absmax(xflat[s:min(n, s + block_size)])


@jit
def _midpoint_thresholds(levels, thr):
    """bitsandbytes' float32 midpoints, adjusted for its clamp of y to [-1, 1]; +inf padded."""
    K = levels.shape[0]
    for i in range(K - 1):
        m = (np.float32(levels[i]) + np.float32(levels[i + 1])) / np.float32(2.0)
        if m < -_F1:
            m = -np.inf
        elif m >= _F1:
            m = np.inf
        thr[i] = m
    for i in range(K - 1, thr.shape[0]):
        thr[i] = np.inf


@jit
def _encode_block(xb, a, divide, lut, thr, nc, table, nsteps, ob):
    ac = a if a > _TINY else _TINY
    if divide:
        for j in range(xb.shape[0]):
            y = xb[j] / ac
            ob[j] = search_lut(y, lut, thr, nc) if nc >= 0 else search_binary(y, table, nsteps)
    else:
        sc = _F1 / ac
        if nc == 1 or nc == 0:
            for j in range(xb.shape[0]):
                ob[j] = search_lut(xb[j] * sc, lut, thr, 1)
        elif nc == 2:
            for j in range(xb.shape[0]):
                ob[j] = search_lut(xb[j] * sc, lut, thr, 2)
        else:
            for j in range(xb.shape[0]):
                ob[j] = search_binary(xb[j] * sc, table, nsteps)


@jit
def _encode_task(xflat, absmax, out_absmax, block_size, b0, b1, lut, thr, nc, table, nsteps, out):
    """Encode blocks [b0, b1) to one of more than 16 levels (unpacked codes) by a table search;
    scales from ``absmax``, or computed into ``out_absmax`` when ``absmax`` is empty (read-only
    ``absmax`` arrays are never written)."""
    n = xflat.shape[0]
    fused = absmax.shape[0] == 0
    for b in range(b0, b1):
        s = b * block_size
        e = min(n, s + block_size)
        xb = xflat[s:e]
        if fused:
            a = _absmax(xb)
            out_absmax[b] = a
        else:
            a = absmax[b]
        _encode_block(xb, a, e - s < block_size, lut, thr, nc, table, nsteps, out[s:e])


@jit(inline="always")
def _count15(y, t):
    """#{i : y > t[i]} over 15 thresholds, branch-free (a NaN ``y`` counts 0)."""
    return ((y > t[0]) + (y > t[1]) + (y > t[2]) + (y > t[3]) + (y > t[4]) + (y > t[5]) + (y > t[6])
            + (y > t[7]) + (y > t[8]) + (y > t[9]) + (y > t[10]) + (y > t[11]) + (y > t[12]) + (y > t[13])
            + (y > t[14]))


@jit
def _encode_blocks16(b0, b1, xflat, absmax, out_absmax, block_size, thr, packed, out):
    """Encode blocks [b0, b1) to one of at most 16 levels: ``thr`` holds the 15 thresholds
    (+inf padded).  The count of 15 compares has no branch and no table lookup, so the loop
    over a block vectorizes (16 values per AVX-512 compare), and the two codes of a byte are
    counted and packed in the same loop; the absmax of the block is taken just before, while
    the block is in L1.  Other arguments as :func:`_encode_task`."""
    t = (thr[0], thr[1], thr[2], thr[3], thr[4], thr[5], thr[6], thr[7], thr[8], thr[9], thr[10], thr[11],
         thr[12], thr[13], thr[14])
    n = xflat.shape[0]
    fused = absmax.shape[0] == 0
    for b in range(b0, b1):
        s = b * block_size
        e = min(n, s + block_size)
        xb = xflat[s:e]
        if fused:
            a = _absmax(xb)
            out_absmax[b] = a
        else:
            a = absmax[b]
        ac = a if a > _TINY else _TINY
        if e - s < block_size:  # the partial last block: bitsandbytes divides there
            if packed:
                ob = out[s // 2:(e + 1) // 2]
                for j in range(e - s):
                    c = np.uint8(_count15(xb[j] / ac, t))
                    if j % 2:
                        ob[j // 2] |= c
                    else:
                        ob[j // 2] = c << np.uint8(4)
            else:
                ob = out[s:e]
                for j in range(e - s):
                    ob[j] = _count15(xb[j] / ac, t)
        else:
            sc = _F1 / ac
            if packed:
                ob = out[s // 2:e // 2]
                for k in range(block_size // 2):
                    ob[k] = np.uint8((_count15(xb[2 * k] * sc, t) << 4) | _count15(xb[2 * k + 1] * sc, t))
            else:
                ob = out[s:e]
                for j in range(block_size):
                    ob[j] = _count15(xb[j] * sc, t)


@jit_parallel
def _encode(xflat, absmax, out_absmax, block_size, levels, out):
    """Unpacked codes to one of more than 16 levels, by a table search (:func:`_encode_task`)."""
    n = xflat.shape[0]
    K = levels.shape[0]
    nsteps = 0
    while (1 << nsteps) < K:
        nsteps += 1
    thr = np.empty(max(1 << nsteps, K + MAX_CORRECTIONS + 1), np.float32)
    _midpoint_thresholds(levels, thr)
    lut = np.empty(LUT_SIZE, np.uint8)
    worst = build_lut32(thr, K - 1, lut)
    nc = worst if worst <= MAX_CORRECTIONS else -1
    nb = (n + block_size - 1) // block_size
    per = _blocks_per_task(block_size)
    for i in prange((nb + per - 1) // per):
        _encode_task(xflat, absmax, out_absmax, block_size, i * per, min(nb, i * per + per), lut, thr, nc,
                     thr, nsteps, out)


def _quantize(xflat, absmax, out_absmax, block_size, levels, out, packed):
    if levels.shape[0] > 16:
        _encode(xflat, absmax, out_absmax, block_size, levels, out)
        return
    thr = np.empty(16, np.float32)
    _midpoint_thresholds(levels, thr)
    # threads of a pool take blocks of rows in turn (a static split of the blocks waits for the
    # slowest thread, e.g. one sharing its core with another process)
    over_rows(_encode_blocks16, -(-xflat.shape[0] // block_size), block_size, xflat, absmax, out_absmax,
              block_size, thr, packed, out)


_NO_ABSMAX = np.empty(0, np.float32)


def quantize_blockwise(xflat, absmax, block_size, levels, out_codes, packed=False):
    """Code each value to the nearest level after scaling by its block's absmax (NF4 rule).

    Parameters
    ----------
    xflat : ndarray of shape (n,), float32, contiguous (may be read-only)
    absmax : ndarray of shape (ceil(n / block_size),), float32
        From :func:`blockwise_absmax` (or any positive scales).
    block_size : int >= 1 (even when ``packed``)
    levels : ndarray of shape (K,), float32, sorted, K <= 256 (K <= 16 when ``packed``)
    out_codes : ndarray of uint8, written
        Shape (n,), or (ceil(n / 2),) when ``packed``: two codes per byte, first value in
        the high nibble.
    packed : bool
    """
    _quantize(xflat, absmax, _NO_ABSMAX, block_size, levels, out_codes, packed)


def absmax_quantize_blockwise(xflat, block_size, levels, out_absmax, out_codes, packed=False):
    """:func:`blockwise_absmax` and :func:`quantize_blockwise` fused: one pass over the data.

    Parameters are those of the two functions; ``out_absmax`` is written.  This is
    bitsandbytes' ``quantize_4bit`` (with ``packed=True`` and the NF4 levels), bit for bit.
    """
    _quantize(xflat, _NO_ABSMAX, out_absmax, block_size, levels, out_codes, packed)


@jit
def _decode_task(codes, absmax, block_size, b0, b1, n, levels, packed, out, tab):
    """Decode blocks [b0, b1); ``tab`` (K,) scratch holds ``levels * absmax`` of the block
    when K is small against the block (one multiply per level instead of per value)."""
    K = levels.shape[0]
    scaled = tab.shape[0] == K
    for b in range(b0, b1):
        s = b * block_size
        e = min(n, s + block_size)
        a = absmax[b]
        if scaled:
            for k in range(K):
                tab[k] = levels[k] * a
            lv = tab
            m = np.float32(1.0)
        else:
            lv = levels
            m = a
        ob = out[s:e]
        if packed:
            cb = codes[s // 2:(e + 1) // 2]
            h = (e - s) // 2
            for k in range(h):
                p = cb[k]
                ob[2 * k] = lv[p >> np.uint8(4)] * m
                ob[2 * k + 1] = lv[p & np.uint8(15)] * m
            if (e - s) % 2:
                ob[e - s - 1] = lv[cb[h] >> np.uint8(4)] * m
        else:
            cb = codes[s:e]
            for j in range(cb.shape[0]):
                ob[j] = lv[cb[j]] * m


@jit_parallel
def _decode(codes, absmax, block_size, levels, out, packed):
    n = out.shape[0]
    nb = (n + block_size - 1) // block_size
    per = _blocks_per_task(block_size)
    lv = levels.astype(np.float32)
    K = lv.shape[0]
    for t in prange((nb + per - 1) // per):
        tab = np.empty(K if 4 * K <= block_size else 0, np.float32)
        _decode_task(codes, absmax, block_size, t * per, min(nb, t * per + per), n, lv, packed, out, tab)


def dequantize_blockwise(codes, absmax, block_size, levels, out, packed=False):
    """Decode: ``out[i] = levels[code[i]] * absmax[i // block_size]`` (float32 product).

    Parameters
    ----------
    codes : ndarray of uint8
        Shape (n,), or (ceil(n / 2),) packed (first value in the high nibble).
    absmax : ndarray of shape (ceil(n / block_size),), float32
    block_size : int >= 1 (even when ``packed``)
    levels : ndarray of shape (K,), float32
    out : ndarray of shape (n,), float32 (or float64: the float32 product, widened), written;
        its length gives ``n``.
    packed : bool
    """
    _decode(codes, absmax, block_size, levels, out, packed)


# ---------------------------------------------------------------------------------------
# bitsandbytes' 8-bit CPU rule (double quantization)
# ---------------------------------------------------------------------------------------
@jit
def _build_lut8(code, lut):
    """bitsandbytes' 65536-entry table over [-1, 1]: entry i holds #{float32 midpoints < v_i}."""
    K = code.shape[0]
    c = 0
    for i in range(lut.shape[0]):
        v = np.float32(-1.0) + (np.float32(2.0) * np.float32(i)) / np.float32(65535.0)
        while c < K - 1 and np.float32(0.5) * (code[c] + code[c + 1]) < v:
            c += 1
        lut[i] = c


@jit_parallel
def quantize_blockwise_lut8(xflat, block_size, code, out_absmax, out_codes):
    """bitsandbytes' CPU 8-bit blockwise quantization (``quantize_blockwise``), bit for bit.

    ``absmax = max |x|`` per block; an all-zero block gets codes 0.  Otherwise
    ``y = clamp(x * float32(1/absmax), -1, 1)`` indexes a 65536-entry table over [-1, 1]
    (``uint16((y + 1) * 0.5 * 65535 + 0.5)``, float32 arithmetic) whose entries hold the
    nearest code of the table point: nearest rounding to within 1/65535 of the range (so a
    value very close to a midpoint may go either way).  This is the rule of bitsandbytes
    0.50 (older releases used a binary search with float32 distance compares).

    Parameters
    ----------
    xflat : ndarray of shape (n,), float32
    block_size : int >= 1
    code : ndarray of shape (256,), float32, sorted, spanning about [-1, 1]
    out_absmax : ndarray of shape (ceil(n / block_size),), float32, written
    out_codes : ndarray of shape (n,), uint8, written
    """
    lut = np.empty(65536, np.uint8)
    _build_lut8(code, lut)
    n = xflat.shape[0]
    nb = (n + block_size - 1) // block_size
    for b in prange(nb):
        s = b * block_size
        e = min(n, s + block_size)
        xb = xflat[s:e]
        ob = out_codes[s:e]
        a = _absmax(xb)
        out_absmax[b] = a
        if a == np.float32(0.0):
            for j in range(ob.shape[0]):
                ob[j] = 0
            continue
        inv = _F1 / a
        for j in range(xb.shape[0]):
            y = xb[j] * inv
            y = -_F1 if y < -_F1 else (_F1 if y > _F1 else y)
            f = (y + _F1) * np.float32(0.5) * np.float32(65535.0) + np.float32(0.5)
            ob[j] = lut[np.uint16(f)]


def double_quantize(absmax, offset=None, code=None, block_size=DOUBLE_QUANT_BLOCK):
    """QLoRA double quantization of a float32 absmax vector (bitsandbytes ``compress_statistics``).

    ``offset = mean(absmax)``; ``absmax - offset`` (float32) is quantized with
    :func:`quantize_blockwise_lut8` in blocks of 256 with the dynamic map.

    Parameters
    ----------
    absmax : ndarray of shape (m,), float32
    offset : float32, optional
        Default: the mean computed in float64, rounded to float32.  bitsandbytes takes a
        float32 ``torch.mean``, which may differ in the last bit; pass its ``offset`` to
        reproduce a bitsandbytes state exactly.
    code : ndarray of shape (256,), float32, optional
        Default :func:`nquant.codebooks.grids.dynamic_map` (``QuantState.state2.code``).
    block_size : int, default 256

    Returns
    -------
    codes : ndarray of shape (m,), uint8
    absmax2 : ndarray of shape (ceil(m / 256),), float32
    offset : numpy.float32
    """
    absmax = np.ascontiguousarray(absmax, dtype=np.float32)
    if offset is None:
        offset = np.mean(absmax, dtype=np.float64) if absmax.size else 0.0
    offset = np.float32(offset)
    code = DYNAMIC if code is None else np.ascontiguousarray(code, dtype=np.float32)
    centred = absmax - offset
    codes = np.empty(absmax.shape[0], np.uint8)
    absmax2 = np.empty(-(-absmax.shape[0] // block_size), np.float32)
    quantize_blockwise_lut8(centred, block_size, code, absmax2, codes)
    return codes, absmax2, offset


def double_dequantize(codes, absmax2, offset, code=None, block_size=DOUBLE_QUANT_BLOCK, out=None):
    """Inverse of :func:`double_quantize`: ``code[codes] * absmax2[block] + offset`` in float32.

    Returns
    -------
    ndarray of shape (m,), float32 (``out`` when given)
    """
    code = DYNAMIC if code is None else np.ascontiguousarray(code, dtype=np.float32)
    if out is None:
        out = np.empty(codes.shape[0], np.float32)
    dequantize_blockwise(codes, absmax2, block_size, code, out)
    out += np.float32(offset)
    return out


@jit
def weighted_histogram(xflat, absmax, block_size, scale, frac_bits, bins, out_w, out_s):
    """Add the fixed-point weighted histogram of the block-normalised values of ``xflat`` (the
    mergeable statistics of ``KMeansBlockwise``: levels are fitted to it by exact 1-D k-means).

    Parameters
    ----------
    xflat : ndarray of shape (n,), float32
    absmax : ndarray of shape (ceil(n / block_size),), float32, per-block absmax
    block_size : int
    scale : float, the largest absmax ``A`` (> 0)
    frac_bits : int, ``F``: weights are ``round((absmax / A)**2 * 2**F)``
    bins : int, bins over [-1, 1]
    out_w, out_s : ndarray of shape (bins,), int64, accumulated: per bin the sum of the
        fixed-point weights ``wq`` and of ``round(wq * y)``, ``y = x * float32(1 / absmax)``.
    """
    n = xflat.shape[0]
    nb = (n + block_size - 1) // block_size
    two_f = 2.0 ** frac_bits
    half = 0.5 * bins
    for b in range(nb):
        a = absmax[b]
        if a == np.float32(0.0):
            continue
        r = np.float64(a) / scale
        wq = np.rint(r * r * two_f)
        if wq == 0.0:
            continue
        iwq = np.int64(wq)
        ac = a if a > np.float32(1e-38) else np.float32(1e-38)
        inv = np.float32(1.0) / ac
        for i in range(b * block_size, min(n, (b + 1) * block_size)):
            y = xflat[i] * inv
            if y > np.float32(1.0):
                y = np.float32(1.0)
            elif y < np.float32(-1.0):
                y = np.float32(-1.0)
            j = np.int64((np.float64(y) + 1.0) * half)
            if j >= bins:
                j = bins - 1
            out_w[j] += iwq
            out_s[j] += np.int64(np.rint(wq * np.float64(y)))


# exact mean of the absmax (plain NumPy and Python integers on the host: the sums are exact)


def exact_sum_partial(a):
    """Exact, mergeable sum of non-negative finite float32 values.

    Returns
    -------
    ndarray of shape (257,), int64: per float32 exponent field the sum of the integer
    mantissas, then the count.  Sums add exactly (fewer than 2**39 values).
    """
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    e = (bits >> 23) & 0xFF
    m = (bits & 0x7FFFFF) | np.where(e > 0, 0x800000, 0).astype(np.uint32)
    sums = np.bincount(e, weights=m.astype(np.float64), minlength=256).astype(np.int64)
    return np.append(sums, a.size)


def exact_mean(partial):
    """Mean of the values behind merged :func:`exact_sum_partial` output, as float32."""
    n = int(partial[-1])
    if n == 0:
        return np.float32(0)
    total = Fraction(0)
    for e, s in enumerate(partial[:-1]):
        if s:
            total += Fraction(int(s)) * Fraction(2) ** (max(e, 1) - 150)
    return np.float32(float(total / n))
