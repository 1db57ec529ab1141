"""Vector quantization: nearest-centroid search, k-means (in memory, Dask), product quantization.

Quality is tracked beside time (inertia per point, PQ recall@10 and reconstruction MSE), so a
faster kernel that quietly got less exact shows up.  Sizes scale with ``common.N`` (the number of
float32 values of the main array; ``tests/test_asv.py`` sets it to 4096).
"""

import dask.array as da
import numpy as np

from nquant import kmeans
from nquant._threads import single_blas, task_threads
from nquant.kernels import assign as kassign
from nquant.kernels import lloyd as klloyd
from nquant.pq import ProductQuantizer

from . import common


def _mixture(n, d, k, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d)).astype(np.float32)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x *= np.float32(noise)
    x += means[rng.integers(0, k, n)]
    return x


def _shape(d, min_rows=64):
    """Rows for ``common.N`` values of width ``d`` (at least ``min_rows``)."""
    return max(common.N // d, min_rows), d


def _k(n, k=256):
    return max(2, min(k, n // 8))


class Assign:
    """Nearest center of every row (GEMM path for d=128, direct kernel for d=8)."""

    params = ([128, 8],)
    param_names = ["d"]

    def setup(self, d):
        n, d = _shape(d)
        self.x = _mixture(n, d, 64)
        self.c = self.x[:_k(n)].copy()
        kmeans.assign(self.x, self.c)  # compiles
        self.xx = kassign.row_sqnorms(self.x)

    def time_assign(self, d):
        kmeans.assign(self.x, self.c)

    def time_pass_with_sums(self, d):
        with single_blas():
            kmeans._pass(self.x, self.c, self.xx, True, task_threads())


class KMeansFit:
    """Lloyd (20 iterations from fixed centers) and mini-batch, in memory."""

    params = (["lloyd", "minibatch"],)
    param_names = ["algorithm"]

    def setup(self, algorithm):
        n, d = _shape(128)
        self.k = _k(n)
        self.x = _mixture(n, d, self.k)
        self.c0 = self.x[np.sort(np.random.default_rng(1).choice(n, self.k, replace=False))].copy()
        self.km = self._fit(algorithm)  # compiles

    def _fit(self, algorithm):
        return kmeans.KMeans(self.k, init=self.c0, max_iter=20, tol=0.0, algorithm=algorithm,
                         batch_size=4096, max_no_improvement=None).fit(self.x)

    def time_fit(self, algorithm):
        self._fit(algorithm)

    def peakmem_fit(self, algorithm):
        self._fit(algorithm)

    def track_inertia(self, algorithm):
        return self.km.inertia_ / self.x.shape[0]

    track_inertia.unit = "inertia per point"


class KMeansPlusPlus:
    """Greedy k-means++ seeding (the part scikit-learn spends most of a fit on)."""

    def setup(self):
        n, d = _shape(128)
        self.x = _mixture(n, d, _k(n))
        self.x -= self.x.mean(axis=0)
        self.k = _k(n)
        klloyd.kmeans_plusplus(self.x, self.k, np.random.default_rng(0))  # compiles

    def time_kmeans_plusplus(self):
        with single_blas():
            klloyd.kmeans_plusplus(self.x, self.k, np.random.default_rng(0), nthreads=task_threads())

    def track_potential(self):
        c, _ = klloyd.kmeans_plusplus(self.x, self.k, np.random.default_rng(0))
        return float(kmeans.assign(self.x, c)[1].sum(dtype=np.float64)) / self.x.shape[0]

    track_potential.unit = "inertia per point"


class DaskLloyd:
    """Map-reduce Lloyd over chunks (5 iterations), and the task count of one pass."""

    params = ([4, 16],)
    param_names = ["nchunks"]

    def setup(self, nchunks):
        n, d = _shape(64)
        self.k = _k(n, 64)
        x = _mixture(n, d, self.k)
        self.x = da.from_array(x, chunks=(-(-n // nchunks), d), name=False)
        self.c0 = x[:self.k].copy()
        self.km = kmeans.KMeans(self.k, init=self.c0, max_iter=5, tol=0.0, persist=False).fit(self.x)

    def time_fit(self, nchunks):
        kmeans.KMeans(self.k, init=self.c0, max_iter=5, tol=0.0, persist=False).fit(self.x)

    def track_inertia(self, nchunks):
        return self.km.inertia_ / self.x.shape[0]

    track_inertia.unit = "inertia per point"


class ProductQuantization:
    """PQ with 8 sub-spaces of 4 dimensions: fit, encode, decode, search, dot; recall and MSE."""

    params = ([8, 4],)
    param_names = ["nbits"]

    def setup(self, nbits):
        n, d = _shape(32, min_rows=1024)
        x = _mixture(n + 64, d, 256, seed=2, noise=1.0)
        self.x, self.q = x[:n], x[n:]
        self.pq = ProductQuantizer(8, nbits=nbits, max_iter=10).fit(self.x[:max(n // 8, 512)])
        self.codes = self.pq.encode(self.x)
        self.b = np.random.default_rng(0).standard_normal((d, 16)).astype(np.float32)
        self.pq.decode(self.codes)
        self.pq.search(self.q, 10, codes=self.codes)
        self.pq.dot(self.codes, self.b)
        d2 = (self.x ** 2).sum(1)[None] - 2 * self.q @ self.x.T
        self.gt = np.argsort(d2, axis=1)[:, :10]

    def time_fit(self, nbits):
        ProductQuantizer(8, nbits=nbits, max_iter=10).fit(self.x[:max(self.x.shape[0] // 8, 512)])

    def time_encode(self, nbits):
        self.pq.encode(self.x)

    def time_decode(self, nbits):
        self.pq.decode(self.codes)

    def time_search(self, nbits):
        self.pq.search(self.q, 10, codes=self.codes)

    def time_dot(self, nbits):
        self.pq.dot(self.codes, self.b)

    def track_recall(self, nbits):
        _, I = self.pq.search(self.q, 10, codes=self.codes)
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, self.gt)]))

    track_recall.unit = "recall@10"

    def track_mse(self, nbits):
        return float(((self.pq.decode(self.codes) - self.x) ** 2).mean())

    track_mse.unit = "mse"
