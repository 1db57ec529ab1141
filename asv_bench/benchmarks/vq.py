"""Vector quantization: k-means (in memory, Dask) and product quantization through the public API.

Quality is tracked beside time (inertia per point, PQ recall@10 and reconstruction MSE), so a
faster kernel that quietly got less exact shows up.  Sizes scale with ``common.N`` (the number of
float32 values of the main array; ``tests/test_asv.py`` sets it to 4096).
"""

import dask.array as da
import numpy as np

from nquant import kmeans
from nquant.pq import ProductQuantizer

from . import common


class KMeansFit:
    """Lloyd (20 iterations from fixed centers) and mini-batch, in memory."""

    params = (["lloyd", "minibatch"],)
    param_names = ["algorithm"]

    def setup(self, algorithm):
        n, d = common.rows_for(128)
        self.k = common.n_clusters(n)
        self.x = common.mixture(n, d, self.k)
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


class DaskLloyd:
    """Map-reduce Lloyd over chunks (5 iterations), and the task count of one pass."""

    params = ([4, 16],)
    param_names = ["nchunks"]

    def setup(self, nchunks):
        n, d = common.rows_for(64)
        self.k = common.n_clusters(n, 64)
        x = common.mixture(n, d, self.k)
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
        n, d = common.rows_for(32, min_rows=1024)
        x = common.mixture(n + 64, d, 256, seed=2, noise=1.0)
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
