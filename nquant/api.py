"""Top-level entry points: ``quantize`` and ``dequantize``."""

import dataclasses
from typing import Any

import dask.array as da
import numpy as np

from nquant import chunked, labels
from nquant._device import is_cuda_array, resolve_device
from nquant.containers import QuantizedArray
from nquant.errors import InputError
from nquant.families.registry import family
from nquant.packing import pack_codes, unpack_codes
from nquant.schemes import Scheme
from nquant._types import ArrayInput, ArrayResult

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def check_input(x: ArrayInput, name: str = "x") -> Any:
    """``x`` as a NumPy array of a supported float dtype (InputError otherwise)."""
    a = np.asarray(x)
    if a.dtype not in FLOAT_DTYPES:
        raise InputError(f"{name} dtype={a.dtype} is not supported: expected float16, float32 or float64")
    return a


def fit_encode(fam, scheme, a):
    """Parameters and codes of the in-memory array ``a``: ``fam.fit`` then ``fam.encode``,
    or the family's one-pass ``fit_encode`` where it has one."""
    if fam.fit_encode is not None:
        return fam.fit_encode(scheme, a)
    params = fam.fit(scheme, a)
    return params, fam.encode(scheme, params, a)


def fit_encode_packed(fam, scheme, a):
    """:func:`fit_encode` with the codes row-packed (``pack_codes``), by the family's
    ``fit_encode_packed`` where it has one."""
    if fam.fit_encode_packed is not None:
        return fam.fit_encode_packed(scheme, a)
    params, codes = fit_encode(fam, scheme, a)
    return params, pack_codes(codes, scheme.bits)


def decode_packed(fam, q, dtype, out=None):
    """Values of the in-memory ``QuantizedArray`` ``q``, by the family's ``decode_packed``
    where it has one, else unpacked and decoded."""
    if fam.decode_packed is not None:
        return fam.decode_packed(q.scheme, q.side, q.codes, q.shape, dtype, out=out)
    return fam.decode(q.scheme, q.side, unpack_codes(q.codes, q.bits, q.shape), dtype, out=out)


def quantize(x: ArrayInput, scheme: Scheme, *, device: str = "cpu") -> QuantizedArray:
    """Quantize ``x`` with ``scheme``.

    Parameters
    ----------
    x : ndarray or dask.array.Array, float16, float32 or float64, any shape (0-d and
        empty included).  A Dask array gives a lazy, Dask-backed result: only the
        calibration statistics are computed here (none for block schemes).  An
        ``xarray.DataArray`` (NumPy- or Dask-backed) is quantized as its data, and its
        dims, coordinates, attributes and name come back with ``dequantize``.
    scheme : Scheme, e.g. ``nq.Uniform(bits=8)``
    device : "cpu" or "cuda"
        ``"cuda"`` (or an ``x`` in device memory: CuPy, numba device arrays) runs the CUDA
        twins of the kernels (:mod:`nquant.cuda.api`; ``DeviceError`` when numba-cuda or a
        GPU is missing); codes stay on the device for a device ``x``.

    Returns
    -------
    QuantizedArray
    """
    x, xr_labels = labels.unwrap(x)
    if resolve_device(x, device) == "cuda":
        from nquant.cuda.api import quantize as cuda_quantize

        return dataclasses.replace(cuda_quantize(x, scheme), labels=xr_labels)
    fam = family(scheme)
    if chunked.is_dask(x):
        x = chunked.prepare(fam, scheme, x)
        params = chunked.fit(fam, scheme, x)
        if fam.block_quantum(scheme) is not None:
            params = {**params, **chunked.blockwise_params(fam, scheme, x, params)}
        codes = chunked.pack(chunked.encode(fam, scheme, params, x), scheme.bits)
        return QuantizedArray(scheme=scheme, shape=x.shape, dtype=x.dtype, codes=codes,
                              bits=scheme.bits, side=params, chunks=x.chunks, labels=xr_labels)
    a = check_input(x)
    params, packed = fit_encode_packed(fam, scheme, a)
    return QuantizedArray(scheme=scheme, shape=a.shape, dtype=a.dtype, codes=packed, bits=scheme.bits,
                          side=chunked.public(params), labels=xr_labels)


def _float_dtype(dtype, name):
    """``dtype`` as a NumPy float dtype (float16, float32 or float64), else an InputError naming ``name``."""
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d is None or d not in FLOAT_DTYPES:
        shown = d if d is not None else repr(dtype)
        raise InputError(f"{name}={shown} is invalid: expected a floating dtype "
                         "(float16, float32 or float64)")
    return d


def _check_out(out, shape, dtype):
    """Refuse an ``out`` that decoding cannot write into (InputError naming ``out``)."""
    if not isinstance(out, np.ndarray):
        raise InputError(f"out of type {type(out).__name__} is invalid: expected a NumPy array")
    if out.shape != tuple(shape) or not out.flags.c_contiguous:
        raise InputError(f"out shape={out.shape} is invalid: expected a C-contiguous array of shape "
                         f"{tuple(shape)}")
    if not out.flags.writeable:
        raise InputError("out is read-only: expected a writeable array")
    _float_dtype(out.dtype, "out dtype")
    if dtype is not None and out.dtype != dtype:
        raise InputError(f"out dtype={out.dtype} does not match dtype={dtype}: pass one, or both equal")


def dequantize(q: QuantizedArray, *, dtype: "np.dtype[Any] | type | str | None" = None,
               out: np.ndarray | None = None) -> ArrayResult:
    """Reconstruct the values of a ``QuantizedArray``.

    Parameters
    ----------
    q : QuantizedArray
    dtype : floating dtype of the result (default: the original dtype); an integer dtype is
        an ``InputError`` (it would truncate)
    out : ndarray, optional, writeable, C-contiguous, floating, of shape ``q.shape`` (and of
        ``dtype`` when both are given): receives the values (cast to its dtype; a Dask-backed
        ``q`` is computed into it) and is returned

    Returns
    -------
    ndarray of shape ``q.shape`` (a lazy Dask array for a Dask-backed ``q``), inside an
    ``xarray.DataArray`` with the input's labels when ``q`` was made from one
    """
    if not isinstance(q, QuantizedArray):
        raise InputError(f"q of type {type(q).__name__} is invalid: expected a QuantizedArray")
    if dtype is not None:
        dtype = _float_dtype(dtype, "dtype")
    if is_cuda_array(q.codes):  # quantized on the device: decoded there
        from nquant.cuda.api import dequantize as cuda_dequantize

        return cuda_dequantize(q, dtype=dtype, out=out)
    fam = family(q.scheme)
    if out is not None:
        _check_out(out, q.shape, dtype)
    dtype = np.dtype(q.dtype if dtype is None else dtype)
    if q.is_dask:
        res = chunked.dequantize(fam, q, dtype)
        if out is not None:
            da.store(res, out, lock=False)
            res = out
        return labels.wrap(res, q.labels)
    res = decode_packed(fam, q, dtype, out=out)
    if out is not None and res is not out:  # computed elsewhere: copy (and cast) into out
        out[...] = res
        res = out
    return labels.wrap(res, q.labels)
