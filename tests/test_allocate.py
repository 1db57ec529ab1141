"""Bit allocation over tensors (nquant.allocate)."""

import itertools

import numpy as np
import pytest

from nquant.allocate import allocate, scaled_losses
from nquant.errors import InputError


def brute_force(options, budget):
    """Smallest summed loss within ``budget`` over every combination (small problems)."""
    names = list(options)
    best = np.inf
    for pick in itertools.product(*(range(len(options[n])) for n in names)):
        size = sum(options[n][k][0] for n, k in zip(names, pick))
        if size <= budget:
            best = min(best, sum(options[n][k][1] for n, k in zip(names, pick)))
    return best


def totals(options, choice):
    return (sum(options[n][k][0] for n, k in choice.items()), sum(options[n][k][1] for n, k in choice.items()))


@pytest.mark.parametrize("seed", range(8))
def test_within_budget_and_optimal_up_to_rounding(seed):
    rng = np.random.default_rng(seed)
    options = {}
    for t in range(int(rng.integers(1, 6))):
        sizes = np.sort(rng.uniform(1, 10, size=int(rng.integers(1, 4))))
        losses = np.sort(rng.uniform(0, 5, size=sizes.size))[::-1]   # more bits, less loss
        options[f"t{t}"] = [(float(a), float(b)) for a, b in zip(sizes, losses)]
    smallest = sum(o[0][0] for o in options.values())
    budget = smallest + float(rng.uniform(0, 15))
    for resolution in (64, 4096):
        choice = allocate(options, budget, resolution=resolution)
        assert list(choice) == list(options)
        size, loss = totals(options, choice)
        assert size <= budget
        assert loss >= brute_force(options, budget) - 1e-12
        # rounding sizes up to budget / resolution loses at most one unit per tensor
        assert loss <= brute_force(options, budget - len(options) * budget / resolution) + 1e-12


def test_known_answer_and_ties():
    options = {"a": [(4, 10.0), (5, 2.0), (6, 0.5)], "b": [(4, 1.0), (5, 0.9)], "c": [(4, 3.0), (5, 0.1)]}
    # 14 units: one upgrade; "a" gains the most (8.0), then "c" (2.9), then "a" again (1.5)
    assert allocate(options, 13) == {"a": 1, "b": 0, "c": 0}
    assert allocate(options, 14) == {"a": 1, "b": 0, "c": 1}
    assert allocate(options, 15) == {"a": 2, "b": 0, "c": 1}
    assert allocate(options, 100) == {"a": 2, "b": 1, "c": 1}
    assert allocate(options, 12) == {"a": 0, "b": 0, "c": 0}       # the smallest exactly fit
    # equal losses: the smaller size, then the earlier candidate
    assert allocate({"x": [(5, 1.0), (3, 1.0), (3, 1.0)]}, 10) == {"x": 1}
    assert allocate({"x": [(0, 1.0), (1, 0.0)]}, 0) == {"x": 0}


def test_bad_inputs_give_one_line_errors():
    with pytest.raises(InputError, match="budget=5.0 is invalid: the smallest candidates already take 8.0"):
        allocate({"a": [(4, 1.0)], "b": [(4, 1.0), (1e9, 0.0)]}, 5.0)
    for options, match in [({}, "non-empty mapping"), ([("a", 1)], "non-empty mapping"),
                           ({"a": []}, "options\\['a'\\] is invalid"),
                           ({"a": [(1, 2, 3)]}, "options\\['a'\\]\\[0\\]=\\(1, 2, 3\\) is invalid"),
                           ({"a": [(-1, 0.0)]}, "size=-1.0 is invalid"),
                           ({"a": [(1, np.nan)]}, "loss=nan is invalid")]:
        with pytest.raises(InputError, match=match):
            allocate(options, 10)
    for budget in (np.inf, "10", None):
        with pytest.raises(InputError, match="budget="):
            allocate({"a": [(1, 0.0)]}, budget)
    with pytest.raises(InputError, match="resolution=0 is invalid"):
        allocate({"a": [(1, 0.0)]}, 1, resolution=0)


def test_scaled_losses():
    got = scaled_losses({"a": [8.0, 2.0, 0.5], "z": [0.0, 0.0]}, {"a": 0.1, "z": 0.3}, {"a": 1, "z": 0})
    np.testing.assert_allclose(got["a"], [0.4, 0.1, 0.025])
    np.testing.assert_array_equal(got["z"], [0.0, 0.0])
    with pytest.raises(InputError, match="reference\\['a'\\]=3 is invalid"):
        scaled_losses({"a": [1.0]}, {"a": 0.1}, {"a": 3})
    with pytest.raises(InputError, match="lack 'a'"):
        scaled_losses({"a": [1.0]}, {}, {})
    with pytest.raises(InputError, match="objectives\\['a'\\] is invalid"):
        scaled_losses({"a": [-1.0]}, {"a": 0.1}, {"a": 0})


def test_quantize_allocated_spends_the_budget_where_the_loss_is():
    from nquant.adaptive import hessian
    from nquant.allocate import quantize_allocated

    rng = np.random.default_rng(3)
    X = rng.standard_normal((64, 256))
    weights = {f"w{i}": rng.standard_normal((8, 64)).astype(np.float32) for i in range(4)}
    cal = {"w0": X, "w1": X, "w2": hessian(X), "w3": [X[:, :100], X[:, 100:]]}
    calls = []

    def measure(name, W_hat):       # w1 matters 1000 times more than the others
        calls.append(name)
        assert W_hat.shape == (8, 64)
        return float(np.sum((weights[name] - W_hat) ** 2)) * (1000.0 if name == "w1" else 1.0)

    # 2, 3, 4 bits cost 2.5, 3.5, 4.5 bits per value (a float32 absmax per row of 64)
    qs = quantize_allocated(weights, cal, 3.9, candidates=(2, 3, 4), measure=measure, damp=0.02)
    assert sorted(calls) == sorted(weights)
    stored = sum(8 * q.nbytes for q in qs.values())
    assert stored <= 3.9 * 4 * 512
    assert qs["w1"].info["allocate"]["chosen"] == [4, None] and qs["w1"].scheme.bits == 4
    assert max(q.scheme.bits for n, q in qs.items() if n != "w1") == 3
    info = qs["w0"].info["allocate"]
    assert info["candidates"] == [[2, None], [3, None], [4, None]]
    assert info["stored_bits"] == [512 * b + 8 * 32 for b in (2, 3, 4)]
    assert info["losses"][0] > info["losses"][1] > info["losses"][2] > 0
    # without a measure every layer's relative output error counts alike
    qs = quantize_allocated(weights, cal, 4.5)
    assert {q.scheme.bits for q in qs.values()} == {4}
    # blocks of 16 columns: 4 absmax per row, 5 bits per value in all; finer scales, smaller losses
    qs = quantize_allocated(weights, cal, 5.0, candidates=[(3, 16), 2, (3, None)])
    assert qs["w0"].info["allocate"]["candidates"] == [[2, None], [3, None], [3, 16]]
    assert {q.scheme.block_size for q in qs.values()} == {16}
    assert sum(8 * q.nbytes for q in qs.values()) == 5 * 4 * 512
    with pytest.raises(InputError, match="calibration lacks 'w1'"):
        quantize_allocated(weights, {"w0": X}, 4)
    for bad in ((), "4", [(4, 16, 1)], [4.0], [(4, True)]):
        with pytest.raises(InputError, match="candidates=.* is invalid"):
            quantize_allocated(weights, cal, 4, candidates=bad)
    with pytest.raises(InputError, match=r"^bits_per_value=3.0 is invalid: the smallest candidates already take "
                                         r"3.5000 bits per value$"):
        quantize_allocated(weights, cal, 3.0, candidates=(3, 4))
    # sensitivities instead of a measure: losses are sensitivity * objective
    sens = {"w0": 1.0, "w1": 1e4, "w2": 1.0, "w3": 1.0}
    qs = quantize_allocated(weights, cal, 3.9, candidates=(2, 3, 4), sensitivity=sens, damp=0.02)
    assert qs["w1"].scheme.bits == 4 and max(q.scheme.bits for n, q in qs.items() if n != "w1") == 3
    info = qs["w1"].info["allocate"]
    assert info["losses"][2] == pytest.approx(1e4 * qs["w1"].info["adaptive_round"]["objective"])
    with pytest.raises(InputError, match="^sensitivity lacks 'w3'"):
        quantize_allocated(weights, cal, 3.9, sensitivity={"w0": 1.0, "w1": 1.0, "w2": 1.0})
    with pytest.raises(InputError, match=r"^sensitivity\['w0'\]=-1.0 is invalid"):
        quantize_allocated(weights, cal, 3.9, sensitivity={**sens, "w0": -1.0})
    with pytest.raises(InputError, match="^measure and sensitivity are exclusive"):
        quantize_allocated(weights, cal, 3.9, sensitivity=sens, measure=measure)
