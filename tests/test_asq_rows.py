"""Per-group ASQ (``nq.ASQ(axis=k)``): one optimal level set per index of an axis.

- Levels: each group's codebook row is what ``nquant.asq.solve`` finds on that group alone
  (exact methods: the same objective to 1e-9 relative; ``quiver_approx``: the same levels),
  checked against the point-by-point reference DP on small rows.
- Rounding: unbiased, and its mean squared error per row is the row's objective.
- Chunk invariance: codes, codebook and dequantized values of Dask inputs are bit-identical to
  the NumPy input for chunkings along every axis.
- Store round trip, presets with ``axis``, scheme JSON, bad ``axis``.
"""

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nquant as nq
from nquant.codebooks import asq
from nquant.errors import InputError, SchemeError
from nquant.interfaces.presets import resolve_scheme
from nquant.kernels import codebook1d
from nquant.kernels.rounding import NEAREST, STOCHASTIC
from tests.helpers import assert_dask_equals_numpy
from tests.reference import asq_dp as asq_dp_ref
from tests.test_asq import DISTS, close, make

EXACT = ("quiver", "quiver_accel", "zipml")


def gradient_like(rows, cols, seed=0, dtype=np.float32):
    """Rows of different scales and shapes, with a constant row and a low-cardinality row."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0.0, 1.5, size=(rows, 1)))
    x = rng.standard_t(3.0, size=(rows, cols)) * scale
    x[rows // 2] = 0.25
    x[rows // 3] = rng.integers(-2, 3, size=cols)
    return x.astype(dtype)


def row_levels(q, g):
    """Distinct levels of group ``g`` (the codebook row without its padding)."""
    return np.unique(np.asarray(q.codebook)[g])


# ---------------------------------------------------------------------------------------------
# levels per row equal the per-row solve
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", EXACT)
@pytest.mark.parametrize("dist", DISTS)
def test_exact_rows_have_the_objective_of_a_solve_per_row(method, dist):
    x = np.stack([make(dist, 150, seed) for seed in range(6)])
    q = nq.quantize(x, nq.ASQ(bits=3, method=method, axis=0))
    assert q.codebook.shape == (6, 8)
    for g in range(6):
        want = asq.solve(x[g], 8, method=method)
        got = asq.objective(x[g], row_levels(q, g))
        assert close(got, want.objective, x[g]), (g, got, want.objective)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(DISTS), st.integers(2, 40), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_exact_rows_equal_the_reference_dp(dist, d, rows, seed):
    x = np.stack([make(dist, d, seed + r) for r in range(rows)])
    res = asq.solve_rows(x, 5, "quiver")
    for r in range(rows):
        assert close(asq.objective(x[r], res.levels[r]), asq_dp_ref.asq_dp(x[r], 5), x[r])
        assert close(res.objective[r], asq_dp_ref.asq_dp(x[r], 5), x[r])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [7, 200])
def test_approx_rows_equal_a_solve_per_row(dtype, m):
    x = gradient_like(9, 300, seed=1, dtype=dtype)
    q = nq.quantize(x, nq.ASQ(bits=4, method="quiver_approx", m=m, axis=0))
    for g in range(9):
        want = asq.solve(x[g], 16, method="quiver_approx", m=m).levels
        np.testing.assert_array_equal(row_levels(q, g), np.unique(want))


@pytest.mark.parametrize("method", ["quiver", "quiver_approx"])
@pytest.mark.parametrize(("shape", "axis"), [((5, 40), 1), ((5, 40), -1), ((3, 4, 30), 1), ((3, 4, 30), 0)])
def test_other_axes_group_the_values_of_each_index(method, shape, axis):
    x = np.random.default_rng(2).lognormal(size=shape)
    q = nq.quantize(x, nq.ASQ(bits=2, method=method, axis=axis, m=50 if method == "quiver_approx" else None))
    groups = np.moveaxis(x, axis, 0).reshape(shape[axis], -1)
    assert q.codebook.shape == (shape[axis], 4)
    for g in range(shape[axis]):
        want = asq.solve(groups[g], 4, method=method, m=50 if method == "quiver_approx" else None)
        if method == "quiver_approx":
            np.testing.assert_array_equal(row_levels(q, g), np.unique(want.levels))
        else:
            assert close(asq.objective(groups[g], row_levels(q, g)), want.objective, groups[g])
    # every value decodes to a level of its own group
    x_hat = np.moveaxis(nq.dequantize(q), axis, 0).reshape(shape[axis], -1)
    for g in range(shape[axis]):
        assert np.isin(x_hat[g], q.codebook[g]).all()


@pytest.mark.parametrize("method", [*EXACT, "quiver_approx"])
def test_solve_rows_matches_solve(method):
    x = gradient_like(7, 120, seed=3, dtype=np.float64)
    x.setflags(write=False)
    kw = {"m": 64} if method == "quiver_approx" else {}
    res = asq.solve_rows(x, 6, method, **kw)
    assert res.levels.shape == (7, 6) and res.objective.shape == (7,) and res.vnmse.shape == (7,)
    for r in range(7):
        want = asq.solve(x[r], 6, method=method, **kw)
        if method == "quiver_approx":
            np.testing.assert_array_equal(res.levels[r], want.levels)
        else:
            assert close(res.objective[r], want.objective, x[r])
            assert close(asq.objective(x[r], res.levels[r]), want.objective, x[r])


# ---------------------------------------------------------------------------------------------
# degenerate groups, rounding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [*EXACT, "quiver_approx"])
def test_degenerate_rows_are_exact(method):
    x = np.zeros((4, 50), np.float32)
    x[0] = 3.5                                   # constant row
    x[1] = np.tile([-1.0, 0.5, 2.0], 17)[:50]    # 3 distinct values < 16 levels
    x[2, 7] = 1.0                                # two values
    x[3] = np.linspace(-1, 1, 50)                # an ordinary row
    q = nq.quantize(x, nq.ASQ(bits=4, method=method, axis=0, m=20 if method == "quiver_approx" else None))
    x_hat = nq.dequantize(q)
    if method == "quiver_approx":  # the grid holds min and max only for two-valued rows
        np.testing.assert_array_equal(x_hat[[0, 2]], x[[0, 2]])
    else:
        np.testing.assert_array_equal(x_hat[:3], x[:3])
        np.testing.assert_array_equal(row_levels(q, 1), [-1.0, 0.5, 2.0])
    np.testing.assert_array_equal(row_levels(q, 0), [3.5])
    assert (np.asarray(q.codebook)[0] == 3.5).all()
    assert len(row_levels(q, 3)) == 16


def test_rounding_is_unbiased_with_the_objective_as_its_variance():
    x = gradient_like(6, 64, seed=4, dtype=np.float64)
    scheme = nq.ASQ(bits=2, method="quiver", axis=0)
    q0 = nq.quantize(x, scheme)
    obj = np.array([asq.objective(x[g], row_levels(q0, g)) for g in range(6)])
    n = 400
    mean = np.zeros_like(x)
    sq = np.zeros(6)
    for seed in range(n):
        q = nq.quantize(x, scheme.replace(seed=seed))
        np.testing.assert_array_equal(q.codebook, q0.codebook)  # levels do not depend on the seed
        x_hat = nq.dequantize(q)
        mean += x_hat / n
        sq += ((x_hat - x) ** 2).sum(axis=1) / n
    # per value: |mean - x| within 5 standard errors of n draws (the spread is <= the gap)
    gap = np.array([np.diff(q0.codebook[g]).max() for g in range(6)])[:, None]
    assert (np.abs(mean - x) <= 5 * gap / 2 / np.sqrt(n) + 1e-12).all()
    np.testing.assert_allclose(sq, obj, rtol=0.2, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# chunk invariance
# ---------------------------------------------------------------------------------------------

CHUNKINGS_2D = [(3, 50), (12, 7), (5, 13), (1, 50), (12, 50)]


@pytest.mark.parametrize("method", ["quiver", "quiver_accel", "quiver_approx"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("chunks", CHUNKINGS_2D, ids=str)
def test_dask_codes_equal_numpy_codes(method, axis, chunks):
    x = gradient_like(12, 50, seed=5)
    scheme = nq.ASQ(bits=3, method=method, axis=axis, seed=11, m=40 if method == "quiver_approx" else None)
    q_np = nq.quantize(x, scheme)
    with dask.config.set(scheduler="threads"):
        assert_dask_equals_numpy(q_np, nq.quantize(da.from_array(x, chunks=chunks), scheme))


@st.composite
def _chunked_3d(draw):
    shape = tuple(draw(st.integers(1, 6)) for _ in range(3))
    chunks = tuple(tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=6)
                                  .filter(lambda c, n=n: sum(c) >= n))) for n in shape)
    chunks = tuple(_trim(c, n) for c, n in zip(chunks, shape))
    return shape, chunks


def _trim(sizes, n):
    out, total = [], 0
    for c in sizes:
        c = min(c, n - total)
        if c <= 0:
            break
        out.append(c)
        total += c
    return tuple(out)


@settings(max_examples=8, deadline=None)
@given(_chunked_3d(), st.sampled_from([0, 1, 2, -1]), st.sampled_from(["quiver", "quiver_approx"]))
def test_dask_codes_equal_numpy_codes_any_chunking(shape_chunks, axis, method):
    shape, chunks = shape_chunks
    x = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    x = np.round(x, 1)  # duplicates and ties across chunks
    scheme = nq.ASQ(bits=2, method=method, axis=axis, seed=3, m=16 if method == "quiver_approx" else None)
    q_np = nq.quantize(x, scheme)
    with dask.config.set(scheduler="threads"):
        assert_dask_equals_numpy(q_np, nq.quantize(da.from_array(x, chunks=chunks), scheme))


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (1, 1)], ids=str)
@pytest.mark.parametrize("method", ["quiver", "quiver_approx"])
def test_empty_and_tiny_shapes(shape, method):
    x = np.ones(shape, np.float32)
    scheme = nq.ASQ(bits=2, method=method, axis=0)
    q_np = nq.quantize(x, scheme)
    assert q_np.codebook.shape == (shape[0], 4)
    np.testing.assert_array_equal(nq.dequantize(q_np), x)
    assert_dask_equals_numpy(q_np, nq.quantize(da.from_array(x, chunks=2), scheme))


# ---------------------------------------------------------------------------------------------
# group encode/decode kernels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", [NEAREST, STOCHASTIC])
@pytest.mark.parametrize("col_step", [0, 1])
def test_group_kernels_equal_the_single_codebook_kernel_per_group(dtype, mode, col_step):
    rng = np.random.default_rng(6)
    R, L, G = 5, 9, 9
    x = rng.normal(size=(R, L)).astype(dtype)
    x.setflags(write=False)
    n = rng.integers(1, 6, size=G).astype(np.int64)
    levels = np.zeros((G, 5), dtype)
    for g in range(G):
        v = np.sort(rng.choice(np.linspace(-2, 2, 41), size=n[g], replace=False)).astype(dtype)
        levels[g, : n[g]] = v
        levels[g, n[g]:] = v[-1]
    row_index = np.arange(R, dtype=np.int64) * 1000
    row_group = (np.zeros(R, np.int64) if col_step else np.arange(R, dtype=np.int64) + 2)
    key = np.uint64(12345)
    out = np.empty((R, L), np.uint8)
    assert codebook1d.quantize_sorted_groups(x, row_index, row_group, col_step, levels, n, mode, key, out) == 0
    dec = np.empty((R, L), dtype)
    codebook1d.dequantize_groups(out, row_group, col_step, levels, dec)
    for r in range(R):
        for j in range(L):
            g = row_group[r] + col_step * j
            one = np.empty((1, 1), np.uint8)
            codebook1d.quantize_sorted(x[r:r + 1, j:j + 1].copy(), np.array([row_index[r] + j]),
                                       levels[g, : n[g]].copy(), mode, key, one)
            assert out[r, j] == one[0, 0]
            assert dec[r, j] == levels[g, out[r, j]]


# ---------------------------------------------------------------------------------------------
# store, presets, JSON, bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dask_backed", [False, True])
def test_save_open_round_trip(tmp_path, dask_backed):
    x = gradient_like(10, 40, seed=7)
    scheme = nq.ASQ(bits=4, method="quiver_approx", m=64, axis=0, seed=5)
    q = nq.quantize(da.from_array(x, chunks=(4, 16)) if dask_backed else x, scheme)
    path = tmp_path / "g.zarr"
    nq.save(q, str(path))
    back = nq.open(str(path))
    assert back.scheme == scheme and back.scheme.axis == 0
    np.testing.assert_array_equal(np.asarray(back.codebook), np.asarray(q.codebook))
    assert np.asarray(back.codebook).shape == (10, 16)
    want = nq.dequantize(q)
    want = want.compute() if dask_backed else want
    np.testing.assert_array_equal(nq.dequantize(back).compute(), want)


def test_quantize_zarr_with_axis(tmp_path):
    import zarr

    x = gradient_like(8, 30, seed=8)
    src = zarr.create_array(str(tmp_path / "src.zarr"), shape=x.shape, chunks=(3, 30), dtype=x.dtype)
    src[...] = x
    scheme = nq.ASQ(bits=2, method="quiver", axis=0)
    q = nq.quantize_zarr(str(tmp_path / "src.zarr"), str(tmp_path / "dst.zarr"), scheme)
    np.testing.assert_array_equal(np.asarray(q.codebook), nq.quantize(x, scheme).codebook)
    np.testing.assert_array_equal(nq.dequantize(q).compute(), nq.dequantize(nq.quantize(x, scheme)))


def test_scheme_json_and_presets():
    s = nq.ASQ(bits=4, method="quiver", axis=0)
    assert nq.scheme_from_json(s.to_json()) == s
    assert '"axis": 0' in s.to_json()
    old = '{"type": "asq", "format_version": 1, "bits": 4, "method": "quiver", "m": null, "seed": 0}'
    assert nq.scheme_from_json(old) == nq.ASQ()
    assert nq.ASQ().axis is None
    p = resolve_scheme("asq4", axis=0)
    assert p == nq.ASQ(bits=4, method="quiver_approx", axis=0)
    q = nq.quantize(gradient_like(3, 20), p)
    assert q.codebook.shape == (3, 16)


def test_bad_axis():
    with pytest.raises(SchemeError, match=r"axis='0' is invalid"):
        nq.ASQ(axis="0")
    with pytest.raises(SchemeError, match=r"axis=True is invalid"):
        nq.ASQ(axis=True)
    x = np.ones((3, 4), np.float32)
    for axis in (2, -3):
        with pytest.raises(InputError, match=rf"axis={axis} is out of range for an array with ndim=2"):
            nq.quantize(x, nq.ASQ(axis=axis))
        with pytest.raises(InputError, match=rf"axis={axis} is out of range"):
            nq.quantize(da.from_array(x, chunks=2), nq.ASQ(axis=axis, method="quiver_approx"))
    with pytest.raises(InputError, match="NaN or infinite"):
        nq.quantize(np.array([[1.0, np.nan]]), nq.ASQ(axis=0))
