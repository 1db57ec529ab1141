"""Uniform affine quantization: fit from mergeable statistics, encode, decode.

The family protocol is declared in :mod:`nquant.families.base`; this module's
:data:`FAMILY` lists its hooks.

``percentile`` and ``mse`` ranges need a second pass: :func:`needs_histogram`
says so, :func:`partial_histogram` / :func:`merge` collect it and
:func:`finalize` uses it.  NumPy inputs run the very same functions on one
chunk, so they get the same parameters as any chunking of a Dask array.

Side arrays (``params``): ``scale`` float32, and ``zero_point`` int32
(``zero_point="int"``) or ``offset`` float32 (``zero_point="float"``); one
value per tensor, per index of ``axis``, or per block.  Compact side information
(:func:`side_dtypes`, :func:`param_specs`): ``scale`` and ``offset`` in ``scale_dtype`` (float16, or bfloat16 as
uint16 bits); with ``zero_point_storage="packed"`` no zero point for symmetric schemes and
``bits``-bit ``zero_point_codes`` otherwise; with ``double_quant`` the block scales as 8-bit
``scale_codes``, ``scale2`` per 256 blocks and ``scale_offset`` (:mod:`nquant.families.blockwise`).
Error-bounded schemes store ``offset`` in float64 (the group's minimum, exactly).  Codes are
uint8 for 1..8 bits and uint16 for 9..16 bits.

Error-bounded schemes (``abs_error`` / ``rel_error``) choose the step in
:func:`finalize` from a worst-case bound of the rounding of the encoder and
the decoder (:func:`bounded_params`).
"""

import functools
import math
import warnings

import numba
import numpy as np

from nquant import _alloc, _layout, limits
from nquant.errors import InputError, NQuantError, SchemeError, StoreError
from nquant.families import base
from nquant.families import blockwise as bw
from nquant.kernels import affine, calibrate, stats
from nquant.kernels import blockwise as kb
from nquant.kernels.rng import seed_key
from nquant.kernels.rounding import MODES
from nquant.packing import code_dtype, pack_codes, unpack_codes

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


def fill_mask(scheme, chunk, flat):
    """Where ``flat`` (the chunk in its compute dtype) holds ``scheme.fill_value`` as the
    chunk's own dtype spells it; None without a fill value or when no value is one."""
    if scheme.fill_value is None:
        return None
    fill = flat.dtype.type(np.asarray(scheme.fill_value).astype(chunk.dtype))
    mask = flat == fill
    return mask if mask.any() else None


#: Rank of a dtype's precision (the coarsest of the chunks wins when statistics merge).
DTYPE_RANK = {np.dtype(np.float64): 0, np.dtype(np.float32): 1, np.dtype(np.float16): 2}


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
    fills = fill_mask(scheme, chunk, flat)
    if fills is not None:  # fill values are not data: left out of the range, as NaN
        flat = np.where(fills, flat.dtype.type(np.nan), flat)
    lay = layout(scheme, shape, start, gshape)
    if scheme.block_size is not None:
        G = -(-flat.size // scheme.block_size)
    else:
        G = n_groups(scheme, gshape)
        check_histogram(scheme, G)  # before the first pass, not after it
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
    if fills is not None:
        n_nan -= int(fills.sum())
    return {"min": mins, "max": maxs, "n_nan": n_nan, "rank": DTYPE_RANK.get(np.dtype(chunk.dtype), 1)}


def _merge_minmax(mins, maxs, groups, lo, hi):
    """``mins[g] = fmin(mins[g], lo)``, ``maxs[g] = fmax(maxs[g], hi)`` for each ``g`` of ``groups``
    (repeats allowed); a run of consecutive groups, the common case, as one slice."""
    n = groups.size
    if n and groups[-1] - groups[0] == n - 1 and (n == 1 or (np.diff(groups) == 1).all()):
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
    check_histogram(scheme, len(lo))
    flat = _flat(chunk)
    fills = fill_mask(scheme, chunk, flat)
    if fills is not None:
        flat = np.where(fills, flat.dtype.type(np.nan), flat)
    lay = layout(scheme, shape, start, gshape)
    counts = np.zeros((len(lo), scheme.hist_bins), np.int64)
    for part in lay.parts:
        if part.R and part.L:
            counts += stats.histogram_rows(part.view(flat), part.row_group, lay.col_step,
                                           lo, hi, scheme.hist_bins, numba.get_num_threads())
    return {"counts": counts}


def check_histogram(scheme, groups):
    """``SchemeError`` before a ``(groups, bins)`` histogram (and the kernel's per-thread
    copies) that would not fit in memory is allocated."""
    if needs_histogram(scheme):
        nbytes = 8 * groups * scheme.hist_bins * (1 + numba.get_num_threads())
        limits.check_memory("bins", scheme.hist_bins, nbytes)


def merge(a, b):
    """Merge two partial statistics (associative and commutative)."""
    out = {}
    for k in a:
        if k == "min":
            out[k] = np.fmin(a[k], b[k])
        elif k in ("max", "rank"):
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
        n = x.shape[axis]  # reshape(0, -1) is ambiguous: the row length is spelled out
        x = np.moveaxis(x, axis, 0).reshape(n, x.size // n if n else 0)
    if not x.size:
        return np.zeros(x.shape[0]), np.zeros(x.shape[0])
    with warnings.catch_warnings():  # a group of NaN only: "All-NaN slice", gets (0, 0) below
        warnings.simplefilter("ignore", RuntimeWarning)
        p = np.nanpercentile(x, scheme.percentile, axis=1)
    p = np.where(np.isnan(p), 0.0, p)
    return p[0], p[1]


F32_MAX = limits.F32_MAX
SCALE_MIN = np.float32(np.finfo(np.float32).tiny)
_MARGIN = 1.0 - 2.0 ** -20
"""Float-offset grids end this fraction of the float32 range inside it (rounding room)."""


def _check_range(scheme, rmin, rmax):
    """Refuse a clipping range beyond float32 (float64 data): the side arrays are float32."""
    if isinstance(scheme.range, tuple):
        limits.check_float32_range(f"range={scheme.range}", rmin, rmax, SchemeError)
    name = "x" if scheme.range == "minmax" else f"the clipping range of x (range={scheme.range!r})"
    limits.check_float32_range(name, rmin, rmax, InputError)


def _scale32(scale):
    """float32 scale: 1 where zero, at most the largest float32, at least the smallest
    normal float32 (so that ``1 / scale`` is finite in float32 arithmetic)."""
    scale = np.minimum(np.where(scale > 0, scale, 1.0), F32_MAX).astype(np.float32)
    return np.maximum(scale, SCALE_MIN)


def _steps(scheme):
    """Number of steps ``qmax - qmin`` of the code range."""
    qmin, qmax = scheme.qrange
    return qmax - qmin


def _reachable(scheme, params, rmin, rmax):
    """``(k_lo, k_hi, c0, off)``: per group the lowest and highest code that encoding values
    of ``[rmin, rmax]`` can give in any rounding mode (float64), and the decoder's form
    ``x_hat = (code - c0) * scale + off`` before any recentring (float64)."""
    scale = params["scale"].astype(np.float64)
    if "offset" in params:
        off = params["offset"].astype(np.float64)
        c0 = np.zeros_like(scale)
    else:
        off = np.zeros_like(scale)
        c0 = (params["zero_point"].astype(np.int64) - scheme.qrange[0]).astype(np.float64)
    n = _steps(scheme)
    k_lo = np.clip(np.floor((rmin - off) / scale + c0), 0, n)
    k_hi = np.clip(np.ceil((rmax - off) / scale + c0), 0, n)
    return k_lo, k_hi, c0, off


def _decodes_finite(scheme, params, k_lo, k_hi):
    """Whether codes ``k_lo`` and ``k_hi`` decode to finite float32 values, by the very
    arithmetic of the decoder (``kernel_params``, then ``(code - c0) * scale + offset``)."""
    scale, _, offset, c0 = kernel_params(scheme, params, np.dtype(np.float32))
    with np.errstate(over="ignore", invalid="ignore"):
        ends = [(k.astype(np.float32) - c0) * scale + offset for k in (k_lo, k_hi)]
    return np.isfinite(ends[0]) & np.isfinite(ends[1])


def _fit_grid(scheme, params, rmin, rmax):
    """Make every code that values of ``[rmin, rmax]`` can get decode to a finite float32.

    Near the float32 limit a grid can end beyond it: the integer zero point shifts the grid
    by up to half a step, the scale is rounded, a symmetric grid has one more step below
    than above.  Where the highest or lowest reachable level would pass the largest float32
    (less a rounding margin), the scale is reduced so that the grid ends there (the data's
    extreme value then clips by less than a step); a last check runs the decoder's own
    float32 arithmetic.
    """
    # (code - c0) * scale is one rounding: exact values up to F32_MAX stay finite; the float
    # offset form adds a second rounding (and kernel_params may recentre it), so its grid keeps
    # a margin of 2**-20 of the room between the offset and the limit
    margin = _MARGIN if "offset" in params else 1.0
    for _ in range(64):
        k_lo, k_hi, c0, off = _reachable(scheme, params, rmin, rmax)
        scale = params["scale"].astype(np.float64)
        up = k_hi - c0  # steps above the offset / zero point (> 0 where the grid rises)
        down = c0 - k_lo
        with np.errstate(divide="ignore", invalid="ignore"):
            s_top = np.where((up > 0) & (off + up * scale > F32_MAX * margin),
                             (F32_MAX - off) * margin / up, np.inf)
            s_bot = np.where((down > 0) & (off - down * scale < -F32_MAX * margin),
                             (F32_MAX + off) * margin / down, np.inf)
            if "offset" in params:  # kernel_params recentres wide grids at c = n // 2
                n = _steps(scheme)
                far = np.maximum(np.abs(k_lo - n // 2), np.abs(k_hi - n // 2))
                s_mid = np.where(scale * n > F32_MAX / 2, F32_MAX * margin / far, np.inf)
                s_top = np.minimum(s_top, s_mid)
        bound = np.minimum(s_top, s_bot)
        bad = (bound < scale) | ~_decodes_finite(scheme, params, k_lo, k_hi)
        if not bad.any():
            return params
        new = np.minimum(bound, scale * _MARGIN)
        new32 = np.minimum(new, F32_MAX).astype(np.float32)
        new32 = np.where(new32.astype(np.float64) > new, np.nextafter(new32, np.float32(0)), new32)
        params["scale"] = np.where(bad, np.maximum(new32, SCALE_MIN), params["scale"]).astype(np.float32)
    raise InputError(f"x spans [{rmin.min():.6g}, {rmax.max():.6g}]: no float32 grid of this scheme "
                     "decodes it to finite values")


def finalize(scheme, st, data=None):
    """Parameters (side arrays) from merged statistics.

    Every code that the data can get decodes to a finite float32 value: near the float32
    limit the scale is reduced so that the grid ends inside it (:func:`_fit_grid`).

    Returns
    -------
    dict: ``scale`` float32 (G,), and ``zero_point`` int32 (G,) or ``offset``
    float32 (G,).
    """
    if st is None:  # block schemes: no global parameters
        return {}
    if "scale_sum" in st:  # double quantization: the exact mean block scale
        return {"scale_offset": np.array([kb.exact_mean(st["scale_sum"])], np.float32)}
    check_stats(scheme, st)
    rmin, rmax = clip_range(scheme, st, data)
    if scheme.error_bounded:
        return bounded_params(scheme, rmin, rmax, st.get("rank", 1))
    # data and range far inside float32 (the common case: a few reductions, no temporaries)
    # cannot reach its limit: a level is at most a step (<= twice the range) beyond the data
    far = 0.0
    if len(rmin):
        far = max(-float(rmin.min()), float(rmax.max()))
        if scheme.range != "minmax":  # data beyond the clipping range get its end codes too
            far = max(far, -float(st["min"].min()), float(st["max"].max()))
    if far > F32_MAX / 8:
        _check_range(scheme, rmin, rmax)
        if not _plain(scheme):
            raise InputError(f"x reaches {far:.6g}: scale_dtype={scheme.scale_dtype!r}, double_quant="
                             f"{scheme.double_quant} need |x| <= {F32_MAX / 8:.6g}; use the float32 defaults")
        reach = (np.minimum(rmin, _lo(st)), np.maximum(rmax, _hi(st)))
    qmin, qmax = scheme.qrange
    const = rmin == rmax
    side = {}
    with np.errstate(over="ignore"):
        if scheme.symmetric:
            amax = np.maximum(np.abs(rmin), np.abs(rmax))
            # a constant c is exact with scale |c| (code +-1)
            exact = np.where(const, amax, amax / qmax)
            scale = _rounded_scale(scheme, _scale32(exact), exact, st, side)
            return _stored_grid(scheme, scale, np.zeros(len(scale), np.int32), side, reach if far > F32_MAX / 8 else None)
        if scheme.zero_point == "float" and not _plain(scheme):
            return _stored(scheme, _float_grid(scheme, rmin, rmax, side), side)
        if scheme.zero_point == "float":
            n = qmax - qmin
            scale = _scale32((rmax - rmin) / n)
            offset = rmin.astype(np.float32)
            # rounded up (float64 data), so that x = rmin gives t <= 0: code 0 in every
            # rounding mode (ceil of a tiny positive t would give code 1, a whole step off)
            offset = np.where(offset < rmin, np.nextafter(offset, np.float32(np.inf)), offset)
            # a grid starting at -F32_MAX starts a little inside, so that rounding cannot step out
            offset = np.maximum(offset, np.float32(-F32_MAX * _MARGIN))
            params = {"scale": scale, "offset": offset}
            return _fit_grid(scheme, params, *reach) if far > F32_MAX / 8 else params
        lo = np.minimum(rmin, 0.0)
        hi = np.maximum(rmax, 0.0)
        scale = (hi - lo) / (qmax - qmin)
        # a constant c is exact with scale |c| (code 1 away from the zero point)
        exact = np.where(const, np.abs(rmin), scale)
        scale = _rounded_scale(scheme, _scale32(exact), exact, st, side)
        zp = np.clip(np.rint(qmin - lo / scale.astype(np.float64)), qmin, qmax)
    return _stored_grid(scheme, scale, zp.astype(np.int32), side, reach if far > F32_MAX / 8 else None)


def _stored_grid(scheme, scale, zero_point, side, reach):
    """Stored side arrays of an integer zero point grid, fitted inside float32 first
    (:func:`_fit_grid`) when ``reach`` (the data's range) is given: only the float32 defaults
    get there, whose ``side`` holds the scale as it is."""
    params = {"scale": scale, "zero_point": zero_point}
    if reach is not None:
        params = _fit_grid(scheme, params, *reach)
        side["scale"] = params["scale"]
    return _stored(scheme, params, side)


# Unit roundoff and half the smallest subnormal of the decoder's arithmetic, and of the cast
# to the output dtype (none when the decoder already computes in it), by DTYPE_RANK.
_ROUNDING = {0: (2.0 ** -53, 2.0 ** -1075, 0.0, 0.0),            # float64: decoded in float64
             1: (2.0 ** -24, 2.0 ** -150, 0.0, 0.0),             # float32
             2: (2.0 ** -24, 2.0 ** -150, 2.0 ** -11, 2.0 ** -25)}  # float16: float32, then cast


def _f32_down(v):
    """The largest float32 <= ``v`` (float64 array, within the float32 range)."""
    v32 = v.astype(np.float32)
    # (the comparison promotes to float64, exactly; one ulp down in place where v32 rounded up)
    return np.nextafter(v32, np.float32(-np.inf), out=v32, where=v32 > v)


@functools.lru_cache(maxsize=32)
def _step_cap(steps):
    """The largest float32 step (a float32 scalar) of a grid of ``steps`` steps that the decoder
    takes as it is: at most ``F32_MAX / (4 * steps)``."""
    return _f32_down(np.array([F32_MAX / (4 * steps)]))[0]


def error_bound(scheme, rmin, rmax):
    """The absolute bound per group (float64): ``abs_error``, or ``rel_error`` times the group's
    range (times ``max |x|`` for a constant group; a group of zeros only is exact at any step)."""
    if scheme.abs_error is not None:
        return np.full(len(rmin), scheme.abs_error)
    width = rmax - rmin
    e = scheme.rel_error * np.where(width > 0, width, np.maximum(np.abs(rmin), np.abs(rmax)))
    return np.where(e > 0, e, 1.0)


def bounded_params(scheme, rmin, rmax, rank=1):
    """Side arrays of an error-bounded scheme: ``offset`` (float64: each group's minimum, exact in
    the data's dtype) and the largest float32 ``scale`` whose worst-case error, rounding included,
    is at most the bound (:func:`error_bound`).

    The decoder computes ``fl(fl(k * s) + o)`` and the encoder ``k = round(fl(fl(x - o) * fl(1 / s)))``
    with unit roundoff ``u`` (``eta``: half the smallest subnormal).  For ``x`` in ``[o, rmax]``,
    with ``span = rmax - o + 2 s`` and ``L = max(|o|, |rmax|) + 2 s`` bounding the levels used:

    * encoder: ``|k - (x - o) / s| <= 1/2 + g3 (x - o) / s + eta``, ``g3 = 3u / (1 - 3u)``, so
      the level ``k s + o`` is within ``s / 2 + g3 (rmax - o) + s eta`` of ``x``;
    * decoder: ``|x_hat - (k s + o)| <= u (span + L)(1 + u) + 2 eta``;
    * a cast to a narrower output dtype (float16): ``u_out (L + decoder error) + eta_out``.

    The sum of the last three terms (the slack), increased by ``2**-30`` of itself for the
    rounding of this very computation, leaves ``e - slack`` for half a step.  A bound the
    arithmetic cannot meet (values so large that rounding alone reaches it) is an
    ``InputError`` naming it; so is a range needing more codes than ``bits`` gives.
    """
    name = "abs_error" if scheme.abs_error is not None else "rel_error"
    value = getattr(scheme, name)
    G = len(rmin)
    if not G:
        return {"scale": np.ones(0, np.float32), "offset": np.zeros(0, np.float64)}
    far = max(-float(rmin.min()), float(rmax.max()))
    if far > F32_MAX / 8:
        raise InputError(f"x spans [{rmin.min():.6g}, {rmax.max():.6g}]: {name}={value!r} needs data within "
                         f"+-{F32_MAX / 8:.6g} (a float32 offset and step)")
    u, eta, u_out, eta_out = _ROUNDING[int(rank)]
    e = error_bound(scheme, rmin, rmax)
    e2 = 2 * e
    if (e2 < SCALE_MIN).any():
        raise InputError(f"{name}={value!r} gives a bound of {e.min():.3g}, below the smallest float32 step "
                         f"allows ({float(SCALE_MIN) / 2:.3g})")
    # the data's minimum, exact in the decoder's arithmetic (a float32 one for float32 / float16
    # data; rounded down should a caller's range not be one)
    o64 = rmin if rank == 0 else _f32_down(rmin).astype(np.float64)
    g3 = 3 * u / (1 - 3 * u)
    steps = _steps(scheme)
    width = rmax - o64
    extent = np.maximum(np.abs(o64), np.abs(rmax))
    enc0 = g3 * width

    def slack(s):
        s2 = 2 * s
        span = width + s2
        top = extent + s2
        enc = enc0 + s * eta
        dec = u * (span + top) * (1 + u) + 2 * eta
        if u_out:  # (no output cast: the term is an exact 0)
            return (enc + dec + (u_out * (top + dec) + eta_out)) * (1 + 2.0 ** -30)
        return (enc + dec) * (1 + 2.0 ** -30)

    # a step beyond F32_MAX / (4 * steps) would have the decoder recentre the grid (kernel_params);
    # no data within +-F32_MAX / 8 needs one
    cap = _step_cap(steps)
    s0 = np.minimum(_f32_down(np.minimum(e2, F32_MAX)), cap)
    room = e - slack(s0.astype(np.float64))
    # (1 - 2**-50): room's own subtraction rounds (by at most 2**-53 of e)
    s = np.minimum(_f32_down(np.maximum(2 * room * (1 - 2.0 ** -50), 0.0)), cap)
    s64 = s.astype(np.float64)
    weak = (room <= 0) | (s < SCALE_MIN) | (s64 / 2 + slack(s64) > e)
    if weak.any():
        g = int(np.argmax(weak))
        need = e[g] - room[g]
        dtype = {0: "float64", 1: "float32", 2: "float16"}[int(rank)]
        raise InputError(f"{name}={value!r} cannot be guaranteed in {dtype} arithmetic for x in "
                         f"[{rmin[g]:.9g}, {rmax[g]:.9g}]: rounding alone reaches {need:.3g} (pass "
                         f"{'float64 data or ' if rank else ''}a bound above {2 * need:.3g})")
    levels = np.ceil(width / s64 * (1 + 2.0 ** -50))
    if (levels > steps).any():
        g = int(np.argmax(levels - steps))
        reserved = (1 << scheme.bits) - (steps + 1)  # the NaN and fill codes
        need_bits = int(np.ceil(np.log2(levels[g] + 1 + reserved)))
        hint = f"bits={need_bits}" if need_bits <= 16 else "a larger bound"
        raise InputError(f"{name}={value!r} on x in [{rmin[g]:.9g}, {rmax[g]:.9g}] needs {int(levels[g]) + 1} "
                         f"levels, more than the {steps + 1} codes of bits={scheme.bits}: pass {hint}")
    return {"scale": s.astype(np.float32), "offset": o64.astype(np.float64)}


def needs_stats(scheme):
    """Whether fitting needs a global statistics pass (block schemes do not, but for the mean
    scale of double quantization)."""
    return scheme.block_size is None or scheme.double_quant


def block_quantum(scheme):
    """Values a chunk must hold a whole number of (block schemes), or None: whole blocks, whole
    groups of 256 blocks with ``double_quant``, whole bytes of packed zero points."""
    if scheme.block_size is None:
        return None
    if scheme.double_quant:
        return scheme.block_size * bw.DQ_BLOCK
    if _packed_zero_points(scheme):
        return scheme.block_size * (8 // math.gcd(scheme.bits, 8))
    return scheme.block_size


def _packed_zero_points(scheme):
    """Whether the zero points are ``bits``-bit codes row-packed per block (codes of up to 8
    bits; wider ones take a uint16 each)."""
    return scheme.block_size is not None and scheme.bits <= 8 and "zero_point_codes" in side_dtypes(scheme)


def _plain(scheme):
    """Whether the scale (and offset) are stored as float32 scales, one per group."""
    return scheme.scale_dtype == "float32" and not scheme.double_quant


def side_dtypes(scheme):
    """Names and dtypes of the per-group side arrays: ``scale``, then ``zero_point`` (int32),
    ``zero_point_codes`` (uint8), ``offset`` or none (symmetric, ``zero_point_storage="packed"``);
    error-bounded schemes: a float32 ``scale`` and a float64 ``offset``."""
    if scheme.error_bounded:  # the exact minimum: a float32 one could sit a float32 spacing away
        return {"scale": np.dtype(np.float32), "offset": np.dtype(np.float64)}
    fdt = base.scale_storage(scheme.scale_dtype)
    if scheme.zero_point == "float" and not scheme.symmetric:
        second = {"offset": fdt}
    elif scheme.zero_point_storage == "int32":
        second = {"zero_point": np.dtype(np.int32)}
    elif scheme.symmetric:
        second = {}
    else:
        second = {"zero_point_codes": np.dtype(np.uint8 if scheme.bits <= 8 else np.uint16)}
    return {"scale": fdt, **second}


def param_specs(scheme, n):
    """Per-block side arrays of a block scheme on ``n`` values: name -> (length, dtype);
    ``zero_point_codes`` are row-packed, ``bits`` bits per block."""
    nb = -(-n // scheme.block_size)
    out = {}
    for name, dtype in side_dtypes(scheme).items():
        if name == "scale" and scheme.double_quant:
            out["scale_codes"] = (nb, np.dtype(np.uint8))
            out["scale2"] = (-(-nb // bw.DQ_BLOCK), np.dtype(np.float32))
        elif name == "zero_point_codes" and _packed_zero_points(scheme):
            out[name] = (-(-nb * scheme.bits // 8), dtype)
        else:
            out[name] = (nb, dtype)
    return out


def chunk_params(scheme, chunk, start=None, global_shape=None, params=None):
    """Per-block parameters of one chunk of a block scheme (its blocks only)."""
    st = partial(scheme, chunk, start=start, global_shape=global_shape)
    if params and "scale_offset" in params:
        st["scale_offset"] = params["scale_offset"]
    return finalize(scheme, st)


def fit_partial(scheme, chunk, start=None, global_shape=None):
    """The statistics pass: :func:`partial`, or for double quantization the exact partial sum
    of the chunk's float32 block scales (their mean is ``scale_offset``)."""
    if scheme.block_size is None or not scheme.double_quant:
        return partial(scheme, chunk, start=start, global_shape=global_shape)
    scale = finalize(scheme, partial(scheme, chunk, start=start, global_shape=global_shape))["scale"]
    return {"scale_sum": kb.exact_sum_partial(scale)}


def params_from_stats(scheme, st):
    """Side arrays from the min/max statistics ``st`` of a whole array (as :func:`fit` gives
    them): with ``double_quant`` the exact mean block scale comes first."""
    if scheme.double_quant and "scale_offset" not in st:
        mean = finalize(scheme, {"scale_sum": kb.exact_sum_partial(finalize(scheme, st)["scale"])})
        return {**mean, **finalize(scheme, {**st, **mean})}
    return finalize(scheme, st)


def fit(scheme, x):
    """Parameters for an in-memory array, by the same mergeable statistics as Dask."""
    if scheme.block_size is not None and scheme.double_quant:
        glob = finalize(scheme, fit_partial(scheme, x))
        return {**glob, **chunk_params(scheme, x, params=glob)}
    st = partial(scheme, x)
    if needs_histogram(scheme):
        st.update(partial_histogram(scheme, x, _lo(st), _hi(st)))
    return finalize(scheme, st, data=x)


def _lo(st):
    return np.where(np.isfinite(st["min"]), st["min"], 0.0)


def _hi(st):
    return np.where(np.isfinite(st["max"]), st["max"], 0.0)


histogram_range = (_lo, _hi)


# ----------------------------------------------------------------------------- compact side arrays


def _up32(scale, exact):
    """float32 ``scale`` raised by an ulp where it rounded below ``exact`` (float64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        low = (scale.astype(np.float64) < exact) & (scale < np.float32(F32_MAX))
    return np.where(low, np.nextafter(scale, np.float32(np.inf)), scale).astype(np.float32)


def _rounded_scale(scheme, scale, exact, st, side):
    """The float32 scale decoding will use, never below ``exact`` (float64) but where the
    float32 defaults keep nquant's earlier rounding; what is stored goes into ``side``:
    ``scale`` in ``scale_dtype``, or the double-quantized ``scale_codes``, ``scale2`` and
    ``scale_offset`` once the global mean ``st["scale_offset"]`` is known."""
    if _plain(scheme) or (scheme.double_quant and "scale_offset" not in st):
        side["scale"] = scale
        return scale
    scale = _up32(scale, exact)
    if scheme.double_quant:
        offset = np.asarray(st["scale_offset"], np.float32).reshape(-1)[:1]
        codes, scale2 = bw.double_quantize_up(scale, offset[0])
        side.update(scale_codes=codes, scale2=scale2, scale_offset=offset)
        return np.maximum(kb.double_dequantize(codes, scale2, offset[0]), SCALE_MIN)
    side["scale"] = base.to_storage(scale, scheme.scale_dtype, +1)
    return base.widen(side["scale"])


def _float_grid(scheme, rmin, rmax, side):
    """Offset and scale of ``zero_point="float"`` in a narrow ``scale_dtype``: the offset
    rounded down (``<= rmin``), then the scale rounded up, so the grid spans ``[rmin, rmax]``."""
    qmin, qmax = scheme.qrange
    off32 = rmin.astype(np.float32)
    off32 = np.where(off32 > rmin, np.nextafter(off32, np.float32(-np.inf)), off32)
    side["offset"] = base.to_storage(off32, scheme.scale_dtype, -1, what="offset")
    off = base.widen(side["offset"]).astype(np.float64)
    exact = (np.maximum(rmax, off) - off) / (qmax - qmin)
    scale = _rounded_scale(scheme, _scale32(exact), exact, {}, side)
    return {"scale": scale, "offset": off.astype(np.float32)}


def _stored(scheme, params, side):
    """The side arrays as stored: ``side`` (scale or its codes, offset) and the zero point as
    ``zero_point_storage`` says (none, int32, or ``bits``-bit codes, row-packed per block)."""
    if "zero_point" not in params:
        return side
    names = side_dtypes(scheme)
    out = dict(side)
    if "zero_point" in names:
        out["zero_point"] = params["zero_point"]
    elif "zero_point_codes" in names:
        codes = (params["zero_point"].astype(np.int64) - scheme.qrange[0]).astype(names["zero_point_codes"])
        out["zero_point_codes"] = pack_codes(codes, scheme.bits) if _packed_zero_points(scheme) else codes
    return out


def plain_scheme(scheme):
    """``scheme`` with per-group side arrays (``zero_point_storage="int32"``, no ``double_quant``):
    one scale and one zero point or offset per group, in any ``scale_dtype``."""
    return scheme.replace(zero_point_storage="int32", double_quant=False)


def stored_side(scheme, params):
    """The side arrays ``scheme`` stores, from per-group ``params`` (``scale`` and ``zero_point``
    or ``offset``, float32 or as any ``scale_dtype`` stores them: :func:`plain_side`,
    :func:`plain_scheme`): the scale in ``scale_dtype`` (rounded up) or, with ``double_quant``,
    as 8-bit codes about the exact mean scale, each raised so that no decoded scale is below its
    own; zero points dropped or packed as ``zero_point_storage`` says (lossless).  Encode with
    the result: it is what decoding uses."""
    side = {}
    scale = base.widen(params["scale"])
    if scheme.double_quant:
        offset = kb.exact_mean(kb.exact_sum_partial(scale))
        codes, scale2 = bw.double_quantize_up(scale, offset)
        side.update(scale_codes=codes, scale2=scale2, scale_offset=np.array([offset], np.float32))
    else:
        side["scale"] = base.to_storage(scale, scheme.scale_dtype, +1)
    if "offset" in params:  # error-bounded: the exact float64 minimum, as it is
        off = params["offset"]
        side["offset"] = off if scheme.error_bounded else base.to_storage(base.widen(off), scheme.scale_dtype, -1,
                                                                          what="offset")
    return _stored(scheme, params, side)


def plain_side(scheme, side):
    """Per-group side arrays from stored ones, as ``zero_point_storage="int32"`` and float32
    scales store them: ``scale`` (float32, as decoding uses it) and ``zero_point`` (int32; 0
    where a symmetric scheme stores none) or ``offset`` (float32; float64 when error-bounded)."""
    scale = scale_values(scheme, side)
    if "offset" in side:
        off = np.asarray(side["offset"])
        return {"scale": scale, "offset": off if off.dtype == np.float64 else base.widen(off)}
    return {"scale": scale, "zero_point": zero_points(scheme, side, scale.size)[:scale.size].astype(np.int32)}


def scale_values(scheme, params):
    """The float32 scale per group that decoding uses, from the stored side arrays."""
    if "scale_codes" in params:
        return np.maximum(bw.double_dequantized(params, ("scale_codes", "scale2", "scale_offset")), SCALE_MIN)
    return base.widen(params["scale"])


def zero_points(scheme, params, groups):
    """The integer zero point per group (int64) from the stored side arrays: ``zero_point``,
    ``zero_point_codes`` (unpacked: every whole code of the stream) or none (0)."""
    if "zero_point" in params:
        return np.asarray(params["zero_point"]).astype(np.int64)
    if "zero_point_codes" in params:
        codes = np.asarray(params["zero_point_codes"]).reshape(-1)
        if _packed_zero_points(scheme):
            codes = np.ascontiguousarray(codes, dtype=np.uint8)
            codes = unpack_codes(codes, scheme.bits, (codes.size * 8 // scheme.bits,))
        return codes.astype(np.int64) + scheme.qrange[0]
    return np.zeros(groups, np.int64)


# ----------------------------------------------------------------------------- encode / decode


def kernel_params(scheme, params, dtype):
    """Arrays the kernels take: ``scale, inv_scale, offset, c0`` in ``dtype``.

    The real-offset form has ``c0 = 0``, except in groups whose grid spans more than half the
    float32 range: there ``code * scale`` alone could overflow, so they are recentred at
    ``c = n // 2`` steps (``c0 = c``, ``offset + c * scale``), the same levels up to rounding.
    """
    qmin, _ = scheme.qrange
    if not _plain(scheme):
        params = {**params, "scale": scale_values(scheme, params)}
        if "offset" in params:
            params["offset"] = base.widen(params["offset"])
    scale = params["scale"].astype(dtype)
    inv = (dtype.type(1) / scale).astype(dtype)
    if "offset" in params:
        offset = params["offset"].astype(dtype)
        c0 = np.zeros_like(scale)
        n = _steps(scheme)
        raw = np.asarray(params["scale"])
        if raw.size and float(raw.max()) * n > F32_MAX / 2:  # one reduction in the common case
            wide = raw.astype(np.float64) * n > F32_MAX / 2
            # a grid wider than half the float32 range: code * scale alone could overflow, so
            # those groups decode as (code - c) * scale + (offset + c * scale), c = n // 2
            c = n // 2
            c0 = np.where(wide, c, 0).astype(dtype)
            centre = params["offset"].astype(np.float64) + c * params["scale"].astype(np.float64)
            offset = np.where(wide, centre, offset).astype(dtype)
    else:
        offset = np.zeros_like(scale)
        c0 = (zero_points(scheme, params, scale.size) - qmin).astype(dtype)
    return scale, inv, offset, c0


def code_limits(scheme):
    """``(hi, nan_code)``: largest code of a finite value, code of NaN or -1."""
    qmin, qmax = scheme.qrange
    hi = qmax - qmin
    return hi, (hi + 1 if scheme.nan == "propagate" else -1)


def fill_code(scheme):
    """Code of the fill value (after the NaN code), or -1 without one."""
    if scheme.fill_value is None:
        return -1
    hi, nan_code = code_limits(scheme)
    return max(hi, nan_code) + 1


def encode(scheme, params, chunk, start=None, global_shape=None, group_offset=0, out=None):
    """Codes (``q - qmin``; uint8, uint16 for 9..16 bits) of a chunk, shape of the chunk.

    ``group_offset`` is the first group of ``params`` (per-block parameters
    sliced for this chunk).  Raises ``InputError`` on NaN/inf unless the scheme
    reserves a NaN code.
    """
    shape = chunk.shape
    flat = _flat(chunk)
    dtype = flat.dtype
    fills = fill_mask(scheme, chunk, flat)
    if fills is not None:  # any finite value will do: their codes are replaced below
        flat = np.where(fills, dtype.type(0), flat)
    _, inv, offset, c0 = kernel_params(scheme, params, dtype)
    hi, nan_code = code_limits(scheme)
    lay = layout(scheme, shape, start, global_shape, group_offset)
    codes = _alloc.empty(flat.size, code_dtype(scheme.bits)) if out is None else out.reshape(-1)
    key = seed_key(scheme.seed)  # any integer seed, taken modulo 2**64
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
    if fills is not None:
        codes[fills] = fill_code(scheme)
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
    # the kernel indexes scale, offset and c0 by group: every group of the layout must exist
    sizes = {("scale_codes" if "scale_codes" in params else "scale"): scale.size}
    for name in ("offset", "zero_point", "zero_point_codes"):
        if name in params:
            sizes[name] = (offset if name == "offset" else c0).size
    base.check_groups(lay, sizes)
    flat_codes = np.ascontiguousarray(codes, dtype=code_dtype(scheme.bits)).reshape(-1)
    top = max(_steps(scheme), nan_code, fill_code(scheme))
    if scheme.bits > 8:  # uint16 holds codes beyond the scheme's (a corrupt store): refused
        base.check_codes(flat_codes, top + 1, 16, what=f"the {scheme.bits}-bit code range", start=start)
    if out is not None and out.dtype == cdtype:
        res = out.reshape(-1)
    else:
        res = _alloc.empty(flat_codes.size, cdtype, fault_in=False)
    for part in lay.parts:
        if part.R and part.L:
            affine.dequantize_affine(part.view(flat_codes), part.row_group, lay.col_step, scale,
                                     offset, c0, nan_code, part.view(res))
    fc = fill_code(scheme)
    if fc >= 0:
        res[flat_codes == fc] = np.asarray(scheme.fill_value).astype(dtype)
    res = limits.finite_cast(res.reshape(shape), dtype)
    if out is None:
        return res
    if not np.may_share_memory(res, out):  # computed elsewhere: copy (and cast) into out
        out[...] = res
    return out


# ----------------------------------------------------------------------------- stored layout, report


def expected_side(scheme, shape, dtype):
    """Stored side arrays: ``scale`` and ``zero_point`` or ``offset``, one per group (tensor,
    axis index or block); zero points within the code range, the rest finite."""
    try:
        groups = n_groups(scheme, shape)
    except NQuantError as e:
        raise StoreError(f"scheme does not fit shape={list(shape)}: {e}") from None
    block = scheme.block_size is not None
    qmin, qmax = scheme.qrange
    specs = (param_specs(scheme, int(np.prod(shape, dtype=np.int64))) if block
             else {name: (groups, dt) for name, dt in side_dtypes(scheme).items()})
    checks = {"zero_point": "zero_point", "scale": "finite", "offset": "finite", "scale2": "finite"}
    out = {name: base.Side(np.dtype(dt), (length,), block=block, check=checks.get(name),
                           expect=(qmin, qmax) if name == "zero_point" else None)
           for name, (length, dt) in specs.items()}
    if scheme.double_quant:
        out["scale_offset"] = base.Side(np.dtype(np.float32), (1,), check="finite")
    return out


def bits_per_value(scheme, shape, dtype=np.float32):
    """Bits per value stored: the row-packed codes and the side arrays (exact)."""
    return base.stored_bits_per_value(expected_side(scheme, shape, dtype), shape, scheme.bits)


def level_view(scheme, side, x, x_hat):
    """Code-unit view: real values against the grid for one scale per tensor; *quantization
    steps* ``x / scale + zero_point`` against the integer codes with one scale per channel or
    block.  A value is clipped beyond half a step past the last level."""
    if scheme.bits > 8:  # thousands of levels: those the values use, at most 256 of them shown
        levels = np.unique(x_hat[np.isfinite(x_hat)])
        if levels.size > 256:
            levels = levels[np.linspace(0, levels.size - 1, 256).round().astype(np.int64)]
        return base.view(x, levels, "value", None)
    view = _steps_view(scheme, side, x, x_hat)
    return base.generic_view(scheme, side, x, x_hat) if view is None else view


def _steps_view(scheme, side, x, x_hat):
    """:func:`level_view`, or None when the side arrays do not decode ``x_hat``."""
    if "scale" not in side and "scale_codes" not in side:
        return None
    scale = scale_values(scheme, side).astype(np.float64).reshape(-1)
    if "offset" in side:  # real zero point: x_hat = q * scale + offset
        zp = -base.widen(side["offset"]).astype(np.float64).reshape(-1) / scale
    else:
        zp = zero_points(scheme, side, scale.size).astype(np.float64).reshape(-1)
    n = x.size
    if scheme.block_size:
        nb = -(-n // scheme.block_size)
        if scale.size < nb:
            return None
        s = np.repeat(scale[:nb], scheme.block_size)[:n].reshape(x.shape)
        z = np.repeat(zp[:nb], scheme.block_size)[:n].reshape(x.shape)
    elif scheme.axis is not None:
        ax = scheme.axis % x.ndim
        if scale.size < x.shape[ax]:
            return None
        shp = [1] * x.ndim
        shp[ax] = x.shape[ax]
        s = scale[:x.shape[ax]].reshape(shp)
        z = zp[:x.shape[ax]].reshape(shp)
    else:
        s, z = scale[0], zp[0]
    qmin, qmax = scheme.qrange
    u = x / s + z
    with np.errstate(invalid="ignore"):
        codes = np.clip(np.round(x_hat / s + z), qmin, qmax)
    if not np.allclose((codes - z) * s, x_hat, rtol=1e-4, atol=1e-6 * float(np.max(np.abs(s)))):
        return None  # a layout this view does not know: fall back to the generic one
    clipped = (u < qmin - 0.5) | (u > qmax + 0.5)
    grid = np.arange(qmin, qmax + 1, dtype=np.float64)
    if np.ndim(s) == 0:  # one grid: show real values
        return base.view(x, (grid - z) * s, "value", clipped)
    label = "value / block scale + zero point" if scheme.block_size else "value / channel scale + zero point"
    return base.view(u, grid, label + " (quantization steps)", clipped)


FAMILY = base.Family(
    name="uniform", needs_stats=needs_stats, needs_histogram=needs_histogram, partial=fit_partial, merge=merge,
    finalize=finalize, fit=fit, encode=encode, decode=decode, block_quantum=block_quantum,
    expected_side=expected_side, bits_per_value=bits_per_value, level_view=level_view,
    partial_histogram=partial_histogram, histogram_range=histogram_range, param_specs=param_specs,
    chunk_params=chunk_params, side_dtypes=side_dtypes,
    cuda=base.CudaTwin("fit_encode_uniform", "decode_uniform"), codec=True)
