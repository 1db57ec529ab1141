"""Bit packing of 1..8-bit codes into a uint8 stream, MSB first.

Code ``i`` occupies bits ``[i*b, (i+1)*b)`` of the stream counted from the most
significant bit of byte 0 (for 4 bits the first code is the high nibble, as in
bitsandbytes); the stream is padded with zero bits to a whole byte.  Groups of
8 codes map to exactly ``b`` bytes, so the kernels work on such groups in
parallel and handle the tail separately.
"""

import numpy as np

from nquant.kernels._jit import jit, over_rows

GROUP = 8  # codes per group; a group packs into `bits` bytes


SPAN = 4096  # groups per parallel task of the flat kernels


@jit
def _pack_group(codes, i0, n, bits, out, o0):
    """Pack codes[i0:i0+n] (n <= 8) into out[o0:o0+bits] (zero padded); one group, any width."""
    acc = np.uint64(0)
    for k in range(n):
        acc = (acc << np.uint64(bits)) | np.uint64(codes[i0 + k])
    acc <<= np.uint64(bits * (GROUP - n))
    for k in range(bits):
        out[o0 + k] = np.uint8((acc >> np.uint64(8 * (bits - 1 - k))) & np.uint64(0xFF))


@jit
def _unpack_group(packed, o0, nbytes, bits, out, i0, n):
    """Unpack n <= 8 codes from packed[o0:o0+nbytes] (missing bytes read as 0); one group."""
    acc = np.uint64(0)
    for k in range(bits):
        b = packed[o0 + k] if k < nbytes else np.uint8(0)
        acc = (acc << np.uint64(8)) | np.uint64(b)
    mask = np.uint64((1 << bits) - 1)
    for k in range(n):
        out[i0 + k] = np.uint8((acc >> np.uint64(bits * (GROUP - 1 - k))) & mask)


@jit(inline="always")
def _pack_groups(codes, out, bits):
    """Pack the ``len(codes) // 8`` whole groups of ``codes`` into ``out``.

    Inlined where ``bits`` is a constant, so the loops unroll and vectorize.
    """
    for g in range(codes.shape[0] // GROUP):
        acc = np.uint64(0)
        for k in range(GROUP):
            acc = (acc << np.uint64(bits)) | np.uint64(codes[g * GROUP + k])
        for k in range(bits):
            out[g * bits + k] = np.uint8((acc >> np.uint64(8 * (bits - 1 - k))) & np.uint64(0xFF))


@jit(inline="always")
def _unpack_groups(packed, out, bits):
    """Inverse of :func:`_pack_groups`: the ``len(out) // 8`` whole groups of ``out``."""
    mask = np.uint64((1 << bits) - 1)
    for g in range(out.shape[0] // GROUP):
        acc = np.uint64(0)
        for k in range(bits):
            acc = (acc << np.uint64(8)) | np.uint64(packed[g * bits + k])
        for k in range(GROUP):
            out[g * GROUP + k] = np.uint8((acc >> np.uint64(bits * (GROUP - 1 - k))) & mask)


@jit
def _pack_span(codes, out, bits):
    """:func:`_pack_groups` specialized for each width 1..8."""
    if bits == 1:
        _pack_groups(codes, out, 1)
    elif bits == 2:
        _pack_groups(codes, out, 2)
    elif bits == 3:
        _pack_groups(codes, out, 3)
    elif bits == 4:
        _pack_groups(codes, out, 4)
    elif bits == 5:
        _pack_groups(codes, out, 5)
    elif bits == 6:
        _pack_groups(codes, out, 6)
    elif bits == 7:
        _pack_groups(codes, out, 7)
    else:
        _pack_groups(codes, out, 8)


@jit
def _unpack_span(packed, out, bits):
    """:func:`_unpack_groups` specialized for each width 1..8."""
    if bits == 1:
        _unpack_groups(packed, out, 1)
    elif bits == 2:
        _unpack_groups(packed, out, 2)
    elif bits == 3:
        _unpack_groups(packed, out, 3)
    elif bits == 4:
        _unpack_groups(packed, out, 4)
    elif bits == 5:
        _unpack_groups(packed, out, 5)
    elif bits == 6:
        _unpack_groups(packed, out, 6)
    elif bits == 7:
        _unpack_groups(packed, out, 7)
    else:
        _unpack_groups(packed, out, 8)


@jit
def _pack_spans(t0, t1, codes, bits, out):
    """Spans ``[t0, t1)`` (``SPAN`` groups each) of :func:`pack_bits`, and the partial last
    group with the last span."""
    n = codes.shape[0]
    ngroups = n // GROUP
    n_spans = (ngroups + SPAN - 1) // SPAN
    for t in range(t0, t1):
        g0 = t * SPAN
        g1 = min(g0 + SPAN, ngroups)
        _pack_span(codes[g0 * GROUP:g1 * GROUP], out[g0 * bits:g1 * bits], bits)
    rem = n - ngroups * GROUP
    if rem and t1 >= n_spans:
        tmp = np.zeros(bits, np.uint8)
        _pack_group(codes, ngroups * GROUP, rem, bits, tmp, 0)
        nbytes = (rem * bits + 7) // 8
        for k in range(nbytes):
            out[ngroups * bits + k] = tmp[k]
    return 0


def _n_spans(n):
    """Number of ``SPAN``-group spans over ``n`` codes (at least 1: the partial group)."""
    return max(1, (n // GROUP + SPAN - 1) // SPAN)


def pack_bits(codes, bits, out):
    """Pack ``codes`` (n,) uint8 (each < 2**bits) into ``out`` (ceil(n*bits/8),) uint8."""
    n = codes.shape[0]
    if bits == 8:
        out[:n] = codes
        return
    over_rows(_pack_spans, _n_spans(n), SPAN * GROUP, codes, int(bits), out)


@jit
def _unpack_spans(t0, t1, packed, bits, n, out):
    """Spans ``[t0, t1)`` of :func:`unpack_bits`, and the partial last group with the last span."""
    ngroups = n // GROUP
    n_spans = (ngroups + SPAN - 1) // SPAN
    for t in range(t0, t1):
        g0 = t * SPAN
        g1 = min(g0 + SPAN, ngroups)
        _unpack_span(packed[g0 * bits:g1 * bits], out[g0 * GROUP:g1 * GROUP], bits)
    rem = n - ngroups * GROUP
    if rem and t1 >= n_spans:
        _unpack_group(packed, ngroups * bits, packed.shape[0] - ngroups * bits, bits, out,
                      ngroups * GROUP, rem)
    return 0


def unpack_bits(packed, bits, n, out):
    """Inverse of :func:`pack_bits`: ``n`` codes from ``packed`` into ``out`` (n,) uint8."""
    n = int(n)
    if bits == 8:
        out[:n] = packed[:n]
        return
    over_rows(_unpack_spans, _n_spans(n), SPAN * GROUP, packed, int(bits), n, out)


@jit
def _pack_rows(r0, r1, codes, bits, out):
    """Rows ``[r0, r1)`` of :func:`pack_rows`."""
    L = codes.shape[1]
    ngroups = L // GROUP
    rem = L - ngroups * GROUP
    tmp = np.zeros(bits, np.uint8)
    for r in range(r0, r1):
        row = codes[r]
        dst = out[r]
        _pack_span(row, dst, bits)
        if rem:
            tmp[:] = 0
            _pack_group(row, ngroups * GROUP, rem, bits, tmp, 0)
            for k in range((rem * bits + 7) // 8):
                dst[ngroups * bits + k] = tmp[k]
    return 0


def pack_rows(codes, bits, out):
    """Pack each row of ``codes`` (R, L) uint8 into ``out`` (R, ceil(L*bits/8)) uint8."""
    R, L = codes.shape
    over_rows(_pack_rows, R, L, codes, int(bits), out)


@jit
def _unpack_rows(r0, r1, packed, bits, L, out):
    """Rows ``[r0, r1)`` of :func:`unpack_rows`."""
    ngroups = L // GROUP
    rem = L - ngroups * GROUP
    for r in range(r0, r1):
        src = packed[r]
        dst = out[r]
        _unpack_span(src, dst, bits)
        if rem:
            _unpack_group(src, ngroups * bits, src.shape[0] - ngroups * bits, bits, dst,
                          ngroups * GROUP, rem)
    return 0


def unpack_rows(packed, bits, L, out):
    """Inverse of :func:`pack_rows`: ``out`` (R, L) uint8 from ``packed`` (R, ceil(L*bits/8))."""
    R = packed.shape[0]
    over_rows(_unpack_rows, R, int(L), packed, int(bits), int(L), out)
