"""Adaptive rounding (GPTQ error feedback + clipping search) against calibration inputs."""

from collections import Counter

import dask.array as da
import numpy as np
import pytest

import nquant as nq
from nquant import adaptive
from nquant.adaptive import adaptive_round, hessian, hessian_merge, hessian_partial
from nquant.errors import InputError, SchemeError
from nquant.families import uniform
from nquant.packing import pack_codes
from tests.reference import adaptive as adaptive_ref
from tests.reference import gptq as gptq_ref


def problem(out=6, n=16, samples=48, seed=0, dtype=np.float32, corr=0.8):
    """Random weights and correlated inputs (in, samples): an AR(1) across input features."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((out, n)).astype(dtype)
    Z = rng.standard_normal((n, samples))
    X = np.empty_like(Z)
    X[0] = Z[0]
    for j in range(1, n):
        X[j] = corr * X[j - 1] + np.sqrt(1 - corr ** 2) * Z[j]
    X *= rng.uniform(0.5, 2.0, size=(n, 1))
    return W, X


def out_err(W, W_hat, X):
    return float(np.linalg.norm((W.astype(np.float64) - np.asarray(W_hat, np.float64)) @ X))


def nearest_err(W, X, scheme):
    return out_err(W, nq.dequantize(nq.quantize(W, scheme)), X)


SCHEMES = {
    "sym4_axis0": nq.Uniform(bits=4, symmetric=True, axis=0),
    "asym3_axis0": nq.Uniform(bits=3, axis=0),
    "asym3_float_zp": nq.Uniform(bits=3, axis=0, zero_point="float"),
    "sym4_block8": nq.Uniform(bits=4, symmetric=True, block_size=8),
    "asym4_block8_cross": nq.Uniform(bits=4, block_size=8),      # in=12: blocks straddle rows
    "sym3_tensor": nq.Uniform(bits=3, symmetric=True),
    "asym4_axis1": nq.Uniform(bits=4, axis=1),
    "sym4_narrow_nan": nq.Uniform(bits=4, symmetric=True, axis=0, narrow_range=True, nan="propagate"),
    "codebook": nq.Codebook(values=(-1.5, -0.7, -0.2, 0.0, 0.3, 0.9, 1.6)),
    "nf4_grid": nq.Codebook(values=tuple(float(v) * 2 for v in nq.normal_float(4))),
    "nf4_block8": nq.NF4(8),
    "blockwise3_rows_dq": nq.Blockwise(codebook=(-1.0, -0.4, -0.1, 0.0, 0.2, 0.5, 1.0), block_size=16,
                                       double_quant=True),
}


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_matches_reference_and_never_worse(name):
    scheme = SCHEMES[name]
    n = 12 if name.endswith("cross") else 16
    for seed in range(2):
        W, X = problem(n=n, seed=seed)
        q = adaptive_round(W, X, scheme)
        codes, params, obj, labels = adaptive_ref.adaptive_round(scheme, W, X)
        np.testing.assert_array_equal(q.codes_unpacked, _signed(scheme, codes))
        for k, v in params.items():
            np.testing.assert_array_equal(q.side[k], v, err_msg=k)
        W_hat = nq.dequantize(q)
        assert W_hat.dtype == W.dtype and W_hat.shape == W.shape
        err, err_nearest = out_err(W, W_hat, X), nearest_err(W, X, scheme)
        assert err <= err_nearest * (1 + 1e-12)
        np.testing.assert_allclose(err ** 2, obj.sum(), rtol=1e-9)
        info = q.info["adaptive_round"]
        assert sum(info["rows"].values()) == W.shape[0]
        assert {k: v for k, v in info["rows"].items() if v} == dict(Counter(labels))
        np.testing.assert_allclose(info["objective"], err ** 2, rtol=1e-9)
        np.testing.assert_allclose(info["objective_nearest"], err_nearest ** 2, rtol=1e-9)


def _signed(scheme, codes):
    if getattr(scheme, "is_signed", False):
        return (codes.astype(np.int16) + scheme.qrange[0]).astype(np.int8)
    return codes


@pytest.mark.parametrize("options", [{"act_order": True}, {"clip_search": False}, {"damp": 0.1},
                                     {"act_order": True, "clip_search": False, "damp": 0.0}])
def test_options_match_reference(options):
    scheme = nq.Uniform(bits=3, symmetric=True, axis=0)
    W, X = problem(out=5, n=16, samples=64, seed=3)
    q = adaptive_round(W, X, scheme, **options)
    codes, params, _, _ = adaptive_ref.adaptive_round(scheme, W, X, **options)
    np.testing.assert_array_equal(q.codes_unpacked, _signed(scheme, codes))
    np.testing.assert_array_equal(q.scale, params["scale"])
    info = q.info["adaptive_round"]
    assert info["act_order"] == options.get("act_order", False)
    assert info["clip_search"] == options.get("clip_search", True)


def test_gptq_alone_matches_reference_and_blocks_do_not_matter():
    """The error-feedback codes themselves (no selection), for several column blocks."""
    scheme = nq.Uniform(bits=3, axis=0)
    W, X = problem(out=7, n=20, samples=80, seed=5)
    H = X @ X.T
    params = uniform.fit(scheme, W)
    expect = gptq_ref.gptq(scheme, params, W, H, damp=0.01, act_order=True)
    perm = np.argsort(-np.diag(H), kind="stable")
    U = adaptive._factor(H, 0.01, perm)
    quant = adaptive._kernel_quantizer(scheme, params, W.dtype)
    gidx = adaptive.group_index(scheme, W.shape)
    for block in (1, 3, 7, 20, 128):
        got = adaptive.gptq_codes(W.astype(np.float64), U, perm, gidx, quant, block)
        np.testing.assert_array_equal(got, expect)


@pytest.mark.parametrize("seed", range(12))
def test_never_worse_than_nearest_on_random_problems(seed):
    """Uncorrelated, ill-conditioned and heavily damped problems: the calibration error never
    exceeds nearest rounding's (rows fall back to nearest rounding where GPTQ loses)."""
    rng = np.random.default_rng(100 + seed)
    out, n = int(rng.integers(1, 9)), int(rng.integers(2, 24))
    samples = int(rng.integers(1, 3 * n))
    W = (rng.standard_normal((out, n)) * rng.uniform(0.01, 10)).astype(np.float32)
    X = rng.standard_normal((n, samples)) * rng.uniform(0.1, 10, size=(n, 1))
    if seed % 3 == 0:
        X[rng.integers(0, n)] = 0.0  # an input that is always zero
    schemes = [nq.Uniform(bits=int(rng.integers(2, 5)), symmetric=bool(seed % 2), axis=0),
               nq.Uniform(bits=3, block_size=int(rng.integers(1, 9))),
               nq.Codebook(values=tuple(np.sort(rng.choice(np.linspace(-3, 3, 25), 5, replace=False))))]
    for scheme in schemes:
        for damp in (0.01, 1.0, 100.0):
            q = adaptive_round(W, X, scheme, damp=damp, act_order=bool(seed % 2))
            assert out_err(W, nq.dequantize(q), X) <= nearest_err(W, X, scheme) * (1 + 1e-9) + 1e-12


def test_threads_do_not_change_the_result():
    import numba

    W, X = problem(out=40, n=32, samples=100, seed=17)
    scheme = nq.Uniform(bits=3, symmetric=True, block_size=16)
    before = numba.get_num_threads()
    codes = [adaptive_round(W, X, scheme, threads=t).codes_unpacked for t in (None, 1, 2)]
    assert numba.get_num_threads() == before
    np.testing.assert_array_equal(codes[0], codes[1])
    np.testing.assert_array_equal(codes[0], codes[2])
    assert adaptive.auto_threads((1536, 384)) == 1 and adaptive.auto_threads((4096, 4096)) is None


def test_adaptive_beats_nearest_on_correlated_inputs():
    W, X = problem(out=32, n=64, samples=512, seed=7, corr=0.9)
    Xh = problem(out=32, n=64, samples=512, seed=8, corr=0.9)[1]
    scheme = nq.Uniform(bits=3, symmetric=True, axis=0)
    q = adaptive_round(W, X, scheme)
    assert out_err(W, nq.dequantize(q), X) < 0.8 * nearest_err(W, X, scheme)
    info = q.info["adaptive_round"]
    assert info["rel_error"] < info["rel_error_nearest"]
    assert info["rows"]["gptq"] > 0 and info["n_samples"] == 512
    # held-out inputs of the same distribution
    assert out_err(W, nq.dequantize(q), Xh) < nearest_err(W, Xh, scheme)


def test_float64_and_float16_weights():
    W, X = problem(seed=9, dtype=np.float64)
    scheme = nq.Uniform(bits=4, axis=0)
    for dtype in (np.float64, np.float16):
        Wd = W.astype(dtype)
        q = adaptive_round(Wd, X, scheme)
        assert q.dtype == dtype and nq.dequantize(q).dtype == dtype
        codes, params, _, _ = adaptive_ref.adaptive_round(scheme, Wd, X)
        np.testing.assert_array_equal(q.codes_unpacked, codes)


# ----------------------------------------------------------------------------- container and store


def test_result_is_an_ordinary_quantized_array(tmp_path):
    W, X = problem(out=8, n=32, seed=11)
    scheme = nq.Uniform(bits=4, symmetric=True, block_size=16)
    q = adaptive_round(W, X, scheme)
    base = nq.quantize(W, scheme)
    assert q.scheme == scheme and q.bits == base.bits and q.shape == base.shape
    assert set(q.side) == set(base.side)
    for k in q.side:
        assert q.side[k].dtype == base.side[k].dtype and q.side[k].shape == base.side[k].shape
    assert q.codes.shape == base.codes.shape and q.codes.dtype == np.uint8
    u = (q.codes_unpacked.astype(np.int16) - scheme.qrange[0]).astype(np.uint8)
    np.testing.assert_array_equal(q.codes, pack_codes(u, 4).reshape(q.codes.shape))
    assert q.bits_per_value == base.bits_per_value
    nq.save(q, tmp_path / "w.nq")
    r = nq.open(tmp_path / "w.nq")
    assert r.scheme == scheme
    assert r.info["adaptive_round"] == q.info["adaptive_round"]
    np.testing.assert_array_equal(np.asarray(nq.dequantize(r)), nq.dequantize(q))
    # an ordinary quantize stores no marker
    nq.save(base, tmp_path / "b.nq")
    assert "adaptive_round" not in nq.open(tmp_path / "b.nq").info


# ----------------------------------------------------------------------------- Hessian statistics


def test_hessian_any_chunking_equals_in_memory():
    _, X = problem(n=24, samples=301, seed=12)
    H = X @ X.T
    np.testing.assert_allclose(hessian(X), H, rtol=1e-12, atol=1e-9)
    for chunks in [(24, 50), (7, 301), (5, 13), (24, 1), (24, 301)]:
        Hd = hessian(da.from_array(X, chunks=chunks))
        np.testing.assert_allclose(Hd, H, rtol=1e-12, atol=1e-9)
        assert (Hd == Hd.T).all()
    batches = [X[:, i:i + 37] for i in range(0, X.shape[1], 37)]
    np.testing.assert_allclose(hessian(iter(batches)), H, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(hessian(batches), H, rtol=1e-12, atol=1e-9)
    st = hessian_partial(batches[0])
    for b in batches[1:]:
        st = hessian_merge(st, hessian_partial(b))
    assert st["n"] == 301
    np.testing.assert_allclose(adaptive.hessian_finalize(st), H, rtol=1e-12, atol=1e-9)
    # float32 inputs are accumulated in float64
    np.testing.assert_allclose(hessian(X.astype(np.float32)), X.astype(np.float32).astype(np.float64)
                               @ X.astype(np.float32).astype(np.float64).T, rtol=1e-12)


def test_calibration_forms_give_the_same_result():
    W, X = problem(out=5, n=16, samples=60, seed=13)
    scheme = nq.Uniform(bits=3, axis=0)
    q = adaptive_round(W, X, scheme)
    H = hessian(X)
    forms = [H, da.from_array(X, chunks=(16, 60)), [X[:, :30], X[:, 30:]], hessian_partial(X)]
    for form in forms:
        r = adaptive_round(W, form, scheme)
        np.testing.assert_array_equal(r.codes_unpacked, q.codes_unpacked)
    assert adaptive_round(W, H, scheme, kind="hessian").info["adaptive_round"]["n_samples"] is None
    # a Hessian summed in float32 is recognised as one; kind="inputs" forces inputs
    H32 = H.astype(np.float32)
    np.testing.assert_array_equal(adaptive_round(W, H32, scheme).codes_unpacked,
                                  adaptive_round(W, H32, scheme, kind="hessian").codes_unpacked)
    S = np.eye(16) * 2.0
    assert adaptive_round(W, S, scheme, kind="inputs").info["adaptive_round"]["n_samples"] == 16
    assert adaptive_round(W, S, scheme).info["adaptive_round"]["n_samples"] is None
    # a square X that is not symmetric is read as inputs
    Xs = X[:, :16]
    np.testing.assert_array_equal(adaptive_round(W, Xs, scheme).codes_unpacked,
                                  adaptive_round(W, Xs @ Xs.T, scheme).codes_unpacked)


def test_dead_inputs_need_no_damping():
    W, X = problem(out=4, n=10, samples=40, seed=14)
    X[3] = 0.0
    q = adaptive_round(W, X, nq.Uniform(bits=3, axis=0), damp=0.0)
    codes, _, _, _ = adaptive_ref.adaptive_round(nq.Uniform(bits=3, axis=0), W, X, damp=0.0)
    np.testing.assert_array_equal(q.codes_unpacked, codes)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_give_clear_errors():
    W, X = problem(out=4, n=10, samples=40, seed=15)
    s = nq.Uniform(bits=4, axis=0)
    with pytest.raises(InputError, match=r"X shape=\(9, 40\) does not match W with in=10"):
        adaptive_round(W, X[:9], s)
    with pytest.raises(InputError, match=r"X has 9 input features \(rows\) but W has in=10"):
        adaptive_round(W, da.from_array(X[:9], chunks=(9, 10)), s)
    with pytest.raises(InputError, match="pass X.T"):
        adaptive_round(W, X.T, s)
    with pytest.raises(InputError, match=r"H shape=\(9, 9\)"):
        adaptive_round(W, np.eye(9), s, kind="hessian")
    with pytest.raises(InputError, match="2-D weight matrix"):
        adaptive_round(W[0], X, s)
    with pytest.raises(InputError, match="dtype=int64"):
        adaptive_round(W.astype(np.int64), X, s)
    Wn = W.copy()
    Wn[1, 2] = np.nan
    with pytest.raises(InputError, match="W contains 1 non-finite"):
        adaptive_round(Wn, X, s)
    Xn = X.copy()
    Xn[0, 0] = np.inf
    with pytest.raises(InputError, match="X contains 1 non-finite"):
        adaptive_round(W, Xn, s)
    with pytest.raises(InputError, match="non-finite"):
        hessian(da.from_array(Xn, chunks=(10, 7)))
    Hn = X @ X.T
    Hn[2, 2] = np.nan
    with pytest.raises(InputError, match="H contains 1 non-finite"):
        adaptive_round(W, Hn, s, kind="hessian")
    with pytest.raises(InputError, match="not symmetric"):
        adaptive_round(W, X[:, :10], s, kind="hessian")
    # singular H (fewer samples than inputs) without damping
    with pytest.raises(InputError, match="H is singular.*damp=0.*pass damp > 0"):
        adaptive_round(W, X[:, :6], s, damp=0.0)
    adaptive_round(W, X[:, :6], s, damp=0.01)  # damping makes it usable
    with pytest.raises(InputError, match="merge Hessians of shapes"):
        hessian([X, X[:5]])
    with pytest.raises(InputError, match="empty iterable"):
        hessian([])


def test_bad_options_give_clear_errors():
    W, X = problem(out=4, n=10, samples=40, seed=16)
    with pytest.raises(SchemeError, match="type='kmeans_blockwise' is not supported by adaptive_round"):
        adaptive_round(W, X, nq.KMeansBlockwise())
    with pytest.raises(SchemeError, match="rounding='stochastic' is invalid for adaptive_round"):
        adaptive_round(W, X, nq.Uniform(bits=4, rounding="stochastic"))
    with pytest.raises(SchemeError, match="scheme=.*is invalid"):
        adaptive_round(W, X, "int4")
    s = nq.Uniform(bits=4, axis=0)
    for kw, match in [({"damp": -0.1}, "damp=-0.1"), ({"column_block": 0}, "column_block=0"),
                      ({"clip_grid": [1.2]}, "clip_grid"), ({"clip_grid": []}, "clip_grid"),
                      ({"clip_refine": -1}, "clip_refine=-1"), ({"kind": "x"}, "kind='x'")]:
        with pytest.raises(SchemeError, match=match):
            adaptive_round(W, X, s, **kw)
    with pytest.raises(SchemeError, match="threads=0"):
        adaptive_round(W, X, s, threads=0)
    with pytest.raises(InputError, match="axis=2 is out of range"):
        adaptive_round(W, X, nq.Uniform(bits=4, axis=2))


# ----------------------------------------------------------------------------- adaptive_codebook


@pytest.mark.parametrize("bits, seed", [(2, 0), (3, 1), (4, 2)])
def test_adaptive_codebook_matches_reference(bits, seed):
    W, X = problem(out=7, n=16, samples=64, seed=20 + seed)
    W[3] = 0                                      # an all-zero row decodes to zeros
    q = adaptive.adaptive_codebook(W, X, bits)
    codes, absmax, levels = adaptive_ref.adaptive_codebook(W, X, bits)
    assert q.scheme == nq.Blockwise(codebook=tuple(float(v) for v in levels), block_size=16)
    np.testing.assert_array_equal(q.codes_unpacked, codes)
    np.testing.assert_array_equal(q.side["absmax"], absmax)
    W_hat = nq.dequantize(q)
    np.testing.assert_array_equal(W_hat, (levels[codes] * absmax[:, None]).astype(np.float32))
    np.testing.assert_array_equal(W_hat[3], 0)
    # stored bits: the codes and one float32 absmax per row (the levels belong to the scheme)
    assert q.nbytes * 8 == W.size * bits + 32 * W.shape[0]
    info = q.info["adaptive_round"]
    np.testing.assert_allclose(info["objective"], out_err(W, W_hat, X) ** 2, rtol=1e-9)
    assert info["levels_fit"] == "kmeans1d"


def test_adaptive_codebook_beats_nearest_rounding_and_round_trips(tmp_path):
    W, X = problem(out=12, n=32, samples=200, seed=31, corr=0.9)
    q = adaptive.adaptive_codebook(W, X, 3, act_order=False, damp=0.05)
    nearest = nq.quantize(W, q.scheme)          # the same codebook and row scales, nearest codes
    np.testing.assert_array_equal(nearest.side["absmax"], q.side["absmax"])
    err, err_nearest = out_err(W, nq.dequantize(q), X), out_err(W, nq.dequantize(nearest), X)
    assert err < 0.9 * err_nearest
    nq.save(q, tmp_path / "q.zarr")
    np.testing.assert_array_equal(nq.dequantize(nq.open(tmp_path / "q.zarr")), nq.dequantize(q))
    # the Hessian gives what the inputs give; double quantization stores uint8 absmax codes
    np.testing.assert_array_equal(adaptive.adaptive_codebook(W, hessian(X), 3).codes,
                                  adaptive.adaptive_codebook(W, X, 3).codes)
    dq = adaptive.adaptive_codebook(W, X, 4, double_quant=True)
    assert dq.scheme.double_quant and dq.side["absmax_codes"].dtype == np.uint8
    assert out_err(W, nq.dequantize(dq), X) < out_err(W, nq.dequantize(nq.quantize(W, dq.scheme)), X)


def test_adaptive_codebook_edge_cases_and_errors():
    X = np.random.default_rng(0).standard_normal((8, 30))
    const = np.full((3, 8), 0.5, np.float32)
    q = adaptive.adaptive_codebook(const, X, 4)
    np.testing.assert_array_equal(nq.dequantize(q), const)   # one distinct value: exact
    assert len(q.scheme.codebook) == 2
    np.testing.assert_array_equal(nq.dequantize(adaptive.adaptive_codebook(np.zeros((2, 8)), X, 4)), 0)
    W = np.random.default_rng(1).standard_normal((3, 8))
    np.testing.assert_array_equal(nq.dequantize(adaptive.adaptive_codebook(W, np.zeros((8, 5)), 2)).shape, (3, 8))
    for bits in (0, 9, True, 2.0):
        with pytest.raises(SchemeError, match=f"bits={bits!r} is invalid"):
            adaptive.adaptive_codebook(W, X, bits)
    with pytest.raises(SchemeError, match="double_quant=1.5 is invalid"):
        adaptive.adaptive_codebook(W, X, 4, double_quant=1.5)
    with pytest.raises(SchemeError, match="block_size=3 is invalid: expected None or a divisor of in=8"):
        adaptive.adaptive_codebook(W, X, 4, block_size=3)
    with pytest.raises(SchemeError, match="codebook is invalid for adaptive_codebook"):
        adaptive.adaptive_codebook(W, X, 4, codebook=(0.0, 1.0))
    with pytest.raises(InputError, match="X shape=\\(30, 8\\) does not match"):
        adaptive.adaptive_codebook(W, X.T, 4, kind="inputs")
    W[0, 0] = np.nan
    with pytest.raises(InputError, match="W contains 1 non-finite"):
        adaptive.adaptive_codebook(W, X, 4)


def test_factored_hessian_and_binned_levels():
    from nquant.adaptive import factor_hessian, fit_levels

    rng = np.random.default_rng(5)
    W = rng.standard_normal((12, 32))
    X = rng.standard_normal((32, 200)) * np.linspace(0.2, 2.0, 32)[:, None]
    F = factor_hessian(X)
    for bits, block in ((3, None), (4, 16)):
        a = adaptive.adaptive_codebook(W, X, bits, block_size=block)
        b = adaptive.adaptive_codebook(W, F, bits, block_size=block)
        np.testing.assert_array_equal(a.codes, b.codes)
        assert a.scheme == b.scheme
    # another damping than the factor's: factored again, as with the plain Hessian
    np.testing.assert_array_equal(adaptive.adaptive_codebook(W, F, 4, damp=0.1).codes,
                                  adaptive.adaptive_codebook(W, hessian(X), 4, damp=0.1).codes)
    with pytest.raises(InputError, match=r"H shape=\(32, 32\) does not match W with in=16"):
        adaptive.adaptive_codebook(W[:, :16], F, 4)
    with pytest.raises(SchemeError, match="damp=-1 is invalid"):
        factor_hessian(X, damp=-1)
    # binned levels: within a bin width of the exact fit
    V = np.clip(rng.standard_normal(5000) / 3, -1, 1)
    w = rng.random(5000)
    exact = fit_levels(V, w, 8)
    np.testing.assert_allclose(fit_levels(V, w, 8, bins=1 << 14), exact, atol=4 / (1 << 14))
    q = adaptive.adaptive_codebook(W, X, 4, bins=4096)
    assert q.info["adaptive_round"]["levels_fit"] == "kmeans1d over 4096 bins"
    with pytest.raises(SchemeError, match="bins=1 is invalid"):
        adaptive.adaptive_codebook(W, X, 4, bins=1)


@pytest.mark.parametrize("scale_dtype", ["float16", "bfloat16"])
def test_blockwise_rounding_uses_the_stored_absmax(scale_dtype):
    """Codes are chosen against the absmax as stored (rounded up to float16 / bfloat16), so the
    decoded matrix is the one the error feedback and the objectives saw."""
    rng = np.random.default_rng(6)
    W = (rng.standard_normal((8, 64)) * np.exp(2 * rng.standard_normal((8, 1)))).astype(np.float32)
    scheme = nq.NF4(32, scale_dtype=scale_dtype)
    # H = I without damping: error feedback propagates nothing, so the codes are nearest rounding's
    q = adaptive_round(W, np.eye(64), scheme, damp=0.0, kind="hessian")
    np.testing.assert_array_equal(q.codes_unpacked, nq.quantize(W, scheme).codes_unpacked)
    X = rng.standard_normal((64, 300)) * np.linspace(0.1, 3.0, 64)[:, None]
    H = hessian(X)
    for q in (adaptive_round(W, X, scheme), adaptive.adaptive_codebook(W, X, 3, block_size=32,
                                                                      scale_dtype=scale_dtype)):
        assert q.scheme.scale_dtype == scale_dtype
        E = W.astype(np.float64) - np.asarray(nq.dequantize(q), np.float64)
        info = q.info["adaptive_round"]
        assert info["objective"] == pytest.approx(float(np.einsum("ij,ij->", E @ H, E)), rel=1e-9)
        assert info["objective"] <= info["objective_nearest"]
