"""Seeded datasets for the benchmarks.  Append only: changing one changes history."""

import time

import numpy as np

# Number of values of the standard benchmark array; tests/test_asv.py shrinks it.
N = 1 << 24


def gaussian(n=None, dtype=np.float32, seed=0):
    """``n`` standard normal values."""
    return np.random.default_rng(seed).standard_normal(N if n is None else n).astype(dtype)


def weight_matrix(n=None, cols=1024, seed=0):
    """A (n // cols, cols) float32 matrix with per-row scales, like a layer's weights."""
    n = N if n is None else n
    rows = max(1, n // cols)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols), dtype=np.float32)
    x *= rng.lognormal(0.0, 0.5, size=(rows, 1)).astype(np.float32)
    return x


def mixture(n, d, k, seed=0, noise=0.5):
    """(n, d) float32 rows around ``k`` random means (Gaussian noise of scale ``noise``)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d)).astype(np.float32)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x *= np.float32(noise)
    x += means[rng.integers(0, k, n)]
    return x


def rows_for(d, min_rows=64):
    """Rows for ``N`` values of width ``d`` (at least ``min_rows``)."""
    return max(N // d, min_rows), d


def n_clusters(n, k=256):
    """``k`` clusters, fewer for small ``n`` (at least 2, at most n / 8)."""
    return max(2, min(k, n // 8))


def median_time(fn, repeat=5):
    """Median wall time of ``repeat`` calls of ``fn`` after one warm-up call (seconds): for
    ``track_`` benchmarks that give a ratio of two timings taken in the same process."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
