"""Figures of a workflow report (matplotlib, the optional ``plot`` extra).

- per job: the value histogram with the quantization levels drawn on it, and the
  histogram of the reconstruction error;
- across jobs: SQNR against bits per value (side information included), one marker per
  job, coloured by scheme type, with a curve through jobs that differ in bits only.
"""

import os

import numpy as np

DPI = 110


def available():
    """Whether matplotlib can be imported (it draws with the non-interactive Agg backend)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot
    except ImportError:
        return False
    return True


def _levels(ax, levels, lo, hi):
    inside = levels[(levels >= lo) & (levels <= hi)]
    if inside.size == 0:
        return
    if levels.size <= 64:
        for v in inside:
            ax.axvline(v, color="tab:red", lw=0.9, alpha=0.75)
        label = f"{levels.size} levels"
    else:  # dense grids: a rug of ticks and the two extreme levels
        ax.plot(inside, np.zeros_like(inside), "|", color="tab:red", ms=10, mew=0.8,
                transform=ax.get_xaxis_transform())
        for v in (levels[0], levels[-1]):
            if lo <= v <= hi:
                ax.axvline(v, color="tab:red", lw=0.9, alpha=0.75)
        label = f"{levels.size} levels (ticks)"
    ax.plot([], [], color="tab:red", lw=1, label=label)


def job_figure(job, view, path):
    """Two panels for one job: values with levels, error histogram; saved as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    values = np.asarray(view["values"], np.float64)
    levels = np.sort(np.asarray(view["levels"], np.float64))
    error = np.asarray(view["error"], np.float64)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    lo, hi = np.percentile(values, [0.05, 99.95]) if values.size else (0.0, 1.0)
    if levels.size:
        lo, hi = min(lo, levels[0]), max(hi, levels[-1])
        span = hi - lo or 1.0
        lo, hi = lo - 0.02 * span, hi + 0.02 * span
    a.hist(np.clip(values, lo, hi), bins=200, range=(lo, hi), histtype="stepfilled", color="tab:blue", alpha=0.8,
           label="values")
    _levels(a, levels, lo, hi)
    clipped = job.get("fraction_clipped")
    if isinstance(clipped, float) and clipped > 0 and levels.size:
        a.axvspan(lo, levels[0], color="tab:red", alpha=0.08, lw=0)
        a.axvspan(levels[-1], hi, color="tab:red", alpha=0.08, lw=0, label="beyond the levels")
    a.set_yscale("log")
    a.set_xlim(lo, hi)
    a.set_xlabel(view["xlabel"])
    a.set_ylabel("count (log)")
    a.set_title(f"{job['job']}: values and quantization levels"
                + (f"\n{clipped:.2%} clipped" if isinstance(clipped, float) else ""), fontsize=10)
    a.legend(loc="best", fontsize=8, framealpha=0.9)
    if error.size:
        elo, ehi = float(error.min()), float(error.max())
        if elo == ehi:
            elo, ehi = elo - 1, ehi + 1
        counts, _, _ = b.hist(np.clip(error, elo, ehi), bins=120, range=(elo, ehi), histtype="stepfilled",
                              color="tab:gray")
        nonzero = counts[counts > 0]
        log = nonzero.size and counts.max() > 100 * np.median(nonzero)  # long tails: log counts
    else:
        log = False
    b.set_yscale("log" if log else "linear")
    b.set_xlabel("reconstruction error (dequantized - original)")
    b.set_ylabel("count (log)" if log else "count")
    b.set_title(f"error: RMSE {job.get('rmse', float('nan')):.3g}, max {job.get('max_abs', float('nan')):.3g}",
                fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def error_vs_bits(jobs, path):
    """SQNR (dB) against bits per value for every verified job.

    Colour: the scheme type; marker: the source; a dashed line joins jobs on one source
    whose schemes differ in ``bits`` only (an error-vs-bits curve of one scheme).
    """
    import json

    import matplotlib.pyplot as plt

    jobs = [j for j in jobs if np.isfinite(j.get("sqnr_db", np.nan)) and "bits_per_value" in j]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    types = sorted({j["scheme"].get("type", "?") for j in jobs})
    sources = sorted({j["source"] for j in jobs})
    colours = {t: f"C{i}" for i, t in enumerate(types)}
    markers = {s: "osD^v<>p*h"[i % 10] for i, s in enumerate(sources)}
    curves = {}
    for j in jobs:
        rest = {k: v for k, v in j["scheme"].items() if k != "bits"}
        curves.setdefault((j["source"], json.dumps(rest, sort_keys=True, default=str)), []).append(j)
    for js in curves.values():
        if len(js) > 1:
            js = sorted(js, key=lambda j: j["bits_per_value"])
            ax.plot([j["bits_per_value"] for j in js], [j["sqnr_db"] for j in js], "--", lw=1,
                    color=colours[js[0]["scheme"].get("type", "?")], alpha=0.7)
    for j in jobs:
        ax.plot(j["bits_per_value"], j["sqnr_db"], markers[j["source"]], ms=7,
                color=colours[j["scheme"].get("type", "?")])
        ax.annotate(j["job"], (j["bits_per_value"], j["sqnr_db"]), textcoords="offset points",
                    xytext=(6, -3), fontsize=8)
    for t in types:
        ax.plot([], [], "-", lw=5, color=colours[t], label=f"scheme: {t}")
    if len(sources) > 1:
        for s in sources:
            ax.plot([], [], markers[s], color="gray", label=f"source: {os.path.basename(s.rstrip('/'))}")
    ax.set_xlabel("bits per value (side information included)")
    ax.set_ylabel("SQNR (dB), higher is better")
    ax.set_title("Error vs bits across schemes")
    ax.grid(alpha=0.3)
    if jobs:
        xs = [j["bits_per_value"] for j in jobs]
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.25 * (max(xs) - min(xs) + 1) + 0.5)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
