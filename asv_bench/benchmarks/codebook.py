"""Blockwise codebook quantization (NF4, QLoRA double quantization): the public API, and the
fused kernel's speed-up over a peer in the same process."""

import numpy as np

import nquant as nq
from nquant.codebooks.grids import normal_float
from nquant.kernels import blockwise

from . import common


class NF4:
    params = ([False, True],)
    param_names = ["double_quant"]

    def setup(self, double_quant):
        self.x = common.weight_matrix()
        self.scheme = nq.NF4(double_quant=double_quant)
        self.q = nq.quantize(self.x, self.scheme)  # compiles the kernels
        nq.dequantize(self.q)

    def time_quantize(self, double_quant):
        nq.quantize(self.x, self.scheme)

    def time_dequantize(self, double_quant):
        nq.dequantize(self.q)

    def track_rmse(self, double_quant):
        return nq.metrics(self.x, nq.dequantize(self.q))["rmse"]

    track_rmse.unit = "rmse"

    def track_bits_per_value(self, double_quant):
        return self.q.bits_per_value

    track_bits_per_value.unit = "bits"


def _numpy_nf4(x, block, levels, codes_out, absmax_out):
    """Plain NumPy NF4 (absmax, float32 scale, searchsorted on float32 midpoints, packing)."""
    f32 = np.float32
    xb = x.reshape(-1, block)
    np.max(np.abs(xb), axis=1, out=absmax_out)
    y = xb * (f32(1.0) / np.maximum(absmax_out, f32(1e-38)))[:, None]
    c = np.searchsorted((levels[:-1] + levels[1:]) / f32(2), y.reshape(-1), side="left").astype(np.uint8)
    np.bitwise_or(c[0::2] << 4, c[1::2], out=codes_out)


def _bitsandbytes_nf4():
    """bitsandbytes' CPU ``quantize_4bit`` on a float32 array, or None where it is not installed."""
    try:
        import bitsandbytes.functional as F
        import torch
    except Exception:  # ImportError, or a broken native library
        return None
    return lambda x: F.quantize_4bit(torch.from_numpy(x), blocksize=64, quant_type="nf4")


PEERS = ["numpy"] + (["bitsandbytes"] if _bitsandbytes_nf4() is not None else [])


class NF4Speedup:
    """NF4 blockwise quantization (block 64) of ``N`` float32 values, fused and packed, as a
    speed-up over a peer timed in the same process (bitsandbytes' CPU path where installed)."""

    params = (PEERS,)
    param_names = ["peer"]

    def setup(self, peer):
        self.x = common.gaussian()
        n = self.x.size - self.x.size % 64
        self.x = self.x[:n]
        self.levels = normal_float(4)
        self.absmax = np.empty(n // 64, np.float32)
        self.packed = np.empty(n // 2, np.uint8)
        if peer == "numpy":
            absmax, packed = np.empty_like(self.absmax), np.empty_like(self.packed)
            self.peer = lambda: _numpy_nf4(self.x, 64, self.levels, packed, absmax)
        else:
            quantize = _bitsandbytes_nf4()
            self.peer = lambda: quantize(self.x)

    def _nquant(self):
        blockwise.absmax_quantize_blockwise(self.x, 64, self.levels, self.absmax, self.packed, packed=True)

    def time_quantize_fused(self, peer):
        self._nquant()

    def track_speedup(self, peer):
        return common.median_time(self.peer, 3) / common.median_time(self._nquant)

    track_speedup.unit = "x"
