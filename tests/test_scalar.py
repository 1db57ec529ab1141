"""The encoder's scalar helpers (``nquant.kernels.scalar``: snapping, rounding a code, clipping it)
against ``tests/reference/scalar.py``; the stream and the rounding modes have their own tests
(``test_rng.py``, ``test_rounding.py``)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_array_equal

from nquant.kernels import rng, scalar
from nquant.kernels.rounding import MODES
from tests.reference import scalar as scalar_ref

HELPERS = scalar.cpu_helpers()


@st.composite
def code_space(draw):
    """Float32/float64 values in code space: near integers (within a few SNAP), ties, random."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 30))
    ints = draw(hnp.arrays(np.int64, n, elements=st.integers(-300, 300)))
    rel = draw(hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.5, -0.5, 0.25, 1e-7, -1e-7,
                                                                   2.0**-21, -(2.0**-21), 3e-6, -3e-6])))
    t = (ints + rel * np.maximum(np.abs(ints), 1)).astype(dtype)
    return t


@settings(max_examples=40, deadline=None)
@given(code_space(), st.sampled_from(sorted(MODES)), st.integers(0, 2**64 - 1))
def test_scalar_round_code_matches_reference(t, mode, seed):
    key = rng.stream_key(np.uint64(seed))
    got = np.array([HELPERS["round_code"](v, MODES[mode], np.uint64(key), i) for i, v in enumerate(t)],
                   dtype=t.dtype)
    assert_array_equal(got, scalar_ref.round_code(t, mode, seed, np.arange(t.size)))


@settings(max_examples=40, deadline=None)
@given(code_space())
def test_scalar_snap_matches_reference(t):
    got = np.array([HELPERS["snap"](v) for v in t], dtype=t.dtype)
    assert_array_equal(got, scalar_ref.snap(t))


@settings(max_examples=40, deadline=None)
@given(code_space(), st.integers(0, 255))
def test_scalar_clip_code_matches_reference(t, hi):
    t = np.rint(t)
    got = np.array([HELPERS["clip_code"](v, t.dtype.type(hi)) for v in t], dtype=np.uint8)
    assert_array_equal(got, scalar_ref.clip_code(t, hi))


@settings(max_examples=30, deadline=None)
@given(code_space(), st.integers(0, 65535))
def test_scalar_clip_code16_matches_reference(t, hi):
    t = np.rint(t * 200)  # codes up to 60000 and below 0
    got = np.array([HELPERS["clip_code16"](v, t.dtype.type(hi)) for v in t], dtype=np.uint16)
    assert_array_equal(got, scalar_ref.clip_code16(t, hi))


def test_decoding_uint16_codes_stays_in_float32():
    """``code_value``: uint16 codes minus a float32 zero point stay float32 (not float64)."""
    from nquant.kernels import affine

    codes = np.random.default_rng(0).integers(0, 65536, (4, 500)).astype(np.uint16)
    s, o, c0 = np.float32([1.2345e-4]), np.float32([-3.7]), np.float32([31234])
    out = np.empty(codes.shape, np.float32)
    affine.dequantize_affine(codes, np.zeros(4, np.int64), 0, s, o, c0, -1, out)
    assert_array_equal(out, (codes.astype(np.float32) - c0[0]) * s[0] + o[0])
