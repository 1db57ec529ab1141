"""Zarr v3 codec ``nquant.lossless``: lossless compression of integer codes.

Quantized codes of smooth data are smooth: neighbouring codes differ by little.  The codec
predicts each code from its neighbours (``nquant.kernels.predict``: delta along an axis, or 2-D
Lorenzo on the last two axes, in wrapping integer arithmetic), maps the residuals to unsigned
(zigzag), splits them into byte planes (byte shuffle) and compresses the planes with zstd, or
compresses the residuals with pcodec (smaller, slower; needs ``pip install pcodec``).  It is an
array-to-bytes codec (the array's ``serializer``) for uint8 and uint16 arrays.

``compression`` names (the ``compression=`` parameter of :func:`nquant.save` and
:func:`nquant.quantize_zarr`, ``--compression`` on the command line), for the ``codes`` array:

- ``"auto"`` (the default): ``"adaptive-zstd"`` for codes that fill whole bytes (8 bits, 16 bits),
  ``"zstd"`` for packed codes of fewer bits (the bits of several codes share a byte: prediction
  has nothing to work on);
- ``"adaptive-zstd"``: per chunk, 2-D Lorenzo prediction (delta on 1-D arrays) or none, whichever
  leaves the lower entropy on a sample of the chunk (smooth fields are predicted, noise-like codes
  such as weights are not), then byte shuffle and zstd (level 3);
- ``"lorenzo-zstd"``: 2-D Lorenzo prediction, byte shuffle, zstd (level 3);
- ``"delta-zstd"``: delta along the last axis, byte shuffle, zstd (level 3);
- ``"lorenzo-pcodec"``: 2-D Lorenzo prediction, then pcodec: the smallest, several times slower;
- ``"pcodec"``: pcodec on the codes as they are;
- ``"zstd"``: zarr's own zstd codec, readable by any Zarr v3 reader without nquant;
- ``None``: stored uncompressed.

Every choice is followed by a crc32c checksum (``nquant.validate``).  Arrays written with the
``nquant.lossless`` codec are read by plain ``zarr.open_array`` in a process that has imported
nquant (the codec registers itself) or has it installed (the ``zarr.codecs`` entry point).

Chunk format (header version 1, numbers little-endian)::

    offset  size      field
    0       4         magic b"NQLC"
    4       1         header version (1)
    5       1         bytes per code (1: uint8, 2: uint16)
    6       1         predictor (0 none, 1 delta, 2 lorenzo)
    7       1         coder (0 zstd, 1 pcodec)
    8       1         ndim
    9       1         axis of the delta predictor (0..ndim-1; 0 for the others)
    10      8 * ndim  chunk shape, uint64
    ...     8         payload bytes, uint64
    ...               payload: a zstd frame of the byte planes, or a pcodec standalone stream of
                      the zigzag residuals (uint16)

Decoding is memory safe on untrusted bytes: the header must match the array (dtype, chunk
shape) and the codec's configuration, the payload length the chunk's size; a zstd frame must
declare exactly the chunk's byte count, and both coders decompress into a buffer of that size
allocated beforehand.  Anything else is a :class:`nquant.errors.StoreError`.
"""

import asyncio
import dataclasses
import struct
from typing import Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.registry import register_codec

from nquant.errors import InputError, SchemeError, StoreError
from nquant.kernels import predict

CODEC_NAME = "nquant.lossless"
MAGIC = b"NQLC"
HEADER_VERSION = 1
PREDICTORS = ("none", "delta", "lorenzo")
ADAPTIVE = "adaptive"
SAMPLE_VALUES = 1 << 16
CODERS = ("zstd", "pcodec")
DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
DEFAULT_LEVEL = 3
COMPRESSIONS = ("auto", "adaptive-zstd", "lorenzo-zstd", "delta-zstd", "lorenzo-pcodec", "pcodec", "zstd",
                None)
_PREFIX = struct.Struct("<4sBBBBBB")
_U64 = struct.Struct("<Q")
_ZSTD_MAGIC = 0xFD2FB528


def _pcodec():
    try:
        import pcodec
    except ImportError as e:
        raise InputError("coder='pcodec' needs the pcodec package (pip install pcodec)") from e
    return pcodec


_ZSTD: dict[int, Any] = {}


def _zstd(level):
    """The numcodecs Zstd codec of ``level`` (made once: making one costs more than compressing a small
    chunk; its encode and decode keep no state between calls)."""
    codec = _ZSTD.get(level)
    if codec is None:
        from numcodecs import Zstd

        codec = _ZSTD[level] = Zstd(level=level)
    return codec


# ----------------------------------------------------------------------------- names


def resolve(compression, bits, ndim):
    """The compression of a ``codes`` array of ``bits``-bit codes and ``ndim`` data axes: one of
    :data:`COMPRESSIONS` but ``"auto"`` (see the module docstring); ``InputError`` for an unknown
    name."""
    if compression not in COMPRESSIONS:
        raise InputError(f"compression={compression!r} is invalid: expected one of "
                         f"{', '.join(repr(c) for c in COMPRESSIONS)}")
    if compression is not None and "pcodec" in compression:
        _pcodec()
    if compression != "auto":
        return compression
    if bits % 8:
        return "zstd"
    return "adaptive-zstd"


def codec_for(compression):
    """The :class:`LosslessCodec` of a resolved compression name, or None for ``"zstd"`` and
    ``None`` (zarr's own codecs)."""
    if compression in ("zstd", None):
        return None
    predictor, _, coder = compression.rpartition("-")
    return LosslessCodec(predictor=predictor or "none", coder=coder)


# ----------------------------------------------------------------------------- chunk format


def choose_predictor(codes):
    """The predictor of the ``adaptive`` mode for a C-contiguous chunk of codes: ``"lorenzo"`` (2-D or
    more; ``"delta"`` along the last axis on 1-D) when its residuals have a lower order-0 entropy than
    the codes themselves on a sample of the chunk (its first rows, about :data:`SAMPLE_VALUES` values),
    else ``"none"``: smooth fields gain from prediction, noise-like codes (weights) lose by it."""
    pred = "lorenzo" if codes.ndim >= 2 else "delta"
    (_, n, b), _, _ = predict.view3(codes.shape, pred)
    if codes.size == 0:
        return pred
    rows = min(n, max(2, SAMPLE_VALUES // max(1, b)))
    if codes.ndim >= 2:
        sample = codes.reshape(-1, n, b)[:1, :rows]
    else:
        sample = codes[:SAMPLE_VALUES].reshape(1, 1, -1)
    sample = np.ascontiguousarray(sample)
    bits = {}
    for kind, left, up in ((pred, True, codes.ndim >= 2), ("none", False, False)):
        planes = np.empty((codes.itemsize, sample.size), np.uint8)
        predict.encode(sample, left, up, planes)
        bits[kind] = predict.entropy_bits(planes)
    return pred if bits[pred] <= bits["none"] else "none"


def _header(dtype, predictor, coder, axis, shape, payload):
    return b"".join([_PREFIX.pack(MAGIC, HEADER_VERSION, dtype.itemsize, PREDICTORS.index(predictor),
                                  CODERS.index(coder), len(shape), axis),
                     *(_U64.pack(int(d)) for d in shape), _U64.pack(payload)])


def encode_chunk(codes, predictor="lorenzo", coder="zstd", level=DEFAULT_LEVEL, axis=-1):
    """Bytes of one chunk of codes: header and compressed payload.

    Parameters
    ----------
    codes : ndarray, uint8 or uint16, any shape
    predictor : "none", "delta" (along ``axis``), "lorenzo" (last two axes; delta on 1-D) or
        "adaptive" (per chunk: :func:`choose_predictor`, recorded in the header)
    coder : "zstd" (byte planes, ``level``) or "pcodec"

    Returns
    -------
    bytes
    """
    codes = np.asarray(codes)
    shape = codes.shape  # (np.ascontiguousarray makes 0-d arrays 1-d)
    dtype = codes.dtype.newbyteorder("=")
    if dtype not in DTYPES:
        raise InputError(f"codes dtype={codes.dtype} is invalid: expected uint8 or uint16")
    if predictor == ADAPTIVE:
        predictor = choose_predictor(np.ascontiguousarray(codes))
        axis = -1
    shape3, left, up = predict.view3(shape, predictor, axis)
    planes = np.empty((dtype.itemsize, codes.size), np.uint8)
    predict.encode(np.ascontiguousarray(codes, dtype).reshape(shape3), left, up, planes)
    if codes.size == 0:
        payload = b""
    elif coder == "zstd":
        payload = bytes(_zstd(level).encode(planes))
    else:
        z = planes[0].astype(np.uint16)
        if dtype.itemsize == 2:
            z |= planes[1].astype(np.uint16) << 8
        pc = _pcodec()
        payload = pc.standalone.simple_compress(z, pc.ChunkConfig())
    ax = axis % len(shape) if predictor == "delta" and shape else 0
    return _header(dtype, predictor, coder, ax, shape, len(payload)) + payload


def _corrupt(msg):
    return StoreError(f"corrupt {CODEC_NAME} chunk: {msg}")


def zstd_content_size(frame):
    """The content size declared by the zstd frame header at the start of ``frame`` (bytes), or
    None when the frame does not declare one (or is not a zstd frame)."""
    if len(frame) < 5 or int.from_bytes(frame[:4], "little") != _ZSTD_MAGIC:
        return None
    fhd = frame[4]
    single = (fhd >> 5) & 1
    fcs_size = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    if fcs_size == 0 or len(frame) < pos + fcs_size:
        return None
    size = int.from_bytes(frame[pos:pos + fcs_size], "little")
    return size + 256 if fcs_size == 2 else size


def decode_chunk(raw, dtype, shape, predictor="lorenzo", coder="zstd", axis=-1):
    """Codes (``dtype``, ``shape``) from one chunk's bytes; ``StoreError`` when the bytes are not
    a chunk of this shape, dtype and configuration."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(raw, np.uint8)
    raw = memoryview(np.ascontiguousarray(np.asarray(raw).reshape(-1)).view(np.uint8)).cast("B")
    dtype = np.dtype(dtype).newbyteorder("=")
    shape = tuple(int(d) for d in shape)
    n = len(raw)
    if n < _PREFIX.size:
        raise _corrupt(f"{n} bytes, shorter than the {_PREFIX.size}-byte header prefix")
    magic, version, itemsize, pred, cod, ndim, ax = _PREFIX.unpack_from(raw, 0)
    if magic != MAGIC:
        raise _corrupt(f"magic={magic!r} is not {MAGIC!r} (not written by the {CODEC_NAME} codec)")
    if version != HEADER_VERSION:
        raise _corrupt(f"header version={version} is not one this nquant reads ({HEADER_VERSION})")
    if predictor == ADAPTIVE and pred < len(PREDICTORS):  # what choose_predictor may have chosen
        allowed = ("none", "lorenzo" if len(shape) >= 2 else "delta")
        predictor = PREDICTORS[pred] if PREDICTORS[pred] in allowed else allowed[1]
        axis = -1
    want_axis = axis % len(shape) if predictor == "delta" and shape else 0
    if itemsize != dtype.itemsize or ndim != len(shape) or pred >= len(PREDICTORS) or cod >= len(CODERS) \
            or (PREDICTORS[pred], CODERS[cod], ax) != (predictor, coder, want_axis):
        raise _corrupt(f"header (bytes per code {itemsize}, ndim {ndim}, predictor {pred}, coder {cod}, "
                       f"axis {ax}) does not match the array ({dtype}, ndim {len(shape)}, "
                       f"predictor={predictor!r}, coder={coder!r}, axis {want_axis})")
    pos = _PREFIX.size
    if n < pos + 8 * ndim + 8:
        raise _corrupt(f"truncated: {n} bytes, the header needs {pos + 8 * ndim + 8}")
    cshape = struct.unpack_from(f"<{ndim}Q", raw, pos)
    (npayload,) = _U64.unpack_from(raw, pos + 8 * ndim)
    pos += 8 * ndim + 8
    if tuple(cshape) != shape:
        raise _corrupt(f"shape={tuple(cshape)} does not match the chunk shape {shape}")
    if pos + npayload != n:
        raise _corrupt(f"{n} bytes, expected {pos + npayload} (header {pos} + payload {npayload})")
    payload = raw[pos:]
    count = int(np.prod(shape, dtype=np.int64))
    planes = np.empty((dtype.itemsize, count), np.uint8)
    if count == 0:
        if npayload:
            raise _corrupt(f"payload of {npayload} bytes for an empty chunk")
    elif coder == "zstd":
        declared = zstd_content_size(payload)
        if declared != planes.nbytes:
            raise _corrupt(f"zstd frame declares {declared} bytes, the chunk holds {planes.nbytes}")
        try:
            _zstd(DEFAULT_LEVEL).decode(payload, out=planes.reshape(-1))
        except Exception as e:  # corrupt frame: numcodecs raises RuntimeError or ValueError
            raise _corrupt(f"zstd: {e}") from None
    else:
        z = np.empty(count, np.uint16)
        try:
            progress = _pcodec().standalone.simple_decompress_into(payload.tobytes(), z)
        except (RuntimeError, TypeError, ValueError) as e:
            raise _corrupt(f"pcodec: {e}") from None
        if progress.n_processed != count or not progress.finished:
            raise _corrupt(f"pcodec stream holds a different number of values than the chunk's {count}")
        if dtype.itemsize == 1 and count and int(z.max()) > 0xFF:
            raise _corrupt("pcodec stream holds values above 255 for uint8 codes")
        planes[0] = z & 0xFF
        if dtype.itemsize == 2:
            planes[1] = z >> 8
    shape3, left, up = predict.view3(shape, predictor, axis)
    out = np.empty(shape, dtype)
    predict.decode(planes, left, up, out.reshape(shape3))
    return out


# ----------------------------------------------------------------------------- the codec


@dataclasses.dataclass(frozen=True)
class LosslessCodec(ArrayBytesCodec):
    """Zarr v3 array-to-bytes codec ``nquant.lossless`` for uint8 / uint16 codes (see the module
    docstring).

    Parameters
    ----------
    predictor : "lorenzo" (2-D, last two axes), "delta" (along ``axis``), "none" or "adaptive"
        (per chunk, Lorenzo or none: :func:`choose_predictor`)
    coder : "zstd" or "pcodec"
    level : int, zstd level (default 3; ignored by pcodec)
    axis : int, the axis of the delta predictor (default -1, the last)

    Examples
    --------
    >>> import numpy as np, zarr
    >>> from nquant.lossless import LosslessCodec
    >>> z = zarr.create_array(zarr.storage.MemoryStore(), shape=(64, 64), chunks=(32, 64),
    ...                       dtype="u2", serializer=LosslessCodec(), compressors=None)
    >>> q = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint16)
    >>> z[...] = q
    >>> bool((z[...] == q).all())
    True
    """

    is_fixed_size = False

    predictor: str = "lorenzo"
    coder: str = "zstd"
    level: int = DEFAULT_LEVEL
    axis: int = -1

    def __post_init__(self):
        if self.predictor not in PREDICTORS + (ADAPTIVE,):
            raise SchemeError(f"predictor={self.predictor!r} is invalid: expected one of "
                              f"{PREDICTORS + (ADAPTIVE,)}")
        if self.coder not in CODERS:
            raise SchemeError(f"coder={self.coder!r} is invalid: expected one of {CODERS}")
        for name in ("level", "axis"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not -32 <= v <= 32:
                raise SchemeError(f"{name}={v!r} is invalid: expected an integer in -32..32")
        if self.coder == "pcodec":
            _pcodec()

    @classmethod
    def from_dict(cls, data):
        """Codec from its ``zarr.json`` entry ``{"name": "nquant.lossless", "configuration": {...}}``."""
        if not isinstance(data, dict) or data.get("name") != CODEC_NAME:
            raise SchemeError(f"codec metadata={data!r} is invalid: expected name={CODEC_NAME!r}")
        conf = data.get("configuration", {})
        fields = {"predictor", "coder", "level", "axis"}
        if not isinstance(conf, dict) or set(conf) - fields:
            raise SchemeError(f"configuration={conf!r} of {CODEC_NAME} is invalid: expected keys "
                              f"among {sorted(fields)}")
        return cls(**conf)

    def to_dict(self):
        return {"name": CODEC_NAME, "configuration": {"predictor": self.predictor, "coder": self.coder,
                                                      "level": self.level, "axis": self.axis}}

    def validate(self, *, shape, dtype, chunk_grid):
        native = dtype.to_native_dtype()
        if native.newbyteorder("=") not in DTYPES:
            raise InputError(f"dtype={native} is not supported by the {CODEC_NAME} codec: expected "
                             "uint8 or uint16")
        if self.predictor == "delta" and shape and not -len(shape) <= self.axis < len(shape):
            raise InputError(f"axis={self.axis} is invalid for an array of {len(shape)} axes")

    def compute_encoded_size(self, input_byte_length, chunk_spec):
        raise NotImplementedError  # variable size

    def _encode_sync(self, chunk_array, chunk_spec):
        out = encode_chunk(chunk_array.as_numpy_array(), self.predictor, self.coder, self.level, self.axis)
        return chunk_spec.prototype.buffer.from_bytes(out)

    def _decode_sync(self, chunk_bytes, chunk_spec):
        dtype = chunk_spec.dtype.to_native_dtype()
        codes = decode_chunk(chunk_bytes.as_numpy_array(), dtype, chunk_spec.shape, self.predictor,
                             self.coder, self.axis)
        if codes.dtype != dtype:
            codes = codes.astype(dtype)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(codes)

    async def _encode_single(self, chunk_array, chunk_spec):
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)


register_codec(CODEC_NAME, LosslessCodec)
