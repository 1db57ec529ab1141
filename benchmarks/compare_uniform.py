"""Time nquant's 8-bit uniform quantization against NumPy, PyTorch and a memory copy.

One run, one 64M-value float32 array, medians of 5 after a warm-up call::

    python benchmarks/compare_uniform.py [--n 67108864] [--repeat 5]

Prints each time and the ratios the README quotes: NumPy / nquant quantize
(calibration included), PyTorch / nquant, encode / copy and dequantize / copy
(both into preallocated outputs).
"""

import argparse
import statistics
import time

import numpy as np

import nquant as nq
from nquant.families import uniform


def median_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def numpy_baseline(x):
    lo, hi = x.min(), x.max()
    s = (hi - lo) / 255
    return np.clip(np.rint((x - lo) / s), 0, 255).astype(np.uint8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64 * 2**20)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    x = np.random.default_rng(0).standard_normal(args.n, dtype=np.float32)
    scheme = nq.Uniform(bits=8)
    params = uniform.fit(scheme, x)
    codes = np.empty(x.size, np.uint8)
    out = np.empty_like(x)
    copy_dst = np.empty_like(x)

    t = {}
    t["np.copyto (roofline)"] = median_time(lambda: np.copyto(copy_dst, x), args.repeat)
    t["numpy baseline"] = median_time(lambda: numpy_baseline(x), args.repeat)
    t["nquant quantize"] = median_time(lambda: nq.quantize(x, scheme), args.repeat)
    t["nquant encode (preallocated)"] = median_time(
        lambda: uniform.encode(scheme, params, x, out=codes), args.repeat)
    t["nquant dequantize (preallocated)"] = median_time(
        lambda: uniform.decode(scheme, params, codes, np.float32, out=out), args.repeat)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        xt = torch.from_numpy(x)

        def torch_quantize():
            lo, hi = xt.min().item(), xt.max().item()
            s = (hi - lo) / 255
            return torch.quantize_per_tensor(xt, s, int(round(-lo / s)), torch.quint8)

        t["torch quantize_per_tensor"] = median_time(torch_quantize, args.repeat)

    print(f"{args.n} float32 values ({x.nbytes / 2**20:.0f} MiB), median of {args.repeat}")
    for name, v in t.items():
        print(f"  {name:<34} {v * 1e3:8.2f} ms")
    print("ratios")
    print(f"  numpy baseline / nquant quantize   {t['numpy baseline'] / t['nquant quantize']:6.2f}x  (want >= 10)")
    if torch is not None:
        print(f"  torch / nquant quantize            {t['torch quantize_per_tensor'] / t['nquant quantize']:6.2f}x  (want > 1)")
    else:
        print("  torch / nquant quantize            n/a (torch not installed)")
    copy = t["np.copyto (roofline)"]
    print(f"  encode / copy                      {t['nquant encode (preallocated)'] / copy:6.2f}   (want <= 0.7)")
    print(f"  dequantize / copy                  {t['nquant dequantize (preallocated)'] / copy:6.2f}   (want <= 1.0)")
    return t


if __name__ == "__main__":
    main()
