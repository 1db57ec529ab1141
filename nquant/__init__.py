"""nquant: quantization for NumPy and Dask arrays with Numba kernels."""

from nquant import codec, errors
from nquant.api import dequantize, quantize
from nquant.containers import QuantizedArray
from nquant.metrics import metrics
from nquant import observers
from nquant.qat import QParams, fake_quantize
from nquant.qmatmul import PreparedWeights, int_matmul, prepare_weights, qmatmul
from nquant.models import open, quantize_safetensors
from nquant.packing import pack, unpack
from nquant.codebooks.grids import normal_float
from nquant.schemes import ASQ, NF4, Blockwise, Codebook, KMeansBlockwise, Outliers, Uniform, scheme_from_json
from nquant.families.mx import MXFP4, MXFP8
from nquant.families.significant import Significant
from nquant import bnb
from nquant.codebooks import asq, optimal1d
from nquant.adaptive import adaptive_round, hessian
from nquant.kmeans import KMeans, assign
from nquant.pq import ProductQuantizer
from nquant.store import dequantize_zarr, quantize_zarr, save
from nquant.datasets import open_dataset, quantize_dataset

__version__ = "0.1.0"

__all__ = [
    "KMeans",
    "KMeansBlockwise",
    "Outliers",
    "ProductQuantizer",
    "adaptive_round",
    "assign",
    "bnb",
    "hessian",
    "PreparedWeights",
    "QParams",
    "fake_quantize",
    "int_matmul",
    "observers",
    "prepare_weights",
    "qmatmul",
    "ASQ",
    "MXFP4",
    "MXFP8",
    "Significant",
    "NF4",
    "Blockwise",
    "Codebook",
    "normal_float",
    "QuantizedArray",
    "Uniform",
    "dequantize",
    "dequantize_zarr",
    "errors",
    "metrics",
    "open",
    "pack",
    "quantize",
    "quantize_safetensors",
    "quantize_zarr",
    "quantize_dataset",
    "open_dataset",
    "save",
    "scheme_from_json",
    "unpack",
]
