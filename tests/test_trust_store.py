"""Reading integrity: ``nquant.open`` validates a group before decoding, decoding never indexes out
of bounds, sealed groups detect missing chunks, changed fill values and flipped bytes, old groups
still open (unverified), and model groups open as ``{name: QuantizedArray}``."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st

import nquant as nq
from nquant import validate, verify
from nquant.containers import QuantizedArray
from nquant.errors import StoreError
from nquant.packing import pack_codes, unpack_codes

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "golden"


# ----------------------------------------------------------------------------- helpers


def data(shape, seed=0, dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * 2).astype(dtype)


def stored(tmp_path, x, scheme, chunks=None, name="q.zarr"):
    """A sealed group of ``quantize(x, scheme)`` and the in-memory reference decode."""
    path = str(tmp_path / name)
    q = nq.quantize(x, scheme)
    nq.save(q, path, chunks=chunks)
    validate.seal(zarr.open_group(path, mode="r+"))  # a no-op on a group the writer sealed
    return path, nq.dequantize(q)


def edit_json(path, fn):
    p = pathlib.Path(path) / "zarr.json"
    doc = json.loads(p.read_text())
    fn(doc)
    p.write_text(json.dumps(doc))


def set_meta(path, **fields):
    def fn(doc):
        doc["attributes"]["nquant"].update(fields)
    edit_json(path, fn)


def put_side(path, name, values, dtype=None):
    """Replace side array ``name`` with ``values`` (kept sealed: the record is updated)."""
    g = zarr.open_group(path, mode="r+")
    values = np.asarray(values, dtype=dtype)
    g.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape or (1,),
                   overwrite=True, fill_value=0, compressors=validate.compressors())
    if values.size:
        g[name][...] = values
    validate.seal(g)


def put_codes(path, packed):
    g = zarr.open_group(path, mode="r+")
    g["codes"][...] = packed
    validate.seal(g)


def chunk_file(path, array, key):
    return pathlib.Path(path) / array / "c" / pathlib.Path(*[str(k) for k in key])


def decode(path):
    return np.asarray(nq.dequantize(nq.open(path)).compute())


# ----------------------------------------------------------------------------- reproducers


def test_scale_with_one_entry_for_4096_channels(tmp_path):
    path, _ = stored(tmp_path, data((4096, 4)), nq.Uniform(bits=8, axis=0))
    put_side(path, "scale", np.ones(1, np.float32))
    with pytest.raises(StoreError, match=r"side array 'scale' has dtype=float32, shape=\(1,\); expected "
                                         r"dtype=float32, shape=\(4096,\)"):
        nq.open(path)


@pytest.mark.parametrize("n", [0, 4095, 4097])
def test_scale_of_the_wrong_length(tmp_path, n):
    path, _ = stored(tmp_path, data((4096, 4)), nq.Uniform(bits=8, axis=0))
    put_side(path, "scale", np.ones(n, np.float32))
    with pytest.raises(StoreError, match=rf"'scale'.*shape=\({n},\).*expected.*\(4096,\)"):
        nq.open(path)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.uint8])
def test_side_array_of_the_wrong_dtype(tmp_path, dtype):
    path, _ = stored(tmp_path, data((16, 4)), nq.Uniform(bits=8, axis=0))
    put_side(path, "scale", np.ones(16), dtype=dtype)
    with pytest.raises(StoreError, match=r"'scale' has dtype=.*expected dtype=float32"):
        nq.open(path)


def test_codebook_shorter_than_the_scheme(tmp_path):
    path, _ = stored(tmp_path, data((8, 8)), nq.Codebook(values=[-2.0, -1.0, 0.0, 1.0, 2.0]))
    put_side(path, "codebook", np.float32([-2.0, -1.0, 0.0]))
    with pytest.raises(StoreError, match=r"'codebook'.*shape=\(3,\).*expected.*shape=\(5,\)"):
        nq.open(path)
    put_side(path, "codebook", np.float32([-2.0, -1.0, 0.0, 1.0, 3.0]))  # right length, other levels
    with pytest.raises(StoreError, match=r"'codebook' holds values .* differ from the scheme's"):
        nq.open(path)


@pytest.mark.parametrize("n", [0, 17])
def test_asq_codebook_length_against_bits(tmp_path, n):
    path, _ = stored(tmp_path, data((8, 8)), nq.ASQ(bits=4))
    put_side(path, "codebook", np.linspace(-1, 1, n))
    with pytest.raises(StoreError, match=r"'codebook'.*expected .*1 <= k <= 16"):
        nq.open(path)


def test_asq_per_group_codebook_shape(tmp_path):
    path, _ = stored(tmp_path, data((6, 8)), nq.ASQ(bits=2, axis=0))
    put_side(path, "codebook", np.tile(np.linspace(-1, 1, 4), (5, 1)))
    with pytest.raises(StoreError, match=r"'codebook'.*shape=\(5, 4\).*expected.*shape=\(6, 4\)"):
        nq.open(path)
    put_side(path, "codebook", np.tile(np.linspace(-1, 1, 3), (6, 1)))
    with pytest.raises(StoreError, match=r"'codebook'.*shape=\(6, 3\).*expected.*shape=\(6, 4\)"):
        nq.open(path)


def _codes_all(path, code, bits, shape):
    put_codes(path, pack_codes(np.full(shape, code, np.uint8), bits))


def test_codes_above_the_last_level_codebook(tmp_path):
    x = data((10, 9))
    path, _ = stored(tmp_path, x, nq.Codebook(values=[-4.0, -1.0, 0.0, 0.5, 3.0]), chunks=(5, 9))
    _codes_all(path, 7, 3, x.shape)  # 3-bit codes index 5 levels: 5..7 are past the last one
    q = nq.open(path)  # the metadata are consistent: the codes are checked per chunk
    with pytest.raises(StoreError, match=r"codes hold code 7 in the chunk at \((0|5), 0\), above the last "
                                         r"level \(index 4\)"):
        nq.dequantize(q).compute()
    _codes_all(path, 4, 3, x.shape)  # the last level itself is fine
    assert (decode(path) == 3.0).all()


def test_codes_above_the_last_level_asq_and_blockwise(tmp_path):
    x = np.repeat(np.float32([-1.0, 0.0, 1.0]), 16).reshape(6, 8)  # 3 distinct values: 3 levels
    path, _ = stored(tmp_path, x, nq.ASQ(bits=2))
    assert nq.open(path).side["codebook"].size == 3
    _codes_all(path, 3, 2, x.shape)
    with pytest.raises(StoreError, match=r"code 3.*above the last level \(index 2\)"):
        decode(path)

    scheme = nq.Blockwise(codebook=[-1.0, -0.5, 0.0, 0.5, 1.0], block_size=8)  # 5 levels in 3 bits
    path, _ = stored(tmp_path, data((8, 8)), scheme, name="b.zarr")
    _codes_all(path, 6, 3, (8, 8))
    with pytest.raises(StoreError, match=r"code 6 .*above the last level \(index 4\)"):
        decode(path)


def test_codes_above_the_last_level_in_memory():
    q = nq.quantize(data((4, 8)), nq.Codebook(values=[-1.0, 0.0, 1.0]))
    bad = QuantizedArray(scheme=q.scheme, shape=q.shape, dtype=q.dtype, bits=q.bits, side=q.side,
                         codes=pack_codes(np.full(q.shape, 3, np.uint8), q.bits))
    with pytest.raises(StoreError, match=r"code 3.*above the last level \(index 2\)"):
        nq.dequantize(bad)
    nf = nq.quantize(data((4, 8)), nq.Blockwise(codebook=[-1.0, 0.0, 0.5, 1.0, 2.0, 3.0], block_size=4))
    packed = pack_codes(np.full(nf.shape, 7, np.uint8), nf.bits)
    with pytest.raises(StoreError, match=r"code 7.*above the last level \(index 5\)"):
        nq.dequantize(QuantizedArray(scheme=nf.scheme, shape=nf.shape, dtype=nf.dtype, bits=nf.bits,
                                     side=nf.side, codes=packed))


def test_short_side_arrays_in_memory_are_refused():
    q = nq.quantize(data((64, 8)), nq.Uniform(bits=8, axis=0))
    short = dict(q.side, scale=q.side["scale"][:1])
    with pytest.raises(StoreError, match=r"'scale' has 1 entries, expected at least 64"):
        nq.dequantize(QuantizedArray(scheme=q.scheme, shape=q.shape, dtype=q.dtype, bits=q.bits,
                                     side=short, codes=q.codes))
    nf = nq.quantize(data((64, 8)), nq.NF4(block_size=64))
    for side in ({"absmax": nf.side["absmax"][:3]}, {"absmax": np.zeros(0, np.float32)}):
        with pytest.raises(StoreError, match=r"'absmax' has \d entries, expected 8"):
            nq.dequantize(QuantizedArray(scheme=nf.scheme, shape=nf.shape, dtype=nf.dtype, bits=nf.bits,
                                         side=side, codes=nf.codes))
    dq = nq.quantize(data((64, 64)), nq.NF4(block_size=4, double_quant=True))
    with pytest.raises(StoreError, match=r"'absmax2' has 1 entries, expected 4"):
        nq.dequantize(QuantizedArray(scheme=dq.scheme, shape=dq.shape, dtype=dq.dtype, bits=dq.bits,
                                     side=dict(dq.side, absmax2=dq.side["absmax2"][:1]), codes=dq.codes))


def _lazy_group(path, rows, scale_len, bits=8):
    """A 'rows' x 1 group of int8 codes per row (axis=0) whose chunks are never written."""
    g = zarr.open_group(path, mode="w")
    scheme = nq.Uniform(bits=bits, axis=0, zero_point_storage="int32")
    g.create_array("codes", shape=(rows, 1), chunks=(1 << 20, 1), dtype=np.uint8, fill_value=0)
    g.create_array("scale", shape=(scale_len,), chunks=(max(1, scale_len),), dtype=np.float32, fill_value=0)
    g.create_array("zero_point", shape=(rows,), chunks=(1 << 20,), dtype=np.int32, fill_value=0)
    g.attrs["nquant"] = {"format_version": 1, "scheme": json.loads(scheme.to_json()), "shape": [rows, 1],
                         "dtype": "<f4", "chunks": [1 << 20, 1], "bits": bits, "metrics": {},
                         "complete": True}


def test_32m_rows_with_a_length_1_scale_is_refused_before_decoding(tmp_path):
    """Formerly a segfault (exit 139): refused by open, with nothing read."""
    path = str(tmp_path / "big.zarr")
    _lazy_group(path, 1 << 25, 1)
    code = ("import sys, nquant as nq\n"
            "try:\n    nq.dequantize(nq.open(sys.argv[1])).compute()\n"
            "except nq.errors.StoreError as e:\n    print('StoreError:', e); sys.exit(2)\n")
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "'scale'" in r.stdout and "(33554432,)" in r.stdout


@pytest.mark.parametrize("chunks", [[0, 64], [-1, 64], [1.5, 64], [64], [64, 64, 1], "64", None, [True, 64],
                                    [65, 64], [1 << 40, 64]])
def test_bad_chunks_metadata(tmp_path, chunks):
    path, _ = stored(tmp_path, data((64, 64)), nq.Uniform(bits=4))
    set_meta(path, chunks=chunks)
    with pytest.raises(StoreError, match=r"chunks=.* is invalid"):
        nq.open(path)


def test_chunks_that_do_not_match_the_codes(tmp_path):
    path, _ = stored(tmp_path, data((64, 64)), nq.Uniform(bits=4), chunks=(16, 64))
    set_meta(path, chunks=[32, 64])
    with pytest.raises(StoreError, match=r"array 'codes' has chunks=\(16, 32\), expected \(32, 32\)"):
        nq.open(path)


def test_block_chunks_that_cut_blocks(tmp_path):
    path, _ = stored(tmp_path, data((16, 6)), nq.NF4(block_size=8), chunks=(4, 6))
    set_meta(path, chunks=[3, 6])  # 18 values per chunk: blocks of 8 cut
    with pytest.raises(StoreError, match=r"chunks=\[3, 6\] for shape=\[16, 6\] give chunks that end inside "
                                         r"a block of 8 values"):
        nq.open(path)


@pytest.mark.parametrize("dtype", ["|O", "<i4", ">f4", "float128", 5, None, "nonsense"])
def test_bad_dtype_metadata(tmp_path, dtype):
    path, _ = stored(tmp_path, data((8, 8)), nq.Uniform(bits=8))
    set_meta(path, dtype=dtype)
    with pytest.raises(StoreError, match=r"dtype=.* is invalid"):
        nq.open(path)


@pytest.mark.parametrize("complete", ["no", "true", 1, False, None])
def test_complete_must_be_exactly_true(tmp_path, complete):
    path, _ = stored(tmp_path, data((8, 8)), nq.Uniform(bits=8))
    set_meta(path, complete=complete)
    with pytest.raises(StoreError, match=r"incomplete"):
        nq.open(path)


@pytest.mark.parametrize("field,value,message", [
    ("shape", [-1, 8], r"shape=.* is invalid"),
    ("shape", [8.0, 8], r"shape=.* is invalid"),
    ("shape", "8,8", r"shape=.* is invalid"),
    ("shape", [1 << 30, 1 << 30], r"more than the \d+ supported"),
    ("shape", [8, 9], r"array 'codes': codes shape=\(8, 8\) does not match shape=\(8, 9\) with bits=8 "
                      r"\(expected \(8, 9\)\)"),
    ("bits", 4, r"bits=4 is invalid"),
    ("bits", "8", r"bits='8' is invalid"),
    ("bits", True, r"bits=True is invalid"),
    ("format_version", True, r"format_version=True"),
    ("format_version", 0, r"format_version=0"),
    ("format_version", 99, r"format_version=99"),
    ("scheme", {"type": "uniform", "bits": 99}, r"scheme is invalid|bits=99"),
    ("scheme", [1, 2], r"scheme is invalid"),
])
def test_bad_metadata_fields(tmp_path, field, value, message):
    path, _ = stored(tmp_path, data((8, 8)), nq.Uniform(bits=8))
    set_meta(path, **{field: value})
    with pytest.raises(StoreError, match=message):
        nq.open(path)


def test_codes_dtype_and_shape(tmp_path):
    path, _ = stored(tmp_path, data((8, 8)), nq.Uniform(bits=8))
    g = zarr.open_group(path, mode="r+")
    kw = {"overwrite": True, "fill_value": 0, "compressors": validate.compressors()}
    g.create_array("codes", shape=(8, 8), dtype=np.uint16, **kw)
    validate.seal(g)
    with pytest.raises(StoreError, match=r"'codes' has dtype=uint16, expected uint8"):
        nq.open(path)
    g.create_array("codes", shape=(8, 7), dtype=np.uint8, **kw)
    validate.seal(g)
    with pytest.raises(StoreError, match=r"'codes': codes shape=\(8, 7\) does not match shape=\(8, 8\)"):
        nq.open(path)
    shutil.rmtree(pathlib.Path(path) / "codes")
    with pytest.raises(StoreError, match=r"array 'codes' is missing"):
        nq.open(path)


def test_unknown_and_missing_side_arrays(tmp_path):
    path, _ = stored(tmp_path, data((8, 8)), nq.Uniform(bits=8))
    put_side(path, "extra", np.ones(3, np.float32))
    with pytest.raises(StoreError, match=r"unknown \['extra'\]"):
        nq.open(path)
    path, _ = stored(tmp_path, data((8, 8)), nq.Uniform(bits=8, zero_point_storage="int32"), name="m.zarr")
    shutil.rmtree(pathlib.Path(path) / "zero_point")
    with pytest.raises(StoreError, match=r"\['zero_point'\] of the integrity record are missing"):
        nq.open(path)
    path, _ = stored(tmp_path, data((8, 8)), nq.Uniform(bits=8), name="p.zarr")
    shutil.rmtree(pathlib.Path(path) / "zero_point_codes")
    with pytest.raises(StoreError, match=r"\['zero_point_codes'\] of the integrity record are missing"):
        nq.open(path)


def test_side_values(tmp_path):
    path, _ = stored(tmp_path, data((8, 8)), nq.Uniform(bits=8, axis=0, zero_point_storage="int32"))
    put_side(path, "zero_point", np.full(8, 300, np.int32))
    with pytest.raises(StoreError, match=r"'zero_point' holds values in \[300, 300\], outside the code "):
        nq.open(path)
    put_side(path, "zero_point", np.zeros(8, np.int32))
    put_side(path, "scale", np.float32([1, 1, np.nan, 1, 1, 1, 1, 1]))
    with pytest.raises(StoreError, match=r"'scale' holds non-finite values"):
        nq.open(path)


@pytest.mark.parametrize("index", [[3, 2, 70], [-1, 2, 5], [1, 2, 64], [1, 1, 5]])
def test_outlier_indices(tmp_path, index):
    path, _ = stored(tmp_path, data((8, 8)), nq.Outliers(base=nq.Uniform(bits=4), fraction=3 / 64))
    put_side(path, "outlier_index", np.int64(index))
    with pytest.raises(StoreError, match=r"'outlier_index' holds indices that are not strictly increasing "
                                         r"in \[0, 64\)"):
        nq.open(path)


def test_outlier_count(tmp_path):
    path, _ = stored(tmp_path, data((8, 8)), nq.Outliers(base=nq.Uniform(bits=4), fraction=3 / 64))
    put_side(path, "outlier_index", np.int64([1, 2, 3, 4]))
    with pytest.raises(StoreError, match=r"'outlier_index'.*shape=\(4,\); expected.*shape=\(3,\)"):
        nq.open(path)
    scheme = nq.Outliers(base=nq.Uniform(bits=4), threshold=3.0)
    path, _ = stored(tmp_path, data((8, 8)), scheme, name="t.zarr")
    put_side(path, "outlier_value", np.zeros(100, np.float32))
    with pytest.raises(StoreError, match=r"'outlier_value'.*expected .*0 <= k <= 64"):
        nq.open(path)


# ----------------------------------------------------------------------------- sealed groups


SEALED = [("uniform", nq.Uniform(bits=4, axis=0), (8, 16), ["codes", "scale"]),
          ("nf4", nq.NF4(block_size=16), (8, 16), ["codes", "absmax"]),
          ("nf4dq", nq.NF4(block_size=4, double_quant=True), (32, 32), ["codes", "absmax_codes"])]


@pytest.mark.parametrize("label,scheme,chunks,arrays", SEALED, ids=[s[0] for s in SEALED])
def test_deleted_chunk_is_detected(tmp_path, label, scheme, chunks, arrays):
    x = data((64, 16) if label != "nf4dq" else (64, 32))
    path, expected = stored(tmp_path, x, scheme, chunks=chunks)
    assert nq.open(path).info["verified"] is True
    assert np.array_equal(decode(path), expected)
    for name in arrays:
        work = tmp_path / f"del-{name}.zarr"
        shutil.copytree(path, work)
        z = zarr.open_array(str(work / name), mode="r")
        key = tuple(n - 1 for n in z.cdata_shape)  # the last chunk
        chunk_file(work, name, key).unlink()
        with pytest.raises(StoreError, match=rf"array '{name}' chunk {key!s} is missing".replace("(", r"\(")
                           .replace(")", r"\)")):
            decode(str(work))
        report = verify.verify_chunks(str(work))
        assert not report["ok"] and any(f"'{name}' chunk" in p for p in report["problems"])


@pytest.mark.parametrize("label,scheme,chunks,arrays", SEALED, ids=[s[0] for s in SEALED])
def test_flipped_byte_is_detected(tmp_path, label, scheme, chunks, arrays):
    x = data((64, 16) if label != "nf4dq" else (64, 32))
    path, _ = stored(tmp_path, x, scheme, chunks=chunks)
    for name in arrays:
        work = tmp_path / f"flip-{name}.zarr"
        shutil.copytree(path, work)
        f = chunk_file(work, name, (0,) * zarr.open_array(str(work / name), mode="r").ndim)
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        f.write_bytes(bytes(raw))
        with pytest.raises(StoreError, match=rf"array '{name}' chunk \(0,( 0)?\) cannot be read: .*checksum"):
            decode(str(work))
        assert not verify.verify_chunks(str(work))["ok"]


def test_changed_fill_value_is_detected_at_open(tmp_path):
    path, _ = stored(tmp_path, data((16, 16)), nq.Uniform(bits=8))
    for name in ("codes", "scale"):
        work = tmp_path / f"fill-{name}.zarr"
        shutil.copytree(path, work)

        def fn(doc):
            doc["fill_value"] = 3
        edit_json(work / name, fn)
        with pytest.raises(StoreError, match=rf"array '{name}' has fill_value=3.*, expected 0"):
            nq.open(str(work))


def test_altered_record_or_removed_checksum(tmp_path):
    path, _ = stored(tmp_path, data((16, 16)), nq.Uniform(bits=8), chunks=(4, 16))

    def drop_crc(doc):
        doc["codecs"] = [c for c in doc["codecs"] if c["name"] != "crc32c"]
    work = tmp_path / "nocrc.zarr"
    shutil.copytree(path, work)
    edit_json(work / "codes", drop_crc)
    with pytest.raises(StoreError, match=r"array 'codes' has no crc32c checksum"):
        nq.open(str(work))

    def fewer(doc):
        doc["attributes"][validate.INTEGRITY]["chunks"]["codes"] = 2
    edit_json(path, fewer)
    with pytest.raises(StoreError, match=r"array 'codes' has 4 chunks; the integrity record says 2"):
        nq.open(path)


def test_every_chunk_is_stored_and_seal_is_idempotent(tmp_path):
    x = np.zeros((32, 8), np.float32)  # codes and zero points all 0: chunks equal to the fill value
    path, expected = stored(tmp_path, x, nq.Uniform(bits=8), chunks=(8, 8))
    g = zarr.open_group(path, mode="r")
    for name in g.array_keys():
        assert g[name].nchunks_initialized == g[name].nchunks, name
    before = dict(g.attrs.asdict()[validate.INTEGRITY])
    assert validate.seal(zarr.open_group(path, mode="r+")) == before["chunks"]
    assert np.array_equal(decode(path), expected)


def test_seal_needs_checksums(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("codes", shape=(4,), dtype=np.uint8, fill_value=0)  # zarr's default codecs
    with pytest.raises(StoreError, match=r"array 'codes' has no crc32c checksum"):
        validate.seal(g)
    assert validate.INTEGRITY not in g.attrs.asdict()


def test_verify_chunks_report(tmp_path):
    path, _ = stored(tmp_path, data((32, 16)), nq.NF4(block_size=16), chunks=(8, 16))
    report = verify.verify_chunks(path)
    assert report == {"verified": True, "arrays": {"absmax": 4, "codes": 4}, "chunks": 8, "problems": [],
                      "ok": True}


# ----------------------------------------------------------------------------- old groups


GOLDEN_NAMES = sorted(p.stem for p in GOLDEN.glob("*.npy"))
# the golden stores written before the integrity record existed (the later ones are sealed)
UNSEALED = {"codebook5_stochastic_f32", "int4_sym_axis0_f32", "int8_tensor_f32", "nf4_double_quant_f32",
            "nf4_stream_f16", "uint2_blocks_stream_f32", "uint3_axis_last_stochastic_f64",
            "uint4_blocks16_f16", "uint8_percentile_stream_f32"}


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_stores_decode_and_are_unverified(name):
    store = str(GOLDEN / f"{name}.zarr")
    q = nq.open(store)
    sealed = name not in UNSEALED
    assert q.info["verified"] is sealed and verify.is_verified(store) is sealed
    expected = np.load(GOLDEN / f"{name}.npy")
    got = np.asarray(nq.dequantize(q).compute())
    assert got.dtype == expected.dtype and np.array_equal(got.view(np.uint8), expected.view(np.uint8))
    report = verify.verify_chunks(store)
    assert report["ok"] and report["verified"] is sealed


def test_corrupt_zstd_chunk_of_an_old_group_is_a_store_error(tmp_path):
    work = tmp_path / "old.zarr"
    shutil.copytree(GOLDEN / "int8_tensor_f32.zarr", work)
    f = chunk_file(work, "codes", (1, 0))
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(StoreError, match=r"array 'codes' chunk \(1, 0\) cannot be read"):
        decode(str(work))


# ----------------------------------------------------------------------------- model groups


def test_open_model_group(tmp_path):
    from nquant.safetensors_io import write_tensors

    rng = np.random.default_rng(3)
    tensors = {"encoder/w": (rng.standard_normal((16, 8)).astype(np.float32), "F32"),
               "head.weight": (rng.standard_normal((8, 4)).astype(np.float32), "F32"),
               "bias": (rng.standard_normal(8).astype(np.float32), "F32")}
    src = str(tmp_path / "model.safetensors")
    write_tensors(src, tensors)
    dst = str(tmp_path / "model.zarr")
    nq.quantize_safetensors(src, dst, nq.NF4(block_size=8))
    opened = nq.open(dst)
    assert sorted(opened) == ["encoder/w", "head.weight"]
    for name, q in opened.items():
        want = nq.dequantize(nq.quantize(tensors[name][0], nq.NF4(block_size=8)))
        assert np.array_equal(np.asarray(nq.dequantize(q).compute()), want)

    for name in opened:  # a no-op where the writer sealed them
        validate.seal(zarr.open_group(os.path.join(dst, name), mode="r+"))
    report = verify.verify_chunks(dst)
    assert report["ok"] and report["verified"]
    assert set(report["arrays"]) == {"encoder/w/codes", "encoder/w/absmax", "head.weight/codes",
                                     "head.weight/absmax"}
    absmax_file = pathlib.Path(dst, "head.weight", "absmax", "c", "0")
    raw = bytearray(absmax_file.read_bytes())
    raw[-1] ^= 0xFF  # a checksum byte
    absmax_file.write_bytes(bytes(raw))
    problems = verify.verify_chunks(dst)["problems"]
    assert len(problems) == 1 and "head.weight" in problems[0] and "'absmax' chunk (0,)" in problems[0]

    def bad_name(doc):
        doc["attributes"]["nquant_model"]["tensors"]["../escape"] = {}
    edit_json(dst, bad_name)
    with pytest.raises(StoreError, match=r"tensor name='../escape' is not a valid name"):
        nq.open(dst)

    def not_complete(doc):
        doc["attributes"]["nquant_model"]["complete"] = "no"
    edit_json(dst, not_complete)
    with pytest.raises(StoreError, match=r"incomplete model group"):
        nq.open(dst)


# ----------------------------------------------------------------------------- crafted stores

FAMILIES = {
    "uniform": nq.Uniform(bits=3, axis=0),
    "uniform_blocks": nq.Uniform(bits=4, block_size=8),
    "codebook": nq.Codebook(values=[-2.0, -0.5, 0.0, 1.0, 2.5]),
    "nf4": nq.NF4(block_size=8),
    "asq": nq.ASQ(bits=2),
}


def _reference(path, scheme, shape, side_names):
    """The in-memory decode of what the store holds (read with plain zarr), or the StoreError
    the in-memory path gives; None when the arrays do not even fit a QuantizedArray."""
    g = zarr.open_group(path, mode="r")
    side = {name: g[name][...] for name in side_names}
    codes = g["codes"][...]
    try:
        q = QuantizedArray(scheme=scheme, shape=shape, dtype=np.dtype(np.float32), codes=codes,
                           bits=scheme.bits, side=side)
        return nq.dequantize(q)
    except StoreError as e:
        return e


@pytest.mark.parametrize("family", sorted(FAMILIES))
@given(rows=st.integers(1, 24), chunk=st.integers(1, 30),
       mutation=st.sampled_from(["none", "side_length", "codes", "meta_type", "chunks"]),
       pick=st.integers(0, 1 << 30), seed=st.integers(0, 1 << 30))
def test_crafted_stores_give_store_error_or_the_reference_decode(tmp_path_factory, family, rows, chunk,
                                                                  mutation, pick, seed):
    scheme = FAMILIES[family]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 8)).astype(np.float32)
    tmp = tmp_path_factory.mktemp("crafted")
    chunks = (chunk, 8)
    path = str(tmp / "q.zarr")
    q = nq.quantize(x, scheme)
    nq.save(q, path, chunks=chunks)
    validate.seal(zarr.open_group(path, mode="r+"))
    names = sorted(q.side)
    must_fail = False
    if mutation == "side_length":
        name = names[pick % len(names)]
        old = np.asarray(q.side[name])
        n = old.shape[0] + [-1, 1, -old.shape[0], 5][pick % 4]
        if n >= 0 and n != old.shape[0]:
            put_side(path, name, rng.uniform(0.5, 2, (n,) + old.shape[1:]).astype(old.dtype))
            must_fail = not (family == "asq" and 1 <= n <= 4)  # ASQ keeps 1..2**bits levels
    elif mutation == "codes":
        g = zarr.open_group(path, mode="r+")
        g["codes"][...] = rng.integers(0, 256, g["codes"].shape, dtype=np.uint8)
        validate.seal(g)
    elif mutation == "meta_type":
        field = ["shape", "chunks", "dtype", "bits", "complete", "format_version"][pick % 6]
        value = [None, "x", 1.5, [1.5], {}, -3, [rows, 8, 1], "|O", True][pick % 9]
        set_meta(path, **{field: value})
        must_fail = not (field == "complete" and value is True)
    elif mutation == "chunks":
        new = [1 + pick % 40, 8]
        set_meta(path, chunks=new)
        must_fail = new != list(zarr.open_group(path)["codes"].chunks[:1]) + [8]
    try:
        got = decode(path)
    except StoreError:
        return
    assert not must_fail, f"{mutation} was not refused"
    ref = _reference(path, scheme, x.shape, names)
    assert not isinstance(ref, StoreError), f"the in-memory decode refused it ({ref}), open did not"
    assert np.array_equal(got, ref, equal_nan=True)
    if family in ("codebook", "asq"):  # every code indexes a level
        n_levels = np.unique(np.asarray(q.side["codebook"], np.float32)).size
        codes = unpack_codes(zarr.open_group(path)["codes"][...], scheme.bits, x.shape)
        assert codes.max() < n_levels
    assert os.path.isdir(path)
