"""Error-bounded Uniform (``abs_error`` / ``rel_error``), 9..16-bit codes and fill values.

The bound ``max |x - x_hat| <= abs_error`` is checked in float64 (exact for every input and
output dtype) on adversarial values: both sides of every midpoint between levels, the data's
ends, every float32 of an interval, huge offsets, subnormals, float16/32/64, NaN and fill
values; 9..16-bit codes round-trip through NumPy, Dask, ``quantize_zarr`` / ``open`` and the
codec, and corrupt stores are refused with one line.
"""

import json
import os

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import nquant as nq
from nquant.codec import create_quantized_array
from nquant.errors import InputError, SchemeError, StoreError
from nquant.families import uniform
from nquant.validate import compressors

DTYPES = (np.float16, np.float32, np.float64)


def max_error(x, x_hat):
    """Largest ``|x - x_hat|`` over the finite values, in float64 (exact)."""
    x = np.asarray(x, np.float64)
    x_hat = np.asarray(x_hat, np.float64)
    keep = np.isfinite(x)
    return float(np.abs(x[keep] - x_hat[keep]).max()) if keep.any() else 0.0


def around_midpoints(lo, hi, e, dtype, rng, n=400):
    """Values of ``[lo, hi]`` in ``dtype``: both ends, and a few floats either side of the
    midpoints between the levels of the grid ``abs_error=e`` fits to ``[lo, hi]``."""
    params = uniform.bounded_params(nq.Uniform(abs_error=e), np.array([lo]), np.array([hi]),
                                    uniform.DTYPE_RANK[np.dtype(dtype)])
    s, o = float(params["scale"][0]), float(params["offset"][0])
    k = rng.integers(0, max(1, int((hi - o) / s)) + 1, n)
    mid = (o + (k + 0.5) * s).astype(dtype)
    vals = [mid]
    for _ in range(3):  # the float on each side of each midpoint, and the next ones
        vals += [np.nextafter(vals[-2 if len(vals) > 1 else -1], dtype(np.inf)),
                 np.nextafter(vals[-1], dtype(-np.inf))]
    x = np.concatenate(vals + [np.array([lo, hi], dtype)])
    return np.clip(x, dtype(lo), dtype(hi))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(DTYPES), st.sampled_from([0.0, 1.0, -3.5, 250.0, 1e4]),
       st.floats(1e-3, 10.0), st.floats(1e-3, 0.5), st.integers(0, 2**32 - 1))
def test_bound_holds_on_both_sides_of_every_midpoint(dtype, centre, width, e, seed):
    rng = np.random.default_rng(seed)
    lo, hi = float(dtype(centre - width)), float(dtype(centre + width))
    top = max(abs(lo), abs(hi))
    # the finest bound each dtype can hold at this magnitude (float32 decodes float16 too)
    floor = {np.float16: 0.05 + 2.0 ** -11 * top, np.float32: 2.0 ** -24 * 64 * top, np.float64: 0.0}[dtype]
    e = max(e, floor)
    x = around_midpoints(lo, hi, e, dtype, rng)
    q = nq.quantize(x, nq.Uniform(abs_error=e))
    x_hat = nq.dequantize(q)
    assert x_hat.dtype == x.dtype
    assert max_error(x, x_hat) <= e
    # the step is the largest float32 the guarantee allows: 2e less the rounding slack
    step = float(q.side["scale"][0])
    assert step <= 2 * e
    if dtype is np.float64:
        assert step >= 2 * e * (1 - 2.0 ** -23)
    elif dtype is np.float32 and e >= 1e4 * 2.0 ** -24 * top:
        assert step >= 2 * e * 0.999


@pytest.mark.parametrize("lo, hi, e", [(1000.0, 1000.5, 1e-4), (-0.25, -0.2, 1e-6), (1e6 - 64, 1e6 + 64, 0.5),
                                       (3.0, 3.0078125, 1e-6), (0.0, 2.0 ** -130, 6e-39)])
def test_bound_holds_for_every_float32_of_an_interval(lo, hi, e):
    a, b = sorted((abs(lo), abs(hi)))  # the floats of [a, b] are consecutive integers of their bits
    x = np.arange(np.float32(a).view(np.int32), np.float32(b).view(np.int32) + 1, dtype=np.int32)
    x = x.view(np.float32) * np.float32(1 if lo >= 0 else -1)
    x_hat = nq.dequantize(nq.quantize(x, nq.Uniform(abs_error=e)))
    assert max_error(x, x_hat) <= e


def test_huge_offsets_float64_and_a_float32_bound_it_cannot_hold():
    rng = np.random.default_rng(1)
    x = 1e6 + rng.uniform(-0.001, 0.001, 5000)
    x[:2] = 1e6 - 0.001, 1e6 + 0.001
    for e in (1e-4, 1e-6, 2e-8):
        x_hat = nq.dequantize(nq.quantize(x, nq.Uniform(abs_error=e)))
        assert max_error(x, x_hat) <= e
    # float32 spaces 1e6 by 0.0625: no float32 x_hat can be within 0.001 of all of them
    with pytest.raises(InputError, match=r"abs_error=0\.001 cannot be guaranteed in float32 arithmetic.*"
                                         r"float64 data"):
        nq.quantize(x.astype(np.float32), nq.Uniform(abs_error=0.001))
    x32 = x.astype(np.float32)
    assert max_error(x32, nq.dequantize(nq.quantize(x32, nq.Uniform(abs_error=0.2)))) <= 0.2


@pytest.mark.parametrize("dtype, tiny, e", [(np.float32, 1e-40, 1e-38), (np.float64, 1e-310, 1e-37),
                                            (np.float16, 6e-8, 1e-6)])
def test_subnormals(dtype, tiny, e):
    x = (np.arange(-50, 51) * tiny).astype(dtype)
    x_hat = nq.dequantize(nq.quantize(x, nq.Uniform(abs_error=e)))
    assert max_error(x, x_hat) <= e


def test_a_bound_below_the_smallest_float32_step_is_refused():
    with pytest.raises(InputError, match=r"abs_error=1e-300 .*smallest float32 step"):
        nq.quantize(np.array([0.0, 1e-300]), nq.Uniform(abs_error=1e-300))


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(DTYPES), st.integers(0, 2**32 - 1), st.sampled_from([1e-3, 0.05, 0.3]),
       st.sampled_from(["tensor", "axis", "block"]))
def test_bound_nan_and_fill_values_on_random_data_any_granularity(dtype, seed, e, gran):
    rng = np.random.default_rng(seed)
    scale = rng.choice([0.1, 3.0, 40.0])
    x = (rng.standard_normal((9, 40)) * scale + rng.choice([0.0, 7.0, -100.0])).astype(dtype)
    e *= scale  # at most 2**16 levels
    x.reshape(-1)[rng.integers(0, x.size, 5)] = np.nan
    x.reshape(-1)[rng.integers(0, x.size, 5)] = -9999.0
    kw = {"tensor": {}, "axis": {"axis": 0}, "block": {"block_size": 32}}[gran]
    if dtype is np.float16:  # the finest bound float16 holds at this magnitude
        e = max(e, 2.0 ** -10 * float(np.nanmax(np.abs(x.astype(np.float64)))) + 0.01)
    scheme = nq.Uniform(abs_error=e, nan="propagate", fill_value=-9999.0, **kw)
    q = nq.quantize(x, scheme)
    x_hat = nq.dequantize(q)
    nan, fill = np.isnan(x), x == -9999.0
    assert_array_equal(np.isnan(x_hat), nan)
    assert (x_hat[fill] == -9999.0).all()
    assert max_error(np.where(nan | fill, 0, x), np.where(nan | fill, 0, x_hat)) <= e
    # the fill value is not data: it does not widen the range (16 bits would not hold it here)
    assert float(np.min(q.side["offset"])) > -9999.0
    # chunk invariance: any Dask chunking gives the same codes
    qd = nq.quantize(da.from_array(x, chunks=(4, 32 if gran == "block" else 13)), scheme)
    assert_array_equal(np.asarray(qd.codes_unpacked), q.codes_unpacked)


def test_rel_error_is_relative_to_each_groups_range():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 500)) * np.array([[0.01], [1.0], [100.0]])
    q = nq.quantize(x, nq.Uniform(rel_error=1e-3, axis=0))
    x_hat = nq.dequantize(q)
    for row, row_hat in zip(x, x_hat):
        assert max_error(row, row_hat) <= 1e-3 * (row.max() - row.min())
    # a constant group: relative to its magnitude; zeros only: exact
    c = np.array([[5.0, 5.0], [0.0, 0.0]])
    c_hat = nq.dequantize(nq.quantize(c, nq.Uniform(rel_error=1e-3, axis=0)))
    assert abs(c_hat[0] - 5.0).max() <= 5e-3 and (c_hat[1] == 0).all()


def test_too_few_bits_names_the_bits_needed():
    x = np.linspace(0, 100, 1000)
    with pytest.raises(InputError, match=r"abs_error=0\.01 on x in \[0, 100\] needs 5002 levels, more than the "
                                         r"256 codes of bits=8: pass bits=13"):
        nq.quantize(x, nq.Uniform(abs_error=0.01, bits=8))
    with pytest.raises(InputError, match=r"pass a larger bound"):
        nq.quantize(x, nq.Uniform(abs_error=1e-5))
    q = nq.quantize(x, nq.Uniform(abs_error=0.5, bits=8))  # 101 levels fit in uint8 codes
    assert q.codes.dtype == np.uint8 and max_error(x, nq.dequantize(q)) <= 0.5


@pytest.mark.parametrize("kw, match", [
    ({"abs_error": 0.0}, r"abs_error=0\.0 is invalid: expected a number > 0"),
    ({"abs_error": float("nan")}, r"abs_error=nan is invalid"),
    ({"rel_error": 1.5}, r"rel_error=1\.5 is invalid: expected a number in \(0, 1\)"),
    ({"abs_error": 0.1, "rel_error": 0.1}, r"abs_error=0\.1 is invalid: expected None when rel_error"),
    ({"abs_error": 0.1, "symmetric": True}, r"symmetric=True is invalid"),
    ({"abs_error": 0.1, "range": "mse"}, r"range='mse' is invalid: expected 'minmax'"),
    ({"abs_error": 0.1, "rounding": "floor"}, r"rounding='floor' is invalid"),
    ({"bits": 17}, r"bits=17 is invalid: expected an integer in 1\.\.16"),
    ({"fill_value": "x"}, r"fill_value='x' is invalid"),
])
def test_invalid_parameters_are_one_line(kw, match):
    with pytest.raises(SchemeError, match=match) as info:
        nq.Uniform(**kw)
    assert "\n" not in str(info.value)


def test_defaults_and_json_round_trip():
    assert nq.Uniform().bits == 8 and nq.Uniform(abs_error=0.1).bits == 16
    s = nq.Uniform(abs_error=0.1, nan="propagate", fill_value=-1.0, axis=0)
    assert s.zero_point == "float" and s.qrange == (0, 65533)
    assert nq.scheme_from_json(s.to_json()) == s
    # a scheme written before these fields existed reads with their defaults
    old = {k: v for k, v in json.loads(nq.Uniform(bits=4).to_json()).items()
           if k not in ("abs_error", "rel_error", "fill_value")}
    assert nq.scheme_from_json(old) == nq.Uniform(bits=4)


# ----------------------------------------------------------------------------- 9..16-bit codes


@pytest.mark.parametrize("bits", [9, 12, 16])
@pytest.mark.parametrize("kw", [{}, {"symmetric": True, "axis": -1}, {"block_size": 24, "zero_point": "float"},
                                {"nan": "propagate", "rounding": "stochastic", "seed": 3}])
def test_wide_codes_numpy_dask_and_reference(bits, kw):
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal((12, 30)) * 4).astype(np.float32)
    if kw.get("nan") == "propagate":
        x[2, 3] = np.nan
    scheme = nq.Uniform(bits=bits, **kw)
    q = nq.quantize(x, scheme)
    assert q.codes.dtype == np.uint16 and q.codes.shape == x.shape
    u = q.codes_unpacked
    assert u.dtype == (np.int16 if scheme.is_signed else np.uint16)
    qmin, qmax = scheme.qrange
    finite = np.isfinite(x)
    assert u[finite].min() >= qmin and u[finite].max() <= qmax and u[finite].max() > 255 + qmin
    x_hat = nq.dequantize(q)
    s = np.repeat(q.side["scale"], 24)[:x.size].reshape(x.shape) if "block_size" in kw else q.side["scale"]
    assert max_error(x, x_hat) <= 0.5 * np.max(s) * (1.0001 if kw.get("rounding") != "stochastic" else 2.0001)
    qd = nq.quantize(da.from_array(x, chunks=(5, 7 if "block_size" not in kw else 24)), scheme)
    assert_array_equal(np.asarray(qd.codes_unpacked), u)
    assert_array_equal(nq.dequantize(qd).compute(), x_hat)
    assert q.bits_per_value == pytest.approx(8 * q.nbytes / x.size)


def _stream(tmp_path, x, scheme, chunks=(5, 7)):
    src = str(tmp_path / "src.zarr")
    zarr.create_array(src, shape=x.shape, chunks=chunks, dtype=x.dtype)[...] = x
    dst = str(tmp_path / "dst.zarr")
    nq.quantize_zarr(src, dst, scheme)
    return dst


@pytest.mark.parametrize("scheme", [nq.Uniform(bits=12, nan="propagate"),
                                    nq.Uniform(abs_error=1e-3, fill_value=-9999.0),
                                    nq.Uniform(bits=10, block_size=35)])
def test_wide_codes_quantize_zarr_open_and_report(tmp_path, scheme):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((17, 21)) * 3).astype(np.float64)
    x[4, 4] = -9999.0 if scheme.fill_value is not None else x[4, 4]
    dst = _stream(tmp_path, x, scheme)
    q = nq.open(dst)
    assert q.codes.dtype == np.uint16
    x_hat = nq.dequantize(q).compute()
    assert x_hat.tobytes() == nq.dequantize(nq.quantize(x, scheme)).tobytes()
    z = zarr.open_group(dst)
    stored = sum(z[name].nbytes for name in z.array_keys() if name != "chunk_stats")
    assert q.bits_per_value == pytest.approx(8 * stored / x.size)
    if scheme.abs_error:
        assert q.info["metrics"]["max_abs"] <= scheme.abs_error
    out = nq.dequantize_zarr(dst, str(tmp_path / "x_hat.zarr"))
    assert out[...].tobytes() == x_hat.tobytes()


def _rewrite_codes(dst, values=None, dtype=None):
    """Replace the codes array of the stored group ``dst`` (as a corrupt writer would)."""
    g = zarr.open_group(dst, mode="r+")
    old = g["codes"]
    arr = old[...] if values is None else values
    g.create_array("codes", shape=arr.shape, chunks=old.chunks, dtype=dtype or arr.dtype, overwrite=True,
                   fill_value=0, compressors=compressors())
    g["codes"][...] = arr.astype(dtype or arr.dtype)


def test_corrupt_wide_codes_are_refused_in_one_line(tmp_path):
    x = np.linspace(-1, 1, 17 * 21).reshape(17, 21)
    dst = str(tmp_path / "q.zarr")
    nq.save(nq.quantize(x, nq.Uniform(bits=12)), dst)
    with open(os.path.join(dst, "zarr.json")) as f:
        meta = json.load(f)["attributes"]["nquant"]
    assert meta["bits"] == 12
    codes = zarr.open_group(dst)["codes"][...]
    _rewrite_codes(dst, codes, np.uint8)  # a store claiming 12-bit codes with uint8 data
    with pytest.raises(StoreError, match=r"array 'codes' has dtype=uint8, expected uint16 for bits=12") as info:
        nq.open(dst)
    assert "\n" not in str(info.value)
    bad = codes.copy()
    bad[3, 3] = 5000  # beyond the 12-bit code range: never decoded
    _rewrite_codes(dst, bad, np.uint16)
    q = nq.open(dst)
    with pytest.raises(StoreError, match=r"codes hold code 5000.*12-bit code range"):
        nq.dequantize(q).compute()


@pytest.mark.parametrize("scheme", [nq.Uniform(bits=14), nq.Uniform(abs_error=0.01, nan="propagate")])
def test_codec_wide_codes(scheme):
    x = (np.random.default_rng(2).standard_normal((40, 30)) * 5).astype(np.float32)
    if scheme.nan == "propagate":
        x[1, 1] = np.nan
    z = create_quantized_array(zarr.storage.MemoryStore(), shape=x.shape, chunks=(16, 30), dtype="f4",
                               scheme=scheme)
    z[...] = x
    y = z[...]
    assert np.isnan(y[1, 1]) == np.isnan(x[1, 1])
    if scheme.abs_error:
        assert max_error(x, y) <= scheme.abs_error
    else:
        assert max_error(x, y) < 1e-3
    # codes past the range in a chunk are refused, not decoded
    from nquant import codec

    raw = codec.encode_chunk(scheme, x[:16])
    raw[-2:] = 0xFF  # the last code: 65535
    if scheme.nan == "raise":
        with pytest.raises(StoreError, match=r"code 65535"):
            codec.decode_chunk(scheme, raw, np.float32, (16, 30))


def test_cli_abs_error(tmp_path):
    from click.testing import CliRunner

    from nquant.interfaces.cli import main

    x = np.random.default_rng(4).standard_normal((20, 30)) * 10
    src = str(tmp_path / "src.zarr")
    zarr.create_array(src, shape=x.shape, chunks=(10, 30), dtype="f8")[...] = x
    dst = str(tmp_path / "dst.zarr")
    r = CliRunner().invoke(main, ["quantize", src, dst, "--abs-error", "0.01"])
    assert r.exit_code == 0, r.output
    q = nq.open(dst)
    assert q.scheme.abs_error == 0.01 and q.bits == 16
    assert max_error(x, nq.dequantize(q).compute()) <= 0.01
    r = CliRunner().invoke(main, ["quantize", src, str(tmp_path / "d2.zarr"), "--abs-error", "1e-9"])
    assert r.exit_code == 2 and "abs_error=1e-09" in r.output and "Traceback" not in r.output
    x[2, 3:7] = -9999.0  # a missing-data marker: kept exactly with --fill-value
    zarr.open_array(src)[...] = x
    r = CliRunner().invoke(main, ["quantize", src, str(tmp_path / "d3.zarr"), "--abs-error", "0.01",
                                  "--fill-value", "-9999"])
    assert r.exit_code == 0, r.output
    q = nq.open(str(tmp_path / "d3.zarr"))
    assert q.scheme.fill_value == -9999.0
    back = nq.dequantize(q).compute()
    missing = x == -9999.0
    assert (back[missing] == -9999.0).all() and max_error(x[~missing], back[~missing]) <= 0.01
