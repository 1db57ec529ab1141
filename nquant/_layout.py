"""Row layout: how an N-d chunk is presented to the kernels.

Kernels see 2-D C-contiguous ``(R, L)`` views of a chunk's flat buffer.  A row
is a run of elements that are consecutive in the *global* C order of the whole
array, so element ``(r, j)`` has global flat index ``row_index[r] + j`` (this
keys the stochastic stream and makes codes independent of chunking), and all
of a row's elements share one parameter group (``col_step = 0``) or, for
per-channel parameters on the last axis, column ``j`` uses group
``row_group[r] + j`` (``col_step = 1``).
"""

import math
from dataclasses import dataclass

import numpy as np

PIECE = 1 << 15  # split a single long row into rows of this length for prange


@dataclass(frozen=True)
class Part:
    """Rows ``[begin, begin + R*L)`` of a chunk's flat buffer, viewed as (R, L).

    Layouts are cached and shared between calls: ``row_index`` and ``row_group`` are never
    written (writing them would change every later layout of the same chunk geometry).
    """

    begin: int
    R: int
    L: int
    row_index: np.ndarray  # (R,) int64, global flat index of each row's first element
    row_group: np.ndarray  # (R,) int64, parameter group of each row (or of its column 0)

    def view(self, flat):
        """The (R, L) view of this part in ``flat`` (a 1-D C-contiguous buffer)."""
        return flat[self.begin:self.begin + self.R * self.L].reshape(self.R, self.L)


@dataclass(frozen=True)
class Layout:
    parts: tuple
    col_step: int


def _split_flat(n, L, first_index, first_group, group_step):
    """Parts covering a globally contiguous flat range of ``n`` values in rows of ``L``."""
    parts = []
    m, rem = divmod(n, L) if L > 0 else (0, n)
    if m:
        rows = np.arange(m, dtype=np.int64)
        parts.append(Part(0, m, L, first_index + rows * L, first_group + rows * group_step))
    if rem or n == 0:
        parts.append(Part(m * L, 1, rem, np.array([first_index + m * L], np.int64),
                          np.array([first_group + m * group_step], np.int64)))
    return parts


def row_layout(shape, start=None, global_shape=None, axis=None, block_size=None,
               group_offset=0):
    """Row layout of a chunk.

    Parameters
    ----------
    shape : tuple of int
        Shape of the chunk.
    start : tuple of int, optional
        Global index of the chunk's first element (default: origin).
    global_shape : tuple of int, optional
        Shape of the whole array (default: ``shape``).
    axis : int or None
        Per-channel axis (already normalised to ``0 <= axis < ndim``).
    block_size : int or None
        Blocks of consecutive values of the flattened array; the chunk must be
        globally contiguous and start on a block boundary.
    group_offset : int
        Subtracted from global group numbers (for per-chunk parameter slices).

    Returns
    -------
    Layout
    """
    shape = tuple(int(s) for s in shape)
    start = tuple(int(s) for s in start) if start is not None else (0,) * len(shape)
    global_shape = tuple(int(s) for s in global_shape) if global_shape is not None else shape
    key = (shape, start, global_shape, None if axis is None else int(axis),
           None if block_size is None else int(block_size), int(group_offset))
    lay = _CACHE.get(key)
    if lay is None:
        lay = _row_layout(*key)
        if sum(p.R for p in lay.parts) <= CACHE_ROWS:
            if len(_CACHE) >= CACHE_SIZE:
                _CACHE.clear()
            _CACHE[key] = lay
    return lay


# The same few geometries come back on every call (each chunk of an array, the fit and the
# encode of one call): building a layout costs more than quantizing a small chunk.  Layouts of
# few rows are kept (bounded memory: at most CACHE_SIZE * CACHE_ROWS row entries).
CACHE_SIZE = 256
CACHE_ROWS = 4096
_CACHE: dict[tuple, Layout] = {}


def _row_layout(shape, start, global_shape, axis, block_size, group_offset):
    ndim = len(shape)
    n = math.prod(shape)
    gstrides = [math.prod(global_shape[d + 1:]) for d in range(ndim)]
    first = sum(s * g for s, g in zip(start, gstrides))

    # k: the rows run over dims k.. (dims after k span the whole global extent)
    k = ndim
    while k > 0 and shape[k - 1] == global_shape[k - 1]:
        k -= 1
    k = max(k - 1, 0) if k > 0 else 0
    contiguous = all(shape[d] == 1 for d in range(k))

    if block_size is not None:
        if not contiguous or first % block_size:
            raise ValueError("chunk is not a whole number of contiguous blocks")
        return Layout(tuple(_split_flat(n, block_size, first, first // block_size - group_offset, 1)), 0)
    if axis is None and contiguous:
        return Layout(tuple(_split_flat(n, PIECE, first, -group_offset, 0)), 0)

    if axis is not None and axis == ndim - 1:
        split, col_step = ndim - 1, 1
    else:
        split = k if axis is None else max(k, axis + 1)
        col_step = 0
    L = math.prod(shape[split:])
    lead = shape[:split]
    R = math.prod(lead)
    idx = np.indices(lead, dtype=np.int64).reshape(len(lead), R) if lead else np.zeros((0, 1), np.int64)
    row_index = np.full(R, sum(start[d] * gstrides[d] for d in range(split, ndim)), np.int64)
    for d in range(split):
        row_index += (idx[d] + start[d]) * gstrides[d]
    if axis is None:
        row_group = np.zeros(R, np.int64)
    elif col_step:
        row_group = np.full(R, start[axis], np.int64)
    else:
        row_group = idx[axis] + start[axis]
    return Layout((Part(0, R, L, row_index, row_group - group_offset),), col_step)
