"""Writers never lose a user's data and never write outside the output (nquant.outputs).

Existing destinations that nquant did not make, sources as destinations, names from files
that leave the output, fingerprints of finished outputs, atomic ``--overwrite`` under a
polling reader, the per-destination lock, SIGKILL then rerun, read-only and full disks,
and ``.npy`` outputs of ``dequantize_zarr``.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import nquant as nq
from nquant import outputs
from nquant.interfaces import workflow as wf
from nquant.interfaces.cli import main as cli_main
from nquant.errors import InputError, StoreError
from nquant.safetensors_io import write_tensors

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ,
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def data(seed, shape):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + 0.25).astype(np.float32)


def write_zarr(path, x, chunks, overwrite=False):
    z = zarr.create_array(str(path), shape=x.shape, chunks=chunks, dtype=x.dtype, overwrite=overwrite)
    z[...] = x
    return str(path)


def tree(path):
    """``{relative path: bytes}`` of every file under ``path``."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = fh.read()
    return out


def user_folder(path):
    """A folder of a user's files; returns its contents to compare later."""
    os.makedirs(path / "sub", exist_ok=True)
    (path / "notes.txt").write_text("precious")
    (path / "sub" / "data.bin").write_bytes(b"\x00\x01\x02")
    return tree(path)


def cli(*args):
    """The console script in-process: (exit code, stdout, stderr)."""
    r = CliRunner().invoke(cli_main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


def one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nquant: error: "), err
    for n in needles:
        assert n in lines[0], (n, err)


@pytest.fixture
def small(tmp_path):
    x = data(0, (48, 32))
    return write_zarr(tmp_path / "small.zarr", x, (8, 32)), x


# ----------------------------------------------------------------------------- the name rule


@pytest.mark.parametrize("name", ["/elsewhere/victim", "../../escape", "a/../../b", "", "a//b", "./a", "a/.",
                                  "a\\b", "a\x00b", "a\nb", "w.partial", "x/y.lock", "zarr.json", "a/.zattrs",
                                  None, 3])
def test_check_name_refuses(name):
    with pytest.raises(InputError, match=r"is not a valid name: "):
        outputs.check_name(name, "tensor name", InputError)


@pytest.mark.parametrize("name", ["w", "encoder/layer.0.weight", "a.b.c", "model.layers.0.mlp.up_proj.weight",
                                  "x-y_z", "..a", "a..", "caf\u00e9"])
def test_check_name_accepts(name):
    assert outputs.check_name(name) == name


def test_inside_resolves_links(tmp_path):
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path, tmp_path / "out" / "up")
    assert outputs.inside(tmp_path / "out", tmp_path / "out" / "a" / "b") == str(tmp_path / "out" / "a" / "b")
    with pytest.raises(StoreError, match=r"outside the output"):
        outputs.inside(tmp_path / "out", tmp_path / "out" / "up" / "victim")
    with pytest.raises(StoreError, match=r"outside the output"):
        outputs.inside(tmp_path / "out", tmp_path / "out" / ".." / "victim")


# ----------------------------------------------------------------------------- existing destinations


def test_quantize_into_a_folder_of_user_files_is_refused(tmp_path, small):
    src, _ = small
    mydata = tmp_path / "mydata"
    before = user_folder(mydata)
    for overwrite in (False, True):
        with pytest.raises(StoreError, match=r"mydata.*not an nquant output.*--overwrite"):
            nq.quantize_zarr(src, str(mydata), nq.Uniform(bits=8), overwrite=overwrite)
        assert tree(mydata) == before
    code, out, err = cli("quantize", src, mydata, "--scheme", "int8", "--no-progress")
    one_line_error(code, err, str(mydata), "--overwrite")
    code, out, err = cli("quantize", src, mydata, "--scheme", "int8", "--overwrite", "--no-progress")
    one_line_error(code, err, str(mydata), "--overwrite")
    assert tree(mydata) == before
    assert sorted(os.listdir(tmp_path)) == ["mydata", "small.zarr"]  # no lock, no partial left


def test_every_writer_refuses_user_files(tmp_path, small):
    src, x = small
    q = nq.quantize(x, nq.Uniform(bits=8))
    nq.quantize_zarr(src, str(tmp_path / "q.zarr"), nq.Uniform(bits=8))
    write_tensors(tmp_path / "m.safetensors", {"w": (x, "F32")})
    folder = tmp_path / "mine"
    before = user_folder(folder)
    (tmp_path / "notes.npy").write_text("not a .npy file")
    qz, model, notes = str(tmp_path / "q.zarr"), str(tmp_path / "m.safetensors"), str(tmp_path / "notes.npy")
    writers = [lambda o: nq.save(q, str(folder), overwrite=o),
               lambda o: nq.dequantize_zarr(qz, str(folder), overwrite=o),
               lambda o: nq.quantize_safetensors(model, str(folder), nq.NF4(), overwrite=o),
               lambda o: nq.dequantize_zarr(qz, notes, overwrite=o)]
    never = r"never (deletes or )?replaces it \(not even with --overwrite\)"
    for write in writers:
        for overwrite in (False, True):
            with pytest.raises(StoreError, match=never):
                write(overwrite)
    assert tree(folder) == before and (tmp_path / "notes.npy").read_text() == "not a .npy file"


def test_a_partial_name_holding_user_files_is_not_deleted(tmp_path, small):
    src, _ = small
    before = user_folder(tmp_path / "q.zarr.partial")
    with pytest.raises(StoreError, match=r"q\.zarr\.partial' exists and is not an nquant partial output"):
        nq.quantize_zarr(src, str(tmp_path / "q.zarr"), nq.Uniform(), overwrite=True)
    assert tree(tmp_path / "q.zarr.partial") == before and not (tmp_path / "q.zarr").exists()
    # a partial of nquant's own, even one killed before its first metadata file, is cleared
    shutil.rmtree(tmp_path / "q.zarr.partial")
    (tmp_path / "q.zarr.partial").mkdir()
    (tmp_path / "q.zarr.partial" / "zarr.json.4f2a.partial").write_text("{")
    nq.quantize_zarr(src, str(tmp_path / "q.zarr"), nq.Uniform())
    assert sorted(os.listdir(tmp_path)) == ["q.zarr", "small.zarr"]


def test_a_partial_name_holding_a_foreign_zarr_group_or_file_is_not_deleted(tmp_path, small):
    src, x = small
    # a user's Zarr group (no nquant mark) where nquant would put its partial output
    theirs = write_zarr(tmp_path / "q.zarr.partial", x, (48, 32))
    before = tree(theirs)
    with pytest.raises(StoreError, match=r"q\.zarr\.partial' exists and is not an nquant partial output"):
        nq.save(nq.quantize(x, nq.Uniform()), str(tmp_path / "q.zarr"))
    assert tree(theirs) == before and not (tmp_path / "q.zarr").exists()
    # a user's file where a .safetensors or .npy output would be written first
    for name, write in [("m.safetensors", lambda p: write_tensors(p, {"w": (x, "F32")})),
                        ("r.npy", lambda p: nq.dequantize_zarr(stored, p))]:
        if name == "r.npy":
            stored = str(tmp_path / "s.zarr")
            nq.save(nq.quantize(x, nq.Uniform()), stored)
        (tmp_path / (name + ".partial")).write_text("a user's notes")
        with pytest.raises(StoreError, match="is not an nquant partial output"):
            write(str(tmp_path / name))
        assert (tmp_path / (name + ".partial")).read_text() == "a user's notes"
        assert not (tmp_path / name).exists()


def test_partial_outputs_are_marked_until_complete(tmp_path, small):
    src, x = small
    # a save killed after its group was created leaves a marked partial: the next save clears it
    outputs.partial_group(str(tmp_path / "q.zarr.partial")).create_array("codes", shape=(3,), dtype="u1")
    nq.save(nq.quantize(x, nq.Uniform()), str(tmp_path / "q.zarr"))
    assert not (tmp_path / "q.zarr.partial").exists()
    # the finished outputs carry no partial mark
    nq.quantize_zarr(src, str(tmp_path / "z.zarr"), nq.Uniform())
    for path in ("q.zarr", "z.zarr"):
        assert outputs.PARTIAL_MARK not in zarr.open_group(str(tmp_path / path), mode="r").attrs


def test_a_foreign_zarr_array_is_not_an_nquant_output(tmp_path, small):
    src, x = small
    other = write_zarr(tmp_path / "theirs.zarr", x, (48, 32))
    with pytest.raises(StoreError, match=r"not an nquant output"):
        nq.quantize_zarr(src, other, nq.Uniform(), overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(other)[...], x)


def test_empty_directory_is_a_valid_destination(tmp_path, small):
    src, x = small
    (tmp_path / "empty").mkdir()
    q = nq.quantize_zarr(src, str(tmp_path / "empty"), nq.Uniform(bits=8))
    np.testing.assert_array_equal(np.asarray(nq.dequantize(q)),
                                  nq.dequantize(nq.quantize(x, nq.Uniform(bits=8))))


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_destination_overlapping_the_source_is_refused(tmp_path, small, where):
    src, x = small
    dst = {"same": src, "inside": os.path.join(src, "q.zarr"), "contains": str(tmp_path)}[where]
    before = tree(src)
    rel = {"same": "is the source", "inside": "lies inside the source",
           "contains": "contains the source"}[where]
    for overwrite in (False, True):
        with pytest.raises(StoreError, match=rel):
            nq.quantize_zarr(src, dst, nq.Uniform(bits=8), overwrite=overwrite)
    code, _, err = cli("quantize", src, dst, "--scheme", "int8", "--overwrite", "--no-progress")
    one_line_error(code, err, rel)
    assert tree(src) == before
    # the same through a symbolic link to the source
    os.symlink(src, tmp_path / "link.zarr")
    with pytest.raises(StoreError, match="is the source"):
        nq.quantize_zarr(str(tmp_path / "link.zarr"), src, nq.Uniform(), overwrite=True)
    nq.quantize_zarr(src, str(tmp_path / "q.zarr"), nq.Uniform(bits=8))
    with pytest.raises(StoreError, match="is the source"):
        nq.dequantize_zarr(str(tmp_path / "q.zarr"), str(tmp_path / "q.zarr"), overwrite=True)
    write_tensors(tmp_path / "m.safetensors", {"w": (x, "F32")})
    with pytest.raises(StoreError, match="is the source"):
        nq.quantize_safetensors(str(tmp_path / "m.safetensors"), str(tmp_path / "m.zarr"), nq.NF4(),
                                write_dequantized=str(tmp_path / "m.safetensors"), overwrite=True)
    assert not (tmp_path / "m.zarr").exists()
    assert tree(src) == before


# ----------------------------------------------------------------------------- fingerprints


def test_finished_output_of_another_request_is_refused_showing_both(tmp_path, small):
    src, x = small
    dst = str(tmp_path / "q.zarr")
    nq.quantize_zarr(src, dst, nq.Uniform(bits=8))
    before = tree(dst)
    # the same request: a no-op, nothing rewritten
    nq.quantize_zarr(src, dst, nq.Uniform(bits=8))
    code, out, err = cli("quantize", src, dst, "--scheme", "int8", "--no-progress")
    assert code == 0, err
    assert tree(dst) == before
    # another scheme
    both = r'recorded \{"scheme": \{"bits": 8\}\}; requested \{"scheme": \{"bits": 4\}\}'
    with pytest.raises(StoreError, match=both + r".*overwrite=True \(--overwrite\)"):
        nq.quantize_zarr(src, dst, nq.Uniform(bits=4))
    code, _, err = cli("quantize", src, dst, "--scheme", "int4", "--no-progress")
    one_line_error(code, err, '"bits": 8', '"bits": 4', "--overwrite")
    # another source of the same shape and dtype
    other = write_zarr(tmp_path / "other.zarr", data(1, (48, 32)), (8, 32))
    with pytest.raises(StoreError, match=r'recorded \{"source": \{.*small\.zarr.*'
                                         r'requested \{"source": .*other\.zarr'):
        nq.quantize_zarr(other, dst, nq.Uniform(bits=8))
    # the same source rewritten (its metadata changed) is another source too
    time.sleep(0.01)
    write_zarr(tmp_path / "small.zarr", data(2, (48, 32)), (8, 32), overwrite=True)
    with pytest.raises(StoreError, match=r"mtime_ns"):
        nq.quantize_zarr(src, dst, nq.Uniform(bits=8))
    assert tree(dst) == before
    # overwrite replaces it
    q = nq.quantize_zarr(other, dst, nq.Uniform(bits=4), overwrite=True)
    np.testing.assert_array_equal(np.asarray(nq.dequantize(q)),
                                  nq.dequantize(nq.quantize(data(1, (48, 32)), nq.Uniform(bits=4))))


def test_model_fingerprint(tmp_path):
    w = data(3, (16, 64))
    write_tensors(tmp_path / "m.safetensors", {"w": (w, "F32")})
    m, dst = str(tmp_path / "m.safetensors"), str(tmp_path / "m.zarr")
    first = nq.quantize_safetensors(m, dst, nq.NF4())
    before = tree(dst)
    assert nq.quantize_safetensors(m, dst, nq.NF4()) == first  # a no-op returning the recorded report
    assert tree(dst) == before
    with pytest.raises(StoreError, match=r"recorded .*requested .*overwrite=True"):
        nq.quantize_safetensors(m, dst, nq.NF4(double_quant=True))
    with pytest.raises(StoreError, match=r'"include"'):
        nq.quantize_safetensors(m, dst, nq.NF4(), include="x*")
    assert tree(dst) == before
    # a no-op still writes the dequantized file asked for, from the stored groups
    out = str(tmp_path / "deq.safetensors")
    nq.quantize_safetensors(m, dst, nq.NF4(), write_dequantized=out)
    from nquant.safetensors_io import read_tensors

    np.testing.assert_array_equal(read_tensors(out)["w"][0], nq.dequantize(nq.quantize(w, nq.NF4())))
    with pytest.raises(StoreError, match=r"already exists; pass overwrite=True"):
        nq.quantize_safetensors(m, dst, nq.NF4(), write_dequantized=out)


# ----------------------------------------------------------------------------- names from files


@pytest.mark.parametrize("name", ["/elsewhere/victim", "../../escape", "a/../../b", ""])
def test_tensor_names_that_leave_the_output_are_refused(tmp_path, name):
    if name.startswith("/"):
        name = str(tmp_path / "elsewhere" / "victim")
    w = data(4, (8, 32))
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    write_tensors(work / "m.safetensors", {"ok": (w, "F32"), name: (w, "F32")})
    listing = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(InputError, match=r"tensor name=.* is not a valid name"):
        nq.quantize_safetensors(str(work / "m.safetensors"), str(work / "q.zarr"), nq.NF4(), overwrite=True)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == listing  # nothing created anywhere


def test_nested_tensor_names_become_groups(tmp_path):
    a, b = data(5, (8, 64)), data(6, (16, 64))
    write_tensors(tmp_path / "m.safetensors",
                  {"encoder/layer.0.weight": (a, "F32"), "head.weight": (b, "F32")})
    nq.quantize_safetensors(str(tmp_path / "m.safetensors"), str(tmp_path / "q.zarr"), nq.NF4())
    qs = nq.models.open_model(str(tmp_path / "q.zarr"))
    assert sorted(qs) == ["encoder/layer.0.weight", "head.weight"]
    np.testing.assert_array_equal(np.asarray(nq.dequantize(qs["encoder/layer.0.weight"])),
                                  nq.dequantize(nq.quantize(a, nq.NF4())))
    assert (tmp_path / "q.zarr" / "encoder" / "layer.0.weight" / "zarr.json").is_file()
    # one tensor's group inside another's is refused
    write_tensors(tmp_path / "n.safetensors", {"a": (a, "F32"), "a/b": (b, "F32")})
    with pytest.raises(InputError, match=r"lies inside"):
        nq.quantize_safetensors(str(tmp_path / "n.safetensors"), str(tmp_path / "n.zarr"), nq.NF4())


WF = """
[workflow]
name = "w"
output = "{out}"
[sources.s]
path = "{src}"
[[jobs]]
name = {job!r}
source = "s"
scheme = "int8"
"""


@pytest.mark.parametrize("job", ["../victim", "/abs/path", "a/../../b", ""])
def test_workflow_job_names_that_leave_the_output_are_refused(tmp_path, small, job):
    src, _ = small
    if job.startswith("/"):
        job = str(tmp_path / "abs" / "path")
    out = tmp_path / "out"
    (tmp_path / "wf.toml").write_text(WF.format(out=out, src=src, job=job).replace("'", '"'))
    listing = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(wf.WorkflowError, match=r"jobs\[0\]\.name.*not a valid name"):
        wf.run(wf.load(tmp_path / "wf.toml"), progress=False, echo=lambda s: None)
    with pytest.raises(wf.WorkflowError, match=r"jobs\[0\]\.name.*not a valid name"):
        wf.plan(wf.load(tmp_path / "wf.toml"))
    code, _, err = cli("run", tmp_path / "wf.toml", "--no-progress")
    one_line_error(code, err, "jobs[0].name")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == listing  # nothing written anywhere


def test_workflow_output_holding_user_files_is_refused(tmp_path, small):
    src, _ = small
    out = tmp_path / "out"
    before = user_folder(out)
    (tmp_path / "wf.toml").write_text(WF.format(out=out, src=src, job="j"))
    for overwrite in (False, True):
        with pytest.raises(wf.WorkflowError, match=r"holding other files.*no workflow manifest"):
            wf.run(wf.load(tmp_path / "wf.toml"), overwrite=overwrite, progress=False, echo=lambda s: None)
    assert tree(out) == before
    # a job output that would land on the source is refused before anything runs
    (tmp_path / "wf2.toml").write_text(WF.format(out=tmp_path, src=src, job="small"))
    with pytest.raises(wf.WorkflowError, match=r"sources\.s\.path: .*is the source"):
        wf.run(wf.load(tmp_path / "wf2.toml"), overwrite=True, progress=False, echo=lambda s: None)


def test_one_workflow_run_per_output(tmp_path, small):
    src, _ = small
    out = tmp_path / "out"
    (tmp_path / "wf.toml").write_text(WF.format(out=out, src=src, job="j"))
    lock = Path(f"{out}.lock")
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "time": time.time()}))
    with pytest.raises(StoreError, match=rf"dst={str(out)!r} is being written by another nquant process"):
        wf.run(wf.load(tmp_path / "wf.toml"), progress=False, echo=lambda s: None)
    assert not out.exists()
    lock.unlink()
    report = wf.run(wf.load(tmp_path / "wf.toml"), progress=False, echo=lambda s: None)
    assert [j["status"] for j in report["jobs"]] == ["done"] and not lock.exists()


def test_generated_source_is_removed_only_when_it_is_what_nquant_made(tmp_path):
    text = """
[workflow]
name = "g"
output = "{out}"
[vars]
seed = 1
[sources.s]
path = "{out}/s.zarr"
generate = {{ kind = "gaussian", shape = [32, 16], chunks = [8, 16], seed = "${{seed}}" }}
[[jobs]]
name = "j"
source = "s"
scheme = "int8"
"""
    out = tmp_path / "out"
    (tmp_path / "wf.toml").write_text(text.format(out=out))
    wf.run(wf.load(tmp_path / "wf.toml"), progress=False, echo=lambda s: None)
    # the user replaced the generated source with a folder of their own files
    shutil.rmtree(out / "s.zarr")
    before = user_folder(out / "s.zarr")
    with pytest.raises(InputError, match=r"not a zarr source as nquant generates them"):
        wf.run(wf.load(tmp_path / "wf.toml", {"seed": 2}), overwrite=True, progress=False,
               echo=lambda s: None)
    assert tree(out / "s.zarr") == before


# ----------------------------------------------------------------------------- atomic overwrite


def test_overwrite_under_a_polling_reader(tmp_path):
    x = data(7, (256, 64))
    src = write_zarr(tmp_path / "src.zarr", x, (16, 64))
    dst = str(tmp_path / "q.zarr")
    scheme = nq.Uniform(bits=4, axis=0)
    expected = nq.dequantize(nq.quantize(x, scheme))
    nq.quantize_zarr(src, dst, scheme)
    stop, seen, errors, reads = threading.Event(), set(), [], [0]

    def reader():
        while not stop.is_set():
            try:
                seen.add(os.stat(dst).st_ino)
                got = np.asarray(nq.dequantize(nq.open(dst)))
                if not np.array_equal(got, expected):
                    errors.append("values differ")
                reads[0] += 1
            except Exception as e:  # a missing or partial store
                errors.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(4):
            nq.quantize_zarr(src, dst, scheme, overwrite=True)
            time.sleep(0.02)
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:3]
    assert len(seen) >= 2 and reads[0] >= 4  # the reader saw the store before and after a swap
    assert sorted(os.listdir(tmp_path)) == ["q.zarr", "src.zarr"]


def test_replace_dir_exchanges_atomically(tmp_path):
    old, new = tmp_path / "out", tmp_path / "out.partial"
    old.mkdir()
    (old / "v").write_text("old")
    new.mkdir()
    (new / "v").write_text("new")
    outputs.replace_dir(str(new), str(old))
    assert (old / "v").read_text() == "new" and not new.exists()


# ----------------------------------------------------------------------------- one writer


def test_two_concurrent_writers_one_gets_the_lock_error(tmp_path):
    x = data(8, (64, 32))

    def slow(block):
        time.sleep(0.05)
        return block

    dst = str(tmp_path / "q.zarr")
    barrier = threading.Barrier(2)
    results = []

    def write():
        src = da.from_array(x, chunks=(8, 32)).map_blocks(slow, dtype=x.dtype)
        barrier.wait()
        try:
            nq.quantize_zarr(src, dst, nq.Uniform(bits=8, axis=0))
            results.append("ok")
        except StoreError as e:
            results.append(str(e))

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results.count("ok") == 1, results
    err = next(r for r in results if r != "ok")
    assert f"dst={dst!r} is being written by another nquant process" in err
    assert f"host {socket.gethostname()}, pid {os.getpid()}" in err
    np.testing.assert_array_equal(np.asarray(nq.dequantize(nq.open(dst))),
                                  nq.dequantize(nq.quantize(x, nq.Uniform(bits=8, axis=0))))
    assert not os.path.exists(dst + ".lock")


def test_lock_of_a_live_process_refuses_and_a_dead_one_is_taken_over(tmp_path, small):
    src, x = small
    dst = str(tmp_path / "q.zarr")
    lock = Path(dst + ".lock")
    host = socket.gethostname()
    lock.write_text(json.dumps({"host": host, "pid": os.getppid(), "time": time.time()}))
    with pytest.raises(StoreError, match=rf"another nquant process \(host {host}, pid {os.getppid()}"):
        nq.quantize_zarr(src, dst, nq.Uniform())
    lock.write_text(json.dumps({"host": "elsewhere.example", "pid": 1, "time": time.time()}))
    code, _, err = cli("quantize", src, dst, "--no-progress")
    one_line_error(code, err, "host elsewhere.example, pid 1", str(lock))
    assert not os.path.exists(dst) and lock.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"host": host, "pid": dead.pid, "time": time.time()}))
    nq.quantize_zarr(src, dst, nq.Uniform())  # a stale lock: taken over
    assert nq.store.is_complete(dst) and not lock.exists()


# ----------------------------------------------------------------------------- SIGKILL, then rerun


def test_sigkill_at_random_moments_then_rerun_is_bit_identical(tmp_path):
    x = data(9, (512, 64))
    src = write_zarr(tmp_path / "src.zarr", x, (8, 64))  # 64 chunks
    args = ["--scheme", "int4", "--axis", "0", "--no-progress"]

    def start(dst):
        """Start ``nquant quantize`` into ``dst``; returns the process once its write has begun."""
        proc = subprocess.Popen([sys.executable, "-m", "nquant", "quantize", src, dst, *args], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not os.path.exists(f"{dst}.lock") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        return proc

    def chunks_done(dst):
        try:  # one chunk_stats file per finished chunk: c/<row>/0
            return len(os.listdir(f"{dst}.partial/chunk_stats/c"))
        except FileNotFoundError:
            return 0

    clean = tmp_path / "clean.zarr"
    assert start(clean).wait() == 0
    rng = np.random.default_rng(27)  # draws 0 (while fitting or right after) and 27
    for i, k in enumerate(rng.integers(0, 40, 2)):  # random moments: after k of the 64 chunks
        dst = tmp_path / f"killed{i}.zarr"
        proc = start(dst)
        while chunks_done(dst) < k and proc.poll() is None:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the run ended before it was killed"
        assert not nq.store.is_complete(str(dst))
        r = subprocess.run([sys.executable, "-m", "nquant", "quantize", src, dst, *args], env=ENV,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert tree(dst) == tree(clean)  # every file, byte for byte (codes, side arrays, metadata)
        assert not os.path.exists(f"{dst}.partial") and not os.path.exists(f"{dst}.lock")


# ----------------------------------------------------------------------------- read-only and full disks


def _mount_tmpfs(path, options):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_read_only_destination(tmp_path, small):
    src, _ = small
    ro = tmp_path / "ro"
    mounted = False
    if os.geteuid() == 0:
        mounted = _mount_tmpfs(ro, "ro,size=64k")
        if not mounted:
            pytest.skip("running as root and a read-only tmpfs cannot be mounted here")
    else:
        ro.mkdir()
        os.chmod(ro, 0o555)
    try:
        with pytest.raises(StoreError, match=r"cannot be written: (Read-only file system|Permission denied)"):
            nq.quantize_zarr(src, str(ro / "q.zarr"), nq.Uniform())
        code, _, err = cli("quantize", src, ro / "q.zarr", "--no-progress")
        one_line_error(code, err, str(ro / "q.zarr"), "cannot be written")
        assert os.listdir(ro) == []
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
        else:
            os.chmod(ro, 0o755)


def test_full_disk(tmp_path):
    full = tmp_path / "full"
    if os.geteuid() != 0 or not _mount_tmpfs(full, "size=256k"):
        pytest.skip("a small tmpfs can only be mounted as root (mount -t tmpfs -o size=256k)")
    try:
        x = data(10, (256, 1024))  # 256 KiB of int8 codes, beyond the 256 KiB disk with metadata
        src = write_zarr(tmp_path / "src.zarr", x, (32, 1024))
        dst = str(full / "q.zarr")
        with pytest.raises(StoreError, match=r"cannot be written: No space left on device"):
            nq.quantize_zarr(src, dst, nq.Uniform(bits=8))
        code, _, err = cli("quantize", src, dst, "--scheme", "int8", "--no-progress")
        one_line_error(code, err, "No space left on device")
        assert not nq.store.is_complete(dst) and not os.path.exists(dst)
        with pytest.raises(StoreError):
            nq.open(dst)
        assert not nq.store.is_complete(dst + ".partial")  # the partial is never taken for a result
        assert not os.path.exists(dst + ".lock")
    finally:
        subprocess.run(["umount", str(full)], check=True)


# ----------------------------------------------------------------------------- .npy outputs


def test_dequantize_zarr_to_npy_writes_a_npy_file(tmp_path, small):
    src, x = small
    q = str(tmp_path / "q.zarr")
    nq.quantize_zarr(src, q, nq.Uniform(bits=4, block_size=64))
    expected = np.asarray(nq.dequantize(nq.open(q)))
    out = tmp_path / "out.npy"
    got = nq.dequantize_zarr(q, str(out))
    assert out.is_file() and out.read_bytes()[:6] == b"\x93NUMPY"
    loaded = np.load(out)
    assert loaded.dtype == expected.dtype and np.array_equal(loaded, expected)
    assert np.array_equal(got, expected)
    with pytest.raises(StoreError, match=r"already exists; pass overwrite=True"):
        nq.dequantize_zarr(q, str(out))
    nq.dequantize_zarr(q, str(out), overwrite=True)
    assert np.array_equal(np.load(out), expected)
    code, stdout, err = cli("dequantize", q, tmp_path / "cli.npy")
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "cli.npy"), expected)
    assert sorted(os.listdir(tmp_path)) == ["cli.npy", "out.npy", "q.zarr", "small.zarr"]
    with pytest.raises(StoreError, match=r"a \.npy output must be a local path"):
        nq.dequantize_zarr(q, "memory://nquant-trust/out.npy")


def test_dequantized_zarr_array_is_marked_and_replaceable(tmp_path, small):
    src, _ = small
    q = str(tmp_path / "q.zarr")
    nq.quantize_zarr(src, q, nq.Uniform(bits=8))
    z = nq.dequantize_zarr(q, str(tmp_path / "x.zarr"))
    mark = z.attrs.asdict()["nquant_array"]
    assert mark["complete"] is True and mark["source"]["path"] == os.path.realpath(q)
    assert outputs.owned(str(tmp_path / "x.zarr"))
    z = nq.dequantize_zarr(q, str(tmp_path / "x.zarr"), overwrite=True)
    assert np.array_equal(z[...], np.asarray(nq.dequantize(nq.open(q))))
