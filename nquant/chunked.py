"""Dask execution: fit from mergeable statistics, encode and decode chunk by chunk.

This is the one executor: every chunk-wise graph in nquant is built here.  :func:`map_chunks`
makes one task per chunk from its :class:`Chunk` (block index, global start and shape, first
value and first block in C order), :func:`tree_reduce` merges per-chunk results in a tree, and
``nquant.store.quantize_zarr``, k-means, product quantization and the Hessian accumulation build
their tasks with them.

- Fitting runs ``family.partial`` on every chunk and merges the partials in a
  tree of ``family.merge`` calls (``split_every`` at a time), with the chunk's
  global position passed along, then ``family.finalize`` on the client: one
  ``compute`` per statistics pass (one for min/max; two for ``percentile`` and
  ``mse`` ranges).  Block schemes need no global statistics: their parameters
  are computed lazily chunk by chunk.
- Encoding and decoding are ``map_blocks`` of module-level functions; the
  global position of each chunk (``block_info``) keys the stochastic stream,
  so codes are bit-identical to the NumPy path for any chunking.
"""

import contextlib
import math
from typing import NamedTuple

import dask
import dask.array as da
import dask.system
import numpy as np

from nquant._threads import in_task
from nquant.errors import InputError
from nquant.packing import code_dtype, code_quantum, pack_codes, packed_len, unpack_codes

SPLIT_EVERY = 8

STORAGE_THREADS_PER_CORE = 2
"""Threads per core of :func:`storage_threads`."""

STORAGE_CHUNK_BYTES = 64 << 20
"""Largest chunk for which :func:`storage_threads` runs more tasks than cores (memory)."""


def is_dask(x):
    """Whether ``x`` is a Dask array."""
    return isinstance(x, da.Array)


def _offsets(chunks):
    return [np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in chunks]


class Chunk(NamedTuple):
    """Where one chunk of an array lies: its block index, global start and shape, the array's shape."""

    block_index: tuple
    start: tuple
    shape: tuple
    global_shape: tuple

    @property
    def size(self):
        """Number of values in the chunk."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def first_value(self):
        """C-order position of the chunk's first value in the whole array (0 when 0-d or empty)."""
        if not self.start or 0 in self.global_shape:  # 0-d or empty: one (empty) chunk at the origin
            return 0
        return int(np.ravel_multi_index(self.start, self.global_shape))

    def first_block(self, block_size):
        """Global index of the block of ``block_size`` values that the chunk starts in."""
        return self.first_value // block_size


def chunk_layout(x):
    """The :class:`Chunk` of every chunk of ``x``, in C order of the block indices."""
    offs = _offsets(x.chunks)
    shape = tuple(x.shape)
    return [Chunk(idx, tuple(int(offs[d][i]) for d, i in enumerate(idx)),
                  tuple(int(x.chunks[d][i]) for d, i in enumerate(idx)), shape)
            for idx in np.ndindex(*x.numblocks)]


class ChunkRead:
    """One chunk of a Zarr array, read when the task that holds it calls ``np.asarray`` on it."""

    __slots__ = ("array", "region")

    def __init__(self, array, region):
        self.array, self.region = array, region

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.array[self.region])
        return a if dtype is None else a.astype(dtype, copy=False)


@contextlib.contextmanager
def storage_threads(chunk_nbytes, client=None):
    """Context for computing chunk tasks that read and write a store: with Dask's threaded
    scheduler (no ``client``, no other scheduler and no ``num_workers`` configured) and chunks of at
    most :data:`STORAGE_CHUNK_BYTES`, :data:`STORAGE_THREADS_PER_CORE` threads per core.  Such a
    task waits for Zarr's I/O thread to read, compress and write its chunks; a second task per
    core computes meanwhile.  Each task's kernels then run on one thread (``nquant._threads``)."""
    threaded = client is None and dask.config.get("scheduler", None) in (None, "threads", "threading")
    if threaded and dask.config.get("num_workers", None) is None and chunk_nbytes <= STORAGE_CHUNK_BYTES:
        with dask.config.set(num_workers=STORAGE_THREADS_PER_CORE * dask.system.CPU_COUNT):
            yield
    else:
        yield


def map_chunks(x, func, args, *, pure=True, source=None):
    """One delayed ``func(block, *args(chunk))`` per chunk of ``x``, in C order of the block indices.

    ``args`` maps a :class:`Chunk` to the task's other arguments, or to None to leave that chunk out
    (a resumed job skips the chunks it has done).  The chunk's global position is what keys
    stochastic streams and block offsets, so tasks built here agree with the NumPy path.
    ``source``: the Zarr array that ``x`` is, chunk for chunk (``da.from_zarr`` of it, not
    rechunked); ``block`` is then a :class:`ChunkRead` that ``func`` reads with ``np.asarray``, so
    each chunk costs one task instead of a read task and a task of ``func``.
    """
    blocks = x.to_delayed() if source is None else None
    tasks = []
    for chunk in chunk_layout(x):
        extra = args(chunk)
        if extra is not None:
            if source is None:
                block = blocks[chunk.block_index]
            else:
                block = ChunkRead(source, tuple(slice(s, s + n) for s, n in zip(chunk.start, chunk.shape)))
            tasks.append(dask.delayed(func, pure=pure)(block, *extra))
    return tasks


def _start(block_info):
    return tuple(lo for lo, _ in block_info[0]["array-location"])


# ----------------------------------------------------------------------------- fit


def tree_merge(items, merge, split_every=SPLIT_EVERY):
    """Merge delayed partials in a tree, ``split_every`` at a time (associative ``merge``)."""
    def merge_many(*parts):
        out = parts[0]
        for p in parts[1:]:
            out = merge(out, p)
        return out

    items = list(items)
    while len(items) > 1:
        items = [dask.delayed(merge_many, pure=True)(*items[i:i + split_every])
                 for i in range(0, len(items), split_every)]
    return items[0]


def tree_reduce(x, func, merge, args=lambda chunk: (), *, split_every=SPLIT_EVERY):
    """Computed ``merge`` of ``func(block, *args(chunk))`` over the chunks of ``x`` (:func:`map_chunks`),
    merged in a tree ``split_every`` at a time (``merge`` associative): one ``compute``."""
    return tree_merge(map_chunks(x, func, args), merge, split_every).compute()


@in_task
def _partial_task(chunk, partial, scheme, start, global_shape, *extra):
    return partial(scheme, chunk, *extra, start=start, global_shape=global_shape)


def reduce_chunks(x, partial, merge, scheme, extra=()):
    """Computed ``merge`` of ``partial(scheme, chunk, *extra, start=, global_shape=)`` over chunks."""
    return tree_reduce(x, _partial_task, merge, lambda c: (partial, scheme, c.start, c.global_shape, *extra))


def fit(fam, scheme, x):
    """Global parameters of ``scheme`` for the Dask array ``x`` (computes the statistics passes).

    Block schemes get only what is global (nothing, or the mean absmax of double
    quantization); their per-block parameters come from :func:`blockwise_params`.
    """
    if not fam.needs_stats(scheme):
        return fam.finalize(scheme, None)
    st = reduce_chunks(x, fam.partial, fam.merge, scheme)
    if fam.needs_histogram(scheme):
        lo, hi = (f(st) for f in fam.histogram_range)
        st.update(reduce_chunks(x, fam.partial_histogram, fam.merge, scheme, (lo, hi)))
    return fam.finalize(scheme, st)


def fit_chunk(fam, scheme, chunk):
    """Parameters of ``scheme`` for one in-memory chunk taken as a whole array: :func:`fit`'s
    statistics passes on NumPy data (so a chunk holding whole groups gets exactly the
    parameters that :func:`fit` gives those groups)."""
    st = fam.partial(scheme, chunk)
    if fam.needs_histogram(scheme):
        lo, hi = (f(st) for f in fam.histogram_range)
        st.update(fam.partial_histogram(scheme, chunk, lo, hi))
    return fam.finalize(scheme, st)


def chunk_local_axis(fam, scheme, x):
    """The per-channel axis of ``scheme`` when every chunk of ``x`` spans all other axes, so each
    channel's values lie in one chunk and a chunk can be fitted on its own; else None.

    Only for families with per-channel side arrays (``side_dtypes``) and no per-block parameters.
    """
    axis = getattr(scheme, "axis", None)
    if axis is None or x.ndim == 0 or fam.side_dtypes is None or fam.block_quantum(scheme) is not None:
        return None
    axis = axis % x.ndim
    if all(len(c) == 1 for d, c in enumerate(x.chunks) if d != axis):
        return axis
    return None


# ----------------------------------------------------------------------------- chunk layout


def rechunk_for_codes(x, bits):
    """Rechunk the last axis so that every chunk but the last packs into whole bytes."""
    step = code_quantum(bits)
    if x.ndim == 0 or step == 1:
        return x
    last = x.chunks[-1]
    if all(c % step == 0 for c in last[:-1]):
        return x
    size = max(step, (max(last) // step) * step)
    return x.rechunk({x.ndim - 1: size})


def rechunk_for_blocks(x, block_size):
    """Rechunk so that every chunk is contiguous in C order and holds whole blocks.

    Chunks run along axis 0 and span all other axes; rows per chunk are a
    multiple of ``block_size / gcd(block_size, row_size)`` near the original
    chunk size.  Arrays whose chunks already qualify are returned unchanged.
    """
    if x.ndim == 0:
        return x
    ok = True
    for c in chunk_layout(x):
        shape = c.shape
        k = x.ndim
        while k > 0 and shape[k - 1] == x.shape[k - 1]:
            k -= 1
        lead_ok = all(shape[d] == 1 for d in range(max(k - 1, 0)))
        last_chunk = all(c.start[d] + shape[d] == x.shape[d] for d in range(x.ndim))
        if not lead_ok or c.first_value % block_size or (c.size % block_size and not last_chunk):
            ok = False
            break
    if ok:
        return x
    row = int(np.prod(x.shape[1:], dtype=np.int64))
    unit = block_size // math.gcd(block_size, max(row, 1))
    target_rows = max(1, int(np.prod(x.chunksize, dtype=np.int64)) // max(row, 1))
    rows = max(unit, (target_rows // unit) * unit)
    return x.rechunk((rows,) + tuple(x.shape[1:]))


# ----------------------------------------------------------------------------- encode / decode


@in_task
def _encode_chunk(chunk, fam, scheme, params, global_shape, block_info=None):
    return fam.encode(scheme, params, chunk, start=_start(block_info), global_shape=global_shape)


@in_task
def _pack_chunk(codes, bits):
    return pack_codes(codes, bits)


@in_task
def _unpack_chunk(packed, bits, last):
    shape = packed.shape[:-1] + (last,)
    return unpack_codes(packed, bits, shape)


@in_task
def _decode_chunk(codes, fam, scheme, params, dtype, global_shape, block_info=None):
    return fam.decode(scheme, params, codes, dtype, start=_start(block_info), global_shape=global_shape)


@in_task
def _encode_block_chunk(chunk, params, fam, scheme, start, global_shape, first_block):
    return fam.encode(scheme, params, chunk, start=start, global_shape=global_shape,
                      group_offset=first_block)


@in_task
def _decode_block_chunk(codes, params, fam, scheme, dtype, start, global_shape, first_block):
    return fam.decode(scheme, params, codes, dtype, start=start, global_shape=global_shape,
                      group_offset=first_block)


def public(params):
    """Parameters without the working values (keys starting with ``_``)."""
    return {k: v for k, v in params.items() if not k.startswith("_")}


@in_task
def _chunk_params_task(chunk, fam, scheme, start, global_shape, params):
    return public(fam.chunk_params(scheme, chunk, start=start, global_shape=global_shape, params=params))


def blockwise_params(fam, scheme, x, params):
    """Lazy per-block parameters of a block scheme: name -> 1-D Dask array, one chunk per chunk of ``x``.

    ``params`` are the global parameters from :func:`fit`.
    """
    layout = chunk_layout(x)
    tasks = map_chunks(x, _chunk_params_task, lambda c: (fam, scheme, c.start, c.global_shape, params))
    columns = {}
    for c, p in zip(layout, tasks):
        for name, (length, dtype) in fam.param_specs(scheme, c.size).items():
            columns.setdefault(name, []).append(da.from_delayed(p[name], shape=(length,), dtype=dtype))
    if not columns:
        return {name: da.zeros((0,), dtype) for name, (_, dtype) in fam.param_specs(scheme, 0).items()}
    return {name: da.concatenate(cols) for name, cols in columns.items()}


def _per_chunk_params(params, x):
    """Param dicts aligned with the chunks of ``x``: Dask arrays split per chunk, the rest whole."""
    lazy = {name: v.to_delayed().ravel() for name, v in params.items() if isinstance(v, da.Array)}
    out = {}
    for k, idx in enumerate(np.ndindex(*x.numblocks)):
        out[idx] = {name: (lazy[name][k] if name in lazy else v) for name, v in params.items()}
    return out


def _assemble(x, tasks, dtype):
    """Dask array with the chunks of ``x`` from one delayed result per chunk (:func:`map_chunks` order)."""
    arrays = np.empty(x.numblocks, dtype=object)
    for c, task in zip(chunk_layout(x), tasks):
        arrays[c.block_index] = da.from_delayed(task, shape=c.shape, dtype=dtype)
    return da.block(arrays.tolist()) if x.ndim else arrays[()]


def encode(fam, scheme, params, x):
    """Lazy codes of ``x`` (Dask array, same shape and chunks; uint8, uint16 for 9..16 bits)."""
    cdt = code_dtype(scheme.bits)
    if fam.block_quantum(scheme) is None:
        return x.map_blocks(_encode_chunk, fam, scheme, params, x.shape, dtype=cdt)
    per_chunk = _per_chunk_params(params, x)
    tasks = map_chunks(x, _encode_block_chunk, lambda c: (per_chunk[c.block_index], fam, scheme, c.start,
                                                          c.global_shape, c.first_block(scheme.block_size)))
    return _assemble(x, tasks, cdt)


def decode(fam, scheme, params, codes, dtype):
    """Lazy dequantized values from lazy ``codes``."""
    if fam.block_quantum(scheme) is None:
        return codes.map_blocks(_decode_chunk, fam, scheme, params, np.dtype(dtype), codes.shape,
                                dtype=dtype)
    per_chunk = _per_chunk_params(params, codes)
    tasks = map_chunks(codes, _decode_block_chunk, lambda c: (per_chunk[c.block_index], fam, scheme, np.dtype(dtype),
                                                              c.start, c.global_shape,
                                                              c.first_block(scheme.block_size)))
    return _assemble(codes, tasks, dtype)


def dequantize(fam, q, dtype=None):
    """Lazy values of the Dask-backed ``QuantizedArray`` ``q`` (row-packed codes) of family ``fam``,
    in ``dtype`` (default: ``q.dtype``), without labels."""
    codes = unpack(q.codes, q.bits, q.shape, q.chunks)
    return decode(fam, q.scheme, q.side, codes, np.dtype(q.dtype if dtype is None else dtype))


def pack(codes, bits):
    """Lazy row-packed codes (chunks of the last axis pack into whole bytes)."""
    if codes.ndim == 0:
        return da.from_delayed(dask.delayed(pack_codes)(codes, bits), (1,), code_dtype(bits))
    chunks = codes.chunks[:-1] + (tuple(packed_len(c, bits) for c in codes.chunks[-1]),)
    return codes.map_blocks(_pack_chunk, bits, chunks=chunks, dtype=code_dtype(bits))


def unpack(packed, bits, shape, chunks):
    """Lazy codes of ``shape`` and ``chunks`` from row-packed ``packed``."""
    if len(shape) == 0:
        return da.from_delayed(dask.delayed(unpack_codes)(packed, bits, ()), (), code_dtype(bits))
    last_chunks = chunks[-1]
    if bits >= 8:
        return packed.rechunk(chunks)
    packed = packed.rechunk(chunks[:-1] + (tuple(packed_len(c, bits) for c in last_chunks),))
    out = packed.map_blocks(_unpack_chunk_info, bits, last_chunks, chunks=chunks, dtype=np.uint8)
    return out


@in_task
def _unpack_chunk_info(packed, bits, last_chunks, block_info=None):
    j = block_info[0]["chunk-location"][-1]
    return _unpack_chunk(packed, bits, last_chunks[j])


def check_dtype(x):
    """Raise ``InputError`` unless ``x`` has a float16/32/64 dtype."""
    if x.dtype not in (np.float16, np.float32, np.float64):
        raise InputError(f"x dtype={x.dtype} is not supported: expected float16, float32 or float64")


def prepare(fam, scheme, x):
    """``x`` rechunked as the scheme needs (whole blocks; byte-aligned packing)."""
    check_dtype(x)
    quantum = fam.block_quantum(scheme)
    if quantum is not None:
        # whole blocks that are also whole bytes of codes: rechunking the last axis for packing
        # alone could cut a block in two, and each half would get its own absmax
        x = rechunk_for_blocks(x, math.lcm(quantum, code_quantum(scheme.bits)))
    return rechunk_for_codes(x, scheme.bits)

