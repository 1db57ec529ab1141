"""``quantize`` / ``dequantize`` on a CUDA device (``nquant.quantize(x, scheme, device="cuda")``).

Reached through :func:`nquant.quantize` when ``device="cuda"`` or when ``x`` is in device
memory (CuPy, numba device arrays).  Schemes: ``Uniform`` (per tensor, axis or block; every
rounding mode; ``range="minmax"`` or an explicit ``(rmin, rmax)``; compact side arrays:
``scale_dtype``, packed zero points, ``double_quant``), ``Codebook``,
``Blockwise`` / ``NF4`` (double quantization included).  Parameters are fitted from the
same statistics as on the CPU (min/max per group, the exact mean absmax), encoded by the
CUDA twins of the CPU kernels, and packed on the device, so the ``QuantizedArray`` equals
the CPU's: same codes, same side arrays.

Where results live: for a host (NumPy) ``x`` everything comes back to the host, exactly as
from the CPU path.  For a device ``x`` the codes and the per-block side arrays (``absmax``,
``absmax_codes``, ``absmax2``) stay on the device (numba device arrays, or CuPy arrays for
a CuPy input); parameters fitted on the host from a few statistics (``scale``,
``zero_point``, ``offset`` of uniform schemes, ``codebook``) are NumPy.
:func:`dequantize` of such a ``QuantizedArray`` decodes on the device and returns a device
array.
"""

import numpy as np
from numba import cuda

from nquant import _layout
from nquant.containers import QuantizedArray
from nquant.cuda import affine, bitpack, blockwise, codebook1d
from nquant.cuda._launch import as_device, is_device, kernel, launch
from nquant.errors import DeviceError, InputError
from nquant.families import blockwise as _bw_family
from nquant.families import codebook as _cb_family
from nquant.families import uniform as _uniform
from nquant.families.registry import family, registered
from nquant.kernels import blockwise as _cpu_blockwise
from nquant.kernels.rng import seed_key
from nquant.kernels.rounding import MODES
from nquant.packing import code_dtype, pack_codes, packed_shape

__all__ = ["dequantize", "quantize"]

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


# ----------------------------------------------------------------------------- helpers


@kernel
def _cast(src, dst):
    n = dst.shape[0]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        dst[i] = src[i]
        i += stride


@kernel
def _count_nonfinite(a, count):
    n = a.shape[0]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    nb = 0
    while i < n:
        v = a[i]
        if not (v - v == 0):
            nb += 1
        i += stride
    if nb:
        cuda.atomic.add(count, 0, nb)


@kernel
def _cast_clip(src, dst, big):
    n = dst.shape[0]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        v = src[i]
        if v > big:
            v = big
        elif v < -big:
            v = -big
        dst[i] = v
        i += stride


def _nonfinite(d_a):
    count = cuda.to_device(np.zeros(1, np.int64))
    launch(_count_nonfinite, d_a.shape[0], d_a, count)
    return int(count.copy_to_host()[0])


def _as_dtype(d_flat, dtype):
    """A 1-D device array converted to ``dtype`` on the device (itself when it has it)."""
    if d_flat.dtype == dtype:
        return d_flat
    out = cuda.device_array(d_flat.shape[0], dtype)
    launch(_cast, d_flat.shape[0], d_flat, out)
    return out


def _decoded_as_dtype(d_flat, dtype):
    """Decoded values as ``dtype`` on the device; a narrowing cast (float32 to float16) first
    clips to the largest finite value of ``dtype``, as ``nquant.limits.finite_cast`` does."""
    dtype = np.dtype(dtype)
    if d_flat.dtype == dtype or dtype.itemsize >= d_flat.dtype.itemsize:
        return _as_dtype(d_flat, dtype)
    out = cuda.device_array(d_flat.shape[0], dtype)
    launch(_cast_clip, d_flat.shape[0], d_flat, out, d_flat.dtype.type(np.finfo(dtype).max))
    return out


def _device_input(x):
    """``(flat device array, shape, dtype, on_device)`` of the input."""
    if is_device(x):
        d = as_device(x)
        dtype = np.dtype(d.dtype)
        if dtype not in FLOAT_DTYPES:
            raise InputError(f"x dtype={dtype} is not supported: expected float16, float32 or float64")
        if not d.is_c_contiguous():
            raise InputError(f"x of shape {tuple(d.shape)} on the device is not C-contiguous: "
                             "pass a C-contiguous copy")
        return d.reshape(int(d.size)), tuple(d.shape), dtype, True
    a = np.asarray(x)
    if a.dtype not in FLOAT_DTYPES:
        raise InputError(f"x dtype={a.dtype} is not supported: expected float16, float32 or float64")
    return cuda.to_device(np.ascontiguousarray(a).reshape(-1)), a.shape, a.dtype, False


def _like_input(d, x):
    """A device result in the input's array type: CuPy for CuPy, numba device arrays otherwise."""
    if getattr(type(x), "__cuda_ndarray__", False) or not hasattr(x, "__cuda_array_interface__"):
        return d
    try:
        import cupy
    except ImportError:
        return d
    return cupy.asarray(d) if isinstance(x, cupy.ndarray) else d


def _pack(d_codes, shape, bits):
    """Row-packed codes on the device (``nquant.packing.pack_codes``'s layout)."""
    pshape = packed_shape(shape, bits)
    if bits >= 8:  # stored as they are (uint16 for 9..16 bits)
        return d_codes.reshape(pshape)
    last = (tuple(shape) or (1,))[-1]
    rows = int(d_codes.shape[0]) // last
    out = cuda.device_array(pshape, np.uint8)
    bitpack.pack_rows(d_codes.reshape(rows, last), bits, out.reshape(rows, pshape[-1]))
    return out


def _unpack(codes, bits, shape):
    """Flat codes on the device from row-packed ``codes`` (``unpack_codes``'s inverse)."""
    d = as_device(codes, code_dtype(bits))
    n = int(np.prod(shape, dtype=np.int64))
    if bits >= 8:
        return d.reshape(n)
    last = (tuple(shape) or (1,))[-1]
    rows = n // last
    out = cuda.device_array(n, np.uint8)
    bitpack.unpack_rows(d.reshape(rows, int(d.size) // rows), bits, last, out.reshape(rows, last))
    return out


# ----------------------------------------------------------------------------- families


def fit_encode_uniform(scheme, d, shape, dtype):
    if _uniform.needs_histogram(scheme) or scheme.range == "percentile_exact":
        raise DeviceError(f"range={scheme.range!r} is not available with device='cuda': use "
                          "range='minmax' or (rmin, rmax), or device='cpu'")
    if scheme.fill_value is not None:
        raise DeviceError(f"fill_value={scheme.fill_value!r} is not available with device='cuda': use "
                          "device='cpu'")
    cdt = _uniform.compute_dtype(dtype)
    d = _as_dtype(d, cdt)
    lay = _uniform.layout(scheme, shape)
    n = int(d.shape[0])
    G = -(-n // scheme.block_size) if scheme.block_size is not None else _uniform.n_groups(scheme, shape)
    mins = cuda.to_device(np.full(G, np.inf))
    maxs = cuda.to_device(np.full(G, -np.inf))
    n_nan = 0
    for part in lay.parts:
        if part.R and part.L:
            n_nan += affine.group_minmax(part.view(d), part.row_group, lay.col_step, mins, maxs)
    st = {"min": mins.copy_to_host(), "max": maxs.copy_to_host(), "n_nan": n_nan,
          "rank": _uniform.DTYPE_RANK.get(np.dtype(dtype), 1)}
    params = _uniform.params_from_stats(scheme, st)
    _, inv, offset, c0 = _uniform.kernel_params(scheme, params, cdt)
    hi, nan_code = _uniform.code_limits(scheme)
    key = seed_key(scheme.seed)
    mode = MODES[scheme.rounding]
    d_inv, d_off, d_c0 = cuda.to_device(inv), cuda.to_device(offset), cuda.to_device(c0)
    codes = cuda.device_array(n, code_dtype(scheme.bits))
    bad = 0
    for part in lay.parts:
        if part.R and part.L:
            bad += affine.quantize_affine(part.view(d), part.row_index, part.row_group, lay.col_step, d_inv,
                                          d_off, d_c0, hi, nan_code, mode, key, part.view(codes))
    if bad:
        raise InputError(f"x contains {bad} non-finite value(s) (NaN or inf) that nan={scheme.nan!r} "
                         "does not allow")
    return codes, params


def fit_encode_codebook(scheme, d, shape, dtype):
    cdt = _uniform.compute_dtype(dtype)
    d = _as_dtype(d, cdt)
    params = _cb_family.finalize(scheme)
    levels = _cb_family._levels(scheme, params, cdt)
    lay = _layout.row_layout(shape)
    codes = cuda.device_array(int(d.shape[0]), np.uint8)
    key = seed_key(scheme.seed)
    bad = 0
    for part in lay.parts:
        if part.R and part.L:
            bad += codebook1d.quantize_sorted(part.view(d), part.row_index, levels, MODES[scheme.rounding],
                                              key, part.view(codes))
    if bad:
        raise InputError(f"x contains {bad} non-finite value(s) (NaN or inf): a codebook needs finite data")
    return codes, params


def fit_encode_blockwise(scheme, d, shape, dtype):
    d = _as_dtype(d, np.dtype(np.float32))
    n = int(d.shape[0])
    bs = scheme.block_size
    absmax = cuda.device_array(-(-n // bs), np.float32)
    blockwise.blockwise_absmax(d, bs, absmax)
    if _nonfinite(absmax):
        raise InputError("x contains NaN or infinite values: blockwise quantization needs finite data")
    levels = np.asarray(scheme.codebook, dtype=np.float32)
    # the largest absmax decides whether decoding could leave the float32 range (as on the CPU)
    top = np.array([absmax.copy_to_host().max() if n else 0.0], np.float32)
    _bw_family.check_products(scheme, {"absmax": top})
    codes = cuda.device_array(n, np.uint8)
    blockwise.quantize_blockwise(d, absmax, bs, levels, codes)
    if not scheme.double_quant:
        return codes, {"absmax": absmax}
    offset = _cpu_blockwise.exact_mean(blockwise.exact_sum_partial(absmax))
    acodes, absmax2, _ = blockwise.double_quantize(absmax, offset=offset)
    if float(top[0]) > _bw_family.DQ_NEAR_LIMIT:  # rare: the codes are lowered on the host
        h_codes, h_absmax2 = acodes.copy_to_host(), absmax2.copy_to_host()
        _bw_family.finite_absmax2(h_codes, h_absmax2, offset)
        acodes, absmax2 = cuda.to_device(h_codes), cuda.to_device(h_absmax2)
    return codes, {"offset": np.array([offset], np.float32), "absmax_codes": acodes, "absmax2": absmax2}


def decode_uniform(q, codes, n, cdt):
    """Values (device, ``cdt``) of the ``n`` unpacked device ``codes`` of a uniform ``q``."""
    scheme = q.scheme
    if scheme.fill_value is not None:
        raise DeviceError(f"fill_value={scheme.fill_value!r} is not available with device='cuda': use "
                          "device='cpu'")
    res = cuda.device_array(n, cdt)
    scale, _, offset, c0 = _uniform.kernel_params(scheme, q.side, cdt)
    _, nan_code = _uniform.code_limits(scheme)
    lay = _uniform.layout(scheme, tuple(q.shape))
    d_s, d_o, d_c = cuda.to_device(scale), cuda.to_device(offset), cuda.to_device(c0)
    for part in lay.parts:
        if part.R and part.L:
            affine.dequantize_affine(part.view(codes), part.row_group, lay.col_step, d_s, d_o, d_c,
                                     nan_code, part.view(res))
    return res


def decode_codebook(q, codes, n, cdt):
    """Values (device, ``cdt``) of the ``n`` unpacked device ``codes`` of a codebook ``q``."""
    res = cuda.device_array(n, cdt)
    levels = _cb_family._levels(q.scheme, q.side, cdt)
    codebook1d.dequantize_table(codes.reshape(1, n), levels, res.reshape(1, n))
    return res


def decode_blockwise(q, codes, n, cdt):
    """Values (device, float32) of the ``n`` unpacked device ``codes`` of a blockwise ``q``."""
    res = cuda.device_array(n, np.float32)
    side = q.side
    if "absmax" in side:
        absmax = as_device(side["absmax"], np.float32)
    else:
        offset = np.float32(np.asarray(side["offset"]).reshape(-1)[0])
        absmax = blockwise.double_dequantize(as_device(side["absmax_codes"], np.uint8),
                                             as_device(side["absmax2"], np.float32), offset)
    blockwise.dequantize_blockwise(codes, absmax, q.scheme.block_size,
                                   np.asarray(q.scheme.codebook, np.float32), res)
    return res


def _twin(scheme):
    """``(fit_encode, decode)`` of the scheme's family's CUDA path (:class:`CudaTwin` names
    functions of this module); ``DeviceError`` when it has none."""
    fam = family(scheme)  # SchemeError for what is not a scheme
    twin = fam.cuda
    why = None if fam.cuda_refuses is None else fam.cuda_refuses(scheme)
    if why is not None:
        raise DeviceError(f"scheme {why} has no CUDA implementation: use device='cpu'")
    if twin is None:
        have = sorted(cls.type for cls, fam in registered().items() if fam.cuda is not None)
        raise DeviceError(f"scheme type={scheme.type!r} has no CUDA implementation: use device='cpu' "
                          f"(CUDA: {', '.join(have)})")
    return globals()[twin.fit_encode], globals()[twin.decode]


# ----------------------------------------------------------------------------- entry points


def quantize(x, scheme):
    """Quantize ``x`` with ``scheme`` on the CUDA device.

    Parameters
    ----------
    x : ndarray, or a C-contiguous device array (numba, CuPy), float16, float32 or float64
    scheme : a scheme whose family has a CUDA path (``Family.cuda``): Uniform, Codebook,
        Blockwise or NF4

    Returns
    -------
    QuantizedArray
        Codes and per-block side arrays on the device for a device ``x``, NumPy otherwise.
    """
    fit_encode, _ = _twin(scheme)
    if type(x).__module__.split(".")[0] == "dask":
        raise DeviceError("device='cuda' with a Dask array is not supported yet: quantize its chunks "
                          "(CuPy or numba device arrays) one by one, or use device='cpu'")
    d, shape, dtype, on_device = _device_input(x)
    if d.shape[0] == 0:  # nothing to launch: the CPU family gives the (empty) result
        a = np.empty(shape, dtype)
        fam = family(scheme)
        params = fam.fit(scheme, a)
        packed = pack_codes(fam.encode(scheme, params, a), scheme.bits)
        on_device = False
    else:
        codes, params = fit_encode(scheme, d, shape, dtype)
        packed = _pack(codes, shape, scheme.bits)
    side = {k: v for k, v in params.items() if not k.startswith("_")}
    if on_device:
        packed = _like_input(packed, x)
        side = {k: (_like_input(v, x) if is_device(v) else v) for k, v in side.items()}
    else:
        packed = packed.copy_to_host() if is_device(packed) else packed
        side = {k: (v.copy_to_host() if is_device(v) else v) for k, v in side.items()}
    return QuantizedArray(scheme=scheme, shape=tuple(shape), dtype=dtype, codes=packed, bits=scheme.bits,
                          side=side)


def dequantize(q, *, dtype=None, out=None):
    """Decode a ``QuantizedArray`` whose codes are on the device, on the device.

    Parameters
    ----------
    q : QuantizedArray with device codes (from :func:`quantize` of a device array)
    dtype : dtype of the result (default: the original dtype)
    out : device array of shape ``q.shape``, optional

    Returns
    -------
    device array of shape ``q.shape`` (CuPy when ``q.codes`` is CuPy)
    """
    _, decode = _twin(q.scheme)
    dtype = np.dtype(q.dtype if dtype is None else dtype)
    shape = tuple(q.shape)
    n = int(np.prod(shape, dtype=np.int64))
    cdt = _uniform.compute_dtype(dtype)
    if n:
        res = decode(q, _unpack(q.codes, q.bits, shape), n, cdt)
    else:
        res = cuda.device_array(0, cdt)
    res = _decoded_as_dtype(res, dtype)
    if out is None:
        return _like_input(res.reshape(shape), q.codes)
    if not is_device(out):
        if tuple(out.shape) != shape or not out.flags.c_contiguous:
            raise InputError(f"out shape={out.shape} is invalid: expected a C-contiguous array of "
                             f"shape {shape}")
        out[...] = res.copy_to_host().reshape(shape)
        return out
    d_out = as_device(out)
    if tuple(d_out.shape) != shape or np.dtype(d_out.dtype) != dtype or not d_out.is_c_contiguous():
        raise InputError(f"out shape={tuple(d_out.shape)} dtype={d_out.dtype} is invalid: expected a "
                         f"C-contiguous device array of shape {shape} and dtype {dtype}")
    launch(_cast, n, res, d_out.reshape(n))
    return out
