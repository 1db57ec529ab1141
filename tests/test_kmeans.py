"""k-means (NumPy, Dask, mini-batch, k-means||) and nearest-centroid assignment against NumPy references."""

from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nquant.errors import InputError, SchemeError
from nquant.kernels import assign as kassign
from nquant.kernels import lloyd as klloyd
from nquant.kmeans import KMeans, assign
from tests.helpers import blobs, readonly
from tests.reference import assign as assign_ref
from tests.reference import lloyd as lloyd_ref
from tests.strategies import chunkings

TOL = {np.float32: 1e-4, np.float64: 1e-10}


@st.composite
def assign_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, 300))
    d = draw(st.sampled_from([1, 2, 3, 8, 16, 17, 33, 64]))
    k = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    offset = draw(st.sampled_from([0.0, 5.0]))
    rng = np.random.default_rng(seed)
    X = ((rng.standard_normal((n, d)) + offset) * scale).astype(dtype)
    C = ((rng.standard_normal((k, d)) + offset) * scale).astype(dtype)
    if n and draw(st.booleans()):  # duplicated rows and centers equal to rows
        X[n // 2:] = X[:n - n // 2]
        C[:min(k, n)] = X[:min(k, n)]
    return X, C


# ----------------------------------------------------------------------------- kernels
@given(assign_cases(), st.booleans(), st.sampled_from([1, 2]))
def test_assign_kernels_match_reference(case, ro, nthreads):
    X, C = case
    n, d = X.shape
    dtype = X.dtype.type
    Xi, Ci = (readonly(X), readonly(C)) if ro else (X, C)
    if d <= kassign.DIRECT_MAX_DIM:
        labels, d2, sums, counts = kassign.direct_pass(Xi, Ci, accumulate=True)
    else:
        labels, d2, sums, counts = kassign.gemm_pass(Xi, Ci, accumulate=True, nthreads=nthreads)
    rl, rd = assign_ref.assign(X, C)
    scale = float(np.abs(X).max(initial=0) ** 2 + np.abs(C).max() ** 2) * d
    atol = TOL[dtype] * 8 * scale
    # labels agree unless two centers are within rounding of each other
    clear = assign_ref.margin(X, C) > 2 * atol
    assert (labels[clear] == rl[clear]).all()
    D = assign_ref.sq_dists(X, C)
    assert np.all(D[np.arange(n), labels] <= rd + 2 * atol)  # never a clearly worse center
    np.testing.assert_allclose(d2, rd, rtol=TOL[dtype] * 10, atol=atol)
    assert labels.dtype == np.int32 and d2.dtype == X.dtype
    # partial sums and counts of the kernel's own labels
    rs, rc = assign_ref.partial_sums(X, labels, C.shape[0])
    np.testing.assert_array_equal(counts, rc)
    np.testing.assert_allclose(sums, rs, rtol=1e-12, atol=1e-12 * scale)


def test_gemm_pass_does_not_depend_on_threads():
    X = blobs(40000, 40, 10, seed=3)
    C = X[:10].copy()
    a = kassign.gemm_pass(X, C, accumulate=True, nthreads=1)
    b = kassign.gemm_pass(X, C, accumulate=True, nthreads=2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@given(assign_cases(), st.integers(0, 2**31 - 1), st.sampled_from([1, 2]))
def test_bounded_pass_matches_reference_and_bounds_hold(case, seed, nthreads):
    X, C = case
    n, d = X.shape
    if d <= kassign.DIRECT_MAX_DIM:  # the bounded pass serves the GEMM path
        X = np.ascontiguousarray(np.tile(X, (1, 2)))
        C = np.ascontiguousarray(np.tile(C, (1, 2)))
        d *= 2
    k = C.shape[0]
    dtype = X.dtype.type
    rng = np.random.default_rng(seed)
    xx = kassign.row_sqnorms(X)
    labels, d2 = np.empty(n, np.int32), np.empty(n, X.dtype)
    upper, lower = np.empty(n), np.empty(n)
    scale = float(np.abs(X).max(initial=0) ** 2 + np.abs(C).max() ** 2) * d
    atol = TOL[dtype] * 8 * scale
    drift = None
    for step in range(4):
        sums, counts, searched = kassign.bounded_pass(X, C, xx, labels, d2, upper, lower, drift,
                                                      exact_d2=step == 3, nthreads=nthreads)
        D = assign_ref.sq_dists(X, C)
        rl, rd = assign_ref.assign(X, C)
        clear = assign_ref.margin(X, C) > 2 * atol
        assert (labels[clear] == rl[clear]).all()
        assert np.all(D[np.arange(n), labels] <= rd + 2 * atol)
        # the bounds hold for the exact distances
        own = np.sqrt(D[np.arange(n), labels])
        assert np.all(own <= upper * (1 + 1e-9) + 1e-30)
        others = np.where(np.arange(k)[None] == labels[:, None], np.inf, D)
        assert np.all(np.sqrt(others.min(axis=1, initial=np.inf)) >= lower * (1 - 1e-9) - 1e-30)
        rs, rc = assign_ref.partial_sums(X, labels, k)
        np.testing.assert_array_equal(counts, rc)
        np.testing.assert_allclose(sums, rs, rtol=1e-12, atol=1e-12 * scale)
        assert 0 <= searched <= n and (step > 0 or searched == n)
        if step == 3:
            np.testing.assert_allclose(d2, D[np.arange(n), labels], rtol=TOL[dtype], atol=atol)
        # move the centers a little (some not at all), as a Lloyd update would
        move = rng.standard_normal(C.shape) * rng.choice([0.0, 1e-3, 0.3], size=(k, 1))
        new = (C + move * (np.abs(C).max(initial=0) + 1e-3)).astype(X.dtype)
        drift = kassign.center_drift(new, C)
        C = np.ascontiguousarray(new)


def test_bounded_lloyd_skips_rows_and_keeps_labels():
    X = blobs(6000, 24, 16, seed=11, spread=4.0)
    C0 = X[np.random.default_rng(2).choice(6000, 16, replace=False)].copy()
    km = KMeans(16, init=C0, max_iter=12, tol=0.0).fit(X)
    rc, rl, rn, ri = lloyd_ref.lloyd(X, C0, 12)
    assert km.n_iter_ == rn
    np.testing.assert_array_equal(km.labels_, rl)
    np.testing.assert_allclose(km.cluster_centers_, rc, rtol=1e-5, atol=1e-5)
    assert km.inertia_ == pytest.approx(ri, rel=1e-6)
    # a converged pass with unmoved centers searches no row
    Xc = np.ascontiguousarray(X - X.mean(axis=0), np.float32)
    C = np.ascontiguousarray(rc - X.mean(axis=0), np.float32)
    xx = kassign.row_sqnorms(Xc)
    labels, d2 = np.empty(6000, np.int32), np.empty(6000, np.float32)
    upper, lower = np.empty(6000), np.empty(6000)
    assert kassign.bounded_pass(Xc, C, xx, labels, d2, upper, lower)[2] == 6000
    assert kassign.bounded_pass(Xc, C, xx, labels, d2, upper, lower, np.zeros(16))[2] < 60


def test_assign_ties_and_nan():
    C = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 0.0]], np.float32)
    X = np.array([[1.0, 0.0], [2.0, 0.0], [np.nan, 0.0]], np.float32)
    labels, d2 = assign(X, C)
    assert labels.tolist() == [0, 1, 0]  # a tie goes to the lower index; NaN rows get 0
    assert d2[0] == pytest.approx(1.0, abs=1e-6) and d2[1] == pytest.approx(0.0, abs=1e-6) and np.isnan(d2[2])
    # GEMM path; centers whose mean (the working shift) is exact, so the tie stays exact
    Cg = np.tile(np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 0.0]], np.float32), (1, 12))
    labels, d2 = assign(np.tile(X[:2], (1, 12)), Cg)
    assert labels.tolist() == [0, 1] and d2.tolist() == [12.0, 0.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_lloyd_kmeans_plusplus_matches_reference(dtype, weighted):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((20000, 12))
    X[:7000] += 6
    X = X.astype(dtype)
    w = rng.random(20000) + 0.5 if weighted else None
    for nthreads in (1, 2):
        C, idx = klloyd.kmeans_plusplus(X, 25, np.random.default_rng(9), weights=w, nthreads=nthreads)
        ridx = lloyd_ref.kmeans_plusplus(X, 25, np.random.default_rng(9), weights=w)
        np.testing.assert_array_equal(idx, ridx)
        np.testing.assert_array_equal(C, X[idx])


def test_lloyd_minibatch_update_matches_reference():
    rng = np.random.default_rng(1)
    C = rng.standard_normal((6, 5))
    W = np.array([0.0, 3.0, 1.0, 0.0, 10.0, 2.0])
    batch = rng.standard_normal((40, 5))
    labels, _ = assign_ref.assign(batch, C)
    sums, counts = assign_ref.partial_sums(batch, labels, 6)
    c, w = C.copy(), W.copy()
    shift = klloyd.minibatch_update(c, w, sums, counts.astype(np.int64))
    rc, rw = lloyd_ref.minibatch_step(C, W, batch)
    np.testing.assert_allclose(c, rc, rtol=1e-12)
    np.testing.assert_allclose(w, rw)
    assert shift == pytest.approx(((rc - C) ** 2).sum())


# ----------------------------------------------------------------------------- Lloyd
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [5, 40])
def test_lloyd_matches_numpy_reference(dtype, d):
    X = blobs(3000, d, 12, seed=d, spread=2.0)
    X = (X + 100.0).astype(dtype)  # an offset: the fit centers the data first
    C0 = X[np.random.default_rng(0).choice(3000, 12, replace=False)].copy()
    km = KMeans(12, init=C0, max_iter=6, tol=0.0).fit(X)
    rc, rl, rn, ri = lloyd_ref.lloyd(X, C0, 6)
    assert km.n_iter_ == rn
    np.testing.assert_array_equal(km.labels_, rl)
    np.testing.assert_allclose(km.cluster_centers_, rc, rtol=TOL[dtype] / 10, atol=TOL[dtype] / 10)
    assert km.inertia_ == pytest.approx(ri, rel=TOL[dtype])
    assert km.cluster_centers_.dtype == dtype
    np.testing.assert_array_equal(km.predict(X), km.labels_)


def test_lloyd_converges_and_tol():
    X = blobs(2000, 8, 5, seed=2)
    km = KMeans(5, max_iter=300, tol=0.0, seed=1).fit(X)
    assert km.n_iter_ < 300
    rc, _, _, _ = lloyd_ref.lloyd(X, km.cluster_centers_, 3)
    np.testing.assert_allclose(rc, km.cluster_centers_, rtol=1e-5, atol=1e-5)  # a fixed point
    loose = KMeans(5, max_iter=300, tol=1e-1, seed=1).fit(X)
    assert loose.n_iter_ <= km.n_iter_


def test_empty_cluster_takes_farthest_point():
    X = blobs(500, 3, 3, seed=5)
    C0 = np.concatenate([X[:3], [[1e4, 1e4, 1e4]]]).astype(np.float32)  # center 3 gets no point
    km = KMeans(4, init=C0, max_iter=1, tol=0.0).fit(X)
    rc, _, _, _ = lloyd_ref.lloyd(X, C0, 1)
    np.testing.assert_allclose(km.cluster_centers_, rc, rtol=1e-5, atol=1e-4)
    _, d2 = assign_ref.assign(X, C0[:3])
    np.testing.assert_allclose(km.cluster_centers_[3], X[lloyd_ref.farthest(d2, 1)[0]])


def test_n_init_keeps_best_and_seed_reproducible():
    X = blobs(3000, 10, 8, seed=6, spread=1.5)
    a = KMeans(8, n_init=3, seed=2, max_iter=20).fit(X)
    b = KMeans(8, n_init=3, seed=2, max_iter=20).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    singles = [KMeans(8, seed=2, max_iter=20).fit(X).inertia_]
    assert a.inertia_ <= min(singles) * (1 + 1e-9)


def test_float16_input_and_random_init():
    X = blobs(1000, 4, 3, seed=7).astype(np.float16)
    km = KMeans(3, init="random", seed=0).fit(X)
    assert km.cluster_centers_.dtype == np.float32


# ----------------------------------------------------------------------------- Dask
XD = blobs(4000, 20, 6, seed=11, spread=3.0)
C0D = XD[np.random.default_rng(3).choice(4000, 6, replace=False)].copy()
_NUMPY_FIT = {}


def _numpy_fit():
    if not _NUMPY_FIT:
        _NUMPY_FIT["km"] = KMeans(6, init=C0D, max_iter=10, tol=0.0).fit(XD)
    return _NUMPY_FIT["km"]


@given(chunkings(XD.shape, max_chunks=5))
def test_dask_lloyd_same_centers_for_any_chunking(chunks):
    ref_fit = _numpy_fit()
    km = KMeans(6, init=C0D, max_iter=10, tol=0.0).fit(da.from_array(XD, chunks=chunks))
    np.testing.assert_allclose(km.cluster_centers_, ref_fit.cluster_centers_, rtol=1e-5, atol=1e-5)
    assert km.n_iter_ == ref_fit.n_iter_
    assert km.inertia_ == pytest.approx(ref_fit.inertia_, rel=1e-5)


def test_dask_init_is_chunk_invariant_and_passes_counted():
    base = None
    for chunks in [(4000, 20), (333, 7), (1000, 20)]:
        X = da.from_array(XD, chunks=chunks)
        computes = []

        class Count(dask.callbacks.Callback):
            def _start(self, dsk, computes=computes):
                computes.append(1)

        with Count():
            km = KMeans(6, init_size=1500, max_iter=50, tol=1e-4, seed=4, persist=False).fit(X)
        # sample gather + n_iter_ passes + (a final pass unless the last update moved nothing)
        assert len(computes) in (1 + km.n_iter_, 2 + km.n_iter_)
        if base is None:
            base = km
        else:
            np.testing.assert_allclose(km.cluster_centers_, base.cluster_centers_, rtol=1e-5, atol=1e-5)
    # the same sample on a NumPy input gives the same fit
    kn = KMeans(6, init_size=1500, max_iter=50, tol=1e-4, seed=4).fit(XD)
    np.testing.assert_allclose(kn.cluster_centers_, base.cluster_centers_, rtol=1e-5, atol=1e-5)


def test_dask_predict_is_lazy_and_matches():
    km = _numpy_fit()
    X = da.from_array(XD, chunks=(700, 20))
    with dask.config.set(scheduler="sync"):
        lab = km.predict(X)
        assert isinstance(lab, da.Array) and lab.dtype == np.int32
    np.testing.assert_array_equal(lab.compute(), km.labels_)
    labels, d2 = assign(X, km.cluster_centers_)
    rl, rd = assign(XD, km.cluster_centers_)
    np.testing.assert_array_equal(labels.compute(), rl)
    np.testing.assert_allclose(d2.compute(), rd, rtol=1e-6)
    assert km.score(X) == pytest.approx(km.score(XD), rel=1e-6)


def test_zarr_input(tmp_path):
    import zarr

    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=XD.shape, chunks=(900, 20), dtype="f4")
    z[:] = XD
    km = KMeans(6, init=C0D, max_iter=10, tol=0.0).fit(z)
    np.testing.assert_allclose(km.cluster_centers_, _numpy_fit().cluster_centers_, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunks", [(4000, 20), (500, 20), (1234, 20)])
def test_minibatch_within_tolerance_of_lloyd(chunks):
    """Documented tolerance: mini-batch inertia within 10% of the exact Lloyd fit, any chunking."""
    lloyd = KMeans(6, seed=0, n_init=3).fit(XD)
    mb = KMeans(6, seed=0, algorithm="minibatch", batch_size=256, max_iter=20).fit(
        da.from_array(XD, chunks=chunks))
    assert mb.inertia_ <= 1.10 * lloyd.inertia_
    assert mb.n_steps_ >= 4000 // 256
    assert mb.inertia_ == pytest.approx(-mb.score(XD), rel=1e-5)


def test_minibatch_numpy_and_partial_fit():
    lloyd = KMeans(6, seed=0, n_init=3).fit(XD)
    mb = KMeans(6, seed=0, algorithm="minibatch", batch_size=200).fit(XD)
    assert mb.inertia_ <= 1.10 * lloyd.inertia_
    pf = KMeans(6, seed=0)
    for i in range(0, 4000, 500):
        pf.partial_fit(XD[i:i + 500])
    assert pf.n_steps_ == 8
    assert -pf.score(XD) <= 1.25 * lloyd.inertia_
    pd = KMeans(6, seed=0, init_size=2000).partial_fit(da.from_array(XD, chunks=(400, 20)))
    assert pd.n_steps_ == 10
    assert -pd.score(XD) <= 1.25 * lloyd.inertia_


def test_kmeans_parallel_init():
    X = da.from_array(XD, chunks=(900, 20))
    a = KMeans(6, init="k-means||", seed=3, max_iter=30).fit(X)
    b = KMeans(6, init="k-means||", seed=3, max_iter=30).fit(da.from_array(XD, chunks=(1500, 20)))
    lloyd = KMeans(6, seed=0, n_init=3).fit(XD)
    assert a.inertia_ <= 1.05 * lloyd.inertia_
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-4, atol=1e-4)
    c = KMeans(6, init="k-means||", seed=3, max_iter=30).fit(XD)  # NumPy input: one block
    assert c.inertia_ <= 1.05 * lloyd.inertia_


def test_fit_on_sample_reports_heldout_inertia():
    X = da.from_array(XD, chunks=(800, 20))
    km = KMeans(6, seed=0, sample_size=1000).fit(X)
    assert km.sample_indices_.shape == (1000,)
    per_point_train = km.inertia_ / 1000
    assert km.heldout_inertia_ == pytest.approx(per_point_train, rel=0.2)
    kn = KMeans(6, seed=0, sample_size=1000).fit(XD)
    assert kn.heldout_inertia_ == pytest.approx(km.heldout_inertia_, rel=1e-6)
    lab = km.predict(X).compute()
    assert lab.shape == (4000,)


def test_calls_from_threads():
    km = _numpy_fit()
    expected = km.predict(XD)
    with ThreadPoolExecutor(4) as ex:
        for lab in ex.map(lambda _: km.predict(XD), range(8)):
            np.testing.assert_array_equal(lab, expected)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, match", [
    ({"n_clusters": 0}, r"n_clusters=0"),
    ({"n_clusters": 3, "init": "kmeans"}, r"init='kmeans'"),
    ({"n_clusters": 3, "max_iter": 0}, r"max_iter=0"),
    ({"n_clusters": 3, "tol": -1.0}, r"tol=-1.0"),
    ({"n_clusters": 3, "algorithm": "elkan"}, r"algorithm='elkan'"),
    ({"n_clusters": 3, "init": np.zeros((2, 4))}, r"n_clusters=3"),
    ({"n_clusters": 3, "seed": -1}, r"seed=-1"),
])
def test_kmeans_bad_parameters(kwargs, match):
    with pytest.raises(SchemeError, match=match):
        KMeans(**kwargs)


def test_kmeans_bad_data():
    with pytest.raises(InputError, match=r"2-D"):
        KMeans(2).fit(np.zeros(10))
    with pytest.raises(InputError, match=r"n_samples=3 should be >= n_clusters=4"):
        KMeans(4).fit(np.zeros((3, 2)))
    with pytest.raises(InputError, match=r"dtype=int64"):
        KMeans(2).fit(np.zeros((10, 2), np.int64))
    bad = np.ones((50, 3))
    bad[7, 1] = np.nan
    with pytest.raises(InputError, match=r"NaN or infinity"):
        KMeans(2).fit(bad)
    with pytest.raises(InputError, match=r"NaN or infinity"):
        KMeans(2, init=np.zeros((2, 3)), init_size=10, persist=False).fit(da.from_array(bad, chunks=10))
    with pytest.raises(SchemeError, match=r"not fitted"):
        KMeans(2).predict(np.zeros((3, 2)))
    km = KMeans(2).fit(np.random.default_rng(0).random((20, 3)))
    with pytest.raises(InputError, match=r"n_features=4"):
        km.predict(np.zeros((5, 4)))
    with pytest.raises(InputError, match=r"centers must have shape"):
        assign(np.zeros((4, 3)), np.zeros((2, 2)))
