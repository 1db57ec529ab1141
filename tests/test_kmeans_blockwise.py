"""KMeansBlockwise: blockwise absmax codes on a codebook fitted by weighted 1-D k-means."""

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nquant as nq
from nquant.codebooks.optimal1d import kmeans1d
from nquant.errors import InputError, SchemeError
from nquant.families import kmeans_blockwise as kmb
from nquant.families.base import widen
from nquant.schemes import KMeansBlockwise, scheme_from_json
from tests.helpers import assert_same_quantized as _assert_same
from tests.helpers import rmse as _rmse
from tests.helpers import same_bits as _same
from tests.helpers import write_zarr


def _data(seed, shape, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * rng.uniform(0.1, 2.0, shape[-1] if shape else ())
    if x.size:
        x.reshape(-1)[rng.integers(0, x.size, max(1, x.size // 60))] *= 6
    x = np.asarray(x).astype(dtype)
    x.setflags(write=False)
    return x


# ----------------------------------------------------------------------------- scheme


def test_scheme_json_round_trip_and_defaults():
    s = KMeansBlockwise(bits=3, block_size=66, double_quant=True, bins=4096, min_size=0)
    assert scheme_from_json(s.to_json()) == s
    assert s.codebook == tuple(float(v) for v in nq.normal_float(3))
    assert KMeansBlockwise(bits=1).codebook == (-1.0, 1.0)
    assert KMeansBlockwise().levels == 16 and KMeansBlockwise().fit == "histogram"


@pytest.mark.parametrize("kw", [{"bits": 0}, {"bits": 9}, {"block_size": 0}, {"fit": "lloyd"},
                                {"bins": 8}, {"min_size": -1}, {"double_quant": 1},
                                {"bits": 2, "codebook": (-1.0, -0.5, 0.0, 0.5, 1.0)}])
def test_scheme_validation(kw):
    with pytest.raises(SchemeError):
        KMeansBlockwise(**kw)


# ----------------------------------------------------------------------------- the fit


@pytest.fixture(scope="module")
def x_big():
    return _data(0, (96, 250))


def test_exact_fit_is_the_weighted_kmeans_of_the_normalised_values(x_big):
    s = KMeansBlockwise(block_size=64, fit="exact", min_size=0)
    q = nq.quantize(x_big, s)
    y, w = kmb.normalised(s, x_big)
    ref = kmeans1d(y, 16, weights=w)
    np.testing.assert_array_equal(q.codebook, np.unique(ref.centers.astype(np.float32)))
    # the weighted objective is the true squared error up to the factor A**2 (no double quant)
    flat = x_big.reshape(-1)
    amax = np.abs(flat).max()
    err = np.sum((nq.dequantize(q).reshape(-1).astype(np.float64) - flat) ** 2)
    assert err == pytest.approx(kmb.objective(s, x_big, q.codebook) * float(amax) ** 2, rel=1e-4)


def test_histogram_fit_is_within_a_tiny_fraction_of_the_exact_optimum(x_big):
    s = KMeansBlockwise(block_size=64, min_size=0)
    hist = nq.quantize(x_big, s).codebook
    exact = nq.quantize(x_big, s.replace(fit="exact")).codebook
    o_hist, o_exact = kmb.objective(s, x_big, hist), kmb.objective(s, x_big, exact)
    assert o_exact * (1 - 1e-9) <= o_hist <= o_exact * (1 + 1e-4)
    np.testing.assert_allclose(hist, exact, atol=4 / s.bins)


@pytest.mark.parametrize("double_quant", [False, True])
def test_beats_nf4_on_the_same_blocks(x_big, double_quant):
    nf4 = nq.quantize(x_big, nq.NF4(block_size=64, double_quant=double_quant))
    km = nq.quantize(x_big, KMeansBlockwise(block_size=64, double_quant=double_quant, min_size=0))
    assert _rmse(x_big, nq.dequantize(km)) < 0.98 * _rmse(x_big, nq.dequantize(nf4))
    # the side information: NF4's plus the float32 codebook
    assert km.nbytes == nf4.nbytes + km.codebook.nbytes
    assert km.codebook.dtype == np.float32 and km.codebook.size == 16


def test_min_size_falls_back_to_the_scheme_codebook():
    x = _data(1, (10, 64))
    s = KMeansBlockwise(block_size=64, min_size=641)
    q = nq.quantize(x, s)
    assert "codebook" not in q.side
    ref = nq.quantize(x, nq.NF4(block_size=64))
    assert _same(q.codes, ref.codes) and _same(nq.dequantize(q), nq.dequantize(ref))
    assert "codebook" in nq.quantize(x, s.replace(min_size=640)).side


def test_all_zero_and_constant_inputs():
    z = np.zeros((4, 32), np.float32)
    q = nq.quantize(z, KMeansBlockwise(block_size=16, min_size=0))
    np.testing.assert_array_equal(q.codebook, np.asarray(KMeansBlockwise().codebook, np.float32))
    assert not nq.dequantize(q).any()
    c = np.full((4, 32), -2.5, np.float32)
    qc = nq.quantize(c, KMeansBlockwise(block_size=16, min_size=0))
    np.testing.assert_array_equal(qc.codebook, [-1.0])
    np.testing.assert_array_equal(nq.dequantize(qc), c)


@pytest.mark.parametrize("bits", [1, 2, 8])
def test_other_widths(bits):
    x = _data(2, (40, 30))
    q = nq.quantize(x, KMeansBlockwise(bits=bits, block_size=30, min_size=0))
    assert q.codebook.size <= 1 << bits and q.codes_unpacked.max() < q.codebook.size
    assert _rmse(x, nq.dequantize(q)) < np.std(x)


def test_nan_and_exact_on_dask_are_refused():
    x = _data(3, (8, 16)).copy()
    x[1, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        nq.quantize(x, KMeansBlockwise(block_size=16, min_size=0))
    with pytest.raises(InputError, match="fit='exact'"):
        nq.quantize(da.from_array(_data(3, (8, 16)), chunks=4), KMeansBlockwise(fit="exact", min_size=0))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_dtypes(dtype):
    x = _data(4, (12, 20), dtype)
    q = nq.quantize(x, KMeansBlockwise(block_size=20, min_size=0))
    x_hat = nq.dequantize(q)
    assert x_hat.dtype == dtype
    assert _same(nq.dequantize(q, dtype=np.float32).astype(dtype), x_hat)


# ----------------------------------------------------------------------------- chunking


@st.composite
def arrays_and_chunks(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 12)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16]))
    return _data(draw(st.integers(0, 2**31)), shape, dtype), chunks


SCHEMES = [
    pytest.param(KMeansBlockwise(block_size=8, min_size=0), id="4bit"),
    pytest.param(KMeansBlockwise(bits=3, block_size=5, double_quant=True, min_size=0, bins=512),
                 id="3bit_dq"),
    pytest.param(KMeansBlockwise(bits=2, block_size=6, min_size=50), id="2bit_min_size"),
]


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=6)
@given(data=arrays_and_chunks())
def test_numpy_and_any_dask_chunking_agree_bit_for_bit(scheme, data):
    x, chunks = data
    q_np = nq.quantize(x, scheme)
    with dask.config.set(scheduler="threads"):
        _assert_same(q_np, nq.quantize(da.from_array(x, chunks=chunks), scheme))



@pytest.mark.parametrize("x, chunks", [
    (np.array([0.18684058, -0.14965995, 1.2018412, 0.17309797, -0.05635411, 3.751335, 0.21361163],
              np.float32), (1,)),
    (np.array([[0.05265401, 1.2584519, 0.37090647, -0.94673103, 1.4467719, 0.30178052, -0.5163589,
                0.20611052, 1.8941315]], np.float32), (1, 6)),
], ids=["1d_chunks_of_1", "2d_chunks_of_6"])
def test_dask_chunks_that_split_blocks_agree_with_numpy(x, chunks):
    scheme = KMeansBlockwise(bits=2, block_size=6, min_size=50)
    with dask.config.set(scheduler="threads"):
        _assert_same(nq.quantize(x, scheme), nq.quantize(da.from_array(x, chunks=chunks), scheme))

def test_counts_two_statistics_passes():
    calls = []

    def scheduler(dsk, keys, **kw):
        calls.append(1)
        return dask.threaded.get(dsk, keys, **kw)

    x = da.from_array(_data(5, (20, 16)), chunks=(6, 16))
    with dask.config.set(scheduler=scheduler):
        q = nq.quantize(x, KMeansBlockwise(block_size=16, double_quant=True, min_size=0))
    assert len(calls) == 2 and q.is_dask


@pytest.mark.parametrize("scheme", [KMeansBlockwise(block_size=12, min_size=0),
                                    KMeansBlockwise(block_size=12, double_quant=True, min_size=0)],
                         ids=["plain", "double_quant"])
def test_zarr_save_open_and_quantize_zarr_any_chunking(tmp_path, scheme):
    x = _data(6, (60, 36))
    q = nq.quantize(x, scheme)
    nq.save(q, tmp_path / "q.zarr", chunks=(16, 36))
    _assert_same(q, nq.open(tmp_path / "q.zarr"))
    for i, chunks in enumerate([(7, 36), (60, 10), (25, 25)]):
        write_zarr(tmp_path / f"src{i}.zarr", x, chunks)
        out = nq.quantize_zarr(str(tmp_path / f"src{i}.zarr"), tmp_path / f"dst{i}.zarr", scheme)
        _assert_same(q, out)


@pytest.mark.parametrize("scale_dtype", ["float16", "bfloat16"])
def test_narrow_absmax_same_codebook_encoded_against_stored_absmax(scale_dtype):
    """A float16/bfloat16 absmax changes nothing of the fit (the exact absmax weighs it) and
    encodes against the stored, rounded-up absmax; Dask chunkings agree."""
    x = _data(21, (64, 64))
    wide = KMeansBlockwise(bits=3, block_size=32, min_size=0, bins=512)
    narrow = wide.replace(scale_dtype=scale_dtype)
    q, qw = nq.quantize(x, narrow), nq.quantize(x, wide)
    np.testing.assert_array_equal(q.side["codebook"], qw.side["codebook"])
    absmax = widen(q.side["absmax"])
    assert (absmax >= qw.side["absmax"]).all() and q.bits_per_value == qw.bits_per_value - 0.5
    want = kmb.levels(narrow, q.side)[np.asarray(q.codes_unpacked).reshape(-1)] * np.repeat(absmax, 32)
    np.testing.assert_array_equal(nq.dequantize(q).reshape(-1), want)
    qd = nq.quantize(da.from_array(x, chunks=(16, 64)), narrow)
    _assert_same(qd, q)
