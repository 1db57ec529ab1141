"""The CLI's error contract, cluster failures that end instead of hanging, Ctrl-C, and model groups.

Every subcommand with every class of bad input ends in one line on standard error starting
with ``nquant`` and naming the parameter or path, exit status 2, no traceback (in process,
through the click group, as ``tests/test_cli.py`` does).  Ctrl-C runs the console script in
a subprocess.
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import nquant as nq
from nquant import cluster
from nquant.interfaces.cli import main as cli_main
from nquant.errors import InputError
from nquant.models import open_model
from nquant.safetensors_io import read_tensors, write_tensors

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
WORKFLOW = """
[workflow]
name = "t"
output = "${out}"
[vars]
out = "OUT"
[sources.w]
path = "${out}/w.zarr"
generate = {kind = "weights", shape = [64, 32], chunks = [16, 32], seed = 1}
[[jobs]]
name = "a"
source = "w"
scheme = "int4"
"""


def _safetensors_raw(path, header, data=b"", length=None):
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text) if length is None else length))
        f.write(text)
        f.write(data)


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """A folder of good and bad inputs."""
    d = tmp_path_factory.mktemp("trust-cli")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 32)).astype(np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "other.npy", x[:, :16])
    z = zarr.create_array(str(d / "x.zarr"), shape=x.shape, chunks=(16, 32), dtype=x.dtype)
    z[...] = x
    nq.save(nq.quantize(x, nq.Uniform(bits=4)), str(d / "q.zarr"))
    # a model group from a .safetensors file: a float16 matrix, a bfloat16 matrix, a vector (not quantized)
    write_tensors(d / "m.safetensors", {"w": (rng.standard_normal((32, 64)), "F16"),
                                        "v": (rng.standard_normal((16, 32)).astype(np.float32), "BF16"),
                                        "b": (rng.standard_normal(64), "F32")})
    nq.quantize_safetensors(str(d / "m.safetensors"), str(d / "m.zarr"), nq.Uniform(bits=8))
    write_tensors(d / "m2.safetensors", {"w": (rng.standard_normal((32, 16)), "F16")})  # another shape
    # bad inputs
    (d / "notes.txt").write_text("not a store\n")
    (d / "mydata").mkdir()
    (d / "mydata" / "keep.txt").write_text("user data\n")
    (d / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    zarr.open_group(str(d / "foreign.zarr"), mode="w").attrs["owner"] = "someone else"
    (d / "corrupt.zarr").mkdir()
    (d / "corrupt.zarr" / "zarr.json").write_text("{not json")
    (d / "list.json").write_text("[1, 2]")
    for name, change in (("chunks0", {"chunks": [0, 32]}), ("complete-no", {"complete": "no"}),
                         ("dtype-object", {"dtype": "|O"})):  # crafted metadata
        shutil.copytree(d / "q.zarr", d / f"{name}.zarr")
        meta = json.loads((d / f"{name}.zarr" / "zarr.json").read_text())
        meta["attributes"]["nquant"].update(change)
        (d / f"{name}.zarr" / "zarr.json").write_text(json.dumps(meta))
    zarr.open_group(str(d / "badmodel.zarr"), mode="w").attrs["nquant_model"] = {"complete": True, "tensors": "x"}
    zarr.open_group(str(d / "partialmodel.zarr"), mode="w").attrs["nquant_model"] = {"complete": False,
                                                                                     "tensors": {}}
    _safetensors_raw(d / "huge-header.safetensors", {}, length=2**36)
    _safetensors_raw(d / "truncated.safetensors", {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}},
                     b"\0" * 10)
    _safetensors_raw(d / "negative.safetensors", {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [-16, 0]}},
                     b"\0" * 16)
    _safetensors_raw(d / "shape.safetensors", {"w": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}},
                     b"\0" * 16)
    (d / "wf.toml").write_text(WORKFLOW.replace("OUT", str(d / "wf-out")))
    (d / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    (d / "cycle.toml").write_text(WORKFLOW.replace('out = "OUT"', 'out = "${o2}"\no2 = "${out}"'))
    (d / "workers.toml").write_text(WORKFLOW + '[cluster]\nscheduler = "local"\nworkers = -3\n')
    (d / "memory.toml").write_text(WORKFLOW + '[cluster]\nscheduler = "local"\nmemory_limit = "abc"\n')
    (d / "escape.toml").write_text(WORKFLOW.replace('name = "a"', 'name = "../victim"')
                                   .replace("OUT", str(d / "esc-out")))
    # a chunk of 64 MiB (never written: the fill value), as in the reproducer of the hang
    zarr.create_array(str(d / "big.zarr"), shape=(16384, 1024), chunks=(16384, 1024), dtype=np.float32)
    return d


BAD = [
    # ---- quantize: paths
    (["quantize", "{d}/missing.npy", "{d}/o.zarr"], "missing.npy"),
    (["quantize", "{d}/missing.zarr", "{d}/o.zarr"], "missing.zarr"),
    (["quantize", "{d}/notes.txt", "{d}/o.zarr"], "notes.txt"),
    (["quantize", "{d}/corrupt.zarr", "{d}/o.zarr"], "corrupt.zarr"),
    (["quantize", "{d}/foreign.zarr", "{d}/o.zarr"], "foreign.zarr"),
    (["quantize", "{d}/bad.npy", "{d}/o.zarr"], "bad.npy"),
    (["quantize", "{d}/x.zarr", "{d}/mydata"], "mydata"),
    (["quantize", "{d}/x.zarr", "{d}/mydata", "--overwrite"], "mydata"),
    (["quantize", "{d}/x.zarr", "{d}/x.zarr"], "x.zarr"),
    (["quantize", "{d}/x.zarr", "{d}/x.zarr/inner"], "x.zarr"),
    (["quantize", "{d}/huge-header.safetensors", "{d}/o.zarr"], "huge-header.safetensors"),
    (["quantize", "{d}/truncated.safetensors", "{d}/o.zarr"], "truncated.safetensors"),
    (["quantize", "{d}/negative.safetensors", "{d}/o.zarr"], "negative.safetensors"),
    (["quantize", "{d}/shape.safetensors", "{d}/o.zarr"], "shape.safetensors"),
    # ---- quantize: schemes and numbers
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--scheme", "int9"], "scheme='int9'"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--scheme", "[1, 2]"], "scheme="),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--scheme", '{"type": "nope"}'], "nope"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--scheme", '{"type": '], "scheme="),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--scheme", "{d}/list.json"], "list.json"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--bits", "99"], "bits=99"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--bits", "x"], "'--bits'"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--block-size", "0"], "block_size=0"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--rounding", "up"], "rounding='up'"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--range", "wide"], "range='wide'"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--workers", "-3"], "'--workers'"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--threads-per-worker", "0"], "'--threads-per-worker'"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--memory-limit", "abc"], "'--memory-limit'"),
    (["quantize", "{d}/x.npy", "{d}/o.zarr", "--scheduler", "gpu"], "scheduler='gpu'"),
    (["quantize", "{d}/big.zarr", "{d}/o.zarr", "--scheduler", "local", "--workers", "1", "--memory-limit",
      "50MB"], "--memory-limit=50MB is too small for chunks of 64.00 MiB"),
    # ---- info
    (["info", "{d}/missing.zarr"], "missing.zarr"),
    (["info", "{d}/notes.txt"], "notes.txt"),
    (["info", "{d}/corrupt.zarr"], "corrupt.zarr"),
    (["info", "{d}/foreign.zarr"], "foreign.zarr"),
    (["info", "{d}/x.zarr"], "x.zarr"),
    (["info", "{d}/chunks0.zarr"], "chunks0.zarr"),
    (["info", "{d}/complete-no.zarr"], "complete-no.zarr"),
    (["info", "{d}/dtype-object.zarr"], "dtype-object.zarr"),
    (["info", "{d}/badmodel.zarr"], "badmodel.zarr"),
    (["info", "{d}/partialmodel.zarr"], "partialmodel.zarr"),
    # ---- verify
    (["verify", "{d}/chunks0.zarr"], "chunks0.zarr"),
    (["verify", "{d}/badmodel.zarr", "--source", "{d}/m.safetensors"], "badmodel.zarr"),
    (["verify", "{d}/partialmodel.zarr"], "partialmodel.zarr"),
    (["verify", "{d}/missing.zarr"], "missing.zarr"),
    (["verify", "{d}/foreign.zarr", "--source", "{d}/x.npy"], "foreign.zarr"),
    (["verify", "{d}/corrupt.zarr"], "corrupt.zarr"),
    (["verify", "{d}/q.zarr", "--source", "{d}/other.npy"], "has shape (48, 16), but store="),
    (["verify", "{d}/q.zarr", "--source", "{d}/missing.npy"], "missing.npy"),
    (["verify", "{d}/q.zarr", "--source", "{d}/bad.npy"], "bad.npy"),
    (["verify", "{d}/q.zarr", "--source", "{d}/m.safetensors"], "source="),
    (["verify", "{d}/m.zarr", "--source", "{d}/m2.safetensors"], "tensor 'w' has shape (32, 16)"),
    (["verify", "{d}/m.zarr", "--source", "{d}/truncated.safetensors"], "truncated.safetensors"),
    (["verify", "{d}/m.zarr", "--source", "{d}/x.npy"], "x.npy"),
    # ---- dequantize
    (["dequantize", "{d}/missing.zarr", "{d}/o.zarr"], "missing.zarr"),
    (["dequantize", "{d}/foreign.zarr", "{d}/o.zarr"], "foreign.zarr"),
    (["dequantize", "{d}/corrupt.zarr", "{d}/o.zarr"], "corrupt.zarr"),
    (["dequantize", "{d}/dtype-object.zarr", "{d}/o.zarr"], "dtype-object.zarr"),
    (["dequantize", "{d}/badmodel.zarr", "{d}/o.zarr"], "badmodel.zarr"),
    (["dequantize", "{d}/partialmodel.zarr", "{d}/o.safetensors"], "partialmodel.zarr"),
    (["dequantize", "{d}/q.zarr", "{d}/mydata"], "mydata"),
    (["dequantize", "{d}/q.zarr", "{d}/q.zarr"], "q.zarr"),
    (["dequantize", "{d}/q.zarr", "{d}/o.safetensors"], "o.safetensors"),
    (["dequantize", "{d}/m.zarr", "{d}/mydata"], "mydata"),
    (["dequantize", "{d}/m.zarr", "{d}/notes.txt"], "notes.txt"),
    # ---- fit-codebook
    (["fit-codebook", "{d}/missing.npy", "{d}/l.json"], "missing.npy"),
    (["fit-codebook", "{d}/bad.npy", "{d}/l.json"], "bad.npy"),
    (["fit-codebook", "{d}/notes.txt", "{d}/l.json"], "notes.txt"),
    (["fit-codebook", "{d}/truncated.safetensors", "{d}/l.json"], "truncated.safetensors"),
    (["fit-codebook", "{d}/x.npy", "{d}/l.json", "--levels", "300"], "levels=300"),
    (["fit-codebook", "{d}/x.npy", "{d}/l.txt"], "l.txt"),
    (["fit-codebook", "{d}/x.npy", "{d}/l.json", "--max-values", "-1"], "'--max-values'"),
    (["fit-codebook", "{d}/x.npy", "{d}/l.json", "--method", "quiver-approx", "--m", "-5"], "m=-5"),
    (["fit-codebook", "{d}/x.npy", "{d}/notes.txt"], "notes.txt"),
    # ---- plan and run
    (["plan", "{d}/missing.toml"], "missing.toml"),
    (["plan", "{d}/notes.txt"], "notes.txt"),
    (["plan", "{d}/deep.toml"], "deep.toml"),
    (["plan", "{d}/cycle.toml"], "variable cycle"),
    (["plan", "{d}/wf.toml", "--set", "nope=1"], "--set nope"),
    (["run", "{d}/missing.toml"], "missing.toml"),
    (["run", "{d}/deep.toml"], "deep.toml"),
    (["run", "{d}/wf.toml", "--workers", "-3"], "'--workers'"),
    (["run", "{d}/wf.toml", "--memory-limit", "abc"], "'--memory-limit'"),
    (["run", "{d}/workers.toml"], "cluster.workers"),
    (["run", "{d}/memory.toml"], "cluster.memory_limit"),
    (["run", "{d}/wf.toml", "--scheduler", "local", "--memory-limit", "100MB"], "--memory-limit=100MB is too small"),
    (["run", "{d}/escape.toml"], "../victim"),
    # ---- demo
    (["demo", "--set", "nope=1"], "--set nope"),
    (["demo", "--workers", "-3"], "'--workers'"),
    (["demo", "--memory-limit", "abc"], "'--memory-limit'"),
    (["demo", "--set", "out={d}/demo", "--memory-limit", "1MB", "--scheduler", "local"], "--memory-limit=1MB"),
    # ---- the group
    (["bogus"], "No such command 'bogus'"),
]


def _ids(case):
    return " ".join(case[0][:2]) + " " + case[1][:30]


@pytest.mark.parametrize("args, needle", BAD, ids=[_ids(c) for c in BAD])
def test_every_subcommand_with_bad_input_prints_one_line_and_exits_2(d, args, needle, capsys):
    argv = [a.replace("{d}", str(d)) for a in args]
    with pytest.raises(SystemExit) as e:
        cli_main.main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2, (argv, err)
    assert err.count("\n") == 1 and err.endswith("\n"), (argv, err)  # exactly one line
    assert err.startswith("nquant") and "error" in err, (argv, err)
    assert needle.replace("{d}", str(d)) in err, (argv, err)
    assert "Traceback" not in err and out == ""


def test_an_unreachable_scheduler_is_one_line(d, capsys):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(SystemExit) as e:
        cli_main.main(["quantize", str(d / "x.npy"), str(d / "o.zarr"), "--scheduler", "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("nquant: error: scheduler='tcp://127.0.0.1:1' cannot be reached")


def test_refused_inputs_leave_the_user_files_alone(d):
    # the cases above ran (or run now, in any order): nothing of the user's was touched
    assert (d / "mydata" / "keep.txt").read_text() == "user data\n"
    assert sorted(os.listdir(d / "mydata")) == ["keep.txt"]
    assert not (d / "o.zarr").exists() and not (d / "wf-out").exists()
    assert np.array_equal(zarr.open_array(str(d / "x.zarr"))[...], np.load(d / "x.npy"))


def test_help_lists_the_choices_of_scheme_rounding_and_range():
    from nquant.kernels.rounding import MODES
    from nquant.interfaces.presets import PRESETS
    from nquant.schemes import RANGES

    params = {p.name: p for p in cli_main.commands["quantize"].params}
    for name, choices in (("scheme", PRESETS), ("rounding", MODES), ("range_", RANGES)):
        assert all(c in params[name].help for c in choices), name


# ----------------------------------------------------------------------------- memory limits


def test_check_chunk_memory_refuses_what_cannot_fit():
    mib = 2**20
    chunk = (16384, 1024)  # 64 MiB of float32
    task = cluster.chunk_task_bytes(chunk, np.float32)
    assert task == 16384 * 1024 * (3 * 4 + 2)  # three copies of the chunk and two bytes of codes per value
    need = cluster.WORKER_BASELINE_BYTES + task
    limit = int(np.ceil(need / 0.8))
    assert cluster.check_chunk_memory(chunk, np.float32, limit) == need
    with pytest.raises(InputError, match=r"--memory-limit=.* is too small for chunks of 64.00 MiB \(\(16384, 1024\) "
                                         r"float32\): a worker with 1 thread\(s\) needs at least"):
        cluster.check_chunk_memory(chunk, np.float32, limit - 1024)
    with pytest.raises(InputError, match=r"2 thread"):  # every thread of a worker holds a chunk
        cluster.check_chunk_memory(chunk, np.float32, limit, threads_per_worker=2)
    assert cluster.check_chunk_memory(chunk, np.float32, f"{(need // mib) * 2}MiB") == need
    assert cluster.check_chunk_memory(chunk, np.float32, None) == 0  # no limit, nothing to check
    assert cluster.check_chunk_memory(chunk, np.float32, 0) == 0
    for bad in ("abc", "-5MB", "1e400", ""):
        with pytest.raises(InputError, match="memory_limit="):
            cluster.parse_memory_limit(bad)
    assert cluster.parse_memory_limit("2GiB") == 2 * 2**30
    for bad in (-3, 0, 1.5, True, "2"):
        with pytest.raises(InputError, match=r"workers=.* is invalid: expected an integer >= 1"):
            cluster.check_count(bad, "workers")


def test_memory_limit_too_small_is_refused_before_any_cluster_or_write(d, capsys):
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        cli_main.main(["quantize", str(d / "big.zarr"), str(d / "big-q.zarr"), "--scheduler", "local",
                       "--workers", "1", "--memory-limit", "50MB"])
    assert e.value.code == 2 and time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert "needs at least 680.00 MiB" in err and "raise --memory-limit or use smaller chunks" in err
    assert not any(p.name.startswith("big-q") for p in d.iterdir())


# ----------------------------------------------------------------------------- cluster failures


def _sleep(seconds):
    time.sleep(seconds)
    return seconds


def _die(_):
    os._exit(1)


@pytest.mark.cluster
def test_a_cluster_that_loses_its_workers_ends_with_an_error():
    import dask

    t0 = time.perf_counter()
    with pytest.raises(cluster.ClusterError, match=r"no running worker for 2 s .*rerun to resume"):
        with cluster.scheduler("local", 1, no_worker_timeout=2) as client:
            # the worker goes away and is not restarted (as when its nanny cannot restart it)
            threading.Timer(0.5, lambda: client.cluster.scale(0)).start()
            dask.compute(dask.delayed(_sleep)(60))
    assert time.perf_counter() - t0 < 40  # well before the task could have finished


OVER_MEMORY = """
import time
import dask
import numpy as np
from nquant import cluster

def hold(nbytes):
    a = np.ones(nbytes // 8)
    time.sleep(1)
    return float(a[0])

if __name__ == "__main__":
    try:
        with cluster.scheduler("local", 1, memory_limit="50MB", no_worker_timeout=3):
            dask.compute(*[dask.delayed(hold)(2**27) for _ in range(2)])
    except cluster.ClusterError as e:
        print("ClusterError:", e)
"""


@pytest.mark.cluster
def test_workers_over_their_memory_limit_end_the_job_instead_of_hanging(tmp_path):
    # the reproducer of the hang, past the up-front check: a worker over its limit is killed, and its
    # nanny cannot bring it back (or brings it back only to be killed again).  In a process of its
    # own, whose exit is timed too: the broken cluster must not hold it.
    (tmp_path / "over.py").write_text(OVER_MEMORY)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(tmp_path / "over.py")], capture_output=True, text=True, env=ENV,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ClusterError: the cluster has had no running worker for 3 s (local cluster, memory_limit=50MB)" \
        in r.stdout, r.stdout + r.stderr[-2000:]
    assert time.perf_counter() - t0 < 60


@pytest.mark.cluster
def test_a_task_that_keeps_killing_its_worker_fails_after_bounded_retries():
    with pytest.raises(cluster.ClusterError, match=rf"lost a worker {cluster.ALLOWED_FAILURES + 1} times"):
        with cluster.scheduler("local", 1, memory_limit="1GiB") as client:
            # the memory check reads the workers' limits from a client too (a tcp:// scheduler)
            need = cluster.WORKER_BASELINE_BYTES + cluster.chunk_task_bytes((16384, 1024), np.float32)
            assert cluster.check_chunk_memory((16384, 1024), np.float32, client=client) == need
            with pytest.raises(InputError, match=r"limit=1.00 GiB is too small for chunks of 256.00 MiB"):
                cluster.check_chunk_memory((65536, 1024), np.float32, client=client, param="limit")
            client.gather(client.map(_die, [0]))


# ----------------------------------------------------------------------------- Ctrl-C


def _interrupt(args, partial, tmp_path, group=False, after=2):
    """Run the console script, SIGINT it once ``after`` chunks are written (0: as soon as the partial
    output exists, while the statistics pass runs); (status, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "nquant", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path, start_new_session=True)
    done = Path(partial) / "chunk_stats" / "c"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if (Path(partial).is_dir() if after == 0 else done.is_dir() and len(os.listdir(done)) >= after):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    if group:  # a terminal's Ctrl-C reaches the whole process group, cluster workers included
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def many_chunks(tmp_path_factory):
    d = tmp_path_factory.mktemp("sigint")
    x = np.random.default_rng(3).standard_normal((4096, 256)).astype(np.float32)
    z = zarr.create_array(str(d / "s.zarr"), shape=x.shape, chunks=(16, 256), dtype=x.dtype)
    z[...] = x
    return d, x


# moments of the interruption: during the statistics pass, and after a seeded random number of chunks
@pytest.mark.parametrize("after", [0, *np.random.default_rng(16).integers(1, 200, size=2).tolist()])
def test_ctrl_c_prints_one_line_exits_130_and_the_rerun_resumes(many_chunks, capsys, after):
    d, x = many_chunks
    dst = d / f"t{after}.zarr"
    rc, out, err = _interrupt(["quantize", d / "s.zarr", dst, "--scheme", "int4", "--no-progress"],
                              str(dst) + ".partial", d, after=after)
    assert rc == 130 and out == ""
    assert err == "nquant: interrupted (rerun to resume)\n"
    assert not dst.exists() and Path(str(dst) + ".partial").is_dir()
    cli_main.main(["quantize", str(d / "s.zarr"), str(dst), "--scheme", "int4", "--no-progress", "--json"])
    assert json.loads(capsys.readouterr().out)["shape"] == [4096, 256]
    # bit-identical to an uninterrupted quantization: codes and side arrays
    q, ref = nq.open(str(dst)), nq.quantize(x, nq.Uniform(bits=4))
    np.testing.assert_array_equal(np.asarray(q.codes), ref.codes)
    for name in ref.side:
        np.testing.assert_array_equal(np.asarray(q.side[name]), ref.side[name])


@pytest.mark.cluster
def test_ctrl_c_on_a_local_cluster(many_chunks):
    d, _ = many_chunks
    dst = d / "c.zarr"
    rc, out, err = _interrupt(["quantize", d / "s.zarr", dst, "--scheme", "int4", "--progress", "--scheduler",
                               "local", "--workers", "1"], str(dst) + ".partial", d, group=True)
    assert rc == 130 and out == ""
    # the compile notice (on a machine where these kernels are not compiled yet), the progress
    # bar's lines, then the message on a line of its own, and nothing else
    *bars, last = err.splitlines()
    if bars and bars[0].startswith("compiling kernels for this machine, once: ~"):
        bars = bars[1:]
    assert last == "nquant: interrupted (rerun to resume)" and err.endswith("\n")
    assert all(line.startswith("[") and " chunks " in line for line in bars if line), err


# ----------------------------------------------------------------------------- model groups


def test_verify_a_model_group_against_its_safetensors(d, capsys):
    cli_main.main(["verify", str(d / "m.zarr"), "--source", str(d / "m.safetensors"), "--json"])
    r = json.loads(capsys.readouterr().out)
    qs = open_model(str(d / "m.zarr"))
    originals = read_tensors(str(d / "m.safetensors"))
    assert sorted(r["figures"]) == ["total", "v", "w"]  # the vector b was not quantized
    errors = []
    for name in ("v", "w"):
        x = np.asarray(originals[name][0])
        x_hat = np.asarray(nq.dequantize(qs[name]))
        m = nq.metrics(x, x_hat)
        assert r["figures"][name]["rmse"] == pytest.approx(m["rmse"], rel=1e-6)
        assert r["figures"][name]["max_abs"] == pytest.approx(m["max_abs"], rel=1e-6)
        errors.append((x.astype(np.float64) - x_hat.astype(np.float64)).ravel())
    e = np.concatenate(errors)
    assert r["figures"]["total"]["rmse"] == pytest.approx(np.sqrt(np.mean(e ** 2)), rel=1e-6)
    assert r["figures"]["total"]["values"] == 32 * 64 + 16 * 32
    assert r["tensors"] == 2 and r["chunks"] >= 4
    cli_main.main(["verify", str(d / "m.zarr"), "--source", str(d / "m.safetensors")])
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(f"{d / 'm.zarr'}: model, 2 tensors") and text[-1].startswith("  total: rmse ")


def test_dequantize_a_model_group_to_zarr_and_safetensors(d, capsys):
    qs = open_model(str(d / "m.zarr"))
    cli_main.main(["dequantize", str(d / "m.zarr"), str(d / "m-out.zarr")])
    assert capsys.readouterr().out.startswith(f"{d / 'm-out.zarr'}: 2 tensors")
    g = zarr.open_group(str(d / "m-out.zarr"), mode="r")
    assert sorted(g.array_keys()) == ["v", "w"]
    for name in ("v", "w"):
        np.testing.assert_array_equal(g[name][...], np.asarray(nq.dequantize(qs[name])))
    cli_main.main(["dequantize", str(d / "m.zarr"), str(d / "m-out.safetensors"), "--json"])
    r = json.loads(capsys.readouterr().out)
    assert r["tensors"] == {"w": {"shape": [32, 64], "dtype": "F16"}, "v": {"shape": [16, 32], "dtype": "BF16"}}
    back = read_tensors(str(d / "m-out.safetensors"))
    assert {n: t for n, (_, t) in back.items()} == {"w": "F16", "v": "BF16"}  # original dtypes
    np.testing.assert_array_equal(back["w"][0], np.asarray(nq.dequantize(qs["w"])))
    v = np.asarray(nq.dequantize(qs["v"]), dtype=np.float32)  # bfloat16: the nearest, ties to even
    np.testing.assert_allclose(back["v"][0], v, rtol=2.0 ** -8)
    # a second run needs --overwrite, which replaces our own output
    with pytest.raises(SystemExit) as e:
        cli_main.main(["dequantize", str(d / "m.zarr"), str(d / "m-out.zarr")])
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err
    cli_main.main(["dequantize", str(d / "m.zarr"), str(d / "m-out.zarr"), "--overwrite"])
    assert sorted(zarr.open_group(str(d / "m-out.zarr"), mode="r").array_keys()) == ["v", "w"]
    assert "holds only the tensors that were quantized" in " ".join(cli_main.commands["dequantize"].help.split())


def test_verify_reads_every_chunk_and_names_a_missing_one(d, tmp_path, capsys):
    cli_main.main(["verify", str(d / "q.zarr"), "--json"])
    r = json.loads(capsys.readouterr().out)
    g = zarr.open_group(str(d / "q.zarr"), mode="r")
    assert r["chunks"] == sum(int(np.prod(g[k].cdata_shape)) for k in g.array_keys())
    cli_main.main(["verify", str(d / "q.zarr"), "--source", str(d / "x.npy"), "--json"])
    m = json.loads(capsys.readouterr().out)
    x = np.load(d / "x.npy")
    assert m["rmse"] == pytest.approx(nq.metrics(x, nq.dequantize(nq.open(str(d / "q.zarr"))))["rmse"], rel=1e-6)
    # one chunk of the codes deleted: verify names it, one line, status 2
    shutil.copytree(d / "q.zarr", tmp_path / "q.zarr")
    chunk = next(p for p in (tmp_path / "q.zarr" / "codes").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    with pytest.raises(SystemExit) as e:
        cli_main.main(["verify", str(tmp_path / "q.zarr")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "codes" in err and "q.zarr" in err


# ----------------------------------------------------------------------------- nq.dequantize arguments


def test_dequantize_refuses_out_and_dtype_it_cannot_honour():
    q = nq.quantize(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), nq.Uniform(bits=4))
    read_only = np.zeros((3, 4), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(InputError, match=r"^out is read-only"):
        nq.dequantize(q, out=read_only)
    assert not read_only.any()
    with pytest.raises(InputError, match=r"^dtype=int8 is invalid: expected a floating dtype"):
        nq.dequantize(q, dtype=np.int8)
    with pytest.raises(InputError, match=r"^dtype='bogus' is invalid"):
        nq.dequantize(q, dtype="bogus")
    with pytest.raises(InputError, match=r"^out dtype=int32 is invalid"):
        nq.dequantize(q, out=np.zeros((3, 4), np.int32))
    with pytest.raises(InputError, match=r"^out dtype=float64 does not match dtype=float32"):
        nq.dequantize(q, dtype=np.float32, out=np.zeros((3, 4)))
    with pytest.raises(InputError, match=r"^out shape=\(4, 3\) is invalid"):
        nq.dequantize(q, out=np.zeros((4, 3), np.float32))
    with pytest.raises(InputError, match=r"^out of type list is invalid"):
        nq.dequantize(q, out=[0.0] * 12)
    out = np.zeros((3, 4), np.float64)  # float out, no dtype: the values cast into it
    assert nq.dequantize(q, out=out) is out
    np.testing.assert_array_equal(out, nq.dequantize(q).astype(np.float64))



def test_a_dead_process_pool_worker_ends_with_an_error():
    import dask

    with pytest.raises(cluster.ClusterError, match=r"worker process of the 'processes' scheduler died"):
        with cluster.scheduler("processes", 1):
            dask.compute(dask.delayed(_die)(0))
