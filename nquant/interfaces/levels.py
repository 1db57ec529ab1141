"""Fit 1-D quantization levels from data and store them as a reusable codebook scheme.

``nquant fit-codebook`` runs :func:`fit_levels` on a source array (Zarr, ``.npy`` or
``.safetensors``) and :func:`save_levels` writes the result: a ``.json`` file holds a
``Codebook`` scheme (``--scheme levels.json`` then uses it), a ``.npy`` file the levels
alone (``--scheme levels.npy`` gives a ``Codebook`` with nearest rounding).
"""

import fnmatch
import json
import os

import numpy as np

from nquant.codebooks import asq, optimal1d
from nquant.errors import InputError, SchemeError
from nquant.safetensors_io import FLOATS, read_tensors
from nquant.schemes import Codebook, scheme_from_json

METHODS = ("kmeans", "quiver", "quiver-approx")
DEFAULT_MAX_VALUES = 1 << 20


def load_values(src, tensor=None, max_values=DEFAULT_MAX_VALUES, seed=0):
    """The values of ``src`` (flattened float64), a seeded uniform sample when larger than ``max_values``.

    Parameters
    ----------
    src : str, a Zarr array, a ``.npy`` file or a ``.safetensors`` file
    tensor : str, optional, glob of the tensor names to take from a ``.safetensors`` file
        (default: every floating tensor with 2 or more dimensions)
    max_values : int or None, sample size limit (None: every value)
    seed : int, seed of the sample
    """
    path = os.fspath(src)
    if path.endswith(".npy"):
        if not os.path.exists(path):
            raise InputError(f"src={path!r} does not exist")
        parts = [np.load(path, mmap_mode="r")]
    elif path.endswith(".safetensors"):
        if not os.path.exists(path):
            raise InputError(f"src={path!r} does not exist")
        tensors = read_tensors(path)
        parts = [a for name, (a, tag) in tensors.items() if tag in FLOATS and
                 (fnmatch.fnmatchcase(name, tensor) if tensor else a.ndim >= 2)]
        if not parts:
            raise InputError(f"tensor={tensor!r} matches no floating tensor of {path!r}")
    else:
        import zarr

        try:
            parts = [zarr.open_array(path, mode="r")]
        except Exception as e:
            raise InputError(f"src={path!r} is not a Zarr array, .npy or .safetensors file: {e}") from None
    n = sum(int(np.prod(p.shape, dtype=np.int64)) for p in parts)
    if n == 0:
        raise InputError(f"src={path!r} holds no values")
    if max_values is None or n <= max_values:
        return np.concatenate([np.asarray(p[...], dtype=np.float64).reshape(-1) for p in parts])
    # sample: sorted flat indices, read per part (contiguous reads where possible)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=int(max_values), replace=False))
    out, offset = [], 0
    for p in parts:
        size = int(np.prod(p.shape, dtype=np.int64))
        mine = idx[(idx >= offset) & (idx < offset + size)] - offset
        if mine.size:
            if isinstance(p, np.ndarray):
                vals = np.asarray(p).reshape(-1)[mine]
            else:  # a Zarr array: read only the sampled values
                vals = p.get_coordinate_selection(np.unravel_index(mine, p.shape))
            out.append(np.asarray(vals, dtype=np.float64))
        offset += size
    return np.concatenate(out)


def fit_levels(x, k, method="kmeans", m=None):
    """``k`` levels for the values ``x``.

    Parameters
    ----------
    x : array_like of float, finite
    k : int, number of levels, 2..256
    method : "kmeans" (exact 1-D k-means: minimum squared error with nearest rounding),
        "quiver" (exact optimal levels of unbiased stochastic rounding),
        "quiver-approx" (QUIVER on a grid of ``m`` intervals: fast on large inputs)
    m : int, optional, grid intervals of ``quiver-approx``

    Returns
    -------
    (levels, figures): float64 ascending unique levels and ``{"objective": ..., "name": ...}``
    """
    if method not in METHODS:
        raise SchemeError(f"method={method!r} is invalid: expected one of {METHODS}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= 256:
        raise SchemeError(f"levels={k!r} is invalid: expected an integer in 2..256")
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise InputError("the source contains NaN or infinite values: levels need finite data")
    if method == "kmeans":
        res = optimal1d.kmeans1d(x, int(k))
        return np.unique(res.centers), {"sse": float(res.sse), "mse": float(res.sse) / x.size}
    res = asq.solve(x, int(k), method="quiver" if method == "quiver" else "quiver_approx", m=m)
    return np.unique(res.levels), {"vnmse": float(res.vnmse)}


def levels_scheme(levels, method):
    """The ``Codebook`` scheme of fitted levels (stochastic rounding for QUIVER levels)."""
    rounding = "nearest" if method == "kmeans" else "stochastic"
    return Codebook(values=tuple(float(v) for v in levels), rounding=rounding)


def save_levels(path, levels, method):
    """Write the levels: ``.json`` (a Codebook scheme's JSON) or ``.npy`` (the levels, float64)."""
    path = os.fspath(path)
    if path.endswith(".npy"):
        np.save(path, np.asarray(levels, dtype=np.float64))
    elif path.endswith(".json"):
        with open(path, "w") as f:
            f.write(levels_scheme(levels, method).to_json())
            f.write("\n")
    else:
        raise InputError(f"out={path!r} is invalid: expected a .json or .npy file name")
    return path


def load_levels_scheme(path):
    """A scheme from a file written by :func:`save_levels` (or any scheme JSON file)."""
    if path.endswith(".npy"):
        values = np.load(path)
        return Codebook(values=tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)))
    with open(path) as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as e:
            raise SchemeError(f"scheme file {path!r} is not valid JSON: {e}") from None
    return scheme_from_json(d)
