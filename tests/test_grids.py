"""Codebook constructors, and seed 000's worked NormalFloat example (see docs/seed_examples.md)."""

import numpy as np
import pytest

from nquant.codebooks.grids import (
    NF4_BITSANDBYTES,
    dynamic_map,
    fp4_e2m1,
    fp8_e4m3,
    normal_float,
    power_of_two,
    seed_nf3,
    uniform_grid,
)
from nquant.errors import SchemeError
from nquant.kernels import codebook1d as cb
from nquant.kernels.rounding import FLOOR, NEAREST
from tests.reference import codebook as codebook_ref
from tests.reference import codebook1d as codebook1d_ref

# QLoRA (Dettmers et al. 2023), appendix E: the NF4 values
QLORA_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
             -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
             0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0]

SEED_V = np.array([3.2, -1.4, 2.5, -0.9, 1.8, -3.7, 0.0, 4.0, 2.2, -1.3])
SEED_W_UNIFORM = [6, 2, 5, 2, 5, 0, 3, 7, 5, 2]   # printed in seed 000, section 2
SEED_W_NF = [6, 1, 6, 1, 5, 0, 3, 0, 6, 1]        # printed in seed 000, section 4.1


def _codes(x, levels, mode):
    x2 = np.ascontiguousarray(np.asarray(x, np.float32)[None, :])
    out = np.empty(x2.shape, np.uint8)
    cb.quantize_sorted(x2, np.zeros(1, np.int64), levels, mode, np.uint64(0), out)
    return out[0].tolist()


def test_nf4_equals_bitsandbytes_table_exactly():
    nf4 = normal_float(4)
    assert nf4.dtype == np.float32
    np.testing.assert_array_equal(nf4, NF4_BITSANDBYTES)
    np.testing.assert_array_equal(nf4, np.array(QLORA_NF4, np.float32))


@pytest.mark.parametrize("bits", range(2, 9))
def test_normal_float_shape(bits):
    g = normal_float(bits)
    assert g.shape == (2**bits,) and g.dtype == np.float32
    assert np.all(np.diff(g) > 0)
    assert g[0] == -1 and g[-1] == 1 and 0.0 in g
    assert np.sum(g > 0) == np.sum(g < 0) + 1  # one extra positive level


@pytest.mark.parametrize("bad", [1, 9, 0, -3, 2.5, True, "4"])
def test_normal_float_rejects_bits(bad):
    with pytest.raises(SchemeError, match=f"bits={bad!r}"):
        normal_float(bad)


def test_normal_float_rejects_offset():
    with pytest.raises(SchemeError, match="offset=0.4"):
        normal_float(4, offset=0.4)


def test_seed_nf3_construction():
    g = seed_nf3()
    np.testing.assert_allclose(g, [-1, -0.445704, -0.200834, 0, 0.148743, 0.313254, 0.526023, 1], atol=2e-6)


def test_seed000_uniform_example_is_floor_rounding():
    grid = uniform_grid(-4, 4, 8)
    assert _codes(SEED_V, grid, FLOOR) == SEED_W_UNIFORM
    # true nearest differs at 2.5 (z = 5.69 -> 6) and -0.9 (z = 2.71 -> 3); 0.0 is a tie -> lower
    assert _codes(SEED_V, grid, NEAREST) == [6, 2, 6, 3, 5, 0, 3, 7, 5, 2]


def test_seed000_nf3_example():
    """True nearest differs from the printed codes; floor plus an end-of-grid slip reproduces them."""
    g = seed_nf3()
    x = (SEED_V / np.abs(SEED_V).max()).astype(np.float32)
    nearest = _codes(x, g, NEAREST)
    assert nearest == [7, 1, 6, 2, 6, 0, 3, 7, 6, 1]
    assert nearest == codebook1d_ref.nearest(x, g).tolist()
    floor = _codes(x, g, FLOOR)
    assert floor == [6, 1, 6, 1, 5, 0, 3, 7, 6, 1]
    # the printed w is floor everywhere except the top value 1.0, which a scan of the half-open
    # intervals [s_i, s_{i+1}) never finds, leaving the default code 0
    assert codebook_ref.seed000_interval_lookup(x, g).tolist() == SEED_W_NF
    differ = [i for i in range(10) if floor[i] != SEED_W_NF[i]]
    assert differ == [7] and x[7] == g[-1] == 1.0
    # no NF3 construction fixes that with nearest rounding: 1.0 is a level of every such grid
    assert _codes(x, normal_float(3), NEAREST)[7] == 7


def test_fp4_e2m1_values():
    g = fp4_e2m1()
    pos = [0.5, 1, 1.5, 2, 3, 4, 6]
    np.testing.assert_array_equal(g, np.array([-v for v in pos[::-1]] + [0] + pos, np.float32))


def test_fp8_e4m3_values():
    g = fp8_e4m3()
    assert g.shape == (253,) and g.dtype == np.float32
    assert np.all(np.diff(g) > 0)
    assert g[-1] == 448 and g[0] == -448 and 0.0 in g
    pos = g[g > 0]
    assert pos[0] == 2.0**-9 and pos[6] == 7 * 2.0**-9 and pos[7] == 2.0**-6  # subnormals, then normals
    for v in (1.0, 1.125, 240.0, 256.0, 416.0):
        assert v in g
    assert 464.0 not in g  # S.1111.111 is NaN in E4M3FN


def test_power_of_two():
    np.testing.assert_array_equal(power_of_two(3), [-1, -0.5, -0.25, 0, 0.25, 0.5, 1])
    np.testing.assert_array_equal(power_of_two(2, signed=False), [0, 0.25, 0.5, 1])
    np.testing.assert_array_equal(power_of_two(2, max_exponent=3), [-8, 0, 8])
    assert power_of_two(8).shape == (255,)
    with pytest.raises(SchemeError, match="bits=9"):
        power_of_two(9)
    with pytest.raises(SchemeError, match="max_exponent=-100"):
        power_of_two(8, max_exponent=-100)


def test_uniform_grid():
    np.testing.assert_allclose(uniform_grid(-4, 4, 8), -4 + 8 * np.arange(8) / 7, rtol=1e-7)
    with pytest.raises(SchemeError, match="n=1"):
        uniform_grid(0, 1, 1)
    with pytest.raises(SchemeError, match="n=257"):
        uniform_grid(0, 1, 257)
    with pytest.raises(SchemeError, match="lo=1"):
        uniform_grid(1, 0, 4)
    with pytest.raises(SchemeError, match="hi=inf"):
        uniform_grid(0, np.inf, 4)


def test_dynamic_map():
    g = dynamic_map()
    assert g.shape == (256,) and g.dtype == np.float32
    assert np.all(np.diff(g) > 0)
    assert g[0] == np.float32(-0.99296875) and g[-1] == 1.0 and 0.0 in g
    np.testing.assert_allclose(g[g > 0].min(), 1e-6 * 0.55, rtol=1e-6)  # 10**-6 * (0.1 + 1) / 2
    with pytest.raises(SchemeError, match="max_exponent_bits=8"):
        dynamic_map(max_exponent_bits=8)
