"""Test data shared by several test modules."""

import numpy as np


def blobs(n, d, k, seed=0, spread=10.0, noise=1.0, dtype=np.float32):
    """Well separated Gaussian blobs (no near-ties between clusters)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d)) * spread
    lab = rng.integers(0, k, n)
    return (means[lab] + noise * rng.standard_normal((n, d))).astype(dtype)


def readonly(a):
    """A read-only copy of ``a``."""
    a = a.copy()
    a.setflags(write=False)
    return a
