"""Workflow files: every example in workflows/ on small data, schema validation, reports, levels."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

import nquant as nq
from nquant.interfaces import report as report_mod
from nquant.interfaces import workflow as wf
from nquant.errors import InputError, SchemeError
from nquant.interfaces.samples import level_view

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"

# small data for each example (demo.toml runs in test_cli.py, through the console script)
SMALL = {
    "zarr_uniform.toml": {"rows": 128, "cols": 256, "chunk_rows": 32},
    "model_nf4.toml": {"hidden": 64, "ffn": 128, "layers": 1},
    "embeddings_pq.toml": {"rows": 2400, "dim": 32, "chunk_rows": 800},
    "gradients_quiver.toml": {"n": 1 << 16, "chunk": 1 << 14},
}


def test_every_example_workflow_is_tested_here_or_in_cli_tests():
    assert {p.name for p in WORKFLOWS.glob("*.toml")} == set(SMALL) | {"demo.toml"}


def _run(name, out, **extra):
    spec = wf.load(WORKFLOWS / name, {"out": str(out), **SMALL[name], **extra})
    return wf.run(spec, progress=False, echo=lambda s: None)


def _jobs(report):
    return {j["job"]: j for j in report["jobs"]}


def _check_report(report, out):
    paths = report["paths"]
    html = Path(paths["html"]).read_text()
    names = [j["job"] for j in report["jobs"]]
    # one embedded figure per job, plus error vs bits; no external images
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', html)) == len(names) + 1
    assert "<img" in html and 'src="' + str(out) not in html
    for n in names:
        assert f"<h2>{n}</h2>" in html
        png = Path(out) / f"{n}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = Path(paths["markdown"]).read_text()
    assert all(f"![{n}]({n}.png)" in md for n in names) and "error_vs_bits.png" in md
    data = json.loads(Path(paths["json"]).read_text())
    assert [j["job"] for j in data["jobs"]] == names
    for j in data["jobs"]:
        for key in ("bits_per_value", "rmse", "max_abs", "sqnr_db", "throughput_mb_s", "fraction_clipped",
                    "compile_seconds"):
            assert key in j, (j["job"], key)
        assert j["compile_seconds"] >= 0 and j["throughput_mb_s"] > 0
    # the throughput column says what it measures, in every report
    assert "MB/s (compile excluded)" in md and "MB/s (compile excluded)" in html


def test_zarr_uniform_workflow(tmp_path):
    report = _run("zarr_uniform.toml", tmp_path)
    _check_report(report, tmp_path)
    j = _jobs(report)
    x = np.asarray(nq.open(str(tmp_path / "weights-int8.zarr")).shape)
    assert list(x) == [128, 256]
    # per channel beats per tensor at (about) the same bits; fewer bits, more error
    assert j["weights-int8-channel"]["sqnr_db"] > j["weights-int8"]["sqnr_db"] + 6
    assert j["weights-int8"]["sqnr_db"] > j["weights-int4-block64"]["sqnr_db"] > j["weights-int2-mse"]["sqnr_db"]
    # the percentile range clips the log-normal tail; min/max never clips
    assert j["activations-uint4-percentile"]["fraction_clipped"] > 0
    assert j["activations-uint8"]["fraction_clipped"] == 0
    # the verify step recomputes what the store recorded while writing
    stored = nq.open(str(tmp_path / "weights-int4-block64.zarr")).info["metrics"]
    assert j["weights-int4-block64"]["rmse"] == pytest.approx(stored["rmse"], rel=1e-9)
    # bytes on disk: the stored ratio against float32, the codes' lossless stage
    from nquant.store import storage_summary

    summary = storage_summary(str(tmp_path / "weights-int8.zarr"))
    assert j["weights-int8"]["ratio_float32"] == summary["ratio_float32"] > 1
    assert (j["weights-int8"]["compression"], j["weights-int4-block64"]["compression"]) == ("adaptive-zstd", "zstd")


def test_model_nf4_workflow(tmp_path):
    report = _run("model_nf4.toml", tmp_path)
    _check_report(report, tmp_path)
    j = _jobs(report)
    from nquant.safetensors_io import read_tensors

    tensors = read_tensors(str(tmp_path / "model.safetensors"))
    assert {t for t, (a, tag) in tensors.items()} == {"layers.0.attention.weight", "layers.0.mlp.up.weight",
                                                      "layers.0.mlp.down.weight", "layers.0.norm.weight"}
    assert all(tag == "F16" for _, tag in tensors.values())
    dq, nf4 = j["nf4-double-quant"], j["nf4"]
    assert dq["tensors"] == 3 and set(dq["per_tensor"]) == {"layers.0.attention.weight", "layers.0.mlp.up.weight",
                                                            "layers.0.mlp.down.weight"}
    # QLoRA: 4.5 bits/value for NF4 with float32 absmax, about 4.127 with double quantization
    assert nf4["bits_per_value"] == pytest.approx(4.5)
    assert 4.12 < dq["bits_per_value"] < 4.14
    assert abs(dq["sqnr_db"] - nf4["sqnr_db"]) < 0.5
    # the merged error equals the error of the dequantized tensors, recomputed here
    qs = nq.models.open_model(str(tmp_path / "nf4.zarr"))
    se = sum(float(((np.asarray(nq.dequantize(qs[n]), np.float64) - np.asarray(tensors[n][0], np.float64)) ** 2)
                   .sum()) for n in qs)
    n = sum(int(np.prod(q.shape)) for q in qs.values())
    assert nf4["rmse"] == pytest.approx((se / n) ** 0.5, rel=1e-6)


def test_embeddings_pq_workflow(tmp_path):
    report = _run("embeddings_pq.toml", tmp_path)
    _check_report(report, tmp_path)
    j = _jobs(report)
    p16, p32 = j["pq-16x8"], j["pq-32x8"]
    assert p32["rmse"] < p16["rmse"]
    assert 0.5 <= p16["recall_at_10"] <= p32["recall_at_10"] <= 1.0
    assert p16["queries"] == 200 and p16["distortion"] == pytest.approx(p16["mse"] * 32)
    # bits: M bytes per 32-d vector plus the codebooks (256 x 32 float32 values)
    assert p16["bits_per_value"] == pytest.approx(16 * 8 / 32 + 256 * 32 * 32 / (2400 * 32))
    import zarr

    g = zarr.open_group(str(tmp_path / "pq-16x8.zarr"), mode="r")
    assert g["codes"].shape == (2400, 16) and g["codebooks"].shape == (16, 256, 2)


def test_gradients_quiver_workflow(tmp_path):
    report = _run("gradients_quiver.toml", tmp_path)
    _check_report(report, tmp_path)
    j = _jobs(report)
    # optimal levels for unbiased rounding beat the uniform grid at the same bits, by far on heavy tails
    assert j["asq4"]["rmse"] < 0.5 * j["uniform4-stochastic"]["rmse"]
    assert j["asq2"]["rmse"] < j["uniform2-stochastic"]["rmse"]
    assert j["asq4"]["rmse"] < j["asq3"]["rmse"] < j["asq2"]["rmse"]
    n = SMALL["gradients_quiver.toml"]["n"]
    for v in j.values():  # unbiased rounding: the mean error is within 5 standard errors of 0
        assert abs(v["bias"]) < 5 * v["rmse"] / n ** 0.5, v["job"]
    assert (tmp_path / "gradients.npy").exists()


# ----------------------------------------------------------------------------- validation


def _write(tmp_path, text):
    p = tmp_path / "wf.toml"
    p.write_text(text)
    return p


BASE = """
[workflow]
name = "t"
output = "{out}"
[sources.w]
path = "{out}/w.zarr"
generate = {{ kind = "gaussian", shape = [64, 16], chunks = [16, 16] }}
[sources.e]
path = "{out}/e.npy"
generate = {{ kind = "embeddings", shape = [64, 16] }}
[[jobs]]
name = "a"
source = "w"
scheme = "int8"
"""


@pytest.mark.parametrize("extra, where", [
    ('[[jobs]]\nname = "b"\nsource = "w"\nsheme = "int8"\n', r"jobs\[1\]\.sheme: unknown key"),
    ('[[jobs]]\nname = "b"\nsource = "w"\nscheme = "int9"\n', r"jobs\[1\]\.scheme: scheme='int9'"),
    ('[[jobs]]\nname = "b"\nsource = "w"\nscheme = "int8"\noverrides = { bits = 17 }\n', r"jobs\[1\]\.scheme: .*bits=17"),
    ('[[jobs]]\nname = "b"\nsource = "x"\nscheme = "int8"\n', r"jobs\[1\]\.source: unknown source 'x'"),
    ('[[jobs]]\nname = "b"\nsource = "e"\nscheme = { type = "pq", M = 4, foo = 1 }\n',
     r"jobs\[1\]\.scheme\.foo: unknown field"),
    ('[[jobs]]\nname = "b"\nsource = "e"\nscheme = { type = "pq", M = 4, nbits = 3 }\n',
     r"jobs\[1\]\.scheme\.nbits=3"),
    ('[[jobs]]\nname = "b"\nsource = "w"\nscheme = "int8"\nqueries = 5\n', r"jobs\[1\]\.queries: not a key of array"),
    ('[[jobs]]\nname = "a"\nsource = "w"\nscheme = "int8"\n', r"jobs\[1\]\.name: duplicate"),
    ('[cluster]\nscheduler = "gpu"\n', r"cluster\.scheduler: 'gpu'"),
    ('[cluster]\nworkers = "two"\n', r"cluster\.workers: expected int"),
    ('[sources.z]\npath = "z.zarr"\ngenerate = { kind = "noise", shape = [4] }\n', r"sources\.z\.generate\.kind: 'noise'"),
    ('[sources.z]\npath = "z.zarr"\ngenerate = { shape = [4, 0] }\n', r"sources\.z\.generate\.shape\[1\]: 0"),
    ('[sources.z]\npath = "z.zarr"\ngenerate = { kind = "model", shape = [4, 4] }\n', r"sources\.z\.generate\.kind: 'model'"),
    ('[sources.z]\npath = "z.zarr"\ntensor = "w"\n', r"sources\.z\.tensor: only a \.safetensors"),
    ('[reports]\nhtml = true\n', r"^reports: unknown key"),
])
def test_bad_workflow_names_the_key_path(tmp_path, extra, where):
    p = _write(tmp_path, BASE.format(out=tmp_path / "o") + extra)
    with pytest.raises(wf.WorkflowError, match=where):
        wf.load(p)
    assert not (tmp_path / "o").exists()  # nothing ran


def test_variables_refer_to_variables_and_unknown_overrides_fail(tmp_path):
    text = BASE.format(out="${out}") + '[vars]\nroot = "r"\nout = "${root}/sub"\n'
    spec = wf.load(_write(tmp_path, text), {"root": str(tmp_path)})
    assert spec["sources"]["w"]["path"] == f"{tmp_path}/sub/w.zarr"
    with pytest.raises(wf.WorkflowError, match="--set nope: not a variable"):
        wf.load(tmp_path / "wf.toml", {"nope": 1})


def test_plan_describes_without_computing(tmp_path):
    spec = wf.load(_write(tmp_path, BASE.format(out=tmp_path / "o")))
    (row,) = wf.plan(spec)
    assert row["shape"] == [64, 16] and row["chunks"] == [16, 16] and row["tasks"] == 4
    assert row["bytes_in"] == 64 * 16 * 4 and row["bits_per_value"] == pytest.approx(8 + (32 + 8) / (64 * 16))  # scale, 8-bit zero point
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- reports and levels


def test_report_without_matplotlib_says_so(tmp_path, monkeypatch):
    from nquant.interfaces import plots

    monkeypatch.setattr(plots, "available", lambda: False)
    rep = {"workflow": "w", "fingerprint": "f", "nquant": nq.__version__,
           "jobs": [{"job": "j", "source": "s", "scheme": {"type": "uniform", "bits": 4}, "shape": [4],
                     "bits_per_value": 4.0, "rmse": 0.1, "max_abs": 0.2, "sqnr_db": 20.0, "bias": 0.0,
                     "fraction_clipped": None, "throughput_mb_s": 1.0}]}
    paths = report_mod.write_report(rep, str(tmp_path))
    html = Path(paths["html"]).read_text()
    import html as html_mod

    assert html_mod.escape(report_mod.NO_PLOTS) in html and "<img" not in html
    assert report_mod.NO_PLOTS in Path(paths["markdown"]).read_text()
    assert "figures" not in paths and not list(tmp_path.glob("*.png"))
    assert "<td>4.000</td>" in html and "<td>n/a</td>" in html


def test_level_view_uniform_per_tensor_counts_clipped_values():
    x = np.linspace(-2, 2, 4001)
    scheme = nq.Uniform(bits=4, range=(-1.0, 1.0), zero_point="float")  # levels exactly -1..1
    q = nq.quantize(x, scheme)
    x_hat = nq.dequantize(q)
    v = level_view(scheme, q.side, x, x_hat)
    step = 2 / 15
    assert v["xlabel"] == "value" and len(v["levels"]) == 16
    np.testing.assert_allclose(v["levels"][[0, -1]], [-1, 1], atol=1e-6)
    expected = np.mean((x < -1 - step / 2) | (x > 1 + step / 2))
    assert v["clipped"] == pytest.approx(expected)


def test_level_view_per_channel_is_in_quantization_steps():
    x = np.random.default_rng(0).standard_normal((8, 50)) * np.arange(1, 9)[:, None]
    scheme = nq.Uniform(bits=3, axis=0)
    q = nq.quantize(x, scheme)
    v = level_view(scheme, q.side, x, nq.dequantize(q))
    np.testing.assert_array_equal(v["levels"], np.arange(8))
    assert v["clipped"] == 0 and v["values"].min() >= -0.5 and v["values"].max() <= 7.5


def test_level_view_nf4_blocks_are_normalised_to_the_codebook():
    x = np.random.default_rng(1).standard_normal(640).astype(np.float32)
    scheme = nq.NF4()
    q = nq.quantize(x, scheme)
    v = level_view(scheme, q.side, x, nq.dequantize(q))
    np.testing.assert_allclose(v["levels"], nq.normal_float(4), atol=1e-7)
    assert np.abs(v["values"]).max() == pytest.approx(1.0) and v["clipped"] == 0


def test_fit_levels_matches_the_solvers():
    from nquant.interfaces.levels import fit_levels, levels_scheme

    x = np.random.default_rng(2).standard_t(3, 5000)
    km, fig = fit_levels(x, 8, "kmeans")
    np.testing.assert_allclose(km, nq.optimal1d.kmeans1d(x, 8).centers)
    assert fig["mse"] == pytest.approx(nq.optimal1d.kmeans1d(x, 8).sse / x.size)
    qv, _ = fit_levels(x, 8, "quiver")
    np.testing.assert_allclose(qv, nq.asq.solve(x, 8).levels)
    assert levels_scheme(qv, "quiver").rounding == "stochastic" and levels_scheme(km, "kmeans").rounding == "nearest"
    with pytest.raises(SchemeError, match="levels=1"):
        fit_levels(x, 1)
    with pytest.raises(InputError, match="NaN"):
        fit_levels(np.array([1.0, np.nan, 2.0]), 2)


def test_load_values_samples_zarr_and_safetensors(tmp_path):
    import zarr

    from nquant.interfaces.levels import load_values
    from nquant.safetensors_io import write_tensors

    x = np.random.default_rng(3).standard_normal((40, 30)).astype(np.float32)
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=x.shape, chunks=(8, 30), dtype="float32")
    z[...] = x
    np.testing.assert_array_equal(load_values(str(tmp_path / "x.zarr"), max_values=None), x.reshape(-1))
    idx = np.sort(np.random.default_rng(5).choice(x.size, size=100, replace=False))
    np.testing.assert_array_equal(load_values(str(tmp_path / "x.zarr"), max_values=100, seed=5), x.reshape(-1)[idx])
    write_tensors(tmp_path / "m.safetensors", {"a.weight": (x, "F32"), "a.bias": (x[0], "F32"),
                                               "b.weight": (2 * x, "F32")})
    both = load_values(str(tmp_path / "m.safetensors"))  # every matrix, in file order
    np.testing.assert_array_equal(both, np.concatenate([x.reshape(-1), 2 * x.reshape(-1)]))
    np.testing.assert_array_equal(load_values(str(tmp_path / "m.safetensors"), tensor="a.bias"), x[0])
    with pytest.raises(InputError, match="tensor='c.\\*'"):
        load_values(str(tmp_path / "m.safetensors"), tensor="c.*")
