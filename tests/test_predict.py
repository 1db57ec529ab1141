"""Prediction kernels of the lossless stage (nquant/kernels/predict.py) against the NumPy reference:
every predictor on uint8 and uint16 codes of any values (wrap-around at both ends included),
exactly invertible, and the 3-D views of N-d chunks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nquant.kernels import predict
from tests.reference import predict as ref

FLAGS = [(True, True), (True, False), (False, True), (False, False)]


@st.composite
def codes3(draw):
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    shape = draw(hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=9))
    top = int(np.iinfo(dtype).max)
    # extremes next to each other give residuals that wrap
    elements = st.one_of(st.integers(0, top), st.sampled_from([0, 1, top - 1, top]))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=60, deadline=None)
@given(codes3(), st.sampled_from(FLAGS))
def test_predict_matches_reference_and_inverts(q, flags):
    left, up = flags
    planes = np.full((q.dtype.itemsize, q.size), 7, np.uint8)
    predict.encode(q, left, up, planes)
    np.testing.assert_array_equal(planes, ref.encode(q, left, up))
    out = np.zeros_like(q)
    predict.decode(planes, left, up, out)
    np.testing.assert_array_equal(out, q)
    np.testing.assert_array_equal(ref.decode(planes, left, up, q.shape, q.dtype), q)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_predict_smooth_codes_give_small_residuals(dtype):
    i, j = np.meshgrid(np.arange(20), np.arange(30), indexing="ij")
    q = (3 * i + 2 * j + 5).astype(dtype)[None]  # a plane: Lorenzo residuals 0 inside
    planes = np.empty((q.dtype.itemsize, q.size), np.uint8)
    predict.encode(q, True, True, planes)
    z = planes[0].reshape(20, 30)
    assert (z[1:, 1:] == 0).all()
    assert z[0, 0] == 10 and (z[0, 1:] == 4).all() and (z[1:, 0] == 6).all()  # zigzag of 5, 2, 3
    if dtype == np.uint16:
        assert (planes[1] == 0).all()
    # a descending row: residual -1 everywhere is zigzag 1, wrapping at 0
    down = np.array([[[0, 255 if dtype == np.uint8 else 65535, 65534 if dtype == np.uint16 else 254]]], dtype)
    planes = np.empty((down.dtype.itemsize, 3), np.uint8)
    predict.encode(down, True, False, planes)
    assert planes[0].tolist() == [0, 1, 1]


@pytest.mark.parametrize("shape,kind,axis,want", [
    ((4, 5, 6), "lorenzo", -1, ((4, 5, 6), True, True)),
    ((5, 6), "lorenzo", -1, ((1, 5, 6), True, True)),
    ((6,), "lorenzo", -1, ((1, 1, 6), True, False)),
    ((4, 5, 6), "delta", -1, ((20, 1, 6), True, False)),
    ((4, 5, 6), "delta", 1, ((4, 5, 6), False, True)),
    ((4, 5, 6), "delta", 0, ((1, 4, 30), False, True)),
    ((4, 5, 6), "none", -1, ((1, 1, 120), False, False)),
    ((), "lorenzo", -1, ((1, 1, 1), False, False)),
    ((3, 0), "lorenzo", -1, ((0, 3, 0), True, True)),
])
def test_predict_views(shape, kind, axis, want):
    assert predict.view3(shape, kind, axis) == want


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2).flatmap(lambda k: hnp.arrays(np.uint8, st.tuples(st.just(k), st.integers(0, 300)))))
def test_predict_entropy_bits_matches_reference(planes):
    assert predict.entropy_bits(planes) == pytest.approx(ref.entropy_bits(planes), rel=1e-12, abs=1e-9)


def test_predict_entropy_bits_values():
    assert predict.entropy_bits(np.zeros((2, 64), np.uint8)) == 0.0
    assert predict.entropy_bits(np.arange(256, dtype=np.uint8)[None]) == pytest.approx(256 * 8.0)
    assert predict.entropy_bits(np.array([[0, 1, 0, 1], [5, 5, 5, 5]], np.uint8)) == pytest.approx(4.0)
