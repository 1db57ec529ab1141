"""Range observers for post-training calibration and quantization-aware training.

An observer watches a stream of batches (NumPy arrays, or Dask arrays reduced
chunk by chunk) and turns what it saw into quantization parameters::

    obs = nq.observers.MinMaxObserver(axis=None)        # or axis=k: per channel
    for batch in batches:
        obs.observe(batch)
    params = obs.compute_params(nq.Uniform(bits=8))     # -> nquant.qat.QParams
    y, mask = nq.fake_quantize(x, params)
    q = params.quantize(x)

Observers are **mergeable**: ``a.merge(b)`` is the observer of a's batches
followed by b's, so batches can be observed in parallel (per worker, per Dask
chunk) and combined in a tree.  All statistics are those of
:mod:`nquant.families.uniform` (``partial`` / ``merge`` / ``finalize``) and the
histogram ranges come from the calibration kernels
(``nquant.kernels.calibrate``).

=================================  =====================================================================
observer                           range and merge
=================================  =====================================================================
:class:`MinMaxObserver`            running min/max; merge is exact, associative and commutative
:class:`MovingAverageMinMaxObserver`  PyTorch's EMA of per-batch min/max (``averaging_constant`` c); a
                                   batch maps ``m -> (1 - c) m + c m_batch`` (the first batch sets ``m``);
                                   the state is the composition of these affine maps, so merge is
                                   associative (up to float rounding) but, like the EMA, not commutative
:class:`PercentileObserver`        percentiles of a power-of-two-aligned histogram (see below)
:class:`MSEObserver`               clipping range minimising the expected squared error on that histogram
=================================  =====================================================================

Histograms over a stream: **growing range, exact re-binning.**  Group ``g``'s
histogram has ``bins`` bins of width ``2^e`` whose edges are integer multiples
of ``2^e`` (bin ``b`` holds ``floor(v / 2^e) - origin == b``).  ``e`` is the
smallest exponent for which the observed ``[min, max]`` spans fewer than
``bins`` such bins (and at least ``exponent(max |v|) - 40``).  When a batch
widens the range, ``e`` grows and every old bin falls exactly into one new bin
(``new = (origin + b) >> (e' - e) - origin'``): no count is split or guessed.
The final histogram therefore depends only on the data, not on the batch order,
batch sizes or merge tree, and equals the histogram of all data computed in
one go (a NumPy reference in the tests).  The price: the occupied bins are
between ``bins / 2`` and ``bins`` of the histogram, so percentiles are within
one bin width ``2^e < 2 (max - min) / (bins - 1)`` of the exact ones (about
twice ``range="percentile"``'s width ``(max - min) / bins``).

NaN values are ignored and counted (``compute_params`` raises for schemes with
``nan="raise"``, as :func:`nquant.quantize` does); infinite values raise
``InputError`` when observed.
"""

from collections.abc import Iterable
from typing import Self, TypeVar

import numba
import numpy as np
from numpy.typing import ArrayLike

from nquant import chunked
from nquant.errors import InputError, SchemeError
from nquant.families import uniform
from nquant.kernels import calibrate, stats
from nquant.qat import QParams
from nquant.schemes import Uniform

ObserverT = TypeVar("ObserverT", bound="Observer")

HIST_EXTRA_BITS = 40  # the histogram resolution never goes below 2^-40 of max |v|
HIST_TASK_BUDGET = 1 << 23  # int64 counts held per thread-private histogram copy


# ----------------------------------------------------------------------------- helpers


def _layout_scheme(axis):
    return Uniform(bits=8, axis=axis)


def _check_batch(x):
    if chunked.is_dask(x):
        chunked.check_dtype(x)
        return x
    a = np.asarray(x)
    if a.dtype not in (np.float16, np.float32, np.float64):
        raise InputError(f"batch dtype={a.dtype} is not supported: expected float16, float32 or float64")
    return a


def _minmax(lay_scheme, x):
    """``uniform.partial`` statistics of a batch (one tree reduction for Dask)."""
    if chunked.is_dask(x):
        return chunked.reduce_chunks(x, uniform.partial, uniform.merge, lay_scheme)
    return uniform.partial(lay_scheme, x)


def _finite_range(st):
    """Observed ``(lo, hi)`` per group; ``(0, 0)`` for groups without finite data."""
    return uniform.histogram_range[0](st), uniform.histogram_range[1](st)


def _params(scheme, axis, rmin, rmax, n_nan):
    """QParams of ``scheme`` (with ``axis``) for the clipping range ``[rmin, rmax]`` per group.

    ``uniform.finalize`` of a ``minmax`` scheme turns a range into parameters (zero
    widened into the range, constant groups, symmetric scales) exactly as ``fit`` does.
    """
    scheme = scheme.replace(axis=axis)
    st = {"min": np.asarray(rmin, np.float64), "max": np.asarray(rmax, np.float64), "n_nan": int(n_nan)}
    return QParams(scheme, **uniform.plain_side(scheme, uniform.finalize(scheme.replace(range="minmax"), st)))


# ----------------------------------------------------------------------------- base


class Observer:
    """Base class: per-tensor (``axis=None``) or per-channel (``axis=k``) statistics.

    Parameters
    ----------
    axis : int or None
        One range per index of this axis of every batch (PyTorch's ``ch_axis``).
    """

    def __init__(self, axis=None):
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
            raise SchemeError(f"axis={axis!r} is invalid: expected None or an integer")
        self.axis = None if axis is None else int(axis)
        self.n_batches = 0
        self.n_nan = 0
        self._ndim = None
        self._groups = None
        self._st = None  # merged uniform.partial statistics: min, max, n_nan

    # --- configuration --------------------------------------------------------------------------
    def _config(self):
        return (type(self), self.axis)

    def _empty_like(self):
        new = object.__new__(type(self))
        new.__dict__.update({k: v for k, v in self.__dict__.items()})
        new.n_batches = 0
        new.n_nan = 0
        new._st = None
        new._reset_state()
        return new

    def _reset_state(self):
        pass

    def reset(self) -> Self:
        """Forget all observed batches (keeps the configuration); returns ``self``."""
        self.n_batches = 0
        self.n_nan = 0
        self._st = None
        self._reset_state()
        return self

    # --- observing ------------------------------------------------------------------------------
    def _prepare(self, x):
        x = _check_batch(x)
        if self.axis is not None:
            if x.ndim == 0:
                raise InputError("a per-channel observer (axis set) needs batches with ndim >= 1")
            ax = uniform.norm_axis(_layout_scheme(self.axis), x.ndim)
            groups = int(x.shape[ax])
            if self._groups is not None and groups != self._groups:
                raise InputError(f"batch shape={tuple(x.shape)} has {groups} channels on axis={self.axis} "
                                 f"but the observer has seen {self._groups}")
            self._groups = groups
        else:
            self._groups = 1
        if self._ndim is None:
            self._ndim = x.ndim
        return x

    def _batch_stats(self, x):
        st = _minmax(_layout_scheme(self.axis), x)
        if (st["min"] == -np.inf).any() or (st["max"] == np.inf).any():
            raise InputError("batch contains infinite values (inf); observers need finite data "
                             "(NaN is ignored and counted)")
        return st

    def observe(self, batch: ArrayLike) -> Self:
        """Add one batch to the statistics.

        Parameters
        ----------
        batch : ndarray or dask.array.Array, float16, float32 or float64
            Any shape for per-tensor observers; per-channel observers need the same
            number of channels along ``axis`` in every batch.  A Dask array is one
            batch, reduced chunk by chunk.

        Returns
        -------
        self
        """
        x = self._prepare(batch)
        st = self._batch_stats(x)
        self._update(x, st)
        self._st = st if self._st is None else uniform.merge(self._st, st)
        self.n_nan += int(st["n_nan"])
        self.n_batches += 1
        return self

    __call__ = observe

    def _update(self, x, st):
        pass

    # --- merging --------------------------------------------------------------------------------
    def merge(self, other: Self) -> Self:
        """The observer of ``self``'s batches followed by ``other``'s (neither is modified).

        Parameters
        ----------
        other : Observer of the same type and configuration

        Returns
        -------
        Observer
        """
        if not isinstance(other, Observer) or other._config() != self._config():
            raise SchemeError(f"cannot merge {other!r} into {self!r}: expected an observer of the same type "
                              "and configuration")
        if self._groups is not None and other._groups is not None and self._groups != other._groups:
            raise InputError(f"cannot merge observers of {self._groups} and {other._groups} channels")
        if other._st is None:
            return self.copy()
        if self._st is None:
            return other.copy()
        new = self._empty_like()
        new._groups = self._groups
        new._ndim = self._ndim
        new._st = uniform.merge(self._st, other._st)
        new.n_batches = self.n_batches + other.n_batches
        new.n_nan = self.n_nan + other.n_nan
        new._merge_state(self, other)
        return new

    def _merge_state(self, a, b):
        pass

    def copy(self) -> Self:
        """An independent copy."""
        new = object.__new__(type(self))
        for k, v in self.__dict__.items():
            if isinstance(v, dict):
                v = {kk: (vv.copy() if isinstance(vv, np.ndarray) else vv) for kk, vv in v.items()}
            elif isinstance(v, np.ndarray):
                v = v.copy()
            new.__dict__[k] = v
        return new

    # --- results --------------------------------------------------------------------------------
    @property
    def min_val(self) -> np.ndarray:
        """Observed minimum per group, float64 (G,) (``inf`` where nothing finite was seen)."""
        self._require_data()
        return self._st["min"].copy()

    @property
    def max_val(self) -> np.ndarray:
        """Observed maximum per group, float64 (G,) (``-inf`` where nothing finite was seen)."""
        self._require_data()
        return self._st["max"].copy()

    def _require_data(self):
        if self._st is None:
            raise InputError(f"{type(self).__name__} has observed no batch: call observe(batch) first")

    def clip_range(self, scheme: Uniform | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The clipping range ``(rmin, rmax)`` per group (float64 arrays of shape (G,)).

        ``scheme`` (a Uniform) supplies what a range depends on beyond the data:
        the percentiles of :class:`PercentileObserver` when not fixed, the number of
        levels and symmetry for :class:`MSEObserver`.
        """
        self._require_data()
        return self._range(scheme if scheme is not None else Uniform())

    def _range(self, scheme):
        raise NotImplementedError

    def compute_params(self, scheme: Uniform) -> QParams:
        """Quantization parameters of ``scheme`` for the observed range.

        Parameters
        ----------
        scheme : Uniform
            Bits, symmetry, zero-point convention, signedness, rounding.  Its
            ``axis`` must be None or the observer's axis (the observer's is used);
            ``block_size`` must be None; its ``range`` is ignored (the observer
            decides the range).

        Returns
        -------
        QParams
        """
        if not isinstance(scheme, Uniform):
            raise SchemeError(f"scheme={scheme!r} is invalid: expected an nq.Uniform scheme")
        if scheme.block_size is not None:
            raise SchemeError(f"block_size={scheme.block_size!r} is invalid for an observer: per-block "
                              "parameters need no observer (quantize the data directly)")
        if scheme.axis is not None and scheme.axis != self.axis:
            same = (self._ndim is not None and self.axis is not None
                    and scheme.axis % max(self._ndim, 1) == self.axis % max(self._ndim, 1))
            if not same:
                raise SchemeError(f"axis={scheme.axis!r} of the scheme does not match the observer's "
                                  f"axis={self.axis!r}")
        self._require_data()
        rmin, rmax = self._range(scheme)
        return _params(scheme, self.axis, rmin, rmax, self.n_nan)

    def __repr__(self):
        return (f"{type(self).__name__}(axis={self.axis}, n_batches={self.n_batches}"
                f"{self._repr_extra()})")

    def _repr_extra(self):
        return ""


# ----------------------------------------------------------------------------- min / max


class MinMaxObserver(Observer):
    """Running minimum and maximum (PyTorch's ``MinMaxObserver`` / ``PerChannelMinMaxObserver``).

    The statistics are :func:`nquant.families.uniform.partial`'s, merged with
    :func:`nquant.families.uniform.merge`, so ``compute_params(scheme)`` equals
    ``nquant.families.uniform.fit(scheme, all_batches)`` for ``range="minmax"``.

    Parameters
    ----------
    axis : int or None
    """

    def _range(self, scheme):
        return _finite_range(self._st)


# ----------------------------------------------------------------------------- moving average


class MovingAverageMinMaxObserver(Observer):
    """Exponential moving average of per-batch minima and maxima (PyTorch's EMA observer).

    With ``c = averaging_constant``: the first batch sets ``m = min(batch)``; each
    later batch updates ``m <- m + c (min(batch) - m)`` (likewise for the maximum).
    Per channel, a batch without finite values in a channel leaves that channel alone.

    The state of a run of batches is the composed affine map ``m -> a m + b``
    (``a = (1 - c)^n``) and the first batch's value: the value is ``a m_1 + b``.
    Merging composes the maps in order, which is associative (equal up to float
    rounding for different trees) and **not** commutative: ``a.merge(b)`` means
    a's batches came first.

    Parameters
    ----------
    averaging_constant : float in (0, 1]
    axis : int or None
    """

    def __init__(self, averaging_constant: float = 0.01, axis: int | None = None) -> None:
        c = averaging_constant
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c <= 1:
            raise SchemeError(f"averaging_constant={c!r} is invalid: expected a number in (0, 1]")
        super().__init__(axis)
        self.averaging_constant = float(c)
        self._reset_state()

    def _config(self):
        return super()._config() + (self.averaging_constant,)

    def _reset_state(self):
        self._ema = None  # dict: has, first_min, first_max, a, b_min, b_max (arrays of shape (G,))

    def _update(self, x, st):
        c = self.averaging_constant
        valid = np.isfinite(st["min"])
        lo = np.where(valid, st["min"], 0.0)
        hi = np.where(valid, st["max"], 0.0)
        batch = {
            "has": valid,
            "first_min": lo,
            "first_max": hi,
            "a": np.where(valid, 1.0 - c, 1.0),
            "b_min": np.where(valid, c * lo, 0.0),
            "b_max": np.where(valid, c * hi, 0.0),
        }
        self._ema = batch if self._ema is None else _compose(self._ema, batch)

    def _merge_state(self, a, b):
        self._ema = _compose(a._ema, b._ema)

    def _range(self, scheme):
        e = self._ema
        lo = np.where(e["has"], e["a"] * e["first_min"] + e["b_min"], 0.0)
        hi = np.where(e["has"], e["a"] * e["first_max"] + e["b_max"], 0.0)
        return lo, hi

    def _repr_extra(self):
        return f", averaging_constant={self.averaging_constant}"


def _compose(s, t):
    """EMA state of the batches of ``s`` followed by those of ``t``."""
    return {
        "has": s["has"] | t["has"],
        "first_min": np.where(s["has"], s["first_min"], t["first_min"]),
        "first_max": np.where(s["has"], s["first_max"], t["first_max"]),
        "a": t["a"] * s["a"],
        "b_min": t["a"] * s["b_min"] + t["b_min"],
        "b_max": t["a"] * s["b_max"] + t["b_max"],
    }


# ----------------------------------------------------------------------------- histograms


def hist_grid(lo, hi, bins):
    """Aligned histogram grid ``(exponent, origin)`` per group for the range ``[lo, hi]``.

    ``exponent`` is the smallest integer ``e >= exponent(max(|lo|, |hi|)) - 40``
    with ``floor(hi / 2^e) - floor(lo / 2^e) < bins``; ``origin = floor(lo / 2^e)``.

    Parameters
    ----------
    lo, hi : ndarray of shape (G,), float64, finite, ``lo <= hi``
    bins : int

    Returns
    -------
    exponent, origin : ndarray of shape (G,), int64
    """
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    amax = np.maximum(np.abs(lo), np.abs(hi))
    e_lo = np.where(amax > 0, np.frexp(amax)[1].astype(np.int64) - HIST_EXTRA_BITS, 0)
    width = hi - lo
    log_bins = int(np.ceil(np.log2(bins)))
    est = np.where(width > 0, np.frexp(width)[1].astype(np.int64) - log_bins - 3, e_lo)
    e = np.maximum(e_lo, est)
    while True:
        span = np.floor(np.ldexp(hi, -e)) - np.floor(np.ldexp(lo, -e))
        wide = span >= bins
        if not wide.any():
            break
        e = e + wide
    origin = np.floor(np.ldexp(lo, -e)).astype(np.int64)
    return e.astype(np.int64), origin


def rebin(counts, exponent, origin, new_exponent, new_origin):
    """Counts of an aligned histogram moved exactly onto a coarser aligned grid.

    Fine bin ``b`` covers ``[(origin + b) 2^e, (origin + b + 1) 2^e)``, which lies
    inside coarse bin ``((origin + b) >> (e' - e)) - origin'``.

    Parameters
    ----------
    counts : ndarray of shape (G, B), int64
    exponent, origin, new_exponent, new_origin : ndarray of shape (G,), int64

    Returns
    -------
    ndarray of shape (G, B), int64
    """
    G, B = counts.shape
    d = new_exponent - exponent
    occupied = counts.sum(axis=1) > 0
    if np.any(d[occupied] < 0):
        raise AssertionError("histogram grid shrank: the new exponent must not be smaller")
    d = np.clip(d, 0, 62)
    idx = ((origin[:, None] + np.arange(B, dtype=np.int64)[None, :]) >> d[:, None]) - new_origin[:, None]
    nz = counts > 0
    if np.any(idx[nz] < 0) or np.any(idx[nz] >= B):
        raise AssertionError("occupied bins fell outside the new histogram grid")
    flat = (np.arange(G, dtype=np.int64)[:, None] * B + np.clip(idx, 0, B - 1))[nz]
    return np.bincount(flat, weights=None if not nz.any() else counts[nz],
                       minlength=G * B).astype(np.int64).reshape(G, B)


def _partial_pow2(scheme, chunk, inv_width, origin, bins, start=None, global_shape=None):
    """Aligned histogram of one chunk (a ``partial`` for ``chunked.reduce_chunks``)."""
    shape = chunk.shape
    gshape = shape if global_shape is None else global_shape
    flat = np.ascontiguousarray(chunk, dtype=uniform.compute_dtype(chunk.dtype)).reshape(-1)
    lay = uniform.layout(scheme, shape, start, gshape)
    G = len(origin)
    tasks = max(1, min(numba.get_num_threads(), HIST_TASK_BUDGET // max(1, G * bins)))
    counts = np.zeros((G, bins), np.int64)
    for part in lay.parts:
        if part.R and part.L:
            counts += stats.histogram_pow2(part.view(flat), part.row_group, lay.col_step, inv_width, origin,
                                           bins, tasks)
    return {"counts": counts}


class HistogramObserver(Observer):
    """Base of the histogram observers: an exactly re-binned, aligned histogram per group.

    Parameters
    ----------
    bins : int >= 16 or None
        Bins per group; default 2048 per tensor and 256 per channel (as
        ``nq.Uniform``'s ``bins``), which keeps a (channels, bins) histogram small.
    axis : int or None
    """

    def __init__(self, bins: int | None = None, axis: int | None = None) -> None:
        bad = isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 16
        if bins is not None and bad:
            raise SchemeError(f"bins={bins!r} is invalid: expected None or an integer >= 16")
        super().__init__(axis)
        self.bins = int(bins) if bins is not None else (2048 if self.axis is None else 256)
        self._reset_state()

    def _config(self):
        return super()._config() + (self.bins,)

    def _reset_state(self):
        self.exponent = None
        self.origin = None
        self.counts = None

    def _grid_for(self, st):
        lo, hi = _finite_range(st)
        return hist_grid(lo, hi, self.bins)

    def _update(self, x, st):
        merged = st if self._st is None else uniform.merge(self._st, st)
        e, o = self._grid_for(merged)
        counts = self._moved(e, o)
        inv = np.ldexp(1.0, -e)
        lay = _layout_scheme(self.axis)
        if chunked.is_dask(x):
            part = chunked.reduce_chunks(x, _partial_pow2, uniform.merge, lay, (inv, o, self.bins))
        else:
            part = _partial_pow2(lay, x, inv, o, self.bins)
        self.counts = counts + part["counts"]
        self.exponent, self.origin = e, o

    def _moved(self, e, o):
        if self.counts is None:
            return np.zeros((len(e), self.bins), np.int64)
        return rebin(self.counts, self.exponent, self.origin, e, o)

    def _merge_state(self, a, b):
        e, o = self._grid_for(self._st)
        self.counts = a._moved(e, o) + b._moved(e, o)
        self.exponent, self.origin = e, o

    @property
    def histogram_range(self):
        """``(lo, hi)`` of the histogram per group: ``origin * 2^e`` and ``(origin + bins) * 2^e``."""
        self._require_data()
        return (np.ldexp(self.origin.astype(np.float64), self.exponent),
                np.ldexp((self.origin + self.bins).astype(np.float64), self.exponent))

    def _clip_to_data(self, rmin, rmax):
        lo, hi = _finite_range(self._st)
        return np.clip(rmin, lo, hi), np.clip(rmax, lo, hi)

    def _repr_extra(self):
        return f", bins={self.bins}"


class PercentileObserver(HistogramObserver):
    """Clipping range at two percentiles of the observed values (histogram-based).

    Percentiles interpolate linearly within a bin
    (:func:`nquant.kernels.calibrate.histogram_percentiles`) and are clipped to
    the observed ``[min, max]``: within one bin width of ``np.percentile`` of
    all observed data.

    Parameters
    ----------
    percentile : (low, high) in percent, or None to take the scheme's ``percentile``
    bins : int or None (2048 per tensor, 256 per channel)
    axis : int or None
    """

    def __init__(self, percentile: tuple[float, float] | None = None, bins: int | None = None,
                 axis: int | None = None) -> None:
        if percentile is not None:
            p = percentile
            if (not isinstance(p, (tuple, list)) or len(p) != 2
                    or not all(isinstance(v, (int, float)) for v in p) or not 0 <= p[0] < p[1] <= 100):
                raise SchemeError(f"percentile={p!r} is invalid: expected (low, high) with "
                                  "0 <= low < high <= 100")
            percentile = (float(p[0]), float(p[1]))
        super().__init__(bins, axis)
        self.percentile = percentile

    def _config(self):
        return super()._config() + (self.percentile,)

    def _range(self, scheme):
        p = self.percentile if self.percentile is not None else scheme.percentile
        lo, hi = self.histogram_range
        rmin, rmax = calibrate.histogram_percentiles(self.counts, lo, hi, p[0], p[1])
        return self._clip_to_data(rmin, rmax)


class MSEObserver(HistogramObserver):
    """Clipping range minimising the expected squared quantization error (histogram-based).

    :func:`nquant.kernels.calibrate.mse_search` over the aligned histogram with the
    scheme's number of levels and symmetry (``nquant.families.uniform.MSE_GRID`` candidates
    per end), the result clipped to the observed ``[min, max]``.

    Parameters
    ----------
    bins : int or None (2048 per tensor, 256 per channel)
    axis : int or None
    """

    def _range(self, scheme):
        lo, hi = self.histogram_range
        qmin, qmax = scheme.qrange
        rmin, rmax = calibrate.mse_search(self.counts, lo, hi, qmin, qmax, uniform.mse_mode(scheme),
                                          uniform.MSE_GRID)
        return self._clip_to_data(rmin, rmax)


OBSERVERS = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}


def observe(batches: Iterable[ArrayLike], observer: ObserverT) -> ObserverT:
    """Run ``observer`` over an iterable of batches and return it (a convenience loop)."""
    for b in batches:
        observer.observe(b)
    return observer
