"""Exceptions raised by nquant.

All derive from :class:`NQuantError`; messages name the parameter, the value
and what is allowed.
"""


class NQuantError(Exception):
    """Base class of every error nquant raises on purpose."""


class SchemeError(NQuantError, ValueError):
    """A quantization scheme or a parameter is invalid (bits, axis, rounding, ...)."""


class InputError(NQuantError, ValueError):
    """The data is unusable: wrong dtype or shape, NaN/inf where none is allowed."""


class StoreError(NQuantError, OSError):
    """A store is missing, incomplete, foreign or corrupt."""


class DeviceError(NQuantError, RuntimeError):
    """The requested device is unavailable (no GPU, no numba-cuda)."""
