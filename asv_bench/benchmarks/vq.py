"""Vector quantization: k-means (in memory, Dask) and product quantization through the public API.

Quality is tracked beside time (inertia per point, PQ recall@10 and reconstruction MSE), so a
faster kernel that quietly got less exact shows up.  Sizes scale with ``common.N`` (the number of
float32 values of the main array; ``tests/test_asv.py`` sets it to 4096).
"""

import importlib.util
import statistics
import time

import dask.array as da
import numpy as np

from nquant import kmeans
from nquant.kernels.lloyd import kmeans_plusplus
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


# ---------------------------------------------------------------------------------------------
# The workloads of benchmarks/compare_vq.py (sizes capped at the script's, smaller with common.N)
# ---------------------------------------------------------------------------------------------
def _lloyd_data(n_max, d, k_max):
    n = min(n_max, common.rows_for(d)[0])
    k = common.n_clusters(n, k_max)
    x = common.mixture(n, d, k)
    mean = x.mean(axis=0, dtype=np.float64)
    c0, _ = kmeans_plusplus((x - mean).astype(np.float32), k, np.random.default_rng(1))
    return x, k, (c0 + mean).astype(np.float32)


def _pq_data():
    n = min(100_000, common.rows_for(128, min_rows=1024)[0])
    return common.mixture(n, 128, 1024, seed=3, noise=1.0)


class LloydCommonInit:
    """Lloyd, 20 iterations from common k-means++ centroids: up to 200,000 x 128, k = 256."""

    def setup(self):
        self.x, self.k, self.c0 = _lloyd_data(200_000, 128, 256)
        self.km = self._fit()  # compiles

    def _fit(self):
        return kmeans.KMeans(self.k, init=self.c0, max_iter=20, tol=0.0).fit(self.x)

    def time_fit(self):
        self._fit()

    def track_inertia(self):
        return self.km.inertia_ / self.x.shape[0]

    track_inertia.unit = "inertia per point"


class LloydFixedCosts(LloydCommonInit):
    """Lloyd, 20 iterations from common k-means++ centroids: up to 60,000 x 64, k = 64 (the
    per-iteration overheads weigh here)."""

    def setup(self):
        self.x, self.k, self.c0 = _lloyd_data(60_000, 64, 64)
        self.km = self._fit()


class KMeansPlusPlusFit:
    """A full fit: greedy k-means++ then 20 Lloyd iterations, up to 200,000 x 128, k = 256."""

    def setup(self):
        n, d = min(200_000, common.rows_for(128)[0]), 128
        self.k = common.n_clusters(n)
        self.x = common.mixture(n, d, self.k)
        self.km = self._fit()

    def _fit(self):
        return kmeans.KMeans(self.k, max_iter=20, tol=0.0, seed=0).fit(self.x)

    def time_fit(self):
        self._fit()

    def track_inertia(self):
        return self.km.inertia_ / self.x.shape[0]

    track_inertia.unit = "inertia per point"


class PQTrain:
    """Product quantizer training, M = 16, 8 bits, up to 100,000 x 128 rows; decode of the rows."""

    def setup(self):
        self.x = _pq_data()
        self.pq = ProductQuantizer(16, nbits=8, seed=0).fit(self.x)
        self.codes = self.pq.encode(self.x)
        self.pq.decode(self.codes)

    def time_fit(self):
        ProductQuantizer(16, nbits=8, seed=0).fit(self.x)

    def time_decode(self):
        self.pq.decode(self.codes)

    def track_mse(self):
        return float(((self.pq.decode(self.codes) - self.x) ** 2).mean())

    track_mse.unit = "mse"


def _ratio(peer, ours, repeat=3):
    """Median peer time / median nquant time (both warmed, runs interleaved)."""
    fns = (peer, ours)
    times = ([], [])
    for fn in fns:
        fn()
    for _ in range(repeat):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return statistics.median(times[0]) / statistics.median(times[1])


def _faiss_lloyd(x, c0, k):
    import faiss

    f = faiss.Kmeans(x.shape[1], k, niter=20, seed=1, max_points_per_centroid=x.shape[0], verbose=False)
    f.train(x, init_centroids=c0)


def _sklearn_lloyd(x, c0, k):
    from sklearn.cluster import KMeans as SKKMeans

    SKKMeans(k, init=c0, n_init=1, max_iter=20, tol=0.0, algorithm="lloyd").fit(x)


def _have(module):
    return importlib.util.find_spec(module) is not None


def _lloyd_ratio(n_max, d, k_max):
    x, k, c0 = _lloyd_data(n_max, d, k_max)
    peers = [fn for fn, mod in ((_faiss_lloyd, "faiss"), (_sklearn_lloyd, "sklearn")) if _have(mod)]
    return min(_ratio(lambda f=f: f(x, c0, k), lambda: kmeans.KMeans(k, init=c0, max_iter=20, tol=0.0).fit(x))
               for f in peers)


# Peer time / nquant time for the compare_vq.py workloads (> 1: nquant is faster), defined where
# the peer is installed.
if _have("faiss") or _have("sklearn"):
    class LloydVsPeer:
        """Lloyd from common centroids against the faster of faiss and scikit-learn."""

        timeout = 600

        def track_lloyd_vs_faster_peer(self):
            return _lloyd_ratio(200_000, 128, 256)

        def track_lloyd_fixed_costs_vs_faster_peer(self):
            return _lloyd_ratio(60_000, 64, 64)

        track_lloyd_vs_faster_peer.unit = "x"
        track_lloyd_fixed_costs_vs_faster_peer.unit = "x"

if _have("sklearn"):
    class KMeansPlusPlusFitVsSklearn:
        """A full k-means++ fit against scikit-learn's."""

        timeout = 600

        def track_kmeanspp_fit_vs_sklearn(self):
            from sklearn.cluster import KMeans as SKKMeans

            n = min(200_000, common.rows_for(128)[0])
            k = common.n_clusters(n)
            x = common.mixture(n, 128, k)
            return _ratio(lambda: SKKMeans(k, n_init=1, max_iter=20, tol=0.0, random_state=0,
                                           algorithm="lloyd").fit(x),
                          lambda: kmeans.KMeans(k, max_iter=20, tol=0.0, seed=0).fit(x))

        track_kmeanspp_fit_vs_sklearn.unit = "x"

if _have("faiss"):
    class PQTrainVsFaiss:
        """Product quantizer training against faiss' ``ProductQuantizer.train``."""

        timeout = 600

        def track_pq_train_vs_faiss(self):
            import faiss

            x = _pq_data()

            def peer():
                faiss.ProductQuantizer(128, 16, 8).train(x)

            return _ratio(peer, lambda: ProductQuantizer(16, nbits=8, seed=0).fit(x))

        track_pq_train_vs_faiss.unit = "x"
