"""Fake quantization for quantization-aware training, and quantization parameters.

``fake_quantize(x, scheme_or_params) -> (y, mask)`` returns the
quantize-dequantize result ``y`` ("floats that are clipped and rounded like
ints", seed 001) and the straight-through-estimator mask (``True`` where the
rounded value fell inside the clip range, so the gradient passes), computed in
one fused Numba pass.

Arithmetic (identical to :func:`nquant.quantize` then :func:`nquant.dequantize`,
bit for bit):

- computed in float32 for float16/float32 ``x`` and float64 for float64 ``x``;
- the scale is applied by **multiplying by its reciprocal** ``inv = 1 / s``
  computed in that dtype (not by dividing, which can differ in the last bit):
  ``t = round((x - offset) * inv) + c0`` with ``c0 = zero_point - qmin``;
- ``round`` is the scheme's rounding: ``"nearest"`` rounds **ties to even**
  (``np.rint``), as PyTorch's ``fake_quantize_per_tensor_affine`` does;
  ``"floor"``, ``"ceil"`` and ``"stochastic"`` first snap ``t`` onto an
  integer within ``2^-21`` relative (the encoder's rule, so a value on the grid
  is not moved a whole code by the rounded reciprocal); ``"stochastic"``
  draws from the counter-based stream keyed by the element's flat index,
  exactly as ``quantize`` does;
- ``code = clip(t, 0, hi)``; ``y = (code - c0) * s + offset``;
- ``mask = (0 <= t <= hi)``: PyTorch's ``fake_quantize_*_cachemask`` mask.

:class:`QParams` carries fitted parameters (from a scheme fit or an observer in
:mod:`nquant.observers`) and quantizes or fake-quantizes new data with them.
Thin adapters :func:`torch_fake_quantize` (``torch.autograd.Function``) and
:func:`jax_fake_quantize` (``jax.custom_vjp``) wrap the NumPy kernel for the
two frameworks when they are installed (import-guarded: nquant never imports
either unless called).
"""

import dataclasses
import functools

import numpy as np
from numpy.typing import ArrayLike
from nquant._types import ArrayInput

from nquant import chunked
from nquant.containers import QuantizedArray
from nquant.errors import InputError, SchemeError
from nquant.families import uniform
from nquant.kernels.fakequant import fake_quantize_affine
from nquant.kernels.rng import seed_key
from nquant.kernels.rounding import MODES
from nquant.packing import pack_codes
from nquant.schemes import Scheme, Uniform, scheme_from_json

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


# ----------------------------------------------------------------------------- parameters


@dataclasses.dataclass(frozen=True, eq=False)
class QParams:
    """Fitted parameters of a :class:`~nquant.Uniform` scheme.

    Attributes
    ----------
    scheme : Uniform
        The scheme the parameters belong to (bits, signedness, granularity, rounding).
    scale : ndarray of shape (G,), float32
        One scale per group: ``G = 1`` per tensor, ``x.shape[axis]`` per channel,
        one per block for ``block_size``.
    zero_point : ndarray of shape (G,), int32, or None
        Integer zero points (``zero_point="int"`` and symmetric schemes).
    offset : ndarray of shape (G,), float32, or None
        Real offsets ``rmin`` (``zero_point="float"``).
    """

    scheme: Uniform
    scale: np.ndarray
    zero_point: object = None
    offset: object = None

    def __post_init__(self):
        if not isinstance(self.scheme, Uniform):
            raise SchemeError(f"scheme={self.scheme!r} is invalid: expected an nq.Uniform scheme")
        scale = np.ascontiguousarray(np.atleast_1d(np.asarray(self.scale, dtype=np.float32)))
        if scale.ndim != 1 or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            raise InputError(f"scale={self.scale!r} is invalid: expected positive finite values of "
                             "shape (G,)")
        object.__setattr__(self, "scale", scale)
        int_zp = self.scheme.symmetric or self.scheme.zero_point == "int"
        if int_zp:
            if self.offset is not None:
                raise InputError("offset is given but the scheme has zero_point='int': pass zero_point")
            zp = np.zeros(scale.shape, np.int32) if self.zero_point is None else self.zero_point
            zp = np.ascontiguousarray(np.broadcast_to(np.asarray(zp), scale.shape))
            qmin, qmax = self.scheme.qrange
            if zp.dtype.kind not in "iu" and not np.array_equal(zp, np.rint(zp)):
                raise InputError(f"zero_point={self.zero_point!r} is invalid: expected integers")
            if zp.size and (zp.min() < qmin or zp.max() > qmax):
                raise InputError(f"zero_point={self.zero_point!r} is invalid: expected values in "
                                 f"[{qmin}, {qmax}]")
            if self.scheme.symmetric and zp.size and np.any(zp != 0):
                raise InputError(f"zero_point={self.zero_point!r} is invalid: symmetric schemes have zero "
                                 "point 0")
            object.__setattr__(self, "zero_point", zp.astype(np.int32))
        else:
            if self.zero_point is not None or self.offset is None:
                raise InputError("the scheme has zero_point='float': pass offset (and no zero_point)")
            off = np.ascontiguousarray(np.broadcast_to(np.asarray(self.offset, np.float32), scale.shape))
            if not np.all(np.isfinite(off)):
                raise InputError(f"offset={self.offset!r} is invalid: expected finite values")
            object.__setattr__(self, "offset", off)

    @property
    def side(self):
        """Dict of the side arrays (``scale`` and ``zero_point`` or ``offset``), as ``uniform`` uses."""
        d = {"scale": self.scale}
        if self.offset is not None:
            d["offset"] = self.offset
        else:
            d["zero_point"] = self.zero_point
        return d

    @property
    def n_groups(self) -> int:
        """Number of parameter groups ``G``."""
        return int(self.scale.shape[0])

    def to_dict(self):
        """Plain dict (JSON-able): ``scheme`` (the scheme's dict) and the side arrays as lists."""
        d = {"scheme": self.scheme.to_dict()}
        d.update({k: v.tolist() for k, v in self.side.items()})
        return d

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`; ``scheme`` may be a Uniform, its dict or its JSON text."""
        if "scheme" not in d:
            raise InputError(f"params dict with keys {sorted(d)} is invalid: expected 'scheme', 'scale' "
                             "and 'zero_point' or 'offset'")
        scheme = d["scheme"]
        if not isinstance(scheme, Scheme):
            scheme = scheme_from_json(scheme)
        unknown = set(d) - {"scheme", "scale", "zero_point", "offset"}
        if unknown:
            raise InputError(f"params dict has unknown key(s) {sorted(unknown)}")
        if "scale" not in d:
            raise InputError("params dict is invalid: 'scale' is missing")
        return cls(scheme, d["scale"], d.get("zero_point"), d.get("offset"))

    def check_shape(self, shape):
        """Raise ``InputError`` unless these parameters fit an array of ``shape``."""
        expected = uniform.n_groups(self.scheme, tuple(shape))
        if expected != self.n_groups:
            raise InputError(f"params have {self.n_groups} group(s) but x of shape {tuple(shape)} needs "
                             f"{expected} for scheme axis={self.scheme.axis}, "
                             f"block_size={self.scheme.block_size}")

    def quantize(self, x: ArrayInput) -> QuantizedArray:
        """Quantize ``x`` with these parameters (no fitting), stored as the scheme says
        (``uniform.stored_side``: zero points packed or dropped; a scale not representable in
        ``scale_dtype`` rounded up, double-quantized scales raised to their codes' levels, and
        the values encoded with what is stored).

        Parameters
        ----------
        x : ndarray or dask.array.Array, float16, float32 or float64

        Returns
        -------
        QuantizedArray (Dask-backed for Dask ``x``)
        """
        scheme = self.scheme
        if chunked.is_dask(x):
            x = chunked.prepare(uniform, scheme, x)
            self.check_shape(x.shape)
            if scheme.block_size is not None:
                raise InputError("QParams.quantize of a Dask array needs per-tensor or per-channel params")
            side = uniform.stored_side(scheme, self.side)
            codes = chunked.pack(chunked.encode(uniform, scheme, side, x), scheme.bits)
            return QuantizedArray(scheme=scheme, shape=x.shape, dtype=x.dtype, codes=codes,
                                  bits=scheme.bits, side=side, chunks=x.chunks)
        a = _check_input(x)
        self.check_shape(a.shape)
        side = uniform.stored_side(scheme, self.side)
        codes = uniform.encode(scheme, side, a)
        return QuantizedArray(scheme=scheme, shape=a.shape, dtype=a.dtype,
                              codes=pack_codes(codes, scheme.bits), bits=scheme.bits, side=side)

    def fake_quantize(self, x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``fake_quantize(x, self)``."""
        return fake_quantize(x, self)


def as_params(obj, x=None):
    """A :class:`QParams` from a QParams, a params dict, or a Uniform scheme fitted to ``x``."""
    if isinstance(obj, QParams):
        return obj
    if isinstance(obj, dict):
        return QParams.from_dict(obj)
    if isinstance(obj, Scheme):
        if not isinstance(obj, Uniform):
            raise SchemeError(f"scheme type={obj.type!r} is invalid here: fake quantization needs an "
                              "nq.Uniform scheme")
        if x is None:
            raise InputError("a scheme needs data to fit: pass x")
        return QParams(obj, **uniform.plain_side(obj, uniform.fit(obj, x)))
    raise SchemeError(f"scheme_or_params of type {type(obj).__name__} is invalid: expected an nq.Uniform "
                      "scheme, a QParams or a params dict")


def _check_input(x):
    a = np.asarray(x)
    if a.dtype not in FLOAT_DTYPES:
        raise InputError(f"x dtype={a.dtype} is not supported: expected float16, float32 or float64")
    return a


# ----------------------------------------------------------------------------- fake quantization


def fake_quantize(x: ArrayLike, scheme_or_params: "Uniform | QParams", *, out: np.ndarray | None = None,
                  mask_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Quantize-dequantize ``x`` and return the straight-through-estimator mask.

    Parameters
    ----------
    x : ndarray of any shape, float16, float32 or float64 (in memory)
    scheme_or_params : Uniform, QParams or dict
        A scheme is fitted to ``x`` first (exactly as :func:`nquant.quantize`
        fits it); a :class:`QParams` (e.g. from an observer's
        ``compute_params``) or its dict form (:meth:`QParams.to_dict`) is used
        as given.
    out : ndarray, optional
        Preallocated ``y`` (shape and dtype of ``x``, C-contiguous; float32 or float64).
    mask_out : ndarray, optional
        Preallocated mask (shape of ``x``, bool, C-contiguous).

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``
        ``dequantize(quantize(x))`` with these parameters, bit for bit.
    mask : ndarray of the shape of ``x``, bool
        ``True`` where the rounded value ``round(x / s) + z`` lies in
        ``[qmin, qmax]`` (not clipped): multiply the incoming gradient by it.

    Raises
    ------
    InputError
        NaN (unless the scheme has ``nan="propagate"``; then ``y`` is NaN and the
        mask False there) or infinite values, a Dask array, params that do not fit ``x``.
    """
    if chunked.is_dask(x):
        raise InputError("fake_quantize works on in-memory arrays; for a Dask array use "
                         "x.map_blocks(...) on NumPy chunks or QParams.quantize")
    a = _check_input(x)
    params = as_params(scheme_or_params, a)
    scheme = params.scheme
    params.check_shape(a.shape)
    cdtype = uniform.compute_dtype(a.dtype)
    flat = np.ascontiguousarray(a, dtype=cdtype).reshape(-1)
    scale, inv, offset, c0 = uniform.kernel_params(scheme, params.side, cdtype)
    hi, nan_code = uniform.code_limits(scheme)
    if out is not None and a.dtype == cdtype:
        y = _out(out, a.shape, cdtype, "out")
    else:
        y = np.empty(flat.size, cdtype)
    if mask_out is not None:
        mask = _out(mask_out, a.shape, np.bool_, "mask_out")
    else:
        mask = np.empty(flat.size, np.bool_)
    y = y.reshape(-1)
    mask = mask.reshape(-1)
    lay = uniform.layout(scheme, a.shape)
    key = seed_key(scheme.seed)
    mode = MODES[scheme.rounding]
    bad = 0
    for part in lay.parts:
        if part.R and part.L:
            bad += fake_quantize_affine(part.view(flat), part.row_index, part.row_group, lay.col_step,
                                        scale, inv, offset, c0, hi, nan_code, mode, key,
                                        part.view(y), part.view(mask))
    if bad:
        raise InputError(f"x contains {bad} non-finite value(s) (NaN or inf) that nan={scheme.nan!r} "
                         "does not allow")
    y = y.reshape(a.shape)
    if y.dtype != a.dtype:
        y = y.astype(a.dtype)
    if out is not None:
        if not np.may_share_memory(y, out):
            _out(out, a.shape, a.dtype, "out")[...] = y
        y = out
    mask = mask_out if mask_out is not None else mask.reshape(a.shape)
    return y, mask


def _out(arr, shape, dtype, name):
    if (not isinstance(arr, np.ndarray) or arr.shape != tuple(shape) or arr.dtype != dtype
            or not arr.flags.c_contiguous or not arr.flags.writeable):
        raise InputError(f"{name} is invalid: expected a writeable C-contiguous array of shape "
                         f"{tuple(shape)} and dtype {np.dtype(dtype)}")
    return arr


# ----------------------------------------------------------------------------- framework adapters


def _require(name):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(f"{name} is not installed; install it to use this adapter "
                          f"(nquant itself does not need it)") from None


@functools.cache
def _torch_function():
    torch = _require("torch")

    class FakeQuantize(torch.autograd.Function):
        """Forward: nquant's fused fake quantization; backward: straight-through (grad * mask)."""

        @staticmethod
        def forward(ctx, x, params):
            y, mask = fake_quantize(x.detach().cpu().numpy(), params)
            m = torch.from_numpy(mask).to(x.device)
            ctx.save_for_backward(m)
            return torch.from_numpy(y).to(x.device)

        @staticmethod
        def backward(ctx, grad):
            (m,) = ctx.saved_tensors
            return grad * m.to(grad.dtype), None

    return FakeQuantize


def torch_fake_quantize(x, scheme_or_params):
    """PyTorch autograd adapter of :func:`fake_quantize` (straight-through gradient).

    Parameters
    ----------
    x : torch.Tensor, float16/32/64, any device (computed on the CPU through NumPy)
    scheme_or_params : Uniform, QParams or dict (a scheme is fitted to ``x``)

    Returns
    -------
    torch.Tensor, the fake-quantized ``x``; its gradient is ``grad * mask``.
    """
    function = _torch_function()
    params = scheme_or_params
    if isinstance(params, Scheme):
        params = as_params(params, x.detach().cpu().numpy())
    return function.apply(x, as_params(params))


def jax_fake_quantize(x, scheme_or_params):
    """JAX adapter of :func:`fake_quantize` with a ``custom_vjp`` straight-through gradient.

    The kernel runs on the host through ``jax.pure_callback``; it is usable under
    ``jax.jit`` and ``jax.grad``.

    Parameters
    ----------
    x : jax.Array, float32 or float64
    scheme_or_params : QParams or dict (fitted parameters; a scheme is fitted to
        concrete ``x`` only)

    Returns
    -------
    jax.Array, the fake-quantized ``x``; its gradient is ``grad * mask``.
    """
    jax = _require("jax")
    jnp = jax.numpy
    params = scheme_or_params
    if isinstance(params, Scheme):
        params = as_params(params, np.asarray(x))
    params = as_params(params)

    def host(v):
        y, m = fake_quantize(np.asarray(v), params)
        return y, m

    def call(v):
        shapes = (jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct(v.shape, jnp.bool_))
        return jax.pure_callback(host, shapes, v)

    @jax.custom_vjp
    def fq(v):
        return call(v)[0]

    def fwd(v):
        y, m = call(v)
        return y, m

    def bwd(m, g):
        return (jnp.where(m, g, jnp.zeros_like(g)),)

    fq.defvjp(fwd, bwd)
    return fq(x)
