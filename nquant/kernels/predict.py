"""Prediction of unsigned integer codes, for the lossless stage (``nquant.lossless``).

A chunk of codes ``q`` (uint8 or uint16, C order) is seen as a 3-D array ``(A, N, B)`` and each
value is predicted from its neighbours before it along ``N`` ("up") and/or ``B`` ("left"):

- ``left`` only (delta along the last axis): ``r[a, i, j] = q[a, i, j] - q[a, i, j-1]``;
- ``up`` only (delta along any other axis): ``r[a, i, j] = q[a, i, j] - q[a, i-1, j]``;
- both (2-D Lorenzo on the last two axes):
  ``r = q[i, j] - q[i-1, j] - q[i, j-1] + q[i-1, j-1]``;

with neighbours outside the array taken as 0.  The arithmetic wraps modulo ``2**w`` (``w`` the
code width in bits), so the residual has the codes' width and the prediction is exactly
invertible (a wrapping cumulative sum).  Residuals are stored zigzag mapped (the ``w``-bit
signed value ``s`` becomes ``2 s`` for ``s >= 0`` and ``-2 s - 1`` below), so that small
residuals of either sign have zero high bits, and byte shuffled: byte ``k`` of the residual of
flat index ``e`` goes to ``planes[k, e]``, so the high bytes (mostly 0) form one run for the
entropy coder.  For uint8 codes there is one plane, the residuals themselves.
"""

import math

import numpy as np

from nquant.kernels._jit import jit


@jit
def _zigzag(r, w, mask):
    """Zigzag of the ``w``-bit two's complement value ``r`` (0 <= r <= mask), int64."""
    return ((r << 1) ^ (-(r >> (w - 1)))) & mask


@jit
def _unzigzag(z, mask):
    """Inverse of :func:`_zigzag` (``w``-bit result in ``0..mask``), int64."""
    return ((z >> 1) ^ (-(z & 1))) & mask


@jit
def _put(low, high, j, z, nbytes):
    low[j] = z & 0xFF
    if nbytes == 2:
        high[j] = (z >> 8) & 0xFF


@jit
def _get(planes, e, nbytes):
    z = np.int64(planes[0, e])
    if nbytes == 2:
        z |= np.int64(planes[1, e]) << 8
    return z


@jit
def encode(q, left, up, planes):
    """Zigzag residuals of the prediction of ``q``, byte shuffled into ``planes``.

    Parameters
    ----------
    q : ndarray (A, N, B), uint8 or uint16, the codes
    left, up : bool, predict from the previous value along B / along N (both: 2-D Lorenzo)
    planes : ndarray (itemsize, A * N * B), uint8, written: byte k of the residual of flat
        index e at ``planes[k, e]``
    """
    A, N, B = q.shape
    nbytes = planes.shape[0]
    w = 8 * nbytes
    mask = (np.int64(1) << w) - 1
    # one branch-free inner loop per case (first value of a row apart), writing 1-D views of the
    # row's byte planes, so that LLVM vectorizes it (2-D indexing of ``planes`` defeats it)
    for a in range(A):
        for i in range(N):
            e = (a * N + i) * B
            above = up and i > 0
            if B == 0:
                continue
            low = planes[0, e:e + B]
            high = planes[nbytes - 1, e:e + B]  # (written only when nbytes == 2)
            r = np.int64(q[a, i, 0]) - (np.int64(q[a, i - 1, 0]) if above else 0)
            _put(low, high, 0, _zigzag(r & mask, w, mask), nbytes)
            if left and above:
                for j in range(1, B):
                    r = (np.int64(q[a, i, j]) - np.int64(q[a, i, j - 1]) - np.int64(q[a, i - 1, j])
                         + np.int64(q[a, i - 1, j - 1]))
                    _put(low, high, j, _zigzag(r & mask, w, mask), nbytes)
            elif left:
                for j in range(1, B):
                    r = np.int64(q[a, i, j]) - np.int64(q[a, i, j - 1])
                    _put(low, high, j, _zigzag(r & mask, w, mask), nbytes)
            elif above:
                for j in range(1, B):
                    r = np.int64(q[a, i, j]) - np.int64(q[a, i - 1, j])
                    _put(low, high, j, _zigzag(r & mask, w, mask), nbytes)
            else:
                for j in range(1, B):
                    _put(low, high, j, _zigzag(np.int64(q[a, i, j]), w, mask), nbytes)


@jit
def decode(planes, left, up, q):
    """Inverse of :func:`encode`: the codes ``q`` (A, N, B) from ``planes`` (written into ``q``)."""
    A, N, B = q.shape
    nbytes = planes.shape[0]
    mask = (np.int64(1) << (8 * nbytes)) - 1
    e = 0
    for a in range(A):
        for i in range(N):
            acc = np.int64(0)  # running sum along the row (the left prediction's inverse)
            for j in range(B):
                r = _unzigzag(_get(planes, e, nbytes), mask)
                if left:
                    acc = (acc + r) & mask
                    r = acc
                if up and i > 0:
                    r += np.int64(q[a, i - 1, j])
                q[a, i, j] = r & mask
                e += 1


def view3(shape, kind, axis=-1):
    """The 3-D view ``(A, N, B)`` of a C-ordered chunk of ``shape`` and the ``(left, up)`` flags of
    ``kind``: "delta" along ``axis``, "lorenzo" on the last two axes (delta on a 1-D chunk),
    "none" (no prediction)."""
    nd = len(shape)
    size = int(math.prod(shape))
    if kind == "none" or nd == 0:
        return (1, 1, size), False, False
    if kind == "lorenzo" and nd >= 2:
        return (size // max(1, shape[-2] * shape[-1]) if size else 0, shape[-2], shape[-1]), True, True
    ax = axis % nd if kind == "delta" else nd - 1
    if ax == nd - 1:
        return (size // max(1, shape[-1]) if size else 0, 1, shape[-1]), True, False
    outer = int(math.prod(shape[:ax]))
    inner = int(math.prod(shape[ax + 1:]))
    return (outer, shape[ax], inner), False, True


@jit
def entropy_bits(planes):
    """Bits an order-0 coder of each byte plane needs, summed over the planes.

    Parameters
    ----------
    planes : ndarray (k, n), uint8

    Returns
    -------
    float : ``sum_k -sum_v c_kv log2(c_kv / n)`` over the counts ``c_kv`` of byte ``v`` in plane ``k``
    """
    k, n = planes.shape
    total = 0.0
    counts = np.zeros(256, np.int64)
    for p in range(k):
        counts[:] = 0
        for e in range(n):
            counts[planes[p, e]] += 1
        for v in range(256):
            c = counts[v]
            if c > 0:
                total -= c * np.log2(c / n)
    return total
