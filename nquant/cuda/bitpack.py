"""CUDA twin of :mod:`nquant.kernels.bitpack`: MSB-first bit packing of 1..8-bit codes.

Code ``i`` occupies bits ``[i*b, (i+1)*b)`` of the stream counted from the most
significant bit of byte 0; 8 codes make exactly ``b`` bytes.  One thread per group of
8 codes (the tail group, zero padded, by the thread after the last full group); the
group packers are the CPU's ``_pack_group`` / ``_unpack_group`` compiled for the device.
"""

import numpy as np
from numba import cuda

from nquant.cuda._device import retarget
from nquant.cuda._launch import as_device, kernel, launch, output
from nquant.kernels import bitpack as _cpu

__all__ = ["GROUP", "pack_bits", "unpack_bits", "pack_rows", "unpack_rows"]

GROUP = _cpu.GROUP

_pack_group = retarget(_cpu._pack_group)
_unpack_group = retarget(_cpu._unpack_group)


@kernel
def _copy(src, n, dst):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        dst[i] = src[i]
        i += stride


@kernel
def _pack_rows(codes, bits, out):
    tmp = cuda.local.array(8, np.uint8)
    R = codes.shape[0]
    L = codes.shape[1]
    ngroups = L // GROUP
    rem = L - ngroups * GROUP
    per_row = ngroups + (1 if rem else 0)
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < R * per_row:
        r = t // per_row
        g = t - r * per_row
        row = codes[r]
        dst = out[r]
        if g < ngroups:
            _pack_group(row, g * GROUP, GROUP, bits, dst, g * bits)
        else:
            for k in range(8):
                tmp[k] = 0
            _pack_group(row, ngroups * GROUP, rem, bits, tmp, 0)
            for k in range((rem * bits + 7) // 8):
                dst[ngroups * bits + k] = tmp[k]
        t += stride


@kernel
def _unpack_rows(packed, bits, L, out):
    R = packed.shape[0]
    nbytes = packed.shape[1]
    ngroups = L // GROUP
    rem = L - ngroups * GROUP
    per_row = ngroups + (1 if rem else 0)
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < R * per_row:
        r = t // per_row
        g = t - r * per_row
        src = packed[r]
        dst = out[r]
        if g < ngroups:
            _unpack_group(src, g * bits, bits, bits, dst, g * GROUP, GROUP)
        else:
            _unpack_group(src, ngroups * bits, nbytes - ngroups * bits, bits, dst, ngroups * GROUP, rem)
        t += stride


def _rows(a):
    return a.reshape(1, a.shape[0])


def pack_bits(codes, bits, out):
    """Pack ``codes`` (n,) uint8 (each < 2**bits) into ``out`` (ceil(n*bits/8),) uint8."""
    n = codes.shape[0]
    d_out, finish = output(out)
    d_codes = as_device(codes, np.uint8)
    if bits == 8:
        launch(_copy, n, d_codes, n, d_out)
    elif n:
        launch(_pack_rows, -(-n // GROUP), _rows(d_codes), int(bits), _rows(d_out))
    finish()


def unpack_bits(packed, bits, n, out):
    """Inverse of :func:`pack_bits`: ``n`` codes from ``packed`` into ``out`` (n,) uint8."""
    d_out, finish = output(out)
    d_packed = as_device(packed, np.uint8)
    if bits == 8:
        launch(_copy, n, d_packed, int(n), d_out)
    elif n:
        launch(_unpack_rows, -(-n // GROUP), _rows(d_packed), int(bits), int(n), _rows(d_out))
    finish()


def pack_rows(codes, bits, out):
    """Pack each row of ``codes`` (R, L) uint8 into ``out`` (R, ceil(L*bits/8)) uint8."""
    R, L = codes.shape
    d_out, finish = output(out)
    launch(_pack_rows, R * -(-L // GROUP), as_device(codes, np.uint8), int(bits), d_out)
    finish()


def unpack_rows(packed, bits, L, out):
    """Inverse of :func:`pack_rows`: ``out`` (R, L) uint8 from ``packed`` (R, ceil(L*bits/8))."""
    R = packed.shape[0]
    d_out, finish = output(out)
    launch(_unpack_rows, R * -(-int(L) // GROUP), as_device(packed, np.uint8), int(bits), int(L), d_out)
    finish()
