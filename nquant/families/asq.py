"""ASQ schemes: fit optimal levels (``nquant.asq``), then round stochastically to them.

Family hooks in :data:`FAMILY` (protocol: :mod:`nquant.families.base`).  Statistics per method:

- ``quiver_approx``: pass 1 min/max, pass 2 per-cell sums over the fixed grid
  (``nquant.asq.approx_partial``), merged by addition: out of core, no sort.
- exact methods: the table of distinct values and their counts, merged by union;
  it must fit in memory (at most ``MAX_DISTINCT`` entries, else ``InputError``
  suggesting ``quiver_approx``).

The side array ``codebook`` (float64) holds the distinct levels; the codes
index them (in the data's precision: the levels are cast to float32 for float32
data and made unique again).

``axis=k``: one level set per index of axis ``k`` (each row of a matrix its own
levels with ``axis=0``).  The statistics are kept per group -- the exact
methods' table holds (group, value, count) triples, ``quiver_approx`` keeps
per-group min/max and then per-group cell sums over each group's own grid --
and the groups are solved in parallel (``nquant.asq.solve_tables``,
``nquant.asq.rows_finalize``).  ``codebook`` is then float64 of shape
``(G, 2**bits)``: row ``g`` holds group ``g``'s distinct levels, padded by
repeating its largest one; the codes of group ``g`` index row ``g``.
"""

import numpy as np

from nquant import _alloc, _layout, limits
from nquant.codebooks import asq
from nquant.errors import InputError, NQuantError, StoreError
from nquant.families import base
from nquant.families.uniform import compute_dtype, n_groups, norm_axis
from nquant.kernels import codebook1d
from nquant.kernels.rng import seed_key
from nquant.kernels.rounding import STOCHASTIC

MAX_DISTINCT = 1 << 24


def needs_stats(scheme):
    return True


def needs_histogram(scheme):
    return scheme.method == "quiver_approx"


def block_quantum(scheme):
    return None


def _flat(chunk):
    return np.ascontiguousarray(chunk).reshape(-1)


def _check_finite(flat):
    if flat.size and not np.isfinite(flat).all():
        raise InputError("x contains NaN or infinite values: ASQ needs finite data")


def _rows(scheme, chunk, start, global_shape):
    """The chunk as (groups in this chunk, values) and its first global group (``axis`` set)."""
    gshape = chunk.shape if global_shape is None else tuple(global_shape)
    axis = norm_axis(scheme, len(gshape))
    first = 0 if start is None else int(start[axis])
    a = np.moveaxis(np.asarray(chunk), axis, 0)
    rest = int(np.prod(a.shape[1:], dtype=np.int64))
    return np.ascontiguousarray(a.reshape(a.shape[0], rest)), first, n_groups(scheme, gshape)


def _check_grid(scheme, groups):
    """``quiver_approx``: the histograms (``groups`` of ``m`` cells) and the DP must fit in memory;
    checked before the first pass allocates anything."""
    if scheme.method == "quiver_approx":
        asq._check_m(scheme.m, 1 << scheme.bits, groups)


def partial(scheme, chunk, start=None, global_shape=None):
    """min/max (``quiver_approx``) or the (value, count) table of one chunk (per group with ``axis``)."""
    _check_grid(scheme, 1 if scheme.axis is None else
                n_groups(scheme, chunk.shape if global_shape is None else tuple(global_shape)))
    if scheme.axis is not None:
        return _partial_rows(scheme, chunk, start, global_shape)
    flat = _flat(chunk)
    _check_finite(flat)
    if scheme.method == "quiver_approx":
        if flat.size == 0:
            return {"min": np.inf, "max": -np.inf}
        return {"min": float(flat.min()), "max": float(flat.max())}
    values, counts = np.unique(flat.astype(np.float64), return_counts=True)
    return {"values": values, "counts": counts.astype(np.int64)}


def _partial_rows(scheme, chunk, start, global_shape):
    rows, first, G = _rows(scheme, chunk, start, global_shape)
    _check_finite(rows)
    if scheme.method == "quiver_approx":
        lo = np.full(G, np.inf)
        hi = np.full(G, -np.inf)
        if rows.size:
            lo[first:first + rows.shape[0]] = rows.min(axis=1)
            hi[first:first + rows.shape[0]] = rows.max(axis=1)
        return {"min": lo, "max": hi}
    groups, values, counts = asq.row_tables(rows, first)
    return {"groups": groups, "values": values, "counts": counts, "n_groups": G}


def partial_histogram(scheme, chunk, lo, hi, start=None, global_shape=None):
    """Per-cell sums of one chunk over the grid of ``quiver_approx`` (each group's own grid)."""
    if scheme.axis is not None:
        rows, first, G = _rows(scheme, chunk, start, global_shape)
        _check_grid(scheme, G)
        m = asq.DEFAULT_M if scheme.m is None else scheme.m
        hist = np.zeros((G, m, 3))
        sl = slice(first, first + rows.shape[0])
        hist[sl] = asq.rows_partial(rows, _finite(lo[sl]), _finite(hi[sl]), m)[0]
        return {"ghist": hist}
    flat = _flat(chunk)
    if flat.size == 0:
        return {"hist": _empty_hist(lo, hi, scheme.m)}
    return {"hist": asq.approx_partial(flat, lo, hi, scheme.m)}


def _finite(v):
    return np.where(np.isfinite(v), v, 0.0)


def _empty_hist(lo, hi, m):
    st = asq.approx_partial(np.array([lo], np.float64), lo, hi, m)
    return st._replace(hist=np.zeros_like(st.hist), norm2=0.0)


def merge(a, b):
    out = {}
    for k in a:
        if k == "min":
            out[k] = np.fmin(a[k], b[k]) if np.ndim(a[k]) else min(a[k], b[k])
        elif k == "max":
            out[k] = np.fmax(a[k], b[k]) if np.ndim(a[k]) else max(a[k], b[k])
        elif k == "hist":
            out[k] = asq.approx_merge(a[k], b[k])
        elif k == "n_groups":
            out[k] = a[k]
        elif k == "ghist":
            out[k] = a[k] + b[k]
        elif k == "groups":
            g, v, c = asq.merge_tables((a["groups"], a["values"], a["counts"]),
                                       (b["groups"], b["values"], b["counts"]))
            _check_size(v.size)
            out.update(groups=g, values=v, counts=c)
        elif k == "values" and "groups" not in a:
            v = np.concatenate([a["values"], b["values"]])
            c = np.concatenate([a["counts"], b["counts"]])
            u, inv = np.unique(v, return_inverse=True)
            _check_size(u.size)
            out["values"] = u
            out["counts"] = np.bincount(inv, weights=c, minlength=u.size).astype(np.int64)
    return out


def _check_size(n):
    if n > MAX_DISTINCT:
        raise InputError(f"x has more than {MAX_DISTINCT} distinct values (over all groups): the exact "
                         "ASQ methods need the (value, count) table in memory; use method='quiver_approx'")


def _hist_lo(st):
    return st["min"]


def _hist_hi(st):
    return st["max"]


histogram_range = (_hist_lo, _hist_hi)


def finalize(scheme, st, data=None):
    """``{"codebook": distinct optimal levels (float64)}``; shape (G, 2**bits) with ``axis``."""
    s = 1 << scheme.bits
    if scheme.axis is not None:
        if scheme.method == "quiver_approx":
            levels = asq.rows_finalize(_finite(st["min"]), _finite(st["max"]), st["ghist"], s)
        else:
            levels, _obj = asq.solve_tables((st["groups"], st["values"], st["counts"]),
                                            st["n_groups"], s, scheme.method)
        return {"codebook": compact_rows(levels)[0]}
    if scheme.method == "quiver_approx":
        if not np.isfinite(st["min"]):
            return {"codebook": np.zeros(1)}
        levels = asq.approx_finalize(st["hist"], s)
    else:
        if st["values"].size == 0:
            return {"codebook": np.zeros(1)}
        levels = asq.solve(st["values"], s, method=scheme.method, weights=st["counts"]).levels
    return {"codebook": np.unique(np.asarray(levels, np.float64))}


def compact_rows(levels):
    """Each row's distinct values (rows sorted ascending), padded by repeating the row maximum.

    Returns ``(rows, n)``: same shape and dtype as ``levels``, and the number of distinct
    values of each row (int64).
    """
    levels = np.asarray(levels)
    G, K = levels.shape
    if K == 0 or G == 0:
        return levels.copy(), np.full(G, max(K, 0), np.int64)
    new = np.ones((G, K), dtype=bool)
    new[:, 1:] = levels[:, 1:] != levels[:, :-1]
    n = new.sum(axis=1).astype(np.int64)
    pos = np.cumsum(new, axis=1) - 1
    out = np.empty_like(levels)
    r = np.broadcast_to(np.arange(G)[:, None], (G, K))
    out[r[new], pos[new]] = levels[new]
    j = np.arange(K)[None, :]
    last = out[np.arange(G), n - 1][:, None]
    return np.where(j < n[:, None], out, last), n


def fit(scheme, x):
    """Levels of an in-memory array, by the same mergeable statistics as Dask."""
    st = partial(scheme, x)
    if needs_histogram(scheme):
        st.update(partial_histogram(scheme, x, st["min"], st["max"]))
    return finalize(scheme, st)


def levels_for(params, dtype):
    """The codebook in the compute dtype, distinct and sorted."""
    return np.unique(np.asarray(params["codebook"]).astype(dtype))


def group_levels_for(params, dtype):
    """Per-group codebook (G, K) in the compute dtype, each row compacted, and its row lengths."""
    cb = np.asarray(params["codebook"], np.float64)
    return compact_rows(np.ascontiguousarray(cb.astype(dtype)))


def _layout_of(scheme, shape, start, global_shape):
    gshape = shape if global_shape is None else tuple(global_shape)
    axis = None if scheme.axis is None else norm_axis(scheme, len(gshape))
    return _layout.row_layout(shape, start, gshape, axis=axis)


def encode(scheme, params, chunk, start=None, global_shape=None, group_offset=0, out=None):
    """Codes: unbiased stochastic rounding to the levels (index into the codebook, or into its
    row for the value's group with ``axis``)."""
    shape = chunk.shape
    flat = np.ascontiguousarray(chunk, dtype=compute_dtype(chunk.dtype)).reshape(-1)
    lay = _layout_of(scheme, shape, start, global_shape)
    codes = _alloc.empty(flat.size, np.uint8) if out is None else out.reshape(-1)
    key = seed_key(scheme.seed)
    bad = 0
    if scheme.axis is None:
        levels = levels_for(params, flat.dtype)
        for part in lay.parts:
            if part.R and part.L:
                bad += codebook1d.quantize_sorted(part.view(flat), part.row_index, levels, STOCHASTIC,
                                                  key, part.view(codes))
    else:
        levels, n = group_levels_for(params, flat.dtype)
        for part in lay.parts:
            if part.R and part.L:
                bad += codebook1d.quantize_sorted_groups(part.view(flat), part.row_index, part.row_group,
                                                         lay.col_step, levels, n, STOCHASTIC, key,
                                                         part.view(codes))
    if bad:
        raise InputError(f"x contains {bad} non-finite value(s): ASQ needs finite data")
    return codes.reshape(shape)


def decode(scheme, params, codes, dtype=np.float32, start=None, global_shape=None, group_offset=0,
           out=None):
    """``codebook[code]`` (``codebook[group, code]`` with ``axis``) in ``dtype``."""
    dtype = np.dtype(dtype)
    cdtype = compute_dtype(dtype)
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    res = _alloc.empty(flat.size, cdtype, fault_in=False)
    if scheme.axis is None:
        levels = levels_for(params, cdtype)
        if flat.size:
            base.check_codes(flat, levels.size, scheme.bits, start=start)
            codebook1d.dequantize_table(flat.reshape(1, -1), levels, res.reshape(1, -1))
    else:
        if np.ndim(params["codebook"]) != 2:
            raise StoreError(f"side array 'codebook' has shape={np.shape(params['codebook'])}; expected "
                             f"(groups, {1 << scheme.bits}) with axis={scheme.axis}")
        levels, _n = group_levels_for(params, cdtype)
        lay = _layout_of(scheme, codes.shape, start, global_shape)
        # the kernel indexes levels[group, code]: every group of the layout and code must exist
        base.check_groups(lay, {"codebook": levels.shape[0]})
        base.check_codes(flat, levels.shape[1], scheme.bits, start=start)
        for part in lay.parts:
            if part.R and part.L:
                codebook1d.dequantize_groups(part.view(flat), part.row_group, lay.col_step, levels,
                                             part.view(res))
    return limits.finite_cast(res.reshape(codes.shape), dtype)


# ----------------------------------------------------------------------------- stored layout, report


def expected_side(scheme, shape, dtype):
    """Stored side array ``codebook`` (float64): at most ``2**bits`` strictly increasing levels,
    or with ``axis`` a ``(groups, 2**bits)`` array of sorted rows."""
    if scheme.axis is None:
        return {"codebook": base.Side(np.dtype(np.float64), (None,), max_len=1 << scheme.bits,
                                      check="increasing")}
    try:
        groups = n_groups(scheme, shape)
    except NQuantError as e:
        raise StoreError(f"scheme does not fit shape={list(shape)}: {e}") from None
    return {"codebook": base.Side(np.dtype(np.float64), (groups, 1 << scheme.bits), check="rows")}


def bits_per_value(scheme, shape, dtype=np.float32):
    """Bits per value stored: codes and ``2**bits`` float64 levels (per group with ``axis``);
    data with fewer distinct values get fewer levels (without ``axis``), and slightly fewer bits."""
    return base.stored_bits_per_value(expected_side(scheme, shape, dtype), shape, scheme.bits)


def level_view(scheme, side, x, x_hat):
    """The values against the fitted levels; with ``axis`` (a level set per group) every value
    in *level units* of its own group (level ``k`` at ``k``, linear between levels), against
    the level indices.  A value is clipped outside its first and last levels."""
    cb = np.asarray(side.get("codebook", ()), np.float64)
    if cb.ndim != 2:
        return base.levels_view(cb, x, x_hat)
    if scheme.axis is None or not cb.size or x.ndim == 0:
        return base.generic_view(scheme, side, x, x_hat)
    ax = scheme.axis % x.ndim
    rows = np.moveaxis(x, ax, 0)
    if cb.shape[0] < rows.shape[0]:
        return base.generic_view(scheme, side, x, x_hat)
    units = np.empty(rows.shape)
    clipped = np.empty(rows.shape, bool)
    for g in range(rows.shape[0]):
        lv = np.unique(cb[g])
        units[g] = np.interp(rows[g], lv, np.arange(lv.size))
        clipped[g] = (rows[g] < lv[0]) | (rows[g] > lv[-1])
    return base.view(units, np.arange(cb.shape[1]), "value in level units (per-group levels)", clipped)


FAMILY = base.Family(
    name="asq", needs_stats=needs_stats, needs_histogram=needs_histogram, partial=partial, merge=merge,
    finalize=finalize, fit=fit, encode=encode, decode=decode, block_quantum=block_quantum,
    expected_side=expected_side, bits_per_value=bits_per_value, level_view=level_view,
    partial_histogram=partial_histogram, histogram_range=histogram_range)
