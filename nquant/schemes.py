"""Schemes: frozen dataclasses that fully describe a quantization.

A scheme validates its parameters on construction (``SchemeError`` naming the
parameter and value), round-trips through JSON (``to_json`` /
:func:`scheme_from_json`) and tokenizes deterministically for Dask.  The JSON
carries ``"type"`` and ``"format_version"``; later versions keep reading
earlier ones.
"""

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar

import numpy as np
import numpy.typing as npt

from nquant import limits
from nquant.errors import SchemeError
from nquant.codebooks.grids import normal_float
from nquant.kernels.rounding import MODES

FORMAT_VERSION = 1

_REGISTRY: dict[str, type["Scheme"]] = {}

T = TypeVar("T", bound=type["Scheme"])

#: A grid of levels as a user passes it (stored as a tuple of float).
Levels = Sequence[float] | npt.NDArray[np.floating[Any]]
#: Rounding modes (``nquant.kernels.rounding.MODES``).
Rounding = Literal["nearest", "nearest_away", "floor", "ceil", "stochastic"]
#: Storage of float side arrays (``SCALE_DTYPES``).
ScaleDtype = Literal["float32", "float16", "bfloat16"]


def register(cls: T) -> T:
    """Class decorator: make a scheme type known to :func:`scheme_from_json`."""
    _REGISTRY[cls.type] = cls
    return cls


def invalid(name: str, value: object, allowed: str) -> None:
    """Raise ``SchemeError``: ``name=value is invalid: expected allowed``."""
    raise SchemeError(f"{name}={value!r} is invalid: expected {allowed}")


@dataclasses.dataclass(frozen=True)
class Scheme:
    """Base of all schemes."""

    type: ClassVar[str] = ""

    if TYPE_CHECKING:  # every scheme has these (fields or properties); not dataclass fields
        @property
        def bits(self) -> int: ...

        @property
        def block_size(self) -> int | None: ...

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with ``type`` and ``format_version`` (tuples become lists)."""
        d = {"type": self.type, "format_version": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict` for this class."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"type", "format_version"}
        if unknown:
            raise SchemeError(f"unknown field(s) {sorted(unknown)} for scheme type {cls.type!r}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def __dask_tokenize__(self) -> tuple[str, str]:
        return (type(self).__name__, self.to_json())


def scheme_from_json(text: "str | bytes | bytearray | Mapping[str, Any]") -> "Scheme":
    """Scheme from JSON text or a dict written by ``Scheme.to_json``.

    Anything else (invalid JSON, a JSON list or number, fields of the wrong type) is a
    one-line ``SchemeError``.
    """
    if isinstance(text, (str, bytes, bytearray)):
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise SchemeError(f"scheme JSON is invalid: {e}") from None
    else:
        d = dict(text) if isinstance(text, Mapping) else text
    if not isinstance(d, dict):
        raise SchemeError(f"scheme={_short(d)} is invalid: expected a JSON object such as "
                          '{"type": "uniform", "bits": 8}')
    kind = d.get("type")
    if not isinstance(kind, str):
        raise SchemeError(f"type={_short(kind)} is not a known scheme type: expected one of "
                          f"{sorted(_REGISTRY)}")
    if kind not in _REGISTRY:
        raise SchemeError(f"type={kind!r} is not a known scheme type: expected one of {sorted(_REGISTRY)}")
    version = d.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SchemeError(f"format_version={_short(version)} is newer than this nquant reads "
                          f"({FORMAT_VERSION})")
    try:
        return _REGISTRY[kind].from_dict(d)
    except (TypeError, ValueError, RecursionError) as e:
        if isinstance(e, SchemeError):
            raise
        # a field of an unexpected type that a check did not anticipate (unhashable, nested...)
        raise SchemeError(f"scheme type {kind!r} has an invalid field: {e}") from None


def _short(v, n=80):
    """``repr(v)`` cut to ``n`` characters (a message stays one short line)."""
    r = repr(v)
    return r if len(r) <= n else r[:n - 3] + "..."


RANGES = ("minmax", "percentile", "percentile_exact", "mse")
SCALE_DTYPES = ("float32", "float16", "bfloat16")
"""Storage of float side arrays (scales, offsets, absmax): ``bfloat16`` is stored as the
``uint16`` upper half of the float32 bit pattern (NumPy has no bfloat16)."""
ZERO_POINT_STORAGE = ("int32", "packed")


def _check_scale_dtype(scheme):
    if scheme.scale_dtype not in SCALE_DTYPES:
        invalid("scale_dtype", scheme.scale_dtype, f"one of {SCALE_DTYPES}")
    if scheme.double_quant is not True and scheme.double_quant is not False:
        invalid("double_quant", scheme.double_quant, "True or False")


class _DefaultInt(int):
    """The default ``bits`` of a Uniform, told apart from an explicit 8 by identity."""


_DEFAULT_BITS = _DefaultInt(8)


@register
@dataclasses.dataclass(frozen=True)
class Uniform(Scheme):
    """Uniform affine quantization ``q = clip(round(r / s) + z, qmin, qmax)``.

    Parameters
    ----------
    bits : int, 1..16
        Codes of 1..8 bits are stored bit-packed in uint8, codes of 9..16 bits one per
        uint16.  Default 8, or 16 with an error bound.
    symmetric : bool
        Zero point 0 and ``scale = absmax / qmax`` (needs ``bits >= 2``); a constant
        ``c`` gets ``scale = |c|`` so that it round-trips exactly.
    axis : int or None
        One scale (and zero point) per index of this axis (per channel).
    block_size : int or None
        One scale per block of consecutive values of the flattened array.
    range : "minmax", "percentile", "percentile_exact", "mse" or (rmin, rmax)
        Calibration of the clipping range.  ``percentile`` and ``mse`` use a
        mergeable histogram of ``bins`` bins (percentiles within one bin width,
        ``(max - min) / bins``, of the exact ones); ``percentile_exact`` uses
        ``np.percentile`` on in-memory data.
    percentile : (low, high), in percent
    zero_point : "int" or "float"
        ``"int"``: ``q = round(r / s) + z`` with an integer ``z`` (PyTorch's
        convention; the range is widened to contain 0 so that 0 is exact).
        ``"float"``: ``q = round((r - rmin) / s)`` with a real offset ``rmin``
        (seed 000's grid ``-4 + 8i/7`` is exact in this form; the float32 offset is
        ``rmin`` rounded up, so that ``rmin`` gets code 0 in every rounding mode).
    rounding : "nearest", "nearest_away", "floor", "ceil", "stochastic"
    seed : int, key of the counter-based stream of stochastic rounding (any integer, taken
        modulo ``2**64``)
    signed : bool or None
        Signed code range ``[-2^(b-1), 2^(b-1) - 1]``; default: ``symmetric``.
    narrow_range : bool
        Signed codes drop ``-2^(b-1)`` (symmetric range ``[-qmax, qmax]``).
    nan : "raise" or "propagate"
        ``"propagate"`` reserves the top code for NaN (decoded back to NaN).
    bins : int or None
        Histogram bins for ``percentile`` and ``mse``; default 2048 per tensor and
        256 per channel (``axis``), which keeps a (channels, bins) histogram small.
    scale_dtype : "float32", "float16" or "bfloat16"
        Storage of ``scale`` (and ``offset``).  A narrower scale is rounded up (the offset
        down) and the values are encoded with the stored one, so decoding gives exactly
        what encoding chose and nothing clips that a float32 scale would not clip.  A
        scale or offset beyond the dtype's range is an ``InputError`` naming
        ``scale_dtype`` (no silent fallback).
    zero_point_storage : "packed" or "int32"
        ``"packed"`` (default): symmetric schemes store no zero point; integer zero points are
        stored as ``bits``-bit codes ``zero_point - qmin`` (``zero_point_codes``, uint8:
        row-packed per block with ``block_size``, one byte per channel or tensor otherwise;
        uint16 for 9..16 bits).  ``"int32"`` (the format of earlier stores, which scheme JSON
        without this field reads as): an int32 ``zero_point`` per group, 0 for symmetric
        schemes.
    double_quant : bool
        With ``block_size``: the block scales are quantized to 8 bits as QLoRA and
        llama.cpp super-blocks do (:class:`Blockwise`): ``scale_codes`` (uint8 per block),
        ``scale2`` (float32 per 256 blocks) and ``scale_offset`` (float32, the exact mean
        scale); each code is raised where the decoded scale would be below the block's
        own, so the block's values never clip.  Needs ``zero_point="int"`` and
        ``scale_dtype="float32"``.
    abs_error : float or None
        Error-bounded mode: ``max |x - x_hat| <= abs_error`` is guaranteed for every finite
        value, float rounding of the step, of the encoder and of the decoder included (for the
        data's own dtype or a wider one).  The step is the largest float32 whose worst-case
        error stays within the bound (just below ``2 * abs_error``), the offset the group's
        minimum; ``bits`` caps the code width (a range that needs more levels is an
        ``InputError``).  Implies ``zero_point="float"``, ``range="minmax"`` and nearest
        rounding.
    rel_error : float or None
        Error-bounded mode with the bound relative to each group's value range:
        ``abs_error = rel_error * (max - min)`` (``rel_error * max |x|`` for a constant group).
    fill_value : float or None
        Values equal to it (in the data's dtype: a ``_FillValue`` / masked marker) are
        excluded from the calibration and kept exactly, under a reserved code.
    """

    type: ClassVar[str] = "uniform"

    bits: int = dataclasses.field(default_factory=lambda: _DEFAULT_BITS)
    symmetric: bool = False
    axis: int | None = None
    block_size: int | None = None
    range: Literal["minmax", "percentile", "percentile_exact", "mse"] | tuple[float, float] = "minmax"
    percentile: tuple[float, float] = (0.1, 99.9)
    zero_point: Literal["int", "float"] = "int"
    rounding: Rounding = "nearest"
    seed: int = 0
    signed: bool | None = None
    narrow_range: bool = False
    nan: Literal["raise", "propagate"] = "raise"
    bins: int | None = None
    scale_dtype: ScaleDtype = "float32"
    zero_point_storage: Literal["int32", "packed"] = "packed"
    double_quant: bool = False
    abs_error: float | None = None
    rel_error: float | None = None
    fill_value: float | None = None

    def __post_init__(self):
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        self._check_error_bound()
        if self.bits is _DEFAULT_BITS:  # not given: 8, or 16 with an error bound
            object.__setattr__(self, "bits", 16 if self.error_bounded else 8)
        if not is_int(self.bits) or not 1 <= self.bits <= 16:
            invalid("bits", self.bits, "an integer in 1..16")
        if self.symmetric not in (True, False):
            invalid("symmetric", self.symmetric, "True or False")
        if self.symmetric and self.bits < 2:
            invalid("bits", self.bits, "bits >= 2 for symmetric=True (use symmetric=False for 1 bit)")
        if self.axis is not None and not is_int(self.axis):
            invalid("axis", self.axis, "None or an integer")
        if self.block_size is not None and (not is_int(self.block_size) or self.block_size < 1):
            invalid("block_size", self.block_size, "None or an integer >= 1")
        if self.axis is not None and self.block_size is not None:
            invalid("axis", self.axis, "None when block_size is given (one granularity at a time)")
        r = self.range
        if isinstance(r, (tuple, list)):
            if len(r) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r):
                invalid("range", r, "a pair (rmin, rmax) of numbers")
            if not all(limits.fits_float32(float(v)) for v in r):
                invalid("range", r, f"finite numbers within the float32 range (|v| <= {limits.F32_MAX:.8g})")
            if float(r[0]) > float(r[1]):
                invalid("range", r, "rmin <= rmax")
            object.__setattr__(self, "range", (float(r[0]), float(r[1])))
        elif r not in RANGES:
            invalid("range", r, f"one of {RANGES} or (rmin, rmax)")
        p = self.percentile
        if (not isinstance(p, (tuple, list)) or len(p) != 2
                or not all(isinstance(v, (int, float)) for v in p) or not 0 <= p[0] < p[1] <= 100):
            invalid("percentile", p, "(low, high) with 0 <= low < high <= 100")
        object.__setattr__(self, "percentile", (float(p[0]), float(p[1])))
        if self.block_size is not None and r in ("percentile", "percentile_exact", "mse"):
            invalid("range", r, "'minmax' or (rmin, rmax) with block_size")
        if self.zero_point not in ("int", "float"):
            invalid("zero_point", self.zero_point, "'int' or 'float'")
        if self.symmetric and self.zero_point != "int":
            invalid("zero_point", self.zero_point, "'int' when symmetric=True (the zero point is 0)")
        if self.rounding not in MODES:
            invalid("rounding", self.rounding, f"one of {tuple(MODES)}")
        if not is_int(self.seed):
            invalid("seed", self.seed, "an integer")
        if self.signed not in (None, True, False):
            invalid("signed", self.signed, "None, True or False")
        if self.narrow_range not in (True, False):
            invalid("narrow_range", self.narrow_range, "True or False")
        if self.nan not in ("raise", "propagate"):
            invalid("nan", self.nan, "'raise' or 'propagate'")
        if self.nan == "propagate" and self.bits < 2:
            invalid("bits", self.bits, "bits >= 2 with nan='propagate' (one code is reserved for NaN)")
        if self.bins is not None and (not is_int(self.bins) or self.bins < 16):
            invalid("bins", self.bins, "None or an integer >= 16")
        if self.bins is not None and self.bins > limits.MAX_BINS:
            invalid("bins", self.bins, f"None or an integer in 16..{limits.MAX_BINS}")
        _check_scale_dtype(self)
        if self.zero_point_storage not in ZERO_POINT_STORAGE:
            invalid("zero_point_storage", self.zero_point_storage, f"one of {ZERO_POINT_STORAGE}")
        if self.double_quant and self.block_size is None:
            invalid("double_quant", self.double_quant, "False without block_size (it quantizes block scales)")
        if self.double_quant and self.zero_point != "int":
            invalid("double_quant", self.double_quant, "False with zero_point='float'")
        if self.double_quant and self.scale_dtype != "float32":
            invalid("scale_dtype", self.scale_dtype, "'float32' with double_quant=True (the 8-bit "
                    "scale codes replace the scale array)")
        if self.error_bounded and (self.scale_dtype != "float32" or self.double_quant):
            name = "scale_dtype" if self.scale_dtype != "float32" else "double_quant"
            invalid(name, getattr(self, name), "the default with abs_error/rel_error (the bound is "
                    "proved for the float32 step it chooses)")
        qmin, qmax = self.qrange
        if qmax <= qmin or (self.symmetric and qmax < 1):
            invalid("bits", self.bits, "more bits: this code range leaves no room "
                  f"(qmin={qmin}, qmax={qmax} with signed={self.is_signed}, "
                  f"narrow_range={self.narrow_range}, nan={self.nan!r})")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; JSON written before ``zero_point_storage`` existed (every
        earlier store) stored an int32 zero point, whatever the default is now."""
        d = dict(d)
        d.setdefault("zero_point_storage", "int32")
        return super().from_dict(d)

    def _check_error_bound(self):
        """Validate ``abs_error``, ``rel_error`` and ``fill_value``; an error bound sets the
        real-offset form (``zero_point="float"``) and needs min/max ranges and nearest rounding."""
        for name in ("abs_error", "rel_error", "fill_value"):
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not limits.fits_float32(float(v)):
                invalid(name, v, f"None or a finite number within the float32 range (|v| <= {limits.F32_MAX:.8g})")
            object.__setattr__(self, name, float(v))
        if self.abs_error is not None and self.rel_error is not None:
            invalid("abs_error", self.abs_error, f"None when rel_error={self.rel_error!r} is given (one bound)")
        if self.abs_error is not None and not self.abs_error > 0:
            invalid("abs_error", self.abs_error, "a number > 0")
        if self.rel_error is not None and not 0 < self.rel_error < 1:
            invalid("rel_error", self.rel_error, "a number in (0, 1)")
        if not self.error_bounded:
            return
        name = "abs_error" if self.abs_error is not None else "rel_error"
        value = getattr(self, name)
        if self.symmetric:
            invalid("symmetric", self.symmetric, f"False with {name}={value!r} (the grid starts at the data's minimum)")
        if self.range != "minmax":
            invalid("range", self.range, f"'minmax' with {name}={value!r} (clipping would break the bound)")
        if self.rounding not in ("nearest", "nearest_away"):
            invalid("rounding", self.rounding, f"'nearest' or 'nearest_away' with {name}={value!r}")
        object.__setattr__(self, "zero_point", "float")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; ``abs_error``, ``rel_error`` and ``fill_value`` only when set, so that a
        scheme without them keeps the JSON (and the job fingerprint) it had before they existed."""
        d = super().to_dict()
        for name in ("abs_error", "rel_error", "fill_value"):
            if d[name] is None:
                del d[name]
        return d

    @property
    def error_bounded(self) -> bool:
        """Whether the scheme guarantees a maximum error (``abs_error`` or ``rel_error``)."""
        return self.abs_error is not None or self.rel_error is not None

    @property
    def hist_bins(self) -> int:
        """Histogram bins used by ``percentile`` and ``mse`` calibration."""
        if self.bins is not None:
            return self.bins
        return 2048 if self.axis is None else 256

    @property
    def is_signed(self) -> bool:
        """Whether codes are signed integers (``codes_unpacked`` dtype int8)."""
        return self.symmetric if self.signed is None else self.signed

    @property
    def qrange(self) -> tuple[int, int]:
        """``(qmin, qmax)`` of the codes that finite values may take."""
        b = self.bits
        if self.is_signed:
            qmin, qmax = -(1 << (b - 1)), (1 << (b - 1)) - 1
            if self.narrow_range:
                qmin += 1
        else:
            qmin, qmax = 0, (1 << b) - 1
        if self.nan == "propagate":
            qmax -= 1
        if self.fill_value is not None:
            qmax -= 1
        return qmin, qmax


def _check_values(name, values, max_len=256):
    try:
        vals = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        invalid(name, values, "a sequence of numbers")
    if not 1 <= len(vals) <= max_len:
        invalid(name, f"<{len(vals)} values>", f"1..{max_len} values")
    if not all(limits.fits_float32(v) for v in vals):
        invalid(name, vals, f"finite values within the float32 range (|v| <= {limits.F32_MAX:.8g}) of the "
              "float32 side arrays")
    if any(b <= a for a, b in zip(vals, vals[1:])):
        invalid(name, vals, "strictly increasing values (a sorted grid without duplicates)")
    return vals


def _code_bits(k):
    return max(1, (k - 1).bit_length())


@register
@dataclasses.dataclass(frozen=True)
class Codebook(Scheme):
    """Rounding to a sorted 1-D grid of levels (any grid: NF, FP4/FP8, k-means, ...).

    Parameters
    ----------
    values : sequence of float, strictly increasing, 1..256 levels
    rounding : "nearest" (ties to the lower level), "nearest_away", "floor", "ceil",
        "stochastic" (unbiased between the two neighbouring levels)
    seed : int, key of the counter-based stream of stochastic rounding

    Codes are indices into ``values`` with ``ceil(log2(len(values)))`` bits.
    """

    type: ClassVar[str] = "codebook"

    values: Levels = (0.0,)
    rounding: Rounding = "nearest"
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "values", _check_values("values", self.values))
        if self.rounding not in MODES:
            invalid("rounding", self.rounding, f"one of {tuple(MODES)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            invalid("seed", self.seed, "an integer")

    @property
    def bits(self) -> int:
        """Bits per code."""
        return _code_bits(len(self.values))

    block_size: ClassVar[None] = None


@register
@dataclasses.dataclass(frozen=True)
class Blockwise(Scheme):
    """Absmax-scaled blocks coded to a grid in [-1, 1] (QLoRA / bitsandbytes NF4).

    Each block of ``block_size`` consecutive values of the flattened array is divided by
    its absmax (multiplying by the float32 reciprocal) and coded to the nearest level of
    ``codebook``, ties at a midpoint going to the lower level, bit-identical to
    bitsandbytes' CPU ``quantize_4bit``.  With ``double_quant`` the float32 absmax
    vector, minus its mean, is itself quantized to 8 bits (bitsandbytes' dynamic map) in
    blocks of 256, with one float32 absmax per 256 blocks (QLoRA).

    Parameters
    ----------
    codebook : sequence of float, strictly increasing, 2..256 levels
    block_size : int >= 1 (even for 4-bit or smaller codes, so blocks start on bytes)
    double_quant : bool
    scale_dtype : "float32", "float16" or "bfloat16"
        Storage of ``absmax`` without double quantization (``"float32"`` with it).  A
        narrower absmax is rounded up and the values are encoded with it (never clipped);
        one beyond the dtype's range is an ``InputError`` naming ``scale_dtype``.
    """

    type: ClassVar[str] = "blockwise"

    codebook: Levels = ()
    block_size: int = 64
    double_quant: bool = False
    scale_dtype: ScaleDtype = "float32"

    def __post_init__(self):
        if self.codebook is None or len(self.codebook) == 0:
            object.__setattr__(self, "codebook", tuple(float(v) for v in normal_float(4)))
        object.__setattr__(self, "codebook", _check_values("codebook", self.codebook))
        if len(self.codebook) < 2:
            invalid("codebook", self.codebook, "at least 2 levels")
        if not isinstance(self.block_size, int) or isinstance(self.block_size, bool) or self.block_size < 1:
            invalid("block_size", self.block_size, "an integer >= 1")
        if self.double_quant not in (True, False):
            invalid("double_quant", self.double_quant, "True or False")
        _check_absmax_dtype(self)

    @property
    def bits(self) -> int:
        """Bits per code."""
        return _code_bits(len(self.codebook))


def _check_absmax_dtype(scheme):
    _check_scale_dtype(scheme)
    if scheme.double_quant and scheme.scale_dtype != "float32":
        invalid("scale_dtype", scheme.scale_dtype, "'float32' with double_quant=True (the 8-bit absmax "
                "codes replace the absmax array)")


def NF4(block_size: int = 64, double_quant: bool = False,  # noqa: N802  (a scheme constructor, named like one)
        scale_dtype: ScaleDtype = "float32") -> Blockwise:
    """QLoRA's NF4: ``Blockwise(normal_float(4), block_size, double_quant, scale_dtype)``."""
    return Blockwise(codebook=tuple(float(v) for v in normal_float(4)), block_size=block_size,
                     double_quant=double_quant, scale_dtype=scale_dtype)


KMEANS_FITS = ("histogram", "exact")


def is_int(v: object) -> bool:
    """Whether ``v`` is an int (a bool is not)."""
    return isinstance(v, int) and not isinstance(v, bool)


@register
@dataclasses.dataclass(frozen=True)
class KMeansBlockwise(Scheme):
    """Absmax-scaled blocks coded to a codebook fitted by optimal weighted 1-D k-means.

    As :class:`Blockwise` (blocks of ``block_size`` consecutive values of the flattened
    array, each divided by its absmax and coded to the nearest level, optional double
    quantization of the absmax vector), but the ``2**bits`` levels are fitted to the
    tensor: they minimise the true squared error
    ``sum_b absmax_b**2 * sum_{i in b} (y_i - c(y_i))**2`` of the normalised values
    ``y = x / absmax_b``, an exact *weighted* 1-D k-means of ``y`` with weights
    ``absmax_b**2`` (:func:`nquant.optimal1d.kmeans1d`).  The fitted levels are stored once
    per tensor as the float32 side array ``codebook`` (counted in ``bits_per_value``).

    Parameters
    ----------
    bits : int, 1..8
        Bits per code; ``2**bits`` levels.
    block_size : int >= 1
    double_quant : bool
        Quantize the absmax vector as QLoRA does (:class:`Blockwise`).
    fit : "histogram" or "exact"
        ``"histogram"`` (default, NumPy and Dask alike): a mergeable weighted histogram of
        ``y`` over [-1, 1] with ``bins`` bins (exact fixed-point sums of the weights and of
        weight times ``y`` per bin, so bin centroids are exact and any chunking gives the same
        codebook bit for bit), then exact weighted k-means over the bin centroids.
        ``"exact"``: exact weighted k-means over every value (in-memory NumPy input only).
    bins : int >= 2**bits
        Histogram bins of ``fit="histogram"``.
    min_size : int >= 0
        Tensors with fewer values are not fitted: they use ``codebook`` and store no
        ``codebook`` side array (its ``32 * 2**bits`` bits would not pay for themselves).
    codebook : sequence of float, optional
        The grid used below ``min_size`` (and when the data has no weight, e.g. all zeros);
        strictly increasing, at most ``2**bits`` levels, default ``normal_float(bits)``
        (``[-1, 1]`` for one bit).
    scale_dtype : "float32", "float16" or "bfloat16"
        Storage of ``absmax``, as :class:`Blockwise`.
    """

    type: ClassVar[str] = "kmeans_blockwise"

    bits: int = 4
    block_size: int = 64
    double_quant: bool = False
    fit: Literal["histogram", "exact"] = "histogram"
    bins: int = 16384
    min_size: int = 65536
    codebook: Levels = ()
    scale_dtype: ScaleDtype = "float32"

    def __post_init__(self):
        if not is_int(self.bits) or not 1 <= self.bits <= 8:
            invalid("bits", self.bits, "an integer in 1..8")
        if not is_int(self.block_size) or self.block_size < 1:
            invalid("block_size", self.block_size, "an integer >= 1")
        if not isinstance(self.double_quant, bool):
            invalid("double_quant", self.double_quant, "True or False")
        if self.fit not in KMEANS_FITS:
            invalid("fit", self.fit, f"one of {KMEANS_FITS}")
        if not is_int(self.bins) or not (1 << self.bits) <= self.bins <= limits.MAX_BINS:
            invalid("bins", self.bins, f"an integer in {1 << self.bits}..{limits.MAX_BINS}")
        if not is_int(self.min_size) or self.min_size < 0:
            invalid("min_size", self.min_size, "an integer >= 0")
        if self.codebook is None or len(self.codebook) == 0:
            if self.bits == 1:
                default = (-1.0, 1.0)
            else:
                default = tuple(float(v) for v in normal_float(self.bits))
            object.__setattr__(self, "codebook", default)
        object.__setattr__(self, "codebook", _check_values("codebook", self.codebook))
        if len(self.codebook) > (1 << self.bits):
            invalid("codebook", f"<{len(self.codebook)} values>", f"at most 2**bits = {1 << self.bits} levels")
        _check_absmax_dtype(self)

    @property
    def levels(self) -> int:
        """Number of levels fitted, ``2**bits``."""
        return 1 << self.bits


@register
@dataclasses.dataclass(frozen=True)
class Outliers(Scheme):
    """Dense-and-sparse quantization: outliers kept exactly, the rest quantized by ``base``.

    The outliers (the ``fraction`` of values of largest magnitude, or the values with
    ``|x| > threshold``; NaN and infinities count as larger than any finite value) are kept
    in a sparse side structure: ``outlier_index`` (int64 flat C-order indices, ascending)
    and ``outlier_value`` (their values, in the original dtype), both counted in
    ``bits_per_value``.  The base scheme quantizes the array with the outliers replaced
    by 0, so they no longer widen its range: a block's absmax, a channel's or the
    tensor's min/max shrink to those of the remaining values.  Dequantization writes the
    outliers back exactly.

    Parameters
    ----------
    base : Scheme (or its JSON dict)
        Any scheme but another ``Outliers``.
    fraction : float in [0, 1], optional
        Keep the ``ceil(fraction * size)`` values of largest ``|x|`` (ties: the lower flat
        index first).
    threshold : float >= 0, optional
        Keep the values with ``|x| > threshold``.  Exactly one of ``fraction`` and
        ``threshold`` is given.

    Notes
    -----
    Why 0 as the neutral value: it never widens the range of an absmax, symmetric or
    integer-zero-point scheme (0 is always inside it) and decodes exactly there; the clipped
    value ``sign(x) * threshold`` would instead set the absmax of every block holding an
    outlier to the threshold, above the block's own largest inlier.  (An asymmetric
    ``zero_point="float"`` base on data that excludes 0 is the one case where 0 widens the
    range.)  On Dask arrays ``threshold`` works with any base (the outliers are chunk-local);
    ``fraction`` needs a global order statistic (the ``k``-th largest ``|x|``, found exactly by
    merging per-chunk top-``k`` lists), so the base's own statistics take a second pass and a
    base that needs two passes itself (``Uniform`` ``percentile``/``mse`` ranges,
    ``KMeansBlockwise`` fits) needs ``threshold`` on Dask.
    """

    type: ClassVar[str] = "outliers"

    base: Any = None
    fraction: float | None = None
    threshold: float | None = None

    def __post_init__(self):
        base = self.base
        if isinstance(base, (dict, str)):
            base = scheme_from_json(base)
            object.__setattr__(self, "base", base)
        if not isinstance(base, Scheme):
            invalid("base", base, "a scheme such as nq.NF4() (or its JSON dict)")
        if isinstance(base, Outliers):
            invalid("base", base, "a scheme other than Outliers (outliers of outliers are not supported)")
        if (self.fraction is None) == (self.threshold is None):
            invalid("fraction", self.fraction, "exactly one of fraction and threshold (threshold="
                  f"{self.threshold!r})")
        number = (int, float)
        if self.fraction is not None:
            f = self.fraction
            if not isinstance(f, number) or isinstance(f, bool) or not 0.0 <= float(f) <= 1.0:
                invalid("fraction", f, "a number in [0, 1]")
            object.__setattr__(self, "fraction", float(f))
        if self.threshold is not None:
            t = self.threshold
            if not isinstance(t, number) or isinstance(t, bool) or not 0.0 <= float(t) < float("inf"):
                invalid("threshold", t, "a finite number >= 0")
            object.__setattr__(self, "threshold", float(t))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; ``base`` is the nested dict of the base scheme."""
        return {"type": self.type, "format_version": FORMAT_VERSION, "base": self.base.to_dict(),
                "fraction": self.fraction, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`."""
        unknown = set(d) - {"type", "format_version", "base", "fraction", "threshold"}
        if unknown:
            raise SchemeError(f"unknown field(s) {sorted(unknown)} for scheme type {cls.type!r}")
        return cls(base=d.get("base"), fraction=d.get("fraction"), threshold=d.get("threshold"))

    @property
    def bits(self) -> int:
        """Bits per code of the base scheme."""
        return self.base.bits

    @property
    def block_size(self) -> int | None:
        """Block size of the base scheme (None when it has no blocks)."""
        return getattr(self.base, "block_size", None)

    @property
    def qrange(self) -> tuple[int, int]:
        """Code range of the base scheme (where it has one)."""
        try:
            return self.base.qrange
        except AttributeError:
            raise AttributeError("qrange") from None

    @property
    def is_signed(self) -> bool:
        """Whether the base scheme's codes are signed."""
        return getattr(self.base, "is_signed", False)


ASQ_METHODS = ("quiver", "quiver_accel", "zipml", "quiver_approx")


@register
@dataclasses.dataclass(frozen=True)
class ASQ(Scheme):
    """Adaptive stochastic quantization: the optimal ``2**bits`` levels, unbiased rounding.

    The levels minimise the variance of unbiased stochastic rounding over the data
    (QUIVER, ``nquant.asq``); every value then rounds to one of its two neighbouring
    levels with probabilities that keep its expectation (counter-based stream keyed by
    ``seed`` and the global index).  The levels are stored as the side array ``codebook``.

    Parameters
    ----------
    bits : int, 1..8 (``2**bits`` levels)
    method : "quiver" (exact), "quiver_accel" (exact), "zipml" (exact, slow reference),
        "quiver_approx" (levels on a grid of ``m`` intervals; two mergeable passes, no sort)
    m : int or None, grid intervals of ``quiver_approx`` (default: ``nquant.asq.DEFAULT_M``)
    axis : int or None
        ``None``: one level set for the whole tensor.  ``k``: one level set per index of axis
        ``k`` (``axis=0`` on a gradient matrix gives each row its own ``2**bits`` levels); the
        groups are fitted independently and in parallel, and ``codebook`` has shape
        ``(shape[k], 2**bits)`` (row ``g``: group ``g``'s distinct levels, the largest repeated
        to fill the row).  Negative values count from the end; out of range for the data is an
        ``InputError``.
    seed : int
    """

    type: ClassVar[str] = "asq"

    bits: int = 4
    method: Literal["quiver", "quiver_accel", "zipml", "quiver_approx"] = "quiver"
    m: int | None = None
    axis: int | None = None
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 1 <= self.bits <= 8:
            invalid("bits", self.bits, "an integer in 1..8")
        if self.method not in ASQ_METHODS:
            invalid("method", self.method, f"one of {ASQ_METHODS}")
        if self.m is not None and (not isinstance(self.m, int) or isinstance(self.m, bool)
                                   or not 1 <= self.m <= limits.MAX_GRID):
            invalid("m", self.m, f"None or an integer in 1..{limits.MAX_GRID}")
        if self.axis is not None and (not isinstance(self.axis, int) or isinstance(self.axis, bool)):
            invalid("axis", self.axis, "None or an integer")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            invalid("seed", self.seed, "an integer")

    block_size = None
