"""Row minima by SMAWK and by divide and conquer (``nquant.kernels.smawk``) against every entry
evaluated (``tests/reference/smawk.py``), on the ASQ interval cost of ``tests/reference/asq_dp.py``."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nquant.kernels import asq_dp, smawk
from tests.reference import asq_dp as asq_dp_ref
from tests.reference import smawk as smawk_ref


@st.composite
def problems(draw):
    """Distinct ascending values with weights, and a previous DP layer ``base`` (n,)."""
    n = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vals = np.unique(rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4))
    wts = rng.integers(1, 5, vals.size).astype(np.float64) if draw(st.booleans()) else np.ones(vals.size)
    base = rng.uniform(0, draw(st.sampled_from([0.0, 1.0, 100.0])), vals.size)
    return vals, wts, base


@settings(max_examples=30, deadline=None)
@given(problems())
def test_smawk_row_minima_match_every_entry(problem):
    vals, wts, base = problem
    n = vals.size
    cost = np.zeros((n, n))
    for k in range(n):
        for j in range(k + 1, n):
            cost[k, j] = asq_dp_ref.interval_cost(vals, wts, k, j)
    want, _ = smawk_ref.row_minima(base, cost)
    tab, _ = asq_dp.build_table(vals, wts)
    aux = np.empty(0, np.uint32)
    # the kernels sum prefix tables: equal to the direct sums up to their rounding errors
    tol = 1e-9 * (np.abs(want) + np.abs(base).max() + cost.max() + 1e-300)
    for algo in ("smawk", "dc"):
        fout = np.empty(n)
        kout = np.empty(n, np.int64)
        if algo == "smawk":
            smawk.row_minima(smawk.ASQ, tab, aux, base, n, *smawk.workspace(n), fout, kout)
        else:
            smawk.row_minima_dc(smawk.ASQ, tab, aux, base, n, np.zeros(n, np.int64), fout, kout)
        np.testing.assert_array_less(np.abs(fout - want), tol + 1e-300, err_msg=algo)
        assert ((kout >= 0) & (kout <= np.arange(n))).all(), algo
        # the argmin reaches the minimum (near-ties may pick another k than the first one)
        reached = base[kout] + cost[kout, np.arange(n)]
        np.testing.assert_array_less(np.abs(reached - want), tol + 1e-300, err_msg=algo)
