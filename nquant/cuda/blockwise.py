"""CUDA twin of :mod:`nquant.kernels.blockwise`: NF4 / absmax blockwise quantization, double quantization.

Same functions and arguments as the CPU module, same bitsandbytes rules (see its
docstring), bit for bit:

- ``absmax`` per block through integer compares of the float32 bit patterns (a uint32
  view of the data), so NaN and inf blocks give the CPU's absmax, payload included;
  one thread per block.
- encoding: one thread per value (per byte when ``packed``: two codes, the first in the
  high nibble); ``y = x * float32(1 / absmax)`` in full blocks, ``x / absmax`` in the
  last partial one, then ``#{m < y}`` over the CPU's float32 midpoint table with the
  CPU's binary search compiled for the device.
- decoding: ``levels[code] * absmax[block]`` in float32, one thread per value (byte).
- double quantization: the CPU's 8-bit table (``_build_lut8``, built on the host) and
  its index ``uint16((y + 1) * 0.5 * 65535 + 0.5)`` with the products rounded before the
  sum (``mul_rn``: no fused multiply-add), one thread per block of 256.

Arrays may be NumPy (copied in and back) or device arrays (results stay on the device).
"""


import numpy as np
from numba import cuda

from nquant.cuda._device import mul_rn, retarget
from nquant.cuda._launch import as_device, is_device, kernel, launch, output
from nquant.kernels import blockwise as _cpu
from nquant.kernels.codebook1d import search_binary as _cpu_search_binary

__all__ = [
    "blockwise_absmax",
    "quantize_blockwise",
    "absmax_quantize_blockwise",
    "dequantize_blockwise",
    "quantize_blockwise_lut8",
    "double_quantize",
    "double_dequantize",
    "exact_sum_partial",
    "DOUBLE_QUANT_BLOCK",
]

DOUBLE_QUANT_BLOCK = _cpu.DOUBLE_QUANT_BLOCK
_TINY = np.float32(1e-38)
_ABS = np.uint32(0x7FFFFFFF)
_F1 = np.float32(1.0)
_HALF = np.float32(0.5)
_SPAN = np.float32(65535.0)
_EXP_MASK = np.uint32(0xFF)
_MANT = np.uint32(0x7FFFFF)
_HIDDEN = np.uint32(0x800000)

_search_binary = retarget(_cpu_search_binary)


# ----------------------------------------------------------------------------- absmax


@kernel
def _absmax_bits(xbits, block_size, out_bits):
    n = xbits.shape[0]
    nb = out_bits.shape[0]
    b = cuda.grid(1)
    stride = cuda.gridsize(1)
    while b < nb:
        s = b * block_size
        e = min(n, s + block_size)
        m = np.uint32(0)
        for k in range(s, e):
            v = np.uint32(xbits[k] & _ABS)
            m = v if v > m else m
        out_bits[b] = m
        b += stride


def _absmax_into(d_x, block_size, d_absmax):
    launch(_absmax_bits, d_absmax.shape[0], d_x.view(np.uint32), int(block_size), d_absmax.view(np.uint32))


def blockwise_absmax(xflat, block_size, out_absmax):
    """Absolute maximum of each block of ``block_size`` consecutive values (twin of the CPU kernel).

    Parameters
    ----------
    xflat : array of shape (n,), float32, contiguous (host or device)
    block_size : int >= 1
    out_absmax : array of shape (ceil(n / block_size),), float32, written (host or device)
        NaN for a block holding a NaN, inf for one holding an inf (and no NaN).
    """
    d_out, finish = output(out_absmax)
    _absmax_into(as_device(xflat, np.float32), block_size, d_out)
    finish()


# ----------------------------------------------------------------------------- encode / decode


def _table(levels):
    """The CPU's midpoint table (float32, +inf padded to a power of two) and its steps."""
    K = levels.shape[0]
    nsteps = 0
    while (1 << nsteps) < K:
        nsteps += 1
    thr = np.empty(max(1 << nsteps, K + _cpu.MAX_CORRECTIONS + 1), np.float32)
    _cpu._midpoint_thresholds(np.ascontiguousarray(levels, dtype=np.float32), thr)
    return thr, nsteps


@kernel
def _encode(x, absmax, block_size, table, nsteps, out, packed):
    n = x.shape[0]
    m = (n + 1) // 2 if packed else n
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < m:
        first = 2 * i if packed else i
        last = min(n, first + 2) if packed else first + 1
        byte = np.uint8(0)
        for k in range(first, last):
            b = k // block_size
            s = b * block_size
            a = absmax[b]
            ac = a if a > _TINY else _TINY
            if n - s < block_size:  # the last, partial block: bitsandbytes divides
                y = x[k] / ac
            else:
                y = x[k] * (_F1 / ac)
            c = np.uint8(_search_binary(y, table, nsteps))
            if packed:
                if k == first:
                    byte = np.uint8(c << np.uint8(4))
                else:
                    byte = np.uint8(byte | c)
            else:
                out[k] = c
        if packed:
            out[i] = byte
        i += stride


def _encode_into(d_x, d_absmax, block_size, levels, d_codes, packed):
    table, nsteps = _table(levels)
    n = d_x.shape[0]
    launch(_encode, (n + 1) // 2 if packed else n, d_x, d_absmax, int(block_size), as_device(table),
           int(nsteps), d_codes, bool(packed))


def quantize_blockwise(xflat, absmax, block_size, levels, out_codes, packed=False):
    """Code each value to the nearest level after scaling by its block's absmax (NF4 rule).

    Twin of the CPU function; see it for the parameters.  ``levels`` (K <= 256, float32,
    sorted) is read on the host; the other arrays may be on the host or the device.
    """
    d_out, finish = output(out_codes)
    _encode_into(as_device(xflat, np.float32), as_device(absmax, np.float32), block_size,
                 np.asarray(levels), d_out, packed)
    finish()


def absmax_quantize_blockwise(xflat, block_size, levels, out_absmax, out_codes, packed=False):
    """:func:`blockwise_absmax` then :func:`quantize_blockwise` (bitsandbytes' ``quantize_4bit``).

    Twin of the CPU function (which fuses the two passes; the device runs two kernels).
    """
    d_x = as_device(xflat, np.float32)
    d_absmax, finish_absmax = output(out_absmax)
    d_codes, finish_codes = output(out_codes)
    _absmax_into(d_x, block_size, d_absmax)
    _encode_into(d_x, d_absmax, block_size, np.asarray(levels), d_codes, packed)
    finish_absmax()
    finish_codes()


@kernel
def _decode(codes, absmax, block_size, levels, out, packed):
    n = out.shape[0]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        if packed:
            p = codes[i // 2]
            c = p >> np.uint8(4) if i % 2 == 0 else p & np.uint8(15)
        else:
            c = codes[i]
        out[i] = levels[c] * absmax[i // block_size]
        i += stride


def dequantize_blockwise(codes, absmax, block_size, levels, out, packed=False):
    """Decode: ``out[i] = levels[code[i]] * absmax[i // block_size]`` (float32 product).

    Twin of the CPU function; ``out`` (float32, or float64 for the widened float32
    product) gives ``n``.
    """
    d_out, finish = output(out)
    launch(_decode, d_out.shape[0], as_device(codes, np.uint8), as_device(absmax, np.float32),
           int(block_size), as_device(levels, np.float32), d_out, bool(packed))
    finish()


# ------------------------------------------------------------------- double quantization (8-bit rule)


@kernel
def _lut8_encode(x, absmax, block_size, lut, out_codes):
    n = x.shape[0]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        a = absmax[i // block_size]
        if a == np.float32(0.0):
            out_codes[i] = 0
        else:
            y = x[i] * (_F1 / a)
            y = -_F1 if y < -_F1 else (_F1 if y > _F1 else y)
            f = mul_rn(mul_rn(y + _F1, _HALF), _SPAN) + _HALF
            out_codes[i] = lut[np.uint16(f)]
        i += stride


def _lut8_table(code):
    lut = np.empty(65536, np.uint8)
    _cpu._build_lut8(np.ascontiguousarray(code, dtype=np.float32), lut)
    return lut


def _lut8_into(d_x, block_size, code, d_absmax, d_codes):
    _absmax_into(d_x, block_size, d_absmax)
    launch(_lut8_encode, d_x.shape[0], d_x, d_absmax, int(block_size), as_device(_lut8_table(code)), d_codes)


def quantize_blockwise_lut8(xflat, block_size, code, out_absmax, out_codes):
    """bitsandbytes' CPU 8-bit blockwise quantization, bit for bit (twin of the CPU kernel).

    Parameters
    ----------
    xflat : array of shape (n,), float32 (host or device)
    block_size : int >= 1
    code : ndarray of shape (256,), float32, sorted, spanning about [-1, 1] (host)
    out_absmax : array of shape (ceil(n / block_size),), float32, written
    out_codes : array of shape (n,), uint8, written
    """
    d_absmax, finish_absmax = output(out_absmax)
    d_codes, finish_codes = output(out_codes)
    _lut8_into(as_device(xflat, np.float32), block_size, code, d_absmax, d_codes)
    finish_absmax()
    finish_codes()


@kernel
def _centre(x, offset, out):
    n = x.shape[0]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        out[i] = x[i] - offset
        i += stride


@kernel
def _exponent_sums(xbits, sums):
    """Per float32 exponent field, the sum of the integer mantissas (block-private, then global)."""
    part = cuda.shared.array(256, np.int64)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for k in range(tid, 256, nt):
        part[k] = 0
    cuda.syncthreads()
    n = xbits.shape[0]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        u = xbits[i]
        e = (u >> np.uint32(23)) & _EXP_MASK
        mant = u & _MANT
        if e > 0:
            mant = mant | _HIDDEN
        cuda.atomic.add(part, e, np.int64(mant))
        i += stride
    cuda.syncthreads()
    for k in range(tid, 256, nt):
        if part[k] != 0:
            cuda.atomic.add(sums, k, part[k])


def exact_sum_partial(a):
    """Exact sum of non-negative finite float32 values, as ``nquant.kernels.blockwise.exact_sum_partial``.

    Parameters
    ----------
    a : array of shape (m,), float32 (host or device)

    Returns
    -------
    ndarray of shape (257,), int64 (host): per exponent field the sum of the integer
    mantissas, then the count.  Integer sums: the same whatever the order of the atomics.
    """
    d_a = as_device(a, np.float32)
    sums = cuda.to_device(np.zeros(256, np.int64))
    launch(_exponent_sums, d_a.shape[0], d_a.view(np.uint32), sums)
    return np.append(sums.copy_to_host(), np.int64(d_a.shape[0]))


def double_quantize(absmax, offset=None, code=None, block_size=DOUBLE_QUANT_BLOCK):
    """QLoRA double quantization of a float32 absmax vector (twin of the CPU function).

    ``absmax - offset`` (float32) is quantized with :func:`quantize_blockwise_lut8` in
    blocks of 256 with the dynamic map.  The default ``offset`` is the *exact* mean of
    ``absmax`` rounded to float32 (integer sums on the device, as the API's
    ``nquant.kernels.blockwise.exact_mean``); the CPU function's default, a float64 ``np.mean``
    rounded to float32, is the same number except when that float64 sum rounds across a
    float32 rounding boundary.  Pass ``offset`` to reproduce a given state.

    Returns
    -------
    codes : array of shape (m,), uint8
    absmax2 : array of shape (ceil(m / 256),), float32
    offset : numpy.float32
        Device arrays when ``absmax`` is on the device, else NumPy.
    """
    on_device = is_device(absmax)
    d_abs = as_device(absmax, np.float32)
    m = d_abs.shape[0]
    if offset is None:
        offset = _cpu.exact_mean(exact_sum_partial(d_abs)) if m else np.float32(0)
    offset = np.float32(offset)
    code = _cpu.DYNAMIC if code is None else np.ascontiguousarray(code, dtype=np.float32)
    centred = cuda.device_array(m, np.float32)
    launch(_centre, m, d_abs, offset, centred)
    codes = cuda.device_array(m, np.uint8)
    absmax2 = cuda.device_array(-(-m // block_size), np.float32)
    if m:
        _lut8_into(centred, block_size, code, absmax2, codes)
    if on_device:
        return codes, absmax2, offset
    return codes.copy_to_host(), absmax2.copy_to_host(), offset


@kernel
def _double_decode(codes, absmax2, block_size, code, offset, out):
    n = out.shape[0]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        out[i] = mul_rn(code[codes[i]], absmax2[i // block_size]) + offset
        i += stride


def double_dequantize(codes, absmax2, offset, code=None, block_size=DOUBLE_QUANT_BLOCK, out=None):
    """Inverse of :func:`double_quantize`: ``code[codes] * absmax2[block] + offset`` in float32.

    The product is rounded before the sum, as on the CPU (two NumPy operations there).

    Returns
    -------
    array of shape (m,), float32 (``out`` when given; a device array when ``codes`` is on
    the device and no ``out`` is given)
    """
    code = _cpu.DYNAMIC if code is None else np.ascontiguousarray(code, dtype=np.float32)
    on_device = is_device(codes)
    m = codes.shape[0]
    if out is None:
        out = cuda.device_array(m, np.float32) if on_device else np.empty(m, np.float32)
    d_out, finish = output(out)
    launch(_double_decode, m, as_device(codes, np.uint8), as_device(absmax2, np.float32), int(block_size),
           as_device(code), np.float32(offset), d_out)
    finish()
    return out
