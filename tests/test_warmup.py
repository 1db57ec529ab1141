"""Compilation made visible: the compile log, the marker of compiled paths, ``nquant warmup``, the
one-line notice before a path compiles, and the help texts of the commands on those paths."""

import json

import numba
import numpy as np
import pytest
from numba.core.event import Event, EventStatus

import nquant as nq
from nquant.interfaces import warmup
from nquant.interfaces import workflow as wf
from nquant.interfaces.cli import main as cli_main
from nquant.interfaces.presets import PRESETS
from nquant.kernels.rounding import MODES
from nquant.schemes import RANGES

NOTICE = "compiling kernels for this machine, once: ~"


@pytest.fixture
def marker_dir(tmp_path, monkeypatch):
    """The marker in an empty folder of its own (the kernels still come from Numba's cache)."""
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setattr(warmup, "cache_dir", lambda: str(folder))
    return folder


def _marker(folder):
    return json.loads((folder / warmup.MARKER).read_text())["paths"]


class _Dispatcher:
    def __init__(self, module, name):
        self.py_func = type("F", (), {"__module__": module, "__qualname__": name})


def _ev(status, module, name, args=()):
    return Event("numba:compile", status, data={"dispatcher": _Dispatcher(module, name), "args": args})


def test_outermost_keeps_top_level_nquant_compilations_with_inclusive_time():
    S, E = EventStatus.START, EventStatus.END
    buffer = [(10.0, _ev(S, "nquant.kernels.affine", "quantize_affine", ("float32",))),
              (10.5, _ev(S, "nquant.kernels.scalar", "helper")),   # compiled inside: not listed
              (11.0, _ev(E, "nquant.kernels.scalar", "helper")),
              (12.5, _ev(E, "nquant.kernels.affine", "quantize_affine", ("float32",))),
              (13.0, _ev(S, "elsewhere", "f")),                     # not nquant: counted, not listed
              (13.25, _ev(E, "elsewhere", "f"))]
    kernels, total = warmup.outermost(buffer)
    assert kernels == [{"kernel": "nquant.kernels.affine.quantize_affine", "signature": "(float32)",
                        "seconds": 2.5}]
    assert total == 2.75


def test_marker_records_paths_per_build_and_estimates_the_rest(marker_dir, monkeypatch):
    assert warmup.notice(["a", "b"]) == NOTICE + f"{warmup.FIRST_PATH_SECONDS + warmup.MORE_PATH_SECONDS:.0f} s"
    warmup.record("a", 3.2)
    assert _marker(marker_dir) == {"a": {"build": warmup.build_id(), "seconds": 3.2}}
    assert warmup.compiled("a") and not warmup.compiled("b")
    assert warmup.notice(["a"]) is None
    assert warmup.notice(["a", "b"]) == NOTICE + f"{warmup.MORE_PATH_SECONDS:.0f} s"
    # another build (kernel sources, Numba or CPU changed): compiles again, estimated by the last time
    monkeypatch.setattr(warmup, "build_id", lambda: "other")
    assert not warmup.compiled("a")
    assert warmup.notice(["a"]) == NOTICE + "3 s"


def test_compiling_says_so_only_when_something_compiles(marker_dir):
    said = []

    @numba.njit
    def add_one(v):
        return v + 1

    with warmup.compiling("probe", said.append) as log:
        assert add_one(1) == 2
    assert said == [NOTICE + f"{warmup.FIRST_PATH_SECONDS:.0f} s"] and log.seconds > 0
    assert _marker(marker_dir)["probe"]["seconds"] == round(log.seconds, 3)
    with warmup.compiling("probe", said.append) as log:  # compiled now: nothing to say
        assert add_one(2) == 3
    assert len(said) == 1 and log.seconds == 0 and log.kernels == []


def test_warmup_command_compiles_and_writes_the_marker(marker_dir, capsys):
    cli_main.main(["warmup", "--preset", "int8", "--ndim", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["cache"] == str(marker_dir) and [(p["preset"], p["dtype"], p["ndim"]) for p in out["paths"]] == [
        ("int8", "float32", 1)]
    key = warmup.array_key(PRESETS["int8"], np.float32, 1)
    assert set(_marker(marker_dir)) == {key} and warmup.compiled(key)
    cli_main.main(["warmup", "--preset", "int8", "--ndim", "1"])
    out = capsys.readouterr().out
    assert out.startswith("int8           float32 1-D: ") and f"into {marker_dir}" in out


def test_quantize_says_once_that_it_compiles(marker_dir, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((96, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    # --no-progress: no bar, and no notice either
    cli_main.main(["quantize", str(tmp_path / "x.npy"), str(tmp_path / "n.zarr"), "--scheme", "int8-channel",
                   "--no-progress"])
    assert capsys.readouterr().err == ""
    cli_main.main(["quantize", str(tmp_path / "x.npy"), str(tmp_path / "a.zarr"), "--scheme", "int8-channel"])
    err = capsys.readouterr().err
    assert err.count(NOTICE) == 1 and err.index(NOTICE) < err.index("chunks")  # before the progress bar
    assert warmup.compiled(warmup.array_key(PRESETS["int8-channel"], np.float32, 2))
    cli_main.main(["quantize", str(tmp_path / "x.npy"), str(tmp_path / "b.zarr"), "--scheme", "int8-channel"])
    assert NOTICE not in capsys.readouterr().err
    # dequantize runs the same kernels: recorded already
    cli_main.main(["dequantize", str(tmp_path / "b.zarr"), str(tmp_path / "y.npy")])
    assert NOTICE not in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), nq.dequantize(nq.quantize(x, PRESETS["int8-channel"])))


def test_a_refused_request_is_one_line_even_before_the_kernels_are_compiled(marker_dir, tmp_path, capsys):
    """The notice comes only once the request is checked and work remains: an error stays one line,
    and a finished output asked for again compiles nothing."""
    x = np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    user = tmp_path / "mydata"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    for argv in (["quantize", str(tmp_path / "x.npy"), str(user), "--scheme", "int4"],
                 ["quantize", str(tmp_path / "x.npy"), str(tmp_path / "x.npy"), "--scheme", "int4"]):
        with pytest.raises(SystemExit) as e:
            cli_main.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and NOTICE not in err, err
    assert (user / "notes.txt").read_text() == "mine"
    cli_main.main(["quantize", str(tmp_path / "x.npy"), str(tmp_path / "q.zarr"), "--scheme", "int4", "--no-progress"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli_main.main(["dequantize", str(tmp_path / "q.zarr"), str(user)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and NOTICE not in err, err
    assert not warmup.compiled(warmup.array_key(PRESETS["int4"], np.float32, 2))
    cli_main.main(["quantize", str(tmp_path / "x.npy"), str(tmp_path / "q.zarr"), "--scheme", "int4"])
    assert NOTICE not in capsys.readouterr().err  # finished already: nothing to do, nothing compiled


WF = """
[workflow]
name = "t"
output = "${out}"
[vars]
out = "o"
[sources.w]
path = "${out}/w.zarr"
generate = { kind = "weights", shape = [64, 128], chunks = [16, 128], seed = 0 }
[[jobs]]
name = "a"
source = "w"
scheme = "int8-channel"
[[jobs]]
name = "b"
source = "w"
scheme = "int8"
"""


def test_workflow_notice_once_and_throughput_without_compilation(marker_dir, tmp_path):
    (tmp_path / "wf.toml").write_text(WF)
    notices, steps = [], []
    spec = wf.load(tmp_path / "wf.toml", {"out": str(tmp_path / "o")})
    report = wf.run(spec, progress=False, echo=steps.append, notice=notices.append)
    assert notices == [NOTICE + f"{warmup.FIRST_PATH_SECONDS + warmup.MORE_PATH_SECONDS:.0f} s"]
    assert all(NOTICE not in s for s in steps)
    for j in report["jobs"]:  # the job's time starts after its kernels are ready
        assert j["compile_seconds"] >= 0 and j["throughput_mb_s"] == pytest.approx(64 * 128 * 4 / j["seconds"] / 1e6)
        assert warmup.compiled(warmup.array_key(nq.Uniform(**{k: v for k, v in j["scheme"].items()
                                                              if k not in ("type", "format_version")}),
                                                np.float32, 2))
    spec = wf.load(tmp_path / "wf.toml", {"out": str(tmp_path / "o2")})
    wf.run(spec, progress=False, echo=steps.append, notice=notices.append)
    assert len(notices) == 1


def _help(capsys, *args):
    cli_main.main([*args, "--help"])
    return capsys.readouterr().out


def test_help_lists_choices_in_order_and_names_the_demo_scheduler(capsys):
    text = _help(capsys, "quantize")
    flat = " ".join(text.split())
    assert f"rounding mode: {', '.join(MODES)}." in flat and f"range calibration: {', '.join(RANGES)}." in flat
    assert f"Preset name ({', '.join(PRESETS)})" in flat
    order = ["--scheme", "--bits", "--axis", "--block-size", "--rounding", "--range", "--seed", "--scheduler",
             "--workers", "--threads-per-worker", "--memory-limit", "--json", "--progress", "--overwrite"]
    positions = [text.index(f"  {o} ") for o in order]
    assert positions == sorted(positions)
    demo = " ".join(_help(capsys, "demo").split())
    assert "[default: local (the demo workflow's [cluster] table)]" in demo and "default: threads" not in demo
    run = " ".join(_help(capsys, "run").split())
    assert "[default: the workflow's [cluster] scheduler, else threads]" in run
    warm = " ".join(_help(capsys, "warmup").split())
    assert all(name in warm for name in PRESETS) and "container image" in warm


def test_asv_compile_benchmarks_are_fresh_interpreter_code():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "asv_bench"))
    from benchmarks import compile as bench

    names = sorted(n for n in dir(bench) if n.startswith("timeraw_"))
    assert names == ["timeraw_first_quantize_cold", "timeraw_first_quantize_warm", "timeraw_import_dependencies",
                     "timeraw_import_nquant"]
    for name in names:
        code, setup = getattr(bench, name)()
        compile(code, name, "exec")
        compile(setup, name, "exec")
        assert "NUMBA_CACHE_DIR" in setup and "numba" not in setup.split("NUMBA_CACHE_DIR")[0]
