"""Dask execution: chunk invariance and laziness of ``nquant.quantize`` / ``nquant.dequantize``.

- Chunk invariance: for every scheme (per tensor, per index of axis 0 / the last axis / a
  middle axis, blocks; ranges minmax, percentile, mse; rounding nearest and stochastic) the
  packed codes, the side arrays and the dequantized values of a Dask input are bit-identical
  to those of the NumPy input, for hypothesis-drawn (irregular) chunkings, with the threaded
  scheduler.  The process-based cluster runs the same comparison in ``test_distributed.py``.
- Laziness: a scheduler that counts its ``get`` calls sees exactly the statistics passes the
  docs state (1 for minmax, 2 for percentile and mse, 0 for block schemes) and none for
  ``dequantize``.
"""

import dask
import dask.array as da
import dask.system
import dask.threaded
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nquant as nq
from tests.helpers import CountingScheduler, assert_dask_equals_numpy, same_bits
from tests.strategies import chunkings

# ----------------------------------------------------------------------------- helpers


def data(seed, shape, dtype):
    """Normal data with a few outliers, read-only (as distributed hands chunks to workers)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * rng.uniform(0.1, 10)
    if x.size:
        flat = x.reshape(-1)
        flat[rng.integers(0, x.size, size=max(1, x.size // 50))] *= 20
    x = x.astype(dtype)
    x.setflags(write=False)
    return x


@st.composite
def arrays_and_chunks(draw, ndim):
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16]))
    seed = draw(st.integers(0, 2**32 - 1))
    return data(seed, shape, dtype), draw(chunkings(shape))


# ----------------------------------------------------------------------------- schemes

GRANULARITIES = {
    "tensor": ({}, (1, 2, 3)),
    "axis0": ({"axis": 0}, (1, 2, 3)),
    "axis_last": ({"axis": -1}, (1, 2, 3)),
    "axis_middle": ({"axis": 1}, (3,)),
    "blocks": ({"block_size": 16}, (1, 2, 3)),
    "blocks_odd": ({"block_size": 7}, (2, 3)),
}
RANGES = ["minmax", "percentile", "mse"]
ROUNDINGS = ["nearest", "stochastic"]

CASES = [
    pytest.param(gran, rng, rnd, id=f"{gran}-{rng}-{rnd}")
    for gran, (kw, _) in GRANULARITIES.items()
    for rng in RANGES
    for rnd in ROUNDINGS
    if not ("block_size" in kw and rng != "minmax")
]


@pytest.mark.parametrize(("gran", "range_", "rounding"), CASES)
@settings(max_examples=4)
@given(data=st.data())
def test_chunk_invariance(gran, range_, rounding, data):
    kw, ndims = GRANULARITIES[gran]
    ndim = data.draw(st.sampled_from(ndims), label="ndim")
    bits = data.draw(st.sampled_from([2, 3, 4, 8]), label="bits")
    symmetric = data.draw(st.booleans(), label="symmetric")
    scheme = nq.Uniform(bits=bits, symmetric=symmetric, range=range_, rounding=rounding, seed=7, bins=64,
                        **kw)
    x, chunks = data.draw(arrays_and_chunks(ndim), label="x, chunks")
    q_np = nq.quantize(x, scheme)
    with dask.config.set(scheduler="threads"):
        q_da = nq.quantize(da.from_array(x, chunks=chunks), scheme)
        assert_dask_equals_numpy(q_np, q_da)


OTHER_SCHEMES = [
    pytest.param(nq.Codebook(values=(-1.5, -0.2, 0.0, 0.4, 2.0)), id="codebook"),
    pytest.param(nq.Codebook(values=tuple(np.linspace(-3, 3, 7)), rounding="stochastic", seed=3),
                 id="codebook_stochastic"),
    pytest.param(nq.NF4(block_size=16), id="nf4"),
    pytest.param(nq.NF4(block_size=8, double_quant=True), id="nf4_double_quant"),
    pytest.param(nq.Blockwise(codebook=(-1.0, -0.5, 0.0, 0.5, 1.0), block_size=10), id="blockwise_3bit"),
]


@pytest.mark.parametrize("scheme", OTHER_SCHEMES)
@settings(max_examples=4)
@given(data=st.data())
def test_chunk_invariance_codebook_and_blockwise(scheme, data):
    ndim = data.draw(st.sampled_from([1, 2, 3]), label="ndim")
    x, chunks = data.draw(arrays_and_chunks(ndim), label="x, chunks")
    q_np = nq.quantize(x, scheme)
    with dask.config.set(scheduler="threads"):
        assert_dask_equals_numpy(q_np, nq.quantize(da.from_array(x, chunks=chunks), scheme))


@pytest.mark.parametrize("scheme", [
    nq.Uniform(bits=4),
    nq.Uniform(bits=3, axis=-1, rounding="stochastic"),
    nq.Uniform(bits=4, block_size=8),
    nq.Uniform(bits=8, range="mse"),
], ids=["tensor", "axis_last", "blocks", "mse"])
@pytest.mark.parametrize("shape", [(), (0,), (0, 5), (4, 0), (1,), (7,)], ids=repr)
def test_chunk_invariance_edge_shapes(scheme, shape):
    if scheme.axis is not None and not shape:
        pytest.skip("a 0-d array has no axis")
    x = data(3, shape, np.float32)
    q_np = nq.quantize(x, scheme)
    for chunks in ({}, {"chunks": 2}) if shape else ({},):
        q_da = nq.quantize(da.from_array(x, **chunks), scheme)
        assert_dask_equals_numpy(q_np, q_da)


def test_chunk_invariance_synchronous_scheduler():
    x = data(11, (13, 6, 5), np.float64)
    scheme = nq.Uniform(bits=5, axis=1, rounding="stochastic", range="percentile", bins=128)
    q_np = nq.quantize(x, scheme)
    with dask.config.set(scheduler="synchronous"):
        assert_dask_equals_numpy(q_np, nq.quantize(da.from_array(x, chunks=(4, 3, 2)), scheme))


def test_block_scheme_rechunks_chunks_that_split_blocks():
    x = data(5, (10, 6), np.float32)
    scheme = nq.Uniform(bits=4, block_size=16)
    q_da = nq.quantize(da.from_array(x, chunks=(3, 4)), scheme)
    assert_dask_equals_numpy(nq.quantize(x, scheme), q_da)
    # every data chunk is contiguous in C order and holds whole blocks
    for rows in q_da.chunks[0][:-1]:
        assert rows * 6 % 16 == 0
    assert q_da.chunks[1] == (6,)


# ----------------------------------------------------------------------------- laziness


@pytest.mark.parametrize(("scheme", "passes"), [
    (nq.Uniform(bits=8), 1),
    (nq.Uniform(bits=4, axis=0), 1),
    (nq.Uniform(bits=4, symmetric=True, axis=-1, rounding="stochastic"), 1),
    (nq.Uniform(bits=8, range=(-1.0, 1.0)), 1),
    (nq.Uniform(bits=8, range="percentile"), 2),
    (nq.Uniform(bits=4, range="mse", axis=1), 2),
    (nq.Uniform(bits=4, block_size=16), 0),
    (nq.Uniform(bits=3, block_size=24, rounding="stochastic"), 0),
    (nq.Codebook(values=(-1.0, 0.0, 0.5, 2.0), rounding="stochastic"), 0),
    (nq.NF4(block_size=16), 0),
    (nq.NF4(block_size=16, double_quant=True), 1),  # the mean absmax is a global statistic
], ids=["minmax", "axis0", "axis_last_sym", "fixed_range", "percentile", "mse", "blocks", "blocks3",
        "codebook", "nf4", "nf4_double_quant"])
def test_quantize_computes_only_the_calibration_passes(scheme, passes):
    x = da.from_array(data(0, (12, 10, 8), np.float32), chunks=(5, 4, 8))
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        q = nq.quantize(x, scheme)
        assert counter.calls == passes
        assert q.is_dask and isinstance(q.codes, da.Array)
        # nothing else is computed until asked: dequantize and codes_unpacked stay lazy
        x_hat = nq.dequantize(q)
        codes = q.codes_unpacked
        assert isinstance(x_hat, da.Array) and isinstance(codes, da.Array)
        assert counter.calls == passes
        x_hat.compute()
        assert counter.calls == passes + 1


@pytest.mark.parametrize("scheme", [nq.Uniform(bits=4, block_size=16), nq.Uniform(bits=4, block_size=5)],
                         ids=["aligned", "rechunked"])
def test_block_scheme_quantize_and_dequantize_compute_nothing(scheme):
    x = da.from_array(data(1, (9, 20), np.float16), chunks=(4, 20))
    with dask.config.set(scheduler=CountingScheduler(raise_on_compute=True)):
        q = nq.quantize(x, scheme)
        x_hat = nq.dequantize(q, dtype=np.float32)
    assert x_hat.dtype == np.float32
    assert same_bits(x_hat.compute(), nq.dequantize(nq.quantize(np.asarray(x), scheme), dtype=np.float32))


def test_dequantize_of_a_dask_backed_array_computes_nothing():
    x = da.from_array(data(2, (16, 12), np.float32), chunks=(5, 8))
    q = nq.quantize(x, nq.Uniform(bits=4, axis=0, range="percentile"))
    with dask.config.set(scheduler=CountingScheduler(raise_on_compute=True)):
        x_hat = nq.dequantize(q)
        assert isinstance(x_hat, da.Array) and x_hat.shape == (16, 12) and x_hat.dtype == np.float32


def test_fit_statistics_are_computed_once_per_pass_not_per_chunk():
    """The calibration pass reads each source chunk once (no per-chunk computes, no re-reads)."""
    calls = []

    def source(block, block_info=None):
        calls.append(block_info[0]["chunk-location"])
        return block

    base = da.from_array(data(4, (12, 12), np.float32), chunks=(4, 6))
    x = base.map_blocks(source, dtype=np.float32)
    nq.quantize(x, nq.Uniform(bits=8, range="mse"))
    assert len(calls) == 2 * base.npartitions
    assert len(set(calls)) == base.npartitions


# ----------------------------------------------------------------------------- xarray


def test_xarray_dataarray_input():
    xr = pytest.importorskip("xarray")
    x = data(6, (8, 10), np.float32)
    scheme = nq.Uniform(bits=4, axis=0)
    q_np = nq.quantize(x, scheme)
    # a NumPy-backed DataArray quantizes like its values
    q_xr = nq.quantize(xr.DataArray(x, dims=("row", "col")), scheme)
    assert same_bits(q_np.codes, q_xr.codes)
    # a Dask-backed DataArray: its .data is the Dask array
    xda = xr.DataArray(da.from_array(x, chunks=(3, 4)), dims=("row", "col"))
    assert_dask_equals_numpy(q_np, nq.quantize(xda.data, scheme))


@pytest.mark.parametrize("scheme", [
    nq.Uniform(bits=4, axis=0),
    nq.Codebook(values=(-1.5, -0.2, 0.0, 0.4, 2.0)),
    nq.NF4(block_size=8),
    nq.Blockwise(codebook=(-1.0, -0.5, 0.0, 0.5, 1.0), block_size=10),
    nq.KMeansBlockwise(bits=3, block_size=16),
    nq.Outliers(nq.NF4(block_size=8), fraction=0.05),
    nq.ASQ(bits=2),
], ids=lambda s: s.type)
@pytest.mark.parametrize("dask_backed", [False, True], ids=["numpy", "dask"])
def test_dequantize_writes_out_in_every_family(scheme, dask_backed):
    x = data(5, (9, 14), np.float32)
    q = nq.quantize(da.from_array(x, chunks=(4, 7)) if dask_backed else x, scheme)
    expected = np.asarray(nq.dequantize(q))
    for dtype in (np.float32, np.float64):
        out = np.full(x.shape, np.nan, dtype)
        with dask.config.set(scheduler="threads"):
            assert nq.dequantize(q, out=out) is out
        np.testing.assert_array_equal(out, expected.astype(dtype))


def _block_sum(block, start):
    a = np.asarray(block)
    return start, a.shape, float(a.astype(np.float64).sum())


@pytest.mark.parametrize("shape, chunks", [((10, 7), (4, 3)), ((5,), (2,)), ((), ())])
def test_map_chunks_reads_a_zarr_source_in_the_task(tmp_path, shape, chunks):
    """Tasks given ``source`` read their chunk themselves: the same blocks as ``x``'s, one task each."""
    zarr = pytest.importorskip("zarr")
    from nquant import chunked

    x_np = data(7, shape, np.float32)
    z = zarr.create_array(str(tmp_path / "src.zarr"), shape=shape, chunks=chunks or "auto", dtype=np.float32)
    z[...] = x_np
    x = da.from_zarr(z)
    via_dask = chunked.map_chunks(x, _block_sum, lambda c: (c.start,))
    in_task = chunked.map_chunks(x, _block_sum, lambda c: (c.start,), source=z)
    assert dask.compute(*in_task) == dask.compute(*via_dask)
    assert all(len(t.__dask_graph__()) == 1 for t in in_task)  # no separate read task


def test_storage_threads_only_for_the_default_threaded_scheduler():
    from nquant import chunked

    cores = dask.system.CPU_COUNT
    # from Dask's defaults, whatever an earlier test in this process left in its global config
    with dask.config.set({"scheduler": None, "num_workers": None}):
        with chunked.storage_threads(4 << 20):
            assert dask.config.get("num_workers") == chunked.STORAGE_THREADS_PER_CORE * cores
        for config, nbytes in [({"num_workers": 3}, 4 << 20), ({"scheduler": "sync"}, 4 << 20),
                               ({}, chunked.STORAGE_CHUNK_BYTES + 1)]:
            with dask.config.set(config), chunked.storage_threads(nbytes):
                assert dask.config.get("num_workers", None) == config.get("num_workers")
        with chunked.storage_threads(4 << 20, client=object()):
            assert dask.config.get("num_workers", None) is None
