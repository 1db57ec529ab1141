"""Type aliases of the public signatures (for annotations only; nothing here runs code)."""

import os
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

#: An input array: NumPy (or anything ``np.asarray`` takes), ``dask.array.Array`` or
#: ``xarray.DataArray`` (Dask and xarray are untyped to the checker: ``Any``).
ArrayInput: TypeAlias = npt.ArrayLike | Any
#: An in-memory floating array.
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]
#: A NumPy array or a lazy ``dask.array.Array``.
ArrayResult: TypeAlias = npt.NDArray[Any] | Any
#: Where a Zarr group lives: a local path, an fsspec URL (``s3://...``) or a zarr store object.
StoreLike: TypeAlias = str | os.PathLike[str] | Any
#: A local file or directory path.
PathLike: TypeAlias = str | os.PathLike[str]
