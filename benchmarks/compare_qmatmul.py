"""Time nquant's integer matmul against float32 ``np.matmul`` (OpenBLAS) and report its error.

One run, W 4096 x 4096 (per-row scaled, like a layer's weights) times X 4096 x 512
(shifted Gaussian activations, so the zero point is far from 0), medians of
``--repeat`` interleaved rounds after a warm-up call of each::

    python benchmarks/compare_qmatmul.py [--out 4096] [--inner 4096] [--n 512] [--repeat 5]

Prints the times, the ratio ``t(np.matmul float32) / t(qmatmul)`` (the speed of
qmatmul relative to float32 BLAS; the issue wants >= 0.5), the error of each
result against the float32 product of the unquantized operands, and the weight
memory of int8 and packed 4-bit weights against float32.  ``qmatmul`` takes
already-quantized activations (as a quantized layer receives them) and weights
prepared once; the time of quantizing X is printed separately.
"""

import argparse
import statistics
import time

import numpy as np

import nquant as nq
from nquant.qmatmul import prepare_weights, qmatmul


def rel_error(y, ref):
    """Relative Frobenius error and max |error| / max |ref|."""
    d = y.astype(np.float64) - ref
    return float(np.linalg.norm(d) / np.linalg.norm(ref)), float(np.abs(d).max() / np.abs(ref).max())


def timed_rounds(fns, repeat):
    """Median seconds of each function over interleaved rounds (each warmed up first)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=int, default=4096, help="rows of W (output channels)")
    ap.add_argument("--inner", type=int, default=4096, help="columns of W = rows of X")
    ap.add_argument("--n", type=int, default=512, help="columns of X")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    O, K, N = args.out, args.inner, args.n
    rng = np.random.default_rng(0)
    w = rng.standard_normal((O, K), dtype=np.float32)
    w *= rng.lognormal(0.0, 0.5, size=(O, 1)).astype(np.float32)
    x = (rng.standard_normal((K, N), dtype=np.float32) + np.float32(0.7))

    w8 = nq.Uniform(bits=8, symmetric=True, axis=0)
    w4 = nq.Uniform(bits=4, symmetric=True, axis=0)
    xs = nq.Uniform(bits=8)
    qx = nq.quantize(x, xs)
    qw8 = nq.quantize(w, w8)
    prepare_weights(qw8)  # compiles
    t0 = time.perf_counter()
    pw8 = prepare_weights(qw8)
    t_prep = time.perf_counter() - t0
    pw4 = prepare_weights(nq.quantize(w, w4))

    y32 = np.empty((O, N), np.float32)
    yq = np.empty((O, N), np.float32)
    fns = {
        "np.matmul float32 (OpenBLAS)": lambda: np.matmul(w, x, out=y32),
        "qmatmul int8 x uint8 (blas)": lambda: qmatmul(pw8, qx, method="blas", out=yq),
        "qmatmul int8 x uint8 (int)": lambda: qmatmul(pw8, qx, method="int", out=yq),
        "qmatmul int4 x uint8 (blas)": lambda: qmatmul(pw4, qx, method="blas", out=yq),
        "quantize X (uint8, per tensor)": lambda: nq.quantize(x, xs),
    }
    t = timed_rounds(fns, args.repeat)

    ref = np.matmul(w, x).astype(np.float64)  # the float32 product of the unquantized operands
    results = {
        "int8 blas": qmatmul(pw8, qx, method="blas"),
        "int8 int": qmatmul(pw8, qx, method="int"),
        "int4 blas": qmatmul(pw4, qx, method="blas"),
    }
    same = np.array_equal(results["int8 blas"], results["int8 int"])
    deq = nq.dequantize(qw8).astype(np.float64) @ nq.dequantize(qx).astype(np.float64)

    print(f"W {O}x{K} float32 @ X {K}x{N} float32; median of {args.repeat} interleaved rounds")
    for name, v in t.items():
        print(f"  {name:<34} {v * 1e3:9.1f} ms")
    print(f"  prepare_weights (int8, once)       {t_prep * 1e3:9.1f} ms")
    base = t["np.matmul float32 (OpenBLAS)"]
    print("speed relative to float32 np.matmul (t_matmul / t_qmatmul; want >= 0.5)")
    for name in ("qmatmul int8 x uint8 (blas)", "qmatmul int8 x uint8 (int)", "qmatmul int4 x uint8 (blas)"):
        print(f"  {name:<34} {base / t[name]:6.2f}x")
    print("error vs the float32 product of the unquantized operands (relative Frobenius, max/max)")
    for name, y in results.items():
        fro, mx = rel_error(y, ref)
        print(f"  {name:<34} {fro:.3e}   {mx:.3e}")
    fro, mx = rel_error(results["int8 blas"], deq)
    print(f"  int8 vs float64 product of the dequantized operands: {fro:.3e}  {mx:.3e} (float rounding only)")
    print(f"  blas and int methods bit-identical: {same}")
    f32 = w.nbytes
    print("weight memory")
    print(f"  float32 {f32 / 2**20:8.2f} MiB")
    print(f"  int8    {pw8.weight_nbytes / 2**20:8.2f} MiB ({f32 / pw8.weight_nbytes:.2f}x less; "
          f"{f32 / pw8.nbytes:.2f}x with scales and row sums)")
    print(f"  int4    {pw4.weight_nbytes / 2**20:8.2f} MiB ({f32 / pw4.weight_nbytes:.2f}x less; "
          f"{f32 / pw4.nbytes:.2f}x with scales and row sums)")
    return t


if __name__ == "__main__":
    main()
