"""Test data and assertions shared by several test modules."""

import dask
import dask.array as da
import dask.threaded
import numpy as np
import zarr

import nquant as nq


def blobs(n, d, k, seed=0, spread=10.0, noise=1.0, dtype=np.float32):
    """Well separated Gaussian blobs (no near-ties between clusters)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d)) * spread
    lab = rng.integers(0, k, n)
    return (means[lab] + noise * rng.standard_normal((n, d))).astype(dtype)


def readonly(a):
    """A read-only copy of ``a``."""
    a = a.copy()
    a.setflags(write=False)
    return a


def same_bits(a, b):
    """Bit-identical arrays: same dtype, same shape, same bytes (NaN payloads included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def computed(a):
    """``a`` as a NumPy array, computing it first if it is a Dask array."""
    return np.asarray(a.compute() if isinstance(a, da.Array) else a)


def assert_same_quantized(q_a, q_b):
    """Two QuantizedArrays (NumPy- or Dask-backed) are equal bit for bit: scheme, shape, dtype,
    codes, side arrays and dequantized values."""
    assert q_a.scheme == q_b.scheme and tuple(q_a.shape) == tuple(q_b.shape)
    assert np.dtype(q_a.dtype) == np.dtype(q_b.dtype)
    assert same_bits(computed(q_a.codes), computed(q_b.codes)), "codes differ"
    assert set(q_a.side) == set(q_b.side)
    for name in q_a.side:
        assert same_bits(computed(q_a.side[name]), computed(q_b.side[name])), f"side array {name!r} differs"
    assert same_bits(computed(nq.dequantize(q_a)), computed(nq.dequantize(q_b))), "dequantized values differ"


def assert_dask_equals_numpy(q_np, q_da):
    """The Dask-backed ``q_da`` equals the NumPy-backed ``q_np`` bit for bit (unpacked codes too)."""
    assert q_da.is_dask and not q_np.is_dask
    assert_same_quantized(q_np, q_da)
    assert same_bits(q_np.codes_unpacked, q_da.codes_unpacked.compute()), "codes differ"


def rmse(x, x_hat):
    """Root mean squared error of ``x_hat`` against ``x``, in float64."""
    return float(np.sqrt(np.mean((np.asarray(x_hat, np.float64) - x) ** 2)))


def write_zarr(path, x, chunks, overwrite=False):
    """A Zarr array at ``path`` holding ``x`` with the given chunks."""
    z = zarr.create_array(str(path), shape=x.shape, chunks=chunks, dtype=x.dtype, overwrite=overwrite)
    z[...] = x
    return z


class CountingScheduler:
    """A Dask scheduler (``dask.config.set(scheduler=...)``) that counts its ``get`` calls
    (optionally refusing any compute)."""

    def __init__(self, raise_on_compute=False):
        self.calls = 0
        self.raise_on_compute = raise_on_compute

    def __call__(self, dsk, keys, **kwargs):
        self.calls += 1
        if self.raise_on_compute:
            raise AssertionError("Dask computed although nothing should have been computed")
        return dask.threaded.get(dsk, keys, **kwargs)
