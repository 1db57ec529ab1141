"""Minimal reader and writer of the ``.safetensors`` format, float16 and bfloat16 included.

The format: 8 bytes (little-endian u64) giving the header length, a JSON header
mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the end of the header; an optional ``"__metadata__"``
entry), then the raw little-endian bytes.  NumPy has no bfloat16, so BF16
tensors are read as float32 (the 16 bits are the top half of a float32, exact)
and written back by rounding float32 to the nearest bfloat16, ties to even.
"""

import json
import os
import struct

import numpy as np

from nquant.errors import InputError

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
FLOATS = ("F64", "F32", "F16", "BF16")


def read_header(path):
    """``(header dict without __metadata__, metadata dict, data start offset)``."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError) as e:
        raise InputError(f"path={os.fspath(path)!r} is not a readable .safetensors file: {e}") from e
    meta = header.pop("__metadata__", {}) or {}
    return header, meta, 8 + n


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
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        tag = info["dtype"]
        if tag not in DTYPES:
            raise InputError(f"tensor {name!r} has dtype={tag!r}, which nquant does not read")
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
    tmp = os.fspath(path) + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)
