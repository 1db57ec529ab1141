"""Zarr v3 codec ``nquant.quantize``: quantize and bit-pack on write, dequantize on read.

``QuantizeCodec`` is an array-to-bytes codec (it takes the place of zarr's
``BytesCodec`` as the array's ``serializer``).  Each chunk is calibrated on its
own: the scheme is fitted on the chunk (``range="minmax"`` by default; a fixed
``range=(rmin, rmax)`` gives every chunk the same parameters), encoded, and the
codes are packed into one flat MSB-first stream (``nquant.pack``).  The
per-chunk side arrays (those the scheme stores, :func:`nquant.families.uniform.expected_side`:
``scale`` and ``zero_point`` or ``offset``, or their compact forms) travel in
the chunk's own bytes, so any process that has nquant installed reads the
array with a plain ``zarr.open_array(path)[...]``: zarr finds the codec through
the ``zarr.codecs`` entry point, without an ``import nquant``.

Chunk format (header version 1, every number little-endian)::

    offset  size        field
    0       4           magic b"NQZC"
    4       1           header version (1)
    5       1           bits per code (1..16)
    6       1           ndim of the chunk
    7       1           n_side: number of side arrays
    8       8 * ndim    chunk shape, uint64
    ...                 n_side entries: name length (uint8), name (ASCII),
                        dtype code (b"f" float32, b"i" int32, b"d" float64, b"h" float16,
                        b"H" uint16, b"B" uint8), length (uint64)
    ...     8           packed code bytes, uint64 (= ceil(prod(shape) * bits / 8); 2 * prod(shape)
                        for 9..16 bits)
    ...                 the side arrays' values, in the order of their entries
    ...                 the packed codes (``nquant.pack`` of the C-ordered codes; 9..16-bit
                        codes: little-endian uint16, one per value)

The side arrays are those of the scheme's stored layout, in its order: ``scale`` (float32,
float16, or bfloat16 as uint16 bits) or ``scale_codes``/``scale2`` (``double_quant``), then
``zero_point`` (int32), ``zero_point_codes`` (uint8, row-packed per block; uint16 for 9..16
bits), ``offset`` or none (a symmetric scheme with ``zero_point_storage="packed"``), then
``scale_offset`` (``double_quant``).  Chunks of the int32 layout keep the header of earlier
versions (codes b"f", b"i", b"d").

The scheme itself is not repeated per chunk: it is the codec's configuration
in the array's ``zarr.json``
(``{"name": "nquant.quantize", "configuration": {"scheme": {...}}}``).

Per-chunk semantics, where they differ from ``nquant.quantize`` of the whole
array:

- *Calibration* is per chunk (one set of parameters per chunk, or per axis
  index / block within the chunk); ``block_size`` blocks are blocks of the
  chunk's own C-ordered values, ``axis`` channels are the chunk's indices of
  that axis.
- *Edge chunks*: zarr pads a partial edge chunk to the full chunk shape with
  the array's ``fill_value`` before encoding, and the codec cannot tell padding
  from data, so the fill value takes part in the chunk's min/max.  Keep it
  inside the data's range (the default 0.0 is always inside the range of
  ``zero_point="int"`` and symmetric schemes), or use NaN with
  ``nan="propagate"`` (NaN is left out of the statistics).
- *Stochastic rounding*: zarr's ``ArraySpec`` carries the chunk's shape but not
  its position in the array, so the counter-based stream is keyed by the
  element's index within its chunk (chunk start = 0).  Writes are still
  deterministic (same chunk, same bytes), but chunks at different positions
  reuse the same draws, and the codes differ from ``nquant.quantize`` of the
  whole array.
- *Partial writes*: writing part of a chunk makes zarr decode the stored chunk,
  merge the new values and encode again, so the values already there are
  quantized a second time (with a refitted range).  Write whole chunks (aligned
  slices) to keep the error bound of a single rounding.
- Chunks equal to ``fill_value`` everywhere are not stored (zarr's
  ``write_empty_chunks=False``) and read back exactly.

The header is validated on read (magic, version, shape, bits, side arrays and
total length); a corrupt chunk raises :class:`nquant.errors.StoreError`.  Bit
flips inside the values are not detected: add ``zarr.codecs.Crc32cCodec()`` to
``compressors`` for a checksum.
"""

import asyncio
import dataclasses
import json
import struct
from typing import Any
import threading

import numba
import numpy as np
from nquant._types import StoreLike
import zarr
from zarr.abc.codec import ArrayBytesCodec
from zarr.registry import register_codec

from nquant import validate
from nquant.errors import InputError, SchemeError, StoreError
from nquant.families import uniform
from nquant.families.registry import family, registered
from nquant.packing import pack_codes, packed_size, unpack_codes
from nquant.schemes import Scheme, Uniform, scheme_from_json

CODEC_NAME = "nquant.quantize"
MAGIC = b"NQZC"
HEADER_VERSION = 1
_PREFIX = struct.Struct("<4sBBBB")
_U64 = struct.Struct("<Q")
_SIDE_DTYPES = {b"f": np.dtype("<f4"), b"i": np.dtype("<i4"), b"d": np.dtype("<f8"), b"h": np.dtype("<f2"),
                b"H": np.dtype("<u2"), b"B": np.dtype("u1")}
_SIDE_CODES = {v: k for k, v in _SIDE_DTYPES.items()}
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _side_specs(scheme, shape):
    """``{name: Side}`` of the side arrays of a chunk of ``shape``, in the order they are written
    (``StoreError`` when the scheme does not fit the shape)."""
    return uniform.expected_side(scheme, tuple(shape), np.float32)


def _le(side):
    return side.dtype.newbyteorder("<")


def header_size(ndim, names):
    """Bytes of a chunk's header: ``ndim`` dimensions, side arrays named ``names``."""
    return _PREFIX.size + 8 * ndim + sum(1 + len(n) + 1 + 8 for n in names) + 8


def _as_scheme(scheme):
    if isinstance(scheme, Scheme):
        s = scheme
    elif isinstance(scheme, (str, dict)):
        s = scheme_from_json(scheme)
    else:
        raise SchemeError(f"scheme={scheme!r} is invalid: expected an nquant scheme such as "
                          "nq.Uniform(bits=8), or its JSON dict")
    if not family(s).codec:
        supported = sorted(cls.type for cls, fam in registered().items() if fam.codec)
        raise SchemeError(f"scheme type={s.type!r} is not supported by the {CODEC_NAME} codec: "
                          f"expected a scheme of type {' or '.join(map(repr, supported))}")
    return s


# ----------------------------------------------------------------------------- thread policy

_lock = threading.Lock()
_in_flight = 0


class _ChunkThreads:
    """Numba threads for one chunk: all of them alone, fewer when zarr runs chunks at once.

    zarr encodes/decodes chunks concurrently (``asyncio.to_thread``); each call
    takes ``NUMBA_NUM_THREADS // chunks in flight`` threads (at least 1).
    ``numba.set_num_threads`` is per calling thread, so this touches only the
    worker thread running the chunk.
    """

    def __enter__(self):
        global _in_flight
        with _lock:
            _in_flight += 1
            n = max(1, numba.config.NUMBA_NUM_THREADS // _in_flight)
        self._old = numba.get_num_threads()
        numba.set_num_threads(n)
        return n

    def __exit__(self, *exc):
        global _in_flight
        numba.set_num_threads(self._old)
        with _lock:
            _in_flight -= 1
        return False


# ----------------------------------------------------------------------------- chunk format


def encode_chunk(scheme, chunk):
    """Bytes (uint8 array) of one chunk: header, side arrays, packed codes.

    Fits ``scheme`` on ``chunk`` (``nquant.families.uniform.fit``), encodes and packs.
    Raises ``InputError`` for NaN (unless ``nan="propagate"``) or inf.
    """
    chunk = np.asarray(chunk)
    params = uniform.fit(scheme, chunk)
    codes = uniform.encode(scheme, params, chunk)
    # 9..16-bit codes are uint16, written little-endian
    packed = pack_codes(codes.reshape(-1), scheme.bits).astype("<u2" if scheme.bits > 8 else np.uint8,
                                                               copy=False).view(np.uint8)
    specs = _side_specs(scheme, chunk.shape)
    names = list(specs)
    sides = [np.ascontiguousarray(params[n], dtype=_le(specs[n])).reshape(-1) for n in names]
    hsize = header_size(chunk.ndim, names)
    total = hsize + sum(s.nbytes for s in sides) + packed.size
    out = np.empty(total, np.uint8)
    head = [_PREFIX.pack(MAGIC, HEADER_VERSION, scheme.bits, chunk.ndim, len(names))]
    head += [_U64.pack(int(d)) for d in chunk.shape]
    for n, s in zip(names, sides):
        head.append(bytes([len(n)]) + n.encode("ascii") + _SIDE_CODES[s.dtype] + _U64.pack(s.size))
    head.append(_U64.pack(packed.size))
    head = b"".join(head)
    out[:hsize] = np.frombuffer(head, np.uint8)
    pos = hsize
    for s in sides:
        out[pos:pos + s.nbytes] = s.view(np.uint8)
        pos += s.nbytes
    out[pos:] = packed
    return out


def _corrupt(msg):
    return StoreError(f"corrupt {CODEC_NAME} chunk: {msg}")


def parse_chunk(scheme, raw, shape=None):
    """Parse a chunk's bytes: ``(shape, params, packed)``; ``StoreError`` if corrupt.

    ``shape``, when given, is the chunk shape zarr expects.
    """
    raw = np.ascontiguousarray(np.asarray(raw).reshape(-1)).view(np.uint8)
    n = raw.size
    if n < _PREFIX.size:
        raise _corrupt(f"{n} bytes, shorter than the {_PREFIX.size}-byte header prefix")
    magic, version, bits, ndim, n_side = _PREFIX.unpack_from(raw, 0)
    if magic != MAGIC:
        raise _corrupt(f"magic={magic!r} is not {MAGIC!r} (not written by the {CODEC_NAME} codec)")
    if version != HEADER_VERSION:
        raise _corrupt(f"header version={version} is not one this nquant reads ({HEADER_VERSION})")
    if bits != scheme.bits:
        raise _corrupt(f"bits={bits} does not match the array's scheme (bits={scheme.bits})")
    pos = _PREFIX.size

    def need(k, what):
        if pos + k > n:
            raise _corrupt(f"truncated: {n} bytes, {what} needs bytes up to {pos + k}")

    need(8 * ndim, "the chunk shape")
    cshape = struct.unpack_from(f"<{ndim}Q", raw, pos)
    pos += 8 * ndim
    if shape is not None and tuple(cshape) != tuple(shape):
        raise _corrupt(f"shape={tuple(cshape)} does not match the chunk shape {tuple(shape)}")
    count = int(np.prod(cshape, dtype=np.int64))
    try:
        specs = _side_specs(scheme, cshape)
    except StoreError as e:
        raise _corrupt(f"shape={tuple(cshape)} does not fit the scheme: {e}") from None
    names = tuple(specs)
    if n_side != len(names):
        raise _corrupt(f"n_side={n_side}, expected {len(names)} side arrays {names}")
    entries = []
    for expected in names:
        need(1, "a side array entry")
        ln = int(raw[pos])
        pos += 1
        need(ln + 9, "a side array entry")
        name = raw[pos:pos + ln].tobytes()
        code = raw[pos + ln:pos + ln + 1].tobytes()
        (length,) = _U64.unpack_from(raw, pos + ln + 1)
        pos += ln + 9
        if name != expected.encode("ascii"):
            raise _corrupt(f"side array {name!r} where {expected!r} was expected")
        if _SIDE_DTYPES.get(code) != _le(specs[expected]):
            raise _corrupt(f"side array {expected!r} has dtype code {code!r}")
        if length != specs[expected].shape[0]:
            raise _corrupt(f"side array {expected!r} has length={length}, expected {specs[expected].shape[0]} "
                           f"for shape={tuple(cshape)}")
        entries.append((expected, _le(specs[expected]), length))
    need(8, "the packed length")
    (npacked,) = _U64.unpack_from(raw, pos)
    pos += 8
    if npacked != packed_size(count, bits):
        raise _corrupt(f"packed length={npacked}, expected {packed_size(count, bits)} for "
                       f"{count} codes of {bits} bits")
    body = sum(dt.itemsize * ln for _, dt, ln in entries) + npacked
    if pos + body != n:
        raise _corrupt(f"{n} bytes, expected {pos + body} (header {pos} + side arrays and codes {body})")
    params = {}
    for name, dt, ln in entries:
        params[name] = np.frombuffer(raw, dt, ln, pos).astype(dt.newbyteorder("="))
        pos += dt.itemsize * ln
        try:  # zero points within the code range, scales finite: before any kernel reads them
            validate.check_values(name, specs[name], params[name])
        except StoreError as e:
            raise _corrupt(str(e)) from None
    return tuple(int(d) for d in cshape), params, raw[pos:]


def decode_chunk(scheme, raw, dtype, shape=None):
    """Dequantized values (``dtype``) of one chunk's bytes; ``StoreError`` if corrupt."""
    cshape, params, packed = parse_chunk(scheme, raw, shape)
    count = int(np.prod(cshape, dtype=np.int64))
    if scheme.bits > 8:
        packed = packed.view("<u2")
    codes = unpack_codes(packed, scheme.bits, (count,)).reshape(cshape)
    return uniform.decode(scheme, params, codes, dtype)


def encoded_size(scheme, shape):
    """Bytes of an encoded chunk of ``shape`` (header, side arrays, packed codes)."""
    shape = tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64))
    specs = _side_specs(scheme, shape)
    return (header_size(len(shape), specs) + sum(s.dtype.itemsize * s.shape[0] for s in specs.values())
            + packed_size(count, scheme.bits))


# ----------------------------------------------------------------------------- the codec


@dataclasses.dataclass(frozen=True)
class QuantizeCodec(ArrayBytesCodec):
    """Zarr v3 array-to-bytes codec ``nquant.quantize`` (see the module docstring).

    Parameters
    ----------
    scheme : nquant.Uniform, or its JSON text / dict (``scheme.to_dict()``)
        Fitted per chunk.  Any Uniform option works per chunk (``axis``,
        ``block_size``, ``range`` incl. a fixed ``(rmin, rmax)``, ``nan``,
        ``rounding``, ``scale_dtype``, ``zero_point_storage``, ``double_quant``).

    Examples
    --------
    >>> import numpy as np, zarr, nquant as nq
    >>> from nquant.codec import QuantizeCodec
    >>> scheme = nq.Uniform(bits=4, zero_point="float")
    >>> z = zarr.create_array(zarr.storage.MemoryStore(), shape=(1000, 1000), chunks=(250, 1000),
    ...                       dtype="f4", serializer=QuantizeCodec(scheme), compressors=None)
    >>> x = np.linspace(0, 1, 10**6, dtype=np.float32).reshape(1000, 1000)
    >>> z[...] = x  # each chunk spans 0.25: 16 levels 0.25 / 15 apart
    >>> bool(abs(z[...] - x).max() <= 0.5 * 0.25 / 15 + 1e-6)
    True
    """

    is_fixed_size = True

    scheme: Uniform

    def __init__(self, scheme=None):
        object.__setattr__(self, "scheme", _as_scheme(Uniform() if scheme is None else scheme))

    # -- metadata

    @classmethod
    def from_dict(cls, data):
        """Codec from its ``zarr.json`` entry ``{"name": ..., "configuration": {"scheme": ...}}``."""
        if not isinstance(data, dict) or data.get("name") != CODEC_NAME:
            raise SchemeError(f"codec metadata={data!r} is invalid: expected name={CODEC_NAME!r}")
        conf = data.get("configuration")
        if not isinstance(conf, dict) or "scheme" not in conf:
            raise SchemeError(f"configuration={conf!r} of {CODEC_NAME} is invalid: expected "
                              "{'scheme': {...}}")
        unknown = set(conf) - {"scheme"}
        if unknown:
            raise SchemeError(f"configuration of {CODEC_NAME} has unknown key(s) {sorted(unknown)}")
        return cls(conf["scheme"])

    def to_dict(self):
        """``{"name": "nquant.quantize", "configuration": {"scheme": scheme.to_dict()}}``."""
        return {"name": CODEC_NAME,
                "configuration": {"scheme": json.loads(self.scheme.to_json())}}

    def validate(self, *, shape, dtype, chunk_grid):
        native = dtype.to_native_dtype()
        if native.kind != "f" or native.newbyteorder("=") not in FLOAT_DTYPES:
            raise InputError(f"dtype={native} is not supported by the {CODEC_NAME} codec: "
                             "expected float16, float32 or float64")
        uniform.norm_axis(self.scheme, len(shape))

    def compute_encoded_size(self, input_byte_length, chunk_spec):
        return encoded_size(self.scheme, chunk_spec.shape)

    # -- encode / decode

    def _encode_sync(self, chunk_array, chunk_spec):
        arr = chunk_array.as_numpy_array()
        with _ChunkThreads():
            out = encode_chunk(self.scheme, arr)
        return chunk_spec.prototype.buffer.from_array_like(out)

    def _decode_sync(self, chunk_bytes, chunk_spec):
        raw = chunk_bytes.as_numpy_array()
        dtype = chunk_spec.dtype.to_native_dtype()
        with _ChunkThreads():
            values = decode_chunk(self.scheme, raw, dtype.newbyteorder("="), chunk_spec.shape)
        if values.dtype != dtype:
            values = values.astype(dtype)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(values)

    async def _encode_single(self, chunk_array, chunk_spec):
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)


register_codec(CODEC_NAME, QuantizeCodec)


def create_quantized_array(store: StoreLike, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any,
                           scheme: Scheme | str | dict[str, Any], *, compressors: Any = None,
                           **kw: Any) -> Any:
    """A new Zarr v3 array whose chunks are quantized by :class:`QuantizeCodec`.

    Parameters
    ----------
    store : path or zarr store
    shape, chunks : tuple of int
    dtype : float16, float32 or float64
    scheme : nquant.Uniform (or its JSON dict)
    compressors : zarr bytes-to-bytes codecs applied after packing; default
        None (the packed codes are dense).  ``zarr.codecs.ZstdCodec()`` can
        still gain on smooth data, ``zarr.codecs.Crc32cCodec()`` adds a checksum.
    **kw : passed to ``zarr.create_array`` (``fill_value``, ``overwrite``,
        ``attributes``, ``shards``, ...)

    Returns
    -------
    zarr.Array; ``z[...] = x`` quantizes, ``z[...]`` dequantizes.
    """
    codec = QuantizeCodec(scheme)
    fill = kw.get("fill_value")
    if (fill is not None and codec.scheme.nan == "raise"
            and isinstance(fill, (float, np.floating)) and np.isnan(fill)):
        raise SchemeError("fill_value=nan needs nan='propagate' in the scheme (zarr pads edge "
                          "chunks with the fill value, which the codec then quantizes)")
    return zarr.create_array(store, shape=shape, chunks=chunks, dtype=dtype, serializer=codec,
                             compressors=compressors, **kw)
