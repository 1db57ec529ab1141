"""The ``nquant`` command line.

User errors print one line to stderr and exit with status 2 (a traceback only
with ``--debug``).
"""

import functools
import json
import logging
import os
import sys
from importlib import resources

import click

from nquant import __version__
from nquant.errors import NQuantError


def _scheme_options(f):
    f = click.option("--scheme", "scheme", default="int8", show_default=True,
                     help="Preset name (int8, int4, int4-block64, ...) or a scheme's JSON.")(f)
    f = click.option("--bits", type=int, help="Override the scheme's bits.")(f)
    f = click.option("--axis", type=int, help="Override: one scale per index of this axis.")(f)
    f = click.option("--block-size", type=int, help="Override: one scale per block of values.")(f)
    f = click.option("--rounding", help="Override the rounding mode.")(f)
    f = click.option("--range", "range_", help="Override the range calibration (minmax, percentile, mse).")(f)
    f = click.option("--seed", type=int, help="Override the seed of stochastic rounding.")(f)
    return f


def _cluster_options(f):
    f = click.option("--scheduler", default=None,
                     help="threads | processes | sync | local | tcp://host:port  [default: threads]")(f)
    f = click.option("--workers", type=int, help="Workers (local cluster) or threads/processes.")(f)
    f = click.option("--threads-per-worker", type=int, help="Threads per local-cluster worker.")(f)
    f = click.option("--memory-limit", help="Memory per local-cluster worker, e.g. 2GiB.")(f)
    return f


def _common(f):
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")(f)
    f = click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")(f)
    return f


def _scheme_from(scheme, bits, axis, block_size, rounding, range_, seed):
    from nquant.presets import resolve_scheme

    return resolve_scheme(scheme, bits=bits, axis=axis, block_size=block_size, rounding=rounding,
                          range=range_, seed=seed)


def _emit(obj, as_json, text):
    if as_json:
        click.echo(json.dumps(obj, indent=2, default=str))
    else:
        click.echo(text)


def _guard(func):
    """Turn nquant errors into one line and exit status 2 (traceback with --debug)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except (NQuantError, FileNotFoundError, OSError) as e:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"nquant: error: {e}", err=True)
            sys.exit(2)

    return wrapper


class OneLineErrors(click.Group):
    """A click group whose usage errors are one line (``nquant quantize: error: ...``), status 2."""

    def main(self, args=None, prog_name=None, **kwargs):
        kwargs.pop("standalone_mode", None)
        try:
            return super().main(args, prog_name="nquant", standalone_mode=False, **kwargs)
        except click.UsageError as e:
            cmd = e.ctx.command_path if e.ctx is not None else "nquant"
            click.echo(f"{cmd}: error: {e.format_message()} (see '{cmd} --help')", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"nquant: error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("nquant: aborted", err=True)
            sys.exit(1)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nquant")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def main(log_level, debug):
    """nquant: quantize NumPy, Dask and Zarr arrays with Numba kernels."""
    from nquant import cluster

    cluster.LOG_LEVEL = getattr(logging, log_level.upper())
    logging.getLogger("nquant").setLevel(cluster.LOG_LEVEL)


def _source(path):
    """A Dask array from a Zarr array or a .npy file (memory-mapped)."""
    import dask.array as da
    import numpy as np

    if str(path).endswith(".npy"):
        return da.from_array(np.load(path, mmap_mode="r"), name=False)
    return path


@main.command()
@click.argument("src")
@click.argument("dst")
@_scheme_options
@_cluster_options
@_common
@click.option("--overwrite", is_flag=True, help="Recompute even if DST is complete.")
@_guard
def quantize(src, dst, scheme, bits, axis, block_size, rounding, range_, seed, scheduler, workers,
             threads_per_worker, memory_limit, as_json, progress, overwrite):
    """Quantize SRC (a Zarr array, .npy or .safetensors file) into the nquant Zarr group DST.

    A .safetensors model gets one group per floating tensor of 2 or more dimensions.
    """
    from nquant.cluster import scheduler as run_on
    from nquant.store import quantize_zarr

    s = _scheme_from(scheme, bits, axis, block_size, rounding, range_, seed)
    if str(src).endswith(".safetensors"):
        from nquant.models import quantize_safetensors

        report = quantize_safetensors(src, dst, s, overwrite=overwrite)
        total = report["total"]
        _emit(report, as_json, f"{dst}: {len(report) - 1} tensors, {total['values']} values, "
              f"{total['bits_per_value']:.4f} bits/value (side information included)")
        return
    with run_on(scheduler or "threads", workers, threads_per_worker or 1, memory_limit or "auto") as client:
        q = quantize_zarr(_source(src), dst, s, overwrite=overwrite, client=client, progress=progress)
    info = _info_dict(dst, q)
    _emit(info, as_json, _info_text(info))


def _info_dict(store, q):
    return {"store": os.fspath(store), "scheme": json.loads(q.scheme.to_json()), "shape": list(q.shape),
            "dtype": str(q.dtype), "chunks": [list(c) for c in q.chunks] if q.chunks else None,
            "bits_per_value": q.bits_per_value, "nbytes": q.nbytes, "metrics": q.info.get("metrics", {})}


def _info_text(info):
    m = info["metrics"]
    lines = [f"{info['store']}: {info['dtype']} {tuple(info['shape'])}",
             f"  scheme: {json.dumps({k: v for k, v in info['scheme'].items() if k != 'format_version'})}",
             f"  bits/value: {info['bits_per_value']:.4f} (side information included), {info['nbytes']} bytes"]
    if m:
        lines.append(f"  error: rmse {m['rmse']:.4g}, max abs {m['max_abs']:.4g}, "
                     f"SQNR {m['sqnr_db']:.2f} dB, bias {m['bias']:.3g}")
    return "\n".join(lines)


@main.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@_guard
def info(store, as_json):
    """Describe a quantized STORE: scheme, shape, bits/value with side information, error summary.

    STORE is an nquant group, or a model group written from a .safetensors file (one line per tensor).
    """
    from nquant.models import MODEL_ATTR, is_complete_model
    from nquant.store import open as open_store

    if is_complete_model(store):
        import zarr

        meta = zarr.open_group(store, mode="r").attrs.asdict()[MODEL_ATTR]
        tensors = {k: v for k, v in meta["tensors"].items() if k != "total"}
        total = meta["tensors"]["total"]
        lines = [f"{store}: model {meta['source']}, {len(tensors)} tensors, {total['values']} values, "
                 f"{total['bits_per_value']:.4f} bits/value (side information included)",
                 f"  scheme: {json.dumps({k: v for k, v in meta['scheme'].items() if k != 'format_version'})}"]
        for name, t in tensors.items():
            lines.append(f"  {name}: {t['dtype']} {tuple(t['shape'])}, {t['bits_per_value']:.4f} bits/value, "
                         f"rmse {t['rmse']:.4g}, SQNR {t['sqnr_db']:.2f} dB")
        _emit({"store": os.fspath(store), **meta}, as_json, "\n".join(lines))
        return
    q = open_store(store)
    d = _info_dict(store, q)
    _emit(d, as_json, _info_text(d))


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@_guard
def dequantize(src, dst, overwrite, as_json):
    """Write the dequantized values of the nquant group SRC to the Zarr array DST."""
    from nquant.store import dequantize_zarr

    arr = dequantize_zarr(src, dst, overwrite=overwrite)
    _emit({"dst": dst, "dtype": str(arr.dtype), "shape": list(arr.shape)}, as_json,
          f"{dst}: {arr.dtype} {tuple(arr.shape)}")


@main.command()
@click.argument("store")
@click.option("--source", required=True, help="The original array (Zarr path or .npy).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@_guard
def verify(store, source, as_json):
    """Recompute the error of STORE against its source array."""
    from nquant.workflow import verify as verify_store

    m = verify_store(store, _source(source))
    _emit(m, as_json, f"{store}: rmse {m['rmse']:.4g}, max abs {m['max_abs']:.4g}, SQNR {m['sqnr_db']:.2f} dB, "
          f"bias {m['bias']:.3g}, {m['bits_per_value']:.4f} bits/value")


@main.command("fit-codebook")
@click.argument("src")
@click.argument("out")
@click.option("--method", type=click.Choice(["kmeans", "quiver", "quiver-approx"]), default="kmeans",
              show_default=True, help="kmeans: exact 1-D k-means (nearest rounding); quiver / quiver-approx: "
              "optimal levels of unbiased stochastic rounding (QUIVER; approx: on a grid).")
@click.option("--levels", "k", type=int, default=None, help="Number of levels, 2..256 [default: 2**bits].")
@click.option("--bits", type=int, default=4, show_default=True, help="Levels = 2**bits (unless --levels).")
@click.option("--m", type=int, default=None, help="Grid intervals of quiver-approx.")
@click.option("--tensor", default=None, help="Glob of the tensor names of a .safetensors SRC "
              "[default: every floating matrix].")
@click.option("--max-values", type=int, default=1 << 20, show_default=True,
              help="Fit on a seeded sample of this many values when SRC is larger (0: all values).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@_guard
def fit_codebook(src, out, method, k, bits, m, tensor, max_values, seed, overwrite, as_json):
    """Fit 1-D levels to SRC (Zarr array, .npy or .safetensors) and write them to OUT.

    OUT.json holds a Codebook scheme (nearest rounding for kmeans, stochastic for
    QUIVER levels) and OUT.npy the levels; either is then a valid --scheme value
    (nquant quantize data.zarr q.zarr --scheme OUT.json).
    """
    from nquant.levels import fit_levels, load_values, save_levels

    k = (1 << bits) if k is None else k
    if not out.endswith((".json", ".npy")):
        raise click.BadParameter(f"{out!r} is invalid: expected a .json or .npy file name", param_hint="OUT")
    if os.path.exists(out) and not overwrite:
        raise click.BadParameter(f"{out!r} exists; pass --overwrite to replace it", param_hint="OUT")
    x = load_values(src, tensor=tensor, max_values=max_values or None, seed=seed)
    levels, figures = fit_levels(x, k, method, m=m)
    save_levels(out, levels, method)
    d = {"out": out, "method": method, "levels": [float(v) for v in levels], "values_fitted": int(x.size),
         **figures}
    text = (f"{out}: {len(levels)} {method} levels in [{levels[0]:.4g}, {levels[-1]:.4g}] fitted on "
            f"{x.size} values; " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))
    _emit(d, as_json, text)


@main.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE", help="Override a variable.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@_guard
def plan(workflow, assignments, as_json):
    """Dry run of WORKFLOW: shapes, chunks, bytes in/out, bits/value, tasks; computes nothing."""
    from nquant import workflow as wf

    rows = wf.plan(wf.load(workflow, wf.parse_assignments(assignments)))
    lines = [f"{'job':<20} {'shape':<18} {'chunks':<16} {'MB in':>8} {'MB out':>8} {'bits/val':>8} {'tasks':>6}"]
    for r in rows:
        lines.append(f"{r['job']:<20} {str(tuple(r['shape'])):<18} {str(tuple(r['chunks'])):<16} "
                     f"{r['bytes_in'] / 1e6:>8.2f} {r['bytes_out'] / 1e6:>8.2f} {r['bits_per_value']:>8.3f} "
                     f"{r['tasks']:>6}")
    _emit(rows, as_json, "\n".join(lines))


def _run(workflow, assignments, overwrite, progress, scheduler, workers, threads_per_worker, memory_limit,
         as_json):
    from nquant import workflow as wf

    spec = wf.load(workflow, wf.parse_assignments(assignments))
    echo = (lambda s: click.echo(s, err=True)) if as_json else click.echo
    report = wf.run(spec, overwrite=overwrite, progress=progress, echo=echo,
                    scheduler_overrides={"scheduler": scheduler, "workers": workers,
                                         "threads_per_worker": threads_per_worker, "memory_limit": memory_limit})
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        nan = float("nan")
        for j in report["jobs"]:
            click.echo(f"  {j['job']:<24} {j['status']:<8} {j.get('bits_per_value', nan):7.3f} bits/value  "
                       f"rmse {j.get('rmse', nan):.4g}  SQNR {j.get('sqnr_db', nan):6.2f} dB  "
                       f"{j.get('throughput_mb_s', nan):8.1f} MB/s")
        click.echo(f"report: {report['paths']['html']}")


@main.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE", help="Override a variable.")
@click.option("--overwrite", is_flag=True, help="Start over (also into an output made by another spec).")
@_cluster_options
@_common
@_guard
def run(workflow, assignments, overwrite, scheduler, workers, threads_per_worker, memory_limit, as_json,
        progress):
    """Run WORKFLOW (a TOML file): sources, quantize, verify, report; resumes an interrupted run."""
    _run(workflow, assignments, overwrite, progress, scheduler, workers, threads_per_worker, memory_limit,
         as_json)


def demo_workflow_path():
    """Path of the packaged demo workflow (``workflows/demo.toml`` in the repository)."""
    return str(resources.files("nquant") / "workflows" / "demo.toml")


@main.command()
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE",
              help="Override a variable of the demo workflow (e.g. out=DIR, rows=512).")
@click.option("--overwrite", is_flag=True, help="Start over.")
@_cluster_options
@_common
@_guard
def demo(assignments, overwrite, scheduler, workers, threads_per_worker, memory_limit, as_json, progress):
    """The main job: make a synthetic Zarr store, quantize it three ways on a local cluster, verify, report."""
    _run(demo_workflow_path(), assignments, overwrite, progress, scheduler, workers, threads_per_worker,
         memory_limit, as_json)


if __name__ == "__main__":
    main()
