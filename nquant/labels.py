"""xarray interop: the dimension names, coordinates and attributes of a ``DataArray``.

``nquant.quantize`` accepts an ``xarray.DataArray`` (NumPy- or Dask-backed): it
quantizes ``x.data`` and keeps the labels on the ``QuantizedArray``;
``nquant.dequantize`` returns a ``DataArray`` with the same dims, coordinates,
attributes and name; ``nquant.save`` / ``nquant.open`` store them in the group
(coordinates as Zarr arrays in its ``coords`` subgroup, the rest in its
attributes).  xarray is optional (``pip install "nquant[xarray]"``); nothing here
imports it unless a labelled result is built.

Labels are a plain dict::

    {"dims": [str, ...], "name": str or None, "attrs": {...},
     "coords": {name: {"dims": [str, ...], "values": ndarray, "attrs": {...}}}}
"""

import json

import numpy as np

from nquant.errors import InputError, StoreError

ATTR = "xarray"
COORDS = "coords"


def is_dataarray(x):
    """Whether ``x`` is an ``xarray.DataArray`` (checked without importing xarray)."""
    return any(t.__name__ == "DataArray" and t.__module__.startswith("xarray") for t in type(x).__mro__)


def json_attrs(attrs, what):
    """``attrs`` as JSON values; ``InputError`` naming ``what`` when they are not serialisable."""
    try:
        return json.loads(json.dumps(dict(attrs)))
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} attrs={dict(attrs)!r} cannot be stored: values must be JSON "
                         f"serialisable ({e})") from e


def unwrap(x):
    """``(data, labels)``: the array inside a DataArray and its labels, or ``(x, None)``."""
    if not is_dataarray(x):
        return x, None
    coords = {}
    for name, c in x.coords.items():
        coords[str(name)] = {"dims": [str(d) for d in c.dims], "values": np.asarray(c.values),
                             "attrs": json_attrs(c.attrs, f"coordinate {name!r}")}
    labels = {"dims": [str(d) for d in x.dims], "name": None if x.name is None else str(x.name),
              "attrs": json_attrs(x.attrs, "x"), "coords": coords}
    return x.data, labels


def wrap(data, labels):
    """``data`` (NumPy or Dask) as a DataArray with ``labels``; ``data`` itself if none."""
    if labels is None:
        return data
    try:
        import xarray as xr
    except ImportError as e:  # labels only come from a DataArray, so xarray was there
        raise InputError("this QuantizedArray carries xarray labels; install xarray to "
                         "dequantize it (pip install 'nquant[xarray]')") from e
    coords = {name: xr.Variable(c["dims"], c["values"], attrs=c["attrs"])
              for name, c in labels["coords"].items()}
    return xr.DataArray(data, dims=labels["dims"], coords=coords, attrs=labels["attrs"],
                        name=labels["name"])


def write(group, labels):
    """Store ``labels`` in a Zarr group: attributes, and coordinates in the ``coords`` subgroup."""
    if labels is None:
        return
    sub = group.create_group(COORDS, overwrite=True)
    for name, c in labels["coords"].items():
        values = c["values"]
        dtype = str if values.dtype.kind in "OUS" else values.dtype
        z = sub.create_array(name, shape=values.shape, dtype=dtype, chunks=values.shape or None,
                             overwrite=True)
        z[...] = values.astype(object) if dtype is str else values
    group.attrs[ATTR] = {"dims": labels["dims"], "name": labels["name"], "attrs": labels["attrs"],
                         "coords": {name: {"dims": c["dims"], "attrs": c["attrs"]}
                                    for name, c in labels["coords"].items()}}


def read(group, store):
    """The labels stored by :func:`write`, or None."""
    meta = group.attrs.get(ATTR)
    if meta is None:
        return None
    try:
        sub = group[COORDS]
        coords = {name: {"dims": c["dims"], "attrs": c["attrs"], "values": np.asarray(sub[name][...])}
                  for name, c in meta["coords"].items()}
        for c in coords.values():
            if c["values"].dtype.kind == "T":  # variable-length strings: back to NumPy str
                c["values"] = np.array(c["values"].tolist(), dtype=str)
        return {"dims": list(meta["dims"]), "name": meta["name"], "attrs": meta["attrs"], "coords": coords}
    except Exception as e:
        raise StoreError(f"store={store!r} has corrupt xarray labels: {e}") from e
