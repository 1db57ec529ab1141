"""The on-disk kernel cache is keyed by all kernel sources, not only the kernel's own file; row blocks
run in threads by ``over_rows``."""

import shutil

import numba
import numpy as np
import pytest

from nquant.kernels import _jit, affine, stats


def test_sources_hash_follows_every_kernel_file(tmp_path):
    for src in _jit.pathlib.Path(_jit.__file__).parent.glob("*.py"):
        shutil.copy(src, tmp_path / src.name)
    h0 = _jit.sources_hash(tmp_path)
    assert h0 == _jit.SOURCES_HASH
    helper = tmp_path / "scalar.py"
    helper.write_text(helper.read_text() + "\n# a change in a helper module\n")
    h1 = _jit.sources_hash(tmp_path)
    assert h1 != h0
    (tmp_path / "extra.py").write_text("")
    assert _jit.sources_hash(tmp_path) not in (h0, h1)


@pytest.mark.skipif(not _jit.CACHE, reason="NQUANT_NUMBA_CACHE=0: kernels are not cached")
@pytest.mark.parametrize("kernel", [affine._encoder(0, 0), affine._encode_row, stats._minmax_rows])
def test_kernels_use_the_keyed_cache(kernel):
    assert type(kernel._cache) is _jit.KernelCache


@pytest.mark.skipif(not _jit.CACHE, reason="NQUANT_NUMBA_CACHE=0: kernels are not cached")
def test_cache_key_holds_the_sources_hash():
    stats.row_minmax(np.ones((2, 3), np.float32))  # at least one compiled signature
    sig, cres = next(iter(stats._minmax_rows.overloads.items()))
    key = stats._minmax_rows._cache._index_key(sig, cres.library.codegen)
    assert key[-1] == _jit.SOURCES_HASH


def test_uncached_jit_keeps_numbas_null_cache():
    f = _jit.jit(cache=False)(lambda x: x + 1)
    assert f(1) == 2
    assert type(f._cache) is not _jit.KernelCache


@pytest.mark.parametrize("n_rows, row_length", [(0, 5), (1, 10), (7, 1), (1000, 1 << 16), (3, 1 << 20)])
def test_over_rows_covers_every_row_once_in_order(n_rows, row_length):
    seen = np.zeros(n_rows, np.int64)

    def kernel(r0, r1, seen):
        seen[r0:r1] += 1
        return (r0, r1)

    blocks = _jit.over_rows(kernel, n_rows, row_length, seen)
    assert (seen == 1).all()
    assert blocks[0][0] == 0 and blocks[-1][1] == n_rows
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))


def test_over_rows_raises_the_kernels_error_once_no_block_runs():
    ran = []

    def kernel(r0, r1):
        ran.append(r0)
        if r0 == 0:
            raise ValueError("block 0")
        return r1

    with pytest.raises(ValueError, match="block 0"):
        _jit.over_rows(kernel, 8, 1 << 20)
    # the thread that failed stops; over_rows raises once the other threads ran every other block
    assert sorted(ran) == (list(range(8)) if numba.get_num_threads() > 1 else [0])
