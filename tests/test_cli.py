"""The ``nquant`` console script, run for real in subprocesses (``python -m nquant``, this tree's code)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import nquant as nq
from nquant.interfaces.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
COMMANDS = ["quantize", "dequantize", "info", "verify", "fit-codebook", "plan", "run", "demo", "warmup"]


def _cmd(*args):
    return [sys.executable, "-m", "nquant", *map(str, args)]


def nquant(*args, cwd=None, timeout=300):
    """Run the console script; returns the CompletedProcess (text)."""
    return subprocess.run(_cmd(*args), capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)


def nquant_many(arg_lists, cwd=None):
    """Run several invocations at once (they are independent): list of (returncode, stdout, stderr)."""
    procs = [subprocess.Popen(_cmd(*a), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                              cwd=cwd) for a in arg_lists]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        results.append((p.returncode, out, err))
    return results


def ok_json(*args, cwd=None):
    r = nquant(*args, "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    x = (np.random.default_rng(0).standard_normal((96, 64)) * np.linspace(0.5, 3, 96)[:, None]).astype(np.float32)
    np.save(d / "x.npy", x)
    return d, x


# ----------------------------------------------------------------------------- help and errors


def test_help_of_the_group_and_every_subcommand():
    runs = nquant_many([["--help"]] + [[c, "--help"] for c in COMMANDS])
    rc, out, err = runs[0]
    assert rc == 0 and err == ""
    for c in COMMANDS:
        assert f"\n  {c} " in out  # listed with its summary
    for c, (rc, out, err) in zip(COMMANDS, runs[1:]):
        assert rc == 0 and err == "", c
        assert out.startswith(f"Usage: nquant {c} "), c
        assert "--help" in out


def test_every_option_and_command_has_help():
    assert sorted(cli_main.commands) == sorted(COMMANDS)
    for name, cmd in cli_main.commands.items():
        assert cmd.help and cmd.help.strip(), name
        for p in cmd.params:
            if p.param_type_name == "option":
                assert p.help, f"{name} {p.opts}"


BAD = [  # run through the console script
    (["quantize", "{d}/x.npy", "{d}/q.zarr", "--scheme", "int9"], "scheme='int9'"),
    (["quantize", "{d}/x.npy", "{d}/q.zarr", "--bits", "x"], "'--bits': 'x' is not a valid integer"),
    (["quantize", "{d}/x.npy", "{d}/q.zarr", "--scheduler", "gpu"], "scheduler='gpu'"),
    (["info", "{d}/missing.zarr"], "missing.zarr"),
    (["fit-codebook", "{d}/x.npy", "{d}/l.json", "--levels", "300"], "levels=300"),
    (["run", str(ROOT / "workflows" / "demo.toml"), "--set", "nope=1"], "--set nope"),
    (["bogus"], "No such command 'bogus'"),
]
BAD_IN_PROCESS = [  # the same handling, more cases, without a process each
    (["quantize", "{d}/x.npy", "{d}/q.zarr", "--bits", "17"], "bits=17"),
    (["quantize", "{d}/x.npy", "{d}/q.zarr", "--scheme", "int8", "--rounding", "up"], "rounding='up'"),
    (["quantize", "{d}/x.npy"], "Missing argument 'DST'"),
    (["quantize", "{d}/missing.npy", "{d}/q.zarr"], "missing.npy"),
    (["verify", "{d}/missing.zarr", "--source", "{d}/x.npy"], "missing.zarr"),
    (["dequantize", "{d}/missing.zarr", "{d}/out.zarr"], "missing.zarr"),
    (["fit-codebook", "{d}/x.npy", "{d}/levels.txt"], "levels.txt"),
    (["fit-codebook", "{d}/x.npy", "{d}/l.json", "--method", "lloyd"], "'lloyd' is not one of"),
    (["fit-codebook", "{d}/missing.npy", "{d}/l.json"], "missing.npy"),
    (["fit-codebook", "{d}/x.npy", "{d}/x.npy"], "exists; pass --overwrite"),
    (["quantize", "{d}/x.npy", "{d}/q.zarr", "--scheme", "{d}/none.json"], "none.json'"),
    (["run", "{d}/missing.toml"], "missing.toml"),
    (["plan", "{d}/x.npy"], "not valid TOML"),
    (["--log-level", "LOUD", "info", "x"], "'LOUD' is not one of"),
]


def _one_line(args, rc, out, err, needle):
    assert rc == 2, (args, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, (args, err)
    assert needle in lines[0] and "error" in lines[0], (args, err)
    assert "Traceback" not in err and out == ""


def test_bad_arguments_print_one_line_and_exit_2(data):
    d, _ = data
    runs = nquant_many([[a.format(d=d) for a in args] for args, _ in BAD])
    for (args, needle), (rc, out, err) in zip(BAD, runs):
        _one_line(args, rc, out, err, needle.format(d=d))


@pytest.mark.parametrize("args, needle", BAD_IN_PROCESS)
def test_bad_arguments_in_process(data, args, needle, capsys):
    d, _ = data
    with pytest.raises(SystemExit) as e:
        cli_main.main([a.format(d=d) for a in args])
    out, err = capsys.readouterr()
    _one_line(args, e.value.code, out, err, needle.format(d=d))


def test_debug_shows_the_traceback(data):
    d, _ = data
    r = nquant("--debug", "info", d / "missing.zarr")
    assert r.returncode != 0 and "Traceback" in r.stderr and "StoreError" in r.stderr


# ----------------------------------------------------------------------------- array commands


def test_quantize_info_verify_dequantize(data):
    d, x = data
    q = ok_json("quantize", d / "x.npy", d / "q8.zarr", "--scheme", "int8", "--axis", "0", "--no-progress")
    ref = nq.quantize(x, nq.Uniform(bits=8, axis=0))
    assert q["scheme"]["axis"] == 0 and q["shape"] == [96, 64]
    assert q["bits_per_value"] == pytest.approx(ref.bits_per_value)
    m = nq.metrics(x, nq.dequantize(ref))
    info = ok_json("info", d / "q8.zarr")
    assert info["metrics"]["rmse"] == pytest.approx(m["rmse"], rel=1e-6)
    v = ok_json("verify", d / "q8.zarr", "--source", d / "x.npy")
    assert v["rmse"] == pytest.approx(m["rmse"], rel=1e-6) and v["max_abs"] == pytest.approx(m["max_abs"])
    r = ok_json("dequantize", d / "q8.zarr", d / "x8.zarr")
    assert r == {"dst": str(d / "x8.zarr"), "dtype": "float32", "shape": [96, 64]}
    np.testing.assert_array_equal(zarr.open_array(str(d / "x8.zarr"))[...], nq.dequantize(ref))
    text = nquant("info", d / "q8.zarr").stdout
    assert f"bits/value: {ref.bits_per_value:.4f}" in text and f"SQNR {m['sqnr_db']:.2f} dB" in text
    # a finished store is not rewritten without --overwrite
    before = os.stat(d / "q8.zarr" / "zarr.json").st_mtime_ns
    assert nquant("quantize", d / "x.npy", d / "q8.zarr", "--scheme", "int8", "--axis", "0").returncode == 0
    assert os.stat(d / "q8.zarr" / "zarr.json").st_mtime_ns == before


def test_quantize_safetensors_model(tmp_path):
    from nquant.safetensors_io import write_tensors

    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    write_tensors(tmp_path / "m.safetensors", {"w": (w, "F16"), "b": (rng.standard_normal(64), "F32")})
    r = ok_json("quantize", tmp_path / "m.safetensors", tmp_path / "m.zarr", "--scheme", "nf4-dq")
    assert set(r) == {"w", "total"}  # 1-D tensors are kept as they are
    ref = nq.quantize(w.astype(np.float16), nq.NF4(double_quant=True))
    assert r["w"]["bits_per_value"] == pytest.approx(ref.bits_per_value)
    info = ok_json("info", tmp_path / "m.zarr")
    assert info["source"] == "m.safetensors" and info["tensors"]["w"]["shape"] == [64, 128]
    assert info["tensors"]["w"]["rmse"] == pytest.approx(nq.metrics(w.astype(np.float16),
                                                                    nq.dequantize(ref))["rmse"], rel=1e-5)
    # levels fitted on one tensor of the model
    r = ok_json("fit-codebook", tmp_path / "m.safetensors", tmp_path / "w.npy", "--tensor", "w", "--bits", "2")
    np.testing.assert_allclose(np.load(tmp_path / "w.npy"),
                               nq.optimal1d.kmeans1d(w.astype(np.float16).astype(np.float64), 4).centers)


def test_fit_codebook_writes_levels_usable_as_scheme(data):
    d, x = data
    r = ok_json("fit-codebook", d / "x.npy", d / "km.json", "--bits", "3")
    expected = nq.optimal1d.kmeans1d(x.astype(np.float64), 8).centers
    np.testing.assert_allclose(r["levels"], expected)
    assert r["values_fitted"] == x.size and r["method"] == "kmeans"
    q = ok_json("quantize", d / "x.npy", d / "qkm.zarr", "--scheme", d / "km.json", "--no-progress")
    assert q["scheme"]["type"] == "codebook" and q["scheme"]["rounding"] == "nearest"
    np.testing.assert_allclose(q["scheme"]["values"], expected)
    # QUIVER levels to .npy, fitted on a sample of 2000 values; then a codebook with stochastic rounding
    r = ok_json("fit-codebook", d / "x.npy", d / "qv.npy", "--method", "quiver", "--levels", "5",
                "--max-values", "2000", "--seed", "4")
    from nquant.interfaces.levels import load_values

    sample = load_values(str(d / "x.npy"), max_values=2000, seed=4)
    assert r["values_fitted"] == 2000
    np.testing.assert_allclose(np.load(d / "qv.npy"), nq.asq.solve(sample, 5).levels)
    from nquant.interfaces.presets import resolve_scheme

    scheme = resolve_scheme(str(d / "qv.npy"))  # what --scheme FILE.npy gives
    assert scheme.type == "codebook" and scheme.values == tuple(np.load(d / "qv.npy"))


# ----------------------------------------------------------------------------- workflows

RESUME_WF = """
[workflow]
name = "resume"
output = "${out}"
[vars]
out = "out"
rows = 1024
seed = 3
[cluster]
scheduler = "threads"
workers = 1
[sources.w]
path = "${out}/w.zarr"
generate = { kind = "weights", shape = ["${rows}", 256], chunks = [64, 256], seed = "${seed}" }
[[jobs]]
name = "first"
source = "w"
scheme = "int8-channel"
[[jobs]]
name = "second"
source = "w"
scheme = "int4"
overrides = { axis = 0 }
[[jobs]]
name = "third"
source = "w"
scheme = "int4-block64"
"""


def _manifest(out):
    try:
        return json.loads((out / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"jobs": {}}


def _done_chunks(partial):
    """Row indices of the chunks whose done flag is set in a partial group (empty if none yet)."""
    try:
        flags = zarr.open_group(str(partial), mode="r")["chunk_stats"][..., 5]
    except Exception:
        return []
    return [int(i) for i in np.flatnonzero(flags.reshape(-1) == 1)]


@pytest.mark.slow
def test_kill_resume_rerun_and_foreign_output(tmp_path):
    wf_file = tmp_path / "wf.toml"
    wf_file.write_text(RESUME_WF)
    # 64 chunks of 64 rows: compiled kernels finish a chunk in about a millisecond, so the job must
    # have enough of them to be caught running (the poll below reads the store every 20 ms)
    rows = ("--set", "rows=4096")
    out = tmp_path / "out"
    log = tmp_path / "first-run.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(_cmd("run", wf_file, "--set", f"out={out}", *rows, "--no-progress"), env=ENV,
                                stdout=f, stderr=subprocess.STDOUT)
    partial = out / "second.zarr.partial"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if _manifest(out)["jobs"].get("second", {}).get("state") == "running" and len(_done_chunks(partial)) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed: " + log.read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = _manifest(out)["jobs"]
    assert state["first"]["state"] == "done" and state["second"]["state"] == "running"
    assert "third" not in state and not (out / "second.zarr").exists()
    done = _done_chunks(partial)
    assert 2 <= len(done) < 64
    first_mtime = os.stat(out / "first.zarr" / "zarr.json").st_mtime_ns
    codes_mtimes = {i: os.stat(partial / "codes" / "c" / str(i) / "0").st_mtime_ns for i in done}

    r = ok_json("run", wf_file, "--set", f"out={out}", *rows, "--no-progress")
    status = {j["job"]: j["status"] for j in r["jobs"]}
    assert status == {"first": "skipped", "second": "resumed", "third": "done"}
    assert os.stat(out / "first.zarr" / "zarr.json").st_mtime_ns == first_mtime
    # chunks finished before the kill were not recomputed
    assert {i: os.stat(out / "second.zarr" / "codes" / "c" / str(i) / "0").st_mtime_ns for i in done} == codes_mtimes
    # and the resumed output is complete and equal to quantizing the whole array at once
    x = zarr.open_array(str(out / "w.zarr"))[...]
    for name, scheme in (("second", nq.Uniform(bits=4, axis=0)), ("third", nq.Uniform(bits=4, block_size=64)),
                         ("first", nq.Uniform(bits=8, symmetric=True, axis=0))):
        got = np.asarray(nq.dequantize(nq.open(str(out / f"{name}.zarr"))))
        np.testing.assert_array_equal(got, nq.dequantize(nq.quantize(x, scheme)), err_msg=name)
    assert Path(r["paths"]["html"]).exists()

    # a finished run again: a no-op
    mtimes = {p: os.stat(p).st_mtime_ns for p in out.glob("*.zarr/zarr.json")}
    r = nquant("run", wf_file, "--set", f"out={out}", *rows, "--no-progress")
    assert r.returncode == 0
    assert r.stdout.count(" skipped ") == 3 and r.stdout.strip().splitlines()[-1] == f"report: {out}/report.html"
    assert {p: os.stat(p).st_mtime_ns for p in out.glob("*.zarr/zarr.json")} == mtimes

    # another spec into the same output is refused, unless --overwrite (which starts over)
    r = nquant("run", wf_file, "--set", f"out={out}", "--set", "seed=4")
    assert r.returncode == 2 and "different workflow spec" in r.stderr and "--overwrite" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = ok_json("run", wf_file, "--set", f"out={out}", "--set", "seed=4", "--set", "rows=256", "--overwrite",
                "--no-progress")
    assert {j["status"] for j in r["jobs"]} == {"done"}
    assert nq.open(str(out / "first.zarr")).shape == (256, 256)


def test_bad_workflow_file_names_the_key(tmp_path):
    bad = RESUME_WF.replace('scheme = "int4-block64"', 'scheme = "int4-block64"\nrounding = "floor"')
    (tmp_path / "bad.toml").write_text(bad)
    (tmp_path / "bad2.toml").write_text(RESUME_WF.replace('kind = "weights"', 'kind = "weight"'))
    runs = nquant_many([["run", tmp_path / "bad.toml", "--set", f"out={tmp_path / 'o'}"],
                        ["plan", tmp_path / "bad2.toml"]])
    (rc, _, err), (rc2, _, err2) = runs
    assert rc == 2 and err.strip() == "nquant: error: jobs[2].rounding: unknown key (allowed: ['act_order', " \
                                      "'calibration', 'damp', 'include', 'k', 'name', 'overrides', 'queries', " \
                                      "'recipe', 'scheme', 'source', 'verify'])"
    assert rc2 == 2 and "sources.w.generate.kind: 'weight' is not one of" in err2
    assert not (tmp_path / "o").exists()


def test_plan_prints_the_jobs_without_computing(tmp_path):
    (tmp_path / "wf.toml").write_text(RESUME_WF)
    rows = ok_json("plan", tmp_path / "wf.toml", "--set", f"out={tmp_path / 'o'}", "--set", "rows=512")
    assert [r["job"] for r in rows] == ["first", "second", "third"]
    assert all(r["tasks"] == 8 and r["bytes_in"] == 512 * 256 * 4 and r["chunks"] == [64, 256] for r in rows)
    # a float32 scale per row of 256 (a symmetric scheme stores no zero point)
    assert rows[0]["bits_per_value"] == pytest.approx(8 + 512 * 32 / (512 * 256))
    assert not (tmp_path / "o").exists()
    text = nquant("plan", tmp_path / "wf.toml").stdout
    assert text.splitlines()[0].split()[:3] == ["job", "shape", "chunks"] and "(1024, 256)" in text


@pytest.mark.slow
@pytest.mark.cluster
def test_demo_runs_from_the_package_on_a_local_cluster(tmp_path):
    # run from an unrelated directory: the workflow comes from the installed package
    r = nquant("demo", "--set", f"out={tmp_path / 'demo'}", "--set", "rows=256", "--set", "chunk_rows=32",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last == f"report: {tmp_path / 'demo' / 'report.html'}"
    html = (tmp_path / "demo" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # three jobs and error vs bits
    # the distributed scheduler drew the chunk progress bar (on standard error), and the cluster
    # closed cleanly
    assert "100% 8/8 chunks" in r.stderr
    assert "WARNING" not in r.stderr and "Worker process still alive" not in r.stderr, r.stderr
    from nquant.interfaces.cli import demo_workflow_path

    assert Path(demo_workflow_path()).read_bytes() == (ROOT / "workflows" / "demo.toml").read_bytes()


def test_local_scheduler_progress_bar(data):
    d, _ = data
    r = nquant("quantize", d / "x.npy", d / "qp.zarr", "--scheme", "int4", "--progress")
    assert r.returncode == 0 and re.search(r"\] 100% (\d+)/\1 chunks", r.stderr)  # the style of the cluster's
    r = nquant("quantize", d / "x.npy", d / "qn.zarr", "--scheme", "int4", "--no-progress")
    assert r.returncode == 0 and "chunks" not in r.stderr
