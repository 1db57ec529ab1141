"""Quantize the weights of a ``.safetensors`` model file into one Zarr group."""

import fnmatch
import json
import os
import shutil

import numpy as np
import zarr

from nquant.api import dequantize, quantize
from nquant.errors import StoreError
from nquant.metrics import metrics
from nquant.safetensors_io import FLOATS, read_tensors, write_tensors
from nquant.store import ATTR, _partial_location, is_complete, save

MODEL_ATTR = "nquant_model"


def _selected(name, arr, tag, include, min_ndim):
    if tag not in FLOATS or arr.ndim < min_ndim:
        return False
    if include is None:
        return True
    patterns = [include] if isinstance(include, str) else list(include)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def quantize_safetensors(path, dst, scheme, *, include=None, min_ndim=2, write_dequantized=None,
                         overwrite=False):
    """Quantize every selected floating tensor of a ``.safetensors`` file.

    Parameters
    ----------
    path : str, the ``.safetensors`` file (float16, bfloat16, float32 and float64 tensors)
    dst : str, a local directory: one Zarr group holding one nquant group per tensor
        (named as the tensor), with per-tensor error figures in the root attributes
    scheme : Scheme, e.g. ``nq.NF4(double_quant=True)``
    include : str or list of str, optional, glob patterns of tensor names (default: all)
    min_ndim : int, only tensors with at least this many dimensions (default 2: matrices)
    write_dequantized : str, optional, also write a ``.safetensors`` file with every tensor,
        the quantized ones replaced by their dequantized values in their original dtype
    overwrite : bool

    Returns
    -------
    dict: per tensor ``{shape, dtype, bits_per_value, rmse, max_abs, sqnr_db, bias}`` and
    ``"total"``: ``{values, bits_per_value}`` over the quantized tensors.
    """
    if is_complete_model(dst) and not overwrite:
        raise StoreError(f"dst={dst!r} already holds a quantized model; pass overwrite=True to replace it")
    tensors = read_tensors(path)
    partial = _partial_location(dst)
    if os.path.exists(partial):
        shutil.rmtree(partial)
    root = zarr.open_group(partial, mode="w")
    report, out_tensors, total_bits, total_values = {}, {}, 0.0, 0
    for name, (arr, tag) in tensors.items():
        if not _selected(name, arr, tag, include, min_ndim):
            out_tensors[name] = (np.asarray(arr), tag)
            continue
        x = np.asarray(arr)
        q = quantize(x, scheme)
        x_hat = dequantize(q)
        m = metrics(x, x_hat)
        save(q, os.path.join(partial, name))
        report[name] = {"shape": list(x.shape), "dtype": tag, "bits_per_value": q.bits_per_value, **m}
        total_bits += q.bits_per_value * x.size
        total_values += x.size
        out_tensors[name] = (x_hat, tag)
    report["total"] = {"values": total_values,
                       "bits_per_value": total_bits / total_values if total_values else 0.0}
    root.attrs[MODEL_ATTR] = {"source": os.path.basename(os.fspath(path)),
                              "scheme": json.loads(scheme.to_json()), "tensors": report, "complete": True}
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.replace(partial, dst)
    if write_dequantized:
        write_tensors(write_dequantized, out_tensors, metadata={"nquant_scheme": scheme.to_json()})
    return report


def is_complete_model(dst):
    """Whether ``dst`` holds a complete quantized model group."""
    try:
        return bool(zarr.open_group(dst, mode="r").attrs.asdict().get(MODEL_ATTR, {}).get("complete"))
    except Exception:
        return False


def open_model(dst):
    """``{tensor name: QuantizedArray}`` of a quantized model group (lazy)."""
    from nquant.store import open as open_store

    root = zarr.open_group(dst, mode="r")
    meta = root.attrs.asdict().get(MODEL_ATTR)
    if not meta or not meta.get("complete"):
        raise StoreError(f"dst={dst!r} is not a complete nquant model group")
    return {name: open_store(os.path.join(dst, name)) for name in meta["tensors"] if name != "total"}


__all__ = ["quantize_safetensors", "open_model", "ATTR"]
