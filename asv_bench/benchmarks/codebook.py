"""Blockwise codebook quantization (NF4, QLoRA double quantization) through the public API."""

import nquant as nq

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
