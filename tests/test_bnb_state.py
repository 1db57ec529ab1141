"""bitsandbytes NF4 quantization states <-> nquant (``nquant.bnb``), against golden states.

``tests/fixtures/bnb_state_golden.npz`` holds small ``QuantState.as_dict()`` states, packed
weights and ``dequantize_4bit`` outputs written by bitsandbytes 0.50.2
(``benchmarks/bnb_state_roundtrip.py --write-golden``): float32, float16 and bfloat16, block
sizes 64 and 128, with and without double quantization, odd last axes, an all-zero partial
last block.  No torch is needed here.
"""

import json
import pathlib

import numpy as np
import pytest

import nquant as nq
from nquant.bnb import PACKED_KEY, from_bnb_state, to_bnb, to_bnb_state, to_bnb_weight
from nquant.errors import InputError
from nquant.safetensors_io import bf16_to_float32, float32_to_bf16
from tests.helpers import same_bits

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "bnb_state_golden.npz"


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.exists():
        pytest.skip("tests/fixtures/bnb_state_golden.npz missing")
    g = np.load(GOLDEN)
    assert str(g["bitsandbytes_version"]) == "0.50.2"
    cases = {}
    for name in g["cases"]:
        name = str(name)
        state = json.loads(str(g[f"{name}/scalars"]))
        state["shape"] = tuple(state["shape"])
        for key in ("absmax", "quant_map", "nested_absmax", "nested_quant_map"):
            if f"{name}/{key}" in g:
                state[key] = g[f"{name}/{key}"]
        cases[name] = {"state": state, "packed": g[f"{name}/packed"], "x": g[f"{name}/x"],
                       "x_hat": g[f"{name}/x_hat"], "packed_json": g[f"{name}/packed_state_json"]}
    return cases


CASE_IDS = ["case0", "case1", "case3", "case4", "case5", "case6"]


def _bits(x_hat, dtype):
    """nquant's float32 output as bitsandbytes stores it (bfloat16 as its uint16 bits)."""
    return float32_to_bf16(x_hat) if dtype == "bfloat16" else x_hat


@pytest.mark.parametrize("case", CASE_IDS)
def test_from_bnb_state_dequantizes_like_bitsandbytes(golden, case):
    c = golden[case]
    state = c["state"]
    q = from_bnb_state(c["packed"].reshape(-1, 1), state)
    assert q.scheme == nq.NF4(block_size=state["blocksize"], double_quant="nested_absmax" in state)
    assert q.shape == state["shape"]
    x_hat = nq.dequantize(q)
    assert same_bits(_bits(x_hat, state["dtype"]), c["x_hat"])


@pytest.mark.parametrize("case", CASE_IDS)
def test_nquant_quantization_gives_bitsandbytes_weight_and_state(golden, case):
    c = golden[case]
    state = c["state"]
    nested = "nested_absmax" in state
    x = c["x"]
    if state["dtype"] == "bfloat16":  # bitsandbytes quantized the bfloat16 values
        x = bf16_to_float32(float32_to_bf16(x))
    elif state["dtype"] == "float16":
        x = x.astype(np.float16)
    q = nq.quantize(x, nq.NF4(block_size=state["blocksize"], double_quant=nested))
    weight, st = to_bnb(q, dtype=state["dtype"])
    assert same_bits(weight.reshape(-1), c["packed"])
    assert weight.shape == ((x.size + 1) // 2, 1)
    assert set(st) == set(state)
    for key in ("quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype"):
        if key in state:
            assert st[key] == state[key], key
    np.testing.assert_array_equal(st["quant_map"], state["quant_map"])
    if nested:
        np.testing.assert_array_equal(st["nested_quant_map"], state["nested_quant_map"])
        # the mean absmax: exactly rounded here, torch's float32 mean there (within 2 ulp)
        ulp = np.spacing(np.float32(state["nested_offset"]))
        assert abs(st["nested_offset"] - state["nested_offset"]) <= 2 * ulp
    else:
        # bitsandbytes stores 1e-38 as the absmax of an all-zero partial last block (nquant: 0)
        bnb_absmax = np.where((st["absmax"] == 0) & (state["absmax"] == np.float32(1e-38)), np.float32(0),
                              state["absmax"])
        assert same_bits(st["absmax"], bnb_absmax)


@pytest.mark.parametrize("case", CASE_IDS)
def test_state_round_trip_through_nquant(golden, case):
    c = golden[case]
    state = c["state"]
    q = from_bnb_state(c["packed"], state)
    st = to_bnb_state(q, dtype=state["dtype"])
    assert set(st) == set(state)
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            assert same_bits(st[key], value), key
        else:
            assert st[key] == value, key
    assert same_bits(to_bnb_weight(q).reshape(-1), c["packed"])


@pytest.mark.parametrize("case", CASE_IDS)
def test_packed_safetensors_form(golden, case):
    """``as_dict(packed=True)``: arrays plus the other items as JSON bytes, read and written."""
    c = golden[case]
    state = c["state"]
    packed_state = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    packed_state[PACKED_KEY] = c["packed_json"]
    prefixed = {f"model.layer.weight.{k}": v for k, v in packed_state.items()}
    for form in (packed_state, prefixed):
        q = from_bnb_state(c["packed"], form)
        assert same_bits(_bits(nq.dequantize(q), state["dtype"]), c["x_hat"])
    out = to_bnb_state(q, packed=True)  # the dtype (bfloat16 too) comes back from q.info
    assert list(out) == list(packed_state)
    for key, value in packed_state.items():
        assert same_bits(out[key], value), key


def test_all_zero_partial_block_decodes_to_zero(golden):
    c = golden["case6"]
    assert c["state"]["absmax"][-1] == np.float32(1e-38)
    x_hat = nq.dequantize(from_bnb_state(c["packed"], c["state"]))
    assert not x_hat.reshape(-1)[(x_hat.size // 64) * 64:].any()


def test_state_from_bnb_saves_to_zarr(golden, tmp_path):
    c = golden["case0"]
    q = from_bnb_state(c["packed"], c["state"])
    nq.save(q, tmp_path / "q.zarr")
    assert same_bits(nq.dequantize(nq.open(tmp_path / "q.zarr")).compute(), c["x_hat"])


def test_dask_backed_array_converts(golden):
    import dask.array as da

    c = golden["case0"]
    x = c["x"]
    scheme = nq.NF4(block_size=64, double_quant=True)
    q_np = nq.quantize(x, scheme)
    q_da = nq.quantize(da.from_array(x, chunks=(8, 43)), scheme)
    w_np, st_np = to_bnb(q_np)
    w_da, st_da = to_bnb(q_da)
    assert same_bits(w_np, w_da)
    for key, value in st_np.items():
        assert same_bits(st_da[key], value) if isinstance(value, np.ndarray) else st_da[key] == value


def test_bad_states_are_refused(golden):
    c = golden["case1"]
    state = dict(c["state"])
    with pytest.raises(InputError, match="quant_type"):
        from_bnb_state(c["packed"], {**state, "quant_type": "fp4"})
    with pytest.raises(InputError, match="packed_weight"):
        from_bnb_state(c["packed"][:-1], state)
    with pytest.raises(InputError, match="absmax"):
        from_bnb_state(c["packed"], {**state, "absmax": state["absmax"][:-1]})
    with pytest.raises(InputError, match="lacks"):
        from_bnb_state(c["packed"], {k: v for k, v in state.items() if k != "blocksize"})
    nested = golden["case0"]["state"]
    with pytest.raises(InputError, match="nested_blocksize"):
        from_bnb_state(golden["case0"]["packed"], {**nested, "nested_blocksize": 128})
    with pytest.raises(InputError, match="packed JSON"):
        from_bnb_state(c["packed"], {**state, PACKED_KEY: np.array([255, 0], np.uint8)})


def test_only_nf4_schemes_convert():
    x = np.linspace(-1, 1, 128, dtype=np.float32)
    with pytest.raises(InputError, match="not NF4"):
        to_bnb_state(nq.quantize(x, nq.Blockwise(codebook=(-1.0, 0.0, 1.0), block_size=64)))
    with pytest.raises(InputError, match="block_size"):
        to_bnb_state(nq.quantize(x, nq.NF4(block_size=16)))
