"""Outliers: dense-and-sparse quantization (outliers kept exactly, the rest by a base scheme)."""

import math

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nquant as nq
from nquant.errors import InputError, SchemeError
from nquant.schemes import KMeansBlockwise, Outliers, scheme_from_json
from tests.helpers import assert_same_quantized, rmse, same_bits, write_zarr


def _data(seed, shape, dtype=np.float32, heavy=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if heavy and x.size:
        x.reshape(-1)[rng.integers(0, x.size, max(1, x.size // 100))] *= 50
    x = np.asarray(x).astype(dtype)
    x.setflags(write=False)
    return x


# ----------------------------------------------------------------------------- scheme


def test_json_round_trip_nests_the_base():
    s = Outliers(base=nq.NF4(block_size=32, double_quant=True), fraction=0.001)
    d = s.to_dict()
    assert d["base"]["type"] == "blockwise" and d["fraction"] == 0.001 and d["threshold"] is None
    assert scheme_from_json(s.to_json()) == s
    t = Outliers(base=KMeansBlockwise(min_size=0), threshold=3)
    assert scheme_from_json(t.to_json()) == t and t.threshold == 3.0
    assert Outliers(base=nq.Uniform(bits=4).to_dict(), threshold=1.0).base == nq.Uniform(bits=4)
    assert t.bits == 4 and t.block_size == 64


@pytest.mark.parametrize("kw", [{}, {"fraction": 0.1, "threshold": 1.0}, {"fraction": 1.5},
                                {"fraction": -0.1}, {"threshold": -1.0}, {"threshold": math.inf},
                                {"fraction": True}])
def test_validation(kw):
    with pytest.raises(SchemeError):
        Outliers(base=nq.NF4(), **kw)


def test_base_must_be_a_scheme_other_than_outliers():
    with pytest.raises(SchemeError):
        Outliers(base=None, fraction=0.1)
    with pytest.raises(SchemeError):
        Outliers(base=Outliers(base=nq.NF4(), fraction=0.1), fraction=0.1)


# ----------------------------------------------------------------------------- selection and values


def test_fraction_takes_the_largest_magnitudes_ties_to_the_lower_index():
    x = np.array([0.1, -5.0, 2.0, 5.0, -2.0, 0.3, 2.0, -0.2], np.float32)
    q = nq.quantize(x, Outliers(base=nq.Uniform(bits=4), fraction=0.5))  # ceil(0.5 * 8) = 4
    np.testing.assert_array_equal(q.outlier_index, [1, 2, 3, 4])
    np.testing.assert_array_equal(q.outlier_value, x[[1, 2, 3, 4]])
    assert q.outlier_index.dtype == np.int64 and q.outlier_value.dtype == np.float32
    # ceil, computed exactly: 0.3 * 10 is 3 outliers, not 4
    assert nq.quantize(np.arange(10, dtype=np.float32), Outliers(base=nq.Uniform(), fraction=0.3)) \
        .outlier_index.size == 3


def test_threshold_and_non_finite_values_are_kept_exactly():
    x = np.array([[0.5, -3.0, np.nan], [np.inf, 1.0, -0.25]], np.float32)
    q = nq.quantize(x, Outliers(base=nq.NF4(block_size=2), threshold=2.0))
    np.testing.assert_array_equal(q.outlier_index, [1, 2, 3])
    x_hat = nq.dequantize(q)
    assert same_bits(x_hat.reshape(-1)[[1, 2, 3]], x.reshape(-1)[[1, 2, 3]])
    assert np.isfinite(x_hat.reshape(-1)[[0, 4, 5]]).all()


@pytest.mark.parametrize("base", [nq.NF4(block_size=16, double_quant=True), nq.Uniform(bits=4, axis=0),
                                  KMeansBlockwise(block_size=16, min_size=0),
                                  nq.Codebook(values=(-1.0, 0.0, 1.0))],
                         ids=["nf4_dq", "uniform_axis0", "kmeans", "codebook"])
def test_the_rest_is_the_base_quantization_of_the_array_with_outliers_zeroed(base):
    x = _data(0, (24, 40))
    q = nq.quantize(x, Outliers(base=base, fraction=0.01))
    filled = x.copy()
    filled.reshape(-1)[q.outlier_index] = 0
    ref = nq.quantize(filled, base)
    assert same_bits(q.codes, ref.codes)
    expect = nq.dequantize(ref).copy()
    expect.reshape(-1)[q.outlier_index] = q.outlier_value
    assert same_bits(nq.dequantize(q), expect)
    # bits_per_value counts the sparse side structure: an int64 index and a float32 value each
    m = q.outlier_index.size
    assert m == math.ceil(0.01 * x.size)
    assert q.bits_per_value == pytest.approx(ref.bits_per_value + 8 * 12 * m / x.size)


def test_outliers_cut_the_error_of_range_based_schemes():
    x = _data(1, (64, 64))
    for base in (nq.Uniform(bits=4), nq.NF4(block_size=64)):
        plain = rmse(x, nq.dequantize(nq.quantize(x, base)))
        dense_sparse = rmse(x, nq.dequantize(nq.quantize(x, Outliers(base=base, fraction=0.01))))
        assert dense_sparse < 0.8 * plain


@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (1,), (5,)], ids=repr)
@pytest.mark.parametrize("kw", [{"fraction": 0.0}, {"fraction": 0.5}, {"fraction": 1.0}, {"threshold": 0.5}],
                         ids=["f0", "f05", "f1", "t05"])
def test_edge_shapes(shape, kw):
    x = _data(2, shape, heavy=False)
    s = Outliers(base=nq.NF4(block_size=2), **kw)
    q = nq.quantize(x, s)
    x_hat = nq.dequantize(q)
    assert x_hat.shape == x.shape
    if kw.get("fraction") == 1.0:
        assert same_bits(x_hat, x)
    if shape:
        assert_same_quantized(q, nq.quantize(da.from_array(x, chunks=2), s))


def test_original_dtype_is_kept_and_casts_without_warnings():
    x = _data(3, (6, 8), np.float64).copy()
    x[2, 3] = 1e300
    q = nq.quantize(x, Outliers(base=nq.Uniform(bits=8), threshold=10.0))
    assert q.outlier_value.dtype == np.float64 and q.outlier_value[0] == 1e300
    assert nq.dequantize(q)[2, 3] == 1e300
    assert nq.dequantize(q, dtype=np.float16)[2, 3] == np.inf  # no overflow warning (warnings are errors)
    h = _data(3, (6, 8), np.float16)
    qh = nq.quantize(h, Outliers(base=nq.NF4(block_size=8), fraction=0.05))
    assert qh.outlier_value.dtype == np.float16


# ----------------------------------------------------------------------------- Dask and Zarr


@st.composite
def arrays_and_chunks(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 10)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16]))
    return _data(draw(st.integers(0, 2**31)), shape, dtype), chunks


DASK_SCHEMES = [
    pytest.param(Outliers(base=nq.NF4(block_size=8, double_quant=True), fraction=0.02), id="fraction_nf4_dq"),
    pytest.param(Outliers(base=nq.Uniform(bits=4, axis=0), fraction=0.05), id="fraction_uniform_axis0"),
    pytest.param(Outliers(base=nq.Codebook(values=(-2.0, 0.0, 2.0)), fraction=0.05), id="fraction_codebook"),
    pytest.param(Outliers(base=nq.Uniform(bits=5, range="mse", bins=64), threshold=3.0), id="threshold_mse"),
    pytest.param(Outliers(base=KMeansBlockwise(bits=3, block_size=6, double_quant=True, min_size=0, bins=256),
                          threshold=2.5), id="threshold_kmeans_dq"),
]


@pytest.mark.parametrize("scheme", DASK_SCHEMES)
@settings(max_examples=5)
@given(data=arrays_and_chunks())
def test_numpy_and_any_dask_chunking_agree_bit_for_bit(scheme, data):
    x, chunks = data
    q_np = nq.quantize(x, scheme)
    with dask.config.set(scheduler="threads"):
        assert_same_quantized(q_np, nq.quantize(da.from_array(x, chunks=chunks), scheme))


def test_fraction_with_a_two_pass_base_needs_threshold_on_dask():
    x = _data(4, (10, 10))
    s = Outliers(base=nq.Uniform(bits=4, range="percentile"), fraction=0.02)
    nq.quantize(x, s)  # NumPy: fine
    with pytest.raises(SchemeError, match="threshold"):
        nq.quantize(da.from_array(x, chunks=5), s)


def test_nan_outside_the_outliers_is_still_an_error():
    x = _data(5, (4, 8)).copy()
    x[0, :3] = np.nan
    with pytest.raises(InputError):
        nq.quantize(x, Outliers(base=nq.Uniform(bits=4), fraction=0.05))  # 2 outliers, 3 NaN


@pytest.mark.parametrize("scheme", [Outliers(base=nq.NF4(block_size=8, double_quant=True), fraction=0.01),
                                    Outliers(base=nq.Uniform(bits=4, axis=1), threshold=5.0)],
                         ids=["fraction_nf4_dq", "threshold_uniform"])
def test_zarr_save_open_and_quantize_zarr(tmp_path, scheme):
    x = _data(6, (40, 24))
    q = nq.quantize(x, scheme)
    nq.save(q, tmp_path / "q.zarr", chunks=(9, 24))
    assert_same_quantized(q, nq.open(tmp_path / "q.zarr"))
    for i, chunks in enumerate([(7, 24), (40, 5)]):
        write_zarr(tmp_path / f"src{i}.zarr", x, chunks)
        assert_same_quantized(q, nq.quantize_zarr(str(tmp_path / f"src{i}.zarr"), tmp_path / f"dst{i}.zarr", scheme))
