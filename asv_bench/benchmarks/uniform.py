"""Uniform quantization: quantize, encode, dequantize; error tracked beside time."""

import numpy as np

import nquant as nq
from nquant.families import uniform

from . import common

GRANULARITY = {
    "tensor": {},
    "channel": {"axis": 0},
    "block64": {"block_size": 64},
}


class Quantize:
    params = (["tensor", "channel", "block64"], [4, 8],
              ["nearest", "nearest_away", "floor", "ceil", "stochastic"])
    param_names = ["granularity", "bits", "rounding"]

    def setup(self, granularity, bits, rounding):
        self.x = common.weight_matrix()
        self.scheme = nq.Uniform(bits=bits, rounding=rounding, **GRANULARITY[granularity])
        self.q = nq.quantize(self.x, self.scheme)  # compiles the kernels
        self.params_ = uniform.fit(self.scheme, self.x)
        self.codes = np.empty(self.x.shape, np.uint8)
        self.out = np.empty_like(self.x)
        nq.dequantize(self.q, out=self.out)

    def time_quantize(self, *args):
        nq.quantize(self.x, self.scheme)

    def time_encode(self, *args):
        uniform.encode(self.scheme, self.params_, self.x, out=self.codes)

    def time_dequantize(self, *args):
        nq.dequantize(self.q, out=self.out)

    def peakmem_quantize(self, *args):
        nq.quantize(self.x, self.scheme)

    def track_rmse(self, *args):
        return nq.metrics(self.x, nq.dequantize(self.q))["rmse"]

    track_rmse.unit = "rmse"

    def track_bits_per_value(self, *args):
        return self.q.bits_per_value

    track_bits_per_value.unit = "bits"


class Calibrate:
    params = (["minmax", "percentile", "mse"],)
    param_names = ["range"]

    def setup(self, range_):
        self.x = common.gaussian()
        self.scheme = nq.Uniform(bits=4, range=range_)
        uniform.fit(self.scheme, self.x[:1024])

    def time_fit(self, range_):
        uniform.fit(self.scheme, self.x)

    def track_mse(self, range_):
        return nq.metrics(self.x, nq.dequantize(nq.quantize(self.x, self.scheme)))["mse"]

    track_mse.unit = "mse"
