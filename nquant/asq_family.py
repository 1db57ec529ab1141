"""ASQ schemes: fit optimal levels (``nquant.asq``), then round stochastically to them.

Family protocol as in :mod:`nquant.uniform`.  Statistics per method:

- ``quiver_approx``: pass 1 min/max, pass 2 per-cell sums over the fixed grid
  (``nquant.asq.approx_partial``), merged by addition: out of core, no sort.
- exact methods: the table of distinct values and their counts, merged by union;
  it must fit in memory (at most ``MAX_DISTINCT`` entries, else ``InputError``
  suggesting ``quiver_approx``).

The side array ``codebook`` (float64) holds the distinct levels; the codes
index them (in the data's precision: the levels are cast to float32 for float32
data and made unique again).
"""

import numpy as np

from nquant import _layout, asq
from nquant.errors import InputError
from nquant.kernels import codebook1d
from nquant.kernels.rng import stream_key
from nquant.kernels.rounding import STOCHASTIC
from nquant.uniform import compute_dtype

MAX_DISTINCT = 1 << 24


def needs_stats(scheme):
    return True


def needs_histogram(scheme):
    return scheme.method == "quiver_approx"


def block_quantum(scheme):
    return None


def _flat(chunk):
    return np.ascontiguousarray(chunk).reshape(-1)


def partial(scheme, chunk, start=None, global_shape=None):
    """min/max (``quiver_approx``) or the (value, count) table of one chunk."""
    flat = _flat(chunk)
    if flat.size and not np.isfinite(flat).all():
        raise InputError("x contains NaN or infinite values: ASQ needs finite data")
    if scheme.method == "quiver_approx":
        if flat.size == 0:
            return {"min": np.inf, "max": -np.inf}
        return {"min": float(flat.min()), "max": float(flat.max())}
    values, counts = np.unique(flat.astype(np.float64), return_counts=True)
    return {"values": values, "counts": counts.astype(np.int64)}


def partial_histogram(scheme, chunk, lo, hi, start=None, global_shape=None):
    """Per-cell sums of one chunk over the grid of ``quiver_approx``."""
    flat = _flat(chunk)
    if flat.size == 0:
        return {"hist": _empty_hist(lo, hi, scheme.m)}
    return {"hist": asq.approx_partial(flat, lo, hi, scheme.m)}


def _empty_hist(lo, hi, m):
    st = asq.approx_partial(np.array([lo], np.float64), lo, hi, m)
    return st._replace(hist=np.zeros_like(st.hist), norm2=0.0)


def merge(a, b):
    out = {}
    for k in a:
        if k == "min":
            out[k] = min(a[k], b[k])
        elif k == "max":
            out[k] = max(a[k], b[k])
        elif k == "hist":
            out[k] = asq.approx_merge(a[k], b[k])
        elif k == "values":
            v = np.concatenate([a["values"], b["values"]])
            c = np.concatenate([a["counts"], b["counts"]])
            u, inv = np.unique(v, return_inverse=True)
            if u.size > MAX_DISTINCT:
                raise InputError(f"x has more than {MAX_DISTINCT} distinct values: the exact ASQ methods "
                                 "need the (value, count) table in memory; use method='quiver_approx'")
            out["values"] = u
            out["counts"] = np.bincount(inv, weights=c, minlength=u.size).astype(np.int64)
    return out


histogram_range = (lambda st: st["min"], lambda st: st["max"])


def finalize(scheme, st, data=None):
    """``{"codebook": distinct optimal levels (float64)}``."""
    s = 1 << scheme.bits
    if scheme.method == "quiver_approx":
        if not np.isfinite(st["min"]):
            return {"codebook": np.zeros(1)}
        levels = asq.approx_finalize(st["hist"], s)
    else:
        if st["values"].size == 0:
            return {"codebook": np.zeros(1)}
        levels = asq.solve(st["values"], s, method=scheme.method, weights=st["counts"]).levels
    return {"codebook": np.unique(np.asarray(levels, np.float64))}


def fit(scheme, x):
    """Levels of an in-memory array, by the same mergeable statistics as Dask."""
    st = partial(scheme, x)
    if needs_histogram(scheme):
        st.update(partial_histogram(scheme, x, st["min"], st["max"]))
    return finalize(scheme, st)


def levels_for(params, dtype):
    """The codebook in the compute dtype, distinct and sorted."""
    return np.unique(np.asarray(params["codebook"]).astype(dtype))


def encode(scheme, params, chunk, start=None, global_shape=None, group_offset=0, out=None):
    """Codes: unbiased stochastic rounding to the levels (index into the codebook)."""
    shape = chunk.shape
    flat = np.ascontiguousarray(chunk, dtype=compute_dtype(chunk.dtype)).reshape(-1)
    levels = levels_for(params, flat.dtype)
    lay = _layout.row_layout(shape, start, shape if global_shape is None else global_shape)
    codes = np.empty(flat.size, np.uint8) if out is None else out.reshape(-1)
    key = np.uint64(stream_key(scheme.seed))
    bad = 0
    for part in lay.parts:
        if part.R and part.L:
            bad += codebook1d.quantize_sorted(part.view(flat), part.row_index, levels, STOCHASTIC, key,
                                              part.view(codes))
    if bad:
        raise InputError(f"x contains {bad} non-finite value(s): ASQ needs finite data")
    return codes.reshape(shape)


def decode(scheme, params, codes, dtype=np.float32, start=None, global_shape=None, group_offset=0,
           out=None):
    """``codebook[code]`` in ``dtype``."""
    dtype = np.dtype(dtype)
    cdtype = compute_dtype(dtype)
    levels = levels_for(params, cdtype)
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    res = np.empty(flat.size, cdtype)
    if flat.size:
        codebook1d.dequantize_table(flat.reshape(1, -1), levels, res.reshape(1, -1))
    res = res.reshape(codes.shape)
    return res if res.dtype == dtype else res.astype(dtype)
