"""Uniform affine quantization: kernels against the NumPy reference, fit, chunk
invariance, calibration, containers, metrics and scheme JSON."""

import functools
import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from strategies import (
    apply_layout,
    block_chunkings,
    chunkings,
    float_arrays,
    iter_chunks,
    layouts,
    shapes,
)

import nquant as nq
from nquant.errors import SchemeError
from nquant.families import uniform
from tests.reference import affine as affine_ref
from tests.reference import calibrate as calibrate_ref
from tests.reference import stats as stats_ref
from tests.reference import uniform as uniform_ref

MODES = ("nearest", "nearest_away", "floor", "ceil", "stochastic")
GRANULARITIES = ("tensor", "axis0", "axis-1", "axis_mid", "block1", "block7", "block64")


def granularity_kw(g):
    return {"tensor": {}, "axis0": {"axis": 0}, "axis-1": {"axis": -1}, "axis_mid": {"axis": 1},
            "block1": {"block_size": 1}, "block7": {"block_size": 7}, "block64": {"block_size": 64}}[g]


def granularity_ok(g, ndim):
    if g in ("axis0", "axis-1"):
        return ndim >= 1
    if g == "axis_mid":
        return ndim == 3
    return True


@st.composite
def scheme_kwargs(draw, granularity=None, ranges=("minmax", "minmax", "explicit", "percentile_exact")):
    """Keyword arguments of a valid Uniform (range 'explicit' is resolved by the test)."""
    kw = {"bits": draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16])), "symmetric": draw(st.booleans())}
    kw["signed"] = draw(st.sampled_from([None, True, False]))
    kw["narrow_range"] = draw(st.booleans())
    if not kw["symmetric"]:
        kw["zero_point"] = draw(st.sampled_from(["int", "float"]))
    kw["rounding"] = draw(st.sampled_from(MODES))
    kw["seed"] = draw(st.integers(-(2**63), 2**64 - 1))
    kw["nan"] = draw(st.sampled_from(["raise", "propagate"]))
    kw["zero_point_storage"] = draw(st.sampled_from(["packed", "int32"]))
    if granularity is not None:
        kw.update(granularity_kw(granularity))
    blocks = kw.get("block_size") is not None
    kw["range"] = draw(st.sampled_from([r for r in ranges if not (blocks and r == "percentile_exact")]))
    if kw["range"] == "percentile_exact":
        kw["percentile"] = draw(st.sampled_from([(0.0, 100.0), (1.0, 99.0), (10.0, 75.0)]))
    try:
        nq.Uniform(**{**kw, "range": "minmax" if kw["range"] == "explicit" else kw["range"]})
    except SchemeError:
        assume(False)
    return kw


def make_scheme(kw, x, data):
    kw = dict(kw)
    if kw["range"] == "explicit":
        finite = np.asarray(x, np.float64)
        finite = finite[np.isfinite(finite)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
        a, b = sorted(data.draw(st.lists(st.sampled_from([-0.25, 0.0, 0.3, 0.5, 1.0, 1.25]),
                                         min_size=2, max_size=2)))
        kw["range"] = (lo + (hi - lo) * a, lo + (hi - lo) * b)
    return nq.Uniform(**kw)


def with_nans(x, scheme, data):
    if scheme.nan != "propagate" or x.size == 0:
        return x
    x = x.copy()
    k = data.draw(st.integers(0, min(3, x.size)))
    idx = data.draw(st.lists(st.integers(0, x.size - 1), min_size=k, max_size=k))
    x.reshape(-1)[idx] = np.nan
    return x


def qmin_of(scheme):
    return affine_ref.qrange(scheme)[0]


def assert_params_equal(got, want):
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert_array_equal(got[k], want[k], err_msg=k)


def grid_bounds(scheme, params):
    """(lo, hi) per group of the representable grid, float64."""
    qmin, qmax = affine_ref.qrange(scheme)
    s = params["scale"].astype(np.float64)
    if "offset" in params:
        off = params["offset"].astype(np.float64)
        return off, off + (qmax - qmin) * s
    zp = affine_ref.zero_points(scheme, params, len(s)).astype(np.float64)
    return (qmin - zp) * s, (qmax - zp) * s


def assert_error_bound(scheme, params, x, x_hat):
    """|x_hat - clip(x, grid)| <= k * scale (+ float slack); k = 1/2 for nearest modes, else 1."""
    x64 = np.asarray(x, np.float64)
    y64 = np.asarray(x_hat, np.float64)
    g = affine_ref.group_ids(scheme, x64.shape).reshape(-1)
    lo, hi = grid_bounds(scheme, params)
    s = params["scale"].astype(np.float64)
    xf, yf = x64.reshape(-1), y64.reshape(-1)
    nan = np.isnan(xf)
    assert np.isnan(yf[nan]).all()
    xf, yf, g = xf[~nan], yf[~nan], g[~nan]
    if not xf.size:
        return
    k = 0.5 if scheme.rounding in ("nearest", "nearest_away") else 1.0
    cd = affine_ref.compute_dtype(np.asarray(x).dtype)
    out = np.asarray(x_hat).dtype
    eps = np.finfo(cd).eps + np.finfo(out).eps
    mag = np.maximum.reduce([np.abs(xf), np.abs(lo[g]), np.abs(hi[g])])
    tol = k * s[g] * (1 + 2.0**-12) + 16 * eps * mag + 2 * float(np.finfo(out).smallest_subnormal)
    err = np.abs(yf - np.clip(xf, lo[g], hi[g]))
    assert (err <= tol).all(), (err.max(), tol[np.argmax(err - tol)])


# ----------------------------------------------------------------------------- kernels vs reference


@settings(max_examples=60)
@given(st.data())
def test_fit_encode_decode_match_reference(data):
    ndim = data.draw(st.integers(0, 3))
    g = data.draw(st.sampled_from([g for g in GRANULARITIES if granularity_ok(g, ndim)]))
    kw = data.draw(scheme_kwargs(granularity=g))
    x = data.draw(float_arrays(shape=data.draw(shapes(min_dims=ndim, max_dims=ndim, max_side=6))))
    scheme = make_scheme(kw, x, data)
    x = with_nans(x, scheme, data)
    xl = apply_layout(x, data.draw(layouts()))

    params = uniform.fit(scheme, xl)
    assert_params_equal(params, uniform_ref.fit(scheme, x))
    assert len(params["scale"]) == affine_ref.n_groups(scheme, x.shape)

    codes = uniform.encode(scheme, params, xl)
    assert codes.dtype == affine_ref.code_dtype(scheme) and codes.shape == x.shape
    want = affine_ref.encode(scheme, params, x)
    assert_array_equal(codes, want)
    for dt in {x.dtype, np.dtype(np.float32), np.dtype(np.float64)}:
        y = uniform.decode(scheme, params, codes, dt)
        assert y.dtype == dt and y.shape == x.shape
        assert_array_equal(y, affine_ref.decode(scheme, params, want, dt))

    q = nq.quantize(xl, scheme)
    assert q.shape == x.shape and q.dtype == x.dtype
    cu = q.codes_unpacked
    wide = scheme.bits > 8
    assert cu.dtype == ((np.int16 if wide else np.int8) if scheme.is_signed else (np.uint16 if wide else np.uint8))
    assert_array_equal(cu.astype(np.int64), want.astype(np.int64) + qmin_of(scheme))
    y = nq.dequantize(q)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_array_equal(y, affine_ref.decode(scheme, params, want, x.dtype))
    assert_error_bound(scheme, params, x, y)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_affine_every_convention_and_bit_width(granularity):
    """All rounding modes x zero-point conventions x signed/unsigned/narrow x bits 1..8 on fixed
    adversarial data (the parameters do not depend on the rounding mode: fitted once)."""
    shape = (4, 5, 6) if granularity == "axis_mid" else (9, 14)
    rs = np.random.default_rng(len(granularity))
    base = rs.standard_normal(shape) * 3 + 1
    base.reshape(-1)[:5] = [0.0, -0.0, 2.5, -2.5, 1e-3]
    conventions = [dict(symmetric=True), dict(symmetric=True, narrow_range=True),
                   dict(symmetric=True, signed=False), dict(zero_point="int"),
                   dict(zero_point="int", signed=True), dict(zero_point="int", signed=True, narrow_range=True),
                   dict(zero_point="float"), dict(zero_point="float", signed=True)]
    n_checked = 0
    for (k, conv), bits in itertools.product(enumerate(conventions), range(1, 9)):
        dtype = (np.float32, np.float64)[(k + bits) % 2]  # both dtypes, every combination once
        try:
            s = nq.Uniform(bits=bits, seed=bits - 5, **conv, **granularity_kw(granularity))
        except SchemeError:
            assert conv.get("symmetric") or (conv.get("narrow_range") and bits == 1)
            continue
        x = base.astype(dtype)
        p = uniform.fit(s, x)
        assert_params_equal(p, uniform_ref.fit(s, x))
        for mode in MODES:
            sm = s.replace(rounding=mode)
            c = uniform.encode(sm, p, x)
            assert_array_equal(c, affine_ref.encode(sm, p, x), err_msg=f"{sm}")
            assert c.max() <= affine_ref.qrange(sm)[1] - affine_ref.qrange(sm)[0]
            y = uniform.decode(sm, p, c, dtype)
            assert_array_equal(y, affine_ref.decode(sm, p, c, dtype))
            assert_error_bound(sm, p, x, y)
            n_checked += 1
    assert n_checked == (len(conventions) * 8 - 4) * len(MODES)


@settings(max_examples=25)
@given(st.data())
def test_ties_after_scaling(data):
    """Exact ties k + 0.5 with scale 1 in every convention that gives scale 1."""
    bits = data.draw(st.integers(2, 8))
    mode = data.draw(st.sampled_from(MODES))
    dtype = data.draw(st.sampled_from([np.float16, np.float32, np.float64]))
    top = 2**bits - 1
    k = data.draw(st.lists(st.integers(0, 2 * top), min_size=1, max_size=40))
    x = (np.array(k) / 2.0).astype(dtype)
    for s in [nq.Uniform(bits=bits, range=(0.0, float(top)), zero_point="float", rounding=mode),
              nq.Uniform(bits=bits, range=(0.0, float(top)), zero_point="int", rounding=mode),
              nq.Uniform(bits=bits, range=(-float(top // 2), float(top // 2)), symmetric=True,
                         narrow_range=True, rounding=mode)]:
        p = uniform.fit(s, x)
        assert p["scale"][0] == 1.0
        c = uniform.encode(s, p, x)
        assert_array_equal(c, affine_ref.encode(s, p, x))
    s = nq.Uniform(bits=bits, range=(0.0, float(top)), zero_point="float", rounding=mode)
    c = uniform.encode(s, uniform.fit(s, x), x).astype(np.int64)
    kk = np.array(k)
    half = kk // 2
    odd = kk % 2 == 1
    if mode == "nearest":
        want = np.where(odd, half + (half % 2), half)
    elif mode in ("nearest_away", "ceil"):
        want = np.where(odd, half + 1, half)
    elif mode == "floor":
        want = half
    else:
        want = None
        assert ((c == half) | (c == half + odd)).all()
    if want is not None:
        assert_array_equal(c, np.minimum(want, top))


# ----------------------------------------------------------------------------- fit statistics


@settings(max_examples=30)
@given(st.data())
def test_partial_min_max_and_merge_over_chunks(data):
    shape = data.draw(shapes(min_dims=1, max_dims=3, max_side=7))
    g = data.draw(st.sampled_from([g for g in GRANULARITIES[:4] if granularity_ok(g, len(shape))]))
    s = nq.Uniform(nan="propagate", **granularity_kw(g))
    x = data.draw(float_arrays(shape=shape))
    x = with_nans(x, s, data)
    whole = uniform.partial(s, x)
    mins, maxs, n_nan = stats_ref.raw_minmax(s, x)
    assert_array_equal(whole["min"], mins)
    assert_array_equal(whole["max"], maxs)
    assert whole["n_nan"] == n_nan
    parts = [uniform.partial(s, x[sl], start=start, global_shape=shape)
             for sl, start in iter_chunks(data.draw(chunkings(shape)))]
    merged = functools.reduce(uniform.merge, parts)
    for k in ("min", "max"):
        assert_array_equal(merged[k], whole[k])
    assert merged["n_nan"] == whole["n_nan"]
    # merge is commutative
    rev = functools.reduce(uniform.merge, parts[::-1])
    assert_array_equal(rev["min"], whole["min"])
    # histograms over the fitted range merge exactly too
    s2 = s.replace(range="percentile", bins=16)
    lo, hi = uniform.histogram_range[0](whole), uniform.histogram_range[1](whole)
    hw = uniform.partial_histogram(s2, x, lo, hi)["counts"]
    assert_array_equal(hw, stats_ref.histogram_counts(s2, x, lo, hi))
    hp = sum(uniform.partial_histogram(s2, x[sl], lo, hi, start=start, global_shape=shape)["counts"]
             for sl, start in iter_chunks(data.draw(chunkings(shape))))
    assert_array_equal(hp, hw)


@settings(max_examples=20)
@given(st.data())
def test_block_partials_concatenate_over_chunks(data):
    bs = data.draw(st.sampled_from([1, 7, 64]))
    n = data.draw(st.integers(0, 300))
    x = data.draw(float_arrays(shape=(n,)))
    s = nq.Uniform(block_size=bs, bits=data.draw(st.integers(1, 8)))
    whole = uniform.partial(s, x)
    mins, maxs, _ = stats_ref.raw_minmax(s, x)
    assert_array_equal(whole["min"], mins)
    assert_array_equal(whole["max"], maxs)
    parts = [uniform.partial(s, x[sl], start=start, global_shape=x.shape)
             for sl, start in iter_chunks(data.draw(block_chunkings(n, bs)))]
    assert_array_equal(np.concatenate([p["min"] for p in parts]), whole["min"])
    assert_array_equal(np.concatenate([p["max"] for p in parts]), whole["max"])


# ----------------------------------------------------------------------------- chunk invariance


@settings(max_examples=40)
@given(st.data())
def test_encode_decode_chunk_invariance(data):
    shape = data.draw(shapes(min_dims=1, max_dims=3, max_side=7))
    g = data.draw(st.sampled_from([g for g in GRANULARITIES[:4] if granularity_ok(g, len(shape))]))
    kw = data.draw(scheme_kwargs(granularity=g, ranges=("minmax",)))
    x = data.draw(float_arrays(shape=shape))
    s = make_scheme(kw, x, data)
    x = with_nans(x, s, data)
    p = uniform.fit(s, x)
    whole = uniform.encode(s, p, x)
    assert_array_equal(whole, affine_ref.encode(s, p, x))
    dec = uniform.decode(s, p, whole, x.dtype)
    codes = np.empty_like(whole)
    back = np.empty(shape, x.dtype)
    for sl, start in iter_chunks(data.draw(chunkings(shape))):
        codes[sl] = uniform.encode(s, p, x[sl], start=start, global_shape=shape)
        back[sl] = uniform.decode(s, p, whole[sl], x.dtype, start=start, global_shape=shape)
    assert_array_equal(codes, whole)
    assert_array_equal(back, dec)


@settings(max_examples=20)
@given(st.data())
def test_block_encode_chunk_invariance(data):
    bs = data.draw(st.sampled_from([1, 7, 64]))
    cols = data.draw(st.sampled_from([bs, 2 * bs, 3 * bs]))
    rows = data.draw(st.integers(1, 6))
    mode = data.draw(st.sampled_from(MODES))
    x = data.draw(float_arrays(shape=(rows, cols), dtypes=(np.float32, np.float64)))
    # one int32 zero point per block, so that any run of blocks slices them (packed zero point
    # codes: whole bytes of blocks, test_side_info's chunkings)
    s = nq.Uniform(block_size=bs, rounding=mode, bits=data.draw(st.integers(1, 8)),
                   seed=data.draw(st.integers(0, 99)), zero_point_storage="int32")
    p = uniform.fit(s, x)
    whole = uniform.encode(s, p, x)
    assert_array_equal(whole, affine_ref.encode(s, p, x))
    chunks = data.draw(chunkings((rows,)))[0]
    out = np.empty_like(whole)
    for sl, start in iter_chunks((chunks, (cols,))):
        out[sl] = uniform.encode(s, p, x[sl], start=start, global_shape=x.shape)
        # per-chunk slices of the block parameters with group_offset
        g0 = start[0] * cols // bs
        g1 = g0 + x[sl].size // bs
        sub = {k: v[g0:g1] for k, v in p.items()}
        assert_array_equal(uniform.encode(s, sub, x[sl], start=start, global_shape=x.shape,
                                          group_offset=g0), whole[sl])
    assert_array_equal(out, whole)


# ----------------------------------------------------------------------------- calibration


@settings(max_examples=20)
@given(st.data())
def test_histogram_percentile_close_to_numpy_percentile(data):
    axis = data.draw(st.sampled_from([None, 0, 1]))
    n = data.draw(st.integers(50, 400))
    dist = data.draw(st.sampled_from(["normal", "uniform", "lognormal", "integers"]))
    rs = np.random.default_rng(data.draw(st.integers(0, 10**6)))
    x = {"normal": rs.standard_normal, "uniform": rs.random,
         "lognormal": lambda size: rs.lognormal(size=size),
         "integers": lambda size: rs.integers(-5, 6, size=size).astype(float)}[dist]((3, n))
    pl, ph = data.draw(st.sampled_from([(0.1, 99.9), (1.0, 99.0), (5.0, 95.0), (0.0, 100.0), (25.0, 50.0)]))
    bins = data.draw(st.sampled_from([16, 256, 2048]))
    s = nq.Uniform(range="percentile", percentile=(pl, ph), bins=bins, axis=axis, zero_point="float")
    st_ = uniform.partial(s, x)
    st_.update(uniform.partial_histogram(s, x, uniform.histogram_range[0](st_), uniform.histogram_range[1](st_)))
    rmin, rmax = uniform.clip_range(s, st_)
    groups = stats_ref.group_rows(s, x)
    for gi, v in enumerate(groups):
        v = np.sort(v)
        width = (v[-1] - v[0]) / bins
        for p, got in ((pl, rmin[gi]), (ph, rmax[gi])):
            exact = np.percentile(v, p)
            # both order statistics np.percentile interpolates are estimated within their bins
            tol = width * (1 + 1e-9) + 1e-12
            assert abs(got - exact) <= tol, (p, got, exact, width)
            assert v[0] <= got <= v[-1]


def test_histogram_percentile_within_one_bin_on_dense_data():
    rs = np.random.default_rng(1)
    x = rs.uniform(-3, 7, 200_000)
    for p in [(0.1, 99.9), (1.0, 99.0), (10.0, 90.0)]:
        s = nq.Uniform(range="percentile", percentile=p, bins=2048)
        st_ = uniform.partial(s, x)
        st_.update(uniform.partial_histogram(s, x, uniform.histogram_range[0](st_), uniform.histogram_range[1](st_)))
        rmin, rmax = uniform.clip_range(s, st_)
        width = (x.max() - x.min()) / 2048
        assert abs(rmin[0] - np.percentile(x, p[0])) <= width
        assert abs(rmax[0] - np.percentile(x, p[1])) <= width


def test_histogram_percentile_within_one_bin_of_np_percentile_on_sparse_data():
    x = np.zeros(1000)
    x[-1] = 100.0
    s = nq.Uniform(range="percentile", percentile=(0.1, 99.9))
    st_ = uniform.partial(s, x)
    st_.update(uniform.partial_histogram(s, x, uniform.histogram_range[0](st_), uniform.histogram_range[1](st_)))
    rmin, rmax = uniform.clip_range(s, st_)
    assert abs(rmax[0] - np.percentile(x, 99.9)) <= 100.0 / s.hist_bins


def test_percentile_exact_uses_np_percentile():
    rs = np.random.default_rng(2)
    x = rs.standard_normal((5, 300)).astype(np.float32)
    x[1, :7] = np.nan
    s = nq.Uniform(range="percentile_exact", percentile=(2.0, 97.0), axis=0, nan="propagate", zero_point="float")
    p = uniform.fit(s, x)
    lo = [np.percentile(r[~np.isnan(r)].astype(np.float64), 2.0) for r in x]
    hi = [np.percentile(r[~np.isnan(r)].astype(np.float64), 97.0) for r in x]
    lo32 = np.array(lo).astype(np.float32)
    lo32 = np.where(lo32 < np.array(lo), np.nextafter(lo32, np.float32(np.inf)), lo32)  # rounded up
    assert_array_equal(p["offset"], lo32)
    assert (p["offset"] >= np.array(lo)).all() and (p["offset"] - np.array(lo) < 1e-6).all()
    # nan="propagate" reserves code 255: 254 steps
    assert_array_equal(p["scale"], ((np.array(hi) - np.array(lo)) / 254).astype(np.float32))
    # a group of NaN only behaves like an empty group: range (0, 0), scale 1
    x[2] = np.nan
    p = uniform.fit(s, x)
    assert p["offset"][2] == 0 and p["scale"][2] == 1
    y = nq.dequantize(nq.quantize(x, s))
    assert np.isnan(y[2]).all() and np.isnan(y[1, :7]).all() and not np.isnan(y[1, 7:]).any()


@settings(max_examples=15)
@given(st.data())
def test_mse_search_finds_the_grid_minimum(data):
    bits = data.draw(st.integers(2, 8))
    conv = data.draw(st.sampled_from(["int", "float", "symmetric"]))
    rs = np.random.default_rng(data.draw(st.integers(0, 10**6)))
    x = rs.standard_normal((2, 500))
    x[:, :3] *= data.draw(st.sampled_from([1.0, 10.0, 100.0]))
    x[1] += data.draw(st.sampled_from([0.0, 3.0]))
    s = nq.Uniform(bits=bits, symmetric=conv == "symmetric", range="mse", axis=0, bins=128,
                   zero_point="float" if conv == "float" else "int")
    st_ = uniform.partial(s, x)
    lo, hi = uniform.histogram_range[0](st_), uniform.histogram_range[1](st_)
    st_.update(uniform.partial_histogram(s, x, lo, hi))
    rmin, rmax = uniform.clip_range(s, st_)
    qmin, qmax = s.qrange
    for g in range(2):
        counts = st_["counts"][g]
        cands = calibrate_ref.mse_candidates(lo[g], hi[g], conv == "symmetric", uniform.MSE_GRID)
        best = min(calibrate_ref.range_error(counts, lo[g], hi[g], a, b, qmin, qmax, conv) for a, b in cands)
        got = calibrate_ref.range_error(counts, lo[g], hi[g], rmin[g], rmax[g], qmin, qmax, conv)
        assert got <= best * (1 + 1e-9) + 1e-12
        assert any(np.isclose(rmin[g], a, rtol=1e-12, atol=1e-12) and np.isclose(rmax[g], b, rtol=1e-12, atol=1e-12)
                   for a, b in cands)


def _gaussian_with_outliers(outlier_sigma, seed=7, n=50_000):
    rs = np.random.default_rng(seed)
    x = rs.standard_normal(n).astype(np.float32)
    idx = rs.choice(x.size, n // 1000, replace=False)  # 0.1 % large outliers
    x[idx] = rs.choice([-1, 1], idx.size) * rs.uniform(outlier_sigma, 1.5 * outlier_sigma, idx.size)
    return x


def _mse_of(x, **kw):
    return nq.metrics(x, nq.dequantize(nq.quantize(x, nq.Uniform(**kw))))["mse"]


@pytest.mark.parametrize("outlier_sigma", [8, 12, 20])
@pytest.mark.parametrize("symmetric", [False, True])
def test_mse_range_beats_minmax_with_outliers(symmetric, outlier_sigma):
    x = _gaussian_with_outliers(outlier_sigma)
    minmax = _mse_of(x, bits=4, symmetric=symmetric)
    mse = _mse_of(x, bits=4, symmetric=symmetric, range="mse")
    assert mse < 0.6 * minmax, (mse, minmax)
    # at 8 bits the clipping search never loses to minmax either
    assert _mse_of(x, bits=8, symmetric=symmetric, range="mse") <= _mse_of(x, bits=8, symmetric=symmetric)


@pytest.mark.parametrize("bits, outlier_sigma", [(4, 45), (2, 45), (4, 200), (3, 100), (8, 1000)])
def test_mse_range_not_worse_than_minmax_with_very_large_outliers(bits, outlier_sigma):
    """With steps far wider than the bulk of the data, rounding error is scored level by
    level, not as step**2 / 12 (which would make clipping the outliers look cheap)."""
    x = _gaussian_with_outliers(outlier_sigma)
    assert _mse_of(x, bits=bits, range="mse") <= _mse_of(x, bits=bits)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=30)
@given(st.data())
def test_requantizing_dequantized_values_is_idempotent(data):
    """Values on the grid keep their codes in every rounding mode (snapping absorbs the rounding
    of the float32 scale and of its reciprocal)."""
    shape = data.draw(shapes(min_dims=1, max_dims=2, min_side=1, max_side=9))
    g = data.draw(st.sampled_from([g for g in GRANULARITIES if granularity_ok(g, len(shape))]))
    kw = data.draw(scheme_kwargs(granularity=g, ranges=("minmax",)))
    assume(kw.get("zero_point", "int") == "int")
    kw["nan"] = "raise"
    x = data.draw(float_arrays(shape=shape, dtypes=(np.float32, np.float64)))
    s = make_scheme(kw, x, data)
    p = uniform.fit(s, x)
    c = uniform.encode(s, p, x)
    y = uniform.decode(s, p, c, x.dtype)
    assert_array_equal(uniform.encode(s, p, y), c)


CONSTANTS = [7.0, -2.5, 49.0, 3.0, 0.1, -1e-3, 1e20, 123456.789, 1e-30, 0.0, -0.0]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
def test_constant_arrays_round_trip_exactly(mode, dtype):
    with np.errstate(over="ignore"):
        consts = np.array(CONSTANTS).astype(dtype)  # 1e20 is inf in float16: left out
    consts = consts[np.isfinite(consts) & ((consts == 0) | (np.abs(consts) >= 1e-37))]
    rows = np.repeat(consts[:, None], 6, axis=1)  # one constant per row (per-row groups)
    schemes = [dict(), dict(zero_point="float"), dict(symmetric=True), dict(bits=1),
               dict(bits=2, symmetric=True, narrow_range=True), dict(bits=4, signed=True),
               dict(bits=5, zero_point="float", signed=True)]
    for kw in schemes:
        for x, gran in [(rows, dict(axis=0)), (rows, dict(block_size=6)), (rows[2:3], dict()),
                        (rows[4:5].T.copy(), dict(axis=-1))]:
            s = nq.Uniform(rounding=mode, **kw, **gran)
            q = nq.quantize(x, s)
            y = nq.dequantize(q)
            assert y.dtype == x.dtype and np.isfinite(q.scale).all()
            exact = np.float32(x) == x
            # float64 constants: float32 side arrays give them back within one float32 ulp
            assert_array_equal(y[exact], x[exact], err_msg=f"{s}")
            assert (np.abs(y - x) <= np.spacing(np.abs(np.float32(x)))).all(), s


def test_constant_float32_exact_including_signs():
    for v in [np.float32(1) / np.float32(3), np.float32(-49), np.float32(2.0**-100), np.float32(1e38)]:
        x = np.full(10, v, np.float32)
        for mode in MODES:
            for s in [nq.Uniform(rounding=mode), nq.Uniform(rounding=mode, symmetric=True)]:
                assert_array_equal(nq.dequantize(nq.quantize(x, s)), x)


@pytest.mark.parametrize("mode", ["floor", "ceil", "stochastic", "nearest"])
def test_data_extremes_reach_the_end_codes(mode):
    """With range='minmax' the data's min and max are grid points: in float32, min -> code 0 and
    max -> top code (offset form), and with symmetric ranges the larger |x| -> +-qmax."""
    rs = np.random.default_rng(3)
    for trial in range(60):  # before the snapping fix, ~25 % of trials missed the end code
        x = (rs.standard_normal(40) * rs.uniform(0.01, 100) + rs.uniform(-5, 5)).astype(np.float32)
        q = nq.quantize(x, nq.Uniform(rounding=mode, zero_point="float", seed=trial))
        c = q.codes_unpacked
        assert c[np.argmin(x)] == 0 and c[np.argmax(x)] == 255, trial
        q = nq.quantize(x, nq.Uniform(rounding=mode, symmetric=True, narrow_range=True, seed=trial))
        c = q.codes_unpacked
        i = np.argmax(np.abs(x))
        assert c[i] == np.sign(x[i]) * 127, trial


def test_seed_000_floor_keeps_range_end_on_its_code():
    v = np.array([4.0, -4.0, 4.0 - 8 / 7, -4.0 + 8 / 7], np.float32)
    for mode, want in [("floor", [7, 0, 6, 1]), ("ceil", [7, 0, 6, 1])]:
        s = nq.Uniform(bits=3, range=(-4, 4), zero_point="float", rounding=mode)
        assert nq.quantize(v, s).codes_unpacked.tolist() == want


def test_nan_propagate_round_trip():
    x = np.array([[1.0, np.nan, 3.0, -2.0], [np.nan, np.nan, 0.5, 0.25]], np.float32)
    for s in [nq.Uniform(nan="propagate", bits=4), nq.Uniform(nan="propagate", symmetric=True, bits=3),
              nq.Uniform(nan="propagate", axis=0, zero_point="float", bits=2),
              nq.Uniform(nan="propagate", block_size=3, signed=True)]:
        q = nq.quantize(x, s)
        y = nq.dequantize(q)
        assert_array_equal(np.isnan(y), np.isnan(x))
        qmin, qmax = s.qrange
        cu = q.codes_unpacked
        assert (cu[np.isnan(x)] == qmax + 1).all()  # the reserved top code
        assert (cu[~np.isnan(x)] <= qmax).all() and (cu[~np.isnan(x)] >= qmin).all()
        m = nq.metrics(x, y)
        assert np.isfinite(m["mse"]) and m["max_abs"] <= float(q.scale.max())


def test_empty_and_zero_d_arrays():
    for shape in [(0,), (3, 0), (0, 4, 2)]:
        for s in [nq.Uniform(), nq.Uniform(axis=-1, symmetric=True), nq.Uniform(block_size=7),
                  nq.Uniform(rounding="stochastic", zero_point="float", bits=3)]:
            x = np.zeros(shape, np.float32)
            q = nq.quantize(x, s)
            assert q.codes.size == 0 and q.shape == shape
            y = nq.dequantize(q)
            assert y.shape == shape and y.dtype == np.float32
            assert q.bits_per_value == 0.0
    assert len(nq.quantize(np.zeros((3, 0)), nq.Uniform(axis=0)).scale) == 3
    assert len(nq.quantize(np.zeros((3, 0)), nq.Uniform(axis=1)).scale) == 0
    for v in [0.0, 2.5, -7.0]:
        for s in [nq.Uniform(), nq.Uniform(symmetric=True), nq.Uniform(zero_point="float", bits=1),
                  nq.Uniform(block_size=4), nq.Uniform(rounding="ceil")]:
            x = np.array(v)
            q = nq.quantize(x, s)
            assert q.shape == () and q.codes_unpacked.shape == ()
            y = nq.dequantize(q)
            assert y.shape == () and y == v



@pytest.mark.parametrize("shape", [(0,), (0, 3)])
def test_percentile_exact_per_channel_of_an_empty_array(shape):
    q = nq.quantize(np.zeros(shape, np.float32), nq.Uniform(bits=4, axis=0, range="percentile_exact"))
    assert q.shape == shape and q.codes.size == 0 and len(q.scale) == 0

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_dtypes_keep_their_dtype(dtype):
    x = np.linspace(-3, 5, 101).astype(dtype)
    for s in [nq.Uniform(), nq.Uniform(bits=4, symmetric=True), nq.Uniform(bits=3, zero_point="float")]:
        q = nq.quantize(x, s)
        assert q.dtype == dtype
        y = nq.dequantize(q)
        assert y.dtype == dtype
        assert nq.dequantize(q, dtype=np.float64).dtype == np.float64
        assert_error_bound(s, uniform.fit(s, x), x, y)


def test_non_contiguous_and_read_only_inputs_give_the_same_result():
    rs = np.random.default_rng(4)
    x = rs.standard_normal((6, 8, 5))
    for s in [nq.Uniform(axis=1, bits=5), nq.Uniform(axis=-1, rounding="stochastic"),
              nq.Uniform(block_size=7, symmetric=True), nq.Uniform(rounding="floor")]:
        want = nq.quantize(x, s)
        views = [x[:, ::-1], np.asfortranarray(x), apply_layout(x, "strided"), apply_layout(x, "readonly"),
                 apply_layout(x, "readonly_strided"), np.moveaxis(np.moveaxis(x, 0, 2).copy(), 2, 0)]
        for k, v in enumerate(views):
            q = nq.quantize(v, s)
            if k == 0:  # a reversed view holds other values: compare with its copy
                assert_array_equal(q.codes, nq.quantize(v.copy(), s).codes)
                continue
            assert_array_equal(q.codes, want.codes)
            assert_array_equal(nq.dequantize(q), nq.dequantize(want))
    ro = apply_layout(x, "readonly")
    nq.quantize(ro, nq.Uniform())
    assert not ro.flags.writeable  # inputs are never modified or unlocked
    codes = uniform.encode(nq.Uniform(), uniform.fit(nq.Uniform(), ro), ro)
    ro_codes = codes.copy()
    ro_codes.setflags(write=False)
    assert_array_equal(uniform.decode(nq.Uniform(), uniform.fit(nq.Uniform(), ro), ro_codes, np.float64),
                       nq.dequantize(nq.quantize(x, nq.Uniform())))


def test_dequantize_into_out():
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    q = nq.quantize(x, nq.Uniform(axis=0))
    out = np.empty((5, 4), np.float32)
    res = nq.dequantize(q, out=out)
    assert res is out
    assert_array_equal(out, nq.dequantize(q))
    out64 = np.empty((5, 4), np.float64)
    res = nq.dequantize(q, dtype=np.float64, out=out64)
    assert res is out64
    assert_array_equal(out64, nq.dequantize(q, dtype=np.float64))
    # an out of another dtype than the result still receives it
    out64[...] = np.nan
    assert nq.dequantize(q, out=out64) is out64
    assert_array_equal(out64, nq.dequantize(q).astype(np.float64))
    out16 = np.empty((5, 4), np.float16)
    assert nq.dequantize(q, out=out16) is out16
    assert_array_equal(out16, nq.dequantize(q).astype(np.float16))


# ----------------------------------------------------------------------------- QuantizedArray


def test_nbytes_and_bits_per_value_count_side_information():
    n = 1000
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    q = nq.quantize(x, nq.Uniform(bits=8, zero_point_storage="int32"))
    assert q.nbytes == n + 4 + 4  # codes + float32 scale + int32 zero point
    assert q.bits_per_value == (n + 4 + 4) * 8 / n
    q = nq.quantize(x, nq.Uniform(bits=8))
    assert q.nbytes == n + 4 + 1  # codes + float32 scale + the zero point as an 8-bit code
    assert q.bits_per_value == (n + 4 + 1) * 8 / n
    q = nq.quantize(x.reshape(10, 100), nq.Uniform(bits=4, axis=0, zero_point_storage="int32"))
    assert q.codes.nbytes == 500 and q.nbytes == 500 + 10 * 4 + 10 * 4
    q = nq.quantize(x.reshape(10, 100), nq.Uniform(bits=4, axis=0))
    assert q.codes.nbytes == 500 and q.nbytes == 500 + 10 * 4 + 10 * 1
    q = nq.quantize(x, nq.Uniform(bits=4, block_size=64))
    assert q.nbytes == 500 + 16 * 4 + 8  # 16 block zero points of 4 bits: 8 bytes
    q = nq.quantize(x, nq.Uniform(bits=3, block_size=64, zero_point="float"))
    assert q.codes.nbytes == 375 and q.scale.size == 16 and q.offset.size == 16
    assert q.nbytes == 375 + 16 * 4 + 16 * 4
    assert q.bits_per_value == (375 + 128) * 8 / n
    q = nq.quantize(x[:13], nq.Uniform(bits=1, zero_point_storage="int32"))
    assert q.codes.nbytes == 2 and q.nbytes == 10 and q.bits_per_value == 80 / 13
    q = nq.quantize(x[:7], nq.Uniform(bits=5, symmetric=True, axis=0, zero_point_storage="int32"))
    assert q.nbytes == 5 + 7 * 8
    q = nq.quantize(x[:7], nq.Uniform(bits=5, symmetric=True, axis=0))
    assert q.nbytes == 5 + 7 * 4 and set(q.side) == {"scale"}  # symmetric: no zero point stored
    for qq in (q, nq.quantize(x, nq.Uniform(bits=6))):
        assert qq.nbytes == qq.codes.nbytes + sum(a.nbytes for a in qq.side.values())
        assert qq.bits_per_value == 8 * qq.nbytes / qq.size


def test_codes_unpacked_dtype_and_values():
    x = np.linspace(-1, 1, 11)
    q = nq.quantize(x, nq.Uniform(bits=4, symmetric=True))
    cu = q.codes_unpacked
    assert cu.dtype == np.int8
    assert cu.tolist() == [-7, -6, -4, -3, -1, 0, 1, 3, 4, 6, 7]  # round(x * 7), ties to even
    q = nq.quantize(x, nq.Uniform(bits=8, symmetric=True))
    assert q.codes_unpacked.min() == -127 and q.codes_unpacked.max() == 127
    q = nq.quantize(x, nq.Uniform(bits=8, zero_point_storage="int32"))
    assert q.codes_unpacked.dtype == np.uint8
    zp = np.rint(1 / np.float64(q.scale[0]))  # qmin - lo / scale with lo = -1
    assert zp in (127, 128) and q.zero_point[0] == zp and q.codes_unpacked[5] == zp  # 0 is exact
    assert nq.dequantize(q)[5] == 0.0
    packed = nq.quantize(x, nq.Uniform(bits=8))  # the zero point as its code zero_point - qmin
    assert packed.zero_point_codes.tolist() == [zp] and packed.codes_unpacked.tolist() == q.codes_unpacked.tolist()
    q = nq.quantize(x, nq.Uniform(bits=8, signed=True, zero_point_storage="int32"))
    zp = np.rint(-128 + 1 / np.float64(q.scale[0]))
    assert zp in (-1, 0) and q.zero_point[0] == zp
    packed = nq.quantize(x, nq.Uniform(bits=8, signed=True))
    assert packed.zero_point_codes.tolist() == [zp + 128] and packed.codes_unpacked.tolist() == q.codes_unpacked.tolist()
    assert q.codes_unpacked.dtype == np.int8 and q.codes_unpacked[5] == zp
    assert q.codes_unpacked[0] == -128 and q.codes_unpacked[-1] == 127 - (zp == -1)
    assert q.scale.dtype == np.float32 and q.zero_point.dtype == np.int32
    assert "bits_per_value" in repr(q)
    with pytest.raises(AttributeError, match="absmax"):
        q.absmax


# ----------------------------------------------------------------------------- metrics


def test_metrics_on_known_vectors():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    m = nq.metrics(x, np.array([1.0, 2.0, 3.0, 5.0]))
    assert m["mse"] == 0.25 and m["rmse"] == 0.5 and m["max_abs"] == 1.0 and m["bias"] == 0.25
    assert m["sqnr_db"] == pytest.approx(10 * np.log10(30.0), rel=1e-15)  # 14.771212547...
    m = nq.metrics(x, np.array([0.0, 2.0, 3.0, 4.0]))
    assert m == {"mse": 0.25, "rmse": 0.5, "max_abs": 1.0, "sqnr_db": pytest.approx(14.771212547196624),
                 "bias": -0.25}
    m = nq.metrics(np.array([3.0, -4.0]), np.array([0.0, 0.0]))
    assert m["mse"] == 12.5 and m["rmse"] == 12.5 ** 0.5 and m["max_abs"] == 4.0
    assert m["sqnr_db"] == 0.0 and m["bias"] == 0.5
    m = nq.metrics(x, x)
    assert m["mse"] == 0 and m["sqnr_db"] == float("inf") and m["bias"] == 0
    m = nq.metrics(np.zeros(3), np.ones(3))
    assert m["sqnr_db"] == float("-inf") and m["mse"] == 1.0
    m = nq.metrics(np.array([1.0, np.nan, 2.0]), np.array([1.5, np.nan, 2.0]))
    assert m["mse"] == 0.125 and m["bias"] == 0.25 and m["max_abs"] == 0.5
    m = nq.metrics(np.zeros((0, 3)), np.zeros((0, 3)))
    assert m["mse"] == 0.0 and m["sqnr_db"] == float("inf")
    rs = np.random.default_rng(0)
    a, b = rs.standard_normal(100), rs.standard_normal(100)
    got, want = nq.metrics(a, b), stats_ref.metrics(a, b)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12)
    assert all(isinstance(v, float) for v in got.values())


# ----------------------------------------------------------------------------- scheme JSON


@settings(max_examples=60)
@given(st.data())
def test_scheme_json_round_trip(data):
    g = data.draw(st.sampled_from(GRANULARITIES))
    kw = data.draw(scheme_kwargs(granularity=g, ranges=("minmax", "percentile", "percentile_exact", "mse",
                                                        "explicit")))
    if kw["range"] == "explicit":
        a = data.draw(st.floats(-1e6, 1e6))
        kw["range"] = (a, a + data.draw(st.floats(0, 1e6)))
    if kw.get("block_size") and kw["range"] in ("percentile", "percentile_exact", "mse"):
        kw["range"] = "minmax"
    kw["bins"] = data.draw(st.integers(16, 5000))
    kw["percentile"] = data.draw(st.sampled_from([(0.1, 99.9), (0, 100), (2.5, 50.0)]))
    s = nq.Uniform(**kw)
    text = s.to_json()
    back = nq.scheme_from_json(text)
    assert back == s and type(back) is nq.Uniform
    assert back.to_json() == text
    assert nq.scheme_from_json(s.to_dict()) == s
    d = s.to_dict()
    assert d["type"] == "uniform" and d["format_version"] == 1
    assert hash(back) == hash(s)
    # a dict without format_version (older writers) still reads
    d.pop("format_version")
    assert nq.scheme_from_json(d) == s
