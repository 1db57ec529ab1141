"""Integrity of stored quantized arrays: layout validation before decoding, checked chunk reads,
and the record that makes a complete group verifiable.

What ``nquant.open`` checks before anything is decoded (:func:`check_group`):

- the group's metadata types: ``format_version`` an int this nquant reads, ``shape`` a list of
  non-negative ints (at most ``MAX_NDIM`` axes, ``MAX_VALUES`` values), ``chunks`` a list of
  positive ints of the same length (0 only for an axis of length 0; at most ``MAX_CHUNKS``
  chunks of at most ``MAX_CHUNK_VALUES`` values), ``dtype`` float16/32/64, ``bits`` the
  scheme's, ``complete`` exactly ``true``;
- ``codes``: uint8 (uint16 for 9..16 bits), shape ``packed_shape(shape, bits)``, chunked as the data;
- every side array against what the scheme, the shape and the chunk grid imply
  (:func:`expected_side`): the set of names, each one's dtype and shape (one value per
  tensor, per axis index or per block; codebook lengths against ``2**bits`` and the scheme's
  levels; per-group codebooks ``(G, K)``; outlier indices ascending and in range), the
  values of the small ones (finite; zero points in the code range);
- every array's fill value (0, as nquant writes it).

Decoding is memory safe whatever the store holds: the families check the side-array
lengths their kernels index, and codes above the last level of a codebook shorter than
``2**bits`` levels (:func:`check_codes`) are a ``StoreError``, never an index.

Verifiable completeness.  nquant writes every array of a group with a ``crc32c`` checksum
after the compressor (:data:`COMPRESSORS`), and :func:`seal` records, before the group is
marked complete, the number of chunks of each array in the group attribute
``nquant_integrity`` (every chunk is then stored, chunks equal to the fill value included).
Reading such a group (``verified``) checks each chunk lazily as it is read: a missing chunk
file, a checksum mismatch or an undecodable chunk is a ``StoreError`` naming the array and
the chunk.  Groups written before (no record) open and decode as before, reported as
unverified (``q.info["verified"] is False``, :func:`nquant.verify.is_verified`).
:func:`nquant.verify.verify_chunks` reads every chunk of every array (``nquant verify``).
"""

import dataclasses
import math
import os

import numpy as np
import zarr

from nquant.errors import StoreError
from nquant.families.base import Side, check_codes, check_groups, check_length, check_nibbles, widen  # noqa: F401
from nquant.families.registry import family
from nquant.packing import code_dtype, packed_len, packed_shape
from nquant.schemes import FORMAT_VERSION, scheme_from_json

INTEGRITY = "nquant_integrity"
INTEGRITY_VERSION = 1
MAX_NDIM = 32
MAX_VALUES = 1 << 50
MAX_CHUNKS = 1 << 22
MAX_CHUNK_VALUES = 1 << 31
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
INTERNAL = ("codes", "chunk_stats")


def compressors():
    """Compressors of every array nquant writes in a group: zstd (zarr's default), then a
    ``crc32c`` checksum of the compressed chunk."""
    return (zarr.codecs.ZstdCodec(level=0, checksum=False), zarr.codecs.Crc32cCodec())


# ----------------------------------------------------------------------------- errors


def _fail(store, msg):
    raise StoreError(f"store={store!r}: {msg}")


def _bad_meta(store, msg):
    raise StoreError(f"store={store!r} has corrupt nquant metadata: {msg}")


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


# ----------------------------------------------------------------------------- metadata


@dataclasses.dataclass(frozen=True)
class Layout:
    """A validated group's geometry: what :func:`nquant.open` builds the array from."""

    scheme: object
    shape: tuple
    dtype: np.dtype
    chunks: tuple          # the data chunks as stored (regular chunk shape)
    data_chunks: tuple     # Dask chunks (tuple of tuples; () for 0-d)
    bits: int
    side: dict             # name -> Side
    verified: bool


def check_meta(meta, store):
    """The scheme, shape, dtype, regular chunks, Dask chunks and bits of an nquant group's
    metadata dict, every type and range checked (``StoreError`` naming the field)."""
    if not isinstance(meta, dict):
        _fail(store, "is not an nquant group (no 'nquant' attributes)")
    version = meta.get("format_version")
    if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
        _bad_meta(store, f"format_version={version!r} is invalid: this nquant reads 1..{FORMAT_VERSION}")
    if meta.get("complete") is not True:
        raise StoreError(f"store={store!r} is incomplete (complete={meta.get('complete')!r}, an interrupted "
                         "write); rerun the job, or quantize_zarr(..., resume=True)")
    try:
        scheme = scheme_from_json(meta.get("scheme"))
    except Exception as e:  # any malformed scheme JSON
        _bad_meta(store, f"scheme is invalid: {e}")
    shape = meta.get("shape")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(_is_int(s) and s >= 0 for s in shape)):
        _bad_meta(store, f"shape={shape!r} is invalid: expected a list of at most {MAX_NDIM} "
                         "non-negative ints")
    shape = tuple(int(s) for s in shape)
    size = math.prod(shape)
    if size > MAX_VALUES:
        _bad_meta(store, f"shape={list(shape)} holds {size} values, more than the {MAX_VALUES} supported")
    dtype = meta.get("dtype")
    try:
        dt = np.dtype(dtype) if isinstance(dtype, str) else None
    except TypeError:
        dt = None
    if dt is None or dt not in FLOAT_DTYPES:  # (np.dtype("f8") == None holds: None first)
        _bad_meta(store, f"dtype={dtype!r} is invalid: expected '<f2', '<f4' or '<f8'")
    bits = meta.get("bits")
    if not _is_int(bits) or bits != scheme.bits:
        _bad_meta(store, f"bits={bits!r} is invalid: the scheme codes with bits={scheme.bits}")
    chunks = meta.get("chunks")
    if (not isinstance(chunks, list) or len(chunks) != len(shape)
            or not all(_is_int(c) and (0 < c <= s or c == s == 0) for c, s in zip(chunks, shape))):
        _bad_meta(store, f"chunks={chunks!r} is invalid: expected a list of {len(shape)} positive ints, "
                         f"each at most the axis length (shape={list(shape)})")
    chunks = tuple(int(c) for c in chunks)
    counts = [(-(-s // c) if s else 1) for s, c in zip(shape, chunks)]
    if math.prod(counts) > MAX_CHUNKS:
        _bad_meta(store, f"chunks={list(chunks)} split shape={list(shape)} into {math.prod(counts)} "
                         f"chunks, more than the {MAX_CHUNKS} supported")
    if math.prod(chunks) > MAX_CHUNK_VALUES:
        _bad_meta(store, f"chunks={list(chunks)} is invalid: a chunk may hold at most "
                         f"{MAX_CHUNK_VALUES} values")
    data_chunks = tuple(((c,) * (s // c) + ((s % c,) if s % c else ())) if s else (0,)
                        for s, c in zip(shape, chunks))
    return scheme, shape, dt, chunks, data_chunks, int(bits)


def _check_block_grid(store, shape, chunks, quantum):
    """Chunks of a block scheme must each be C-contiguous and hold whole quanta of ``quantum``
    values (the last chunk excepted), as ``chunked.rechunk_for_blocks`` makes them."""
    if not shape or 0 in shape:
        return
    nd = len(shape)
    k = nd  # axes k.. are spanned whole by every chunk
    while k > 0 and chunks[k - 1] >= shape[k - 1]:
        k -= 1
    bad = None
    if k:
        split = k - 1  # the one axis the chunks cut (the axes before it: one index per chunk)
        stride = [math.prod(shape[d + 1:]) for d in range(nd)]
        if any(min(chunks[d], shape[d]) != 1 for d in range(split)):
            bad = "chunks that are not contiguous in C order"
        elif any(shape[d] > 1 and stride[d] % quantum for d in range(split)):
            bad = "chunks that start inside a block"
        else:
            step = chunks[split] * stride[split]
            rem = (shape[split] % chunks[split]) * stride[split]
            lead = math.prod(shape[:split])
            if shape[split] > chunks[split] and step % quantum:
                bad = "chunks that end inside a block"
            elif lead > 1 and rem % quantum:
                bad = "edge chunks that end inside a block"
    if bad:
        _fail(store, f"chunks={list(chunks)} for shape={list(shape)} give {bad} of {quantum} values")


# ----------------------------------------------------------------------------- side arrays


def expected_side(scheme, shape, dtype):
    """``{name: Side}``: the side arrays a group of ``scheme`` on an array of ``shape`` (original
    ``dtype``) holds (the family's ``expected_side``); ``StoreError`` when the scheme does not fit
    the shape."""
    return family(scheme).expected_side(scheme, shape, dtype)


def _shape_ok(side, shape):
    if side.shape != (None,):
        return tuple(shape) == tuple(side.shape)
    return len(shape) == 1 and side.min_len <= shape[0] <= side.max_len


def _expected_text(side):
    if side.shape != (None,):
        return f"shape={tuple(side.shape)}"
    return f"shape=(k,) with {side.min_len} <= k <= {side.max_len}"


def check_values(name, side, a, where=""):
    """Raise ``StoreError`` unless the values ``a`` of side array ``name`` pass ``side.check``."""
    c = side.check
    if c is None or a.size == 0:
        return
    bad = None
    if c in ("finite", "increasing", "rows") and not np.isfinite(widen(a) if a.dtype == np.uint16 else a).all():
        bad = "non-finite values"
    elif c == "zero_point" and (a.min() < side.expect[0] or a.max() > side.expect[1]):
        bad = f"values in [{a.min()}, {a.max()}], outside the code range {list(side.expect)}"
    elif c == "increasing" and not (np.diff(a) > 0).all():
        bad = "values that are not strictly increasing"
    elif c == "rows" and not (np.diff(a, axis=-1) >= 0).all():
        bad = "rows that are not sorted"
    elif c == "index" and (a[0] < 0 or a[-1] >= side.expect or not (np.diff(a) > 0).all()):
        bad = f"indices that are not strictly increasing in [0, {side.expect})"
    elif c == "values" and not np.array_equal(a, side.expect):
        bad = f"values {a.tolist()} that differ from the scheme's {side.expect.tolist()}"
    if bad:
        raise StoreError(f"side array {name!r}{where} holds {bad}")


# ----------------------------------------------------------------------------- the group


def integrity_record(group, store):
    """The integrity record ``{name: number of chunks}``, or None (a group written before it)."""
    rec = group.attrs.asdict().get(INTEGRITY)
    if rec is None:
        return None
    if (not isinstance(rec, dict) or rec.get("version") != INTEGRITY_VERSION
            or rec.get("checksum") != "crc32c" or not isinstance(rec.get("chunks"), dict)):
        _fail(store, f"attribute {INTEGRITY}={rec!r} is invalid")
    return rec["chunks"]


def _has_crc(z):
    return any(isinstance(c, zarr.codecs.Crc32cCodec) for c in z.metadata.codecs)


def check_group(group, meta, store):
    """Validate an nquant group before anything is decoded: metadata, ``codes``, every side
    array (names, dtypes, shapes), fill values and the integrity record.

    Returns
    -------
    Layout
    """
    scheme, shape, dtype, chunks, data_chunks, bits = check_meta(meta, store)
    fam = family(scheme)
    quantum = fam.block_quantum(scheme)
    if quantum is not None:
        _check_block_grid(store, shape, chunks, quantum)
    try:
        side = expected_side(scheme, shape, dtype)
    except StoreError as e:
        _fail(store, str(e))
    try:
        arrays = {name: group[name] for name in group.array_keys()}
    except Exception as e:  # unreadable array metadata (zarr.json), of any kind
        _fail(store, f"array metadata cannot be read: {type(e).__name__}: {e}")
    if "codes" not in arrays:
        _fail(store, "array 'codes' is missing: a corrupt group")
    codes = arrays["codes"]
    want = packed_shape(shape, bits)
    if np.dtype(codes.dtype) != code_dtype(bits):
        _fail(store, f"array 'codes' has dtype={codes.dtype}, expected {code_dtype(bits)} for bits={bits}")
    if tuple(codes.shape) != want:
        _fail(store, f"array 'codes': codes shape={tuple(codes.shape)} does not match shape={shape} with "
                     f"bits={bits} (expected {want})")
    want_chunks = codes_chunks(chunks, bits)
    if tuple(codes.chunks) != want_chunks:
        _fail(store, f"array 'codes' has chunks={tuple(codes.chunks)}, expected {want_chunks} "
                     f"(data chunks={list(chunks)}, bits={bits})")
    record = integrity_record(group, store)
    for name, z in sorted(arrays.items()):
        if z.metadata.zarr_format != 3:
            _fail(store, f"array {name!r} is not a Zarr v3 array")
        if z.nchunks > MAX_CHUNKS:
            _fail(store, f"array {name!r} has {z.nchunks} chunks, more than the {MAX_CHUNKS} supported")
        if z.fill_value is None or z.fill_value != 0:
            fill = z.fill_value.item() if isinstance(z.fill_value, np.generic) else z.fill_value
            _fail(store, f"array {name!r} has fill_value={fill!r}, expected 0 as nquant writes it")
        if record is not None:
            if record.get(name) != z.nchunks:
                _fail(store, f"array {name!r} has {z.nchunks} chunks; the integrity record says "
                             f"{record.get(name)!r}")
            if not _has_crc(z):
                _fail(store, f"array {name!r} has no crc32c checksum although the group is sealed")
    if record is not None and set(record) - set(arrays):
        _fail(store, f"arrays {sorted(set(record) - set(arrays))} of the integrity record are missing")
    if "chunk_stats" in arrays:
        z = arrays["chunk_stats"]
        want = tuple(len(c) for c in data_chunks) + (6,) if shape else (1, 6)
        if np.dtype(z.dtype) != np.float64 or tuple(z.shape) != want:
            _fail(store, f"array 'chunk_stats' has dtype={z.dtype}, shape={tuple(z.shape)}; expected "
                         f"dtype=float64, shape={want}")
    names = set(arrays) - set(INTERNAL)
    if names != set(side):
        missing, unknown = sorted(set(side) - names), sorted(names - set(side))
        _fail(store, f"side arrays {sorted(names)} do not match the scheme's {sorted(side)}"
                     + (f" (missing {missing})" if missing else "")
                     + (f" (unknown {unknown})" if unknown else ""))
    for name, s in side.items():
        z = arrays[name]
        if np.dtype(z.dtype) != s.dtype or not _shape_ok(s, z.shape):
            _fail(store, f"side array {name!r} has dtype={z.dtype}, shape={tuple(z.shape)}; expected "
                         f"dtype={s.dtype}, {_expected_text(s)} for scheme type={scheme.type!r} on "
                         f"shape={list(shape)}")
        size = max(1, math.prod(z.shape))
        if math.prod(z.chunks) > size:
            _fail(store, f"side array {name!r} has chunks={tuple(z.chunks)}, larger than the array")
    if "outlier_value" in side:
        index, value = (tuple(arrays[k].shape) for k in ("outlier_index", "outlier_value"))
        if index != value:
            _fail(store, f"side arrays 'outlier_index' and 'outlier_value' have shapes {index} and {value}; "
                         "expected the same")
    verified = record is not None
    return Layout(scheme, shape, dtype, chunks, data_chunks, bits, side, verified)


def codes_chunks(chunks, bits):
    """Zarr chunks of the packed codes for data ``chunks`` of ``bits``-bit codes (last axis in bytes)."""
    if not chunks:
        return (1,)
    return tuple(max(1, c) for c in chunks[:-1]) + (max(1, packed_len(chunks[-1], bits)),)


def block_lengths(fam, scheme, data_chunks, name):
    """Entries of the per-block side array ``name`` in each data chunk (C order of the chunks)."""
    if not data_chunks:
        return ()
    sizes = np.ones(1, np.int64)
    for c in data_chunks:
        sizes = np.multiply.outer(sizes, np.asarray(c, np.int64)).reshape(-1)
    uniq, inv = np.unique(sizes, return_inverse=True)
    per = np.array([fam.param_specs(scheme, int(u))[name][0] for u in uniq], np.int64)
    return tuple(int(v) for v in per[inv])


# ----------------------------------------------------------------------------- checked reads


def _chunk_key_exists(z, idx):
    """Whether chunk ``idx`` of ``z`` is stored (a file test for local stores; the store's
    ``exists`` otherwise)."""
    key = z.metadata.encode_chunk_key(idx)
    if isinstance(z.store, zarr.storage.LocalStore):
        return os.path.isfile(os.path.join(z.store.root, *z.store_path.path.split("/"), *key.split("/")))
    from zarr.core.sync import sync

    return sync((z.store_path / key).exists())


class ChunkReader:
    """Array-like over a Zarr array for ``dask.array.from_array``: each read checks the chunks
    it touches (present when the group is sealed), maps a failed read (checksum mismatch,
    corrupt compressed bytes) to a ``StoreError`` naming the array and the chunk, and checks
    the values of a side array (:func:`check_values`)."""

    def __init__(self, z, name, store, verified, side=None):
        self.z, self.name, self.store, self.verified, self.side = z, name, store, verified, side
        self.shape, self.dtype, self.ndim = tuple(z.shape), np.dtype(z.dtype), z.ndim

    def _chunk_ids(self, key):
        ranges = []
        for sl, n, c in zip(key, self.shape, self.z.chunks):
            start, stop, _ = sl.indices(n)
            ranges.append(range(start // c, -(-stop // c)) if stop > start else range(0))
        return ranges

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        key = tuple(key) + (slice(None),) * (self.ndim - len(key))
        ranges = self._chunk_ids(key)
        if self.verified:
            for idx in np.ndindex(*[len(r) for r in ranges]):
                cid = tuple(r[i] for r, i in zip(ranges, idx))
                if not _chunk_key_exists(self.z, cid):
                    raise StoreError(f"store={self.store!r}: array {self.name!r} chunk {cid} is missing "
                                     "(a complete group stores every chunk)")
        try:
            a = np.asarray(self.z[key])
        except Exception as e:  # checksum mismatch, corrupt compressed bytes, a failed read
            first = tuple(r.start for r in ranges)
            raise StoreError(f"store={self.store!r}: array {self.name!r} chunk {first} cannot be read: "
                             f"{type(e).__name__}: {e}") from None
        if self.side is not None:
            where = f" chunk {tuple(r.start for r in ranges)}" if self.side.block else ""
            try:
                check_values(self.name, self.side, a, where)
            except StoreError as e:
                raise StoreError(f"store={self.store!r}: {e}") from None
        return a


def read_array(z, name, store, verified, side=None):
    """All of the Zarr array ``z``, read and checked (:class:`ChunkReader`)."""
    return ChunkReader(z, name, store, verified, side)[tuple(slice(None) for _ in z.shape)]


def lazy_array(z, name, store, verified, side=None):
    """``z`` as a Dask array (its own chunks) whose chunk reads are checked (:class:`ChunkReader`)."""
    import dask.array as da
    from dask.base import tokenize

    reader = ChunkReader(z, name, store, verified, side)
    token = tokenize(str(z.store_path), name, reader.shape, tuple(z.chunks), reader.dtype.str, verified)
    return da.from_array(reader, chunks=tuple(z.chunks), name=f"nquant-read-{name}-{token}", lock=False,
                         asarray=False, meta=np.empty((0,) * reader.ndim, reader.dtype))


# ----------------------------------------------------------------------------- sealing


def seal(group):
    """Record every array's chunk count in the group attribute ``nquant_integrity``, writing
    the chunks that the writer skipped (equal to the fill value) so that every chunk is
    stored.  Call it on a complete group's arrays before marking it complete."""
    chunks = {}
    for name in sorted(group.array_keys()):
        z = group[name]
        if not _has_crc(z):
            raise StoreError(f"array {name!r} has no crc32c checksum: create every array of an nquant group "
                             "with compressors=nquant.validate.compressors() before sealing it")
        if z.nchunks_initialized != z.nchunks:
            w = z.with_config({"write_empty_chunks": True})
            for cid in np.ndindex(*z.cdata_shape):
                if not _chunk_key_exists(z, cid):
                    sel = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(cid, z.chunks, z.shape))
                    w[sel] = np.full(tuple(s.stop - s.start for s in sel), z.fill_value, z.dtype)
        chunks[name] = int(z.nchunks)
    group.attrs[INTEGRITY] = {"version": INTEGRITY_VERSION, "checksum": "crc32c", "chunks": chunks}
    return chunks
