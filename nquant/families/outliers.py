"""Dense-and-sparse quantization (``Outliers`` schemes): outliers kept exactly, the rest quantized.

Family hooks in :data:`FAMILY` (protocol: :mod:`nquant.families.base`), wrapped around the
base scheme's family (found in :mod:`nquant.families.registry`).

Selection.  The key of a value is ``|x|`` (NaN and infinities: +inf, so non-finite values
are taken first).  ``threshold=t`` selects the values with key ``> t``; ``fraction=f``
selects the ``k = ceil(f * size)`` values of largest key, ties going to the lower flat
(C-order) index.  Side arrays: ``outlier_index`` (int64, ascending flat indices) and
``outlier_value`` (the values, original dtype), next to the base scheme's own side arrays.

Neutral value.  The base scheme sees the array with the outliers replaced by 0 (see
:class:`nquant.schemes.Outliers` for why 0), and dequantization writes the outliers back
exactly, so their codes are never used.

Statistics (the same on NumPy and Dask inputs, for any chunking):

- ``threshold`` is chunk-local: pass 1 collects each chunk's outliers and, on the chunk with
  its outliers zeroed, the base scheme's first-pass statistics; the base's histogram pass,
  if it has one, is this family's second pass.
- ``fraction`` needs the global ``k``-th largest key: pass 1 keeps the top ``k`` of each
  chunk and merges them into the exact global top ``k`` (``O(k)`` per partial); the rule
  "key > t, or key == t and index <= i_t" (``t`` the ``k``-th key, ``i_t`` the last index
  taken at ``t``) then lets each chunk zero its own outliers in pass 2, where the base's
  first-pass statistics are collected.  A base that needs a histogram pass of its own would
  need a third pass: on Dask use ``threshold`` there (NumPy inputs fit any base).

The outlier lists of the whole array are global parameters (held by the client, passed to
every chunk task), which suits the intended small fractions.
"""

import math
from fractions import Fraction

import numpy as np

from nquant.errors import SchemeError
from nquant.families import base, registry

INDEX = "outlier_index"
VALUE = "outlier_value"


def _bfam(scheme):
    return registry.family(scheme.base)


# ----------------------------------------------------------------------------- selection


def n_outliers(scheme, size):
    """Number of outliers of ``fraction`` on ``size`` values: ``ceil(fraction * size)`` (exact)."""
    return min(size, math.ceil(Fraction(scheme.fraction) * size))


def keys(chunk):
    """Selection keys ``|x|`` as float64, NaN mapped to +inf."""
    k = np.abs(np.asarray(chunk, dtype=np.float64)).reshape(-1)
    k[np.isnan(k)] = np.inf
    return k


def _top(key, pos, k):
    """Positions (into ``key``) of the ``k`` largest keys, ties to the lower ``pos``."""
    if key.size <= k:
        return np.arange(key.size)
    if k <= 0:
        return np.zeros(0, np.int64)
    t = np.partition(key, key.size - k)[key.size - k]
    above = np.flatnonzero(key > t)
    ties = np.flatnonzero(key == t)
    ties = ties[np.argsort(pos[ties], kind="stable")[:k - above.size]]
    return np.concatenate([above, ties])


def _to_global(local, shape, start, global_shape):
    """Global flat indices of the chunk's local flat positions ``local``."""
    local = np.asarray(local, np.int64)
    if start is None or global_shape is None or len(shape) == 0 or tuple(shape) == tuple(global_shape):
        return local
    coords = np.unravel_index(local, shape)
    return np.ravel_multi_index(tuple(c + s for c, s in zip(coords, start)), global_shape).astype(np.int64)


def _candidates(scheme, chunk, start, global_shape):
    """``(global index, value, key)`` of the chunk's selected values (top k of the chunk for
    ``fraction``), in ascending index order."""
    key = keys(chunk)
    flat = np.asarray(chunk).reshape(-1)
    if scheme.threshold is not None:
        sel = np.flatnonzero(key > scheme.threshold)
    else:
        gshape = chunk.shape if global_shape is None else global_shape
        k = n_outliers(scheme, int(np.prod(gshape, dtype=np.int64)))
        sel = np.sort(_top(key, np.arange(key.size), k))
    return _to_global(sel, chunk.shape, start, global_shape), flat[sel].copy(), key[sel]


def _chunk_positions(index, shape, start, global_shape):
    """``(local flat positions, slice of index)`` of the outliers that lie in this chunk."""
    n = int(np.prod(shape, dtype=np.int64))
    if index.size == 0 or n == 0:
        return np.zeros(0, np.int64), slice(0, 0), None
    if start is None or global_shape is None or len(shape) == 0 or tuple(shape) == tuple(global_shape):
        lo, hi = np.searchsorted(index, [0, n])
        return index[lo:hi], slice(int(lo), int(hi)), None
    first = int(np.ravel_multi_index(tuple(start), global_shape))
    last = int(np.ravel_multi_index(tuple(s + d - 1 for s, d in zip(start, shape)), global_shape))
    lo, hi = np.searchsorted(index, [first, last + 1])
    cand = index[lo:hi]
    coords = np.unravel_index(cand, global_shape)
    inside = np.ones(cand.size, bool)
    for c, s, d in zip(coords, start, shape):
        inside &= (c >= s) & (c < s + d)
    local = np.ravel_multi_index(tuple(c[inside] - s for c, s in zip(coords, start)), shape)
    return local.astype(np.int64), slice(int(lo), int(hi)), inside


def _zeroed(chunk, local):
    """A copy of ``chunk`` with the values at the local flat positions set to 0."""
    out = np.array(chunk, copy=True)
    if local.size:
        out.reshape(-1)[local] = 0
    return out


def _fill(scheme, params, chunk, start, global_shape):
    local, _, _ = _chunk_positions(np.asarray(params[INDEX]), chunk.shape, start, global_shape)
    return _zeroed(chunk, local) if local.size else chunk


def _fill_rule(chunk, t, i_t, start, global_shape):
    """``chunk`` with the values of key > t, or key == t and global index <= i_t, zeroed."""
    key = keys(chunk)
    sel = key > t
    ties = np.flatnonzero(key == t)
    if ties.size:
        g = _to_global(ties, chunk.shape, start, global_shape)
        sel[ties[g <= i_t]] = True
    local = np.flatnonzero(sel)
    return _zeroed(chunk, local) if local.size else chunk


# ----------------------------------------------------------------------------- protocol


def needs_stats(scheme):
    """Always: the outliers are global parameters."""
    return True


def needs_histogram(scheme):
    """A second pass: the base's histogram (threshold) or the base's statistics (fraction)."""
    bfam = _bfam(scheme)
    if scheme.threshold is not None:
        return bfam.needs_stats(scheme.base) and bfam.needs_histogram(scheme.base)
    return bfam.needs_stats(scheme.base)


def block_quantum(scheme):
    """The base scheme's block quantum."""
    return _bfam(scheme).block_quantum(scheme.base)


def param_specs(scheme, n):
    """The base scheme's per-block side arrays."""
    return _bfam(scheme).param_specs(scheme.base, n)


def chunk_params(scheme, chunk, start=None, global_shape=None, params=None):
    """The base scheme's per-block side arrays of the chunk with its outliers zeroed."""
    filled = _fill(scheme, params, chunk, start, global_shape)
    return _bfam(scheme).chunk_params(scheme.base, filled, start=start, global_shape=global_shape,
                                      params=params)


def partial(scheme, chunk, start=None, global_shape=None):
    """Pass 1: the chunk's outlier candidates (and, for ``threshold``, the base's statistics)."""
    bfam = _bfam(scheme)
    if scheme.fraction is not None and bfam.needs_stats(scheme.base) and bfam.needs_histogram(scheme.base):
        raise SchemeError(f"fraction={scheme.fraction} with base type={scheme.base.type!r}, which needs a "
                          "histogram pass, is not supported on Dask arrays: pass threshold=... instead "
                          "(or quantize a NumPy array)")
    index, value, key = _candidates(scheme, chunk, start, global_shape)
    gshape = chunk.shape if global_shape is None else global_shape
    k = -1 if scheme.fraction is None else n_outliers(scheme, int(np.prod(gshape, dtype=np.int64)))
    st = {"index": index, "value": value, "key": key, "k": k, "base_scheme": scheme.base}
    if scheme.threshold is not None and bfam.needs_stats(scheme.base):
        filled = _zeroed(chunk, _chunk_positions(index, chunk.shape, start, global_shape)[0])
        st["base"] = bfam.partial(scheme.base, filled, start=start, global_shape=global_shape)
    return st


def _threshold_key(st):
    if st["k"] < 0:  # threshold: the base's histogram range
        return _bfam_of(st).histogram_range[0](st["base"])
    return float(st["key"].min()) if st["key"].size else np.inf


def _threshold_index(st):
    if st["k"] < 0:
        return _bfam_of(st).histogram_range[1](st["base"])
    if not st["key"].size:
        return -1
    t = st["key"].min()
    return int(st["index"][st["key"] == t].max())


histogram_range = (_threshold_key, _threshold_index)


def _bfam_of(st):
    return registry.family(st["base_scheme"])


def partial_histogram(scheme, chunk, lo, hi, start=None, global_shape=None):
    """Pass 2: the base's histogram (threshold), or its statistics on the chunk with the
    outliers of the rule ``(t, i_t) = (lo, hi)`` zeroed (fraction)."""
    bfam = _bfam(scheme)
    if scheme.threshold is not None:
        index, _, _ = _candidates(scheme, chunk, start, global_shape)
        filled = _zeroed(chunk, _chunk_positions(index, chunk.shape, start, global_shape)[0])
        return {"base_hist": bfam.partial_histogram(scheme.base, filled, lo, hi, start=start,
                                                    global_shape=global_shape), "base_scheme": scheme.base}
    filled = _fill_rule(chunk, lo, hi, start, global_shape)
    return {"base": bfam.partial(scheme.base, filled, start=start, global_shape=global_shape),
            "base_scheme": scheme.base}


def merge(a, b):
    """Merge two partials: outlier candidates concatenated (the top ``k`` kept), base
    statistics merged by the base family."""
    out = {}
    for name in a:
        if name in ("base", "base_hist"):
            out[name] = _bfam_of(a).merge(a[name], b[name])
        elif name in ("k", "base_scheme"):
            out[name] = a[name]
        elif name not in ("index", "value", "key"):
            out[name] = a[name]
    if "index" in a:
        index = np.concatenate([a["index"], b["index"]])
        value = np.concatenate([a["value"], b["value"]])
        key = np.concatenate([a["key"], b["key"]])
        if a["k"] >= 0:
            sel = np.sort(_top(key, index, a["k"]))
            index, value, key = index[sel], value[sel], key[sel]
        out.update(index=index, value=value, key=key)
    return out


def finalize(scheme, stats=None, data=None):
    """Outlier side arrays (sorted by index) and the base scheme's global parameters."""
    order = np.argsort(stats["index"], kind="stable")
    params = {INDEX: stats["index"][order].astype(np.int64), VALUE: stats["value"][order]}
    bfam = _bfam(scheme)
    if bfam.needs_stats(scheme.base):
        bst = dict(stats["base"])
        bst.update(stats.get("base_hist", {}))
        base = bfam.finalize(scheme.base, bst)
    else:
        base = bfam.finalize(scheme.base, None)
    _check_names(base)
    return {**base, **params}


def _check_names(base_params):
    clash = {INDEX, VALUE} & set(base_params)
    if clash:  # pragma: no cover - no family uses these names
        raise SchemeError(f"base scheme side arrays {sorted(clash)} clash with the outlier arrays")


def fit(scheme, x):
    """Parameters of an in-memory array: its outliers, then the base fitted on the rest."""
    index, value, _ = _candidates(scheme, x, None, None)
    filled = _zeroed(x, index)
    base = _bfam(scheme).fit(scheme.base, filled)
    _check_names(base)
    return {**base, INDEX: index.astype(np.int64), VALUE: value}


def encode(scheme, params, chunk, start=None, global_shape=None, group_offset=0, out=None):
    """The base scheme's codes of the chunk with its outliers zeroed."""
    filled = _fill(scheme, params, chunk, start, global_shape)
    return _bfam(scheme).encode(scheme.base, params, filled, start=start, global_shape=global_shape,
                                group_offset=group_offset, out=out)


def decode(scheme, params, codes, dtype=np.float32, start=None, global_shape=None, group_offset=0,
           out=None):
    """The base scheme's values with the outliers written back exactly (in ``dtype``)."""
    res = _bfam(scheme).decode(scheme.base, params, codes, dtype, start=start, global_shape=global_shape,
                               group_offset=group_offset, out=out)
    index = np.asarray(params[INDEX])
    local, sl, inside = _chunk_positions(index, codes.shape, start, global_shape)
    if local.size:
        values = np.asarray(params[VALUE])[sl]
        if inside is not None:
            values = values[inside]
        flat = res.reshape(-1)  # a view of the (contiguous) result, or of ``out``
        with np.errstate(over="ignore", invalid="ignore"):
            flat[local] = values.astype(res.dtype)
        res = flat.reshape(codes.shape)
    return res


# ----------------------------------------------------------------------------- stored layout, report


def expected_side(scheme, shape, dtype):
    """Stored side arrays: the base scheme's, plus ``outlier_index`` (int64, strictly increasing
    flat indices) and ``outlier_value`` (original dtype), ``ceil(fraction * size)`` of each with
    ``fraction``, any number up to the size with ``threshold``."""
    n = int(np.prod(shape, dtype=np.int64))
    out = _bfam(scheme).expected_side(scheme.base, shape, dtype)
    k = n_outliers(scheme, n) if scheme.fraction is not None else None
    count = (k,) if k is not None else (None,)
    out[INDEX] = base.Side(np.dtype(np.int64), count, max_len=n, min_len=0, check="index", expect=n)
    out[VALUE] = base.Side(np.dtype(dtype), count, max_len=n, min_len=0)
    return out


def bits_per_value(scheme, shape, dtype=np.float32):
    """Bits per value stored: the base scheme's figure plus the outliers (index and value),
    exact with ``fraction``; with ``threshold`` their number depends on the data and is counted
    as 0 (add ``(64 + bits of dtype) * count / size``)."""
    n = int(np.prod(shape, dtype=np.int64))
    k = n_outliers(scheme, n) if scheme.fraction is not None else 0
    side = expected_side(scheme, shape, dtype)
    return base.stored_bits_per_value(side, shape, scheme.bits, counts={INDEX: k, VALUE: k})


def level_view(scheme, side, x, x_hat):
    """The base scheme's view of the sample as the base saw it: outliers (kept exactly, never
    clipped) set to 0 in the values and their reconstruction."""
    index = np.asarray(side.get(INDEX, ()), np.int64)
    index = index[(index >= 0) & (index < x.size)]
    if index.size:
        x, x_hat = x.copy(), x_hat.copy()
        x.reshape(-1)[index] = 0
        x_hat.reshape(-1)[index] = 0
    return _bfam(scheme).level_view(scheme.base, side, x, x_hat)


FAMILY = base.Family(
    name="outliers", needs_stats=needs_stats, needs_histogram=needs_histogram, partial=partial, merge=merge,
    finalize=finalize, fit=fit, encode=encode, decode=decode, block_quantum=block_quantum,
    expected_side=expected_side, bits_per_value=bits_per_value, level_view=level_view,
    partial_histogram=partial_histogram, histogram_range=histogram_range, param_specs=param_specs,
    chunk_params=chunk_params)
