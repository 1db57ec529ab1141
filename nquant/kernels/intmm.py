"""Integer matrix multiplication kernels: int8 / packed int4 weights times 8-bit activations.

The product computed here is the integer accumulator

    A[o, n] = sum_k W[o, k] * (C[k, n] - cx)

of signed weight integers ``W`` (|W| <= 2^(bw-1)) and activation codes ``C``
(uint8, ``0 <= C < 2^bx``) centred by ``cx = 2^(bx-1)``, so that
``|C - cx| <= 2^(bx-1)``.  The zero-point folding and the scales are applied by
the caller (``nquant.qmatmul``).  Two ways to the same exact int32 ``A``:

- **Exact float32 GEMM** (``to_f32_*`` + BLAS + :func:`accumulate_f32`).  Every
  product ``W * (C - cx)`` is an integer of magnitude at most
  ``P = 2^(bw-1) * 2^(bx-1)``; over a block of ``KB = 2^24 / P`` consecutive
  ``k`` every partial sum, *in whatever order and grouping BLAS adds them, FMA
  or not*, is an integer of magnitude at most ``KB * P = 2^24``, and every
  integer of magnitude ``<= 2^24`` is a float32.  Each operation of the GEMM
  therefore has an exactly representable result and rounds nothing: the
  float32 block product equals the integer block product exactly.  Block
  results are converted to int32 and summed in int32.  For 8-bit weights and
  activations ``KB = 1024``; for 4-bit weights ``KB = 16384``.  The conversion,
  accumulation and epilogue kernels of this path are serial on purpose: they
  run between GEMM calls, while OpenBLAS's worker threads still spin, and a
  parallel Numba kernel there fights them for the cores (the conversions ran
  several times slower); serial, they cost a small fraction of the GEMM time.
- **Integer kernel** (:func:`intmm_int16`): weights and centred activations as
  int16, int32 multiply-accumulate in a loop that LLVM vectorizes to
  ``vpmaddwd`` (int16 pairs -> int32), tiled for cache: a block of ``OB``
  weight rows (converted or unpacked on the fly into a per-thread int16
  buffer) times a ``KB``-slice of the transposed activations.

Weights arrive either as ``int8`` ``(O, K)`` natural values or as row-packed
4-bit codes ``(O, ceil(K / 2))`` uint8 (MSB first: code ``2j`` is the high
nibble of byte ``j``), each code being ``W - qmin``.
"""

import numpy as np

from nquant.kernels._jit import jit, jit_parallel, prange

# ----------------------------------------------------------------------------- operand conversion


@jit
def to_f32_int8(w, o0, o1, k0, k1, out):
    """``out[:o1-o0, :k1-k0] = float32(w[o0:o1, k0:k1])``.

    Parameters
    ----------
    w : ndarray of shape (O, K), int8
    o0, o1, k0, k1 : int, the block
    out : ndarray of shape (o1 - o0, k1 - k0), float32, C-contiguous, written
    """
    for i in range(o1 - o0):
        src = w[o0 + i, k0:k1]
        dst = out[i]
        for j in range(src.shape[0]):
            dst[j] = np.float32(src[j])


@jit
def _nibble_pairs(qmin):
    """Table of the two float32 weights of every packed byte, as uint64 bit patterns.

    Entry ``b`` holds ``float32((b >> 4) + qmin)`` in its first (low-address) half and
    ``float32((b & 15) + qmin)`` in its second, so storing it unpacks one byte.
    """
    pairs = np.empty((256, 2), np.float32)
    for b in range(256):
        pairs[b, 0] = np.float32((b >> 4) + qmin)
        pairs[b, 1] = np.float32((b & 15) + qmin)
    return pairs.reshape(-1).view(np.uint64)


@jit
def to_f32_int4(packed, qmin, o0, o1, k0, k1, out):
    """Unpack a block of row-packed 4-bit codes to float32 integers ``code + qmin``.

    One table look-up per byte writes both of its weights (8 bytes).

    Parameters
    ----------
    packed : ndarray of shape (O, ceil(K / 2)), uint8 (code ``2j`` in the high nibble of byte ``j``)
    qmin : int, smallest weight integer (code 0 stands for ``qmin``)
    o0, o1, k0, k1 : int, the block; ``k0`` even
    out : ndarray of shape (o1 - o0, k1 - k0), float32, C-contiguous, written
    """
    n = k1 - k0
    half = n // 2
    b0 = k0 // 2
    table = _nibble_pairs(qmin)
    q = np.float32(qmin)
    for i in range(o1 - o0):
        src = packed[o0 + i, b0:b0 + (n + 1) // 2]
        dst = out[i]
        pairs = dst[:2 * half].view(np.uint64)
        for j in range(half):
            pairs[j] = table[src[j]]
        if n % 2:
            dst[n - 1] = np.float32(src[half] >> 4) + q


@jit
def center_f32(codes, cx, out):
    """``out = float32(codes - cx)`` (exact integers).

    Parameters
    ----------
    codes : ndarray of shape (K, N), uint8
    cx : int, centre
    out : ndarray of shape (K, N), float32, written
    """
    K, N = codes.shape
    c = np.float32(cx)
    for k in range(K):
        src = codes[k]
        dst = out[k]
        for n in range(N):
            dst[n] = np.float32(src[n]) - c


@jit_parallel
def center_transpose_i16(codes, cx, out):
    """``out = int16(codes.T - cx)``, transposed in 64 x 64 tiles.

    Parameters
    ----------
    codes : ndarray of shape (K, N), uint8
    cx : int
    out : ndarray of shape (N, K), int16, written
    """
    K, N = codes.shape
    T = 64
    nkt = (K + T - 1) // T
    c = np.int16(cx)
    for kt in prange(nkt):
        k0 = kt * T
        k1 = min(K, k0 + T)
        for n0 in range(0, N, T):
            n1 = min(N, n0 + T)
            for n in range(n0, n1):
                for k in range(k0, k1):
                    out[n, k] = np.int16(codes[k, n]) - c


@jit
def accumulate_f32(acc, y, first):
    """``acc += int32(y)`` (``acc = int32(y)`` when ``first``); ``y`` holds exact integers.

    Parameters
    ----------
    acc : ndarray of shape (R, N), int32, updated
    y : ndarray of shape (R, N), float32
    first : bool
    """
    R, N = y.shape
    for r in range(R):
        a = acc[r]
        v = y[r]
        if first:
            for n in range(N):
                a[n] = np.int32(v[n])
        else:
            for n in range(N):
                a[n] += np.int32(v[n])


@jit_parallel
def row_sums_int8(w):
    """Row sums of int8 weights as int32 (``|sum| <= 128 K``).

    Parameters
    ----------
    w : ndarray of shape (O, K), int8

    Returns
    -------
    ndarray of shape (O,), int32
    """
    O, K = w.shape
    out = np.empty(O, np.int32)
    for o in prange(O):
        s = np.int32(0)
        for k in range(K):
            s = np.int32(s + np.int32(w[o, k]))
        out[o] = s
    return out


@jit_parallel
def row_sums_int4(packed, qmin, K):
    """Row sums of row-packed 4-bit weights ``code + qmin`` as int32.

    Parameters
    ----------
    packed : ndarray of shape (O, ceil(K / 2)), uint8
    qmin : int
    K : int, number of weights per row

    Returns
    -------
    ndarray of shape (O,), int32
    """
    O = packed.shape[0]
    out = np.empty(O, np.int32)
    half = K // 2
    for o in prange(O):
        s = np.int32(0)
        for j in range(half):
            b = np.int32(packed[o, j])
            s = np.int32(s + (b >> 4) + (b & 15))
        if K % 2:
            s = np.int32(s + (np.int32(packed[o, half]) >> 4))
        out[o] = np.int32(s + qmin * K)
    return out


# ----------------------------------------------------------------------------- integer kernel


@jit
def _dot_i16(a, b):
    """``sum(a * b)`` of two int16 vectors in int32 (vectorizes to ``vpmaddwd``)."""
    s = np.int32(0)
    for k in range(a.shape[0]):
        s = np.int32(s + np.int32(a[k]) * np.int32(b[k]))
    return s


@jit
def _load_rows(w, packed, bits, qmin, o0, o1, buf):
    """Weight rows ``o0:o1`` as int16 into ``buf[:o1-o0]`` (int8 copy or 4-bit unpack)."""
    K = buf.shape[1]
    if bits == 8:
        for i in range(o1 - o0):
            for k in range(K):
                buf[i, k] = w[o0 + i, k]
    else:
        half = K // 2
        q = np.int16(qmin)
        for i in range(o1 - o0):
            src = packed[o0 + i]
            for j in range(half):
                b = np.int16(src[j])
                buf[i, 2 * j] = (b >> 4) + q
                buf[i, 2 * j + 1] = (b & 15) + q
            if K % 2:
                buf[i, K - 1] = (np.int16(src[half]) >> 4) + q


@jit_parallel
def intmm_int16(w, packed, bits, qmin, xt, OB, KB, out):
    """Integer accumulator ``out[o, n] = sum_k W[o, k] * xt[n, k]`` in int32.

    Work is split over blocks of ``OB`` weight rows; each block is converted to
    int16 once (8-bit: from ``w``; 4-bit: unpacked from ``packed``) into a
    per-thread buffer, then multiplied with ``KB``-wide slices of ``xt`` so the
    slice (``N * KB * 2`` bytes) stays in L2 while the rows are reused.

    Parameters
    ----------
    w : ndarray of shape (O, K), int8 (bits == 8) or a dummy (1, 1) int8 array
    packed : ndarray of shape (O, ceil(K / 2)), uint8 (bits == 4) or a dummy (1, 1) uint8 array
    bits : int, 8 or 4
    qmin : int, smallest weight integer (4-bit codes are ``W - qmin``)
    xt : ndarray of shape (N, K), int16, the centred activations transposed
    OB, KB : int, block sizes
    out : ndarray of shape (O, N), int32, written
    """
    N, K = xt.shape
    O = out.shape[0]
    nob = (O + OB - 1) // OB
    for ob in prange(nob):
        o0 = ob * OB
        o1 = min(O, o0 + OB)
        buf = np.empty((o1 - o0, K), np.int16)
        _load_rows(w, packed, bits, qmin, o0, o1, buf)
        for o in range(o0, o1):
            for n in range(N):
                out[o, n] = 0
        for k0 in range(0, K, KB):
            k1 = min(K, k0 + KB)
            for n in range(N):
                xr = xt[n, k0:k1]
                for i in range(o1 - o0):
                    out[o0 + i, n] += _dot_i16(buf[i, k0:k1], xr)


# ----------------------------------------------------------------------------- epilogue


@jit
def epilogue(acc, rowsum, zfold, w_scale, x_scale, x_offset, out):
    """Float32 output from the int32 accumulator and the folded zero-point terms.

    ``out[o, n] = s_w[o] * (s_x * (acc[o, n] + zfold * R[o]) + off_x * R[o])``
    evaluated in float64 (the integer part exactly) and rounded once to float32.

    Parameters
    ----------
    acc : ndarray of shape (O, N), int32, ``sum_k W[o, k] * (C[k, n] - cx)``
    rowsum : ndarray of shape (O,), int32, ``R[o] = sum_k W[o, k]`` (weight-only, precomputed)
    zfold : int, ``cx - c0``: centre minus the activations' zero code (per call)
    w_scale : ndarray of shape (O,), float32 (used in float64)
    x_scale, x_offset : float
    out : ndarray of shape (O, N), float32, written
    """
    O, N = acc.shape
    for o in range(O):
        r = np.float64(rowsum[o])
        corr = np.float64(zfold) * r
        sw = np.float64(w_scale[o])
        sxw = x_scale * sw
        offw = x_offset * r * sw
        a = acc[o]
        dst = out[o]
        for n in range(N):
            dst[n] = np.float32((np.float64(a[n]) + corr) * sxw + offw)
