"""xarray Datasets in Zarr: every floating data variable quantized with its own scheme (and so its
own error bound), coordinates and the other variables kept exactly.

Layout (Zarr v3)::

    <dst>/               attributes["nquant_dataset"] = {format_version, variables: {name:
                         "quantized" | "exact"}, coords: [names], attrs, complete}
    <dst>/vars/<name>/   one nquant group per quantized variable (:func:`nquant.save`'s layout,
                         with the variable's dims, coordinates and attributes)
    <dst>/exact/<name>   variables stored as they are (not floating point, or scheme None): Zarr
                         arrays with attributes {"dims", "attrs"}
    <dst>/coords/<name>  the Dataset's coordinates, as they are, with {"dims", "attrs"}

Written under ``<dst>.partial`` and swapped in when complete (local paths), as :func:`nquant.save`.
xarray is optional (``pip install "nquant[xarray]"``).
"""

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from nquant import labels, outputs
from nquant.api import dequantize, quantize
from nquant.errors import InputError, StoreError
from nquant.schemes import FORMAT_VERSION, Scheme, Uniform
from nquant.store import finish_partial, open_group, partial_location, write_group
from nquant.store import open as open_store
from nquant._types import StoreLike

DATASET_ATTR = "nquant_dataset"
VARS, EXACT, COORDS = "vars", "exact", "coords"


def _xarray():
    try:
        import xarray as xr
    except ImportError as e:
        raise InputError("datasets need xarray (pip install 'nquant[xarray]')") from e
    return xr


def _schemes(ds, scheme):
    """``{name: Scheme or None}`` for every data variable of ``ds`` (None: stored as it is)."""
    floats = [str(n) for n, v in ds.data_vars.items() if np.dtype(v.dtype).kind == "f"]
    if isinstance(scheme, Scheme):
        chosen = dict.fromkeys(floats, scheme)
    elif isinstance(scheme, Mapping):
        unknown = sorted(set(map(str, scheme)) - {str(n) for n in ds.data_vars})
        if unknown:
            raise InputError(f"scheme names {unknown}, which are not data variables of the Dataset "
                             f"({sorted(map(str, ds.data_vars))})")
        missing = sorted(set(floats) - set(map(str, scheme)))
        if missing:
            raise InputError(f"scheme has no entry for the floating variables {missing}: give each a "
                             "scheme, or None to store it as it is")
        chosen = {str(k): v for k, v in scheme.items()}
        bad = {k: v for k, v in chosen.items() if v is not None and not isinstance(v, Scheme)}
        if bad:
            raise InputError(f"scheme={bad!r} is invalid: expected an nquant scheme or None per variable")
        not_float = sorted(k for k, v in chosen.items() if v is not None and k not in floats)
        if not_float:
            raise InputError(f"scheme quantizes {not_float}, which are not floating point variables")
    else:
        raise InputError(f"scheme={scheme!r} is invalid: expected an nquant scheme, or a dict of "
                         "variable name -> scheme (or None)")
    return {str(n): chosen.get(str(n)) for n in ds.data_vars}


def _with_fill_value(scheme, var):
    """``scheme`` keeping the variable's numeric ``_FillValue`` (CF missing-data marker, in its
    attributes or encoding) exactly, for a Uniform scheme that names none."""
    fv = var.attrs.get("_FillValue", var.encoding.get("_FillValue"))
    if not isinstance(scheme, Uniform) or scheme.fill_value is not None or fv is None:
        return scheme
    fv = np.asarray(fv).reshape(-1)
    if fv.size != 1 or not np.isfinite(fv[0]):  # NaN markers are NaN (nan="propagate")
        return scheme
    return scheme.replace(fill_value=float(fv[0]))


def _write_exact(group, name, var):
    """Write the variable or coordinate ``var`` as a plain Zarr array ``group/name``."""
    data = var.data
    kind = np.dtype(var.dtype).kind
    dtype = str if kind in "OUS" else var.dtype
    chunks = tuple(c[0] for c in data.chunks) if hasattr(data, "dask") and var.ndim else (var.shape or None)
    z = group.create_array(name, shape=var.shape, dtype=dtype, chunks=chunks, overwrite=True,
                           attributes={"dims": [str(d) for d in var.dims],
                                       "attrs": labels.json_attrs(var.attrs, f"variable {name!r}")})
    if hasattr(data, "dask"):
        import dask.array as da

        da.store(data, z, lock=False)
    else:
        values = np.asarray(data)
        z[...] = values.astype(object) if dtype is str else values


def quantize_dataset(ds: Any, dst: StoreLike, scheme: Scheme | Mapping[str, Scheme | None], *,
                     compression: str | None = "auto", overwrite: bool = False) -> dict[str, Any]:
    """Quantize every floating data variable of the xarray Dataset ``ds`` into the Zarr group ``dst``.

    Parameters
    ----------
    ds : xarray.Dataset, NumPy- or Dask-backed (Dask variables are written chunk by chunk)
    dst : str or os.PathLike, a local directory
    scheme : Scheme, or dict of variable name -> Scheme or None
        One scheme for every floating variable, or one per variable (each its own bound, e.g.
        ``{"t2m": Uniform(bits=12, ...), "precip": Uniform(bits=8, ...), "mask": None}``); None
        stores the variable as it is.  Variables that are not floating point, and every
        coordinate, are stored as they are.
    compression : str or None
        Lossless stage of the codes (as :func:`nquant.save`).
    overwrite : bool
        Replace an existing nquant output (never anything else).

    Returns
    -------
    dict: per variable ``{"stored": "quantized" | "exact", "bits_per_value": float or None}``
    """
    xr = _xarray()
    if not isinstance(ds, xr.Dataset):
        raise InputError(f"ds of type {type(ds).__name__} is invalid: expected an xarray.Dataset")
    if outputs.local_path(dst) is None:
        raise StoreError(f"dst={dst!r} is not a local directory (a dataset group is written locally)")
    dst = outputs.local_path(dst)
    chosen = _schemes(ds, scheme)
    names = list(chosen) + [str(c) for c in ds.coords]
    for name in names:  # names become paths: all checked before any write
        outputs.check_name(name, "variable name", InputError)
        if "/" in name:
            raise InputError(f"variable name={name!r} is not a valid name: a '/' (one level of names)")
    report: dict[str, dict[str, Any]] = {}
    with outputs.writing(dst), outputs.write_errors(dst):
        if outputs.check_destination(dst, overwrite) == "ours" and not overwrite:
            raise StoreError(f"dst={dst!r} already exists; pass overwrite=True to replace it")
        partial = partial_location(dst)
        outputs.clear_partial(partial)
        root = outputs.partial_group(partial)
        exact, coords = root.create_group(EXACT), root.create_group(COORDS)
        for name, s in chosen.items():
            var = ds[name]
            if s is None:
                _write_exact(exact, name, ds.data_vars[name].variable)
                report[name] = {"stored": "exact", "bits_per_value": None}
                continue
            q = quantize(var, _with_fill_value(s, var))
            location = outputs.inside(partial, os.path.join(partial, VARS, name))
            write_group(q, location, compression=compression)
            report[name] = {"stored": "quantized", "bits_per_value": q.bits_per_value}
        for name, c in ds.coords.items():
            _write_exact(coords, str(name), c.variable)
        outputs.complete_group(root, DATASET_ATTR, {
            "format_version": FORMAT_VERSION, "complete": True, "attrs": labels.json_attrs(ds.attrs, "ds"),
            "variables": {n: r["stored"] for n, r in report.items()}, "coords": [str(c) for c in ds.coords]})
        finish_partial(partial, dst)
    return report


def _read_exact(xr, group, name, store):
    try:
        z = group[name]
        meta = z.attrs.asdict()
        values = np.asarray(z[...])
        if values.dtype.kind == "T":  # variable-length strings: back to NumPy str
            values = np.array(values.tolist(), dtype=str)
        return xr.Variable(list(meta["dims"]), values, attrs=meta["attrs"])
    except Exception as e:
        raise StoreError(f"store={store!r}: array {name!r} cannot be read: {type(e).__name__}: {e}") from None


def open_dataset(store: StoreLike) -> Any:
    """The xarray Dataset written by :func:`quantize_dataset`: quantized variables dequantized lazily
    (Dask), the others and the coordinates as stored.  Every variable's group is validated as
    :func:`nquant.open` validates one (``StoreError`` naming what is wrong)."""
    xr = _xarray()
    if outputs.local_path(store) is None:
        raise StoreError(f"store={store!r} is not a local directory (a dataset group is written locally)")
    store = outputs.local_path(store)
    root = open_group(store)
    meta = root.attrs.asdict().get(DATASET_ATTR)
    if not isinstance(meta, dict) or meta.get("complete") is not True:
        raise StoreError(f"store={store!r} is not a complete nquant dataset group (no complete "
                         f"'{DATASET_ATTR}' attributes)")
    variables, coord_names = meta.get("variables"), meta.get("coords")
    if not isinstance(variables, dict) or not isinstance(coord_names, list):
        raise StoreError(f"store={store!r} has corrupt dataset attributes: variables={variables!r}, "
                         f"coords={coord_names!r}")
    data_vars = {}
    for name, kind in variables.items():
        outputs.check_name(name, "variable name", StoreError)
        if kind == "quantized":
            data_vars[name] = dequantize(open_store(os.path.join(os.fspath(store), VARS, name)))
        elif kind == "exact":
            data_vars[name] = _read_exact(xr, root[EXACT], name, store)
        else:
            raise StoreError(f"store={store!r}: variable {name!r} is stored as {kind!r}, expected "
                             "'quantized' or 'exact'")
    coords = {str(n): _read_exact(xr, root[COORDS], str(n), store) for n in coord_names}
    return xr.Dataset(data_vars, coords=coords, attrs=meta.get("attrs") or {})
