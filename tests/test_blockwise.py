"""Blockwise absmax (NF4) kernels (``nquant.kernels.blockwise``) against ``tests/reference/blockwise.py``
and bitsandbytes' golden vectors."""

import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nquant.codebooks.grids import dynamic_map, fp8_e4m3, normal_float, power_of_two, uniform_grid
from nquant.kernels import blockwise as bw
from tests.helpers import readonly
from tests.reference import bitpack as bitpack_ref
from tests.reference import blockwise as blockwise_ref

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "bnb_nf4_golden.npz"
NF4 = normal_float(4)


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
    bw.blockwise_absmax(readonly(x), block, out)
    np.testing.assert_array_equal(out, blockwise_ref.blockwise_absmax(x, block))


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
    expect_codes, expect_absmax = blockwise_ref.bnb_quantize_4bit(x, block, NF4)
    absmax = np.empty(-(-n // block), np.float32)
    codes = np.empty(n, np.uint8)
    bw.absmax_quantize_blockwise(readonly(x), block, NF4, absmax, codes)
    np.testing.assert_array_equal(codes, expect_codes)
    # bitsandbytes stores the clamped absmax (1e-38) for an all-zero partial last block only
    np.testing.assert_array_equal(np.maximum(absmax[-1:], np.float32(1e-38)) if n % block else absmax[-1:],
                                  expect_absmax[-1:])
    np.testing.assert_array_equal(absmax[:-1], expect_absmax[:-1])
    # two passes give the same codes; packed output packs the same codes
    codes2 = np.empty(n, np.uint8)
    bw.quantize_blockwise(readonly(x), readonly(absmax), block, NF4, codes2)
    np.testing.assert_array_equal(codes2, codes)
    packed = np.empty((n + 1) // 2, np.uint8)
    bw.quantize_blockwise(x, absmax, block, NF4, packed, packed=True)
    np.testing.assert_array_equal(packed, bitpack_ref.pack(codes, 4))
    absmax3 = np.empty_like(absmax)
    packed3 = np.empty_like(packed)
    bw.absmax_quantize_blockwise(x, block, NF4, absmax3, packed3, packed=True)
    np.testing.assert_array_equal(packed3, packed)
    np.testing.assert_array_equal(absmax3, absmax)
    # decode, packed and unpacked
    expect = blockwise_ref.dequantize_blockwise(codes, absmax, block, NF4)
    for c, pk in ((codes, False), (packed, True)):
        out = np.empty(n, np.float32)
        bw.dequantize_blockwise(readonly(c), readonly(absmax), block, NF4, out, packed=pk)
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
    expect, _ = blockwise_ref.bnb_quantize_4bit(x, 64, levels)
    np.testing.assert_array_equal(codes, expect)


@pytest.mark.parametrize("levels", [np.array([-2.0, -0.5, 0.0, 0.5, 2.0]), np.array([0.0, 1.0]),
                                    np.linspace(-1.5, 1.5, 16)])
def test_quantize_blockwise_levels_beyond_one(levels):
    """Midpoints outside [-1, 1] (y is clamped there first) and fewer than 16 levels."""
    levels = levels.astype(np.float32)
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.standard_normal(64 * 9 + 5), [0.0, -1.0, 1.0]]).astype(np.float32)
    codes = np.empty(x.size, np.uint8)
    absmax = np.empty(-(-x.size // 64), np.float32)
    bw.absmax_quantize_blockwise(readonly(x), 64, levels, absmax, codes)
    np.testing.assert_array_equal(codes, blockwise_ref.bnb_quantize_4bit(x, 64, levels)[0])
    packed = np.empty((x.size + 1) // 2, np.uint8)
    bw.quantize_blockwise(x, absmax, 64, levels, packed, packed=True)
    np.testing.assert_array_equal(packed, bitpack_ref.pack(codes, 4))


def test_quantize_blockwise_many_blocks_over_threads():
    """Enough values that several threads take blocks of rows; a partial last block."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(3 * 65536 + 70) * np.repeat(10.0 ** rng.integers(-3, 3, 3 * 1024 + 2), 64)[
        :3 * 65536 + 70]).astype(np.float32)
    expect_codes, expect_absmax = blockwise_ref.bnb_quantize_4bit(x, 64, NF4)
    absmax = np.empty(expect_absmax.size, np.float32)
    packed = np.empty((x.size + 1) // 2, np.uint8)
    bw.absmax_quantize_blockwise(readonly(x), 64, NF4, absmax, packed, packed=True)
    np.testing.assert_array_equal(packed, bitpack_ref.pack(expect_codes, 4))
    np.testing.assert_array_equal(absmax, expect_absmax)


@given(seed=st.integers(0, 2**31), n=st.integers(1, 1500))
def test_lut8_is_bitsandbytes_8bit_rule(seed, n):
    rng = np.random.default_rng(seed)
    code = dynamic_map()
    cm = (np.float32(0.5) * (code[:-1] + code[1:])).astype(np.float32)
    x = np.concatenate([rng.standard_normal(n), rng.choice(cm, n) * rng.choice([1, 4], n)]).astype(np.float32)
    x[rng.random(x.size) < 0.2] = 0
    codes = np.empty(x.size, np.uint8)
    absmax = np.empty(-(-x.size // 256), np.float32)
    bw.quantize_blockwise_lut8(readonly(x), 256, code, absmax, codes)
    expect_codes, expect_absmax = blockwise_ref.bnb_quantize_blockwise_8bit(x, 256, code)
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


def test_blockwise_uses_only_the_jit_wrappers():
    src = pathlib.Path(bw.__file__).read_text()
    assert "numba.njit" not in src and "@njit" not in src
