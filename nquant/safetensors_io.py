"""Minimal reader and writer of the ``.safetensors`` format, float16 and bfloat16 included.

The format: 8 bytes (little-endian u64) giving the header length, a JSON header
mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the end of the header; an optional ``"__metadata__"``
entry), then the raw little-endian bytes.  NumPy has no bfloat16, so BF16
tensors are read as float32 (the 16 bits are the top half of a float32, exact)
and written back by rounding float32 to the nearest bfloat16, ties to even.
"""

import json
import math
import os
import struct

import numpy as np

from nquant import limits
from nquant.errors import InputError
from nquant.outputs import PARTIAL, clear_partial

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
FLOATS = ("F64", "F32", "F16", "BF16")


ITEMSIZES = {**{tag: dt.itemsize for tag, dt in DTYPES.items()},
             "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
"""Bytes per value of every dtype tag of the format (nquant reads those of ``DTYPES``)."""


def _bad(path, what):
    return InputError(f"path={path!r} is not a valid .safetensors file: {what}")


def read_header(path):
    """``(header dict without __metadata__, metadata dict, data start offset)``.

    The file is untrusted: the header length is bounded (``limits.MAX_HEADER_BYTES``) and
    must lie inside the file; each tensor entry must have a known ``dtype``, a ``shape`` of
    integers >= 0 and ``data_offsets`` ``[begin, end]`` inside the data section, of
    ``prod(shape) * itemsize`` bytes, not overlapping another tensor.  Anything else is an
    ``InputError`` naming the path, the tensor and what is wrong.
    """
    p = os.fspath(path)
    try:
        size = os.path.getsize(p)
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _bad(p, f"{size} bytes, fewer than the 8 of the header length")
            (n,) = struct.unpack("<Q", head)
            if n > limits.MAX_HEADER_BYTES:
                raise _bad(p, f"header length {n} exceeds the limit of {limits.MAX_HEADER_BYTES} bytes")
            if 8 + n > size:
                raise _bad(p, f"header length {n} runs past the end of the file ({size} bytes)")
            raw = f.read(n)
    except OSError as e:
        raise InputError(f"path={p!r} is not a readable .safetensors file: {e}") from None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _bad(p, f"its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise _bad(p, f"its header is a JSON {type(header).__name__}, expected an object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict):
        raise _bad(p, f"__metadata__ is a JSON {type(meta).__name__}, expected an object")
    _check_entries(p, header, size - 8 - n)
    return header, meta, 8 + n


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_entries(p, header, data_size):
    """Validate every tensor entry of a header against a data section of ``data_size`` bytes."""
    spans = []
    for name, info in header.items():
        if not isinstance(name, str):
            raise _bad(p, f"tensor name {name!r} is not a string")
        if not isinstance(info, dict):
            raise _bad(p, f"tensor {name!r} has entry {info!r:.60}, expected an object with dtype, "
                          "shape and data_offsets")
        tag = info.get("dtype")
        if not isinstance(tag, str) or tag not in ITEMSIZES:
            raise _bad(p, f"tensor {name!r} has unknown dtype={tag!r:.40} (known: {sorted(ITEMSIZES)})")
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise _bad(p, f"tensor {name!r} has shape={shape!r:.60}, expected a list of integers >= 0")
        offsets = info.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(v) for v in offsets)):
            raise _bad(p, f"tensor {name!r} has data_offsets={offsets!r:.60}, expected [begin, end] integers")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise _bad(p, f"tensor {name!r} has data_offsets={offsets}, outside the data section "
                          f"[0, {data_size}] (0 <= begin <= end required)")
        nbytes = math.prod(shape) * ITEMSIZES[tag]  # Python integers: no overflow
        if end - begin != nbytes:
            raise _bad(p, f"tensor {name!r} has data_offsets={offsets} ({end - begin} bytes), but "
                          f"shape={shape} of {tag} needs {nbytes} bytes")
        spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise _bad(p, f"tensors {n0!r} [{b0}, {e0}] and {n1!r} [{b1}, {e1}] overlap")


def bf16_to_float32(u16):
    """bfloat16 bit patterns (uint16) to float32 values (exact)."""
    return (np.asarray(u16, dtype=np.uint32) << 16).view(np.float32)


def float32_to_bf16(x):
    """float32 to bfloat16 bit patterns (uint16), round to nearest even; NaN stays NaN."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    return np.where(nan, ((b >> 16) | 0x40).astype(np.uint16), rounded)


def read_tensors(path):
    """Dict name -> (array, dtype tag): memory-mapped; BF16 returned as float32."""
    header, _, start = read_header(path)
    # read_header checked every span against the file's size; an empty file cannot be mapped
    mm = np.memmap(path, dtype=np.uint8, mode="r") if os.path.getsize(path) > start else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
        tag = info["dtype"]
        if tag not in DTYPES:
            raise InputError(f"path={os.fspath(path)!r}: tensor {name!r} has dtype={tag!r}, which nquant "
                             f"does not read (it reads {sorted(DTYPES)})")
        b, e = info["data_offsets"]
        raw = mm[start + b:start + e]
        arr = raw.view(DTYPES[tag]).reshape(info["shape"])
        out[name] = (bf16_to_float32(arr) if tag == "BF16" else arr, tag)
    return out


def write_tensors(path, tensors, metadata=None):
    """Write ``{name: (array, dtype tag)}`` to ``path`` (under a temporary name, then renamed)."""
    header, blobs, offset = {}, [], 0
    for name, (arr, tag) in tensors.items():
        if tag == "BF16":
            data = float32_to_bf16(arr)
        else:
            data = np.ascontiguousarray(arr, dtype=DTYPES[tag])
        raw = data.tobytes()
        header[name] = {"dtype": tag, "shape": list(np.shape(arr)), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = os.fspath(path) + PARTIAL
    clear_partial(tmp)  # a leftover of ours is replaced; anything else there is refused
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)
