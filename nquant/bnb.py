"""bitsandbytes interop: NF4 quantization states to and from nquant, without torch.

bitsandbytes 0.50 keeps a 4-bit weight as a packed ``uint8`` tensor of shape
``((n + 1) // 2, 1)`` (the flat, C-ordered codes, two per byte, the first value in the
high nibble) plus a ``QuantState``; ``QuantState.as_dict(packed=False)`` gives::

    quant_type        "nf4"
    absmax            float32 (blocks,), or uint8 (blocks,) codes when double-quantized
    blocksize         int (32 .. 4096)
    quant_map         float32 (16,), the NF4 levels
    dtype             "float32" | "float16" | "bfloat16"  (of the original and the output)
    shape             tuple of int
    nested_absmax     float32 (ceil(blocks / 256),)      } only with double quantization
    nested_blocksize  256                                 } (compress_statistics=True): the
    nested_quant_map  float32 (256,), the dynamic map     } absmax minus nested_offset,
    nested_dtype      "float32"                           } 8-bit blockwise-quantized
    nested_offset     float (a float32 value: the mean absmax)

:func:`from_bnb_state` maps such a state (with NumPy arrays, or anything ``np.asarray``
converts, e.g. CPU tensors) and the packed weight onto an NF4 ``QuantizedArray``
(``Blockwise`` scheme: side arrays ``absmax``, or ``absmax_codes``, ``absmax2`` and
``offset``) that dequantizes bit-identically to ``bitsandbytes.functional.dequantize_4bit``;
:func:`to_bnb_state` / :func:`to_bnb` go the other way (``QuantState.from_dict`` takes the
dict once its arrays are made tensors).  Differences that do not change any decoded
value: bitsandbytes stores ``1e-38`` as the absmax of an all-zero partial last block where
nquant stores 0, and its ``nested_offset`` is a float32 ``torch.mean`` where nquant's own
offset is the exactly rounded mean (a state read from bitsandbytes keeps bitsandbytes'
offset).  NumPy has no bfloat16: a ``"bfloat16"`` state is read with dtype float32 (the
dequantized values before bitsandbytes' final rounding to bfloat16).
"""

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from nquant.containers import QuantizedArray
from nquant.errors import InputError
from nquant.families.base import widen
from nquant.codebooks.grids import NF4_BITSANDBYTES, dynamic_map
from nquant.kernels.blockwise import DOUBLE_QUANT_BLOCK
from nquant.packing import pack, pack_codes, packed_shape, unpack, unpack_codes
from nquant.schemes import NF4, Blockwise

__all__ = ["to_bnb_state", "to_bnb", "to_bnb_weight", "from_bnb_state", "BNB_BLOCKSIZES"]

PACKED_KEY = "quant_state.bitsandbytes__nf4"
BNB_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
_NF4_ZERO_CODE = 7
_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(np.float32)}


def _np(a, name):
    try:
        return np.asarray(a)
    except Exception as e:  # e.g. a GPU tensor
        raise InputError(f"state[{name!r}] cannot be read as a NumPy array ({e}); move it to the CPU") from e


def _check_nf4(scheme):
    if not isinstance(scheme, Blockwise) or len(scheme.codebook) != 16 or \
            not np.array_equal(np.asarray(scheme.codebook, np.float32), NF4_BITSANDBYTES):
        raise InputError(f"scheme={scheme!r} is not NF4: bitsandbytes states hold NF4 (nq.NF4(...)) only")
    if scheme.block_size not in BNB_BLOCKSIZES:
        raise InputError(f"block_size={scheme.block_size} is not one of bitsandbytes' block sizes "
                         f"{BNB_BLOCKSIZES}")


def _materialize(q):
    """Side arrays and codes of ``q`` as NumPy arrays (computes a Dask-backed ``q``)."""
    import dask

    side = {k: v for k, v in q.side.items()}
    lazy = {k: v for k, v in side.items() if hasattr(v, "compute")}
    codes = q.codes
    if lazy or hasattr(codes, "compute"):
        names = list(lazy)
        *vals, codes = dask.compute(*[lazy[k] for k in names], codes)
        side.update(zip(names, vals))
    return {k: np.asarray(v) for k, v in side.items()}, np.asarray(codes)


def _flat_codes(q, codes):
    """The flat MSB-first nibble stream of ``q``'s codes (bitsandbytes' packed layout)."""
    shape = tuple(q.shape)
    if len(shape) <= 1 or shape[-1] % 2 == 0:
        return codes.reshape(-1)  # row-packed rows of whole bytes: the same stream
    return pack(unpack_codes(codes, 4, shape).reshape(-1), 4)


def to_bnb_weight(q: QuantizedArray) -> np.ndarray:
    """bitsandbytes' packed weight of an NF4 ``QuantizedArray``: uint8 of shape ``((n + 1) // 2, 1)``.

    The flat C-ordered code stream, first value in the high nibble; an odd count ends with
    the code of 0 (7) in the last low nibble, as bitsandbytes pads (nquant's own stream pads
    with zero bits).
    """
    _check_nf4(q.scheme)
    _, codes = _materialize(q)
    flat = np.array(_flat_codes(q, codes), dtype=np.uint8, copy=True).reshape(-1)
    if q.size % 2:  # bitsandbytes pads an odd count with the value 0, whose NF4 code is 7
        flat[-1] = (flat[-1] & 0xF0) | _NF4_ZERO_CODE
    return flat.reshape(-1, 1)


def to_bnb_state(q: QuantizedArray, dtype: Any = None, packed: bool = False) -> dict[str, Any]:
    """bitsandbytes' ``QuantState.as_dict(packed)`` of an NF4 ``QuantizedArray``.

    Parameters
    ----------
    q : QuantizedArray with an NF4 scheme (``nq.NF4(block_size, double_quant)``, block size
        one of bitsandbytes' 32..4096), NumPy- or Dask-backed (then computed)
    dtype : str, optional
        ``"float32"``, ``"float16"`` or ``"bfloat16"``: the dtype bitsandbytes dequantizes to.
        Default: the one recorded by :func:`from_bnb_state` (``q.info["bnb_dtype"]``), else
        the original dtype (float64, which bitsandbytes lacks, as ``"float32"``).
    packed : bool
        ``False``: the plain dict.  ``True``: the safetensors-friendly form of
        ``as_dict(packed=True)``: the arrays, plus the other items as JSON in a uint8 array
        under ``"quant_state.bitsandbytes__nf4"`` (bitsandbytes' key order and encoding,
        byte for byte).

    Returns
    -------
    dict
        The keys of ``QuantState.as_dict``, in its order; arrays are NumPy arrays (make them
        tensors with ``torch.from_numpy`` before ``QuantState.from_dict``), the rest Python
        scalars.
    """
    _check_nf4(q.scheme)
    side, _ = _materialize(q)
    if dtype is None:
        dtype = q.info.get("bnb_dtype") or ("float16" if np.dtype(q.dtype) == np.float16 else "float32")
    if dtype not in _DTYPES:
        raise InputError(f"dtype={dtype!r} is invalid: expected one of {sorted(_DTYPES)}")
    nested = q.scheme.double_quant
    absmax = side["absmax_codes"].astype(np.uint8) if nested else widen(side["absmax"])
    state = {"quant_type": "nf4", "absmax": absmax, "blocksize": int(q.scheme.block_size),
             "quant_map": NF4_BITSANDBYTES.copy(), "dtype": dtype, "shape": tuple(int(s) for s in q.shape)}
    if nested:
        state.update({
            "nested_absmax": side["absmax2"].astype(np.float32),
            "nested_blocksize": DOUBLE_QUANT_BLOCK,
            "nested_quant_map": dynamic_map(),
            "nested_dtype": "float32",
            "nested_offset": float(np.float32(side["offset"].reshape(-1)[0])),
        })
    if not packed:
        return state
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    arrays[PACKED_KEY] = np.frombuffer(json.dumps(rest).encode("utf-8"), np.uint8).copy()
    return arrays


def _unpacked(state):
    """A state dict with prefixes (``"weight.absmax"``) stripped and the packed JSON item
    (``"quant_state.bitsandbytes__nf4"``) expanded, as ``QuantState.from_dict`` does."""
    out = {}
    for key, value in state.items():
        short = str(key).split(".")[-1]
        if short.startswith("bitsandbytes__"):
            try:
                out.update(json.loads(bytes(np.asarray(value, np.uint8).reshape(-1)).decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as e:
                raise InputError(f"state[{key!r}] is not bitsandbytes' packed JSON: {e}") from e
        else:
            out[short] = value
    return out


def to_bnb(q: QuantizedArray, dtype: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """``(packed_weight, state)``: :func:`to_bnb_weight` and :func:`to_bnb_state` of ``q``."""
    return to_bnb_weight(q), to_bnb_state(q, dtype=dtype)


def from_bnb_state(packed_weight: ArrayLike, state: Mapping[str, Any]) -> QuantizedArray:
    """An NF4 ``QuantizedArray`` from bitsandbytes' packed weight and ``QuantState.as_dict()``.

    Parameters
    ----------
    packed_weight : array_like of uint8, ``(n + 1) // 2`` bytes (any shape, e.g. ``((n + 1) // 2, 1)``):
        the flat C-ordered 4-bit codes, first value in the high nibble
    state : dict, ``QuantState.as_dict(packed=False)``, or ``as_dict(packed=True)`` (the
        safetensors form: the non-array items as JSON bytes under
        ``"quant_state.bitsandbytes__nf4"``), keys possibly prefixed (``"weight.absmax"``);
        arrays as NumPy arrays or CPU tensors

    Returns
    -------
    QuantizedArray
        NumPy-backed, scheme ``nq.NF4(blocksize, double_quant=nested)``; ``nq.dequantize``
        of it equals bitsandbytes' ``dequantize_4bit`` bit for bit (as float32 for a
        bfloat16 state).  ``info["bnb_dtype"]`` keeps the state's dtype for :func:`to_bnb_state`.

    Raises
    ------
    InputError
        A state nquant cannot represent: ``quant_type`` other than ``"nf4"``, a
        ``quant_map`` or ``nested_quant_map`` other than bitsandbytes' NF4 and dynamic maps,
        ``nested_blocksize`` other than 256, or sizes that do not match ``shape``.
    """
    state = _unpacked(state)
    missing = {"quant_type", "absmax", "blocksize", "quant_map", "dtype", "shape"} - set(state)
    if missing:
        raise InputError(f"state lacks {sorted(missing)}: expected QuantState.as_dict(packed=False)")
    if state["quant_type"] != "nf4":
        raise InputError(f"quant_type={state['quant_type']!r} is not supported: expected 'nf4'")
    if not np.array_equal(_np(state["quant_map"], "quant_map").astype(np.float32), NF4_BITSANDBYTES):
        raise InputError("state['quant_map'] is not bitsandbytes' NF4 map")
    dtype = state["dtype"]
    if dtype not in _DTYPES:
        raise InputError(f"dtype={dtype!r} is not supported: expected one of {sorted(_DTYPES)}")
    block = int(state["blocksize"])
    if block < 1:
        raise InputError(f"blocksize={block} is invalid")
    shape = tuple(int(s) for s in (state["shape"] if state["shape"] is not None else ()))
    n = int(np.prod(shape, dtype=np.int64))
    nb = -(-n // block)
    packed = _np(packed_weight, "packed_weight")
    if packed.dtype != np.uint8 or packed.size != (n + 1) // 2:
        raise InputError(f"packed_weight has dtype {packed.dtype} and {packed.size} values: expected "
                         f"{(n + 1) // 2} uint8 for shape {shape}")
    packed = np.ascontiguousarray(packed.reshape(-1))
    if len(shape) <= 1 or shape[-1] % 2 == 0:
        codes = packed.reshape(packed_shape(shape, 4)).copy()
        if n % 2:  # bitsandbytes' pad nibble (the code of 0); nquant pads with zero bits
            codes.reshape(-1)[-1] &= np.uint8(0xF0)
    else:
        codes = pack_codes(unpack(packed, 4, n).reshape(shape), 4)
    absmax = _np(state["absmax"], "absmax").reshape(-1)
    if absmax.size != nb:
        raise InputError(f"state['absmax'] has {absmax.size} values: expected {nb} blocks of {block}")
    nested = "nested_absmax" in state and state["nested_absmax"] is not None
    if nested:
        if int(state["nested_blocksize"]) != DOUBLE_QUANT_BLOCK:
            raise InputError(f"nested_blocksize={state['nested_blocksize']} is not supported: expected "
                             f"{DOUBLE_QUANT_BLOCK}")
        if not np.array_equal(_np(state["nested_quant_map"], "nested_quant_map").astype(np.float32),
                              dynamic_map()):
            raise InputError("state['nested_quant_map'] is not bitsandbytes' dynamic map")
        if state.get("nested_dtype", "float32") != "float32":
            raise InputError(f"nested_dtype={state['nested_dtype']!r} is not supported: expected 'float32'")
        absmax2 = _np(state["nested_absmax"], "nested_absmax").astype(np.float32).reshape(-1)
        if absmax2.size != -(-nb // DOUBLE_QUANT_BLOCK) or absmax.dtype != np.uint8:
            raise InputError("state['absmax'] (uint8 codes) and state['nested_absmax'] do not match "
                             f"{nb} blocks")
        side = {"absmax_codes": absmax.astype(np.uint8), "absmax2": absmax2,
                "offset": np.array([float(np.asarray(state["nested_offset"]))], np.float32)}
    else:
        side = {"absmax": absmax.astype(np.float32)}
    return QuantizedArray(scheme=NF4(block_size=block, double_quant=nested), shape=shape,
                          dtype=_DTYPES[dtype], codes=codes, bits=4, side=side, info={"bnb_dtype": dtype})
