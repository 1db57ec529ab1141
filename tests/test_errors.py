"""Every bad input raises the documented exception, naming the parameter and the value."""

import re

import numpy as np
import pytest

import nquant as nq
from nquant.errors import DeviceError, InputError, NQuantError, SchemeError
from nquant.families import uniform


def test_error_hierarchy():
    for cls in (SchemeError, InputError):
        assert issubclass(cls, NQuantError) and issubclass(cls, ValueError)
    assert issubclass(DeviceError, NQuantError) and issubclass(DeviceError, RuntimeError)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(bits=17), r"bits=17 is invalid: expected an integer in 1\.\.16"),
    (dict(bits=0), r"bits=0 is invalid"),
    (dict(bits=-1), r"bits=-1 is invalid"),
    (dict(bits=32), r"bits=32 is invalid"),
    (dict(bits=4.0), r"bits=4\.0 is invalid"),
    (dict(bits=True), r"bits=True is invalid"),
    (dict(bits="8"), r"bits='8' is invalid"),
    (dict(bits=1, symmetric=True), r"bits=1 is invalid: expected bits >= 2 for symmetric=True"),
    (dict(bits=1, nan="propagate"), r"bits=1 is invalid: expected bits >= 2 with nan='propagate'"),
    (dict(bits=1, signed=True, narrow_range=True), r"bits=1 is invalid: expected more bits"),
    (dict(bits=2, symmetric=True, nan="propagate"), r"bits=2 is invalid: expected more bits"),
    (dict(rounding="up"), r"rounding='up' is invalid: expected one of \('nearest', 'nearest_away', "
                          r"'floor', 'ceil', 'stochastic'\)"),
    (dict(rounding="Nearest"), r"rounding='Nearest' is invalid"),
    (dict(rounding=None), r"rounding=None is invalid"),
    (dict(block_size=0), r"block_size=0 is invalid: expected None or an integer >= 1"),
    (dict(block_size=-64), r"block_size=-64 is invalid"),
    (dict(block_size=2.5), r"block_size=2\.5 is invalid"),
    (dict(axis=1.0), r"axis=1\.0 is invalid: expected None or an integer"),
    (dict(axis="0"), r"axis='0' is invalid"),
    (dict(axis=0, block_size=64), r"axis=0 is invalid: expected None when block_size is given"),
    (dict(range=(2.0, 1.0)), r"range=\(2\.0, 1\.0\) is invalid: expected rmin <= rmax"),
    (dict(range=(1, -1)), r"range=\(1, -1\) is invalid: expected rmin <= rmax"),
    (dict(range=(0.0, float("inf"))), r"range=\(0\.0, inf\) is invalid: expected finite numbers"),
    (dict(range=(float("nan"), 1.0)), r"range=\(nan, 1\.0\) is invalid: expected finite numbers"),
    (dict(range=(1.0, 2.0, 3.0)), r"range=\(1\.0, 2\.0, 3\.0\) is invalid: expected a pair"),
    (dict(range=("a", "b")), r"range=\('a', 'b'\) is invalid: expected a pair"),
    (dict(range="max"), r"range='max' is invalid: expected one of \('minmax', 'percentile', "
                        r"'percentile_exact', 'mse'\) or \(rmin, rmax\)"),
    (dict(range="percentile", block_size=64), r"range='percentile' is invalid: expected 'minmax' or "
                                              r"\(rmin, rmax\) with block_size"),
    (dict(range="mse", block_size=8), r"range='mse' is invalid"),
    (dict(percentile=(99.0, 1.0)), r"percentile=\(99\.0, 1\.0\) is invalid: expected \(low, high\) with "
                                   r"0 <= low < high <= 100"),
    (dict(percentile=(-1, 50)), r"percentile=\(-1, 50\) is invalid"),
    (dict(percentile=(1, 101)), r"percentile=\(1, 101\) is invalid"),
    (dict(percentile=50), r"percentile=50 is invalid"),
    (dict(zero_point="half"), r"zero_point='half' is invalid: expected 'int' or 'float'"),
    (dict(zero_point="float", symmetric=True), r"zero_point='float' is invalid: expected 'int' when "
                                               r"symmetric=True"),
    (dict(symmetric="yes"), r"symmetric='yes' is invalid: expected True or False"),
    (dict(signed="no"), r"signed='no' is invalid: expected None, True or False"),
    (dict(narrow_range=None), r"narrow_range=None is invalid: expected True or False"),
    (dict(nan="ignore"), r"nan='ignore' is invalid: expected 'raise' or 'propagate'"),
    (dict(seed=1.5), r"seed=1\.5 is invalid: expected an integer"),
    (dict(seed=True), r"seed=True is invalid: expected an integer"),
    (dict(seed="0"), r"seed='0' is invalid"),
    (dict(bins=8), r"bins=8 is invalid: expected None or an integer >= 16"),
    (dict(bins=100.0), r"bins=100\.0 is invalid"),
])
def test_bad_uniform_parameters(kwargs, pattern):
    with pytest.raises(SchemeError, match=pattern):
        nq.Uniform(**kwargs)


def test_replace_validates_again():
    with pytest.raises(SchemeError, match=r"bits=17 is invalid"):
        nq.Uniform().replace(bits=17)


@pytest.mark.parametrize("x", [np.array([1.0, np.nan, 2.0]), np.array([[np.nan]], np.float32),
                               np.array([np.nan, np.nan, 0.5], np.float16)])
def test_nan_in_data_raises_by_default(x):
    n = int(np.isnan(x).sum())
    with pytest.raises(InputError, match=rf"x contains {n} NaN value\(s\); pass nan='propagate'"):
        nq.quantize(x, nq.Uniform())
    with pytest.raises(InputError, match=r"NaN"):
        nq.quantize(x, nq.Uniform(axis=-1, bits=4))
    with pytest.raises(InputError, match=r"NaN"):
        nq.quantize(x, nq.Uniform(range=(0.0, 1.0)))
    with pytest.raises(InputError, match=r"NaN"):
        nq.quantize(x, nq.Uniform(range="percentile_exact"))


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
@pytest.mark.parametrize("nan", ["raise", "propagate"])
def test_infinity_in_data_raises(bad, nan):
    x = np.array([0.0, 1.0, bad, 3.0], np.float32)
    with pytest.raises(InputError, match=r"x contains infinite values \(inf\)"):
        nq.quantize(x, nq.Uniform(nan=nan))
    with pytest.raises(InputError, match=r"x contains infinite values"):
        nq.quantize(x.reshape(2, 2), nq.Uniform(nan=nan, axis=0))
    with pytest.raises(InputError, match=r"x contains infinite values"):
        nq.quantize(x, nq.Uniform(nan=nan, range="percentile"))


def test_encode_with_given_parameters_refuses_non_finite():
    s = nq.Uniform(range=(0.0, 1.0))
    p = uniform.fit(s, np.zeros(3))
    with pytest.raises(InputError, match=r"x contains 2 non-finite value\(s\) \(NaN or inf\) that "
                                         r"nan='raise' does not allow"):
        uniform.encode(s, p, np.array([0.5, np.nan, np.inf]))
    sp = s.replace(nan="propagate")
    with pytest.raises(InputError, match=r"x contains 1 non-finite value\(s\) .* nan='propagate'"):
        uniform.encode(sp, uniform.fit(sp, np.zeros(3)), np.array([0.5, np.nan, -np.inf]))


@pytest.mark.parametrize("axis, shape", [(2, (3, 4)), (-3, (3, 4)), (1, (5,)), (0, ()), (3, (2, 2, 2))])
def test_axis_out_of_range(axis, shape):
    x = np.zeros(shape)
    with pytest.raises(InputError, match=rf"axis={axis} is out of range for an array with ndim={len(shape)}"):
        nq.quantize(x, nq.Uniform(axis=axis))


@pytest.mark.parametrize("x, name", [(np.arange(4), "int64"), (np.array([1, 2], np.int8), "int8"),
                                     (np.array([True]), "bool"), (np.array([1 + 2j]), "complex128"),
                                     (np.array(["a"]), "<U1"), (np.array([None], dtype=object), "object")])
def test_unsupported_dtypes(x, name):
    with pytest.raises(InputError, match=rf"x dtype={re.escape(name)} is not supported: expected float16, "
                                         r"float32 or float64"):
        nq.quantize(x, nq.Uniform())


def test_values_beyond_float32_side_arrays():
    x = np.array([-1e300, 0.0, 1e300])
    with pytest.raises(InputError, match=r"^x holds -1e\+300, beyond the float32 range \(\|value\| <= 3\.4028235e\+38\)"):
        nq.quantize(x, nq.Uniform())
    with pytest.raises(InputError, match=r"^x holds -1e\+39, beyond the float32 range"):
        nq.quantize(np.full(3, -1e39), nq.Uniform(zero_point="float"))
    with pytest.raises(SchemeError, match=r"range=\(-1e\+39, 1\.0\) is invalid: expected finite numbers within the "
                       r"float32 range"):
        nq.Uniform(range=(-1e39, 1.0))
    # a range inside float32 but wider than it: the grid is fitted inside and decodes finite
    y = nq.dequantize(nq.quantize(np.array([-3e38, 0.0, 3e38]), nq.Uniform(bits=1, range=(-3e38, 3e38))))
    assert np.isfinite(y).all()
    # just inside: fine, and finite on the way back
    y = nq.dequantize(nq.quantize(np.array([-1e38, 1e38]), nq.Uniform()))
    assert np.isfinite(y).all()


def test_quantize_and_dequantize_arguments():
    with pytest.raises(SchemeError, match=r"scheme='int8' is invalid: expected an nquant scheme"):
        nq.quantize(np.zeros(3), "int8")
    with pytest.raises(SchemeError, match=r"scheme=None is invalid"):
        nq.quantize(np.zeros(3), None)
    with pytest.raises(DeviceError, match=r"device='gpu' is not available"):
        nq.quantize(np.zeros(3), nq.Uniform(), device="gpu")
    with pytest.raises(InputError, match=r"q of type ndarray is invalid: expected a QuantizedArray"):
        nq.dequantize(np.zeros(3))
    q = nq.quantize(np.zeros((2, 3)), nq.Uniform())
    with pytest.raises(InputError, match=r"out shape=\(3, 2\) is invalid: expected a C-contiguous array "
                                         r"of shape \(2, 3\)"):
        nq.dequantize(q, out=np.empty((3, 2)))
    with pytest.raises(InputError, match=r"out shape=\(2, 3\) is invalid"):
        nq.dequantize(q, out=np.empty((3, 2)).T)
    with pytest.raises(InputError, match=r"range='percentile_exact' needs the data in memory"):
        s = nq.Uniform(range="percentile_exact")
        uniform.finalize(s, uniform.partial(s, np.zeros(3)))


@pytest.mark.parametrize("bits", [0, 9, -1, 2.0, True, None])
def test_pack_unpack_bits(bits):
    with pytest.raises(SchemeError, match=rf"bits={re.escape(repr(bits))} is invalid: expected an integer in 1\.\.8"):
        nq.pack(np.zeros(4, np.uint8), bits)
    with pytest.raises(SchemeError, match=rf"bits={re.escape(repr(bits))} is invalid"):
        nq.unpack(np.zeros(4, np.uint8), bits, 4)


def test_pack_unpack_bad_input():
    with pytest.raises(InputError, match=r"codes out of range for bits=4: values must lie in \[0, 15\], got \[0, 16\]"):
        nq.pack([0, 16], 4)
    with pytest.raises(InputError, match=r"codes out of range for bits=3: values must lie in \[0, 7\], got \[-1, 2\]"):
        nq.pack(np.array([-1, 2]), 3)
    with pytest.raises(InputError, match=r"codes dtype=float64 is invalid: expected unsigned integers"):
        nq.pack(np.array([1.0, 2.0]), 4)
    with pytest.raises(InputError, match=r"packed dtype=int64 is invalid: expected uint8"):
        nq.unpack(np.array([1, 2]), 4, 4)
    with pytest.raises(InputError, match=r"n=-1 is invalid: expected an integer >= 0"):
        nq.unpack(np.zeros(2, np.uint8), 4, -1)
    with pytest.raises(InputError, match=r"n=2\.0 is invalid"):
        nq.unpack(np.zeros(2, np.uint8), 4, 2.0)
    with pytest.raises(InputError, match=r"packed has 2 bytes but n=5 codes of bits=4 need 3"):
        nq.unpack(np.zeros(2, np.uint8), 4, 5)


def test_metrics_shape_mismatch():
    with pytest.raises(InputError, match=r"x_hat shape=\(3,\) does not match x shape=\(4,\)"):
        nq.metrics(np.zeros(4), np.zeros(3))


def test_scheme_from_json_errors():
    with pytest.raises(SchemeError, match=r"type='foo' is not a known scheme type"):
        nq.scheme_from_json('{"type": "foo"}')
    with pytest.raises(SchemeError, match=r"type=None is not a known scheme type"):
        nq.scheme_from_json("{}")
    with pytest.raises(SchemeError, match=r"format_version=99 is newer than this nquant reads \(1\)"):
        nq.scheme_from_json('{"type": "uniform", "format_version": 99}')
    with pytest.raises(SchemeError, match=r"format_version='1' is newer"):
        nq.scheme_from_json({"type": "uniform", "format_version": "1"})
    with pytest.raises(SchemeError, match=r"unknown field\(s\) \['colour'\] for scheme type 'uniform'"):
        nq.scheme_from_json('{"type": "uniform", "colour": 3}')
    with pytest.raises(SchemeError, match=r"bits=17 is invalid"):
        nq.scheme_from_json('{"type": "uniform", "format_version": 1, "bits": 17}')
