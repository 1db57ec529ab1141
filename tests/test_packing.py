"""Bit packing: MSB-first stream, exact round trip, against a bit-string reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_array_equal

import nquant as nq
from nquant.packing import pack_codes, packed_size, unpack_codes
from tests.reference import bitpack as bitpack_ref


@pytest.mark.parametrize("bits", range(1, 9))
def test_bitpack_every_length_0_to_100_matches_bit_string_reference(bits):
    rs = np.random.default_rng(bits)
    for n in range(0, 101):
        codes = rs.integers(0, 2**bits, n).astype(np.uint8)
        packed = nq.pack(codes, bits)
        assert packed.dtype == np.uint8 and packed.shape == ((n * bits + 7) // 8,)
        assert_array_equal(packed, bitpack_ref.pack(codes, bits))
        assert_array_equal(nq.unpack(packed, bits, n), codes)
        assert_array_equal(pack_codes(codes, bits), packed)


@pytest.mark.parametrize("bits", range(1, 9))
def test_extreme_codes_and_padding_is_zero(bits):
    top = 2**bits - 1
    for n in (1, 7, 8, 9, 15, 16, 17, 33):
        ones = np.full(n, top, np.uint8)
        packed = nq.pack(ones, bits)
        nbits = n * bits
        # the first n*bits bits are ones, the padding bits zeros
        stream = np.unpackbits(packed)
        assert stream[:nbits].all() and not stream[nbits:].any()
        assert_array_equal(nq.unpack(packed, bits, n), ones)
        assert not nq.pack(np.zeros(n, np.uint8), bits).any()


def test_bitpack_known_bytes_by_hand():
    # 4 bits: the first value is the high nibble (bitsandbytes' order)
    assert_array_equal(nq.pack([0xA, 0x5], 4), [0xA5])
    assert_array_equal(nq.pack([1], 4), [0x10])
    assert_array_equal(nq.pack([1, 2, 3], 4), [0x12, 0x30])
    # 1 bit: MSB first
    assert_array_equal(nq.pack([1, 0, 1, 1, 0, 0, 0, 1, 1], 1), [0b10110001, 0b10000000])
    # 2 bits
    assert_array_equal(nq.pack([3, 0, 1, 2], 2), [0b11000110])
    # 3 bits: 101 011 111 000 001 -> 10101111 10000010 (padded)
    assert_array_equal(nq.pack([5, 3, 7, 0, 1], 3), [0b10101111, 0b10000010])
    # 5 bits: 10000 00001 -> 10000000 01000000
    assert_array_equal(nq.pack([16, 1], 5), [0b10000000, 0b01000000])
    # 8 bits: identity
    assert_array_equal(nq.pack([0, 255, 17], 8), [0, 255, 17])
    # 7 bits of 8 codes: exactly 7 bytes
    assert nq.pack(np.arange(8), 7).shape == (7,)


@settings(max_examples=30)
@given(st.integers(1, 8), st.data())
def test_round_trip_random_lengths_and_shapes(bits, data):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40))
    codes = data.draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 2**bits - 1)))
    dtype = data.draw(st.sampled_from([np.uint8, np.int16, np.int64, np.uint32]))
    packed = nq.pack(codes.astype(dtype), bits)
    assert packed.shape == (packed_size(codes.size, bits),)
    assert_array_equal(packed, bitpack_ref.pack(codes, bits))
    out = nq.unpack(packed, bits, codes.size)
    assert out.dtype == np.uint8
    assert_array_equal(out.reshape(shape), codes)
    # a longer buffer (trailing bytes) decodes the same first n codes
    assert_array_equal(nq.unpack(np.concatenate([packed, [255, 7]]).astype(np.uint8), bits, codes.size),
                       codes.reshape(-1))


@pytest.mark.parametrize("bits", [1, 3, 4, 7])
def test_large_parallel_round_trip(bits):
    rs = np.random.default_rng(0)
    n = 200_003  # many parallel groups of 8 codes and a tail
    codes = rs.integers(0, 2**bits, n).astype(np.uint8)
    packed = nq.pack(codes, bits)
    assert_array_equal(nq.unpack(packed, bits, n), codes)
    # spot-check against the bit-string reference on the head and the tail
    assert_array_equal(packed[:40], bitpack_ref.pack(codes[:320], bits)[:40])
    m = n // 8 - 4  # groups of 8 codes are `bits` bytes: the tail starts at byte m * bits
    assert_array_equal(bitpack_ref.unpack(packed[m * bits:], bits, n - 8 * m), codes[8 * m:])
    assert_array_equal(bitpack_ref.pack(codes[8 * m:], bits), packed[m * bits:])


def test_unpack_reads_non_contiguous_and_read_only_input():
    codes = np.arange(16, dtype=np.uint8) % 16
    packed = nq.pack(codes, 4)
    big = np.zeros((packed.size, 2), np.uint8)
    big[:, 0] = packed
    view = big[:, 0]
    assert not view.flags.c_contiguous
    assert_array_equal(nq.unpack(view, 4, 16), codes)
    ro = packed.copy()
    ro.setflags(write=False)
    assert_array_equal(nq.unpack(ro, 4, 16), codes)
    c_ro = codes.copy()
    c_ro.setflags(write=False)
    assert_array_equal(nq.pack(c_ro, 4), packed)
    assert_array_equal(nq.pack(codes.reshape(4, 4).T.T, 4), packed)
    assert_array_equal(nq.pack(np.ascontiguousarray(codes.reshape(4, 4).T), 4),
                       nq.pack(codes.reshape(4, 4).T, 4))


@settings(max_examples=20)
@given(st.integers(1, 8), st.data())
def test_row_packed_container_codes(bits, data):
    """QuantizedArray codes: every row of the last axis is its own MSB-first stream."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=11))
    codes = data.draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 2**bits - 1)))
    packed = pack_codes(codes, bits)
    assert packed.shape == shape[:-1] + ((shape[-1] * bits + 7) // 8,)
    rows = codes.reshape(int(np.prod(shape[:-1])), shape[-1])
    for r, row in enumerate(rows):
        assert_array_equal(packed.reshape(rows.shape[0], -1)[r], bitpack_ref.pack(row, bits))
    assert_array_equal(unpack_codes(packed, bits, shape), codes)
    if shape[-1] * bits % 8 == 0:
        assert_array_equal(packed.reshape(-1), nq.pack(codes, bits))
