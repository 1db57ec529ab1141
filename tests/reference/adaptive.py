"""Slow, obvious NumPy reference of adaptive rounding (``nquant.adaptive.adaptive_round``).

The same procedure written plainly, for small problems:

- ``H = X X^T``;
- the clipping search: every group tries each ``alpha`` of the grid, then the refinement
  ``alpha_best +- k * step``; the objective of a group is the sum over its elements of
  ``e_ij * sum_k S[i, j, k] H[j, k] e_ik`` with the segment mask ``S`` written out (whole
  row, the element's column block, or the element itself);
- GPTQ *without* lazy batching: one column at a time, the whole trailing part updated with
  an outer product, ``U`` from ``np.linalg.inv`` of the damped Hessian (not through its
  Cholesky factor), the nearest code by ``rint`` (affine) or by brute-force nearest level
  (codebook, ties to the lower level);
- each row keeps the best of the candidates (``gptq``, ``nearest_clipped``, ``nearest``) on
  ``e H e^T``, computed as ``||e X||^2`` when ``X`` is given.

Encoding with given parameters reuses ``nquant.families.uniform.encode`` / ``decode`` (tested on
their own), and parameters come from ``nquant.families.uniform.finalize`` of the scaled ranges.
"""

import numpy as np

from nquant.families import blockwise, codebook, uniform
from nquant.schemes import Blockwise, Codebook, Uniform
from tests.reference import uniform as uniform_ref
from tests.reference.gptq import gptq, groups_of

GRID = tuple(round(1.0 - 0.05 * k, 2) for k in range(11))
REFINE = 4


def segment_mask(scheme, shape):
    """``S[j, k]``: whether column ``k`` counts in element ``(., j)``'s search objective."""
    out, n = shape
    if scheme.block_size is not None:
        B = scheme.block_size
        if B % n == 0 or (out == 1 and B >= n):
            return np.ones((n, n), bool)
        if n % B == 0:
            c = np.arange(n) // B
            return c[:, None] == c[None, :]
        return np.eye(n, dtype=bool)
    if scheme.axis is None or scheme.axis % 2 == 0 or out == 1:
        return np.ones((n, n), bool)
    return np.eye(n, dtype=bool)


def search(scheme, W, H, grid=GRID, refine=REFINE):
    """Per-group clipping search: returns params and alpha (G,)."""
    base = scheme.replace(range="minmax")
    Wc = np.asarray(W, dtype=np.float64 if W.dtype == np.float64 else np.float32)
    st = uniform.partial(base, Wc)
    g = groups_of(scheme, W.shape)
    G = len(st["min"])
    HS = H * segment_mask(scheme, W.shape)
    best = np.full(G, np.inf)
    alpha = np.ones(G)
    params = None

    def objective(a):
        p = uniform.finalize(base, {"min": st["min"] * a, "max": st["max"] * a, "n_nan": 0})
        W_hat = uniform.decode(base, p, uniform.encode(base, p, Wc), dtype=W.dtype)
        E = W.astype(np.float64) - W_hat.astype(np.float64)
        c = E * (E @ HS)
        obj = np.zeros(G)
        for gg in range(G):
            obj[gg] = c[g == gg].sum()
        return p, obj

    def consider(a, first=False):
        nonlocal params
        p, obj = objective(a)
        for gg in range(G):
            if first or obj[gg] < best[gg]:
                best[gg] = obj[gg]
                alpha[gg] = a[gg]
                if params is None:
                    params = {k: v.copy() for k, v in p.items()}
                for k in params:
                    params[k][gg] = p[k][gg]

    for i, a in enumerate(grid):
        consider(np.full(G, a), first=i == 0)
    vals = np.unique(np.asarray(grid, dtype=np.float64))
    gap = np.diff(vals).min() if vals.size > 1 else vals[0] / 2
    step = gap / (refine + 1)
    centre = alpha.copy()
    for k in range(1, refine + 1):
        for sign in (-1.0, 1.0):
            consider(np.clip(centre + sign * k * step, step, 1.0))
    return params, alpha


def adaptive_round(scheme, W, X, damp=0.01, act_order=False, clip_search=True):
    """Reference result: ``(codes uint8 (out, in), params, per-row objective, labels)``; the
    parameters per group (int32 zero points), stored at the end as the scheme says."""
    stored_as = scheme
    if isinstance(scheme, Uniform):
        scheme = scheme.replace(zero_point_storage="int32")
    fam = codebook if isinstance(scheme, Codebook) else blockwise if isinstance(scheme, Blockwise) else uniform
    X = np.asarray(X, dtype=np.float64)
    H = X @ X.T
    Wc = np.asarray(W, dtype=np.float64 if W.dtype == np.float64 else np.float32)
    fit = fam.fit(scheme, Wc)
    searched = clip_search and isinstance(scheme, Uniform)
    params = search(scheme, W, H)[0] if searched else fit
    cands = [("gptq", params, gptq(scheme, params, W, H, damp, act_order))]
    if searched:
        cands.append(("nearest_clipped", params, fam.encode(scheme, params, Wc)))
    cands.append(("nearest", fit, fam.encode(scheme, fit, Wc)))

    def row_obj(p, c):
        E = W.astype(np.float64) - fam.decode(scheme, p, c, dtype=W.dtype).astype(np.float64)
        return np.sum((E @ X) ** 2, axis=1)

    objs = [row_obj(p, c) for _, p, c in cands]
    out = W.shape[0]
    g = groups_of(scheme, W.shape)
    separable = all(len(np.unique(np.nonzero(g == gg)[0])) == 1 for gg in np.unique(g)) \
        or not isinstance(scheme, Uniform)
    if separable or not searched:
        allowed = [list(range(len(cands)))]
    else:  # rows choose among candidates with the same parameters; the better set wins
        allowed = [[0, 1], [2]]
    best = None
    for members in allowed:
        which = []
        for i in range(out):
            k = members[0]
            for m in members[1:]:
                if objs[m][i] < objs[k][i]:
                    k = m
            which.append(k)
        total = sum(objs[k][i] for i, k in enumerate(which))
        if best is None or total < best[0]:
            best = (total, which)
    which = best[1]
    codes = np.stack([cands[k][2][i] for i, k in enumerate(which)])
    ps = {k: v.copy() for k, v in cands[which[0]][1].items()}
    if isinstance(scheme, Uniform):
        for gg in range(len(ps["scale"])):
            i = int(np.nonzero(g == gg)[0][0])
            for k in ps:
                ps[k][gg] = cands[which[i]][1][k][gg]
        ps = uniform_ref.stored(stored_as, ps)
    ps = {k: v for k, v in ps.items() if not k.startswith("_")}  # working values are not stored
    return codes, ps, np.array([objs[k][i] for i, k in enumerate(which)]), [cands[k][0] for k in which]


def adaptive_codebook(W, X, bits, damp=0.01, act_order=True):
    """Reference of ``nquant.adaptive.adaptive_codebook`` (one absmax per row): ``(codes uint8,
    row absmax float32, levels float32)``.

    Row absmax by ``np.abs(W).max(axis=1)``, levels the exact weighted 1-D k-means of
    ``V = W / s`` (zero rows scaled by 1; ``nquant.codebooks.kmeans1d``, tested on its own) with
    weights ``s_r**2 * ||x_j||**2``, cast to float32 and clipped to [-1, 1]; codes by the
    reference :func:`adaptive_round` of ``W`` with ``Blockwise(levels, block_size=in)``.
    """
    from nquant.codebooks.optimal1d import kmeans1d

    W = np.asarray(W)
    X = np.asarray(X, dtype=np.float64)
    absmax = np.abs(W).max(axis=1).astype(np.float32)
    s = np.where(absmax > 0, absmax, 1).astype(np.float64)
    V = W.astype(np.float64) / s[:, None]
    weights = s[:, None] ** 2 * np.sum(X ** 2, axis=1)[None, :]
    levels = np.unique(np.clip(kmeans1d(V, 2 ** bits, weights=weights).centers.astype(np.float32), -1, 1))
    scheme = Blockwise(codebook=tuple(float(v) for v in levels), block_size=W.shape[1])
    codes, _, _, _ = adaptive_round(scheme, W, X, damp, act_order, clip_search=False)
    return codes, absmax, levels
