"""Samples for a report's figures: values, their quantization levels, errors, fraction clipped.

:func:`level_view` puts a sample of values on the axis where the scheme's levels are
one grid: the values themselves for one grid per tensor (uniform per tensor, codebooks,
ASQ levels); *quantization steps* ``x / scale + zero_point`` for uniform schemes with
one scale per channel or block (levels are then the integer codes); ``x / block absmax``
for absmax-scaled blocks (levels: the codebook, e.g. NF4's).  A value is *clipped* when
it lies outside its grid: beyond half a step past the last uniform level, or outside the
first and last levels of a codebook.
"""

import numpy as np

MAX_SAMPLE = 1 << 18


def first_rows(shape, max_values=MAX_SAMPLE):
    """Index of the leading rows of an array of ``shape`` holding at most ``max_values`` values."""
    if not shape:
        return ()
    row = int(np.prod(shape[1:], dtype=np.int64)) or 1
    return (slice(0, max(1, min(shape[0], max_values // row))),)


def _view(values, levels, xlabel, clipped):
    return {"values": np.asarray(values, np.float64).reshape(-1), "levels": np.asarray(levels, np.float64),
            "xlabel": xlabel, "clipped": None if clipped is None else float(np.mean(clipped))}


def _uniform_view(scheme, side, x, x_hat):
    """Code-unit view of a uniform scheme; None when the side arrays do not decode ``x_hat``."""
    if scheme.type != "uniform" or "scale" not in side:
        return None
    scale = np.asarray(side["scale"], np.float64).reshape(-1)
    if "offset" in side:  # real zero point: x_hat = q * scale + offset
        zp = -np.asarray(side["offset"], np.float64).reshape(-1) / scale
    else:
        zp = np.asarray(side.get("zero_point", np.zeros_like(scale)), np.float64).reshape(-1)
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
        return _view(x, (grid - z) * s, "value", clipped)
    label = "value / block scale + zero point" if scheme.block_size else "value / channel scale + zero point"
    return _view(u, grid, label + " (quantization steps)", clipped)


def level_view(scheme, side, x, x_hat):
    """Values, levels, axis label and fraction clipped of a sample ``x`` (leading rows) and ``x_hat``.

    Parameters
    ----------
    scheme : Scheme
    side : dict of NumPy side arrays covering the sample (per-channel and per-block ones from
        index 0)
    x, x_hat : ndarray, the sample and its reconstruction
    """
    x = np.asarray(x, np.float64)
    x_hat = np.asarray(x_hat, np.float64)
    view = _uniform_view(scheme, side, x, x_hat)
    if view is not None:
        return view
    if scheme.type in ("codebook", "asq"):
        levels = np.asarray(side.get("codebook", getattr(scheme, "values", ())), np.float64)
        if levels.size:
            return _view(x, levels, "value", (x < levels[0]) | (x > levels[-1]))
    if scheme.type == "blockwise":
        bs = scheme.block_size
        flat, hat = x.reshape(-1), x_hat.reshape(-1)
        pad = -flat.size % bs
        blocks = np.pad(flat, (0, pad)).reshape(-1, bs)
        hblocks = np.pad(np.abs(hat), (0, pad)).reshape(-1, bs)
        absmax = np.abs(blocks).max(axis=1, keepdims=True)
        top = hblocks.max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.where(absmax > 0, blocks / absmax, 0.0).reshape(-1)[:flat.size]
        clipped = (np.abs(blocks) > top * (1 + 1e-6)).reshape(-1)[:flat.size]
        return _view(norm, scheme.codebook, "value / block absmax", clipped)
    levels = np.unique(x_hat)
    return _view(x, levels if levels.size <= 256 else [], "value", None)


def pq_view(X, codebooks):
    """Coordinate 0 of the vectors and the values the product quantizer can give it."""
    return _view(np.asarray(X)[:, 0], np.asarray(codebooks)[0, :, 0], "coordinate 0 of the vectors", None)
