"""Bits per value of the side-information formats, checked against the bytes a saved group holds.

Prints a Markdown table: for each scheme on a (384, 1536) float32 matrix (normal values), the bits
per value (codes and every side array, as Zarr stores them uncompressed; asserted equal to the
bytes of an ``nq.save``d group) and the RMSE relative to the data's standard deviation.

    python benchmarks/side_info.py
"""

import math
import os
import tempfile

import numpy as np
import zarr

import nquant as nq

SCHEMES = [
    ("Uniform(4, sym, block 64) defaults", nq.Uniform(4, symmetric=True, block_size=64)),
    ("  + scale_dtype=float16, packed", nq.Uniform(4, symmetric=True, block_size=64, scale_dtype="float16",
                                                   zero_point_storage="packed")),
    ("  + scale_dtype=bfloat16, packed", nq.Uniform(4, symmetric=True, block_size=64, scale_dtype="bfloat16",
                                                    zero_point_storage="packed")),
    ("  + double_quant, packed", nq.Uniform(4, symmetric=True, block_size=64, double_quant=True,
                                            zero_point_storage="packed")),
    ("Uniform(4, block 64) defaults", nq.Uniform(4, block_size=64)),
    ("  + float16, packed zero points", nq.Uniform(4, block_size=64, scale_dtype="float16",
                                                   zero_point_storage="packed")),
    ("  + double_quant, packed zero points", nq.Uniform(4, block_size=64, double_quant=True,
                                                        zero_point_storage="packed")),
    ("Uniform(4, block 64, zero_point=float) + float16", nq.Uniform(4, block_size=64, zero_point="float",
                                                                    scale_dtype="float16")),
    ("Uniform(8, axis=0) + float16, packed", nq.Uniform(8, axis=0, scale_dtype="float16",
                                                        zero_point_storage="packed")),
    ("NF4 block 64", nq.NF4()),
    ("NF4 block 64, float16 absmax", nq.NF4(scale_dtype="float16")),
    ("NF4 block 64, double_quant", nq.NF4(double_quant=True)),
    ("KMeansBlockwise(4) float16 absmax", nq.KMeansBlockwise(scale_dtype="float16")),
    ("KMeansBlockwise(4, double_quant)", nq.KMeansBlockwise(double_quant=True)),
]


def main():
    x = (np.random.default_rng(0).standard_normal((384, 1536)) * 0.05).astype(np.float32)
    print("| scheme | bits/value (stored) | RMSE / std |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for i, (name, scheme) in enumerate(SCHEMES):
            q = nq.quantize(x, scheme)
            path = os.path.join(d, f"{i}.zarr")
            nq.save(q, path)
            g = zarr.open_group(path, mode="r")
            stored = sum(math.prod(g[k].shape) * g[k].dtype.itemsize for k in g.array_keys())
            assert 8 * stored / x.size == q.bits_per_value, name
            rel = float(np.sqrt(np.mean((nq.dequantize(q) - x) ** 2)) / x.std())
            print(f"| {name} | {q.bits_per_value:.4f} | {rel:.5f} |")


if __name__ == "__main__":
    main()
