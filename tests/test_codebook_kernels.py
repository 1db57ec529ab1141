"""Sorted-codebook and blockwise (NF4) kernels against the references in tests/reference/codebook.py."""

import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nquant.codebooks.grids import dynamic_map, fp8_e4m3, normal_float, power_of_two, uniform_grid
from nquant.kernels import blockwise as bw
from nquant.kernels import codebook1d as cb
from nquant.kernels.rng import stream_key
from nquant.kernels.rounding import CEIL, FLOOR, NEAREST, NEAREST_AWAY, STOCHASTIC
from tests.reference import codebook as ref

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "bnb_nf4_golden.npz"
NF4 = normal_float(4)


def _readonly(*arrays):
    out = []
    for a in arrays:
        a = np.array(a, copy=True)
        a.setflags(write=False)
        out.append(a)
    return out


# ---------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------
@st.composite
def codebooks(draw):
    kind = draw(st.sampled_from(["nf", "fp8", "pow2", "uniform", "random", "dense", "tiny", "one"]))
    if kind == "nf":
        return normal_float(draw(st.integers(2, 8)))
    if kind == "fp8":
        return fp8_e4m3()
    if kind == "pow2":
        return power_of_two(draw(st.integers(2, 8)))
    if kind == "uniform":
        return uniform_grid(-3.0, 5.0, draw(st.integers(2, 256)))
    if kind == "dense":  # more than 2 thresholds per 2**-7 relative bucket: binary-search path
        return (1.0 + np.arange(draw(st.integers(8, 256))) * 2.0**-12).astype(np.float32)
    if kind == "one":
        return np.array([draw(st.floats(-2, 2, width=32))], np.float32)
    k = draw(st.integers(2, 256))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = 1e-20 if kind == "tiny" else 1.0
    lv = np.unique((rng.standard_normal(k) * scale).astype(np.float32))
    return lv


def adversarial_values(levels, n, seed, dtype):
    """Random values mixed with levels, exact midpoints (and neighbours), extremes, NaN/inf."""
    rng = np.random.default_rng(seed)
    lv = levels.astype(np.float64)
    lo, hi = lv[0], lv[-1]
    span = max(hi - lo, 1e-30)
    parts = [rng.uniform(lo - 0.2 * span, hi + 0.2 * span, n)]
    parts.append(rng.choice(lv, n))
    if lv.size > 1:
        mids = ((lv[:-1] + lv[1:]) / 2).astype(dtype)  # exact for float64 data
        parts += [rng.choice(mids, n), np.nextafter(rng.choice(mids, n).astype(dtype), np.inf),
                  np.nextafter(rng.choice(mids, n).astype(dtype), -np.inf)]
    parts.append(rng.standard_normal(n) * 10.0 ** rng.integers(-40, 38, n))
    parts.append(np.array([0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38, np.inf, -np.inf, np.nan]))
    x = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
    with np.errstate(over="ignore"):
        x = x.astype(dtype)
    return x[rng.permutation(x.size)]


def layouts(x, n_rows_options=(1, 2, 3, 5)):
    """The same flat data as several (R, L) row layouts with their row_index."""
    out = []
    for r in n_rows_options:
        if x.size % r == 0:
            x2 = np.ascontiguousarray(x.reshape(r, -1))
            out.append((x2, np.arange(r, dtype=np.int64) * x2.shape[1]))
    return out


def run_sorted(x2d, row_index, levels, mode, seed=0):
    out = np.empty(x2d.shape, np.uint8)
    bad = cb.quantize_sorted(x2d, row_index, levels, mode, np.uint64(stream_key(seed)), out)
    return out, bad


# ---------------------------------------------------------------------------------------
# quantize_sorted
# ---------------------------------------------------------------------------------------
@given(levels=codebooks(), seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]))
def test_nearest_floor_ceil_match_references(levels, seed, dtype):
    x = adversarial_values(levels, 40, seed, dtype)
    x = x[: x.size - x.size % 3]
    finite = np.isfinite(x)
    for x2, ri in layouts(x, (1, 3)):
        xr, rir, lvr = _readonly(x2, ri, levels)
        for mode, expect in [
            (NEAREST, ref.nearest(x, levels, "lower")),
            (NEAREST_AWAY, ref.nearest(x, levels, "away")),
            (FLOOR, ref.floor_codes(x, levels)),
            (CEIL, ref.ceil_codes(x, levels)),
        ]:
            got, bad = run_sorted(xr, rir, lvr, mode)
            assert bad == np.count_nonzero(~finite)
            np.testing.assert_array_equal(got.reshape(-1)[finite], expect[finite], err_msg=f"mode {mode}")
            if mode != NEAREST_AWAY:  # infinities go to the end levels
                inf = np.isinf(x)
                np.testing.assert_array_equal(got.reshape(-1)[inf], np.where(x[inf] > 0, levels.size - 1, 0))


def test_ties_go_to_the_lower_level_and_levels_map_to_themselves():
    lv = np.array([-1.0, 0.0, 0.5, 2.0], np.float32)
    x = np.array([[-0.5, 0.25, 1.25, -1.0, 0.0, 0.5, 2.0, 7.0, -7.0]], np.float32)
    got, _ = run_sorted(x, np.zeros(1, np.int64), lv, NEAREST)
    np.testing.assert_array_equal(got[0], [0, 1, 2, 0, 1, 2, 3, 3, 0])
    got, _ = run_sorted(x, np.zeros(1, np.int64), lv, NEAREST_AWAY)
    np.testing.assert_array_equal(got[0], [0, 2, 3, 0, 1, 2, 3, 3, 0])


def test_float32_midpoint_that_rounds_up_is_still_exact():
    # levels whose exact midpoint is not a float32: a value just above it must go up
    a = np.float32(1.0)
    b = np.nextafter(np.nextafter(a, np.float32(2)), np.float32(2))  # 1 + 2 ulp: midpoint 1 + 1 ulp
    c = np.nextafter(a, np.float32(2))  # 1 + 1 ulp, exactly the midpoint: a tie -> lower
    lv = np.array([a, b], np.float32)
    got, _ = run_sorted(np.array([[c]], np.float32), np.zeros(1, np.int64), lv, NEAREST)
    assert got[0, 0] == 0
    lv2 = np.array([1.0, 1.0 + 2.0**-23 * 3], np.float32)  # midpoint 1 + 1.5 ulp: not a float32
    x = np.array([[1.0 + 2.0**-22]], np.float32)  # 1 + 2 ulp > midpoint -> upper level
    got, _ = run_sorted(x, np.zeros(1, np.int64), lv2, NEAREST)
    assert got[0, 0] == 1


@given(levels=codebooks(), seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]),
       rng_seed=st.integers(-(2**63), 2**63 - 1))
def test_stochastic_matches_reference_stream(levels, seed, dtype, rng_seed):
    x = adversarial_values(levels, 5, seed, dtype)
    x = x[np.isfinite(x)][:36]
    x2 = x.reshape(6, 6) if x.size == 36 else x.reshape(1, -1)
    ri = np.arange(x2.shape[0], dtype=np.int64) * x2.shape[1] + 1000  # a chunk inside a bigger array
    got, _ = run_sorted(*_readonly(x2, ri, levels), STOCHASTIC, seed=rng_seed)
    np.testing.assert_array_equal(got, ref.stochastic(x2, ri, levels, rng_seed))


@given(levels=codebooks(), seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]))
def test_codes_do_not_depend_on_the_row_layout(levels, seed, dtype):
    x = adversarial_values(levels, 60, seed, dtype)
    x = x[: x.size - x.size % 30]
    for mode in (NEAREST, FLOOR, CEIL, STOCHASTIC):
        results = [run_sorted(x2, ri, levels, mode, seed=seed)[0].reshape(-1) for x2, ri in layouts(x)]
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])


def test_long_rows_split_into_tasks_give_the_same_codes():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(3 * cb.CHUNK + 17).astype(np.float32)
    lv = normal_float(4)
    flat, _ = run_sorted(x[None, :], np.zeros(1, np.int64), lv, STOCHASTIC, seed=9)
    n0 = cb.CHUNK + 5
    a, _ = run_sorted(x[None, :n0], np.zeros(1, np.int64), lv, STOCHASTIC, seed=9)
    b, _ = run_sorted(x[None, n0:], np.array([n0], np.int64), lv, STOCHASTIC, seed=9)
    np.testing.assert_array_equal(flat[0], np.concatenate([a[0], b[0]]))
    near, _ = run_sorted(x[None, :], np.zeros(1, np.int64), lv, NEAREST)
    np.testing.assert_array_equal(near[0], ref.nearest(x, lv))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stochastic_rounding_is_unbiased(dtype):
    # 10**6 draws of one value between two NF4 levels: the mean of the decoded values must be
    # within 5 standard errors of the value (the per-draw std is (b - a) sqrt(p (1 - p))).
    n = 10**6
    lv = normal_float(4)
    a, b = float(lv[9]), float(lv[10])
    for v in (a + 0.3 * (b - a), a + 0.01 * (b - a)):
        x = np.full((1, n), v, dtype)
        codes, _ = run_sorted(x, np.zeros(1, np.int64), lv, STOCHASTIC, seed=12345)
        assert set(np.unique(codes)) <= {9, 10}
        dec = lv.astype(np.float64)[codes]
        p = (float(dtype(v)) - a) / (b - a)
        se = (b - a) * np.sqrt(p * (1 - p) / n)
        assert abs(dec.mean() - float(dtype(v))) < 5 * se + 1e-7 * (b - a)


def test_dequantize_table():
    lv = fp8_e4m3()
    rng = np.random.default_rng(0)
    codes = rng.integers(0, lv.size, (4, 1000)).astype(np.uint8)
    for dt in (np.float32, np.float64):
        out = np.empty(codes.shape, dt)
        cb.dequantize_table(*_readonly(codes, lv), out)
        np.testing.assert_array_equal(out, lv[codes].astype(dt))


# ---------------------------------------------------------------------------------------
# blockwise absmax / NF4
# ---------------------------------------------------------------------------------------
@st.composite
def block_data(draw):
    block = draw(st.sampled_from([2, 4, 16, 64, 256]))
    n_blocks = draw(st.integers(1, 12))
    tail = draw(st.integers(0, block - 1))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    n = n_blocks * block + tail
    scale = 10.0 ** rng.integers(-30, 30, n_blocks + 1)
    x = (rng.standard_normal(n) * np.repeat(scale, block)[:n]).astype(np.float32)
    mids = ((NF4[:-1] + NF4[1:]) / np.float32(2)).astype(np.float32)
    for b in range(n_blocks + 1):  # some blocks of exact ties (absmax a power of two)
        if rng.random() < 0.4:
            s, e = b * block, min(n, (b + 1) * block)
            k = e - s
            if k == 0:
                continue
            p2 = np.float32(2.0 ** int(rng.integers(-3, 4)))
            vals = np.concatenate([[1.0], rng.choice(np.concatenate([mids, NF4, np.nextafter(mids, 2)]), k)])
            x[s:e] = (vals[:k] * rng.choice([-1, 1], k) * p2).astype(np.float32)
        elif rng.random() < 0.15:
            x[b * block:(b + 1) * block] = 0.0
    return x, block


@given(data=block_data())
def test_blockwise_absmax_matches_reference(data):
    x, block = data
    out = np.empty(-(-x.size // block), np.float32)
    bw.blockwise_absmax(*_readonly(x), block, out)
    np.testing.assert_array_equal(out, ref.blockwise_absmax(x, block))


def test_blockwise_absmax_propagates_nan_and_inf():
    x = np.ones(64 * 3, np.float32)
    x[5] = np.nan
    x[64 + 7] = -np.inf
    x[64 * 2 + 1] = np.nan
    x[64 * 2 + 2] = np.inf
    out = np.empty(3, np.float32)
    bw.blockwise_absmax(x, 64, out)
    assert np.isnan(out[0]) and out[1] == np.inf and np.isnan(out[2])


@given(data=block_data())
def test_quantize_blockwise_is_bitsandbytes_rule(data):
    x, block = data
    n = x.size
    expect_codes, expect_absmax = ref.bnb_quantize_4bit(x, block, NF4)
    absmax = np.empty(-(-n // block), np.float32)
    codes = np.empty(n, np.uint8)
    bw.absmax_quantize_blockwise(*_readonly(x), block, NF4, absmax, codes)
    np.testing.assert_array_equal(codes, expect_codes)
    # bitsandbytes stores the clamped absmax (1e-38) for an all-zero partial last block only
    np.testing.assert_array_equal(np.maximum(absmax[-1:], np.float32(1e-38)) if n % block else absmax[-1:],
                                  expect_absmax[-1:])
    np.testing.assert_array_equal(absmax[:-1], expect_absmax[:-1])
    # two passes give the same codes; packed output packs the same codes
    codes2 = np.empty(n, np.uint8)
    bw.quantize_blockwise(*_readonly(x, absmax), block, NF4, codes2)
    np.testing.assert_array_equal(codes2, codes)
    packed = np.empty((n + 1) // 2, np.uint8)
    bw.quantize_blockwise(x, absmax, block, NF4, packed, packed=True)
    np.testing.assert_array_equal(packed, ref.pack4(codes))
    absmax3 = np.empty_like(absmax)
    packed3 = np.empty_like(packed)
    bw.absmax_quantize_blockwise(x, block, NF4, absmax3, packed3, packed=True)
    np.testing.assert_array_equal(packed3, packed)
    np.testing.assert_array_equal(absmax3, absmax)
    # decode, packed and unpacked
    expect = ref.dequantize_blockwise(codes, absmax, block, NF4)
    for c, pk in ((codes, False), (packed, True)):
        out = np.empty(n, np.float32)
        bw.dequantize_blockwise(*_readonly(c, absmax), block, NF4, out, packed=pk)
        np.testing.assert_array_equal(out, expect)


def test_zero_blocks_code_to_level_zero_and_decode_to_zero():
    x = np.zeros(64 * 2 + 6, np.float32)
    x[:64] = np.linspace(-1, 1, 64)
    absmax = np.empty(3, np.float32)
    codes = np.empty(x.size, np.uint8)
    bw.absmax_quantize_blockwise(x, 64, NF4, absmax, codes)
    assert absmax[1] == 0 and absmax[2] == 0
    assert np.all(codes[64:] == 7) and NF4[7] == 0
    out = np.full(x.size, np.nan, np.float32)
    bw.dequantize_blockwise(codes, absmax, 64, NF4, out)
    assert np.all(out[64:] == 0)


@pytest.mark.parametrize("levels", [power_of_two(4), fp8_e4m3() / np.float32(448), uniform_grid(-1, 1, 7)])
def test_quantize_blockwise_other_codebooks(levels):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(64 * 20 + 3).astype(np.float32)
    codes = np.empty(x.size, np.uint8)
    absmax = np.empty(21, np.float32)
    bw.absmax_quantize_blockwise(x, 64, levels.astype(np.float32), absmax, codes)
    expect, _ = ref.bnb_quantize_4bit(x, 64, levels)
    np.testing.assert_array_equal(codes, expect)


@given(seed=st.integers(0, 2**31), n=st.integers(1, 1500))
def test_lut8_is_bitsandbytes_8bit_rule(seed, n):
    rng = np.random.default_rng(seed)
    code = dynamic_map()
    cm = (np.float32(0.5) * (code[:-1] + code[1:])).astype(np.float32)
    x = np.concatenate([rng.standard_normal(n), rng.choice(cm, n) * rng.choice([1, 4], n)]).astype(np.float32)
    x[rng.random(x.size) < 0.2] = 0
    codes = np.empty(x.size, np.uint8)
    absmax = np.empty(-(-x.size // 256), np.float32)
    bw.quantize_blockwise_lut8(*_readonly(x), 256, code, absmax, codes)
    expect_codes, expect_absmax = ref.bnb_quantize_blockwise_8bit(x, 256, code)
    np.testing.assert_array_equal(codes, expect_codes)
    np.testing.assert_array_equal(absmax, expect_absmax)


def test_double_quantize_round_trip():
    rng = np.random.default_rng(1)
    absmax = np.abs(rng.standard_normal(1000)).astype(np.float32) + 0.5
    codes, absmax2, offset = bw.double_quantize(absmax)
    assert codes.dtype == np.uint8 and absmax2.shape == (4,) and offset.dtype == np.float32
    assert offset == np.float32(absmax.astype(np.float64).mean())
    back = bw.double_dequantize(codes, absmax2, offset)
    # 8-bit dynamic map: relative step <= ~1.4% of the block's max |absmax - offset|
    assert np.max(np.abs(back - absmax)) <= 0.02 * np.max(np.abs(absmax - offset))


# ---------------------------------------------------------------------------------------
# golden vectors from bitsandbytes
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.exists():
        pytest.skip("tests/fixtures/bnb_nf4_golden.npz missing")
    return dict(np.load(GOLDEN))


def test_golden_nf4_codes_absmax_and_decode(golden):
    assert str(golden["bitsandbytes_version"]) == "0.50.2"
    x = golden["x"]
    n = x.size
    absmax = np.empty(-(-n // 64), np.float32)
    packed = np.empty((n + 1) // 2, np.uint8)
    bw.absmax_quantize_blockwise(x, 64, NF4, absmax, packed, packed=True)
    np.testing.assert_array_equal(packed, golden["packed"])
    np.testing.assert_array_equal(absmax, golden["absmax"])
    out = np.empty(n, np.float32)
    bw.dequantize_blockwise(packed, absmax, 64, NF4, out, packed=True)
    np.testing.assert_array_equal(out, golden["x_hat"])


def test_golden_zero_partial_block(golden):
    x = golden["x_zero_tail"]
    absmax = np.empty(2, np.float32)
    packed = np.empty((x.size + 1) // 2, np.uint8)
    bw.absmax_quantize_blockwise(x, 64, NF4, absmax, packed, packed=True)
    np.testing.assert_array_equal(packed, golden["packed_zero_tail"])
    assert absmax[1] == 0 and golden["absmax_zero_tail"][1] == np.float32(1e-38)  # the documented difference
    assert absmax[0] == golden["absmax_zero_tail"][0]


def test_golden_double_quant_state(golden):
    np.testing.assert_array_equal(dynamic_map(), golden["dq_nested_quant_map"])
    assert int(golden["dq_nested_blocksize"]) == bw.DOUBLE_QUANT_BLOCK
    absmax = golden["dq_absmax"]
    codes, absmax2, offset = bw.double_quantize(absmax, offset=golden["dq_nested_offset"])
    np.testing.assert_array_equal(codes, golden["dq_qabsmax"])
    np.testing.assert_array_equal(absmax2, golden["dq_nested_absmax"])
    # our own float64 mean lands within 2 ulp of torch's float32 mean
    _, _, own = bw.double_quantize(absmax)
    assert abs(own - golden["dq_nested_offset"]) <= 2 * np.spacing(golden["dq_nested_offset"])
    # decode the whole nested state as bitsandbytes' dequantize_4bit does
    rec = bw.double_dequantize(golden["dq_qabsmax"], golden["dq_nested_absmax"], golden["dq_nested_offset"])
    out = np.empty(absmax.size * 64, np.float32)
    bw.dequantize_blockwise(golden["dq_packed"], rec, 64, NF4, out, packed=True)
    np.testing.assert_array_equal(out, golden["dq_x_hat"])


def test_golden_8bit_blockwise(golden):
    x = golden["x8"]
    codes = np.empty(x.size, np.uint8)
    absmax = np.empty(-(-x.size // 256), np.float32)
    bw.quantize_blockwise_lut8(x, 256, golden["code8"], absmax, codes)
    np.testing.assert_array_equal(codes, golden["codes8"])
    np.testing.assert_array_equal(absmax, golden["absmax8"])


def test_kernels_use_only_the_jit_wrappers():
    src = pathlib.Path(cb.__file__).read_text() + pathlib.Path(bw.__file__).read_text()
    assert "numba.njit" not in src and "@njit" not in src
