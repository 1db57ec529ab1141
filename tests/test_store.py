"""Zarr storage: save / open round trips, streaming ``quantize_zarr`` (no-op rerun, overwrite,
resume after an interruption), store errors, and golden stores decoded forever."""

import json
import os
import pathlib
import threading
import time
import uuid

import dask
import dask.array as da
import dask.threaded
import numpy as np
import pytest
import zarr

import nquant as nq
from nquant.errors import StoreError
from tests.helpers import CountingScheduler, assert_same_quantized, same_bits, write_zarr

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "golden"


# ----------------------------------------------------------------------------- helpers


class Source:
    """A chunk function for ``map_blocks`` that records every read and can fail some of them.

    The chunks in ``fail_blocks`` raise on their ``fail_on_read``-th read, as a flaky disk or
    network read would.  With ``wait_for=(group, n)`` a failing read first waits until ``n``
    chunks of the streaming job's ``group`` are done, so that the interrupted state is the
    same whatever order the scheduler picks (and no task is still running when the job fails).
    """

    def __init__(self, fail_blocks=(), fail_on_read=1, wait_for=None):
        self.reads = []
        self.fail_blocks = set(fail_blocks)
        self.fail_on_read = fail_on_read
        self.wait_for = wait_for
        self._lock = threading.Lock()

    def __call__(self, block, block_info=None):
        loc = tuple(block_info[0]["chunk-location"])
        with self._lock:
            self.reads.append(loc)
            n = self.reads.count(loc)
        if loc in self.fail_blocks and n == self.fail_on_read:
            if self.wait_for is not None:
                _wait_done(*self.wait_for)
            raise RuntimeError(f"simulated read failure of chunk {loc}")
        return block

    def counts(self):
        return {loc: self.reads.count(loc) for loc in set(self.reads)}


def source_array(x, chunks, source):
    return da.from_array(x, chunks=chunks).map_blocks(source, dtype=x.dtype)


def data(seed, shape, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 0.5).astype(dtype)
    x.setflags(write=False)
    return x


def file_mtimes(path):
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[p] = os.stat(p).st_mtime_ns
    return out


def group_meta(location):
    return zarr.open_group(str(location), mode="r").attrs.asdict()["nquant"]


def done_flags(location):
    """Per-chunk done flags of a streaming job's group (last column of ``chunk_stats``)."""
    return zarr.open_group(str(location), mode="r")["chunk_stats"][..., -1] == 1


def _wait_done(location, n, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if done_flags(location).sum() >= n:
                return
        except Exception:  # the group or a flag being written right now
            pass
        time.sleep(0.02)
    raise AssertionError(f"{location}: fewer than {n} chunks done after {timeout} s")


# threads enough that waiting failing reads never starve the chunks they wait for
INTERRUPT = {"scheduler": "threads", "num_workers": 4}


SCHEMES = {
    "int8": nq.Uniform(bits=8),
    "int4_sym_axis0": nq.Uniform(bits=4, symmetric=True, axis=0),
    "uint3_axis_last_stochastic": nq.Uniform(bits=3, axis=-1, rounding="stochastic", seed=3),
    "uint5_percentile": nq.Uniform(bits=5, range="percentile", bins=256),
    "uint4_mse_middle": nq.Uniform(bits=4, axis=1, range="mse", bins=128),
    "nf_blocks16": nq.Uniform(bits=4, block_size=16),
    "uint3_blocks12_stochastic": nq.Uniform(bits=3, block_size=12, rounding="stochastic"),
    "codebook_stochastic": nq.Codebook(values=(-4.0, -1.0, 0.0, 0.5, 3.0), rounding="stochastic", seed=2),
    "nf4_double_quant": nq.NF4(block_size=8, double_quant=True),
}
SCHEME_PARAMS = [pytest.param(s, id=k) for k, s in SCHEMES.items()]


@pytest.fixture
def x3():
    return data(0, (14, 6, 10))


# ----------------------------------------------------------------------------- save / open


def _memory_url():
    return f"memory://nquant-test-{uuid.uuid4().hex}/q.zarr"


@pytest.mark.parametrize("where", ["local", "memory_url", "MemoryStore"])
@pytest.mark.parametrize("scheme", SCHEME_PARAMS)
def test_save_open_round_trip(tmp_path, x3, scheme, where):
    store = {"local": lambda: str(tmp_path / "q.zarr"), "memory_url": _memory_url,
             "MemoryStore": zarr.storage.MemoryStore}[where]()
    q = nq.quantize(x3, scheme)
    assert nq.save(q, store, chunks=(4, 6, 10)) is store
    with dask.config.set(scheduler=CountingScheduler(raise_on_compute=True)):
        q2 = nq.open(store)  # lazy: reads metadata and small side arrays, computes nothing
        assert q2.is_dask and isinstance(q2.codes, da.Array)
        x_hat = nq.dequantize(q2)
    assert isinstance(x_hat, da.Array)
    assert_same_quantized(q, q2)
    if where == "local":
        assert sorted(os.listdir(tmp_path)) == ["q.zarr"]  # no .partial left behind
        meta = group_meta(tmp_path / "q.zarr")
        assert meta["complete"] is True and meta["format_version"] == 1
        assert nq.scheme_from_json(meta["scheme"]) == scheme


@pytest.mark.parametrize("scheme", [SCHEMES["int8"], SCHEMES["uint3_blocks12_stochastic"],
                                    SCHEMES["uint3_axis_last_stochastic"]], ids=["int8", "blocks", "axis"])
def test_save_dask_backed_keeps_its_chunks(tmp_path, x3, scheme):
    q = nq.quantize(da.from_array(x3, chunks=(5, 3, 8)), scheme)
    nq.save(q, tmp_path / "q.zarr")
    q2 = nq.open(tmp_path / "q.zarr")
    assert_same_quantized(q, q2)
    assert_same_quantized(nq.quantize(x3, scheme), q2)


def test_save_refuses_an_existing_store_unless_overwrite(tmp_path, x3):
    path = str(tmp_path / "q.zarr")
    q8 = nq.quantize(x3, nq.Uniform(bits=8))
    q4 = nq.quantize(x3, nq.Uniform(bits=4, axis=0))
    nq.save(q8, path)
    with pytest.raises(StoreError, match=r"already exists.*overwrite=True"):
        nq.save(q4, path)
    assert_same_quantized(q8, nq.open(path))
    nq.save(q4, path, overwrite=True)
    assert_same_quantized(q4, nq.open(path))


def test_save_0d_and_empty(tmp_path):
    for i, x in enumerate([np.array(2.5, np.float32), np.zeros((0, 4), np.float64)]):
        q = nq.quantize(x, nq.Uniform(bits=4))
        nq.save(q, tmp_path / f"{i}.zarr")
        assert_same_quantized(q, nq.open(tmp_path / f"{i}.zarr"))


# ----------------------------------------------------------------------------- store errors


def test_open_missing_store(tmp_path):
    missing = str(tmp_path / "nothing.zarr")
    with pytest.raises(StoreError, match=r"nothing\.zarr.*does not exist"):
        nq.open(missing)
    with pytest.raises(StoreError, match=r"does not exist"):
        nq.open(f"memory://nquant-test-{uuid.uuid4().hex}/absent.zarr")


def test_open_foreign_group(tmp_path):
    g = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    g.create_array("codes", shape=(3,), dtype=np.uint8)
    g.attrs["something"] = 1
    with pytest.raises(StoreError, match=r"foreign\.zarr.*not an nquant group"):
        nq.open(str(tmp_path / "foreign.zarr"))


def test_open_a_plain_array_is_not_a_group(tmp_path):
    write_zarr(tmp_path / "arr.zarr", data(1, (4, 4)), (2, 4))
    with pytest.raises(StoreError, match=r"arr\.zarr"):
        nq.open(str(tmp_path / "arr.zarr"))


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "q.zarr"
    nq.save(nq.quantize(data(2, (8, 6)), nq.Uniform(bits=4)), str(path))
    return path


def test_open_codes_of_the_wrong_shape(saved):
    g = zarr.open_group(str(saved), mode="r+")
    g.create_array("codes", shape=(8, 2), dtype=np.uint8, overwrite=True)
    with pytest.raises(StoreError, match=r"codes shape=\(8, 2\) does not match shape=\(8, 6\) with bits=4"):
        nq.open(str(saved))


def test_open_missing_codes(saved):
    del zarr.open_group(str(saved), mode="r+")["codes"]
    with pytest.raises(StoreError, match=r"corrupt"):
        nq.open(str(saved))


def test_open_garbled_group_metadata(saved):
    (saved / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')
    with pytest.raises(StoreError, match=r"cannot be opened as a Zarr group"):
        nq.open(str(saved))


def test_open_garbled_codes_metadata(saved):
    (saved / "codes" / "zarr.json").write_text("not json at all")
    with pytest.raises(StoreError, match=r"q\.zarr"):
        nq.open(str(saved))


def test_open_newer_format_version(saved):
    g = zarr.open_group(str(saved), mode="r+")
    meta = g.attrs.asdict()["nquant"]
    g.attrs["nquant"] = {**meta, "format_version": 99}
    with pytest.raises(StoreError, match=r"format_version=99"):
        nq.open(str(saved))


def test_open_corrupt_scheme(saved):
    g = zarr.open_group(str(saved), mode="r+")
    meta = g.attrs.asdict()["nquant"]
    g.attrs["nquant"] = {**meta, "scheme": {"type": "no-such-scheme"}}
    with pytest.raises(StoreError, match=r"corrupt nquant metadata"):
        nq.open(str(saved))


def test_open_incomplete_group(saved):
    g = zarr.open_group(str(saved), mode="r+")
    g.attrs["nquant"] = {**g.attrs.asdict()["nquant"], "complete": False}
    with pytest.raises(StoreError, match=r"incomplete"):
        nq.open(str(saved))
    assert not nq.store.is_complete(str(saved))


def test_store_error_is_an_nquant_and_os_error(tmp_path):
    with pytest.raises(nq.errors.NQuantError):
        nq.open(str(tmp_path / "none.zarr"))
    with pytest.raises(OSError):
        nq.open(str(tmp_path / "none.zarr"))


def test_quantize_zarr_missing_source(tmp_path):
    with pytest.raises(StoreError, match=r"src=.*absent\.zarr.*cannot be opened as a Zarr array"):
        nq.quantize_zarr(str(tmp_path / "absent.zarr"), str(tmp_path / "out.zarr"), nq.Uniform())
    assert not (tmp_path / "out.zarr").exists()


# ----------------------------------------------------------------------------- quantize_zarr


@pytest.mark.parametrize("scheme", SCHEME_PARAMS)
def test_quantize_zarr_equals_in_memory(tmp_path, x3, scheme):
    write_zarr(tmp_path / "src.zarr", x3, (4, 6, 10))
    q = nq.quantize_zarr(str(tmp_path / "src.zarr"), str(tmp_path / "out.zarr"), scheme)
    q_mem = nq.quantize(x3, scheme)
    assert_same_quantized(q_mem, q)
    assert_same_quantized(q_mem, nq.open(str(tmp_path / "out.zarr")))
    assert sorted(os.listdir(tmp_path)) == ["out.zarr", "src.zarr"]  # renamed, no .partial left
    meta = group_meta(tmp_path / "out.zarr")
    assert meta["complete"] is True
    # per-chunk error statistics merge into the metrics of the whole array
    expected = nq.metrics(x3, nq.dequantize(q_mem))
    for k in ("mse", "max_abs", "bias"):
        assert meta["metrics"][k] == pytest.approx(expected[k], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kind", ["zarr_array", "dask_irregular"])
@pytest.mark.parametrize("scheme", [SCHEMES["uint3_axis_last_stochastic"], SCHEMES["nf_blocks16"],
                                    SCHEMES["uint5_percentile"]], ids=["axis", "blocks", "percentile"])
def test_quantize_zarr_sources(tmp_path, scheme, kind):
    x = data(4, (60, 16))
    if kind == "zarr_array":
        src = write_zarr(tmp_path / "src.zarr", x, (7, 16))
    else:  # irregular chunks: every task must still write whole Zarr chunks (no lost updates)
        src = da.from_array(x, chunks=((3, 4) * 8 + (4,), (5, 11)))
    with dask.config.set(scheduler="threads"):
        q = nq.quantize_zarr(src, str(tmp_path / "out.zarr"), scheme)
    assert_same_quantized(nq.quantize(x, scheme), q)


def test_quantize_zarr_rerun_is_a_no_op(tmp_path, x3):
    write_zarr(tmp_path / "src.zarr", x3, (4, 6, 10))
    out = str(tmp_path / "out.zarr")
    scheme = SCHEMES["uint4_mse_middle"]
    q1 = nq.quantize_zarr(str(tmp_path / "src.zarr"), out, scheme)
    before = file_mtimes(out)
    assert before
    # nothing is read, computed or written: a source that fails on any read, a scheduler that
    # refuses any compute, and unchanged files prove it
    failing = source_array(x3, (4, 6, 10), Source({(i, 0, 0) for i in range(4)}))
    with dask.config.set(scheduler=CountingScheduler(raise_on_compute=True)):
        q2 = nq.quantize_zarr(failing, out, scheme)
    assert file_mtimes(out) == before
    assert_same_quantized(q1, q2)


@pytest.mark.parametrize("scheme", [SCHEMES["int8"], SCHEMES["nf_blocks16"]], ids=["fitted", "blocks"])
def test_quantize_zarr_overwrite_recomputes(tmp_path, scheme):
    x = data(5, (20, 8))
    out = str(tmp_path / "out.zarr")
    nq.quantize_zarr(da.from_array(x, chunks=(5, 8)), out, scheme)
    before = file_mtimes(out)
    src = Source()
    q = nq.quantize_zarr(source_array(x, (5, 8), src), out, scheme, overwrite=True)
    passes = 1 if scheme.block_size else 2  # fit pass + encode pass
    assert src.counts() == {(i, 0): passes for i in range(4)}
    after = file_mtimes(out)
    assert all(after[p] != before[p] for p in after if p in before and "/c/" in p)
    assert_same_quantized(nq.quantize(x, scheme), q)
    assert sorted(os.listdir(tmp_path)) == ["out.zarr"]


# per-channel schemes on chunks that hold whole channels: each task fits its own chunk
WHOLE_CHANNELS = [
    pytest.param(nq.Uniform(bits=4, symmetric=True, axis=0), (5, 16), id="sym_axis0"),
    pytest.param(nq.Uniform(bits=3, axis=0, zero_point="float", rounding="stochastic", seed=5), (7, 16),
                 id="float_zp_stochastic"),
    pytest.param(nq.Uniform(bits=5, axis=1, range="percentile", bins=256), (30, 5), id="percentile_axis1"),
    pytest.param(nq.Uniform(bits=4, axis=0, range="mse", bins=128), (6, 16), id="mse"),
]


@pytest.mark.parametrize(("scheme", "chunks"), WHOLE_CHANNELS)
def test_quantize_zarr_whole_channel_chunks_take_one_pass(tmp_path, scheme, chunks):
    x = data(9, (30, 16))
    src = Source()
    with dask.config.set(scheduler="threads"):
        q = nq.quantize_zarr(source_array(x, chunks, src), str(tmp_path / "out.zarr"), scheme)
    nblocks = da.from_array(x, chunks=chunks).numblocks
    assert src.counts() == {idx: 1 for idx in np.ndindex(*nblocks)}  # no statistics pass
    assert_same_quantized(nq.quantize(x, scheme), q)
    assert_same_quantized(nq.quantize(da.from_array(x, chunks=(4, 3)), scheme), q)  # the global fit, too


def test_quantize_zarr_whole_channel_chunks_refuse_nan(tmp_path):
    x = data(10, (12, 8)).copy()
    x[7, 3] = np.nan
    with pytest.raises(nq.errors.InputError, match="NaN"):
        nq.quantize_zarr(da.from_array(x, chunks=(4, 8)), str(tmp_path / "out.zarr"), nq.Uniform(axis=0))
    with pytest.raises(StoreError):
        nq.open(str(tmp_path / "out.zarr"))


# ----------------------------------------------------------------------------- resume

# (scheme, how many reads of a chunk happen before encoding: fit passes)
RESUME_CASES = [
    pytest.param(SCHEMES["nf_blocks16"], 0, id="blocks"),
    pytest.param(SCHEMES["uint3_axis_last_stochastic"], 1, id="minmax_axis"),
    pytest.param(nq.Uniform(bits=5, axis=0, range="percentile", bins=64), 0, id="whole_channels"),
    pytest.param(SCHEMES["uint5_percentile"], 2, id="percentile"),
]


@pytest.mark.parametrize(("scheme", "fit_passes"), RESUME_CASES)
def test_resume_computes_only_the_missing_chunks(tmp_path, scheme, fit_passes):
    x = data(6, (24, 16))
    chunks = (4, 16)
    nblocks = 6
    failing = {(1, 0), (4, 0)}
    dst = tmp_path / "out.zarr"
    partial = tmp_path / "out.zarr.partial"

    # 1. an interrupted job: reads of two chunks fail while encoding (after the fit passes)
    flaky = Source(failing, fail_on_read=fit_passes + 1, wait_for=(partial, nblocks - len(failing)))
    with dask.config.set(INTERRUPT), pytest.raises(RuntimeError, match="simulated read failure"):
        nq.quantize_zarr(source_array(x, chunks, flaky), str(dst), scheme)
    assert not dst.exists() and partial.exists()
    assert group_meta(partial)["complete"] is False
    with pytest.raises(StoreError, match=r"does not exist"):
        nq.open(str(dst))
    with pytest.raises(StoreError, match=r"incomplete"):
        nq.open(str(partial))
    assert not nq.store.is_complete(str(dst)) and not nq.store.is_complete(str(partial))
    done = done_flags(partial)
    assert done.shape == (nblocks, 1)
    assert {(i, 0) for i in range(nblocks) if not done[i, 0]} == failing

    # 2. the rerun reads only the chunks that are not done (parameters are read back, not refitted)
    good = Source()
    q = nq.quantize_zarr(source_array(x, chunks, good), str(dst), scheme, resume=True)
    assert good.counts() == {loc: 1 for loc in failing}
    assert not partial.exists() and group_meta(dst)["complete"] is True

    # 3. bit-identical to a clean run, error metrics included
    clean = nq.quantize_zarr(da.from_array(x, chunks=chunks), str(tmp_path / "clean.zarr"), scheme)
    assert_same_quantized(clean, q)
    assert_same_quantized(nq.quantize(x, scheme), q)
    assert group_meta(dst)["metrics"] == group_meta(tmp_path / "clean.zarr")["metrics"]


def test_resume_after_a_failure_during_calibration(tmp_path):
    """A job interrupted before any chunk was encoded restarts cleanly (and matches a clean run)."""
    x = data(7, (24, 16))
    scheme = SCHEMES["uint5_percentile"]
    dst = tmp_path / "out.zarr"
    with pytest.raises(RuntimeError, match="simulated read failure"):
        nq.quantize_zarr(source_array(x, (4, 16), Source({(2, 0)}, fail_on_read=2)), str(dst), scheme)
    with pytest.raises(StoreError):
        nq.open(str(dst))
    q = nq.quantize_zarr(source_array(x, (4, 16), Source()), str(dst), scheme, resume=True)
    assert_same_quantized(nq.quantize(x, scheme), q)


def test_resume_false_and_a_changed_scheme_start_over(tmp_path):
    x = data(8, (24, 16))
    chunks = (4, 16)
    dst = str(tmp_path / "out.zarr")
    scheme = SCHEMES["nf_blocks16"]
    with dask.config.set(INTERRUPT), pytest.raises(RuntimeError):
        flaky = Source({(5, 0)}, wait_for=(dst + ".partial", 5))
        nq.quantize_zarr(source_array(x, chunks, flaky), dst, scheme)
    assert done_flags(dst + ".partial").sum() == 5

    src = Source()
    q = nq.quantize_zarr(source_array(x, chunks, src), dst, scheme, resume=False)
    assert src.counts() == {(i, 0): 1 for i in range(6)}
    assert_same_quantized(nq.quantize(x, scheme), q)

    b = str(tmp_path / "b.zarr")
    with dask.config.set(INTERRUPT), pytest.raises(RuntimeError):
        nq.quantize_zarr(source_array(x, chunks, Source({(5, 0)}, wait_for=(b + ".partial", 5))), b, scheme)
    assert done_flags(b + ".partial").sum() == 5
    other = nq.Uniform(bits=2, block_size=16)
    src = Source()
    q = nq.quantize_zarr(source_array(x, chunks, src), b, other, resume=True)
    assert src.counts() == {(i, 0): 1 for i in range(6)}
    assert_same_quantized(nq.quantize(x, other), q)


# ----------------------------------------------------------------------------- dequantize_zarr


def test_dequantize_zarr(tmp_path, x3):
    scheme = SCHEMES["uint3_blocks12_stochastic"]
    write_zarr(tmp_path / "src.zarr", x3, (4, 6, 10))
    nq.quantize_zarr(str(tmp_path / "src.zarr"), str(tmp_path / "q.zarr"), scheme)
    out = str(tmp_path / "x_hat.zarr")
    z = nq.dequantize_zarr(str(tmp_path / "q.zarr"), out)
    assert same_bits(z[...], nq.dequantize(nq.quantize(x3, scheme)))
    assert not os.path.exists(out + ".partial")
    with pytest.raises(StoreError, match=r"already exists"):
        nq.dequantize_zarr(str(tmp_path / "q.zarr"), out)
    z = nq.dequantize_zarr(str(tmp_path / "q.zarr"), out, overwrite=True)
    assert same_bits(z[...], nq.dequantize(nq.quantize(x3, scheme)))


# ----------------------------------------------------------------------------- golden stores

GOLDEN_NAMES = sorted(p.stem for p in GOLDEN.glob("*.npy"))


def test_golden_stores_exist():
    assert len(GOLDEN_NAMES) >= 4, f"golden stores missing under {GOLDEN}: run tests/fixtures/make_golden.py"
    for name in GOLDEN_NAMES:
        assert (GOLDEN / f"{name}.zarr" / "zarr.json").is_file(), (
            f"{name}.zarr is missing beside {name}.npy (a .gitignore rule for *.zarr/ must not hide it)")


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_store(name, tmp_path):
    store = str(GOLDEN / f"{name}.zarr")
    expected = np.load(GOLDEN / f"{name}.npy", allow_pickle=False)
    q = nq.open(store)
    assert tuple(q.shape) == expected.shape and np.dtype(q.dtype) == expected.dtype
    meta = json.loads((GOLDEN / f"{name}.zarr" / "zarr.json").read_text())["attributes"]["nquant"]
    assert meta["format_version"] == 1 and meta["complete"] is True
    assert q.scheme == nq.scheme_from_json(meta["scheme"])
    assert same_bits(nq.dequantize(q).compute(), expected)
    z = nq.dequantize_zarr(store, str(tmp_path / "x_hat.zarr"))
    assert same_bits(z[...], expected)


# ----------------------------------------------------------------------------- object-store semantics


def test_object_store_completion_marker_memory_url():
    """No rename on an fsspec URL: ``complete: true`` is written last; an incomplete group is refused."""
    x = data(9, (24, 16))
    chunks = (4, 16)
    scheme = SCHEMES["uint3_axis_last_stochastic"]
    dst = f"memory://nquant-test-{uuid.uuid4().hex}/out.zarr"
    flaky = Source({(3, 0)}, fail_on_read=2, wait_for=(dst, 5))
    with dask.config.set(INTERRUPT), pytest.raises(RuntimeError, match="simulated read failure"):
        nq.quantize_zarr(source_array(x, chunks, flaky), dst, scheme)
    assert group_meta(dst)["complete"] is False
    assert not nq.store.is_complete(dst)
    with pytest.raises(StoreError, match=r"incomplete"):
        nq.open(dst)

    good = Source()
    q = nq.quantize_zarr(source_array(x, chunks, good), dst, scheme)
    assert good.counts() == {(3, 0): 1}
    assert group_meta(dst)["complete"] is True
    assert_same_quantized(nq.quantize(x, scheme), q)

    # a rerun reads nothing; overwrite=True recomputes every chunk (fit pass + encode pass)
    nq.quantize_zarr(source_array(x, chunks, Source({(i, 0) for i in range(6)})), dst, scheme)
    again = Source()
    q = nq.quantize_zarr(source_array(x, chunks, again), dst, scheme, overwrite=True)
    assert again.counts() == {(i, 0): 2 for i in range(6)}
    assert_same_quantized(nq.quantize(x, scheme), q)
