"""Zarr storage of quantized arrays, and streaming quantization of Zarr arrays.

Group layout (Zarr v3), one group per quantized array::

    <group>/             attributes["nquant"] = {format_version, scheme, shape, dtype,
                         chunks, bits, metrics, complete, source}  (source: the streaming
                         job's source identity, part of the fingerprint; nquant.outputs)
    <group>/codes        uint8, row-packed codes (``nquant.packing.pack_codes``: each row of
                         the last axis an MSB-first bit stream), chunked like the data, through
                         the lossless stage named by ``compression`` (``nquant.lossless``);
                         uint16, one per value, for 9..16-bit codes
    <group>/scale, ...   side arrays: one value per tensor, per axis index or per block;
                         block-wise ones chunked like the data's chunks
    <group>/chunk_stats  float64 (chunks..., 6), streaming jobs only: per-chunk error
                         statistics, last column 1 once the chunk's codes are written

The layout is readable without nquant.  A local group is written under
``<path>.partial`` and swapped in when complete, under the lock ``<path>.lock``
(:mod:`nquant.outputs`: what may be replaced, and how); on object stores, where
there is no rename, the arrays are written first and ``complete: true`` last.  A
group without it is incomplete and never read as a result.
"""

import builtins
import json
import math
import os
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from nquant import chunked, labels, lossless, outputs, validate
from nquant._threads import in_task
from nquant.cluster import check_chunk_memory
from nquant.containers import QuantizedArray
from nquant.errors import InputError, StoreError
from nquant.families.registry import family
from nquant.metrics import error_stats, merge_error_stats, metrics_from_stats
from nquant.packing import code_dtype, pack_codes, packed_len, packed_shape
from nquant.progress import compute
from nquant.schemes import FORMAT_VERSION, Scheme
from nquant._types import ArrayInput, StoreLike

ATTR = "nquant"
PARTIAL = ".partial"
TARGET_CHUNK_VALUES = 1 << 22
INTERNAL = ("codes", "chunk_stats")
WRITE_ALL = {"write_empty_chunks": True}


# ----------------------------------------------------------------------------- locations


def _is_local(store):
    if not isinstance(store, (str, os.PathLike)):
        return False
    s = os.fspath(store)
    return "://" not in s or s.startswith("file://")


def _local_path(store):
    s = os.fspath(store)
    return s[len("file://"):] if s.startswith("file://") else s


def as_store(store, storage_options):
    """A zarr ``FsspecStore`` for an fsspec URL with ``storage_options``; anything else unchanged."""
    if storage_options is None or not isinstance(store, str) or _is_local(store):
        return store
    return zarr.storage.FsspecStore.from_url(store, storage_options=storage_options)


def open_group(store, mode="r"):
    """The Zarr group at ``store``; StoreError when there is none or it cannot be read."""
    try:
        return zarr.open_group(store, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreError(f"store={store!r} does not exist or is not a Zarr group") from e
    except Exception as e:  # corrupt metadata and the like
        raise StoreError(f"store={store!r} cannot be opened as a Zarr group: {e}") from e


def group_meta(group, store):
    """The nquant attributes of ``group`` (read from ``store``), checked for a readable format version."""
    meta = group.attrs.asdict().get(ATTR)
    if not isinstance(meta, dict):
        raise StoreError(f"store={store!r} is not an nquant group (no '{ATTR}' attributes)")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise StoreError(f"store={store!r} has format_version={version!r}; this nquant reads up to "
                         f"{FORMAT_VERSION}")
    return meta


def _try_meta(store):
    try:
        return group_meta(open_group(store), store)
    except StoreError:
        return None


def is_complete(store):
    """Whether ``store`` holds a complete nquant group."""
    meta = _try_meta(store)
    return bool(meta and meta.get("complete") is True)


def partial_location(store):
    """Where a local output is written before it is swapped in (``<path>.partial``); an object
    store is written in place (its complete flag is written last)."""
    return _local_path(store).rstrip("/") + PARTIAL if _is_local(store) else store


def finish_partial(partial, store):
    """Make the complete partial output the result: swapped in atomically (local paths; the
    complete flag is already written), nothing to do on object stores."""
    if _is_local(store):
        outputs.replace_dir(partial, _local_path(store).rstrip("/") or "/")


def _start_partial(store):
    """The partial location of ``store``, cleared of a leftover of nquant's (local paths)."""
    location = partial_location(store)
    if _is_local(store):
        outputs.clear_partial(location)
    return location


# ----------------------------------------------------------------------------- geometry


def regular_chunks(shape, chunks=None, target=TARGET_CHUNK_VALUES):
    """A regular chunk shape: ``chunks`` if given, else rows of about ``target`` values."""
    if chunks is not None:
        return tuple(int(c) for c in chunks)
    if not shape:
        return ()
    row = int(np.prod(shape[1:], dtype=np.int64)) or 1
    return (max(1, min(shape[0], target // row)),) + tuple(shape[1:])


def _side_shape(length):
    """Shape of a side array from its spec: a length (1-D) or a shape tuple (e.g. (G, K) levels)."""
    return tuple(int(n) for n in length) if isinstance(length, tuple) else (int(length),)


def _side_chunks(fam, scheme, name, data_chunks, length, local_axis=None):
    """Zarr chunks of a side array: per data chunk for the arrays that each chunk's task writes
    (per-block ones, and per-channel ones when every chunk holds whole channels), one chunk
    otherwise."""
    if local_axis is not None and name in fam.side_dtypes(scheme):
        return (max(1, data_chunks[local_axis]),)
    if fam.block_quantum(scheme) is not None and data_chunks:
        specs = fam.param_specs(scheme, int(np.prod(data_chunks, dtype=np.int64)))
        if name in specs:
            return (max(1, specs[name][0]),)
    return tuple(max(1, n) for n in _side_shape(length))


def _spec_length(arr):
    """Length of a 1-D side array, or the shape of an N-d one (per-group codebooks)."""
    return arr.shape[0] if arr.ndim == 1 else tuple(arr.shape)


def _meta_dict(scheme, shape, dtype, chunks, bits, metrics, complete, **extra):
    return {"format_version": FORMAT_VERSION, "scheme": json.loads(scheme.to_json()),
            "shape": list(shape), "dtype": np.dtype(dtype).str, "chunks": list(chunks),
            "bits": int(bits), "metrics": metrics, "complete": complete, **extra}


def codes_compression(compression, shape, bits):
    """The resolved ``compression`` name (``nquant.lossless.resolve``) of the codes of an array of
    ``shape`` coded with ``bits`` bits: prediction only where each code fills whole elements."""
    return lossless.resolve(compression, 8 if packed_shape(shape, bits) == tuple(shape) else bits, len(shape))


def _codes_codecs(compression):
    """``create_array`` keywords of the codes array for a resolved ``compression`` name; every one
    ends with a crc32c checksum (``nquant.validate``)."""
    if compression == "zstd":
        return {"compressors": validate.compressors()}
    crc = (zarr.codecs.Crc32cCodec(),)
    codec = lossless.codec_for(compression)
    return {"compressors": crc} if codec is None else {"serializer": codec, "compressors": crc}


def _create_arrays(group, scheme, shape, bits, data_chunks, side_specs, fam, local_axis=None,
                   compression="zstd"):
    """Create ``codes`` (through the resolved ``compression``) and the side arrays (fill value 0,
    zstd then a crc32c checksum: ``validate.compressors``)."""
    group.create_array("codes", shape=packed_shape(shape, bits),
                       chunks=validate.codes_chunks(data_chunks, bits), dtype=code_dtype(bits), overwrite=True,
                       fill_value=0, **_codes_codecs(compression))
    for name, (length, dtype) in side_specs.items():
        group.create_array(name, shape=_side_shape(length), dtype=dtype, overwrite=True, fill_value=0,
                           chunks=_side_chunks(fam, scheme, name, data_chunks, length, local_axis),
                           compressors=validate.compressors())


# ----------------------------------------------------------------------------- save / open


def save(q: QuantizedArray, store: StoreLike, *, chunks: tuple[int, ...] | None = None,
         overwrite: bool = False, storage_options: dict[str, Any] | None = None,
         compression: str | None = "auto") -> StoreLike:
    """Write a ``QuantizedArray`` to a Zarr group (path, fsspec URL or zarr store).

    Parameters
    ----------
    q : QuantizedArray, NumPy- or Dask-backed
    store : str, os.PathLike or zarr store
    chunks : tuple of int, optional
        Data chunking of the stored codes for a NumPy-backed ``q`` (default: rows of
        about 4M values; a Dask-backed ``q`` keeps its chunks).
    overwrite : bool
        Replace an existing nquant output; otherwise an existing one is a ``StoreError``.
        A path holding anything else is never replaced (:mod:`nquant.outputs`).
    storage_options : dict, optional
        fsspec options for a URL ``store`` (e.g. ``{"endpoint_url": ..., "key": ..., "secret": ...}``
        for ``s3://``); ignored for local paths and zarr stores.
    compression : str or None
        Lossless stage of the stored codes (:mod:`nquant.lossless`): ``"auto"`` (for codes of whole
        bytes ``"adaptive-zstd"``: 2-D Lorenzo prediction or none per chunk, byte shuffle, zstd;
        zstd for packed codes), ``"adaptive-zstd"``, ``"lorenzo-zstd"``, ``"delta-zstd"``,
        ``"lorenzo-pcodec"`` (the smallest), ``"pcodec"``, ``"zstd"`` (readable by any Zarr reader)
        or None (uncompressed).

    Returns
    -------
    the store written: ``store`` itself, or the fsspec store opened for a URL with ``storage_options``
    """
    store = as_store(store, storage_options)
    codes_compression(compression, q.shape, q.bits)  # an unknown name fails before any write
    with outputs.writing(store), outputs.write_errors(store):
        if outputs.check_destination(store, overwrite, what="store") == "ours" and not overwrite:
            raise StoreError(f"store={store!r} already exists; pass overwrite=True (--overwrite) to "
                             "replace it")
        location = _start_partial(store)
        write_group(q, location, chunks, compression=compression)
        finish_partial(location, store)
    return store


def write_group(q, location, chunks=None, compression="auto", **extra):
    """Write ``q`` as a complete nquant group at ``location`` (no checks: the caller's output),
    its codes through ``compression`` (:func:`codes_compression`)."""
    resolved = codes_compression(compression, q.shape, q.bits)
    xr_labels = q.labels
    if q.is_dask:
        data_chunks = tuple(c[0] for c in q.chunks)
    else:
        q = _as_dask(q, regular_chunks(q.shape, chunks))
        data_chunks = tuple(c[0] for c in q.chunks)
    group = outputs.partial_group(location)
    specs = {name: (_spec_length(arr), arr.dtype) for name, arr in q.side.items()}
    _create_arrays(group, q.scheme, q.shape, q.bits, data_chunks, specs, family(q.scheme),
                   compression=resolved)
    codes_z = group["codes"]
    targets, sources = [codes_z], [q.codes.rechunk(codes_z.chunks)]
    for name, arr in q.side.items():
        if isinstance(arr, da.Array):
            targets.append(group[name])
            sources.append(arr.rechunk(group[name].chunks))
        else:
            group[name][...] = arr
    da.store(sources, targets, lock=False)
    labels.write(group, xr_labels)
    if "adaptive_round" in q.info:
        extra["adaptive_round"] = q.info["adaptive_round"]
    validate.seal(group)  # the record of every array's chunks, before the complete flag
    outputs.complete_group(group, ATTR, _meta_dict(q.scheme, q.shape, q.dtype, data_chunks, q.bits,
                                                   q.info.get("metrics", {}), complete=True,
                                                   compression=compression, codes_compression=resolved,
                                                   **extra))
    return group


def _as_dask(q, chunks):
    """Dask-backed view of a NumPy-backed ``q`` with data chunks ``chunks``."""
    scheme = q.scheme
    fam = family(scheme)
    dummy = chunked.prepare(fam, scheme, da.zeros(q.shape, chunks=chunks or -1, dtype=np.float32))
    data_chunks = dummy.chunks
    codes = da.from_array(np.asarray(q.codes).reshape(packed_shape(q.shape, q.bits)), name=False)
    if q.shape:
        codes = codes.rechunk(data_chunks[:-1] + (tuple(packed_len(c, q.bits) for c in data_chunks[-1]),))
    side = dict(q.side)
    if fam.block_quantum(scheme) is not None and q.shape:
        for name in fam.param_specs(scheme, 0):
            lengths, done = [], 0
            for idx in np.ndindex(*dummy.numblocks):
                n = int(np.prod([data_chunks[d][i] for d, i in enumerate(idx)]))
                lengths.append(fam.param_specs(scheme, done + n)[name][0] - fam.param_specs(scheme, done)[name][0])
                done += n
            side[name] = da.from_array(side[name], chunks=(tuple(lengths),), name=False)
    return QuantizedArray(scheme=scheme, shape=q.shape, dtype=q.dtype, codes=codes, bits=q.bits,
                          side=side, info=q.info, chunks=data_chunks)


def open(store: StoreLike, *, storage_options: dict[str, Any] | None = None) -> QuantizedArray:  # noqa: A001
    """Open a stored quantized array lazily: a Dask-backed ``QuantizedArray``; a model group
    (``nquant.quantize_safetensors``) is opened by :func:`nquant.models.open` (``nq.open``).

    The group is validated before anything is decoded (``nquant.validate``): metadata, codes
    and side arrays against the scheme, shape and chunk grid; an inconsistency is a
    ``StoreError`` naming the array.  ``q.info["verified"]`` tells whether the group is sealed
    (checksums and a record of its chunks): then every chunk read checks that the chunk is
    present and intact.
    ``storage_options``: fsspec options for a URL ``store`` (as :func:`save`).
    """
    store = as_store(store, storage_options)
    group = open_group(store)
    meta = group_meta(group, store)
    lay = validate.check_group(group, meta, store)
    fam = family(lay.scheme)
    side = {}
    for name, spec in lay.side.items():
        z = group[name]
        if spec.block and lay.shape:  # per block: read lazily, one piece per data chunk
            side[name] = validate.lazy_array(z, name, store, lay.verified, spec).rechunk(
                (validate.block_lengths(fam, lay.scheme, lay.data_chunks, name),))
        else:
            side[name] = validate.read_array(z, name, store, lay.verified, spec)
    codes = validate.lazy_array(group["codes"], "codes", store, lay.verified)
    info = {"metrics": meta.get("metrics", {}), "verified": lay.verified}
    if "adaptive_round" in meta:  # recorded by nquant.adaptive.adaptive_round
        info["adaptive_round"] = meta["adaptive_round"]
    return QuantizedArray(scheme=lay.scheme, shape=lay.shape, dtype=lay.dtype, codes=codes, bits=lay.bits,
                          side=side, info=info, chunks=lay.data_chunks, labels=labels.read(group, store))


# ----------------------------------------------------------------------------- bytes on disk


def source_stored_bytes(src):
    """Bytes the source ``src`` takes in its store (a Zarr array: its chunks and metadata), or None
    (a Dask array, or a store that cannot be listed)."""
    if isinstance(src, da.Array):
        return None
    try:
        z = src if isinstance(src, zarr.Array) else zarr.open_array(src, mode="r")
        return int(z.nbytes_stored())
    except Exception:  # an unlistable store: the figure is left out, never the job
        return None


def storage_summary(store: StoreLike, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Bytes on disk of the nquant group ``store`` and its compression ratios.

    Returns
    -------
    dict with ``compression`` (the codes' lossless stage as resolved, ``nquant.lossless``; "zstd"
    for groups written before it was recorded), ``stored_bytes``
    (every array of the group, metadata included), ``float32_bytes`` (4 bytes per value),
    ``ratio_float32`` (float32 bytes / stored bytes), ``source_stored_bytes`` and ``ratio_source``
    (the source's bytes in its own store / stored bytes; None when the group was not made by
    :func:`quantize_zarr` from a Zarr array)
    """
    store = as_store(store, storage_options)
    group = open_group(store)
    meta = group_meta(group, store)
    stored = 0
    for _, z in group.arrays():
        stored += int(z.nbytes_stored())
    values = math.prod(int(n) for n in meta.get("shape", []))
    source = meta.get("source_stored_bytes")
    source = int(source) if isinstance(source, int) and not isinstance(source, bool) and source > 0 else None
    return {"compression": meta.get("codes_compression", "zstd"), "stored_bytes": stored,
            "float32_bytes": 4 * values,
            "ratio_float32": 4 * values / stored if stored else None, "source_stored_bytes": source,
            "ratio_source": source / stored if source and stored else None}


# ----------------------------------------------------------------------------- streaming jobs


def open_array(src):
    """The source array ``src`` (Zarr path or URL, ``zarr.Array`` or Dask array) as a Dask array."""
    if isinstance(src, da.Array):
        return src
    if isinstance(src, zarr.Array):
        return da.from_zarr(src)
    try:
        arr = zarr.open_array(src, mode="r")
    except Exception as e:
        raise StoreError(f"src={src!r} cannot be opened as a Zarr array: {e}") from e
    return da.from_zarr(arr)


def _zarr_array(src):
    """The Zarr array behind the source ``src`` (path, URL or ``zarr.Array``), or None for a Dask array."""
    if isinstance(src, da.Array):
        return None
    return src if isinstance(src, zarr.Array) else zarr.open_array(src, mode="r")


@in_task
def _quantize_chunk(chunk, job):
    """Encode one chunk, write its codes (and its own parameters), then its error stats and done flag;
    returns those (float64, 6)."""
    job = job.value
    fam, scheme, params = job["fam"], job["scheme"], job["params"]
    start, global_shape, bits = job["start"], job["global_shape"], job["bits"]
    chunk = np.asarray(chunk)
    if job["local"] is not None:
        if job["local"] == "block":
            local = fam.chunk_params(scheme, chunk, start=start, global_shape=global_shape, params=params)
        else:
            local = chunked.fit_chunk(fam, scheme, chunk)
        params = {**params, **local}
    offset = job["group_offset"]
    codes = fam.encode(scheme, params, chunk, start=start, global_shape=global_shape, group_offset=offset)
    x_hat = fam.decode(scheme, params, codes, chunk.dtype, start=start, global_shape=global_shape,
                       group_offset=offset)
    packed = pack_codes(codes, bits)
    region = job["codes_region"]
    if chunk.ndim:
        packed = packed.reshape(tuple(r.stop - r.start for r in region))
    stats = np.append(error_stats(chunk, x_hat), 1.0)  # last column: done
    writes = [(z, job["side_region"][name], local[name]) for name, z in job["side_z"].items()]
    outputs.write_regions(writes + [(job["codes_z"], region, packed)], (job["stats_z"], job["index"], stats))
    return stats


def quantize_zarr(src: ArrayInput | StoreLike, dst: StoreLike, scheme: Scheme, *, overwrite: bool = False,
                  resume: bool = True, client: Any = None, progress: bool = False,
                  storage_options: dict[str, Any] | None = None,
                  before_compute: Callable[[], object] | None = None,
                  compression: str | None = "auto") -> QuantizedArray:
    """Quantize a Zarr array chunk by chunk into an nquant group, out of core.

    Parameters
    ----------
    src : str, zarr.Array or dask.array.Array, the source (floats)
    dst : str, os.PathLike or zarr store, the quantized group
    scheme : Scheme
    overwrite : bool
        Recompute and replace a finished ``dst``.  Otherwise a finished ``dst`` is a no-op when its
        recorded fingerprint (source, shape, dtype, chunks, scheme, format version) matches this
        request, and a ``StoreError`` showing both when it does not.  A ``dst`` that is not an
        nquant output, or that overlaps the source, is refused either way (:mod:`nquant.outputs`).
    resume : bool
        Continue an interrupted job: chunks whose ``done`` flag is set are skipped
        (the parameters are read back, not refitted).

    client : distributed.Client, optional
        Run on this cluster (default: the current Dask scheduler).
    progress : bool
        Show a progress bar of the chunk tasks (local and distributed schedulers).
    storage_options : dict, optional
        fsspec options for URLs ``src`` and ``dst`` (as :func:`save`).
    before_compute : callable, optional
        Called with no arguments once the request is checked and work remains, before the first
        statistics pass or chunk task (the command line compiles the kernels there and says so, so
        that neither a refused request nor the progress bar carries the compilation).
    compression : str or None
        Lossless stage of the stored codes (as :func:`save`; part of the fingerprint).

    Returns
    -------
    QuantizedArray, opened lazily from ``dst``

    Notes
    -----
    Global parameters come from a statistics pass over the whole source first (for per-tensor
    and per-channel schemes), then one pass encodes and writes.  Block schemes, and per-channel
    schemes whose chunks each hold whole channels (a chunk spans every other axis), need no
    first pass: each task fits its own chunk, with the same parameters as the global fit.
    """
    src = as_store(src, storage_options)
    dst = as_store(dst, storage_options)
    outputs.check_source_destination(src, dst)
    fam = family(scheme)
    source = open_array(src)
    x = chunked.prepare(fam, scheme, source)
    if x.ndim:  # regular chunks: each task then writes whole Zarr chunks, never one another's
        x = x.rechunk(tuple(c[0] for c in x.chunks))
    # a Zarr source taken chunk for chunk is read by the chunk tasks themselves
    source = _zarr_array(src) if x is source else None
    data_chunks = tuple(c[0] for c in x.chunks)
    if client is not None:  # a chunk task that cannot fit a worker would kill it again and again
        check_chunk_memory(data_chunks, x.dtype, client=client, param="memory_limit")
    resolved = codes_compression(compression, x.shape, scheme.bits)
    request = _request(scheme, x.shape, x.dtype, data_chunks, outputs.source_identity(src), compression)
    with outputs.writing(dst), outputs.write_errors(dst):
        if outputs.check_destination(dst, overwrite) == "ours" and not overwrite:
            meta = _try_meta(dst)
            if meta is None:
                raise StoreError(f"dst={dst!r} holds another nquant output (not a quantized array); pass "
                                 "overwrite=True (--overwrite) to replace it")
            if meta.get("complete") is True:
                diff = outputs.fingerprint_difference(_recorded(meta), request)
                if diff is None:
                    return open(dst)
                raise StoreError(f"dst={dst!r} holds a finished output of another request ({diff}); pass "
                                 "overwrite=True (--overwrite) to replace it")
        location = partial_location(dst)
        meta = _try_meta(location)
        fresh = not (resume and meta and meta.get("complete") is False and _has_array(location, "chunk_stats")
                     and outputs.fingerprint_difference(_recorded(meta), request) is None)
        if before_compute is not None:
            before_compute()
        group, params = _start_job(client, fam, scheme, x, dst, data_chunks, request, fresh)
        # the chunks' error statistics: read back those of the chunks done before, kept from the tasks
        stats = group["chunk_stats"][...] if not fresh else np.zeros(group["chunk_stats"].shape)
        tasks, indices = _chunk_tasks(x, fam, scheme, params, group, stats[..., 5] == 1,
                                      chunked.chunk_local_axis(fam, scheme, x), source)
        if tasks:
            chunk_nbytes = int(np.prod(data_chunks, dtype=np.int64)) * x.dtype.itemsize
            with chunked.storage_threads(chunk_nbytes, client):
                results = run_tasks(tasks, client, progress)
            for index, chunk_stats in zip(indices, results):
                stats[index] = chunk_stats
        stats = stats[..., :5].reshape(-1, 5)
        merged = stats[0]
        for s in stats[1:]:
            merged = merge_error_stats(merged, s)
        validate.seal(group)  # the record of every array's chunks, before the complete flag
        outputs.complete_group(group, ATTR, _meta_dict(scheme, x.shape, x.dtype, data_chunks, scheme.bits,
                                                       metrics_from_stats(merged), complete=True,
                                                       source=request["source"], compression=compression,
                                                       codes_compression=resolved,
                                                       source_stored_bytes=source_stored_bytes(src)))
        finish_partial(location, dst)
        return open(dst)


def _request(scheme, shape, dtype, chunks, source, compression):
    """The fingerprint of a streaming job: what a finished output must match to be reused."""
    return {"format_version": FORMAT_VERSION, "scheme": json.loads(scheme.to_json()), "shape": list(shape),
            "dtype": np.dtype(dtype).str, "chunks": list(chunks), "source": source,
            "compression": compression}


def _recorded(meta):
    """The fingerprint recorded in a group's metadata (``source`` None when it was not recorded; a
    group written before ``compression`` was recorded counts as the default request, "auto")."""
    out = {k: meta.get(k) for k in ("format_version", "scheme", "shape", "dtype", "chunks", "source")}
    out["compression"] = meta.get("compression", "auto")
    return out


def _start_job(client, fam, scheme, x, dst, data_chunks, request, fresh):
    """The partial group of a streaming job, created (``fresh``: parameters fitted, arrays made) or
    reopened to resume; returns ``(group, global parameters)``."""
    local_axis = chunked.chunk_local_axis(fam, scheme, x)  # whole channels per chunk: fitted in the tasks
    local_names = _local_names(fam, scheme, local_axis)
    if not fresh:
        if _is_local(dst):
            outputs.clear_debris(partial_location(dst))
        group = zarr.open_group(partial_location(dst), mode="r+")
        params = {name: group[name][...] for name in _param_names(group) if name not in local_names}
        return group, params
    location = _start_partial(dst)
    group = outputs.partial_group(location)
    group.attrs[ATTR] = _meta_dict(scheme, x.shape, x.dtype, data_chunks, scheme.bits, {}, complete=False,
                                   source=request["source"], compression=request["compression"])
    params = {} if local_axis is not None else _fit(client, fam, scheme, x)
    compression = codes_compression(request["compression"], x.shape, scheme.bits)
    specs = {name: (_spec_length(arr), arr.dtype) for name, arr in params.items()}
    if fam.block_quantum(scheme) is not None:
        specs.update(fam.param_specs(scheme, int(np.prod(x.shape, dtype=np.int64))))
    elif local_axis is not None:
        specs.update({name: (x.shape[local_axis], dtype) for name, dtype in local_names.items()})
    _create_arrays(group, scheme, x.shape, scheme.bits, data_chunks, specs, fam, local_axis, compression)
    for name, arr in params.items():
        group[name][...] = arr
    # chunk_stats last: a partial group that has it has its parameters (and can be resumed);
    # its last column is each chunk's done flag
    nblocks = x.numblocks if x.ndim else (1,)
    group.create_array("chunk_stats", shape=nblocks + (6,), chunks=(1,) * len(nblocks) + (6,),
                       dtype=np.float64, fill_value=0.0, overwrite=True, compressors=validate.compressors())
    return group, params


def run_tasks(tasks, client=None, progress=False):
    """Compute delayed ``tasks`` on ``client`` or the current scheduler, with an optional progress bar
    on standard error (local and distributed schedulers alike: :mod:`nquant.progress`)."""
    return compute(tasks, client, progress, label="chunks")


def _fit(client, fam, scheme, x):
    """Global parameters, computed on ``client`` when given."""
    if client is None:
        return chunked.fit(fam, scheme, x)
    with dask.config.set(scheduler=client):
        return chunked.fit(fam, scheme, x)


def _has_array(store, name):
    try:
        return name in open_group(store).array_keys()
    except StoreError:
        return False


def _param_names(group):
    return [k for k in sorted(group.array_keys()) if k not in INTERNAL]


def _local_names(fam, scheme, local_axis):
    """Side arrays that each chunk fits and writes itself (name -> dtype)."""
    if fam.block_quantum(scheme) is not None:
        return {name: dtype for name, (_, dtype) in fam.param_specs(scheme, 0).items()}
    if local_axis is not None:
        return fam.side_dtypes(scheme)
    return {}


def _chunk_tasks(x, fam, scheme, params, group, done, local_axis, source=None):
    """One delayed task per chunk not yet done, and the chunk's index in ``chunk_stats`` for each.
    Each task's arguments but the chunk travel in one dict (``job``), opaque to Dask, so building
    the graph does not walk them; with ``source`` (the Zarr array that ``x`` is) each task reads
    its chunk itself (``chunked.map_chunks``)."""
    quantum = fam.block_quantum(scheme)
    local = "block" if quantum is not None else ("axis" if local_axis is not None else None)
    # every chunk is written once, whole: skip Zarr's check for chunks equal to the fill value
    side_z = {name: group[name].with_config(WRITE_ALL) for name in _local_names(fam, scheme, local_axis)}
    codes_z = group["codes"].with_config(WRITE_ALL)
    stats_z = group["chunk_stats"]
    bits = scheme.bits
    indices = []

    def job(chunk):
        didx = chunk.block_index if x.ndim else (0,)
        if done[didx]:
            return None
        indices.append(didx)
        start, shape = chunk.start, chunk.shape
        region = tuple(slice(s, s + n) for s, n in zip(start, shape))
        if x.ndim:
            codes_region = region[:-1] + (slice(packed_len(start[-1], bits),
                                                packed_len(start[-1] + shape[-1], bits)),)
        else:
            codes_region = slice(0, 1)
        side_region, group_offset = {}, 0
        if local == "block":
            before = fam.param_specs(scheme, chunk.first_value)
            upto = fam.param_specs(scheme, chunk.first_value + chunk.size)
            side_region = {name: slice(before[name][0], upto[name][0]) for name in side_z}
            group_offset = chunk.first_block(scheme.block_size)
        elif local == "axis":
            group_offset = start[local_axis]
            side_region = dict.fromkeys(side_z, slice(group_offset, group_offset + shape[local_axis]))
        return (_Opaque({"fam": fam, "scheme": scheme, "params": params, "start": start,
                         "global_shape": x.shape, "bits": bits, "local": local, "side_z": side_z,
                         "side_region": side_region, "group_offset": group_offset, "codes_z": codes_z,
                         "codes_region": codes_region, "stats_z": stats_z, "index": didx}),)

    # chunks are written in place (side effects), so the tasks are never merged as pure
    return chunked.map_chunks(x, _quantize_chunk, job, pure=False, source=source), indices


class _Opaque:
    """A task argument that Dask passes through untouched (not traversed for collections)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def dequantize_zarr(src: StoreLike, dst: StoreLike, *, overwrite: bool = False,
                    storage_options: dict[str, Any] | None = None,
                    before_compute: Callable[[], object] | None = None) -> "zarr.Array | np.memmap[Any, Any]":
    """Write the dequantized values of the nquant group ``src`` to a Zarr array ``dst``, or to a
    ``.npy`` file when ``dst`` is a local path ending in ``.npy``.

    Written under ``<dst>.partial`` and swapped in (local), so a half-written array is never
    taken for a result; the array carries the attribute ``nquant_array`` (its source group),
    which makes it an nquant output.  An existing ``dst`` needs ``overwrite=True`` and must be an
    nquant output (or a ``.npy`` file); ``dst`` may not overlap ``src``.
    ``storage_options``: fsspec options for URLs ``src`` and ``dst`` (as :func:`save`);
    ``before_compute``: called with no arguments once ``dst`` is checked, before any value is
    decoded (as in :func:`quantize_zarr`).

    Returns
    -------
    zarr.Array, or a read-only memory map of the ``.npy`` file
    """
    src = as_store(src, storage_options)
    dst = as_store(dst, storage_options)
    outputs.check_source_destination(src, dst)
    path = outputs.local_path(dst)
    npy = path is not None and path.endswith(".npy")
    if path is None and isinstance(dst, (str, os.PathLike)) and os.fspath(dst).endswith(".npy"):
        raise StoreError(f"dst={dst!r}: a .npy output must be a local path (or name a Zarr array "
                         "without .npy)")
    q = open(src)
    if not isinstance(q, QuantizedArray):
        raise InputError(f"q of type {type(q).__name__} is invalid: expected a QuantizedArray")
    x_hat = chunked.dequantize(family(q.scheme), q)  # opened from a store: always Dask-backed
    with outputs.writing(dst), outputs.write_errors(dst):
        state = outputs.check_destination(dst, overwrite, file_kind=".npy" if npy else None)
        if state == "ours" and not overwrite:
            raise StoreError(f"dst={dst!r} already exists; pass overwrite=True (--overwrite) to replace it")
        if before_compute is not None:
            before_compute()
        if npy:
            tmp = path + PARTIAL
            outputs.clear_partial(tmp)
            _write_npy(x_hat, tmp)
            os.replace(tmp, path)
            return np.load(path, mmap_mode="r")
        location = _start_partial(dst)
        shape = tuple(x_hat.shape)
        chunks = tuple(c[0] for c in x_hat.chunks) if shape else ()
        mark = {"source": outputs.source_identity(src), "complete": False}
        z = zarr.create_array(location, shape=shape, chunks=chunks or "auto", dtype=x_hat.dtype,
                              overwrite=True, attributes={outputs.ARRAY_MARK: mark})
        da.store(x_hat.rechunk(z.chunks) if shape else x_hat, z.with_config(WRITE_ALL), lock=False)
        z.attrs[outputs.ARRAY_MARK] = {**mark, "complete": True}
        finish_partial(location, dst)
    return zarr.open_array(dst, mode="r")


def _write_npy(x, path):
    """Write the Dask array ``x`` to the ``.npy`` file ``path`` chunk by chunk (a memory map)."""
    if x.ndim == 0 or x.size == 0:
        with builtins.open(path, "wb") as f:  # ``open`` here is nquant.open
            np.save(f, np.asarray(x.compute()))
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=x.dtype, shape=x.shape)
    try:
        da.store(x, out, lock=False)
        out.flush()
    finally:
        del out


# the former private spellings, still imported by nquant.validate
