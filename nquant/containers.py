"""``QuantizedArray``: packed codes, side arrays and the scheme that made them."""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nquant import chunked
from nquant.packing import unpack_codes


@dataclass(frozen=True, eq=False)
class QuantizedArray:
    """A quantized array.

    Attributes
    ----------
    scheme : Scheme
    shape : tuple of int, shape of the original array
    dtype : numpy dtype of the original array
    codes : ndarray of uint8, row-packed codes of shape
        ``shape[:-1] + (ceil(shape[-1] * bits / 8),)``: each row of the last axis is an MSB-first bit stream (as
        ``nquant.pack``); flattened, it equals ``pack(codes_unpacked, bits)`` whenever
        ``shape[-1] * bits`` is a multiple of 8; 9..16-bit codes: uint16, one per value, shape
        of the original.
    bits : int, bits per code in ``codes``
    side : dict of str -> ndarray, side information (``scale``, ``zero_point``,
        ``offset``, ``absmax``, ``codebook``, ...), also readable as attributes
    info : dict, summary figures (error metrics) recorded with the array
    chunks : tuple of tuples or None, chunks of the original for a Dask-backed array
        (then ``codes`` and block-wise side arrays are lazy Dask arrays)
    labels : dict or None, dims, coordinates, attributes and name of an ``xarray.DataArray``
        input (``nquant.labels``); ``dequantize`` returns a DataArray with them
    """

    scheme: Any  # the Scheme (family-specific fields are read from it)
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    codes: Any  # ndarray of uint8, or a lazy Dask array
    bits: int
    side: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    chunks: tuple[tuple[int, ...], ...] | None = None
    labels: dict[str, Any] | None = None

    @property
    def is_dask(self) -> bool:
        """Whether codes are a lazy Dask array."""
        return self.chunks is not None

    def __getattr__(self, name: str) -> Any:
        side = object.__getattribute__(self, "side")
        if name in side:
            return side[name]
        raise AttributeError(f"QuantizedArray has no attribute or side array {name!r}")

    @property
    def size(self) -> int:
        """Number of values of the original array."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def codes_unpacked(self) -> Any:
        """One code per value, shape of the original: int8 for signed schemes, else uint8
        (int16 / uint16 for 9..16-bit codes)."""
        if self.is_dask:
            u = chunked.unpack(self.codes, self.bits, self.shape, self.chunks)
        else:
            u = unpack_codes(self.codes, self.bits, self.shape)
        qmin = getattr(self.scheme, "qrange", (0, 0))[0]
        if getattr(self.scheme, "is_signed", False):
            if self.bits > 8:
                return (u.astype(np.int32) + qmin).astype(np.int16)
            return (u.astype(np.int16) + qmin).astype(np.int8)
        return u

    @property
    def nbytes(self) -> int:
        """Bytes of codes plus all side arrays."""
        return int(self.codes.nbytes + sum(a.nbytes for a in self.side.values()))

    @property
    def bits_per_value(self) -> float:
        """``8 * nbytes / size``: bits per value, side information included."""
        return 8.0 * self.nbytes / self.size if self.size else 0.0

    def __repr__(self) -> str:
        return (f"QuantizedArray(shape={self.shape}, dtype={np.dtype(self.dtype).name}, "
                f"scheme={self.scheme!r}, bits_per_value={self.bits_per_value:.4g})")
