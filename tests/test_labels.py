"""xarray.DataArray inputs keep their dims, coordinates, attributes and name."""

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_array_equal

import nquant as nq
from nquant.errors import InputError

xr = pytest.importorskip("xarray", reason="xarray is an optional extra (pip install 'nquant[xarray]')")


def labelled(data):
    t = np.array(["2024-01-01", "2024-01-02", "2024-01-03"], dtype="datetime64[ns]")
    return xr.DataArray(
        data, dims=("time", "station", "level"), name="temperature",
        coords={"time": t, "station": ["a", "bb", "ccc", "d"], "level": ("level", [1000.0, 850.0],
                                                                          {"units": "hPa"}),
                "elevation": ("station", np.array([10, 20, 30, 40], np.int32))},
        attrs={"units": "K", "history": ["made", "quantized"], "scale": 0.5})


def assert_same_labels(got, want):
    assert isinstance(got, xr.DataArray)
    assert got.dims == want.dims and got.name == want.name and got.attrs == want.attrs
    assert set(got.coords) == set(want.coords)
    for name, c in want.coords.items():
        assert got.coords[name].dims == c.dims and got.coords[name].attrs == c.attrs
        assert_array_equal(got.coords[name].values, c.values)


def data(seed=0):
    return np.random.default_rng(seed).standard_normal((3, 4, 2)).astype(np.float32)


def test_numpy_backed_dataarray_round_trip_keeps_labels():
    x = labelled(data())
    scheme = nq.Uniform(bits=4, axis=1)
    q = nq.quantize(x, scheme)
    y = nq.dequantize(q)
    assert_same_labels(y, x)
    assert_array_equal(y.values, nq.dequantize(nq.quantize(x.values, scheme)))
    assert np.abs(y.values - x.values).max() <= 0.5 * q.scale.max() * (1 + 1e-6)


def test_dask_backed_dataarray_is_lazy_and_equals_numpy():
    x = labelled(data(1)).chunk({"time": 1, "station": 2})
    scheme = nq.Uniform(bits=8, rounding="stochastic", seed=3)
    q = nq.quantize(x, scheme)
    assert q.is_dask
    y = nq.dequantize(q)
    assert isinstance(y.data, da.Array)
    assert_same_labels(y, x)
    assert_array_equal(y.values, nq.dequantize(nq.quantize(x.values, scheme)))


def test_save_and_open_keep_labels(tmp_path):
    x = labelled(data(2))
    q = nq.quantize(x, nq.NF4(block_size=8))
    nq.save(q, tmp_path / "t.zarr")
    back = nq.open(tmp_path / "t.zarr")
    y = nq.dequantize(back)
    assert_same_labels(y, x)
    assert_array_equal(y.values, nq.dequantize(q).values)
    # an unlabelled array stores none
    nq.save(nq.quantize(x.values, nq.NF4(block_size=8)), tmp_path / "plain.zarr")
    assert isinstance(nq.dequantize(nq.open(tmp_path / "plain.zarr")), da.Array)


def test_attributes_that_cannot_be_stored_are_refused():
    x = labelled(data())
    x.attrs["when"] = object()
    with pytest.raises(InputError, match=r"attrs=.*'when'.*JSON"):
        nq.quantize(x, nq.Uniform(bits=8))
