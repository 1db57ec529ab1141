"""Adaptive stochastic quantization and exact 1-D k-means: time and vNMSE/SSE."""

import numpy as np

from nquant.codebooks import asq, optimal1d

from . import common

# the exact solvers are O(s d) after sorting; keep them at a moderate size
_EXACT_DIV = 64  # d = N / 64 (2^18 at the standard N = 2^24)


def _lognormal(n, seed=0):
    return np.sort(np.random.default_rng(seed).lognormal(0.0, 1.0, size=n))


class Exact:
    params = (["quiver", "quiver_accel"], [4, 16])
    param_names = ["method", "s"]

    def setup(self, method, s):
        self.x = _lognormal(max(common.N // _EXACT_DIV, 64))
        self.result = asq.solve(self.x, s, method=method)  # compiles

    def time_solve(self, method, s):
        asq.solve(self.x, s, method=method)

    def track_vnmse(self, method, s):
        return self.result.vnmse

    track_vnmse.unit = "vNMSE"


class Approx:
    params = ([100, 1000], [16], ["uniform", "adaptive"])
    param_names = ["m", "s", "grid"]

    def setup(self, m, s, grid):
        self.x = np.random.default_rng(0).lognormal(0.0, 1.0, size=common.N // 4)
        self.result = asq.solve(self.x, s, method="quiver_approx", m=m, grid=grid)  # compiles
        self.lo, self.hi = asq.approx_range(self.x)
        self.stats = asq.approx_partial(self.x, self.lo, self.hi, m)

    def time_solve(self, m, s, grid):
        asq.solve(self.x, s, method="quiver_approx", m=m, grid=grid)

    def time_histogram_pass(self, m, s, grid):
        asq.approx_partial(self.x, self.lo, self.hi, m)

    def time_finalize(self, m, s, grid):
        asq.approx_finalize(self.stats, s)

    def track_vnmse(self, m, s, grid):
        return self.result.vnmse

    track_vnmse.unit = "vNMSE"


class Rows:
    """One level set per row of a gradient-like matrix (``ASQ(axis=0)``): the parallel kernel
    over rows against a Python loop of ``asq.solve`` per row."""

    params = (["quiver", "quiver_approx"], [16])
    param_names = ["method", "s"]

    def setup(self, method, s):
        cols = 4096
        rows = max(common.N // (4 * cols), 4)  # 1024 rows at the standard N = 2^24
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((rows, cols)) * np.exp(rng.normal(size=(rows, 1)))
        self.kw = {"m": 1000} if method == "quiver_approx" else {}
        self.result = asq.solve_rows(self.x, s, method, **self.kw)  # compiles
        asq.solve(self.x[0], s, method=method, **self.kw)

    def time_solve_rows(self, method, s):
        asq.solve_rows(self.x, s, method, **self.kw)

    def time_loop_of_solve(self, method, s):
        for row in self.x:
            asq.solve(row, s, method=method, **self.kw)

    def track_mean_vnmse(self, method, s):
        return float(np.mean(self.result.vnmse))

    track_mean_vnmse.unit = "vNMSE"


class KMeans1D:
    params = ([4, 16],)
    param_names = ["k"]

    def setup(self, k):
        self.x = np.random.default_rng(0).lognormal(0.0, 1.0, size=max(common.N // _EXACT_DIV, 64))
        self.result = optimal1d.kmeans1d(self.x, k)  # compiles
        optimal1d.kmeans1d_restarts(self.x[:64], k, n_init=1)

    def time_exact(self, k):
        optimal1d.kmeans1d(self.x, k)

    def time_restarts(self, k):
        optimal1d.kmeans1d_restarts(self.x, k, n_init=3, seed=0)

    def track_sse_per_value(self, k):
        return self.result.sse / self.x.size

    track_sse_per_value.unit = "SSE/value"
