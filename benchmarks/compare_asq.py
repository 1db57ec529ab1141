"""ASQ solvers side by side: ZipML, exact / accelerated / approximate QUIVER, in one run.

Usage::

    python benchmarks/compare_asq.py [--max-log2d 22] [--min-log2d 10] [--s 4 8 16 32]
                                     [--m 1000] [--repeat 5] [--zipml-budget 60]
                                     [--rows 1024] [--cols 4096] [--rows-only]

Data: LogNormal(0, 1), seed 0, already sorted (as in the paper's Figure 2; the exact methods
skip the sort after an O(d) check, so sorting is reported separately: ``np.sort`` of the same,
unsorted vector is printed for scale).  Every timing is the median of ``--repeat`` calls of
``nquant.asq.solve`` after one warm-up call (compilation excluded), in this one process.
ZipML (O(s d^2)) is skipped when its estimated time, extrapolated from the largest size it ran
at (or from one run at d = 1024), exceeds ``--zipml-budget`` seconds.  Uses only nquant and NumPy.

Per-row levels (``ASQ(axis=0)``, each row of a gradient-like matrix its own ``s`` levels):
``--rows x --cols`` values, rows N(0, 1) with LogNormal(0, 1) row scales, unsorted; the
parallel kernel over rows (``nquant.asq.solve_rows``) against a Python loop calling
``nquant.asq.solve`` on each row, at ``s = 16`` for ``quiver`` and ``quiver_approx``, with the
ratio loop / kernel and the largest per-row objective difference.
"""

import argparse
import time

import numpy as np

from nquant.codebooks import asq


def _median_time(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--min-log2d", type=int, default=10)
    p.add_argument("--max-log2d", type=int, default=22)
    p.add_argument("--s", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--m", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--zipml-budget", type=float, default=60.0)
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--rows-only", action="store_true", help="only the per-row comparison")
    args = p.parse_args(argv)

    if not args.rows_only:
        per_vector(args)
    per_row(args)


def per_row(args, s=16):
    """One level set per row: the parallel kernel over rows vs a loop of ``solve`` per row."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.cols)) * np.exp(rng.normal(size=(args.rows, 1)))
    print(f"\nper-row levels: {args.rows} rows x {args.cols}, s={s}, median of {args.repeat}")
    print(f"{'method':<14} {'kernel [s]':>10} {'loop [s]':>10} {'loop/kernel':>12} {'max rel. obj. diff':>19}")
    for method in ("quiver", "quiver_approx"):
        kw = {"m": args.m} if method == "quiver_approx" else {}
        res = asq.solve_rows(x, s, method, **kw)
        loop = [asq.solve(row, s, method=method, **kw) for row in x]
        t_kernel = _median_time(lambda: asq.solve_rows(x, s, method, **kw), args.repeat)
        t_loop = _median_time(lambda: [asq.solve(row, s, method=method, **kw) for row in x], args.repeat)
        want = np.array([r.objective for r in loop])
        diff = float(np.max(np.abs(res.objective - want) / np.maximum(want, 1e-300)))
        print(f"{method:<14} {t_kernel:>10.4f} {t_loop:>10.4f} {t_loop / t_kernel:>12.2f} {diff:>19.2e}")


def _zipml_rate(s, d=1024):
    """Seconds per ``s d^2`` of ZipML, timed once at a small ``d`` (the estimate's seed)."""
    x = np.sort(np.random.default_rng(1).lognormal(0.0, 1.0, size=d))
    return _median_time(lambda: asq.solve(x, s, method="zipml"), 1) / (s * d * d)


def per_vector(args):
    print(f"{'d':>9} {'s':>3} {'method':<14} {'time [s]':>10} {'vNMSE':>10}  note")
    zipml_rate = {}  # s -> seconds per (s d^2)
    for log2d in range(args.min_log2d, args.max_log2d + 1):
        d = 1 << log2d
        raw = np.random.default_rng(0).lognormal(0.0, 1.0, size=d)
        t_sort = _median_time(lambda: np.sort(raw), args.repeat)
        x = np.sort(raw)
        note = "sort of the unsorted vector, for scale"
        print(f"{d:>9} {'':>3} {'np.sort':<14} {t_sort:>10.4f} {'':>10}  {note}")
        for s in args.s:
            for method in ("zipml", "quiver", "quiver_accel", "quiver_approx"):
                note = ""
                if method == "zipml":
                    rate = zipml_rate.setdefault(s, _zipml_rate(s))
                    if rate * s * d * d > args.zipml_budget:
                        est = rate * s * d * d
                        print(f"{d:>9} {s:>3} {method:<14} {'skipped':>10} {'':>10}  est. {est:.0f} s")
                        continue
                kw = {"m": args.m} if method == "quiver_approx" else {}
                res = asq.solve(x, s, method=method, **kw)
                reps = 1 if method == "zipml" else args.repeat
                t = _median_time(lambda: asq.solve(x, s, method=method, **kw), reps)
                if method == "zipml":
                    zipml_rate[s] = t / (s * d * d)
                    note = "median of 1"
                if method == "quiver_approx":
                    note = f"m={args.m}"
                print(f"{d:>9} {s:>3} {method:<14} {t:>10.4f} {res.vnmse:>10.5f}  {note}")


if __name__ == "__main__":
    main()
