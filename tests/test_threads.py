"""Thread policy: BLAS limited to one thread while nquant runs its own GEMM threads (threadpoolctl)."""

import threading

import numpy as np
from threadpoolctl import ThreadpoolController

from nquant import _threads
from nquant.kmeans import assign
from tests.helpers import blobs


def _blas_threads():
    return [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers]


def test_single_blas_limits_blas_and_restores_it():
    before = _blas_threads()
    X = blobs(3000, 40, 4, seed=1)
    labels, d2 = assign(X, X[:4])
    with _threads.single_blas():
        assert all(n == 1 for n in _blas_threads())
        with _threads.single_blas():  # nested: still one thread, and the outer limit survives
            assert all(n == 1 for n in _blas_threads())
        assert all(n == 1 for n in _blas_threads())
        got = assign(X, X[:4])
        np.testing.assert_array_equal(got[0], labels)
        np.testing.assert_array_equal(got[1], d2)
    assert _blas_threads() == before


class _Controller:
    """Records what :func:`nquant._threads.single_blas` asks of threadpoolctl."""

    def __init__(self):
        self.calls = []

    def limit(self, limits, user_api):
        self.calls.append(("limit", limits, user_api))
        controller = self

        class Limiter:
            def restore_original_limits(self):
                controller.calls.append(("restore",))

        return Limiter()


def test_overlapping_holders_limit_once_and_restore_once(monkeypatch):
    """Holders that enter and leave out of order (Dask tasks) set the limit once and restore it once,
    after the last one leaves: no holder restores the original count under another."""
    fake = _Controller()
    monkeypatch.setitem(_threads._BLAS, "controller", fake)
    entered, release_first, first_left = threading.Event(), threading.Event(), threading.Event()

    def first():
        with _threads.single_blas():
            entered.set()
            release_first.wait(10)
        first_left.set()

    t = threading.Thread(target=first)
    t.start()
    assert entered.wait(10)
    with _threads.single_blas():
        release_first.set()
        assert first_left.wait(10)  # the first holder has left; this one still holds the limit
        assert fake.calls == [("limit", 1, "blas")]
    t.join(10)
    assert fake.calls == [("limit", 1, "blas"), ("restore",)]
    assert _threads._BLAS["holders"] == 0 and _threads._BLAS["limiter"] is None
    with _threads.single_blas():  # the next holder limits again
        pass
    assert fake.calls[2:] == [("limit", 1, "blas"), ("restore",)]


def test_blas_limit_sets_and_restores_a_count():
    before = _blas_threads()
    with _threads.blas_limit(1):
        assert all(n == 1 for n in _blas_threads())
    assert _blas_threads() == before
