"""Workflow reports: ``report.json``, ``report.md`` with PNG figures, and a self-contained ``report.html``.

Per job: scheme, shape, bits/value with side information, RMSE, max error, SQNR, bias,
fraction clipped, compression ratio of the bytes stored against float32 and against the source's
stored bytes (array jobs), throughput (kernel compilation excluded; its time is a column of its own) and
recall for product quantizers.  Figures
(:mod:`nquant.interfaces.plots`, when matplotlib is installed): per job the value histogram with
the quantization levels and the error histogram; across jobs SQNR against bits.  The
HTML embeds the PNGs as data URIs, so the one file can be mailed or archived.  Without
matplotlib the reports say so and carry the tables only.
"""

import base64
import html
import json
import math
import os

from nquant.interfaces import plots
from nquant.interfaces.jobs import load_view
from nquant.schemes import scheme_from_json

NO_PLOTS = "Figures need matplotlib: pip install 'nquant[plot]'."
COLUMNS = (("bits/value", "bits_per_value", ".3f"), ("RMSE", "rmse", ".4g"), ("max abs error", "max_abs", ".4g"),
           ("SQNR (dB)", "sqnr_db", ".2f"), ("bias", "bias", ".2e"), ("clipped", "fraction_clipped", ".3%"),
           ("stored ratio vs float32", "ratio_float32", ".2f"), ("vs source", "ratio_source", ".2f"),
           ("MB/s (compile excluded)", "throughput_mb_s", ".1f"), ("compile (s)", "compile_seconds", ".2f"))


def _fmt(v, spec):
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return format(v, spec)
    return "n/a" if v is None else str(v)


def compact_scheme(d):
    """The fields of a scheme dict that differ from its type's defaults (plus ``type``)."""
    try:
        default = type(scheme_from_json(d))().to_dict()
    except Exception:
        return d
    return {k: v for k, v in d.items() if k == "type" or (k != "format_version" and default.get(k) != v)}


def _scheme_text(d):
    d = compact_scheme(d)
    if d.get("type") == "blockwise" and "codebook" in d:  # NF4's 16 levels make the table unreadable
        d = {**d, "codebook": f"<{len(d['codebook'])} levels>"}
    if d.get("type") == "codebook" and "values" in d:
        d = {**d, "values": f"<{len(d['values'])} levels>"}
    return json.dumps(d, sort_keys=True)


def _extra(j):
    """Job-kind specific figures: recall of PQ jobs, tensor count of model jobs."""
    parts = [f"{k.replace('_', ' ')} {v:.3f}" for k, v in j.items() if k.startswith("recall_at_")]
    if "distortion" in j:
        parts.append(f"distortion {_fmt(j['distortion'], '.4g')}")
    if "tensors" in j:
        parts.append(f"{j['tensors']} tensors")
    return ", ".join(parts)


def _figures(report, out_dir):
    """Draw the figures (PNG); ``{"jobs": {job: path}, "error_vs_bits": path}`` or None without matplotlib."""
    if not plots.available():
        return None
    out = {"jobs": {}}
    for j in report["jobs"]:
        view = load_view(os.path.join(out_dir, f"{j['job']}.sample.npz"))
        if view is not None:
            out["jobs"][j["job"]] = plots.job_figure(j, view, os.path.join(out_dir, f"{j['job']}.png"))
    if any("sqnr_db" in j for j in report["jobs"]):
        out["error_vs_bits"] = plots.error_vs_bits(report["jobs"], os.path.join(out_dir, "error_vs_bits.png"))
    return out


def write_report(report, out_dir):
    """Write ``report.json``, ``report.md``, ``report.html`` and the PNG figures; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    figures = _figures(report, out_dir)
    report = {**report, "figures": figures}
    paths = {"json": os.path.join(out_dir, "report.json"), "markdown": os.path.join(out_dir, "report.md"),
             "html": os.path.join(out_dir, "report.html")}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=2, default=str)
    with open(paths["markdown"], "w") as f:
        f.write(markdown(report))
    with open(paths["html"], "w") as f:
        f.write(to_html(report))
    if figures:
        paths["figures"] = [*figures["jobs"].values()] + ([figures["error_vs_bits"]] if "error_vs_bits" in figures
                                                           else [])
    return paths


def markdown(report):
    """The report as Markdown (figures linked by file name)."""
    head = "| job | scheme | shape | " + " | ".join(c[0] for c in COLUMNS) + " | other |"
    lines = [f"# nquant report: {report['workflow']}", "",
             f"nquant {report['nquant']}, workflow fingerprint `{report['fingerprint']}`", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for j in report["jobs"]:
        cells = [_fmt(j.get(key), spec) for _, key, spec in COLUMNS]
        lines.append(f"| {j['job']} | `{_scheme_text(j['scheme'])}` | {tuple(j['shape'])} | "
                     + " | ".join(cells) + f" | {_extra(j)} |")
    figures = report.get("figures")
    if figures is None:
        lines += ["", NO_PLOTS]
    else:
        if "error_vs_bits" in figures:
            lines += ["", "## Error vs bits", "", f"![error vs bits]({os.path.basename(figures['error_vs_bits'])})"]
        for name, path in figures["jobs"].items():
            lines += ["", f"## {name}", "", f"![{name}]({os.path.basename(path)})"]
    return "\n".join(lines) + "\n"


def _img(path, alt):
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td.l,th.l{text-align:left}
code{font-size:12px}img{max-width:100%;margin:8px 0}h2{margin-top:1.5em}"""


def to_html(report):
    """The report as one self-contained HTML page (figures embedded as base64 PNG data URIs)."""
    e = html.escape
    rows = []
    for j in report["jobs"]:
        cells = "".join(f"<td>{e(_fmt(j.get(key), spec))}</td>" for _, key, spec in COLUMNS)
        rows.append(f"<tr><td class=l>{e(j['job'])}</td><td class=l><code>{e(_scheme_text(j['scheme']))}</code></td>"
                    f"<td class=l>{e(str(tuple(j['shape'])))}</td>{cells}<td class=l>{e(_extra(j))}</td></tr>")
    head = "".join(f"<th>{e(c[0])}</th>" for c in COLUMNS)
    parts = [f"<!DOCTYPE html><html><head><meta charset=utf-8><title>nquant report: {e(report['workflow'])}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>nquant report: {e(report['workflow'])}</h1>",
             f"<p>nquant {e(report['nquant'])}, workflow fingerprint <code>{e(report['fingerprint'])}</code>. "
             "Bits per value include side information (scales, zero points, codebooks).</p>",
             f"<table><tr><th class=l>job</th><th class=l>scheme</th><th class=l>shape</th>{head}"
             f"<th class=l>other</th></tr>{''.join(rows)}</table>"]
    figures = report.get("figures")
    if figures is None:
        parts.append(f"<p><em>{e(NO_PLOTS)}</em></p>")
    else:
        if "error_vs_bits" in figures:
            parts += ["<h2>Error vs bits</h2>", _img(figures["error_vs_bits"], "error vs bits")]
        for name, path in figures["jobs"].items():
            parts += [f"<h2>{e(name)}</h2>", _img(path, name)]
    parts.append("</body></html>\n")
    return "\n".join(parts)
