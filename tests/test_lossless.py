"""The lossless codec of integer codes ``nquant.lossless``: exact round trips of uint8 and uint16
codes through every predictor and coder, in and out of zarr, the compression names, and decoding
of corrupt or hostile chunks (one-line StoreError, no allocation beyond the chunk)."""

import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nquant import lossless
from nquant.errors import InputError, SchemeError, StoreError
from nquant.lossless import LosslessCodec

try:
    import pcodec  # noqa: F401
    CODERS = ["zstd", "pcodec"]
except ImportError:
    CODERS = ["zstd"]
needs_pcodec = pytest.mark.skipif("pcodec" not in CODERS, reason="pcodec is not installed")


def smooth_codes(shape, dtype, levels, seed=0):
    """Quantized codes of a smooth random field of ``shape`` in ``0..levels - 1``."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal(shape)
    for ax in range(len(shape)):
        f = np.cumsum(f, axis=ax)
    f -= f.min()
    return np.rint(f * ((levels - 1) / (f.max() or 1.0))).astype(dtype)


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("predictor,axis", [("lorenzo", -1), ("delta", -1), ("delta", 0), ("none", -1)])
@pytest.mark.parametrize("dtype,levels", [(np.uint8, 256), (np.uint16, 1 << 14), (np.uint16, 1 << 16)])
def test_lossless_round_trip(coder, predictor, axis, dtype, levels):
    q = smooth_codes((3, 40, 50), dtype, levels)
    blob = lossless.encode_chunk(q, predictor, coder, axis=axis)
    back = lossless.decode_chunk(blob, dtype, q.shape, predictor, coder, axis)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, q)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([np.uint8, np.uint16]).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))),
    st.sampled_from(["lorenzo", "delta", "none", "adaptive"]))
def test_lossless_any_values_any_shape(q, predictor):
    blob = lossless.encode_chunk(q, predictor)
    np.testing.assert_array_equal(lossless.decode_chunk(blob, q.dtype, q.shape, predictor), q)


def test_lossless_prediction_pays_on_smooth_codes():
    q = smooth_codes((256, 256), np.uint16, 1 << 13)
    sizes = {p: len(lossless.encode_chunk(q, p)) for p in ("none", "delta", "lorenzo")}
    assert sizes["lorenzo"] < sizes["delta"] < sizes["none"] < q.nbytes


@pytest.mark.parametrize("dtype,levels", [(np.uint8, 256), (np.uint16, 1 << 12)])
def test_lossless_adaptive_predicts_smooth_codes_only(dtype, levels):
    rng = np.random.default_rng(3)
    cases = {"smooth": (smooth_codes((64, 50), dtype, levels), "lorenzo"),
             "noise": (rng.integers(0, levels, (64, 50)).astype(dtype), "none"),
             "smooth 1-D": (smooth_codes((700,), dtype, levels), "delta")}
    for name, (q, want) in cases.items():
        assert lossless.choose_predictor(q) == want, name
        blob = lossless.encode_chunk(q, "adaptive")
        assert lossless.PREDICTORS[blob[6]] == want
        assert len(blob) <= min(len(lossless.encode_chunk(q, p)) for p in ("none", want)) * 1.05, name
        np.testing.assert_array_equal(lossless.decode_chunk(blob, dtype, q.shape, "adaptive"), q)
    # the header's predictor must be one the adaptive mode can choose for the shape
    q = cases["smooth"][0]
    with pytest.raises(StoreError, match="predictor 1"):
        lossless.decode_chunk(lossless.encode_chunk(q, "delta"), dtype, q.shape, "adaptive")


def test_lossless_names_resolve():
    assert lossless.resolve("auto", 8, 2) == "adaptive-zstd"
    assert lossless.resolve("auto", 16, 1) == "adaptive-zstd"
    assert lossless.codec_for("adaptive-zstd") == LosslessCodec("adaptive", "zstd")
    assert lossless.resolve("auto", 4, 2) == "zstd"
    assert lossless.resolve(None, 8, 2) is None
    assert lossless.codec_for("lorenzo-zstd") == LosslessCodec("lorenzo", "zstd")
    assert lossless.codec_for("delta-zstd") == LosslessCodec("delta", "zstd")
    assert lossless.codec_for("zstd") is None and lossless.codec_for(None) is None
    with pytest.raises(InputError, match="compression='lz4' is invalid"):
        lossless.resolve("lz4", 8, 2)


def test_lossless_codec_config_round_trip_and_validation():
    c = LosslessCodec("delta", "zstd", level=5, axis=0)
    assert LosslessCodec.from_dict(c.to_dict()) == c
    with pytest.raises(SchemeError, match="predictor='x'"):
        LosslessCodec("x")
    with pytest.raises(SchemeError, match="level="):
        LosslessCodec(level=1.5)
    with pytest.raises(SchemeError, match="invalid"):
        LosslessCodec.from_dict({"name": "nquant.lossless", "configuration": {"bogus": 1}})
    with pytest.raises(InputError, match="dtype=float32"):
        zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), dtype="f4", serializer=LosslessCodec())


@pytest.mark.parametrize("dtype", ["u1", "u2"])
def test_lossless_in_zarr_reopens_with_plain_zarr(tmp_path, dtype):
    q = smooth_codes((70, 90), dtype, 200)
    path = str(tmp_path / "c.zarr")
    z = zarr.create_array(path, shape=q.shape, chunks=(32, 40), dtype=dtype, serializer=LosslessCodec(),
                          compressors=[zarr.codecs.Crc32cCodec()])
    z[...] = q  # edge chunks are padded by zarr, and cropped on read
    np.testing.assert_array_equal(zarr.open_array(path)[...], q)
    np.testing.assert_array_equal(zarr.open_array(path)[5:40, 33:77], q[5:40, 33:77])
    # another process: importing nquant registers the codec
    code = textwrap.dedent(f"""
        import numpy as np, zarr, nquant
        print(int(zarr.open_array({path!r})[...].astype(np.int64).sum()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == int(q.astype(np.int64).sum())


def _frame_offset(blob):
    return lossless._PREFIX.size + 8 * blob[8] + 8


def test_lossless_corrupt_chunks_are_store_errors():
    q = smooth_codes((20, 30), np.uint16, 1000)
    blob = lossless.encode_chunk(q)

    def bad(raw, match, **kw):
        args = {"dtype": np.uint16, "shape": q.shape} | kw
        with pytest.raises(StoreError, match=match):
            lossless.decode_chunk(raw, args["dtype"], args["shape"])

    bad(b"", "shorter than")
    bad(b"XXXX" + blob[4:], "magic")
    bad(blob[:4] + bytes([9]) + blob[5:], "header version=9")
    bad(blob, "header", dtype=np.uint8)
    bad(blob, "shape=", shape=(30, 20))
    bad(blob[:-1], "expected")
    bad(blob + b"\0", "expected")
    bad(blob[:7] + bytes([1]) + blob[8:], "coder 1")  # pcodec's code, not this configuration
    off = _frame_offset(blob)
    frame = bytearray(blob[off:])
    # a frame whose header claims a huge content size is refused before any allocation
    huge = bytearray(lossless._header(np.dtype(np.uint16), "lorenzo", "zstd", 0, q.shape, 14))
    huge += struct.pack("<IB", 0xFD2FB528, 0xC0) + struct.pack("<BQ", 0x58, 1 << 60)[1:] + b"\0"
    bad(bytes(huge), "declares")
    frame[-3] ^= 0xFF  # damaged compressed bytes
    bad(blob[:off] + bytes(frame), "zstd")


@needs_pcodec
def test_lossless_corrupt_pcodec_chunks_are_store_errors():
    q = smooth_codes((20, 30), np.uint8, 200)
    blob = lossless.encode_chunk(q, "lorenzo", "pcodec")
    other = lossless.encode_chunk(q[:10], "lorenzo", "pcodec")
    off = _frame_offset(blob)
    forged = lossless._header(np.dtype(np.uint8), "lorenzo", "pcodec", 0, q.shape, len(other) - off)
    with pytest.raises(StoreError, match="different number of values"):
        lossless.decode_chunk(forged + other[off:], np.uint8, q.shape, "lorenzo", "pcodec")
    wide = lossless.encode_chunk(q.astype(np.uint16) * 300, "none", "pcodec")
    forged = lossless._header(np.dtype(np.uint8), "none", "pcodec", 0, q.shape, len(wide) - off)
    with pytest.raises(StoreError, match="above 255"):
        lossless.decode_chunk(forged + wide[off:], np.uint8, q.shape, "none", "pcodec")


# ----------------------------------------------------------------------------- in nquant groups


def _field(shape=(96, 80), seed=1):
    return (smooth_codes(shape, np.uint16, 1 << 16, seed).astype(np.float32) / 100.0).astype(np.float32)


def _codes_codecs(path):
    return [c.to_dict()["name"] for c in zarr.open_group(path)["codes"].metadata.codecs]


@pytest.mark.parametrize("compression,bits,codecs", [
    ("auto", 8, ["nquant.lossless", "crc32c"]),
    ("auto", 4, ["bytes", "zstd", "crc32c"]),
    ("delta-zstd", 8, ["nquant.lossless", "crc32c"]),
    ("zstd", 8, ["bytes", "zstd", "crc32c"]),
    (None, 8, ["bytes", "crc32c"]),
])
def test_lossless_save_and_open_every_compression(tmp_path, compression, bits, codecs):
    import nquant as nq

    x = _field()
    q = nq.quantize(x, nq.Uniform(bits=bits))
    path = str(tmp_path / "q.zarr")
    nq.save(q, path, chunks=(40, 80), compression=compression)
    assert _codes_codecs(path) == codecs
    back = nq.open(path)
    assert back.info["verified"] is True
    np.testing.assert_array_equal(np.asarray(back.codes), np.asarray(q.codes))
    np.testing.assert_array_equal(np.asarray(nq.dequantize(back)), nq.dequantize(q))


def test_lossless_quantize_zarr_records_compression_and_ratios(tmp_path):
    import nquant as nq
    from nquant.store import storage_summary

    x = _field((200, 120))
    src = str(tmp_path / "src.zarr")
    zarr.create_array(src, data=x, chunks=(64, 120))
    scheme = nq.Uniform(bits=8, zero_point="float")
    sizes = {}
    for compression in ("auto", "zstd"):
        dst = str(tmp_path / f"q-{compression}.zarr")
        q = nq.quantize_zarr(src, dst, scheme, compression=compression)
        np.testing.assert_array_equal(np.asarray(nq.dequantize(q)),
                                      nq.dequantize(nq.quantize(x, scheme)))
        s = storage_summary(dst)
        group = zarr.open_group(dst)
        assert s["stored_bytes"] == sum(z.nbytes_stored() for _, z in group.arrays())
        assert s["float32_bytes"] == x.size * 4 and s["ratio_float32"] == x.size * 4 / s["stored_bytes"]
        assert s["source_stored_bytes"] == zarr.open_array(src).nbytes_stored()
        assert s["ratio_source"] == s["source_stored_bytes"] / s["stored_bytes"]
        assert s["compression"] == ("adaptive-zstd" if compression == "auto" else "zstd")
        sizes[compression] = s["stored_bytes"]
    assert sizes["auto"] < 0.8 * sizes["zstd"]
    # the compression is part of the request: the same one is a no-op, another one is refused
    dst = str(tmp_path / "q-auto.zarr")
    before = zarr.open_group(dst).attrs.asdict()
    nq.quantize_zarr(src, dst, scheme)  # compression="auto" again: a no-op
    assert zarr.open_group(dst).attrs.asdict() == before
    with pytest.raises(StoreError, match=r'recorded \{"compression": "auto"\}; requested \{"compression": '
                                         r'"delta-zstd"\}'):
        nq.quantize_zarr(src, dst, scheme, compression="delta-zstd")


def test_lossless_groups_without_a_recorded_compression(tmp_path):
    import nquant as nq
    from nquant.store import _recorded, storage_summary

    x = _field((64, 64))
    src = str(tmp_path / "src.zarr")
    zarr.create_array(src, data=x, chunks=(32, 64))
    dst = str(tmp_path / "q.zarr")
    nq.quantize_zarr(src, dst, nq.Uniform(bits=8), compression="zstd")
    g = zarr.open_group(dst, mode="r+")
    meta = dict(g.attrs["nquant"])
    for key in ("compression", "codes_compression", "source_stored_bytes"):
        del meta[key]  # as written before they were recorded
    g.attrs["nquant"] = meta
    assert _recorded(meta)["compression"] == "auto"
    nq.quantize_zarr(src, dst, nq.Uniform(bits=8))  # the default request: a no-op on the old group
    assert zarr.open_group(dst).attrs["nquant"] == meta
    s = storage_summary(dst)
    assert s["compression"] == "zstd" and s["source_stored_bytes"] is None and s["ratio_source"] is None


@pytest.mark.skipif("pcodec" in CODERS, reason="pcodec is installed")
def test_lossless_pcodec_missing_is_one_line(tmp_path):
    import nquant as nq

    with pytest.raises(InputError, match="pip install pcodec"):
        nq.save(nq.quantize(_field((8, 8)), nq.Uniform()), str(tmp_path / "q.zarr"), compression="pcodec")
    assert not (tmp_path / "q.zarr").exists()


def test_lossless_cli_compression_and_info(tmp_path):
    from tests.test_cli import nquant

    x = _field((64, 48))
    np.save(tmp_path / "x.npy", x)
    dst = tmp_path / "q.zarr"
    r = nquant("quantize", tmp_path / "x.npy", dst, "--bits", "8", "--compression", "delta-zstd", "--json")
    assert r.returncode == 0, r.stderr
    out = json_loads(r.stdout)
    assert out["compression"] == "delta-zstd" and out["source_stored_bytes"] is None
    assert out["ratio_float32"] == pytest.approx(x.size * 4 / out["stored_bytes"])
    r = nquant("info", dst)
    assert f"stored: {out['stored_bytes']} bytes (delta-zstd), ratio {out['ratio_float32']:.2f} vs float32" \
        in r.stdout
    r = nquant("quantize", tmp_path / "x.npy", tmp_path / "b.zarr", "--compression", "lz4")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--compression" in r.stderr


def json_loads(text):
    import json

    return json.loads(text)


# chunks as nquant 0.1 wrote them: every later version must decode them to the same codes
GOLDEN = [
    ("4e514c43010202000200040000000000000006000000000000001c0000000000000028b52ffd20309d000030d00e5800"
     "07020500600a102e8503306c012c", "lorenzo", -1,
     (np.add.outer(np.arange(4) * 300, np.arange(6) * 7) + 1000).astype(np.uint16)),
    ("4e514c43010101000200020000000000000003000000000000000f0000000000000028b52ffd20063100000001060e04fa",
     "delta", 0, np.array([[0, 255, 3], [7, 1, 128]], np.uint8)),
]


@pytest.mark.parametrize("raw,predictor,axis,codes", GOLDEN)
def test_lossless_golden_chunks_decode(raw, predictor, axis, codes):
    got = lossless.decode_chunk(bytes.fromhex(raw), codes.dtype, codes.shape, predictor, "zstd", axis)
    np.testing.assert_array_equal(got, codes)
