"""Workflow reports: JSON, Markdown, and PNG plots when matplotlib is installed."""

import json
import math
import os


def _fmt(v, spec):
    if isinstance(v, (int, float)) and math.isfinite(v):
        return format(v, spec)
    return str(v)


def compact_scheme(d):
    """The fields of a scheme dict that differ from its type's defaults (plus ``type``)."""
    from nquant.schemes import scheme_from_json

    try:
        default = type(scheme_from_json(d))().to_dict()
    except Exception:
        return d
    return {k: v for k, v in d.items() if k == "type" or (k != "format_version" and default.get(k) != v)}


def write_report(report, out_dir):
    """Write ``report.json``, ``report.md`` and plots into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "report.json"), "markdown": os.path.join(out_dir, "report.md")}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=2, default=str)
    plots = _plots(report, out_dir)
    lines = [f"# nquant report: {report['workflow']}", "",
             f"nquant {report['nquant']}, workflow fingerprint `{report['fingerprint']}`", "",
             "| job | scheme | shape | bits/value | RMSE | max abs error | SQNR (dB) | bias | MB/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for j in report["jobs"]:
        scheme = compact_scheme(j["scheme"])
        lines.append(
            f"| {j['job']} | `{json.dumps(scheme, sort_keys=True)}` | {tuple(j['shape'])} | "
            f"{_fmt(j.get('bits_per_value', float('nan')), '.3f')} | {_fmt(j.get('rmse', float('nan')), '.4g')} | "
            f"{_fmt(j.get('max_abs', float('nan')), '.4g')} | {_fmt(j.get('sqnr_db', float('nan')), '.2f')} | "
            f"{_fmt(j.get('bias', float('nan')), '.2e')} | {_fmt(j.get('throughput_mb_s', float('nan')), '.1f')} |")
    for name, path in plots.items():
        lines += ["", f"![{name}]({os.path.basename(path)})"]
    with open(paths["markdown"], "w") as f:
        f.write("\n".join(lines) + "\n")
    paths.update(plots)
    return paths


def _plots(report, out_dir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    jobs = [j for j in report["jobs"] if "rmse" in j]
    if not jobs:
        return {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for j in jobs:
        ax.scatter(j["bits_per_value"], j["sqnr_db"], s=40)
        ax.annotate(j["job"], (j["bits_per_value"], j["sqnr_db"]), textcoords="offset points", xytext=(5, 5),
                    fontsize=8)
    ax.set_xlabel("bits per value (side information included)")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("Error vs bits across schemes")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, "sqnr_vs_bits.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"sqnr_vs_bits": path}
