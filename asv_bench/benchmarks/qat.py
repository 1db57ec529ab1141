"""Quantized arithmetic: fake quantization, observers and integer matmul; error tracked beside time."""

import numpy as np

import nquant as nq
from nquant import observers, qat
from nquant.qmatmul import prepare_weights, qmatmul

from . import common

OBSERVERS = {
    "minmax": observers.MinMaxObserver,
    "moving_average": observers.MovingAverageMinMaxObserver,
    "percentile": observers.PercentileObserver,
    "mse": observers.MSEObserver,
}


class FakeQuantize:
    params = (["tensor", "channel"], [8, 4])
    param_names = ["granularity", "bits"]

    def setup(self, granularity, bits):
        self.x = common.weight_matrix()
        axis = 0 if granularity == "channel" else None
        self.params_ = qat.as_params(nq.Uniform(bits=bits, symmetric=True, axis=axis), self.x)
        self.y = np.empty_like(self.x)
        self.mask = np.empty(self.x.shape, np.bool_)
        qat.fake_quantize(self.x, self.params_, out=self.y, mask_out=self.mask)  # compiles the kernel
        nq.dequantize(self.params_.quantize(self.x))

    def time_fake_quantize(self, *args):
        qat.fake_quantize(self.x, self.params_, out=self.y, mask_out=self.mask)

    def time_quantize_then_dequantize(self, *args):
        nq.dequantize(self.params_.quantize(self.x))

    def track_rmse(self, *args):
        return nq.metrics(self.x, qat.fake_quantize(self.x, self.params_)[0])["rmse"]

    track_rmse.unit = "rmse"


class Observe:
    params = (["minmax", "moving_average", "percentile", "mse"],)
    param_names = ["observer"]

    def setup(self, name):
        x = common.gaussian()
        self.batches = np.array_split(x, 8)
        self.cls = OBSERVERS[name]
        self.cls().observe(self.batches[0][:1024])  # compiles the kernels
        self.parts = [self.cls().observe(b) for b in self.batches]

    def time_observe(self, name):
        o = self.cls()
        for b in self.batches:
            o.observe(b)

    def time_merge(self, name):
        o = self.parts[0]
        for p in self.parts[1:]:
            o = o.merge(p)

    def track_clip_mse(self, name):
        o = self.cls()
        for b in self.batches:
            o.observe(b)
        x = np.concatenate(self.batches)
        p = o.compute_params(nq.Uniform(bits=4))
        return nq.metrics(x, nq.dequantize(p.quantize(x)))["mse"]

    track_clip_mse.unit = "mse"


class QMatmul:
    """W (N / 1024, 1024) per-channel symmetric times X (1024, 256) asymmetric uint8."""

    params = (["blas", "int"], [8, 4])
    param_names = ["method", "weight_bits"]

    def setup(self, method, bits):
        self.w = common.weight_matrix()
        rng = np.random.default_rng(1)
        self.x = rng.standard_normal((self.w.shape[1], 256), dtype=np.float32) + np.float32(0.7)
        self.pw = prepare_weights(nq.quantize(self.w, nq.Uniform(bits=bits, symmetric=True, axis=0)))
        self.qx = nq.quantize(self.x, nq.Uniform(bits=8))
        self.out = np.empty((self.w.shape[0], self.x.shape[1]), np.float32)
        self.ref = np.empty_like(self.out)
        qmatmul(self.pw, self.qx, method=method, out=self.out)  # compiles the kernels
        np.matmul(self.w, self.x, out=self.ref)

    def time_qmatmul(self, method, bits):
        qmatmul(self.pw, self.qx, method=method, out=self.out)

    def time_matmul_float32(self, method, bits):
        np.matmul(self.w, self.x, out=self.ref)

    def track_rel_error(self, method, bits):
        y = qmatmul(self.pw, self.qx, method=method)
        ref = np.matmul(self.w, self.x).astype(np.float64)
        return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))

    track_rel_error.unit = "relative error"

    def track_weight_memory_ratio(self, method, bits):
        return self.w.nbytes / self.pw.weight_nbytes

    track_weight_memory_ratio.unit = "x less than float32"
