"""Shared pieces of the CUDA twin tests (``tests/test_cuda_<module>.py``).

Importing this module skips the importing test module when numba-cuda is missing or when a GPU
run (``NUMBA_ENABLE_CUDASIM=0``) finds no GPU; ``tests/conftest.py`` selects the simulator
otherwise.  :func:`small_launches` (autouse where imported) keeps launches to 3 blocks of 8
threads: cheap in the simulator (one Python thread per CUDA thread), and every grid-stride loop
goes round several times.
"""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed: pip install 'nquant[cuda]'")

from numba import cuda  # noqa: E402

if not cuda.is_available():  # a GPU run without a GPU (NUMBA_ENABLE_CUDASIM=0)
    pytest.skip("no CUDA device and the simulator is off", allow_module_level=True)

from nquant.cuda import _launch  # noqa: E402
from nquant.codebooks.grids import normal_float  # noqa: E402
from nquant.kernels import rng as c_rng  # noqa: E402

__all__ = ["DTYPES", "NF4", "ROOT", "adversarial_values", "cuda", "key_of", "small_launches"]

ROOT = Path(__file__).resolve().parents[1]
DTYPES = [np.float32, np.float64]
NF4 = normal_float(4)


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    """3 blocks of 8 threads: cheap in the simulator, and every grid-stride loop loops."""
    monkeypatch.setattr(_launch, "THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(_launch, "MAX_BLOCKS", 3)


def key_of(seed):
    """The stream key of ``seed`` (any Python int, taken modulo 2**64)."""
    return np.uint64(c_rng.stream_key(np.uint64(seed % 2**64)))


def adversarial_values(dtype, n=48, seed=0):
    """Ties, near-ties, signed zeros, huge, tiny and random values (finite)."""
    dt = np.dtype(dtype).type
    f = np.finfo(dtype)
    special = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 254.5, 3.0000001, -7.0, float(f.tiny),
               float(np.nextafter(dt(2.5), dt(3))), float(np.nextafter(dt(2.5), dt(2))), 1e6 + 0.5]
    rs = np.random.default_rng(seed)
    rand = rs.standard_normal(n - len(special)) * 60
    return np.concatenate([special, rand]).astype(dtype)
