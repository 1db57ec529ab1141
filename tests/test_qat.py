"""Fake quantization: bit-identical to quantize-then-dequantize, STE mask, params, adapters."""

import json

import dask.array as da
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from strategies import apply_layout, float_arrays, layouts

import nquant as nq
from nquant import observers, qat
from nquant.errors import InputError, SchemeError
from nquant.families import uniform
from tests.reference import affine as affine_ref
from tests.reference import fakequant as fakequant_ref
from tests.reference import scalar as scalar_ref


def bits_equal(a, b):
    """Same values bit for bit (NaN included)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    view = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    assert_array_equal(a.view(view), b.view(view))


def code_space(x, params):
    """The rounded, unclipped codes ``t`` and the code range, in NumPy (per group)."""
    scheme = params.scheme
    dtype = uniform.compute_dtype(x.dtype)
    _, inv, offset, c0 = uniform.kernel_params(scheme, params.side, dtype)
    groups = affine_ref.group_ids(scheme, x.shape)
    xv = np.asarray(x, dtype)
    return xv, groups, inv, offset, c0, uniform.code_limits(scheme)[0]


@st.composite
def schemes(draw, ndim):
    kw = {"bits": draw(st.integers(1, 8)), "symmetric": draw(st.booleans()),
          "rounding": draw(st.sampled_from(["nearest", "nearest", "nearest_away", "floor", "ceil",
                                            "stochastic"])),
          "seed": draw(st.integers(0, 3)), "narrow_range": draw(st.booleans()),
          "signed": draw(st.sampled_from([None, True, False]))}
    if kw["symmetric"]:
        kw["bits"] = max(kw["bits"], 2)
    else:
        kw["zero_point"] = draw(st.sampled_from(["int", "float"]))
    gran = draw(st.sampled_from(["tensor", "axis0", "axis-1", "block"] if ndim else ["tensor", "block"]))
    if gran == "axis0":
        kw["axis"] = 0
    elif gran == "axis-1":
        kw["axis"] = -1
    elif gran == "block":
        kw["block_size"] = draw(st.sampled_from([1, 5, 16]))
    if "block_size" not in kw:
        kw["range"] = draw(st.sampled_from(["minmax", "minmax", "percentile", "mse"]))
    try:
        return nq.Uniform(**kw)
    except SchemeError:
        assume(False)


@settings(max_examples=20)
@given(st.data())
def test_fake_quantize_equals_quantize_dequantize(data):
    x = data.draw(float_arrays(max_dims=3, max_side=9))
    scheme = data.draw(schemes(x.ndim))
    x = apply_layout(x, data.draw(layouts()))
    y, mask = qat.fake_quantize(x, scheme)
    expected = nq.dequantize(nq.quantize(x, scheme))
    bits_equal(y, expected)
    assert mask.dtype == np.bool_ and mask.shape == x.shape
    # the mask: inside the clip range <=> the unclipped rounded value is a valid code
    params = qat.as_params(scheme, x)
    codes = nq.quantize(x, scheme).codes_unpacked
    if scheme.rounding != "stochastic" and x.size:
        xv, g, inv, off, c0, hi = code_space(x, params)
        rounding = {"nearest": np.rint, "floor": np.floor, "ceil": np.ceil,
                    "nearest_away": lambda v: np.trunc(v + np.copysign(np.asarray(0.5, v.dtype), v))}
        if scheme.rounding != "nearest_away":
            t = (xv - off[g]) * inv[g]
            if scheme.rounding != "nearest":  # the encoder snaps near-integers before floor / ceil
                t = scalar_ref.snap(t)
            t = rounding[scheme.rounding](t) + c0[g]
            assert_array_equal(mask, (t >= 0) & (t <= hi))
    # where the mask is set, the code was not clipped; elsewhere it sits on a range end
    qmin, qmax = scheme.qrange
    c = codes.astype(np.int64)
    assert np.all((c[~mask] == qmin) | (c[~mask] == qmax))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("kw", [{}, {"axis": 0}, {"axis": -1}, {"axis": 1}, {"block_size": 7},
                                {"bits": 4, "symmetric": True, "axis": 0}, {"zero_point": "float"},
                                {"rounding": "stochastic", "seed": 3}, {"bits": 3, "signed": True}])
def test_fake_quantize_grid(dtype, kw):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 6, 7)) * 3).astype(dtype)
    scheme = nq.Uniform(**kw)
    y, mask = qat.fake_quantize(x, scheme)
    bits_equal(y, nq.dequantize(nq.quantize(x, scheme)))
    assert mask.all()  # fitted to x: nothing is clipped


def test_fakequant_numpy_reference_ties_and_clipping():
    scheme = nq.Uniform(bits=8, symmetric=False, range=(-1.0, 1.0))
    params = qat.as_params(scheme, np.zeros(1, np.float32))
    s = params.scale[0]
    z = int(params.zero_point[0])
    # exact ties of x / s (ties go to even), values far outside the range, zero
    k = np.arange(-140, 141)
    x = np.concatenate([(k + 0.5) * s, k * s, [-5.0, 5.0, 0.0, -0.0]]).astype(np.float32)
    y, mask = qat.fake_quantize(x, params)
    ry, rmask = fakequant_ref.fake_quantize(x, s, z, *scheme.qrange)
    bits_equal(y, ry)
    assert_array_equal(mask, rmask)
    assert not mask[-4] and not mask[-3] and mask[-2]
    bits_equal(y, nq.dequantize(params.quantize(x)))


def test_nan_propagate_and_errors():
    x = np.array([1.0, np.nan, -3.0, 0.25], np.float32)
    s = nq.Uniform(bits=4, nan="propagate")
    y, mask = qat.fake_quantize(x, s)
    bits_equal(y, nq.dequantize(nq.quantize(x, s)))
    assert np.isnan(y[1]) and not mask[1] and mask[[0, 2, 3]].all()
    x2 = np.array([[1.0, np.nan, 2.0], [np.nan, -1.0, 0.5]], np.float32)
    s2 = nq.Uniform(bits=3, nan="propagate", axis=-1)
    y2, mask2 = qat.fake_quantize(x2, s2)
    bits_equal(y2, nq.dequantize(nq.quantize(x2, s2)))
    assert_array_equal(mask2, ~np.isnan(x2))
    with pytest.raises(InputError, match="NaN"):
        qat.fake_quantize(x, nq.Uniform())
    params = qat.as_params(nq.Uniform(), np.array([1.0, 2.0], np.float32))
    with pytest.raises(InputError, match="non-finite"):
        qat.fake_quantize(np.array([1.0, np.inf], np.float32), params)
    with pytest.raises(InputError, match="in-memory"):
        qat.fake_quantize(da.zeros(4), params)
    with pytest.raises(InputError, match="group"):
        qat.fake_quantize(np.zeros((3, 4), np.float32),
                             qat.as_params(nq.Uniform(axis=0), np.zeros((2, 4))))
    with pytest.raises(InputError, match="dtype"):
        qat.fake_quantize(np.zeros(3, np.int8), params)
    with pytest.raises(SchemeError, match="Uniform"):
        qat.fake_quantize(np.zeros(3, np.float32), nq.schemes.Scheme())
    with pytest.raises(SchemeError, match="scheme_or_params"):
        qat.fake_quantize(np.zeros(3, np.float32), 8)


def test_params_dict_roundtrip_and_observer_params():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 4)).astype(np.float32)
    o = observers.PercentileObserver(axis=1, percentile=(5, 95)).observe(x)
    p = o.compute_params(nq.Uniform(bits=6))
    d = json.loads(json.dumps(p.to_dict()))
    p2 = qat.QParams.from_dict(d)
    y1, m1 = qat.fake_quantize(x, p)
    y2, m2 = qat.fake_quantize(x, d)
    bits_equal(y1, y2)
    assert_array_equal(m1, m2)
    bits_equal(y1, nq.dequantize(p2.quantize(x)))
    assert not m1.all()  # percentiles clip the tails
    # Dask quantize with the same params gives the same codes
    qd = p.quantize(da.from_array(x, chunks=(80, 3), name=False))
    assert_array_equal(np.asarray(qd.codes_unpacked), p.quantize(x).codes_unpacked)
    with pytest.raises(InputError, match="scheme"):
        qat.QParams.from_dict({"scale": [1.0]})
    with pytest.raises(InputError, match="scale"):
        qat.QParams(nq.Uniform(), [0.0], [0])
    with pytest.raises(InputError, match="zero_point"):
        qat.QParams(nq.Uniform(), [1.0], [300])
    with pytest.raises(InputError, match="offset"):
        qat.QParams(nq.Uniform(zero_point="float"), [1.0])


def test_preallocated_outputs_and_readonly_input():
    x = np.linspace(-2, 2, 24, dtype=np.float32).reshape(4, 6)
    x.setflags(write=False)
    out = np.empty_like(x)
    m = np.empty(x.shape, np.bool_)
    y, mask = qat.fake_quantize(x, nq.Uniform(bits=3), out=out, mask_out=m)
    assert y is out and mask is m
    bits_equal(y, nq.dequantize(nq.quantize(x, nq.Uniform(bits=3))))
    with pytest.raises(InputError, match="out"):
        qat.fake_quantize(x, nq.Uniform(), out=np.empty((2, 2), np.float32))


def test_empty_and_scalar():
    y, m = qat.fake_quantize(np.zeros((0, 3), np.float32), nq.Uniform())
    assert y.shape == (0, 3) and m.shape == (0, 3)
    y, m = qat.fake_quantize(np.float64(0.3), nq.Uniform())
    bits_equal(y, nq.dequantize(nq.quantize(np.float64(0.3), nq.Uniform())))


def test_torch_adapter():
    torch = pytest.importorskip("torch")
    x = torch.linspace(-3, 3, 50, requires_grad=True)
    params = qat.as_params(nq.Uniform(bits=4, range=(-1.0, 1.0)), np.zeros(1, np.float32))
    y = qat.torch_fake_quantize(x, params)
    ry, rm = qat.fake_quantize(x.detach().numpy(), params)
    assert_array_equal(y.detach().numpy(), ry)
    y.sum().backward()
    assert_array_equal(x.grad.numpy(), rm.astype(np.float32))


def test_jax_adapter():
    jax = pytest.importorskip("jax")
    params = qat.as_params(nq.Uniform(bits=4, range=(-1.0, 1.0)), np.zeros(1, np.float32))
    x = jax.numpy.linspace(-3, 3, 50, dtype=jax.numpy.float32)
    y = qat.jax_fake_quantize(x, params)
    ry, rm = qat.fake_quantize(np.asarray(x), params)
    assert_array_equal(np.asarray(y), ry)
    g = jax.grad(lambda v: qat.jax_fake_quantize(v, params).sum())(x)
    assert_array_equal(np.asarray(g), rm.astype(np.float32))


def test_adapters_explain_missing_frameworks():
    for name, fn in (("torch", qat.torch_fake_quantize), ("jax", qat.jax_fake_quantize)):
        try:
            __import__(name)
        except ImportError:
            with pytest.raises(ImportError, match=f"{name} is not installed"):
                fn(np.zeros(3, np.float32), nq.Uniform())
