"""xarray Datasets in Zarr (nquant/datasets.py): every floating variable quantized with its own
scheme, the other variables and every coordinate kept exactly, reopened as a Dataset."""

import numpy as np
import pytest

import nquant as nq
from nquant.errors import InputError, StoreError

xr = pytest.importorskip("xarray", reason="xarray is not installed (pip install 'nquant[xarray]')")


def _dataset(dask=False):
    rng = np.random.default_rng(0)
    lat, lon = np.linspace(-60, 60, 24), np.linspace(0, 350, 36)
    t = 280 + 10 * np.cos(np.deg2rad(lat))[:, None] + rng.normal(0, 0.5, (24, 36))
    p = np.abs(rng.gamma(0.5, 2.0, (24, 36)))
    ds = xr.Dataset(
        {"t2m": (("lat", "lon"), t.astype(np.float32), {"units": "K"}),
         "precip": (("lat", "lon"), p.astype(np.float64), {"units": "mm"}),
         "land": (("lat", "lon"), (rng.random((24, 36)) > 0.5).astype(np.int8))},
        coords={"lat": ("lat", lat, {"units": "degrees_north"}), "lon": lon,
                "station": ("lon", np.array([f"s{i}" for i in range(36)]))},
        attrs={"title": "test"})
    return ds.chunk({"lat": 8}) if dask else ds


@pytest.mark.parametrize("dask", [False, True])
def test_datasets_round_trip_each_variable_its_own_scheme(tmp_path, dask):
    ds = _dataset(dask)
    schemes = {"t2m": nq.Uniform(bits=8, zero_point="float"), "precip": nq.Uniform(bits=6), "land": None}
    report = nq.quantize_dataset(ds, tmp_path / "ds.zarr", schemes)
    assert report["land"] == {"stored": "exact", "bits_per_value": None}
    assert report["t2m"]["stored"] == "quantized" and report["t2m"]["bits_per_value"] > 8
    back = nq.open_dataset(tmp_path / "ds.zarr")
    assert set(back.data_vars) == {"t2m", "precip", "land"} and back.attrs == {"title": "test"}
    for name in ("lat", "lon", "station"):  # coordinates untouched
        xr.testing.assert_identical(back[name].reset_coords(drop=True), ds[name].reset_coords(drop=True))
    xr.testing.assert_identical(back["land"], ds["land"].load())
    for name, s in schemes.items():
        if s is None:
            continue
        x = np.asarray(ds[name])
        want = nq.dequantize(nq.quantize(x, s))
        got = back[name]
        assert got.dims == ("lat", "lon") and got.attrs == ds[name].attrs and got.dtype == x.dtype
        np.testing.assert_array_equal(np.asarray(got), want)
        span = float(x.max() - x.min())
        assert float(np.abs(np.asarray(got) - x).max()) <= 0.5 * span / (2**s.bits - 1) * 1.001


def test_datasets_one_scheme_for_every_float_variable(tmp_path):
    report = nq.quantize_dataset(_dataset(), tmp_path / "ds.zarr", nq.Uniform(bits=8))
    assert {n: r["stored"] for n, r in report.items()} == {"t2m": "quantized", "precip": "quantized",
                                                            "land": "exact"}
    import zarr

    codecs = zarr.open_group(tmp_path / "ds.zarr" / "vars" / "t2m")["codes"].metadata.codecs
    assert codecs[0].to_dict()["name"] == "nquant.lossless"  # compression="auto"


def test_datasets_bad_requests_are_one_line_errors(tmp_path):
    ds = _dataset()
    u = nq.Uniform(bits=8)
    with pytest.raises(InputError, match=r"no entry for the floating variables \['precip'\]"):
        nq.quantize_dataset(ds, tmp_path / "a.zarr", {"t2m": u})
    with pytest.raises(InputError, match=r"scheme names \['nope'\], which are not data variables"):
        nq.quantize_dataset(ds, tmp_path / "a.zarr", {"t2m": u, "precip": u, "nope": u})
    with pytest.raises(InputError, match=r"scheme quantizes \['land'\], which are not floating point"):
        nq.quantize_dataset(ds, tmp_path / "a.zarr", {"t2m": u, "precip": u, "land": u})
    with pytest.raises(InputError, match="expected an xarray.Dataset"):
        nq.quantize_dataset(ds["t2m"], tmp_path / "a.zarr", u)
    assert not (tmp_path / "a.zarr").exists()
    nq.quantize_dataset(ds, tmp_path / "a.zarr", u)
    with pytest.raises(StoreError, match="already exists"):
        nq.quantize_dataset(ds, tmp_path / "a.zarr", u)
    nq.quantize_dataset(ds, tmp_path / "a.zarr", u, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    with pytest.raises(StoreError):
        nq.quantize_dataset(ds, tmp_path / "other", u, overwrite=True)
    assert (tmp_path / "other" / "keep.txt").read_text() == "user data"
    with pytest.raises(StoreError, match="is not a Zarr group"):
        nq.open_dataset(tmp_path / "other")
    with pytest.raises(StoreError, match="not a complete nquant dataset"):
        nq.open_dataset(tmp_path / "a.zarr" / "vars" / "t2m")  # one variable's group


def test_datasets_keep_each_variables_fill_value_and_bound(tmp_path):
    ds = _dataset()
    t = ds["t2m"].values.copy()
    t[3, 4:9] = -9999.0  # a CF missing-data marker, declared in the attributes
    ds["t2m"] = (("lat", "lon"), t, {"units": "K", "_FillValue": -9999.0})
    ds["precip"].encoding["_FillValue"] = 1e20  # declared in the encoding, absent from the data
    nq.quantize_dataset(ds, tmp_path / "ds.zarr", {"t2m": nq.Uniform(abs_error=0.01),
                                                   "precip": nq.Uniform(rel_error=1e-3), "land": None})
    back = nq.open_dataset(tmp_path / "ds.zarr")
    got = np.asarray(back["t2m"])
    missing = t == -9999.0
    assert (got[missing] == -9999.0).all()  # exactly, and left out of the fit
    assert float(np.abs(got[~missing] - t[~missing]).max()) <= 0.01
    q = nq.open(tmp_path / "ds.zarr" / "vars" / "t2m")
    assert q.scheme.fill_value == -9999.0 and q.scheme.abs_error == 0.01
    assert nq.open(tmp_path / "ds.zarr" / "vars" / "precip").scheme.fill_value == 1e20
    p = ds["precip"].values
    assert float(np.abs(np.asarray(back["precip"]) - p).max()) <= 1e-3 * float(p.max() - p.min())
