"""Product quantization (encode, decode, tables, search, dot; NumPy and Dask) against NumPy references."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nquant.errors import InputError, SchemeError
from nquant.kernels import pq as kpq
from nquant.pq import ProductQuantizer
from tests.helpers import blobs, readonly
from tests.reference import assign as assign_ref
from tests.reference import pq as pq_ref

TOL = {np.float32: 1e-4, np.float64: 1e-10}


def test_pq_bad_parameters_and_data():
    with pytest.raises(SchemeError, match=r"nbits=3"):
        ProductQuantizer(4, nbits=3)
    with pytest.raises(SchemeError, match=r"M=0"):
        ProductQuantizer(0)
    with pytest.raises(InputError, match=r"n_features=10, which is not a multiple of M=4"):
        ProductQuantizer(4).fit(np.zeros((300, 10)))
    with pytest.raises(InputError, match=r"n_samples=100 should be >= 2\*\*nbits=256"):
        ProductQuantizer(2).fit(np.zeros((100, 4)))
    pq = ProductQuantizer(2, nbits=4).fit(np.random.default_rng(0).random((100, 4)))
    with pytest.raises(InputError, match=r"codes must be uint8 of shape \(n, 1\)"):
        pq.decode(np.zeros((3, 2), np.uint8))
    with pytest.raises(SchemeError, match=r"metric='cos'"):
        pq.search(np.zeros(4), 1, codes=np.zeros((3, 1), np.uint8), metric="cos")
    with pytest.raises(InputError, match=r"codes= is required"):
        pq.search(np.zeros(4), 1)


@st.composite
def pq_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    nbits = draw(st.sampled_from([4, 8]))
    M = draw(st.integers(1, 5))
    ds = draw(st.sampled_from([1, 2, 3, 5, 8, 12]))
    n = draw(st.integers(0, 200))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    K = 1 << nbits
    C = rng.standard_normal((M, K, ds)).astype(dtype)
    X = rng.standard_normal((n, M * ds)).astype(dtype)
    return X, C, nbits


def _pq_with(C, nbits):
    pq = ProductQuantizer(C.shape[0], nbits=nbits)
    pq.codebooks_ = C
    pq.n_features_in_ = C.shape[0] * C.shape[2]
    return pq


@given(pq_cases())
def test_pq_encode_decode_tables_match_reference(case):
    X, C, nbits = case
    pq = _pq_with(C, nbits)
    codes = pq.encode(readonly(X))
    rcodes = pq_ref.pq_encode(X, C)
    unpacked = codes.astype(np.int64) if nbits == 8 else pq_ref.unpack4(codes, C.shape[0])
    M, _, ds = C.shape
    for m in range(M):
        sub = X[:, m * ds:(m + 1) * ds]
        clear = assign_ref.margin(sub, C[m]) > 1e-4  # codes agree unless two centroids nearly tie
        np.testing.assert_array_equal(unpacked[clear, m], rcodes[clear, m])
        D = assign_ref.sq_dists(sub, C[m])
        got = D[np.arange(X.shape[0]), unpacked[:, m]]
        best = D.min(axis=1, initial=np.inf) if X.shape[0] else got
        np.testing.assert_allclose(got, best, rtol=1e-5, atol=1e-5)
    if nbits == 4:
        np.testing.assert_array_equal(codes, pq_ref.pack4(unpacked))
        assert codes.shape == (X.shape[0], (M + 1) // 2)
    np.testing.assert_allclose(pq.decode(codes), pq_ref.pq_decode(unpacked, C), rtol=0, atol=0)
    Q = X[:7] if X.shape[0] else np.zeros((2, X.shape[1]), X.dtype)
    for metric in ("l2", "ip"):
        np.testing.assert_allclose(pq.tables(Q, metric), pq_ref.pq_tables(Q, C, metric), rtol=1e-6, atol=1e-5)


@given(pq_cases(), st.integers(1, 12), st.sampled_from(["l2", "ip"]), st.sampled_from([1, 2, 3]))
def test_pq_search_matches_reference(case, k, metric, nsplit):
    X, C, nbits = case
    pq = _pq_with(C, nbits)
    codes = pq.encode(X)
    unpacked = codes.astype(np.int64) if nbits == 8 else pq_ref.unpack4(codes, C.shape[0])
    rng = np.random.default_rng(k)
    # integer-valued queries and codebooks make many exact ties: the lower index must win
    Q = np.round(rng.standard_normal((5, X.shape[1])))
    pq.codebooks_ = np.round(C * 2).astype(C.dtype)
    T = pq_ref.pq_tables(Q, pq.codebooks_, metric)
    dist = pq_ref.adc(T, unpacked)
    rD, rI = pq_ref.topk(dist, min(k, X.shape[0]), largest=(metric == "ip"))
    D, I = pq.search(Q, k, codes=codes, metric=metric)
    m = min(k, X.shape[0])
    np.testing.assert_array_equal(I[:, :m], rI)
    np.testing.assert_allclose(D[:, :m], rD, rtol=1e-6, atol=1e-4)
    assert (I[:, m:] == -1).all() and np.isinf(D[:, m:]).all()
    # the scan kernel with several code ranges, merged, gives the same lists
    BT = np.empty((5, codes.shape[1], 256), np.float32)
    kpq.byte_tables(pq.tables(Q, metric), nbits, 1.0 if metric == "l2" else -1.0, BT)
    pD = np.empty((5, nsplit, k), np.float32)
    pI = np.empty((5, nsplit, k), np.int64)
    kpq.lut_search(BT, codes, nsplit, pD, pI)
    D2 = np.empty((5, k), np.float32)
    I2 = np.empty((5, k), np.int64)
    kpq.merge_topk(pD, pI, D2, I2)
    np.testing.assert_array_equal(I2, I)


@given(pq_cases(), st.integers(1, 6))
def test_pq_dot_matches_reference(case, p):
    X, C, nbits = case
    pq = _pq_with(C, nbits)
    codes = pq.encode(X)
    unpacked = codes.astype(np.int64) if nbits == 8 else pq_ref.unpack4(codes, C.shape[0])
    B = np.random.default_rng(p).standard_normal((X.shape[1], p))
    expect = pq_ref.pq_dot(unpacked, C, B)
    got = pq.dot(codes, B)
    np.testing.assert_allclose(got, expect, rtol=TOL[X.dtype.type] * 10, atol=TOL[X.dtype.type] * 100)
    np.testing.assert_allclose(pq.dot(codes, B[:, 0]), expect[:, 0], rtol=TOL[X.dtype.type] * 10,
                               atol=TOL[X.dtype.type] * 100)


@pytest.mark.parametrize("nbits", [8, 4])
def test_pq_fit_numpy_and_dask_agree(nbits):
    X = blobs(3000, 12, 40, seed=8, spread=2.0)
    a = ProductQuantizer(3, nbits=nbits, seed=1, max_iter=8).fit(X)
    b = ProductQuantizer(3, nbits=nbits, seed=1, max_iter=8).fit(da.from_array(X, chunks=(700, 5)))
    np.testing.assert_allclose(a.codebooks_, b.codebooks_, rtol=1e-4, atol=1e-4)
    assert a.n_iter_ == b.n_iter_
    codes = a.encode(X)
    np.testing.assert_array_equal(a.encode(da.from_array(X, chunks=500)).compute(), codes)
    np.testing.assert_array_equal(a.decode(da.from_array(codes, chunks=300)).compute(), a.decode(codes))
    Dn, In = a.search(X[:9], 5, codes=codes)
    Dd, Id = a.search(X[:9], 5, codes=da.from_array(codes, chunks=(800, -1)))
    np.testing.assert_array_equal(In, Id)
    np.testing.assert_array_equal(Dn, Dd)
    B = np.random.default_rng(0).standard_normal((12, 3))
    np.testing.assert_allclose(a.dot(da.from_array(codes, chunks=900), B).compute(), a.dot(codes, B))
    # the quantizer learned something: reconstruction error well below the data variance
    mse = ((a.decode(codes) - X) ** 2).mean()
    assert mse < 0.5 * X.var(axis=0).mean()
    ip = a.search(X[:3], 4, codes=codes, metric="ip")[0]
    assert (np.diff(ip, axis=1) <= 0).all()


def test_pq_kmeanspp_init_and_recall():
    X = blobs(4000, 16, 64, seed=9, spread=1.0, noise=0.3)
    pq = ProductQuantizer(4, nbits=8, init="k-means++", seed=0).fit(X)
    codes = pq.encode(X)
    _, I = pq.search(X[:50], 1, codes=codes)
    assert (I[:, 0] == np.arange(50)).mean() > 0.5
