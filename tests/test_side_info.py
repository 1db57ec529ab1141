"""Compact side information: scale dtypes, packed or absent zero points, double quantization of
uniform block scales; each stored format counted exactly, decoded bit for bit, validated on open."""

import json
import math
import pathlib

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import nquant as nq
from nquant import validate
from nquant.errors import InputError, SchemeError, StoreError
from nquant.families import base, blockwise, uniform
from nquant.families.registry import family
from tests.strategies import apply_layout, block_chunkings, float_arrays, layouts

COMPACT = {
    "sym4_b64_f16": nq.Uniform(4, symmetric=True, block_size=64, scale_dtype="float16",
                               zero_point_storage="packed"),
    "asym3_b32_bf16": nq.Uniform(3, block_size=32, scale_dtype="bfloat16", zero_point_storage="packed"),
    "asym4_b64_packed": nq.Uniform(4, block_size=64, zero_point_storage="packed"),
    "asym8_axis0_f16": nq.Uniform(8, axis=0, scale_dtype="float16", zero_point_storage="packed"),
    "sym4_tensor_bf16": nq.Uniform(4, symmetric=True, scale_dtype="bfloat16", zero_point_storage="packed"),
    "float_b16_f16": nq.Uniform(4, block_size=16, zero_point="float", scale_dtype="float16"),
    "sym4_b16_dq": nq.Uniform(4, symmetric=True, block_size=16, double_quant=True, zero_point_storage="packed"),
    "asym4_b16_dq": nq.Uniform(4, block_size=16, double_quant=True, zero_point_storage="packed"),
    "nf4_f16": nq.NF4(block_size=64, scale_dtype="float16"),
    "nf4_bf16": nq.NF4(block_size=32, scale_dtype="bfloat16"),
    "kmeans3_f16": nq.KMeansBlockwise(bits=3, block_size=32, min_size=0, bins=512, scale_dtype="float16"),
}
SHAPE = (48, 128)


def _data(seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.exp(rng.uniform(-3, 3, (shape[0], 1))) + 0.3
    return x.astype(np.float32)


def _stored_bits(path, n):
    g = zarr.open_group(path, mode="r")
    stored = sum(math.prod(g[k].shape) * g[k].dtype.itemsize for k in g.array_keys() if k != "chunk_stats")
    return 8.0 * stored / n


# ----------------------------------------------------------------------------- the target figures


def test_symmetric_int4_blocks64_float16_scale_is_4_25_bits():
    scheme = COMPACT["sym4_b64_f16"]
    q = nq.quantize(_data(), scheme)
    assert set(q.side) == {"scale"} and q.side["scale"].dtype == np.float16
    assert q.bits_per_value == 4.25
    # the int32 zero point and float32 scale of earlier versions: 5 bits; the default (no zero point)
    assert nq.quantize(_data(), nq.Uniform(4, symmetric=True, block_size=64,
                                           zero_point_storage="int32")).bits_per_value == 5.0
    assert nq.quantize(_data(), nq.Uniform(4, symmetric=True, block_size=64)).bits_per_value == 4.5


@pytest.mark.parametrize("name, bits", [("sym4_b16_dq", 4 + 8 / 16 + (2 * 32 + 32) / 6144),
                                        ("asym4_b64_packed", 4 + 36 / 64), ("nf4_f16", 4.25)])
def test_bits_per_value_figures(name, bits):
    scheme = COMPACT[name]
    assert family(scheme).bits_per_value(scheme, SHAPE) == pytest.approx(bits, abs=1e-12)


# ----------------------------------------------------------------------------- stored == counted


@pytest.mark.parametrize("name", sorted(COMPACT))
def test_bits_per_value_equals_the_bytes_stored(name, tmp_path):
    scheme = COMPACT[name]
    x = _data(1)
    q = nq.quantize(x, scheme)
    want = family(scheme).bits_per_value(scheme, x.shape, x.dtype)
    path = str(tmp_path / "saved.zarr")
    nq.save(q, path, chunks=(8, 128))
    assert q.bits_per_value == want == _stored_bits(path, x.size)
    src = str(tmp_path / "src.zarr")
    z = zarr.create_array(src, shape=x.shape, chunks=(16, 128), dtype=x.dtype)
    z[...] = x
    out = str(tmp_path / "streamed.zarr")
    nq.quantize_zarr(src, out, scheme)
    assert _stored_bits(out, x.size) == want
    r = nq.open(out)
    np.testing.assert_array_equal(nq.dequantize(r).compute(), nq.dequantize(q))
    np.testing.assert_array_equal(nq.dequantize(nq.open(path)).compute(), nq.dequantize(q))


@pytest.mark.parametrize("name", sorted(COMPACT))
def test_numpy_and_dask_chunkings_agree(name):
    scheme = COMPACT[name]
    x = _data(2)
    q = nq.quantize(x, scheme)
    for chunks in [(4, 128), (16, 128), (48, 64)]:
        qd = nq.quantize(da.from_array(x, chunks=chunks), scheme)
        np.testing.assert_array_equal(np.asarray(qd.codes.compute()), q.codes)
        for k, v in q.side.items():
            np.testing.assert_array_equal(np.asarray(qd.side[k]), v, err_msg=k)
        np.testing.assert_array_equal(nq.dequantize(qd).compute(), nq.dequantize(q))


# ----------------------------------------------------------------------------- decode is what encoding chose


def _codes_steps(q):
    """Per value: the integer code (``q - qmin`` plus ``qmin``), the decoded scale and the zero
    point of its group (uniform schemes of one scale per tensor, per row or per block)."""
    s = q.scheme
    scale = uniform.scale_values(s, q.side)
    zp = uniform.zero_points(s, q.side, scale.size)
    n = q.size
    if s.block_size:
        g = np.arange(n) // s.block_size
    elif s.axis == 0:
        g = np.repeat(np.arange(q.shape[0]), n // q.shape[0])
    else:
        g = np.zeros(n, np.int64)
    return np.asarray(q.codes_unpacked, np.int64).reshape(-1), scale[g], zp[g]


@pytest.mark.parametrize("name", ["sym4_b64_f16", "asym3_b32_bf16", "asym4_b64_packed", "asym8_axis0_f16",
                                  "sym4_tensor_bf16", "sym4_b16_dq", "asym4_b16_dq"])
def test_uniform_decodes_exactly_the_stored_grid_and_never_clips(name):
    scheme = COMPACT[name]
    x = _data(3)
    q = nq.quantize(x, scheme)
    codes, scale, zp = _codes_steps(q)
    want = ((codes - zp) * scale.astype(np.float64)).astype(np.float32)
    x_hat = nq.dequantize(q).reshape(-1)
    np.testing.assert_array_equal(x_hat, want)
    # nearest rounding against the stored scale: within half a step (the zero point's own
    # rounding aside, which shifts the grid by at most half a step: one step in all)
    bound = (0.5 if scheme.symmetric else 1.0) * scale * (1 + 1e-6)
    assert (np.abs(x.reshape(-1).astype(np.float64) - x_hat) <= bound).all()


@pytest.mark.parametrize("name", ["nf4_f16", "nf4_bf16", "kmeans3_f16"])
def test_blockwise_absmax_rounded_up_and_used_to_encode(name):
    scheme = COMPACT[name]
    x = _data(4)
    q = nq.quantize(x, scheme)
    absmax = base.widen(q.side["absmax"])
    exact = np.abs(x.reshape(-1, scheme.block_size)).max(axis=1)
    assert (absmax >= exact).all() and (absmax <= exact * (1 + 2.0 ** -7)).all()
    # decoding: the level times the stored absmax, exactly
    levels = np.asarray(q.side.get("codebook", scheme.codebook), np.float32)
    codes = nq.unpack(q.codes, scheme.bits, x.size)
    want = levels[codes] * np.repeat(absmax, scheme.block_size)
    np.testing.assert_array_equal(nq.dequantize(q).reshape(-1), want)
    # encoding chose the nearest level of x / absmax (stored): re-encoding the decoded values
    # over the same absmax gives the same codes
    np.testing.assert_array_equal(nq.dequantize(q).reshape(-1), nq.dequantize(nq.quantize(x, scheme)).reshape(-1))


def test_float32_defaults_are_unchanged():
    """The default scale_dtype with zero_point_storage="int32" (what scheme JSON without the field
    reads as) is the earlier format, bit for bit; the default stores no symmetric zero point."""
    x = _data(5)
    for scheme in [nq.Uniform(4, symmetric=True, block_size=64, zero_point_storage="int32"),
                   nq.Uniform(4, block_size=32, zero_point_storage="int32"), nq.NF4()]:
        q = nq.quantize(x, scheme)
        assert all(v.dtype in (np.float32, np.int32, np.uint8) for v in q.side.values())
    old = nq.Uniform(4, symmetric=True, block_size=64, zero_point_storage="int32")
    q = nq.quantize(x, old)
    assert set(q.side) == {"scale", "zero_point"} and not q.side["zero_point"].any()
    d = {k: v for k, v in nq.Uniform(4, symmetric=True, block_size=64).to_dict().items() if k != "zero_point_storage"}
    assert nq.scheme_from_json(d) == old
    q = nq.quantize(x, nq.Uniform(4, symmetric=True, block_size=64))
    assert set(q.side) == {"scale"} and q.side["scale"].dtype == np.float32


# ----------------------------------------------------------------------------- rounding to storage


finite32 = st.floats(min_value=-float(np.float32(3e38)), max_value=float(np.float32(3e38)), width=32)


@settings(max_examples=200, deadline=None)
@given(v=st.lists(finite32, min_size=1, max_size=20), direction=st.sampled_from([1, -1]),
       name=st.sampled_from(["float16", "bfloat16"]))
def test_to_storage_rounds_in_the_direction_to_the_next_representable(v, direction, name):
    v = np.asarray(v, np.float32)
    if name == "float16":
        v = np.clip(v, -60000, 60000)
    try:
        stored = base.to_storage(v, name, direction)
    except InputError as e:
        assert "scale_dtype" in str(e) and "\n" not in str(e)
        return
    back = base.widen(stored).astype(np.float64)
    v64 = v.astype(np.float64)
    assert ((back >= v64) if direction > 0 else (back <= v64)).all()
    # the next representable value in the other direction passes v: nothing closer was skipped
    if name == "float16":
        other = np.nextafter(stored, np.float16(-np.inf if direction > 0 else np.inf)).astype(np.float64)
    else:
        # one step of the magnitude: down for a positive value rounded up, and so on
        step = np.where((back > 0) == (direction > 0), -1, 1)
        other = base.widen((stored.astype(np.int64) + step).astype(np.uint16)).astype(np.float64)
    exact = (back == v64) | (back == 0)
    assert (exact | ((other < v64) if direction > 0 else (other > v64))).all()


def test_to_storage_edges():
    f16max = float(np.finfo(np.float16).max)
    np.testing.assert_array_equal(base.widen(base.to_storage(np.float32([f16max]), "float16", 1)), [f16max])
    with pytest.raises(InputError, match=r"^scale_dtype='float16' cannot hold the scale 70000"):
        base.to_storage(np.float32([70000.0]), "float16", 1)
    with pytest.raises(InputError, match="scale_dtype='bfloat16'"):
        base.to_storage(np.float32([3.4e38]), "bfloat16", 1)
    tiny = base.to_storage(np.float32([1e-12]), "float16", 1)  # below float16: the smallest subnormal
    assert base.widen(tiny)[0] == np.float32(2.0 ** -24)
    assert base.widen(base.to_storage(np.float32([1e-30]), "bfloat16", 1))[0] >= np.float32(1e-30)
    np.testing.assert_array_equal(base.widen(np.uint16([0x3F80, 0xC000])), [1.0, -2.0])


def test_float16_out_of_range_data_is_refused_with_one_line():
    x = np.full(128, 1e7, np.float32)
    x[::3] = -2e7
    for scheme in [COMPACT["sym4_b64_f16"], COMPACT["nf4_f16"]]:
        with pytest.raises(InputError, match=r"scale_dtype='float16' cannot hold") as e:
            nq.quantize(x, scheme)
        assert "\n" not in str(e.value)
    # tiny data: the scale is the smallest float16 subnormal, decoding stays within a step
    t = (_data(6)[:2] * 1e-9).astype(np.float32)
    q = nq.quantize(t, COMPACT["sym4_b64_f16"])
    assert np.abs(nq.dequantize(q) - t).max() <= 2.0 ** -24


def test_near_float32_limit_needs_the_float32_defaults():
    x = np.float32([3e38, -3e38, 1.0, 2.0])
    with pytest.raises(InputError, match="scale_dtype='bfloat16'"):
        nq.quantize(x, nq.Uniform(8, scale_dtype="bfloat16"))
    nq.quantize(x, nq.Uniform(8))  # the default still fits its grid inside float32


# ----------------------------------------------------------------------------- double quantization


def test_double_quantize_up_never_below():
    rng = np.random.default_rng(8)
    v = np.exp(rng.uniform(-8, 4, 1000)).astype(np.float32)
    off = np.float32(v.mean())
    codes, scale2 = blockwise.double_quantize_up(v, off)
    from nquant.kernels import blockwise as kb

    dec = kb.double_dequantize(codes, scale2, off)
    top = codes == 255
    assert (dec[~top] >= v[~top]).all()
    # one level lower would be below: the smallest level not below the value
    lower = kb.double_dequantize(np.maximum(codes.astype(np.int64) - 1, 0).astype(np.uint8), scale2, off)
    assert ((lower < v) | (codes == 0)).all()


# ----------------------------------------------------------------------------- schemes and stores


@pytest.mark.parametrize("kw, name", [
    ({"scale_dtype": "float64"}, "scale_dtype"),
    ({"zero_point_storage": "int8"}, "zero_point_storage"),
    ({"double_quant": True}, "double_quant"),
    ({"double_quant": True, "block_size": 16, "zero_point": "float"}, "double_quant"),
    ({"double_quant": True, "block_size": 16, "scale_dtype": "float16"}, "scale_dtype"),
])
def test_uniform_refuses_bad_side_options(kw, name):
    with pytest.raises(SchemeError, match=f"^{name}="):
        nq.Uniform(4, **kw)


def test_blockwise_refuses_bad_side_options():
    with pytest.raises(SchemeError, match="^scale_dtype='float16' is invalid"):
        nq.NF4(double_quant=True, scale_dtype="float16")
    with pytest.raises(SchemeError, match="^scale_dtype='half'"):
        nq.KMeansBlockwise(scale_dtype="half")


def test_json_round_trip_and_earlier_json():
    for scheme in COMPACT.values():
        assert nq.scheme_from_json(scheme.to_json()) == scheme
    old = {"type": "uniform", "format_version": 1, "bits": 4, "symmetric": True, "block_size": 64}
    s = nq.scheme_from_json(json.dumps(old))
    assert (s.scale_dtype, s.zero_point_storage, s.double_quant) == ("float32", "int32", False)


def _rewrite(path, name, data):
    g = zarr.open_group(path, mode="r+")
    z = g[name]
    del g[name]
    g.create_array(name, data=data, chunks=z.chunks if data.shape == z.shape else data.shape,
                   fill_value=0, compressors=validate.compressors())


@pytest.mark.parametrize("name, array, bad", [
    ("sym4_b64_f16", "scale", lambda a: a.astype(np.float32)),
    ("sym4_b64_f16", "scale", lambda a: a[:-1]),
    ("asym4_b64_packed", "zero_point_codes", lambda a: a.astype(np.int32)),
    ("asym4_b64_packed", "zero_point_codes", lambda a: np.concatenate([a, a])),
    ("asym3_b32_bf16", "scale", lambda a: a.view(np.float16)),
    ("sym4_b16_dq", "scale2", lambda a: a.astype(np.float16)),
    ("sym4_b16_dq", "scale_codes", lambda a: a[:-1]),
    ("nf4_bf16", "absmax", lambda a: a.astype(np.float32)),
])
def test_open_refuses_wrong_side_arrays(name, array, bad, tmp_path):
    path = str(tmp_path / "q.zarr")
    q = nq.quantize(_data(9), COMPACT[name])
    nq.save(q, path)
    g = zarr.open_group(path, mode="r+")
    g.attrs.pop(validate.INTEGRITY, None)
    _rewrite(path, array, bad(np.asarray(g[array][...])))
    with pytest.raises(StoreError, match=f"side array '{array}' has dtype=") as e:
        nq.open(path)
    assert "\n" not in str(e.value)


def test_open_refuses_a_zero_point_a_packed_symmetric_scheme_does_not_have(tmp_path):
    path = str(tmp_path / "q.zarr")
    nq.save(nq.quantize(_data(9), COMPACT["sym4_b64_f16"]), path)
    g = zarr.open_group(path, mode="r+")
    g.attrs.pop(validate.INTEGRITY, None)
    g.create_array("zero_point", data=np.zeros(96, np.int32), fill_value=0, compressors=validate.compressors())
    with pytest.raises(StoreError, match=r"unknown \['zero_point'\]"):
        nq.open(path)


def test_corrupt_lengths_are_a_store_error_not_an_index():
    scheme = COMPACT["sym4_b16_dq"]
    q = nq.quantize(_data(10), scheme)
    side = dict(q.side, scale2=q.side["scale2"][:0])
    with pytest.raises(StoreError, match="'scale2' has 0 entries"):
        uniform.decode(scheme, side, nq.unpack(q.codes, 4, q.size).reshape(q.shape))
    scheme = COMPACT["asym4_b64_packed"]
    q = nq.quantize(_data(10), scheme)
    side = dict(q.side, zero_point_codes=q.side["zero_point_codes"][:3])
    with pytest.raises(StoreError, match="'zero_point_codes' has 6 entries"):
        uniform.decode(scheme, side, nq.unpack(q.codes, 4, q.size).reshape(q.shape))


def test_compact_uniform_layouts_run_on_the_codec_cuda_and_adaptive_round():
    from nquant.codec import QuantizeCodec, header_size, decode_chunk, encode_chunk, encoded_size

    x = _data(11, (8, 64))
    for name in ("sym4_b64_f16", "asym3_b32_bf16", "asym8_axis0_f16", "sym4_tensor_bf16", "float_b16_f16",
                 "sym4_b16_dq", "asym4_b16_dq"):
        scheme = COMPACT[name]
        assert family(scheme).cuda_refuses is None  # the CUDA twin decodes through kernel_params
        raw = encode_chunk(QuantizeCodec(scheme).scheme, x)
        q = nq.quantize(x, scheme)
        # the chunk carries the stored side arrays: its header and the bytes bits_per_value counts
        assert raw.size == encoded_size(scheme, x.shape) == header_size(2, q.side) + q.bits_per_value * x.size / 8
        np.testing.assert_array_equal(decode_chunk(scheme, raw, np.float32, x.shape), nq.dequantize(q))
    assert isinstance(family(COMPACT["nf4_bf16"]).cuda_refuses(COMPACT["nf4_bf16"]), str)
    assert family(nq.NF4()).cuda_refuses(nq.NF4()) is None
    rng = np.random.default_rng(3)
    W, X = rng.standard_normal((8, 64)).astype(np.float32), rng.standard_normal((64, 96)).astype(np.float32)
    for name in ("sym4_b16_dq", "asym4_b16_dq", "asym4_b64_packed", "asym3_b32_bf16"):
        scheme = COMPACT[name]
        q, ref = nq.adaptive_round(W, X, scheme), nq.quantize(W, scheme)
        assert {k: v.dtype for k, v in q.side.items()} == {k: v.dtype for k, v in ref.side.items()}
        assert q.bits_per_value == ref.bits_per_value
        err = [np.linalg.norm((W - nq.dequantize(a)) @ X) for a in (q, ref)]
        assert err[0] <= err[1] * (1 + 1e-6)  # never worse than the scheme's own rounding
        info = q.info["adaptive_round"]
        assert info["rel_error"] == pytest.approx(err[0] / np.linalg.norm(W @ X), rel=1e-4)
        assert info["rel_error_nearest"] == pytest.approx(err[1] / np.linalg.norm(W @ X), rel=1e-4)
        assert sum(info["rows"].values()) == W.shape[0]


# ----------------------------------------------------------------------------- adversarial inputs

ADVERSARIAL = [nq.Uniform(4, symmetric=True, block_size=4, scale_dtype="float16", zero_point_storage="packed"),
               nq.Uniform(3, block_size=2, scale_dtype="bfloat16", zero_point_storage="packed"),
               nq.Uniform(4, block_size=2, double_quant=True, zero_point_storage="packed"),
               nq.Uniform(4, symmetric=True, scale_dtype="bfloat16", zero_point_storage="packed", nan="propagate"),
               nq.NF4(block_size=4, scale_dtype="bfloat16")]


@settings(max_examples=60, deadline=None)
@given(x=float_arrays(max_side=9), k=st.integers(0, len(ADVERSARIAL) - 1), layout=layouts(), data=st.data())
def test_adversarial_arrays(x, k, layout, data):
    """Huge, tiny, subnormal, constant, empty and 0-d arrays of every float dtype, as views:
    a one-line refusal naming scale_dtype, or finite values within a step of the stored grid
    and the same bytes for any Dask chunking."""
    scheme = ADVERSARIAL[k]
    try:
        q = nq.quantize(apply_layout(x, layout), scheme)
    except InputError as e:
        assert "scale_dtype=" in str(e) and "\n" not in str(e)
        return
    x_hat = nq.dequantize(q)
    assert x_hat.dtype == x.dtype and x_hat.shape == x.shape and np.isfinite(x_hat).all()
    if scheme.type == "uniform" and x.size:
        _, scale, _ = _codes_steps(q)
        err = np.abs(x.reshape(-1).astype(np.float64) - x_hat.reshape(-1).astype(np.float64))
        # a step of the decoded scale, plus the rounding of x_hat to a float16 result
        slack = np.abs(x_hat.reshape(-1).astype(np.float64)) * (2.0 ** -10 if x.dtype == np.float16 else 1e-6)
        assert (err <= scale.astype(np.float64) * (1 + 1e-6) + slack + 1e-45).all()
    if x.size and x.ndim:
        flat = x.reshape(-1)
        quantum = family(scheme).block_quantum(scheme) or flat.size
        chunks = data.draw(block_chunkings(flat.size, quantum))
        qd = nq.quantize(da.from_array(flat, chunks=chunks), scheme)
        np.testing.assert_array_equal(nq.dequantize(qd).compute(), x_hat.reshape(-1))


@pytest.mark.parametrize("scheme", [
    nq.Uniform(4, symmetric=True, block_size=8, scale_dtype="float16", zero_point_storage="packed", nan="propagate"),
    nq.Uniform(4, block_size=8, double_quant=True, zero_point_storage="packed", nan="propagate"),
    nq.Uniform(4, axis=0, scale_dtype="bfloat16", zero_point_storage="packed", nan="propagate")])
def test_nan_propagates_with_compact_side_arrays(scheme):
    x = _data(11, (8, 64))
    x[1, 3] = x[5, 60] = np.nan
    x[2] = np.nan  # a whole row (block) of NaN
    x_hat = nq.dequantize(nq.quantize(x, scheme))
    np.testing.assert_array_equal(np.isnan(x_hat), np.isnan(x))
    xd = nq.dequantize(nq.quantize(da.from_array(x, chunks=(4, 64)), scheme)).compute()
    np.testing.assert_array_equal(xd, x_hat)


def test_open_refuses_non_finite_bfloat16_scales(tmp_path):
    path = str(tmp_path / "q.zarr")
    nq.save(nq.quantize(_data(12), COMPACT["asym3_b32_bf16"]), path)
    g = zarr.open_group(path, mode="r+")
    g.attrs.pop(validate.INTEGRITY, None)
    scale = np.asarray(g["scale"][...])
    scale[5] = 0x7F80  # +inf in bfloat16
    _rewrite(path, "scale", scale)
    with pytest.raises(StoreError, match="side array 'scale' chunk .* holds non-finite values"):
        nq.dequantize(nq.open(path)).compute()


def test_preset_is_the_4_25_bit_target():
    from nquant.interfaces.presets import PRESETS

    scheme = PRESETS["int4-sym-block64-f16"]
    assert scheme == COMPACT["sym4_b64_f16"]
    assert family(scheme).bits_per_value(scheme, (384, 1536)) == 4.25


# ----------------------------------------------------------------------------- golden stores

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "golden" / "compact"
GOLDEN_NAMES = sorted(p.stem for p in GOLDEN.glob("*.npy"))


def test_golden_compact_stores_exist():
    assert len(GOLDEN_NAMES) >= 9, f"golden stores missing under {GOLDEN}: run tests/fixtures/make_golden.py"


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_compact_store(name, tmp_path):
    """Written once by tests/fixtures/make_golden.py: every later nquant decodes it bit for bit."""
    store = str(GOLDEN / f"{name}.zarr")
    expected = np.load(GOLDEN / f"{name}.npy", allow_pickle=False)
    q = nq.open(store)
    assert q.info["verified"] is True
    meta = json.loads((GOLDEN / f"{name}.zarr" / "zarr.json").read_text())["attributes"]["nquant"]
    assert meta["format_version"] == 1 and q.scheme == nq.scheme_from_json(meta["scheme"])
    got = np.asarray(nq.dequantize(q).compute())
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    z = nq.dequantize_zarr(store, str(tmp_path / "x_hat.zarr"))
    assert np.asarray(z[...]).tobytes() == expected.tobytes()
    assert q.bits_per_value == family(q.scheme).bits_per_value(q.scheme, q.shape, q.dtype)
