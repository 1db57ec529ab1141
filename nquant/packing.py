"""Public bit packing: ``pack(codes, bits)`` and ``unpack(packed, bits, n)``.

Codes of 1..8 bits are stored row-packed in uint8; codes of 9..16 bits are stored one per
uint16, unpacked: the spare high bits of a 9..15-bit code are constant zeros that a byte
shuffle and a lossless compressor remove almost for free, so bit packing them would cost
a pass and buy little on disk.
"""

import math

import numpy as np
from numpy.typing import ArrayLike

from nquant import _alloc
from nquant.errors import InputError, SchemeError
from nquant.kernels import bitpack


def _check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise SchemeError(f"bits={bits!r} is invalid: expected an integer in 1..8")
    return int(bits)


MAX_BITS = 16
"""Widest code: 9..16-bit codes are stored as uint16."""


def code_dtype(bits):
    """dtype of stored and unpacked codes: uint8 for 1..8 bits, uint16 for 9..16 bits."""
    return np.dtype(np.uint8) if bits <= 8 else np.dtype(np.uint16)


def packed_len(n, bits):
    """Stored elements (of :func:`code_dtype`) of a row of ``n`` codes: ``ceil(n * bits / 8)``
    bytes for 1..8 bits, ``n`` for 9..16 bits (unpacked)."""
    return (int(n) * int(bits) + 7) // 8 if bits <= 8 else int(n)


def code_quantum(bits):
    """Codes that fill a whole number of stored elements (1 for 8 and 9..16 bits)."""
    return 8 // math.gcd(bits, 8) if bits <= 8 else 1


def packed_size(n, bits):
    """Bytes of ``n`` codes of ``bits`` bits: ``ceil(n * bits / 8)``, ``2 * n`` for 9..16 bits."""
    return packed_len(n, bits) * code_dtype(bits).itemsize


def pack(codes: ArrayLike, bits: int) -> np.ndarray:
    """Pack 1..8-bit codes into a uint8 MSB-first bit stream.

    Code ``i`` occupies bits ``[i*bits, (i+1)*bits)`` counted from the most
    significant bit of byte 0 (for 4 bits the first code is the high nibble);
    the stream is zero-padded to a whole byte.

    Parameters
    ----------
    codes : array_like of int, any shape (flattened in C order), values in [0, 2**bits)
    bits : int, 1..8

    Returns
    -------
    ndarray of shape (ceil(n * bits / 8),), uint8
    """
    bits = _check_bits(bits)
    c = np.asarray(codes)
    if c.dtype.kind not in "biu":
        raise InputError(f"codes dtype={c.dtype} is invalid: expected unsigned integers")
    c = c.reshape(-1)
    if c.size and (c.min() < 0 or c.max() >= (1 << bits)):
        raise InputError(f"codes out of range for bits={bits}: values must lie in [0, {(1 << bits) - 1}], "
                         f"got [{c.min()}, {c.max()}]")
    c = np.ascontiguousarray(c, dtype=np.uint8)
    out = np.empty(packed_size(c.size, bits), np.uint8)
    bitpack.pack_bits(c, bits, out)
    return out


def packed_shape(shape, bits):
    """Shape of row-packed codes: ``shape[:-1] + (packed_len(shape[-1], bits),)``; (1,) for 0-d."""
    shape = tuple(shape) or (1,)
    return shape[:-1] + (packed_len(shape[-1], bits),)


def _rows(a, shape):
    shape = tuple(shape) or (1,)
    return a.reshape(-1, shape[-1]) if shape[-1] else a.reshape(int(np.prod(shape[:-1])), 0)


def pack_codes(codes, bits):
    """Row-packed codes: each row of the last axis is an MSB-first stream of its own.

    Trusted input of ``code_dtype(bits)``, no validation.  When ``shape[-1] * bits`` is a
    multiple of 8 the result, flattened, equals ``pack(codes, bits)``; 8-bit and 9..16-bit
    codes are stored as they are (returned uncopied).

    Returns
    -------
    ndarray of shape ``packed_shape(codes.shape, bits)``, ``code_dtype(bits)``
    """
    codes = np.ascontiguousarray(codes, dtype=code_dtype(bits))
    shape = codes.shape
    if bits >= 8:
        return codes.reshape(packed_shape(shape, bits))
    out = _alloc.empty(packed_shape(shape, bits), np.uint8)
    src = _rows(codes, shape)
    if src.size:
        bitpack.pack_rows(src, bits, out.reshape(src.shape[0], -1))
    return out


def unpack_codes(packed, bits, shape):
    """Inverse of :func:`pack_codes`: codes of ``shape``, ``code_dtype(bits)``."""
    packed = np.ascontiguousarray(packed, dtype=code_dtype(bits))
    shape = tuple(shape)
    if bits >= 8:
        return packed.reshape(shape)
    out = _alloc.empty(shape, np.uint8)
    dst = _rows(out, shape)
    if dst.size:
        bitpack.unpack_rows(packed.reshape(dst.shape[0], -1), bits, dst.shape[1], dst)
    return out


def unpack(packed: ArrayLike, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``n`` codes (uint8, shape (n,)) from a packed stream."""
    bits = _check_bits(bits)
    p = np.ascontiguousarray(np.asarray(packed).reshape(-1))
    if p.dtype != np.uint8:
        raise InputError(f"packed dtype={p.dtype} is invalid: expected uint8")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"n={n!r} is invalid: expected an integer >= 0")
    if p.size < packed_size(n, bits):
        raise InputError(f"packed has {p.size} bytes but n={n} codes of bits={bits} need "
                         f"{packed_size(n, bits)}")
    out = np.empty(int(n), np.uint8)
    bitpack.unpack_bits(p, bits, int(n), out)
    return out
