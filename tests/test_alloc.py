"""Output allocation: the first-touch kernel against a NumPy reference, and ``_alloc.empty``."""

import mmap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nquant as nq
from nquant import _alloc
from nquant.kernels.memory import first_touch
from tests.reference import memory as memory_ref


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 5000), page=st.integers(1, 700), first=st.integers(0, 699),
       seed=st.integers(0, 2**32 - 1))
def test_memory_first_touch_matches_reference(n, page, first, seed):
    first %= page
    a = np.random.default_rng(seed).integers(1, 256, n, dtype=np.uint8)
    expected = memory_ref.first_touch(a, page, first)
    first_touch(a, page, first)
    np.testing.assert_array_equal(a, expected)


@pytest.mark.parametrize("shape, dtype", [((), np.float32), ((0,), np.uint8), ((3, 5), np.float64),
                                          ((1 << 20,), np.float32), ((3, 1 << 21), np.uint8)])
def test_empty_shape_dtype_and_writable(shape, dtype):
    a = _alloc.empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    a[...] = 7
    assert (a == 7).all()


@pytest.mark.parametrize("limit", [0, 1 << 30], ids=["unpooled", "pooled"])
def test_new_large_arrays_are_prefaulted_unless_asked_not_to(limit, monkeypatch):
    P = _alloc.PREFAULT_BYTES
    prefaulted = []
    monkeypatch.setattr(_alloc, "POOL", _alloc.BufferPool(limit))
    monkeypatch.setattr(_alloc, "prefault", lambda a: prefaulted.append(a.nbytes))
    _alloc.empty(P - 1, np.uint8)
    _alloc.empty(P // 8, np.float64, fault_in=False)
    assert prefaulted == []
    a = _alloc.empty(P // 4, np.float32)  # pooled: the buffer released just above
    assert prefaulted == ([] if limit else [P])
    b = _alloc.empty((2, P // 2), np.uint8)  # a still lives: a new buffer
    assert prefaulted == ([P] if limit else [P, P])
    assert not np.shares_memory(a, b)


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


SIZE = _alloc.PREFAULT_BYTES


@pytest.fixture
def pool(monkeypatch):
    p = _alloc.BufferPool(16 * SIZE)
    monkeypatch.setattr(_alloc, "POOL", p)
    return p


def test_buffer_returns_to_the_pool_only_when_the_last_view_is_gone(pool):
    a = _alloc.empty(SIZE, np.uint8)
    addr_a = a.ctypes.data
    view = a[10:].view(np.uint16)
    del a
    assert pool.nbytes == 0
    b = _alloc.empty(SIZE // 4, np.float32)  # a is still in use by its view
    assert b.ctypes.data != addr_a
    del view
    assert pool.nbytes == SIZE
    c = _alloc.empty((2, SIZE // 16), np.float64)  # same byte size, other dtype and shape
    assert c.ctypes.data == addr_a and c.shape == (2, SIZE // 16) and c.dtype == np.float64
    c[...] = 1.5
    assert (c == 1.5).all() and not np.shares_memory(b, c)


def test_pool_matches_exact_sizes_and_keeps_the_newest_within_its_limit(pool):
    arrays = [_alloc.empty(SIZE, np.uint8) for _ in range(18)]
    addrs = [a.ctypes.data for a in arrays]
    while arrays:
        arrays.pop(0)  # released oldest first
    assert pool.nbytes == 16 * SIZE  # the two oldest were dropped
    odd = _alloc.empty(SIZE + 1, np.uint8)
    assert pool.nbytes == 16 * SIZE and odd.ctypes.data not in addrs[2:]
    assert _alloc.empty(SIZE, np.uint8).ctypes.data == addrs[-1]


def test_a_zero_limit_turns_the_pool_off(monkeypatch):
    monkeypatch.setattr(_alloc, "POOL", _alloc.BufferPool(0))
    a = _alloc.empty(SIZE, np.uint8)
    assert a.base is None
    del a
    assert _alloc.POOL.nbytes == 0


def test_live_arrays_never_share_a_buffer_across_threads(pool):
    def task(i):
        a = _alloc.empty(SIZE // 4, np.float32)
        a[...] = i
        kept = _alloc.empty(SIZE, np.uint8) if i % 3 == 0 else None
        assert (a == i).all()
        return kept

    with ThreadPoolExecutor(4) as ex:
        kept = [k for k in ex.map(task, range(60)) if k is not None]
    starts = sorted(k.ctypes.data for k in kept)
    assert all(hi - lo >= SIZE for lo, hi in zip(starts, starts[1:]))


@pytest.mark.parametrize("scheme", [nq.Uniform(bits=8), nq.Uniform(bits=4, block_size=64),
                                    nq.NF4(block_size=64)], ids=["uniform8", "uniform4-block", "nf4"])
def test_reused_garbage_buffers_give_the_results_of_fresh_ones(scheme, pool, monkeypatch):
    """Codes, packed codes and decoded values written into reused buffers full of junk."""
    n = 2 * SIZE
    x = np.random.default_rng(0).standard_normal(n, np.float32)
    junk = [_alloc.empty(nbytes, np.uint8) for nbytes in (n, n // 2, 4 * n)]
    for j in junk:
        j[...] = 0xA5
    del junk, j
    taken = []
    take = pool.take
    monkeypatch.setattr(pool, "take", lambda nbytes: taken.append(take(nbytes)) or taken[-1])
    pooled = nq.quantize(x, scheme)
    pooled_values = nq.dequantize(pooled)
    assert sum(t is not None for t in taken) >= 2  # codes (or packed codes) and values
    monkeypatch.setattr(_alloc, "POOL", _alloc.BufferPool(0))
    fresh = nq.quantize(x, scheme)
    np.testing.assert_array_equal(np.asarray(pooled.codes), np.asarray(fresh.codes))
    np.testing.assert_array_equal(pooled_values, nq.dequantize(fresh))


def test_pool_limit_from_the_environment():
    assert _alloc.pool_limit({}) == 256 << 20
    assert _alloc.pool_limit({"NQUANT_BUFFER_POOL_BYTES": "0"}) == 0
    for bad in ("-1", "lots", "1.5"):
        with pytest.raises(ValueError, match=f"NQUANT_BUFFER_POOL_BYTES.*'{bad}'"):
            _alloc.pool_limit({"NQUANT_BUFFER_POOL_BYTES": bad})
