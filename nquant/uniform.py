"""Uniform affine quantization: fit from mergeable statistics, encode, decode.

The protocol every scheme family follows (``DESIGN.md``)::

    stats  = partial(scheme, chunk, start, global_shape)   # per chunk
    stats  = merge(a, b)                                   # associative
    params = finalize(scheme, stats)                        # side arrays
    codes  = encode(scheme, params, chunk, start, global_shape)
    x_hat  = decode(scheme, params, codes, dtype, start, global_shape)

``encode`` and ``decode`` take an optional ``out`` that they may write in place;
:func:`nquant.dequantize` copies the result into ``out`` when they did not.  A
family may add one-pass paths for in-memory arrays, which ``nquant.api`` uses
where present: ``fit_encode(scheme, x) -> (params, codes)``,
``fit_encode_packed(scheme, x) -> (params, row-packed codes)`` and
``decode_packed(scheme, params, packed, shape, dtype, out)``.

``percentile`` and ``mse`` ranges need a second pass: :func:`needs_histogram`
says so, :func:`partial_histogram` / :func:`merge` collect it and
:func:`finalize` uses it.  NumPy inputs run the very same functions on one
chunk, so they get the same parameters as any chunking of a Dask array.

Side arrays (``params``): ``scale`` float32, and ``zero_point`` int32
(``zero_point="int"``) or ``offset`` float32 (``zero_point="float"``); one
value per tensor, per index of ``axis``, or per block.
"""

import warnings

import numba
import numpy as np

from nquant import _alloc, _layout
from nquant.errors import InputError, SchemeError
from nquant.kernels import affine, calibrate, stats
from nquant.kernels.rng import stream_key
from nquant.kernels.rounding import MODES

MSE_GRID = 64


# ----------------------------------------------------------------------------- layout


def n_groups(scheme, shape):
    """Number of parameter groups of ``scheme`` on an array of ``shape``."""
    if scheme.block_size is not None:
        n = int(np.prod(shape, dtype=np.int64))
        return -(-n // scheme.block_size)
    if scheme.axis is not None:
        return int(shape[norm_axis(scheme, len(shape))])
    return 1


def norm_axis(scheme, ndim):
    """``scheme.axis`` as a non-negative axis of an ``ndim``-d array."""
    axis = scheme.axis
    if axis is None:
        return None
    if not -ndim <= axis < ndim:
        raise InputError(f"axis={axis} is out of range for an array with ndim={ndim}")
    return axis % ndim


def layout(scheme, shape, start=None, global_shape=None, group_offset=0):
    """Row layout of a chunk for ``scheme`` (see ``nquant._layout``)."""
    gshape = shape if global_shape is None else global_shape
    return _layout.row_layout(shape, start, gshape, axis=norm_axis(scheme, len(gshape)),
                              block_size=scheme.block_size, group_offset=group_offset)


def compute_dtype(dtype):
    """float64 for float64 data, float32 otherwise (float16 is widened)."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _flat(chunk):
    chunk = np.ascontiguousarray(chunk, dtype=compute_dtype(chunk.dtype))
    return chunk.reshape(-1)


# ----------------------------------------------------------------------------- fit


def partial(scheme, chunk, start=None, global_shape=None):
    """Min/max statistics of one chunk.

    Returns
    -------
    dict with ``min``, ``max`` (float64, one per group: per tensor or axis
    index; for blocks, one per block of this chunk), ``n_nan`` (int).
    """
    shape = chunk.shape
    gshape = shape if global_shape is None else global_shape
    flat = _flat(chunk)
    lay = layout(scheme, shape, start, gshape)
    if scheme.block_size is not None:
        G = -(-flat.size // scheme.block_size)
    else:
        G = n_groups(scheme, gshape)
    mins = np.full(G, np.inf)
    maxs = np.full(G, -np.inf)
    n_nan = 0
    offset = lay.parts[0].row_group[0] if scheme.block_size is not None and flat.size else 0
    for part in lay.parts:
        x2d = part.view(flat)
        if part.R == 0 or part.L == 0:
            continue
        if lay.col_step:
            lo, hi, nn = stats.column_minmax(x2d, 4 * numba.get_num_threads())
            _merge_minmax(mins, maxs, np.arange(part.row_group[0], part.row_group[0] + part.L), lo, hi)
        else:
            lo, hi, nn = stats.row_minmax(x2d)
            _merge_minmax(mins, maxs, part.row_group - offset, lo, hi)
        n_nan += int(nn.sum())
    return {"min": mins, "max": maxs, "n_nan": n_nan}


def _merge_minmax(mins, maxs, groups, lo, hi):
    """``mins[g] = fmin(mins[g], lo)``, ``maxs[g] = fmax(maxs[g], hi)`` for each ``g`` of ``groups``
    (repeats allowed); a run of consecutive groups, the common case, as one slice."""
    if groups.size and groups[-1] - groups[0] == groups.size - 1 and (np.diff(groups) == 1).all():
        sl = slice(groups[0], groups[-1] + 1)
        np.fmin(mins[sl], lo, out=mins[sl])
        np.fmax(maxs[sl], hi, out=maxs[sl])
    else:
        np.fmin.at(mins, groups, lo)
        np.fmax.at(maxs, groups, hi)


def needs_histogram(scheme):
    """Whether :func:`finalize` needs the histogram pass (``percentile``, ``mse``)."""
    return scheme.range in ("percentile", "mse")


def partial_histogram(scheme, chunk, lo, hi, start=None, global_shape=None):
    """Histogram counts (G, bins) of one chunk over the fitted ``[lo, hi]`` per group."""
    shape = chunk.shape
    gshape = shape if global_shape is None else global_shape
    flat = _flat(chunk)
    lay = layout(scheme, shape, start, gshape)
    counts = np.zeros((len(lo), scheme.hist_bins), np.int64)
    for part in lay.parts:
        if part.R and part.L:
            counts += stats.histogram_rows(part.view(flat), part.row_group, lay.col_step,
                                           lo, hi, scheme.hist_bins, numba.get_num_threads())
    return {"counts": counts}


def merge(a, b):
    """Merge two partial statistics (associative and commutative)."""
    out = {}
    for k in a:
        if k == "min":
            out[k] = np.fmin(a[k], b[k])
        elif k == "max":
            out[k] = np.fmax(a[k], b[k])
        else:
            out[k] = a[k] + b[k]
    return out


def check_stats(scheme, st):
    """Raise ``InputError`` for NaN or infinite data as the scheme requires."""
    if st["n_nan"] and scheme.nan == "raise":
        raise InputError(f"x contains {st['n_nan']} NaN value(s); pass nan='propagate' in the "
                         "scheme to keep them as a reserved code")
    if (st["min"] == -np.inf).any() or (st["max"] == np.inf).any():
        raise InputError("x contains infinite values (inf); quantization needs finite data")


def clip_range(scheme, st, data=None):
    """The clipping range ``(rmin, rmax)`` per group, float64 arrays."""
    r = scheme.range
    G = len(st["min"])
    if isinstance(r, tuple):
        return np.full(G, r[0]), np.full(G, r[1])
    lo = np.where(np.isfinite(st["min"]), st["min"], 0.0)
    hi = np.where(np.isfinite(st["max"]), st["max"], 0.0)
    if r == "minmax":
        return lo, hi
    if r == "percentile_exact":
        if data is None:
            raise InputError("range='percentile_exact' needs the data in memory (NumPy input); "
                             "use range='percentile' for Dask arrays")
        return _exact_percentiles(scheme, data)
    counts = st["counts"]
    if r == "percentile":
        return calibrate.histogram_percentiles(counts, lo, hi, *scheme.percentile)
    qmin, qmax = scheme.qrange
    return calibrate.mse_search(counts, lo, hi, qmin, qmax, mse_mode(scheme), MSE_GRID)


def mse_mode(scheme):
    """The grid mode of ``calibrate.mse_search`` for ``scheme``."""
    if scheme.symmetric:
        return calibrate.MSE_SYMMETRIC
    return calibrate.MSE_FLOAT if scheme.zero_point == "float" else calibrate.MSE_INT


def _exact_percentiles(scheme, data):
    x = np.asarray(data, dtype=np.float64)
    axis = norm_axis(scheme, x.ndim)
    if axis is None:
        x = x.reshape(1, -1)
    else:
        x = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    if not x.size:
        return np.zeros(x.shape[0]), np.zeros(x.shape[0])
    with warnings.catch_warnings():  # a group of NaN only: "All-NaN slice", gets (0, 0) below
        warnings.simplefilter("ignore", RuntimeWarning)
        p = np.nanpercentile(x, scheme.percentile, axis=1)
    p = np.where(np.isnan(p), 0.0, p)
    return p[0], p[1]


F32_MAX = float(np.finfo(np.float32).max)
SCALE_MIN = np.float32(np.finfo(np.float32).tiny)


def _float32_side(scheme, name, v, rmin, rmax):
    """``v`` as float32; a value float32 cannot hold is refused (it would decode to inf/NaN)."""
    with np.errstate(over="ignore"):
        out = np.asarray(v, np.float64).astype(np.float32)
    if not np.isfinite(out).all():
        if isinstance(scheme.range, tuple):
            raise SchemeError(f"range={scheme.range} is invalid: its {name} exceeds the largest "
                              f"float32 ({F32_MAX:.6g}) that the side arrays hold")
        raise InputError(f"x spans [{rmin.min():.6g}, {rmax.max():.6g}]: its {name} exceeds the "
                         f"largest float32 ({F32_MAX:.6g}) that the side arrays hold")
    return out


def _scale32(scheme, scale, rmin, rmax):
    """float32 scale: 1 where zero, at least the smallest normal float32 (so that
    ``1 / scale`` is finite in float32 arithmetic)."""
    scale = _float32_side(scheme, "scale", np.where(scale > 0, scale, 1.0), rmin, rmax)
    return np.maximum(scale, SCALE_MIN)


def finalize(scheme, st, data=None):
    """Parameters (side arrays) from merged statistics.

    Returns
    -------
    dict: ``scale`` float32 (G,), and ``zero_point`` int32 (G,) or ``offset``
    float32 (G,).
    """
    if st is None:  # block schemes: no global parameters
        return {}
    check_stats(scheme, st)
    rmin, rmax = clip_range(scheme, st, data)
    qmin, qmax = scheme.qrange
    const = rmin == rmax
    with np.errstate(over="ignore"):
        if scheme.symmetric:
            amax = np.maximum(np.abs(rmin), np.abs(rmax))
            # a constant c is exact with scale |c| (code +-1)
            scale = _scale32(scheme, np.where(const, amax, amax / qmax), rmin, rmax)
            return {"scale": scale, "zero_point": np.zeros(len(scale), np.int32)}
        if scheme.zero_point == "float":
            scale = _scale32(scheme, (rmax - rmin) / (qmax - qmin), rmin, rmax)
            offset = _float32_side(scheme, "offset", rmin, rmin, rmax)
            # rounded up (float64 data), so that x = rmin gives t <= 0: code 0 in every
            # rounding mode (ceil of a tiny positive t would give code 1, a whole step off)
            offset = np.where(offset < rmin, np.nextafter(offset, np.float32(np.inf)), offset)
            return {"scale": scale, "offset": offset}
        lo = np.minimum(rmin, 0.0)
        hi = np.maximum(rmax, 0.0)
        scale = (hi - lo) / (qmax - qmin)
        # a constant c is exact with scale |c| (code 1 away from the zero point)
        scale = _scale32(scheme, np.where(const, np.abs(rmin), scale), rmin, rmax)
        zp = np.clip(np.rint(qmin - lo / scale.astype(np.float64)), qmin, qmax)
    return {"scale": scale, "zero_point": zp.astype(np.int32)}


def needs_stats(scheme):
    """Whether fitting needs a global statistics pass (block schemes do not)."""
    return scheme.block_size is None


def block_quantum(scheme):
    """Values a chunk must hold a whole number of (block schemes), or None."""
    return scheme.block_size


def side_dtypes(scheme):
    """Names and dtypes of the side arrays: ``scale`` and ``zero_point`` or ``offset``."""
    second = ("zero_point", np.int32) if scheme.symmetric or scheme.zero_point == "int" else ("offset", np.float32)
    return {"scale": np.dtype(np.float32), second[0]: np.dtype(second[1])}


def param_specs(scheme, n):
    """Per-block side arrays of a block scheme on ``n`` values: name -> (length, dtype)."""
    nb = -(-n // scheme.block_size)
    return {name: (nb, dtype) for name, dtype in side_dtypes(scheme).items()}


def chunk_params(scheme, chunk, start=None, global_shape=None, params=None):
    """Per-block parameters of one chunk of a block scheme (its blocks only)."""
    return finalize(scheme, partial(scheme, chunk, start=start, global_shape=global_shape))


def fit(scheme, x):
    """Parameters for an in-memory array, by the same mergeable statistics as Dask."""
    st = partial(scheme, x)
    if needs_histogram(scheme):
        st.update(partial_histogram(scheme, x, _lo(st), _hi(st)))
    return finalize(scheme, st, data=x)


def _lo(st):
    return np.where(np.isfinite(st["min"]), st["min"], 0.0)


def _hi(st):
    return np.where(np.isfinite(st["max"]), st["max"], 0.0)


histogram_range = (_lo, _hi)


# ----------------------------------------------------------------------------- encode / decode


def kernel_params(scheme, params, dtype):
    """Arrays the kernels take: ``scale, inv_scale, offset, c0`` in ``dtype``."""
    qmin, _ = scheme.qrange
    scale = params["scale"].astype(dtype)
    inv = (dtype.type(1) / scale).astype(dtype)
    if "offset" in params:
        offset = params["offset"].astype(dtype)
        c0 = np.zeros_like(scale)
    else:
        offset = np.zeros_like(scale)
        c0 = (params["zero_point"].astype(np.int64) - qmin).astype(dtype)
    return scale, inv, offset, c0


def code_limits(scheme):
    """``(hi, nan_code)``: largest code of a finite value, code of NaN or -1."""
    qmin, qmax = scheme.qrange
    hi = qmax - qmin
    return hi, (hi + 1 if scheme.nan == "propagate" else -1)


def encode(scheme, params, chunk, start=None, global_shape=None, group_offset=0, out=None):
    """Codes (uint8, ``q - qmin``) of a chunk, shape of the chunk.

    ``group_offset`` is the first group of ``params`` (per-block parameters
    sliced for this chunk).  Raises ``InputError`` on NaN/inf unless the scheme
    reserves a NaN code.
    """
    shape = chunk.shape
    flat = _flat(chunk)
    dtype = flat.dtype
    _, inv, offset, c0 = kernel_params(scheme, params, dtype)
    hi, nan_code = code_limits(scheme)
    lay = layout(scheme, shape, start, global_shape, group_offset)
    codes = _alloc.empty(flat.size, np.uint8) if out is None else out.reshape(-1)
    # always a uint64 (a Python int key >= 2**63 cannot use a kernel compiled for int64);
    # any integer seed works, taken modulo 2**64
    key = np.uint64(stream_key(np.uint64(scheme.seed % (1 << 64))))
    mode = MODES[scheme.rounding]
    bad = 0
    for part in lay.parts:
        if part.R and part.L:
            bad += affine.quantize_affine(part.view(flat), part.row_index, part.row_group,
                                          lay.col_step, inv, offset, c0, hi, nan_code, mode,
                                          key, part.view(codes))
    if bad:
        raise InputError(f"x contains {bad} non-finite value(s) (NaN or inf) that nan={scheme.nan!r} "
                         "does not allow")
    return codes.reshape(shape)


def decode(scheme, params, codes, dtype=np.float32, start=None, global_shape=None,
           group_offset=0, out=None):
    """Dequantized values of a chunk of codes, in ``dtype`` (float16 via float32)."""
    shape = codes.shape
    dtype = np.dtype(dtype)
    cdtype = compute_dtype(dtype)
    scale, _, offset, c0 = kernel_params(scheme, params, cdtype)
    _, nan_code = code_limits(scheme)
    lay = layout(scheme, shape, start, global_shape, group_offset)
    flat_codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if out is not None and out.dtype == cdtype:
        res = out.reshape(-1)
    else:
        res = _alloc.empty(flat_codes.size, cdtype, fault_in=False)
    for part in lay.parts:
        if part.R and part.L:
            affine.dequantize_affine(part.view(flat_codes), part.row_group, lay.col_step, scale,
                                     offset, c0, nan_code, part.view(res))
    res = res.reshape(shape)
    if res.dtype != dtype:
        res = res.astype(dtype)
    if out is None:
        return res
    if not np.may_share_memory(res, out):  # computed elsewhere: copy (and cast) into out
        out[...] = res
    return out
