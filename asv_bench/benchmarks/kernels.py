"""One benchmark class per kernel module: ``class X`` times the entry points of ``nquant/kernels/x.py``.

The class is named after the module in CamelCase (``asq_dp`` -> ``AsqDp``, ``codebook1d`` ->
``Codebook1d``); ``tests/test_lint.py`` checks that every kernel module has its class here and
every class here its module.  A class calls the kernel directly, or the one public function that
is a thin wrapper of it; the family modules (``uniform``, ``codebook``, ``vq``, ...) time the
public API end to end.  Sizes scale with ``common.N`` (``tests/test_asv.py`` sets it to 4096).
"""

import numpy as np

import nquant as nq
from nquant import adaptive, kmeans, qat
from nquant._threads import single_blas, task_threads
from nquant.codebooks.grids import normal_float
from nquant.families import significant as significant_family
from nquant.families import uniform
from nquant.kernels import (
    asq_dp,
    bits,
    blockwise,
    calibrate,
    codebook1d,
    kmeans1d,
    lloyd,
    memory,
    predict,
    rng,
    significant,
    smawk,
    stats,
)
from nquant.kernels import assign as kassign
from nquant.kernels import pq as kpq
from nquant.kernels.rounding import NEAREST
from nquant.pq import ProductQuantizer
from nquant.qmatmul import prepare_weights, qmatmul

from . import common


def _sorted_distinct(n):
    """Distinct sorted float64 values of ``n`` Gaussian draws and their (unit) weights."""
    x = np.sort(common.gaussian(n).astype(np.float64))
    return asq_dp.dedup_sorted(x, np.empty(0))


class Affine:
    """Affine encode and decode, 4 bits per channel (through ``nquant.families.uniform``)."""

    def setup(self):
        self.x = common.weight_matrix()
        self.scheme = nq.Uniform(bits=4, axis=0)
        self.params = uniform.fit(self.scheme, self.x)
        self.codes = uniform.encode(self.scheme, self.params, self.x)
        uniform.decode(self.scheme, self.params, self.codes)

    def time_encode(self):
        uniform.encode(self.scheme, self.params, self.x, out=self.codes)

    def time_decode(self):
        uniform.decode(self.scheme, self.params, self.codes)


class AsqDp:
    """The exact ASQ dynamic program (8 levels) on up to 2**16 distinct values: table and solve."""

    def setup(self):
        self.vals, self.wts = _sorted_distinct(min(common.N, 1 << 16))
        self.tab, _ = asq_dp.build_table(self.vals, self.wts)
        asq_dp.quiver_exact(self.tab, 8, asq_dp.SMAWK, 1)

    def time_build_table(self):
        asq_dp.build_table(self.vals, self.wts)

    def time_quiver_exact(self):
        asq_dp.quiver_exact(self.tab, 8, asq_dp.SMAWK, 1)


class Assign:
    """Nearest center of every row (GEMM path for d=128, direct kernel for d=8)."""

    params = ([128, 8],)
    param_names = ["d"]

    def setup(self, d):
        n, d = common.rows_for(d)
        self.x = common.mixture(n, d, 64)
        self.c = self.x[:common.n_clusters(n)].copy()
        kmeans.assign(self.x, self.c)  # compiles
        self.xx = kassign.row_sqnorms(self.x)

    def time_assign(self, d):
        kmeans.assign(self.x, self.c)

    def time_pass_with_sums(self, d):
        with single_blas():
            kmeans._pass(self.x, self.c, self.xx, True, task_threads())


class Bitpack:
    """Bit packing of uint8 codes (through ``nquant.pack`` / ``nquant.unpack``)."""

    params = ([1, 2, 3, 4, 7],)
    param_names = ["bits"]

    def setup(self, bits):
        rng = np.random.default_rng(0)
        self.codes = rng.integers(0, 1 << bits, common.N, dtype=np.uint8)
        self.packed = nq.pack(self.codes, bits)

    def time_pack(self, bits):
        nq.pack(self.codes, bits)

    def time_unpack(self, bits):
        nq.unpack(self.packed, bits, self.codes.size)


class Bits:
    """The finiteness test on integer bit views, in NumPy (the plain-Python side of the module)."""

    def setup(self):
        self.x = common.gaussian()
        self.x[::997] = np.nan
        self.mask, self.inf_bits = bits.bit_constants(self.x)

    def time_nonfinite_mask(self):
        return (bits.int_view(self.x) & self.mask) >= self.inf_bits

    def time_float_view_round_trip(self):
        return bits.float_view(bits.int_view(self.x))


class Blockwise:
    """NF4 absmax encode into packed nibbles and decode, blocks of 64."""

    def setup(self):
        self.x = common.gaussian()
        self.levels = normal_float(4)
        self.absmax = np.empty(-(-self.x.size // 64), np.float32)
        self.packed = np.empty((self.x.size + 1) // 2, np.uint8)
        self.out = np.empty_like(self.x)
        self.time_absmax_quantize()
        self.time_dequantize()

    def time_absmax_quantize(self):
        blockwise.absmax_quantize_blockwise(self.x, 64, self.levels, self.absmax, self.packed, packed=True)

    def time_dequantize(self):
        blockwise.dequantize_blockwise(self.packed, self.absmax, 64, self.levels, self.out, packed=True)


class Calibrate:
    """MSE search of the clipping range and histogram percentiles: one histogram of 2048 bins per
    64 Ki values."""

    def setup(self):
        groups = max(1, common.N // 65536)
        x = common.gaussian(groups * 4096, dtype=np.float64).reshape(groups, -1)
        self.counts = np.stack([np.histogram(r, 2048, (-5.0, 5.0))[0] for r in x]).astype(np.int64)
        self.lo = np.full(groups, -5.0)
        self.hi = np.full(groups, 5.0)
        self.time_mse_search()
        self.time_histogram_percentiles()

    def time_mse_search(self):
        calibrate.mse_search(self.counts, self.lo, self.hi, -8, 7, calibrate.MSE_INT, 64)

    def time_histogram_percentiles(self):
        calibrate.histogram_percentiles(self.counts, self.lo, self.hi, 0.1, 99.9)


class Codebook1d:
    """Nearest code in a sorted 16-level codebook, and the table decode, of a weight matrix."""

    def setup(self):
        self.x = common.weight_matrix()
        self.rows = np.arange(self.x.shape[0], dtype=np.int64) * self.x.shape[1]
        self.levels = normal_float(4)
        self.key = np.uint64(rng.stream_key(np.uint64(0)))
        self.codes = np.empty(self.x.shape, np.uint8)
        self.out = np.empty_like(self.x)
        self.time_quantize_sorted()
        self.time_dequantize_table()

    def time_quantize_sorted(self):
        codebook1d.quantize_sorted(self.x, self.rows, self.levels, NEAREST, self.key, self.codes)

    def time_dequantize_table(self):
        codebook1d.dequantize_table(self.codes, self.levels, self.out)


class Fakequant:
    """Fake quantization with given parameters, 8 bits per channel (through ``nquant.qat``)."""

    def setup(self):
        self.x = common.weight_matrix()
        self.params = qat.as_params(nq.Uniform(bits=8, axis=0), self.x)
        qat.fake_quantize(self.x, self.params)

    def time_fake_quantize(self):
        qat.fake_quantize(self.x, self.params)


class Gptq:
    """GPTQ alone (no clipping search), 4 bits per channel, on a (256, 256) layer."""

    def setup(self):
        n = 256
        self.w = common.weight_matrix(n * n, cols=n)
        x = common.gaussian(n * 2 * n, seed=1).reshape(n, 2 * n)
        self.h = adaptive.hessian(x)
        self.scheme = nq.Uniform(bits=4, symmetric=True, axis=0)
        self.time_gptq()

    def time_gptq(self):
        adaptive.adaptive_round(self.w, self.h, self.scheme, clip_search=False)


class Intmm:
    """Exact integer product of 8-bit weights (N / 1024, 1024) and 8-bit activations (1024, 64)."""

    def setup(self):
        w = common.weight_matrix()
        x = common.gaussian(w.shape[1] * 64, seed=1).reshape(w.shape[1], 64)
        self.pw = prepare_weights(nq.quantize(w, nq.Uniform(bits=8, symmetric=True, axis=0)))
        self.qx = nq.quantize(x, nq.Uniform(bits=8))
        self.out = np.empty((w.shape[0], 64), np.float32)
        self.time_qmatmul_int()

    def time_qmatmul_int(self):
        qmatmul(self.pw, self.qx, method="int", out=self.out)


class Kmeans1d:
    """Exact 1-D k-means (16 clusters) on up to 2**16 distinct values: table and dynamic program."""

    def setup(self):
        self.vals, self.wts = _sorted_distinct(min(common.N, 1 << 16))
        self.tab, _ = kmeans1d.kmeans_table(self.vals, self.wts)
        kmeans1d.kmeans_dp(self.tab, 16, smawk.SMAWK, 1)

    def time_kmeans_table(self):
        kmeans1d.kmeans_table(self.vals, self.wts)

    def time_kmeans_dp(self):
        kmeans1d.kmeans_dp(self.tab, 16, smawk.SMAWK, 1)


class Lloyd:
    """Greedy k-means++ seeding (the part scikit-learn spends most of a fit on)."""

    def setup(self):
        n, d = common.rows_for(128)
        self.x = common.mixture(n, d, common.n_clusters(n))
        self.x -= self.x.mean(axis=0)
        self.k = common.n_clusters(n)
        lloyd.kmeans_plusplus(self.x, self.k, np.random.default_rng(0))  # compiles

    def time_kmeans_plusplus(self):
        with single_blas():
            lloyd.kmeans_plusplus(self.x, self.k, np.random.default_rng(0), nthreads=task_threads())

    def track_potential(self):
        c, _ = lloyd.kmeans_plusplus(self.x, self.k, np.random.default_rng(0))
        return float(kmeans.assign(self.x, c)[1].sum(dtype=np.float64)) / self.x.shape[0]

    track_potential.unit = "inertia per point"


class Memory:
    """First touch of a fresh buffer of 4 N bytes, one write per 4 KiB page."""

    def setup(self):
        self.a = np.empty(4 * common.N, np.uint8)
        memory.first_touch(self.a, 4096, 0)

    def time_first_touch(self):
        memory.first_touch(self.a, 4096, 0)


class Pq:
    """Product quantization kernels: distance tables, byte tables and the table scan (16 queries)."""

    def setup(self):
        n, d = common.rows_for(32, min_rows=1024)
        x = common.mixture(n + 16, d, 256, seed=2, noise=1.0)
        self.x, self.q = x[:n], x[n:]
        self.pq = ProductQuantizer(8, nbits=8, max_iter=5).fit(self.x[:1024])
        self.codes = self.pq.encode(self.x)
        self.tables = self.pq.tables(self.q)
        self.bt = np.empty((len(self.q), self.codes.shape[1], 256), np.float32)
        kpq.byte_tables(self.tables, 8, 1.0, self.bt)
        self.pd = np.empty((len(self.q), 1, 10), np.float32)
        self.pi = np.empty((len(self.q), 1, 10), np.int64)
        kpq.lut_search(self.bt, self.codes, 1, self.pd, self.pi)

    def time_tables(self):
        self.pq.tables(self.q)

    def time_byte_tables(self):
        kpq.byte_tables(self.tables, 8, 1.0, self.bt)

    def time_lut_search(self):
        kpq.lut_search(self.bt, self.codes, 1, self.pd, self.pi)


class Predict:
    """2-D Lorenzo prediction, zigzag and byte planes of smooth uint16 codes, and its inverse."""

    def setup(self):
        cols = 1024
        field = np.cumsum(np.cumsum(common.gaussian(common.N // cols * cols), 0).reshape(-1, cols), 1)
        span = float(field.max() - field.min()) or 1.0
        self.q = ((field - field.min()) * (4000.0 / span)).astype(np.uint16)[None]
        self.planes = np.empty((2, self.q.size), np.uint8)
        self.out = np.empty_like(self.q)
        predict.encode(self.q, True, True, self.planes)
        predict.decode(self.planes, True, True, self.out)

    def time_encode(self):
        predict.encode(self.q, True, True, self.planes)

    def time_decode(self):
        predict.decode(self.planes, True, True, self.out)


class Rng:
    """The stream's draws for N consecutive indices (``nquant.kernels.lloyd.uniform_fill``)."""

    def setup(self):
        self.key = np.uint64(rng.stream_key(np.uint64(7)))
        self.out = np.empty(common.N)
        lloyd.uniform_fill(self.key, 0, self.out)

    def time_uniform_fill(self):
        lloyd.uniform_fill(self.key, 0, self.out)


class Rounding:
    """Each rounding mode in the affine encoder at unit scale (values in code space)."""

    params = (["nearest", "nearest_away", "floor", "ceil", "stochastic"],)
    param_names = ["rounding"]

    def setup(self, rounding):
        self.x = common.gaussian() * np.float32(40) + np.float32(128)
        self.scheme = nq.Uniform(bits=8, range=(0.0, 255.0), zero_point="float", rounding=rounding, seed=1)
        self.params = uniform.fit(self.scheme, self.x)
        self.codes = uniform.encode(self.scheme, self.params, self.x)

    def time_encode(self, rounding):
        uniform.encode(self.scheme, self.params, self.x, out=self.codes)


class Scalar:
    """The encoder's per-value helpers on their longest path (snap, stochastic draw, clip), through
    the affine encoder, per tensor."""

    def setup(self):
        self.x = common.gaussian()
        self.scheme = nq.Uniform(bits=4, rounding="stochastic", seed=3)
        self.params = uniform.fit(self.scheme, self.x)
        self.codes = uniform.encode(self.scheme, self.params, self.x)

    def time_round_code(self):
        uniform.encode(self.scheme, self.params, self.x, out=self.codes)


class Significant:
    """Rounding to 6 mantissa bits and back, float32 (``nquant.kernels.significant``)."""

    def setup(self):
        self.x = common.gaussian()
        self.keepbits = 6
        self.codes = np.empty(self.x.size, np.uint16)
        self.out = np.empty(self.x.size, np.float32)
        self.limit, self.top = significant_family.code_range(np.dtype(np.float32), self.keepbits)
        self.time_encode()
        self.time_decode()

    def time_encode(self):
        significant.encode_significant(self.x, self.keepbits, self.limit, self.top, self.codes)

    def time_decode(self):
        significant.decode_significant(self.codes, self.keepbits, self.out)


class Smawk:
    """One layer of row minima (SMAWK and divide and conquer) on the ASQ cost of 2**16 values."""

    def setup(self):
        vals, wts = _sorted_distinct(min(common.N, 1 << 16))
        self.n = vals.size
        self.tab, _ = asq_dp.build_table(vals, wts)
        self.aux = np.empty(0, np.uint32)
        self.base = np.zeros(self.n)
        self.work = smawk.workspace(self.n)
        self.lower = np.zeros(self.n, np.int64)
        self.fout = np.empty(self.n)
        self.kout = np.empty(self.n, np.int64)
        self.time_row_minima()
        self.time_row_minima_dc()

    def time_row_minima(self):
        smawk.row_minima(smawk.ASQ, self.tab, self.aux, self.base, self.n, *self.work, self.fout, self.kout)

    def time_row_minima_dc(self):
        smawk.row_minima_dc(smawk.ASQ, self.tab, self.aux, self.base, self.n, self.lower, self.fout,
                            self.kout)


class Stats:
    """Reductions of a weight matrix: per-row and per-column min/max (on IEEE bit patterns) and the
    error moments of a reconstruction."""

    def setup(self):
        self.x = common.weight_matrix()
        self.flat = self.x.ravel()
        self.y = self.flat + np.float32(1e-3) * common.weight_matrix(seed=1).ravel()
        self.tasks = task_threads()
        self.time_row_minmax()
        self.time_column_minmax()
        self.time_error_moments()

    def time_row_minmax(self):
        stats.row_minmax(self.x)

    def time_column_minmax(self):
        stats.column_minmax(self.x, self.tasks)

    def time_error_moments(self):
        stats.error_moments(self.flat, self.y, self.tasks)
