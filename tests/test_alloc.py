"""Output allocation: the first-touch kernel against a NumPy reference, and ``_alloc.empty``."""

import mmap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nquant import _alloc
from nquant.kernels.memory import first_touch


def first_touch_reference(a, page):
    out = a.copy()
    out[::page] = 0
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 5000), page=st.integers(1, 700), seed=st.integers(0, 2**32 - 1))
def test_first_touch_matches_reference(n, page, seed):
    a = np.random.default_rng(seed).integers(1, 256, n, dtype=np.uint8)
    expected = first_touch_reference(a, page)
    first_touch(a, page)
    np.testing.assert_array_equal(a, expected)


@pytest.mark.parametrize("shape, dtype", [((), np.float32), ((0,), np.uint8), ((3, 5), np.float64),
                                          ((1 << 20,), np.float32), ((3, 1 << 21), np.uint8)])
def test_empty_shape_dtype_and_writable(shape, dtype):
    a = _alloc.empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    a[...] = 7
    assert (a == 7).all()


def test_only_large_arrays_are_prefaulted(monkeypatch):
    touched = []
    monkeypatch.setattr(_alloc, "first_touch", lambda a, page: touched.append((a.size, page)))
    _alloc.empty(_alloc.PREFAULT_BYTES - 1, np.uint8)
    assert touched == []
    _alloc.empty(_alloc.PREFAULT_BYTES // 4, np.float32)
    assert touched == [(_alloc.PREFAULT_BYTES, mmap.PAGESIZE)]
