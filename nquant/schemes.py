"""Schemes: frozen dataclasses that fully describe a quantization.

A scheme validates its parameters on construction (``SchemeError`` naming the
parameter and value), round-trips through JSON (``to_json`` /
:func:`scheme_from_json`) and tokenizes deterministically for Dask.  The JSON
carries ``"type"`` and ``"format_version"``; later versions keep reading
earlier ones.
"""

import dataclasses
import json
from typing import ClassVar

from nquant.errors import SchemeError
from nquant.kernels.rounding import MODES

FORMAT_VERSION = 1

_REGISTRY = {}


def register(cls):
    """Class decorator: make a scheme type known to :func:`scheme_from_json`."""
    _REGISTRY[cls.type] = cls
    return cls


def _fail(name, value, allowed):
    raise SchemeError(f"{name}={value!r} is invalid: expected {allowed}")


@dataclasses.dataclass(frozen=True)
class Scheme:
    """Base of all schemes."""

    type: ClassVar[str] = ""

    def to_dict(self):
        """Plain dict with ``type`` and ``format_version`` (tuples become lists)."""
        d = {"type": self.type, "format_version": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    def to_json(self):
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict` for this class."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"type", "format_version"}
        if unknown:
            raise SchemeError(f"unknown field(s) {sorted(unknown)} for scheme type {cls.type!r}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def __dask_tokenize__(self):
        return (type(self).__name__, self.to_json())


def scheme_from_json(text):
    """Scheme from JSON text or a dict written by ``Scheme.to_json``."""
    d = json.loads(text) if isinstance(text, str) else dict(text)
    kind = d.get("type")
    if kind not in _REGISTRY:
        raise SchemeError(f"type={kind!r} is not a known scheme type: expected one of {sorted(_REGISTRY)}")
    version = d.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SchemeError(f"format_version={version!r} is newer than this nquant reads ({FORMAT_VERSION})")
    return _REGISTRY[kind].from_dict(d)


RANGES = ("minmax", "percentile", "percentile_exact", "mse")


@register
@dataclasses.dataclass(frozen=True)
class Uniform(Scheme):
    """Uniform affine quantization ``q = clip(round(r / s) + z, qmin, qmax)``.

    Parameters
    ----------
    bits : int, 1..8
    symmetric : bool
        Zero point 0 and ``scale = absmax / qmax`` (needs ``bits >= 2``).
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
        (seed 000's grid ``-4 + 8i/7`` is exact in this form).
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
    """

    type: ClassVar[str] = "uniform"

    bits: int = 8
    symmetric: bool = False
    axis: object = None
    block_size: object = None
    range: object = "minmax"
    percentile: tuple = (0.1, 99.9)
    zero_point: str = "int"
    rounding: str = "nearest"
    seed: int = 0
    signed: object = None
    narrow_range: bool = False
    nan: str = "raise"
    bins: object = None

    def __post_init__(self):
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.bits) or not 1 <= self.bits <= 8:
            _fail("bits", self.bits, "an integer in 1..8")
        if self.symmetric not in (True, False):
            _fail("symmetric", self.symmetric, "True or False")
        if self.symmetric and self.bits < 2:
            _fail("bits", self.bits, "bits >= 2 for symmetric=True (use symmetric=False for 1 bit)")
        if self.axis is not None and not is_int(self.axis):
            _fail("axis", self.axis, "None or an integer")
        if self.block_size is not None and (not is_int(self.block_size) or self.block_size < 1):
            _fail("block_size", self.block_size, "None or an integer >= 1")
        if self.axis is not None and self.block_size is not None:
            _fail("axis", self.axis, "None when block_size is given (one granularity at a time)")
        r = self.range
        if isinstance(r, (tuple, list)):
            if len(r) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r):
                _fail("range", r, "a pair (rmin, rmax) of numbers")
            if not all(abs(float(v)) < float("inf") for v in r):
                _fail("range", r, "finite numbers")
            if float(r[0]) > float(r[1]):
                _fail("range", r, "rmin <= rmax")
            object.__setattr__(self, "range", (float(r[0]), float(r[1])))
        elif r not in RANGES:
            _fail("range", r, f"one of {RANGES} or (rmin, rmax)")
        p = self.percentile
        if (not isinstance(p, (tuple, list)) or len(p) != 2
                or not all(isinstance(v, (int, float)) for v in p) or not 0 <= p[0] < p[1] <= 100):
            _fail("percentile", p, "(low, high) with 0 <= low < high <= 100")
        object.__setattr__(self, "percentile", (float(p[0]), float(p[1])))
        if self.block_size is not None and r in ("percentile", "percentile_exact", "mse"):
            _fail("range", r, "'minmax' or (rmin, rmax) with block_size")
        if self.zero_point not in ("int", "float"):
            _fail("zero_point", self.zero_point, "'int' or 'float'")
        if self.symmetric and self.zero_point != "int":
            _fail("zero_point", self.zero_point, "'int' when symmetric=True (the zero point is 0)")
        if self.rounding not in MODES:
            _fail("rounding", self.rounding, f"one of {tuple(MODES)}")
        if not is_int(self.seed):
            _fail("seed", self.seed, "an integer")
        if self.signed not in (None, True, False):
            _fail("signed", self.signed, "None, True or False")
        if self.narrow_range not in (True, False):
            _fail("narrow_range", self.narrow_range, "True or False")
        if self.nan not in ("raise", "propagate"):
            _fail("nan", self.nan, "'raise' or 'propagate'")
        if self.nan == "propagate" and self.bits < 2:
            _fail("bits", self.bits, "bits >= 2 with nan='propagate' (one code is reserved for NaN)")
        if self.bins is not None and (not is_int(self.bins) or self.bins < 16):
            _fail("bins", self.bins, "None or an integer >= 16")
        qmin, qmax = self.qrange
        if qmax <= qmin or (self.symmetric and qmax < 1):
            _fail("bits", self.bits, "more bits: this code range leaves no room "
                  f"(qmin={qmin}, qmax={qmax} with signed={self.is_signed}, "
                  f"narrow_range={self.narrow_range}, nan={self.nan!r})")

    @property
    def hist_bins(self):
        """Histogram bins used by ``percentile`` and ``mse`` calibration."""
        if self.bins is not None:
            return self.bins
        return 2048 if self.axis is None else 256

    @property
    def is_signed(self):
        """Whether codes are signed integers (``codes_unpacked`` dtype int8)."""
        return self.symmetric if self.signed is None else self.signed

    @property
    def qrange(self):
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
        return qmin, qmax


def _check_values(name, values, max_len=256):
    try:
        vals = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        _fail(name, values, "a sequence of numbers")
    if not 1 <= len(vals) <= max_len:
        _fail(name, f"<{len(vals)} values>", f"1..{max_len} values")
    if not all(abs(v) < float("inf") for v in vals):
        _fail(name, vals, "finite values")
    if any(b <= a for a, b in zip(vals, vals[1:])):
        _fail(name, vals, "strictly increasing values (a sorted grid without duplicates)")
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

    values: tuple = (0.0,)
    rounding: str = "nearest"
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "values", _check_values("values", self.values))
        if self.rounding not in MODES:
            _fail("rounding", self.rounding, f"one of {tuple(MODES)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            _fail("seed", self.seed, "an integer")

    @property
    def bits(self):
        """Bits per code."""
        return _code_bits(len(self.values))

    block_size = None


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
    """

    type: ClassVar[str] = "blockwise"

    codebook: tuple = ()
    block_size: int = 64
    double_quant: bool = False

    def __post_init__(self):
        if self.codebook is None or len(self.codebook) == 0:
            from nquant.grids import normal_float

            object.__setattr__(self, "codebook", tuple(float(v) for v in normal_float(4)))
        object.__setattr__(self, "codebook", _check_values("codebook", self.codebook))
        if len(self.codebook) < 2:
            _fail("codebook", self.codebook, "at least 2 levels")
        if not isinstance(self.block_size, int) or isinstance(self.block_size, bool) or self.block_size < 1:
            _fail("block_size", self.block_size, "an integer >= 1")
        if self.double_quant not in (True, False):
            _fail("double_quant", self.double_quant, "True or False")

    @property
    def bits(self):
        """Bits per code."""
        return _code_bits(len(self.codebook))


def NF4(block_size=64, double_quant=False):  # noqa: N802  (a scheme constructor, named like one)
    """QLoRA's NF4: ``Blockwise(normal_float(4), block_size, double_quant)``."""
    from nquant.grids import normal_float

    return Blockwise(codebook=tuple(float(v) for v in normal_float(4)), block_size=block_size,
                     double_quant=double_quant)
