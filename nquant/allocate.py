"""Mixed precision: spread a bit budget over tensors by their measured sensitivity.

A model quantized at one precision everywhere wastes bits: some tensors move the model's output
far more per unit of quantization error than others.  :func:`allocate` takes, for every tensor,
a few candidate encodings with their stored size and the loss each causes (any additive measure:
the end-to-end output change with only that tensor quantized, or a layer's output error scaled
by a measured sensitivity), and picks one candidate per tensor minimising the summed loss within
a total size.  This is a multiple-choice knapsack, solved by dynamic programming over units of
size: exactly when the sizes are integers (stored bits) with a common divisor that makes few
units, else on sizes rounded *up* to ``budget / resolution``, so the choice never exceeds the
budget and loses at most one such unit per tensor against the unrounded optimum.

:func:`scaled_losses` turns per-candidate layer objectives into losses with one measured
sensitivity per tensor: quantization losses of a smooth model are, to first order, proportional
to the layer's output error ``tr(E H E^T)``, so measuring the loss of one candidate (a single
forward pass per tensor) prices all of them.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from nquant.adaptive import FactoredHessian, adaptive_codebook, factor_hessian, hessian
from nquant.api import dequantize
from nquant.errors import InputError

__all__ = ["allocate", "quantize_allocated", "scaled_losses"]

MAX_RESOLUTION = 1 << 20
"""Largest ``resolution`` accepted (the dynamic programme holds ``tensors x resolution`` choices)."""


def _number(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
        raise InputError(f"{name}={v!r} is invalid: expected a finite number")
    return float(v)


def _candidates(options):
    if not isinstance(options, Mapping) or len(options) == 0:
        raise InputError(f"options of type {type(options).__name__} is invalid: expected a non-empty mapping "
                         "name -> sequence of (size, loss) pairs")
    names, costs, losses = [], [], []
    for name, cands in options.items():
        if not isinstance(cands, Sequence) or len(cands) == 0:
            raise InputError(f"options[{name!r}] is invalid: expected a non-empty sequence of (size, loss) pairs")
        c, l = [], []
        for i, pair in enumerate(cands):
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise InputError(f"options[{name!r}][{i}]={pair!r} is invalid: expected a (size, loss) pair")
            size = _number(pair[0], f"options[{name!r}][{i}] size")
            if size < 0:
                raise InputError(f"options[{name!r}][{i}] size={size!r} is invalid: expected a size >= 0")
            c.append(size)
            l.append(_number(pair[1], f"options[{name!r}][{i}] loss"))
        names.append(name)
        costs.append(np.array(c))
        losses.append(np.array(l))
    return names, costs, losses


EXACT_UNITS = 1 << 16
"""Integer sizes whose greatest common divisor divides the budget into at most this many units
(or ``resolution``, if larger) are allocated exactly, in units of that divisor."""


def _units(costs, budget, resolution):
    """``(units, unit size)`` of the dynamic programme: exact for integer sizes with a common
    divisor that keeps the units few (sizes in bits usually are), else ``budget / resolution``."""
    every = np.concatenate(costs)
    if (every == np.round(every)).all() and every.max() < 2 ** 62:
        g = int(np.gcd.reduce(every.astype(np.int64)))
        if g > 0 and budget // g <= max(resolution, EXACT_UNITS):
            return int(budget // g), float(g)
    return resolution, budget / resolution


def allocate(options: Mapping, budget: float, *, resolution: int = 4096) -> dict:
    """One candidate per tensor, minimising the summed loss within a total size.

    Parameters
    ----------
    options : mapping name -> sequence of ``(size, loss)`` pairs
        The candidates of every tensor: ``size`` >= 0 in any unit (stored bits, say), ``loss``
        a finite number (smaller is better; losses are summed over tensors).
    budget : float
        Largest total size of the chosen candidates (same unit as the sizes).
    resolution : int, default 4096
        Sizes are rounded up to multiples of ``budget / resolution`` for the exact dynamic
        programme (time and memory ``O(tensors x candidates x resolution)``), unless they are
        integers whose greatest common divisor ``g`` splits the budget into at most
        ``max(resolution, EXACT_UNITS)`` units: then the units are ``g`` and the choice is
        the exact optimum.

    Returns
    -------
    dict name -> int
        The index of the chosen candidate of every tensor.  Ties go to the smaller total size,
        then to the earlier candidate.

    Raises
    ------
    InputError
        Malformed options, or a budget below the sum of every tensor's smallest size.
    """
    names, costs, losses = _candidates(options)
    budget = _number(budget, "budget")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or not (
            1 <= resolution <= MAX_RESOLUTION):
        raise InputError(f"resolution={resolution!r} is invalid: expected an integer in [1, {MAX_RESOLUTION}]")
    smallest = float(sum(c.min() for c in costs))
    if smallest > budget:
        raise InputError(f"budget={budget!r} is invalid: the smallest candidates already take {smallest!r}")
    if budget == 0:
        return {n: int(np.flatnonzero(c == 0)[np.argmin(l[c == 0])]) for n, c, l in zip(names, costs, losses)}
    R, unit = _units(costs, budget, int(resolution))
    # units of every candidate, rounded up (so the real total never exceeds the budget); a
    # candidate beyond the whole budget can never be taken
    units = [np.ceil(c / unit * (1 - 1e-12)).astype(np.int64) for c in costs]
    best = np.zeros(R + 1)        # best[u]: smallest loss of the tensors so far within u units
    size = np.zeros(R + 1)        # the real total size of that choice (tie-break)
    choice = np.zeros((len(names), R + 1), np.int16)
    inf = np.inf
    for t, (u, c, l) in enumerate(zip(units, costs, losses)):
        new = np.full(R + 1, inf)
        new_size = np.full(R + 1, inf)
        pick = np.zeros(R + 1, np.int16)
        for k in range(len(u)):
            if u[k] > R:
                continue
            cand = np.full(R + 1, inf)
            cand_size = np.full(R + 1, inf)
            cand[u[k]:] = best[:R + 1 - u[k]] + l[k]
            cand_size[u[k]:] = size[:R + 1 - u[k]] + c[k]
            better = (cand < new) | ((cand == new) & (cand_size < new_size))
            new[better], new_size[better], pick[better] = cand[better], cand_size[better], k
        best, size, choice[t] = new, new_size, pick
    if not np.isfinite(best[R]):
        # rounding up made the smallest candidates overflow the units: they fit the real budget
        return {n: int(np.argmin(c)) for n, c in zip(names, costs)}
    out = {}
    r = R
    for t in range(len(names) - 1, -1, -1):
        k = int(choice[t, r])
        out[names[t]] = k
        r -= int(units[t][k])
    return {n: out[n] for n in names}


def scaled_losses(objectives: Mapping, measured: Mapping, reference: Mapping) -> dict:
    """Losses of every candidate from one measured loss per tensor.

    Parameters
    ----------
    objectives : mapping name -> sequence of float >= 0
        Every candidate's layer objective (``tr(E H E^T)``, e.g. ``q.info["adaptive_round"]
        ["objective"]``).
    measured : mapping name -> float
        The loss measured with the candidate ``reference[name]`` (for instance ``1 - cosine`` of
        the model's outputs with only that tensor quantized).
    reference : mapping name -> int
        Which candidate was measured.

    Returns
    -------
    dict name -> ndarray of float64
        ``measured[name] * objectives[name] / objectives[name][reference[name]]`` (a tensor whose
        reference objective is 0 gets losses 0).
    """
    out = {}
    for name, objs in objectives.items():
        o = np.asarray(objs, np.float64).reshape(-1)
        if o.size == 0 or not np.isfinite(o).all() or (o < 0).any():
            raise InputError(f"objectives[{name!r}] is invalid: expected finite numbers >= 0")
        if name not in measured or name not in reference:
            raise InputError(f"measured / reference lack {name!r}: expected a measured loss of every tensor")
        k = reference[name]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < o.size:
            raise InputError(f"reference[{name!r}]={k!r} is invalid: expected a candidate index in [0, {o.size})")
        m = _number(measured[name], f"measured[{name!r}]")
        out[name] = m * o / o[k] if o[k] > 0 else np.zeros_like(o)
    return out


def _candidate_list(candidates):
    """``[(bits, block_size or None), ...]`` from ints and ``(bits, block_size)`` pairs, sorted."""
    out = []
    if isinstance(candidates, Sequence) and not isinstance(candidates, str):
        for c in candidates:
            bits, block = (c, None) if not isinstance(c, Sequence) else (tuple(c) + (None,))[:2] if len(c) == 2 \
                else (None, None)
            if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not (
                    block is None or isinstance(block, (int, np.integer)) and not isinstance(block, bool)):
                out = []
                break
            out.append((int(bits), None if block is None else int(block)))
    if not out:
        raise InputError(f"candidates={candidates!r} is invalid: expected a non-empty sequence of bit widths "
                         "or (bits, block_size) pairs")
    return sorted(set(out), key=lambda c: (c[0], c[1] is not None, c[1] or 0))


LEVEL_BINS = 16384
"""Default ``bins`` of the candidates' codebook fits (:func:`nquant.adaptive.fit_levels`)."""


def quantize_allocated(weights: Mapping, calibration: Mapping, bits_per_value: float, *,
                       candidates: Sequence[int] = (3, 4, 5), measure=None, sensitivity: Mapping | None = None,
                       **options) -> dict:
    """Quantize every weight with :func:`~nquant.adaptive.adaptive_codebook`, bits spread by sensitivity.

    Each weight is quantized at every candidate bit width; :func:`allocate` then picks one
    candidate per weight so that the stored bits of all of them (codes and every side array)
    stay within ``bits_per_value`` times the number of values, minimising the summed loss.

    Parameters
    ----------
    weights : mapping name -> ndarray of shape (out, in)
    calibration : mapping name -> inputs (in, n_samples) or Hessian (in, in) of that weight
        (anything :func:`~nquant.adaptive.adaptive_round` takes; compute a shared Hessian once
        and pass it for every weight that reads the same inputs).
    bits_per_value : float
        Budget: total stored bits over total values.
    candidates : sequence of int or of ``(bits, block_size)`` pairs, default (3, 4, 5)
        The encodings tried for every weight: code bits, with one absmax per row, or with one
        absmax per ``block_size`` columns (``adaptive_codebook(..., block_size=...)``).
    measure : callable ``(name, W_hat) -> float``, optional
        The loss of the model with only weight ``name`` replaced by ``W_hat`` (its dequantized
        candidate of ``floor(bits_per_value)`` bits, per row, or the nearest candidate), e.g.
        ``1 - cosine`` of the model's outputs on calibration data.  The other candidates'
        losses follow by :func:`scaled_losses` from their layer objectives.  Without it the
        loss of a candidate is its relative output error squared, ``tr(E H E^T) / tr(W H W^T)``,
        every layer counting alike.
    sensitivity : mapping name -> float >= 0, optional
        Instead of ``measure``: the model's loss per unit of each weight's layer objective
        ``tr(E H E^T)`` (measured once by the user, e.g. stored in a calibration store); the loss
        of a candidate is ``sensitivity[name] * objective``.  Every weight needs one.
    **options
        Passed to :func:`~nquant.adaptive.adaptive_codebook` (``damp``, ``act_order``, ``bins``
        (default ``LEVEL_BINS``), ...).  Each distinct calibration entry is factored once
        (:func:`~nquant.adaptive.factor_hessian`) and shared by every candidate and every weight
        that holds the same object.

    Returns
    -------
    dict name -> QuantizedArray
        Each with ``q.info["allocate"]``: the candidates ``[bits, block_size]``, their stored
        bits and losses, and the chosen candidate.
    """
    cands = _candidate_list(candidates)
    budget_per_value = _number(bits_per_value, "bits_per_value")
    if not isinstance(weights, Mapping) or not weights:
        raise InputError("weights is invalid: expected a non-empty mapping name -> 2-D array")
    missing = [n for n in weights if n not in calibration]
    if missing:
        raise InputError(f"calibration lacks {missing[0]!r}: expected inputs or a Hessian for every weight")
    if measure is not None and sensitivity is not None:
        raise InputError("measure and sensitivity are exclusive: pass one way of pricing the candidates")
    if sensitivity is not None:
        lacking = [n for n in weights if n not in sensitivity]
        if lacking:
            raise InputError(f"sensitivity lacks {lacking[0]!r}: expected a sensitivity of every weight")
        sensitivity = {n: _number(sensitivity[n], f"sensitivity[{n!r}]") for n in weights}
        bad = [n for n, v in sensitivity.items() if v < 0]
        if bad:
            raise InputError(f"sensitivity[{bad[0]!r}]={sensitivity[bad[0]]!r} is invalid: expected a number >= 0")
    ref = min(range(len(cands)), key=lambda i: (abs(cands[i][0] - np.floor(budget_per_value)),
                                                cands[i][1] is not None, cands[i][0]))
    options = {"bins": LEVEL_BINS, **options}
    factor_options = {k: options[k] for k in ("damp", "act_order") if k in options}
    fitted, objectives, measured, factored = {}, {}, {}, {}
    n_values = 0
    for name, W in weights.items():
        H = calibration[name]
        if id(H) not in factored:           # weights reading the same inputs share one factor
            A = H
            if not isinstance(A, FactoredHessian) and not (
                    isinstance(A, np.ndarray) and A.ndim == 2 and A.shape[0] == A.shape[1] == np.shape(W)[1]):
                A = hessian(A)              # inputs: one Hessian for every candidate
            factored[id(H)] = (H, A if isinstance(A, FactoredHessian) else factor_hessian(
                A, kind="hessian", **factor_options))
        F = factored[id(H)][1]
        H = F.H
        qs = [adaptive_codebook(W, F, b, block_size=B, kind="hessian", **options) for b, B in cands]
        fitted[name] = qs
        n_values += int(np.size(W))
        objectives[name] = [q.info["adaptive_round"]["objective"] for q in qs]
        if sensitivity is not None:
            measured[name] = sensitivity[name] * objectives[name][ref]
        elif measure is not None:
            measured[name] = float(measure(name, dequantize(qs[ref])))
        else:
            W64 = np.asarray(W, np.float64)
            total = float(np.einsum("ij,ij->", W64 @ H, W64))
            measured[name] = objectives[name][ref] / total if total > 0 else 0.0
    losses = scaled_losses(objectives, measured, {n: ref for n in weights})
    sized = {n: [(8 * q.nbytes, float(l)) for q, l in zip(fitted[n], losses[n])] for n in weights}
    smallest = sum(min(size for size, _ in c) for c in sized.values())
    if smallest > budget_per_value * n_values:
        raise InputError(f"bits_per_value={bits_per_value!r} is invalid: the smallest candidates already take "
                         f"{smallest / n_values:.4f} bits per value")
    choice = allocate(sized, budget_per_value * n_values)
    out = {}
    for name, k in choice.items():
        q = fitted[name][k]
        q.info["allocate"] = {"candidates": [list(c) for c in cands], "stored_bits": [s for s, _ in sized[name]],
                              "losses": [l for _, l in sized[name]], "chosen": list(cands[k]),
                              "bits_per_value": float(budget_per_value)}
        out[name] = q
    return out
