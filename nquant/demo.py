"""The demo job: quantize a generated array several ways and print a table."""

import time

import numpy as np

from nquant.api import dequantize, quantize
from nquant.metrics import metrics
from nquant.schemes import Uniform

DEMO_SCHEMES = {
    "int8 per tensor": Uniform(bits=8),
    "int8 symmetric per channel": Uniform(bits=8, symmetric=True, axis=0),
    "int4 per channel, mse range": Uniform(bits=4, axis=0, range="mse"),
    "int4 blocks of 64": Uniform(bits=4, block_size=64),
    "int4 stochastic": Uniform(bits=4, rounding="stochastic"),
    "int2 percentile 0.1-99.9": Uniform(bits=2, range="percentile"),
}


def make_data(rows=4096, cols=1024, seed=0):
    """A float32 (rows, cols) weight-like matrix: Gaussian with per-row scales and outliers."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols), dtype=np.float32)
    x *= rng.lognormal(0.0, 0.5, size=(rows, 1)).astype(np.float32)
    idx = rng.integers(0, x.size, size=x.size // 1000)
    x.reshape(-1)[idx] *= 8
    return x


def run_demo(rows=4096, cols=1024, repeat=3, echo=print):
    """Quantize the demo matrix with each scheme; return the table rows (dicts)."""
    x = make_data(rows, cols)
    table = []
    for name, scheme in DEMO_SCHEMES.items():
        quantize(x[:8], scheme)  # compile outside the timing
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            q = quantize(x, scheme)
            best = min(best, time.perf_counter() - t0)
        m = metrics(x, dequantize(q))
        table.append({"scheme": name, "bits_per_value": q.bits_per_value, "rmse": m["rmse"],
                      "sqnr_db": m["sqnr_db"], "throughput_gbs": x.nbytes / best / 1e9})
    echo(f"nquant demo: float32 matrix {rows} x {cols} ({x.nbytes / 2**20:.0f} MiB)")
    echo(f"{'scheme':<30} {'bits/value':>10} {'RMSE':>10} {'SQNR dB':>8} {'GB/s':>7}")
    for r in table:
        echo(f"{r['scheme']:<30} {r['bits_per_value']:>10.3f} {r['rmse']:>10.4g} "
             f"{r['sqnr_db']:>8.2f} {r['throughput_gbs']:>7.2f}")
    return table
