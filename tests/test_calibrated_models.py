"""Calibrated whole-model quantization: calibration stores, recipes, the API, the CLI and workflow jobs."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

import nquant as nq
from nquant.adaptive import adaptive_round, hessian_partial
from nquant.calibration import RECIPES, codebook_scheme, open_calibration, write_calibration
from nquant.errors import InputError, SchemeError, StoreError
from nquant.models import model_meta, open_model
from nquant.safetensors_io import read_tensors, write_tensors

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
U4 = nq.Uniform(4, symmetric=True, axis=0)


def _inputs(rows, n_in, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, n_in)) * np.linspace(0.2, 3.0, n_in)).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small model: two calibrated linear weights, one without an entry, a bias; and its inputs."""
    d = tmp_path_factory.mktemp("calmodel")
    rng = np.random.default_rng(0)
    tensors = {"l0.weight": (rng.standard_normal((24, 32)).astype(np.float32), "F32"),
               "l1.weight": (rng.standard_normal((16, 24)).astype(np.float16), "F16"),
               "head.weight": (rng.standard_normal((8, 16)).astype(np.float32), "F32"),
               "l0.bias": (rng.standard_normal(24).astype(np.float32), "F32")}
    write_tensors(d / "m.safetensors", tensors)
    inputs = {"l0.weight": _inputs(200, 32, 1), "l1.weight": _inputs(150, 24, 2)}
    write_calibration(d / "hess.npz", inputs)                       # Hessians, NumPy statistics
    write_calibration(d / "rows.zarr", inputs, kind="inputs")       # the rows themselves, read with Dask
    return d, tensors, inputs


def codes(q):
    return np.asarray(q.codes_unpacked)


# ----------------------------------------------------------------------------- API


def test_adaptive_recipe_matches_adaptive_round_and_plain_rounding(model, tmp_path):
    d, tensors, inputs = model
    out = tmp_path / "dq.safetensors"
    r = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "q", U4, calibration=d / "hess.npz",
                                write_dequantized=out)
    assert r["total"]["calibrated"] == 2 and r["total"]["uncalibrated"] == ["head.weight"]
    assert r["total"]["recipe"] == "adaptive" and r["total"]["unused"] == []
    assert r["l0.weight"]["calibrated"] and not r["head.weight"]["calibrated"]
    assert r["l0.weight"]["rel_error"] <= r["l0.weight"]["rel_error_nearest"]
    qs = open_model(tmp_path / "q")
    for name, X in inputs.items():
        W = tensors[name][0]
        direct = adaptive_round(np.asarray(W, np.float32), X.T, U4, kind="inputs")
        np.testing.assert_array_equal(codes(qs[name]), codes(direct))
    np.testing.assert_array_equal(codes(qs["head.weight"]), codes(nq.quantize(tensors["head.weight"][0], U4)))
    back = read_tensors(out)
    assert list(back) == list(tensors) and back["l1.weight"][1] == "F16"
    np.testing.assert_array_equal(back["l0.bias"][0], tensors["l0.bias"][0])
    np.testing.assert_array_equal(back["l0.weight"][0], nq.dequantize(qs["l0.weight"]).compute())


@pytest.mark.parametrize("recipe", ["adaptive", "codebook4"])
def test_hessian_and_inputs_stores_give_the_same_codes(model, tmp_path, recipe):
    d, _, inputs = model
    scheme = U4 if recipe == "adaptive" else None
    a = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "a", scheme, calibration=d / "hess.npz", recipe=recipe)
    b = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "b", scheme, calibration=d / "rows.zarr",
                                recipe=recipe)
    c = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "c", scheme, calibration=inputs, recipe=recipe)
    qa, qb, qc = (open_model(tmp_path / k) for k in "abc")
    for name in ("l0.weight", "l1.weight", "head.weight"):
        np.testing.assert_array_equal(codes(qa[name]), codes(qb[name]))
        np.testing.assert_array_equal(codes(qa[name]), codes(qc[name]))
        assert a[name]["rmse"] == b[name]["rmse"] == c[name]["rmse"]


def test_codebook_recipe_stores_absmax_rows_and_fitted_levels(model, tmp_path):
    d, tensors, inputs = model
    r = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "q", calibration=d / "hess.npz", recipe="codebook4")
    qs = open_model(tmp_path / "q")
    for name in ("l0.weight", "l1.weight", "head.weight"):
        q = qs[name]
        W = np.asarray(tensors[name][0], np.float32)
        assert q.scheme == codebook_scheme(4, W.shape) and q.scheme.block_size == W.shape[1]
        absmax, levels = np.asarray(q.side["absmax"]), np.asarray(q.side["codebook"])
        np.testing.assert_array_equal(absmax, np.abs(W).max(axis=1))
        assert len(levels) <= 16 and (np.diff(levels) > 0).all()
        expect = levels[codes(q)] * absmax[:, None]
        np.testing.assert_array_equal(np.asarray(nq.dequantize(q)), expect.astype(tensors[name][0].dtype))
        stored = sum(np.asarray(a).nbytes for a in q.side.values()) + np.asarray(q.codes).nbytes
        assert r[name]["bits_per_value"] == pytest.approx(8 * stored / W.size)
    # calibrated rounding is never worse than nearest rounding with the same levels, on the calibration data
    for name, X in inputs.items():
        assert r[name]["rel_error"] <= r[name]["rel_error_nearest"]
        W = np.asarray(tensors[name][0], np.float64)
        err = (W - np.asarray(nq.dequantize(qs[name]), np.float64)) @ X.T.astype(np.float64)
        assert np.linalg.norm(err) / np.linalg.norm(W @ X.T) == pytest.approx(r[name]["rel_error"], rel=1e-4)


def test_write_calibration_forms_agree(tmp_path):
    X = _inputs(300, 16, 3)
    st = hessian_partial(X[:100].T)
    for part in (X[100:200], X[200:]):
        st = {"H": st["H"] + hessian_partial(part.T)["H"], "n": st["n"] + part.shape[0]}
    write_calibration(tmp_path / "a.npz", {"w": X})
    write_calibration(tmp_path / "b.npz", {"w": [X[:100], X[100:200], X[200:]]})
    write_calibration(tmp_path / "c.zarr", {"w": st})
    H = X.astype(np.float64).T @ X.astype(np.float64)
    for name in ("a.npz", "b.npz", "c.zarr"):
        cal = open_calibration(tmp_path / name)
        got, n = cal.hessian("w", (4, 16))
        np.testing.assert_allclose(got, H, rtol=1e-12)
        assert n == 300 and cal.check("w", (4, 16)) == "hessian"
    with pytest.raises(StoreError, match="already exists"):
        write_calibration(tmp_path / "a.npz", {"w": X})
    write_calibration(tmp_path / "a.npz", {"w": X}, kind="inputs", overwrite=True)
    assert open_calibration(tmp_path / "a.npz").check("w", (4, 16)) == "inputs"
    (tmp_path / "user.npz").write_text("not ours")
    with pytest.raises(StoreError, match="not an .npz file"):
        write_calibration(tmp_path / "user.npz", {"w": X}, overwrite=True)
    assert (tmp_path / "user.npz").read_text() == "not ours"


def test_finished_model_is_kept_and_another_recipe_is_refused(model, tmp_path):
    d, _, _ = model
    first = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "q", U4, calibration=d / "hess.npz")
    again = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "q", U4, calibration=d / "hess.npz")
    assert again == first
    with pytest.raises(StoreError, match="another request"):
        nq.quantize_safetensors(d / "m.safetensors", tmp_path / "q", calibration=d / "hess.npz", recipe="codebook3")
    r = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "q", calibration=d / "hess.npz",
                                recipe="codebook3", overwrite=True)
    assert r["total"]["recipe"] == "codebook3" and open_model(tmp_path / "q")["l0.weight"].scheme.bits == 3


# ----------------------------------------------------------------------------- untrusted stores


def _bad_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _error(model, tmp_path, calibration, **kw):
    d, _, _ = model
    dst = tmp_path / "never"
    with pytest.raises((InputError, SchemeError)) as e:
        nq.quantize_safetensors(d / "m.safetensors", dst, kw.pop("scheme", U4), calibration=calibration, **kw)
    assert not dst.exists() and "\n" not in str(e.value)
    return str(e.value)


def test_shape_mismatch_names_tensor_and_both_shapes(model, tmp_path):
    msg = _error(model, tmp_path, {"l0.weight": np.ones((10, 31), np.float32)})
    assert "'l0.weight'" in msg and "(10, 31)" in msg and "(24, 32)" in msg
    msg = _error(model, tmp_path, {"l1.weight": np.ones((24,), np.float32)})
    assert "(24,)" in msg and "(16, 24)" in msg
    write_calibration(tmp_path / "h.npz", {"l1.weight": _inputs(40, 23, 0)})
    msg = _error(model, tmp_path, tmp_path / "h.npz")
    assert "(23, 23)" in msg and "a Hessian (24, 24)" in msg
    msg = _error(model, tmp_path, {"l0.bias": np.ones((5, 24), np.float32)}, min_ndim=1)
    assert "2-D weight" in msg and "'l0.bias'" in msg


def test_bad_values_and_dtypes_are_one_line_errors(model, tmp_path):
    X = _inputs(50, 32, 0)
    X[3, 4] = np.nan
    assert "non-finite" in _error(model, tmp_path, {"l0.weight": X})
    assert "dtype=int32" in _error(model, tmp_path, {"l0.weight": np.ones((50, 32), np.int32)})
    H = np.eye(32)
    H[0, 1] = 5.0
    path = tmp_path / "asym.npz"
    write_calibration(path, {"l0.weight": np.eye(32)})  # a valid store, then a non-symmetric Hessian in its place
    meta = np.load(path)["__nquant_calibration__"]
    _bad_npz(path, **{"l0.weight": H, "__nquant_calibration__": meta})
    assert "not symmetric" in _error(model, tmp_path, path)
    assert "not symmetric" in _error(model, tmp_path, path, scheme=None, recipe="codebook4")
    _bad_npz(path, **{"l0.weight": -np.eye(32), "__nquant_calibration__": meta})
    assert "negative diagonal" in _error(model, tmp_path, path, scheme=None, recipe="codebook4")
    H = np.full((32, 32), np.inf)
    _bad_npz(path, **{"l0.weight": H, "__nquant_calibration__": meta})
    assert "non-finite" in _error(model, tmp_path, path)


def test_unreadable_stores_are_one_line_errors(model, tmp_path):
    assert "does not exist" in _error(model, tmp_path, tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    assert "not a readable .npz" in _error(model, tmp_path, tmp_path / "junk.npz")
    with zipfile.ZipFile(tmp_path / "pickle.npz", "w") as z:  # an object array: a pickle, never loaded
        with z.open("l0.weight.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "pickle" in _error(model, tmp_path, tmp_path / "pickle.npz")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:  # a header claiming 2**50 values: no allocation
        with z.open("l0.weight.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (2 ** 45, 32)})
    assert "needs" in _error(model, tmp_path, tmp_path / "huge.npz") and "memory" in _error(
        model, tmp_path, tmp_path / "huge.npz")
    _bad_npz(tmp_path / "meta.npz", **{"l0.weight": np.eye(32), "__nquant_calibration__": np.array(
        json.dumps({"kinds": {"l0.weight": "gradients"}}))})
    assert "kind='gradients'" in _error(model, tmp_path, tmp_path / "meta.npz")
    g = zarr.open_group(tmp_path / "bad.zarr", mode="w")
    g.create_array("l0.weight", data=np.ones((4, 32), np.uint8))
    assert "dtype=uint8" in _error(model, tmp_path, tmp_path / "bad.zarr")
    assert "recipe='bogus'" in _error(model, tmp_path, tmp_path / "bad.zarr", recipe="bogus")
    assert "scheme=None" in _error(model, tmp_path, tmp_path / "bad.zarr", scheme=None)


def test_unused_entries_are_reported(model, tmp_path):
    d, _, inputs = model
    r = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "q", U4, include="l0.*",
                                calibration={**inputs, "other.weight": _inputs(10, 4, 0)})
    assert r["total"]["calibrated"] == 1 and r["total"]["unused"] == ["l1.weight", "other.weight"]


def test_recipes_are_named():
    assert {"adaptive", "codebook3", "codebook4"} <= set(RECIPES)


# ----------------------------------------------------------------------------- CLI and workflow


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nquant", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300)


def test_cli_calibrated_model_in_one_command(model, tmp_path):
    d, tensors, _ = model
    r = run_cli("quantize", d / "m.safetensors", tmp_path / "q.zarr", "--calibration", d / "hess.npz",
                "--recipe", "codebook4", "--dequantized", tmp_path / "dq.safetensors", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["total"]["calibrated"] == 2 and report["total"]["uncalibrated"] == ["head.weight"]
    api = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "api", calibration=d / "hess.npz",
                                  recipe="codebook4")
    qs, qa = open_model(tmp_path / "q.zarr"), open_model(tmp_path / "api")
    for name in qa:
        np.testing.assert_array_equal(codes(qs[name]), codes(qa[name]))
    assert list(read_tensors(tmp_path / "dq.safetensors")) == list(tensors)
    r = run_cli("quantize", d / "m.safetensors", tmp_path / "u.zarr", "--calibration", d / "rows.zarr",
                "--scheme", "int4", "--act-order", "--include", "l1.*")
    assert r.returncode == 0, r.stderr
    assert "1 tensors calibrated, 0 rounded to nearest" in r.stdout and "1 calibration entries match no" in r.stdout
    r = run_cli("info", tmp_path / "q.zarr")
    assert r.returncode == 0 and "  recipe: codebook4 (calibrated rounding" in r.stdout
    assert "l0.weight: F32 (24, 32), 5.6667 bits/value, calibrated" in r.stdout  # codes, 24 absmax, 16 levels
    assert "head.weight: F32 (8, 16), 10.0000 bits/value, nearest (no calibration entry)" in r.stdout



def _assert_one_line_errors(cases, q):
    """Each ``(CLI args, message)`` of ``cases``, run in parallel processes, exits with status 2 and
    one line holding ``message``; none of them writes the output ``q``."""
    procs = [subprocess.Popen([sys.executable, "-m", "nquant", *map(str, args)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV) for args, _ in cases]
    for p, (_, message) in zip(procs, cases):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert not q.exists()

def test_cli_errors_are_one_line(model, tmp_path):
    d, _, _ = model
    np.savez(d / "bad.npz", **{"l0.weight": np.ones((3, 3), np.float32)})
    m, q = d / "m.safetensors", tmp_path / "q.zarr"
    cases = [
        (["quantize", m, q, "--calibration", d / "nope.npz"], f"calibration='{d}/nope.npz' does not exist"),
        (["quantize", m, q, "--calibration", d / "hess.npz", "--recipe", "codebook4", "--bits", "3"],
         "--bits: --recipe codebook4 chooses its own scheme"),
        (["quantize", m, q, "--calibration", d / "bad.npz"],
         "entry 'l0.weight' has shape (3, 3), but tensor 'l0.weight' has shape (24, 32)"),
        (["quantize", d / "hess.npz", q, "--recipe", "codebook4"], "--recipe: only for a .safetensors model"),
    ]
    _assert_one_line_errors(cases, q)


def test_workflow_calibrated_job(model, tmp_path):
    from nquant.interfaces import workflow as wf

    d, _, _ = model
    (tmp_path / "wf.toml").write_text(f"""
[workflow]
name = "calibrated"
output = "{tmp_path / 'out'}"
[sources.m]
path = "{d / 'm.safetensors'}"
[[jobs]]
name = "cb4"
source = "m"
calibration = "{d / 'hess.npz'}"
recipe = "codebook4"
[[jobs]]
name = "mixed"
source = "m"
calibration = "{d / 'hess.npz'}"
recipe = {{"l1.*" = "codebook5", "*" = "codebook3"}}
[[jobs]]
name = "ar4"
source = "m"
scheme = "int4"
calibration = "{d / 'rows.zarr'}"
act_order = true
""")
    spec = wf.load(tmp_path / "wf.toml")
    assert [wf.job_kind(spec, j) for j in spec["jobs"]] == ["calibrated"] * 3
    plan = {row["job"]: row for row in wf.plan(spec)}
    report = wf.run(spec, progress=False, echo=lambda *a: None)
    jobs = {j["job"]: j for j in report["jobs"]}
    assert jobs["cb4"]["kind"] == "calibrated" and jobs["cb4"]["calibrated"] == 2
    assert jobs["cb4"]["uncalibrated"] == ["head.weight"] and jobs["cb4"]["scheme"] == {"recipe": "codebook4"}
    assert jobs["mixed"]["recipe"] == {"l1.*": "codebook5", "*": "codebook3"}
    assert plan["cb4"]["bits_per_value"] > plan["mixed"]["bits_per_value"]
    for name in ("cb4", "ar4", "mixed"):
        assert jobs[name]["bits_per_value"] == pytest.approx(plan[name]["bits_per_value"])
    (tmp_path / "bad.toml").write_text((tmp_path / "wf.toml").read_text().replace(
        'recipe = "codebook4"', 'recipe = "codebook4"\nscheme = "nf4"'))
    with pytest.raises(wf.WorkflowError, match=r"jobs\[0\].scheme: recipe 'codebook4' chooses its own scheme"):
        wf.load(tmp_path / "bad.toml")


def test_process_scheduler_gives_the_same_codes(model, tmp_path):
    d, _, _ = model
    nq.quantize_safetensors(d / "m.safetensors", tmp_path / "t", calibration=d / "rows.zarr", recipe="codebook3")
    nq.quantize_safetensors(d / "m.safetensors", tmp_path / "p", calibration=d / "rows.zarr", recipe="codebook3",
                            scheduler="processes")
    qt, qp = open_model(tmp_path / "t"), open_model(tmp_path / "p")
    for name in qt:
        np.testing.assert_array_equal(codes(qt[name]), codes(qp[name]))


def test_recipe_per_tensor_by_glob(model, tmp_path):
    d, _, _ = model
    recipe = {"l1.*": "codebook5", "*": "codebook3"}
    r = nq.quantize_safetensors(d / "m.safetensors", tmp_path / "q", calibration=d / "hess.npz", recipe=recipe)
    qs = open_model(tmp_path / "q")
    assert [qs[n].scheme.bits for n in ("l0.weight", "l1.weight", "head.weight")] == [3, 5, 3]
    assert r["total"]["recipe"] == recipe
    with pytest.raises(SchemeError, match="tensor 'head.weight' matches no pattern"):
        nq.quantize_safetensors(d / "m.safetensors", tmp_path / "x", calibration=d / "hess.npz",
                                recipe={"l*": "codebook4"})
    with pytest.raises(SchemeError, match="scheme=None"):
        nq.quantize_safetensors(d / "m.safetensors", tmp_path / "x", calibration=d / "hess.npz",
                                recipe={"l1.*": "adaptive", "*": "codebook4"})
    r = run_cli("quantize", d / "m.safetensors", tmp_path / "c.zarr", "--calibration", d / "hess.npz",
                "--recipe", "codebook3", "--recipe-for", "l1.*=codebook5", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"]["recipe"] == recipe
    qc = open_model(tmp_path / "c.zarr")
    for name in qs:
        np.testing.assert_array_equal(codes(qs[name]), codes(qc[name]))


# ----------------------------------------------------------------------------- recipe "alloc"


def test_alloc_recipe_spends_the_budget_and_stores_what_it_counts(model, tmp_path):
    d, tensors, _ = model
    values = tensors["l0.weight"][0].size + tensors["l1.weight"][0].size
    chosen = {}
    for budget in (4.5, 7.0):
        report = nq.quantize_safetensors(d / "m.safetensors", tmp_path / f"a{budget}", calibration=d / "hess.npz",
                                         recipe="alloc", bits_per_value=budget, include="l*")
        qs = open_model(tmp_path / f"a{budget}")
        assert sorted(qs) == ["l0.weight", "l1.weight"]
        stored = sum(8 * q.nbytes for q in qs.values())
        assert stored <= budget * values
        for name, q in qs.items():
            assert report[name]["bits_per_value"] == pytest.approx(8 * q.nbytes / q.size, rel=1e-12)
            assert report[name]["bits"] in (3, 4, 5, 6) and report[name]["block_size"] is None
            assert q.scheme.double_quant and 2 ** report[name]["bits"] >= len(q.scheme.codebook)
        assert report["total"]["bits_per_value"] == pytest.approx(stored / values, rel=1e-12)
        assert report["total"]["allocation"] == {"bits_per_value": budget, "priced_by": "relative output error"}
        chosen[budget] = {n: report[n]["bits"] for n in qs}
    assert chosen[4.5] != chosen[7.0] and all(chosen[7.0][n] >= chosen[4.5][n] for n in chosen[4.5])
    with pytest.raises(InputError, match=r"^bits_per_value=1.0 is invalid: the smallest candidates already take "):
        nq.quantize_safetensors(d / "m.safetensors", tmp_path / "small", calibration=d / "hess.npz",
                                recipe="alloc", bits_per_value=1.0, include="l*")
    assert not (tmp_path / "small").exists()


def test_alloc_recipe_prices_by_the_stored_sensitivities(model, tmp_path):
    d, _, inputs = model
    for heavy, light in (("l0.weight", "l1.weight"), ("l1.weight", "l0.weight")):
        store = tmp_path / f"s-{heavy}.npz"
        write_calibration(store, inputs, sensitivity={heavy: 1e3, light: 1e-3})
        assert open_calibration(store).sensitivity(heavy) == 1e3
        report = nq.quantize_safetensors(d / "m.safetensors", tmp_path / f"q-{heavy}", calibration=store,
                                         recipe="alloc", bits_per_value=5.0, include="l*")
        assert report["total"]["allocation"]["priced_by"] == "sensitivity"
        assert report[heavy]["bits"] > report[light]["bits"]
    write_calibration(tmp_path / "s.zarr", inputs, kind="inputs", sensitivity={"l0.weight": 2.5})
    assert open_calibration(tmp_path / "s.zarr").sensitivity("l0.weight") == 2.5
    assert open_calibration(tmp_path / "s.zarr").sensitivity("l1.weight") is None
    with pytest.raises(InputError, match=r"^sensitivity\['l0.weight'\]=-1.0 is invalid: expected a finite number"):
        write_calibration(tmp_path / "bad.npz", inputs, sensitivity={"l0.weight": -1.0})
    with pytest.raises(InputError, match=r"^sensitivity\['nope'\] is invalid: no entry of that name"):
        write_calibration(tmp_path / "bad.npz", inputs, sensitivity={"nope": 1.0})
    with pytest.raises(SchemeError, match="recipe 'alloc' is invalid in a {glob: recipe} mapping"):
        nq.quantize_safetensors(d / "m.safetensors", tmp_path / "m", calibration=d / "hess.npz",
                                recipe={"l0.*": "alloc", "*": "codebook4"}, bits_per_value=4.0)
    with pytest.raises(SchemeError, match=r"^bits_per_value=None is invalid: recipe='alloc' needs a budget"):
        nq.quantize_safetensors(d / "m.safetensors", tmp_path / "m", calibration=d / "hess.npz", recipe="alloc")


def test_cli_alloc_recipe_in_one_command(model, tmp_path):
    d, tensors, _ = model
    r = run_cli("quantize", d / "m.safetensors", tmp_path / "q.zarr", "--calibration", d / "hess.npz",
                "--recipe", "alloc", "--bits-per-value", "4.5", "--dequantized", tmp_path / "dq.safetensors")
    assert r.returncode == 0, r.stderr
    qs = open_model(tmp_path / "q.zarr")
    assert "budget 4.5 bits/value, priced by relative output error:" in r.stdout
    for name in ("l0.weight", "l1.weight"):
        bits = model_meta(tmp_path / "q.zarr")["tensors"][name]["bits"]
        assert f"  {name}: {bits} bits, absmax per row, {qs[name].bits_per_value:.3f} bits/value" in r.stdout
    assert list(read_tensors(tmp_path / "dq.safetensors")) == list(tensors)
    m, q = d / "m.safetensors", tmp_path / "e.zarr"
    cases = [
        (["quantize", m, q, "--calibration", d / "hess.npz", "--recipe", "alloc"],
         "--recipe alloc needs --bits-per-value"),
        (["quantize", m, q, "--calibration", d / "hess.npz", "--recipe", "codebook4", "--bits-per-value", "4"],
         "--bits-per-value 4.0: only with --recipe alloc"),
        (["quantize", m, q, "--calibration", d / "hess.npz", "--recipe", "alloc", "--bits-per-value", "-1"],
         "--bits-per-value -1.0 is invalid: expected a number > 0"),
        (["quantize", m, q, "--calibration", d / "hess.npz", "--recipe", "alloc", "--bits-per-value", "1"],
         "bits_per_value=1.0 is invalid: the smallest candidates already take"),
    ]
    _assert_one_line_errors(cases, q)
