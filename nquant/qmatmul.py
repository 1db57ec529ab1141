r"""Integer matrix multiplication of quantized operands with folded zero points.

``qmatmul(qw, qx)`` multiplies a weight matrix quantized **symmetrically per
output channel** (``Uniform(bits=8, symmetric=True, axis=0)``: int8, zero point
0, one scale per row) by activations quantized **asymmetrically per tensor**
(``Uniform(bits=8)``: uint8 or int8 codes, one scale and zero point), the
combination seed 001 recommends: symmetric weights remove the online
``Z_w``-terms, and the activations' zero point costs only a weight-only
correction that is computed once.

The folding (seed 001, "Linear Quantization"; ``W ~ S_w (W_q - Z_w)``,
``X ~ S_x (X_q - Z_x)``):

.. math::

    Y[o, n] &= \sum_k S_w[o] (W_q[o, k] - Z_w) \, S_x (X_q[k, n] - Z_x) \\
            &= S_w[o] S_x \Big( \underbrace{\sum_k W_q[o, k] X_q[k, n]}_{\text{int32 accumulator}}
               - Z_x \underbrace{\sum_k W_q[o, k]}_{R[o]\text{, weight-only}}
               - Z_w \underbrace{\sum_k X_q[k, n]}_{\text{online}} + K Z_w Z_x \Big)

With symmetric weights ``Z_w = 0``: the online term and the constant vanish and
``Y = S_w[o] S_x (A[o, n] - Z_x R[o])``.  ``R`` (the ``Z_x * sum_k W_q[o, k]``
term without its per-call factor ``Z_x``) depends on the weights only and is
precomputed by :func:`prepare_weights`; each call applies the online correction
``- Z_x R[o]`` in the epilogue, together with the scales.  Activations with a
real offset (``zero_point="float"``, ``X ~ S_x C + off``) fold the same way:
``Y = S_w[o] (S_x A + off R[o])``.

Integer arithmetic: the kernels accumulate ``sum_k W_q (C - cx)`` over the
activation codes ``C`` centred at ``cx = 2^(bits-1)`` (``|C - cx| <= 128``) in
int32; the fold adds ``(cx - c0) R[o]`` back, ``c0`` being the zero point's
code.  Two exact ways to the accumulator (see ``nquant.kernels.intmm``):
``method="blas"`` (default) runs float32 GEMMs on blocks of ``K`` short
enough that every partial sum is an integer below ``2^24`` -- exactly
representable, so the float32 GEMM is exact whatever BLAS's summation order --
and sums the blocks in int32; ``method="int"`` runs a tiled int16 x int16 ->
int32 Numba kernel.  Both give the same int32 accumulators, equal to an int64
reference.

4-bit weights (``Uniform(bits=4, symmetric=True, axis=0)``) stay packed two per
byte (8x less memory than float32) and are unpacked block by block on the fly.
"""

import dataclasses

import numpy as np

from nquant.containers import QuantizedArray
from nquant.errors import InputError, SchemeError
from nquant.families import base, uniform
from nquant.kernels import intmm
from nquant.packing import unpack_codes
from nquant.schemes import Uniform

METHODS = ("auto", "blas", "int")
EXACT_F32 = 1 << 24  # every integer of magnitude <= 2^24 is a float32
ACC_LIMIT = (1 << 31) - 1
O_BLOCK = 1024  # rows per float32 weight block (BLAS path): 4 MiB scratch at K-block 1024
INT_O_BLOCK = 32  # rows per int16 weight block (integer path)
INT_K_BLOCK = 1024  # K-slice of the transposed activations kept in L2 (integer path)

_DUMMY_I8 = np.zeros((1, 1), np.int8)
_DUMMY_U8 = np.zeros((1, 1), np.uint8)


# ----------------------------------------------------------------------------- weights


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedWeights:
    """Weights ready for :func:`qmatmul`, with the weight-only correction precomputed.

    Attributes
    ----------
    shape : (O, K)
    bits : int, bits per weight (4: kept packed; otherwise int8 values)
    qmin, qmax : int, range of the weight integers ``W_q``
    int8 : ndarray of shape (O, K), int8, or None (the values ``W_q``; bits != 4)
    packed : ndarray of shape (O, ceil(K / 2)), uint8, or None (bits == 4: codes
        ``W_q - qmin``, two per byte, the first in the high nibble)
    scale : ndarray of shape (O,), float32, per-row scale ``S_w`` (a per-tensor
        scale is repeated)
    rowsum : ndarray of shape (O,), int32, ``R[o] = sum_k W_q[o, k]``
    scheme : Uniform, the weights' scheme
    """

    shape: tuple
    bits: int
    qmin: int
    qmax: int
    int8: object
    packed: object
    scale: np.ndarray
    rowsum: np.ndarray
    scheme: Uniform

    @property
    def wmax(self):
        """Largest ``|W_q|``."""
        return max(-self.qmin, self.qmax)

    @property
    def nbytes(self):
        """Bytes held: weight codes plus scales and row sums."""
        data = self.packed if self.packed is not None else self.int8
        return int(data.nbytes + self.scale.nbytes + self.rowsum.nbytes)

    @property
    def weight_nbytes(self):
        """Bytes of the weight codes alone (``O * K`` for int8, ``O * ceil(K / 2)`` packed 4-bit)."""
        data = self.packed if self.packed is not None else self.int8
        return int(data.nbytes)


def _uniform_of(q: QuantizedArray, name: str) -> QuantizedArray:
    if isinstance(q, PreparedWeights) and name == "qw":
        return q
    if not isinstance(q, QuantizedArray):
        raise InputError(f"{name} of type {type(q).__name__} is invalid: expected a QuantizedArray")
    if not isinstance(q.scheme, Uniform):
        raise SchemeError(f"{name} scheme type={q.scheme.type!r} is invalid: expected nq.Uniform")
    if q.scheme.nan != "raise":
        raise SchemeError(f"{name} scheme nan={q.scheme.nan!r} is invalid for qmatmul: expected 'raise' "
                          "(a reserved NaN code has no integer value)")
    if q.scheme.block_size is not None:
        raise SchemeError(f"{name} scheme block_size={q.scheme.block_size} is invalid for qmatmul: expected "
                          "per-tensor or per-channel parameters")
    if q.scheme.bits > 8 or q.scheme.fill_value is not None:
        raise SchemeError(f"{name} scheme bits={q.scheme.bits} (fill_value={q.scheme.fill_value!r}) is invalid "
                          "for qmatmul: expected 8-bit codes or fewer, without a fill value")
    if len(q.shape) != 2:
        raise InputError(f"{name} shape={tuple(q.shape)} is invalid: expected a 2-D array")
    return q


def _codes(q):
    codes = q.codes if not q.is_dask else q.codes.compute()
    return np.ascontiguousarray(codes, dtype=np.uint8)


def prepare_weights(qw: "QuantizedArray | PreparedWeights", *,
                    packed: bool | None = None) -> "PreparedWeights":
    """Weights for :func:`qmatmul`: integer values, scales and the row sums ``R``.

    Parameters
    ----------
    qw : QuantizedArray of shape (O, K)
        Symmetric (zero point 0), signed (``W_q`` in ``[qmin, qmax]``), per output
        channel (``axis=0``) or per tensor, ``bits`` 2..8, e.g.
        ``nq.quantize(w, nq.Uniform(bits=8, symmetric=True, axis=0))``.
    packed : bool or None
        Keep 4-bit codes packed two per byte (default for ``bits == 4``) or
        unpack to int8.  Only 4-bit weights can stay packed.

    Returns
    -------
    PreparedWeights
    """
    if isinstance(qw, PreparedWeights):
        return qw
    qw = _uniform_of(qw, "qw")
    s = qw.scheme
    if not s.is_signed:
        raise SchemeError(f"qw scheme signed={s.signed!r} (symmetric={s.symmetric}) is invalid: expected "
                          "signed integer weights (nq.Uniform(bits=8, symmetric=True, axis=0))")
    if s.axis is not None and s.axis % 2 != 0:
        raise SchemeError(f"qw scheme axis={s.axis} is invalid: expected axis=0 (one scale per output "
                          "channel) or None")
    if "offset" in qw.side:
        raise SchemeError("qw has a real offset (zero_point='float'): expected symmetric weights")
    zp = uniform.zero_points(s, qw.side, 1)
    if np.any(zp != 0):
        raise SchemeError("qw has nonzero zero points: expected symmetric weights (seed 001: symmetric "
                          "weights avoid the online correction); quantize them with symmetric=True")
    O, K = (int(v) for v in qw.shape)
    qmin, qmax = s.qrange
    scale = np.broadcast_to(uniform.scale_values(s, qw.side).reshape(-1), (O,)).copy()
    keep_packed = (s.bits == 4) if packed is None else bool(packed)
    if keep_packed and s.bits != 4:
        raise SchemeError(f"packed=True needs bits=4 weights, got bits={s.bits}")
    codes = _codes(qw)
    if keep_packed:
        p = codes.reshape(O, -1)
        rowsum = intmm.row_sums_int4(p, qmin, K) if O and K else np.zeros(O, np.int32)
        return PreparedWeights((O, K), 4, qmin, qmax, None, p, scale, rowsum, s)
    u = unpack_codes(codes, s.bits, (O, K))
    w = (u + np.uint8(qmin % 256)).view(np.int8)  # code + qmin, wrapping in uint8: one pass
    rowsum = intmm.row_sums_int8(w) if O and K else np.zeros(O, np.int32)
    return PreparedWeights((O, K), s.bits, qmin, qmax, w, None, scale, rowsum, s)


# ----------------------------------------------------------------------------- activations


@dataclasses.dataclass(frozen=True)
class _Activations:
    codes: np.ndarray  # (K, N) uint8, C - where X ~ S_x (C - c0) + off
    bits: int
    c0: int  # code of the zero point (0 with a real offset)
    qmin: int  # X_q = C + qmin
    qmax: int
    scale: float
    offset: float


def _activations(qx):
    qx = _uniform_of(qx, "qx")
    s = qx.scheme
    if s.axis is not None:
        raise SchemeError(f"qx scheme axis={s.axis} is invalid: expected per-tensor activations (axis=None)")
    qmin, qmax = s.qrange
    scale = float(uniform.scale_values(s, qx.side).reshape(-1)[0])
    if "offset" in qx.side:
        c0, off = 0, float(base.widen(qx.side["offset"]).reshape(-1)[0])
    else:
        c0, off = int(uniform.zero_points(s, qx.side, 1)[0]) - qmin, 0.0
    K, N = (int(v) for v in qx.shape)
    codes = unpack_codes(_codes(qx), s.bits, (K, N))
    return _Activations(codes, s.bits, c0, qmin, qmax, scale, off)


# ----------------------------------------------------------------------------- accumulation


def block_k(wmax, xdev):
    """Largest K-block for which float32 GEMM is exact: ``2^24 // (wmax * xdev)``.

    Every product has magnitude ``<= wmax * xdev``, so every partial sum over at
    most this many terms is an integer of magnitude ``<= 2^24``.
    """
    return max(1, EXACT_F32 // max(1, wmax * xdev))


def _check(pw, act):
    K = pw.shape[1]
    if act.codes.shape[0] != K:
        raise InputError(f"qw shape={pw.shape} and qx shape={act.codes.shape} do not align: expected "
                         f"qx.shape[0] == {K}")
    xmax = max(abs(act.qmin), abs(act.qmax), 1 << (act.bits - 1))
    if K * pw.wmax * xmax > ACC_LIMIT:
        raise InputError(f"K={K} is too long for int32 accumulation with {pw.bits}-bit weights and "
                         f"{act.bits}-bit activations: expected K <= {ACC_LIMIT // (pw.wmax * xmax)}")


def _accumulate_blas(pw, act):
    O, K = pw.shape
    N = act.codes.shape[1]
    cx = 1 << (act.bits - 1)
    kb = min(K, block_k(pw.wmax, cx))
    ob = min(O, O_BLOCK)
    xc = np.empty((K, N), np.float32)
    intmm.center_f32(act.codes, cx, xc)
    acc = np.empty((O, N), np.int32)
    wbuf = np.empty(ob * kb, np.float32)
    ybuf = np.empty(ob * N, np.float32)
    for o0 in range(0, O, ob):
        o1 = min(O, o0 + ob)
        for k0 in range(0, K, kb):
            k1 = min(K, k0 + kb)
            wb = wbuf[:(o1 - o0) * (k1 - k0)].reshape(o1 - o0, k1 - k0)
            if pw.packed is not None:
                intmm.to_f32_int4(pw.packed, pw.qmin, o0, o1, k0, k1, wb)
            else:
                intmm.to_f32_int8(pw.int8, o0, o1, k0, k1, wb)
            yb = ybuf[:(o1 - o0) * N].reshape(o1 - o0, N)
            np.matmul(wb, xc[k0:k1], out=yb)
            intmm.accumulate_f32(acc[o0:o1], yb, k0 == 0)
    return acc


def _accumulate_int(pw, act):
    O, K = pw.shape
    N = act.codes.shape[1]
    cx = 1 << (act.bits - 1)
    xt = np.empty((N, K), np.int16)
    intmm.center_transpose_i16(act.codes, cx, xt)
    acc = np.empty((O, N), np.int32)
    w = pw.int8 if pw.int8 is not None else _DUMMY_I8
    p = pw.packed if pw.packed is not None else _DUMMY_U8
    intmm.intmm_int16(w, p, 4 if pw.packed is not None else 8, pw.qmin, xt, INT_O_BLOCK, INT_K_BLOCK, acc)
    return acc


def _centered(pw, act, method):
    """``A[o, n] = sum_k W_q[o, k] (C[k, n] - cx)``, int32 (O, N)."""
    if method not in METHODS:
        raise InputError(f"method={method!r} is invalid: expected one of {METHODS}")
    O, K = pw.shape
    N = act.codes.shape[1]
    if O == 0 or N == 0 or K == 0:
        return np.zeros((O, N), np.int32)
    if method == "int":
        return _accumulate_int(pw, act)
    return _accumulate_blas(pw, act)


def int_matmul(qw: "QuantizedArray | PreparedWeights", qx: QuantizedArray, *,
               method: str = "auto") -> np.ndarray:
    """The int32 accumulator ``sum_k W_q[o, k] * X_q[k, n]`` of the integer operands.

    Parameters
    ----------
    qw : QuantizedArray (O, K) or PreparedWeights (see :func:`prepare_weights`)
    qx : QuantizedArray (K, N), per tensor; ``X_q`` are its integer values
        (uint8 for unsigned schemes, int8 for signed ones)
    method : "auto", "blas" or "int"

    Returns
    -------
    ndarray of shape (O, N), int32 (exact: equal to the int64 product)
    """
    pw = prepare_weights(qw)
    act = _activations(qx)
    _check(pw, act)
    acc = _centered(pw, act, method)
    shift = (1 << (act.bits - 1)) + act.qmin  # X_q = (C - cx) + cx + qmin
    if shift:
        acc += (np.int64(shift) * pw.rowsum.astype(np.int64)).astype(np.int32)[:, None]
    return acc


def qmatmul(qw: "QuantizedArray | PreparedWeights", qx: QuantizedArray, *, method: str = "auto",
            out: np.ndarray | None = None) -> np.ndarray:
    """Product of quantized operands, computed on their integers: float32 ``W_hat @ X_hat``.

    ``Y[o, n] = S_w[o] * (S_x * (A[o, n] + (cx - c0) * R[o]) + off_x * R[o])`` with
    ``A = sum_k W_q (C - cx)`` accumulated exactly in int32, ``R`` the precomputed
    row sums and ``c0`` the activations' zero-point code (module docstring: the
    seed's folding).  The epilogue runs in float64 and rounds once, so ``Y`` equals
    the float matmul of the dequantized operands up to float32 rounding (closer
    to the exact product than a float32 matmul of them).

    Parameters
    ----------
    qw : QuantizedArray of shape (O, K) or PreparedWeights
        Symmetric signed weights, ``axis=0`` (per output channel) or per tensor;
        8-bit (int8) or 4-bit (kept packed, unpacked on the fly).  Pass
        :func:`prepare_weights`'s result to reuse the weight-only terms across calls.
    qx : QuantizedArray of shape (K, N)
        Per-tensor activations, asymmetric (uint8, or int8 with ``signed=True``)
        or symmetric, ``bits <= 8``, integer or real zero point.
    method : "auto", "blas" or "int"
        ``"blas"`` (what ``"auto"`` picks): exact blocked float32 GEMM + int32
        accumulation; ``"int"``: the Numba integer kernel.
    out : ndarray of shape (O, N), float32, C-contiguous, optional

    Returns
    -------
    ndarray of shape (O, N), float32
    """
    pw = prepare_weights(qw)
    act = _activations(qx)
    _check(pw, act)
    O = pw.shape[0]
    N = act.codes.shape[1]
    if out is None:
        out = np.empty((O, N), np.float32)
    elif (not isinstance(out, np.ndarray) or out.shape != (O, N) or out.dtype != np.float32
          or not out.flags.c_contiguous):
        raise InputError(f"out is invalid: expected a C-contiguous float32 array of shape {(O, N)}")
    acc = _centered(pw, act, method)
    zfold = (1 << (act.bits - 1)) - act.c0
    if O and N:
        intmm.epilogue(acc, pw.rowsum, zfold, pw.scale, act.scale, act.offset, out)
    return out
