"""The blockwise family's one-pass ``fit_encode`` against ``fit`` then ``encode``, and its
fused packed paths against packing and unpacking."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nquant as nq
from nquant.errors import InputError
from nquant.families import blockwise
from nquant.packing import pack_codes
from tests.test_blockwise import block_data


def _same(p1, c1, p2, c2):
    assert p1.keys() == p2.keys()
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
    np.testing.assert_array_equal(c1, c2)
    assert c1.shape == c2.shape and c2.dtype == np.uint8


@given(data=block_data(), double_quant=st.booleans(), rows=st.sampled_from([1, 2, 3]))
def test_fit_encode_equals_fit_then_encode(data, double_quant, rows):
    x, block = data
    x = x[:x.size // rows * rows].reshape(rows, -1) if rows > 1 else x
    scheme = nq.NF4(block_size=block, double_quant=double_quant)
    params = blockwise.fit(scheme, x)
    _same(params, blockwise.encode(scheme, params, x), *blockwise.fit_encode(scheme, x))


@pytest.mark.parametrize("x", [np.zeros(0, np.float32), np.float32(2.5) * np.ones((), np.float32),
                               np.arange(130, dtype=np.float64)[::-2], np.full((4, 33), 7, np.float16)])
def test_fit_encode_edge_inputs(x):
    scheme = nq.NF4(block_size=16, double_quant=True)
    params = blockwise.fit(scheme, x)
    _same(params, blockwise.encode(scheme, params, x), *blockwise.fit_encode(scheme, x))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fit_encode_refuses_non_finite(bad):
    x = np.ones(200, np.float32)
    x[77] = bad
    with pytest.raises(InputError, match="NaN or infinite"):
        blockwise.fit_encode(nq.NF4(), x)
    with pytest.raises(InputError, match="NaN or infinite"):
        nq.quantize(x, nq.NF4())


NF3_LEVELS = (-1.0, -0.53, -0.25, 0.0, 0.2, 0.44, 0.72, 1.0)


@given(data=block_data(), double_quant=st.booleans(), cols=st.sampled_from([None, 1, 2, 3, 6]),
       odd_block=st.booleans(), nf3=st.booleans())
def test_packed_paths_equal_packing_the_codes(data, double_quant, cols, odd_block, nf3):
    """``fit_encode_packed`` / ``decode_packed`` (fused where the nibble stream is flat)
    against ``fit_encode`` + ``pack_codes`` and ``decode`` of the unpacked codes."""
    x, block = data
    block += odd_block
    x = x[:x.size // cols * cols].reshape(-1, cols) if cols else x
    levels = NF3_LEVELS if nf3 else nq.NF4().codebook
    scheme = nq.Blockwise(levels, block_size=block, double_quant=double_quant)
    assert scheme.bits == (3 if nf3 else 4)
    params, codes = blockwise.fit_encode(scheme, x)
    packed_params, packed = blockwise.fit_encode_packed(scheme, x)
    _same(params, pack_codes(codes, scheme.bits), packed_params, packed)
    expected = blockwise.decode(scheme, params, codes)
    np.testing.assert_array_equal(blockwise.decode_packed(scheme, params, packed, x.shape), expected)
    out = np.full(x.shape, np.nan, np.float32)
    assert blockwise.decode_packed(scheme, params, packed, x.shape, out=out) is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(blockwise.decode_packed(scheme, params, packed, x.shape, np.float64),
                                  expected.astype(np.float64))


@pytest.mark.parametrize("x", [np.zeros(0, np.float32), np.float32(2.5) * np.ones((), np.float32),
                               np.zeros((3, 0), np.float32), np.full((4, 34), 7, np.float16)])
def test_packed_paths_edge_inputs(x):
    scheme = nq.NF4(block_size=16)
    params, codes = blockwise.fit_encode(scheme, x)
    packed_params, packed = blockwise.fit_encode_packed(scheme, x)
    _same(params, pack_codes(codes, 4), packed_params, packed)
    np.testing.assert_array_equal(blockwise.decode_packed(scheme, params, packed, x.shape, x.dtype),
                                  blockwise.decode(scheme, params, codes, x.dtype))


@given(data=block_data(), scale_dtype=st.sampled_from(["float16", "bfloat16"]), cols=st.sampled_from([None, 2]))
def test_narrow_absmax_paths_agree(data, scale_dtype, cols):
    """With a float16/bfloat16 absmax the fused paths fall back to fit then encode: every path
    gives the same codes and side arrays, and decoding multiplies by the stored absmax."""
    x, block = data
    block += block % 2
    x = x[:x.size // cols * cols].reshape(-1, cols) if cols else x
    scheme = nq.NF4(block_size=block, scale_dtype=scale_dtype)
    try:
        params = blockwise.fit(scheme, x)
    except InputError as e:  # an absmax beyond float16's range
        assert f"scale_dtype={scale_dtype!r}" in str(e)
        return
    codes = blockwise.encode(scheme, params, x)
    _same(params, codes, *blockwise.fit_encode(scheme, x))
    packed_params, packed = blockwise.fit_encode_packed(scheme, x)
    np.testing.assert_array_equal(packed, pack_codes(codes, 4))
    absmax = blockwise.block_absmax(scheme, packed_params)
    assert params["absmax"].dtype == (np.float16 if scale_dtype == "float16" else np.uint16)
    levels = np.asarray(scheme.codebook, np.float32)
    want = levels[codes.reshape(-1)] * np.repeat(absmax, block)[:x.size]
    np.testing.assert_array_equal(blockwise.decode_packed(scheme, packed_params, packed, x.shape).reshape(-1), want)
