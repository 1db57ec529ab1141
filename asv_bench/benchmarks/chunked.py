"""The Dask path on small Zarr stores: streaming quantization, graph sizes, memory."""

import os
import shutil
import tempfile

import dask
import dask.array as da
import numpy as np
import zarr

import nquant as nq

from . import common

SCHEMES = {
    "int8-channel": nq.Uniform(bits=8, symmetric=True, axis=0),
    "int4-block64": nq.Uniform(bits=4, block_size=64),
    "nf4-dq": nq.NF4(double_quant=True),
}


class QuantizeZarr:
    params = (list(SCHEMES),)
    param_names = ["scheme"]
    timeout = 300

    def setup(self, name):
        self.dir = tempfile.mkdtemp(prefix="nquant-asv-")
        cols = 1024
        rows = max(64, common.N // cols)
        x = common.weight_matrix(rows * cols, cols)
        self.src = os.path.join(self.dir, "src.zarr")
        z = zarr.create_array(self.src, shape=x.shape, chunks=(max(1, rows // 8), cols), dtype=x.dtype)
        z[...] = x
        self.x = x
        self.scheme = SCHEMES[name]
        self.dst = os.path.join(self.dir, "dst.zarr")
        with dask.config.set(scheduler="threads"):
            nq.quantize_zarr(self.src, self.dst, self.scheme, overwrite=True)  # compiles the kernels

    def teardown(self, name):
        shutil.rmtree(self.dir, ignore_errors=True)

    def time_quantize_zarr(self, name):
        with dask.config.set(scheduler="threads"):
            nq.quantize_zarr(self.src, self.dst, self.scheme, overwrite=True)

    def peakmem_quantize_zarr(self, name):
        with dask.config.set(scheduler="threads"):
            nq.quantize_zarr(self.src, self.dst, self.scheme, overwrite=True)

    def time_dequantize(self, name):
        with dask.config.set(scheduler="threads"):
            nq.dequantize(nq.open(self.dst)).compute()

    def track_num_tasks_quantize(self, name):
        q = nq.quantize(da.from_zarr(self.src), self.scheme)
        return len(dict(q.codes.__dask_graph__()))

    track_num_tasks_quantize.unit = "tasks"

    def track_rmse(self, name):
        return nq.open(self.dst).info["metrics"]["rmse"]

    track_rmse.unit = "rmse"


class ChunkInvariantFit:
    params = (["minmax", "mse"],)
    param_names = ["range"]

    def setup(self, range_):
        x = common.gaussian()
        self.x = da.from_array(x, chunks=max(1, x.size // 16), name=False)
        self.scheme = nq.Uniform(bits=4, range=range_)
        nq.quantize(self.x[:1024], self.scheme)

    def time_fit_dask(self, range_):
        with dask.config.set(scheduler="threads"):
            nq.quantize(self.x, self.scheme)

    def track_codes_equal_numpy(self, range_):
        a = np.asarray(nq.quantize(self.x, self.scheme).codes_unpacked.compute())
        b = nq.quantize(self.x.compute(), self.scheme).codes_unpacked
        return float((a == b).mean())

    track_codes_equal_numpy.unit = "fraction"


class QuantizeZarrSpeedup:
    """``quantize_zarr`` of a float32 store of ``N`` values in chunks of 256 rows (4096 columns
    at full size) as a speed-up over a Dask copy of the store, timed in turn in one process."""

    params = (["int8-channel", "int4-block64"],)
    param_names = ["scheme"]
    timeout = 600

    def setup(self, name):
        self.dir = tempfile.mkdtemp(prefix="nquant-asv-")
        cols = min(4096, common.N)
        x = common.gaussian().reshape(-1, cols)
        self.src = os.path.join(self.dir, "src.zarr")
        z = zarr.create_array(self.src, shape=x.shape, chunks=(min(256, x.shape[0]), cols), dtype=x.dtype)
        z[...] = x
        self.scheme = SCHEMES[name]

    def teardown(self, name):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _copy(self):
        da.to_zarr(da.from_zarr(self.src), os.path.join(self.dir, "copy.zarr"), overwrite=True)

    def _quantize(self):
        nq.quantize_zarr(self.src, os.path.join(self.dir, "q.zarr"), self.scheme, overwrite=True)

    def track_speedup_vs_copy(self, name):
        with dask.config.set(scheduler="threads"):
            return common.median_time(self._copy, 3) / common.median_time(self._quantize, 3)

    track_speedup_vs_copy.unit = "x"
