"""The on-disk kernel cache is keyed by all kernel sources, not only the kernel's own file."""

import shutil

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
@pytest.mark.parametrize("kernel", [affine.quantize_affine, affine._encode_row, stats.row_minmax])
def test_kernels_use_the_keyed_cache(kernel):
    assert type(kernel._cache) is _jit.KernelCache


@pytest.mark.skipif(not _jit.CACHE, reason="NQUANT_NUMBA_CACHE=0: kernels are not cached")
def test_cache_key_holds_the_sources_hash():
    stats.row_minmax(np.ones((2, 3), np.float32))  # at least one compiled signature
    sig, cres = next(iter(stats.row_minmax.overloads.items()))
    key = stats.row_minmax._cache._index_key(sig, cres.library.codegen)
    assert key[-1] == _jit.SOURCES_HASH


def test_uncached_jit_keeps_numbas_null_cache():
    f = _jit.jit(cache=False)(lambda x: x + 1)
    assert f(1) == 2
    assert type(f._cache) is not _jit.KernelCache
