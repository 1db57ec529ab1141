"""Output allocation: the first-touch kernel against a NumPy reference, and ``_alloc.empty``."""

import mmap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nquant import _alloc
from nquant.kernels.memory import first_touch


def first_touch_reference(a, page, first):
    out = a.copy()
    out[:1] = 0
    out[first::page] = 0
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 5000), page=st.integers(1, 700), first=st.integers(0, 699),
       seed=st.integers(0, 2**32 - 1))
def test_first_touch_matches_reference(n, page, first, seed):
    first %= page
    a = np.random.default_rng(seed).integers(1, 256, n, dtype=np.uint8)
    expected = first_touch_reference(a, page, first)
    first_touch(a, page, first)
    np.testing.assert_array_equal(a, expected)


@pytest.mark.parametrize("shape, dtype", [((), np.float32), ((0,), np.uint8), ((3, 5), np.float64),
                                          ((1 << 20,), np.float32), ((3, 1 << 21), np.uint8)])
def test_empty_shape_dtype_and_writable(shape, dtype):
    a = _alloc.empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    a[...] = 7
    assert (a == 7).all()


def test_only_large_arrays_are_prefaulted(monkeypatch):
    prefaulted = []
    monkeypatch.setattr(_alloc, "prefault", lambda a: prefaulted.append(a.nbytes))
    _alloc.empty(_alloc.PREFAULT_BYTES - 1, np.uint8)
    assert prefaulted == []
    _alloc.empty(_alloc.PREFAULT_BYTES // 4, np.float32)
    assert prefaulted == [_alloc.PREFAULT_BYTES]


@pytest.mark.parametrize("huge", [0, 1 << 16])
@settings(max_examples=30, deadline=None)
@given(start=st.integers(0, 1 << 17), n=st.integers(0, 1 << 18))
def test_prefault_writes_into_every_page(huge, start, n):
    """A zero lands in every aligned huge page inside the array and in every base
    page outside those; nothing else changes."""
    page = mmap.PAGESIZE
    buf = np.ones(start + n, np.uint8)
    a = buf[start:]
    _alloc.prefault(a, huge)
    assert set(np.unique(a)) <= {0, 1}
    addr = a.ctypes.data
    zero = addr + np.flatnonzero(a == 0)
    inner = (-(-addr // huge) * huge, (addr + n) // huge * huge) if huge else (0, 0)
    for p in range(addr // page * page, addr + n if n else 0, page):  # pages that a overlaps
        if inner[0] <= p and p + page <= inner[1]:
            u = p // huge * huge
            assert ((zero >= u) & (zero < u + huge)).any(), f"huge page at {u} untouched"
        else:
            assert ((zero >= p) & (zero < p + page)).any(), f"page at {p} untouched"
