"""The ``nquant`` command line.

User errors and unusable inputs (missing or corrupt files and stores, bad numbers,
schemes or workflow files) print one line to stderr and exit with status 2 (a
traceback only with ``--debug``).  Ctrl-C (SIGINT) prints ``nquant: interrupted
(rerun to resume)`` and ends the process at once with status 130: an interrupted
output stays partial, and the same command resumes it.
"""

import functools
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import tomllib
from importlib import resources

import click

from nquant import __version__, chunked, cluster
from nquant.api import family
from nquant.cluster import check_chunk_memory, check_count, parse_memory_limit
from nquant.calibration import RECIPES
from nquant.cluster import scheduler as run_on
from nquant.errors import InputError, NQuantError, StoreError
from nquant.interfaces import warmup
from nquant.interfaces import workflow as wf
from nquant.interfaces.levels import fit_levels, load_values, save_levels
from nquant.interfaces.presets import PRESETS, resolve_scheme
from nquant.kernels.rounding import MODES
from nquant.models import (
    dequantize_model,
    is_model_group,
    member_location,
    model_meta,
    open_model,
    quantize_safetensors,
    verify_model,
)
from nquant.progress import bar_open
from nquant.schemes import RANGES
from nquant.lossless import COMPRESSIONS
from nquant.store import dequantize_zarr, open_array, quantize_zarr, storage_summary
from nquant.store import open as open_store
from nquant.verify import verify_chunks

INTERRUPTED = "nquant: interrupted (rerun to resume)"
INTERRUPTED_STATUS = 130


class MemorySize(click.ParamType):
    """A memory size such as ``2GiB``, ``500MB`` or ``auto`` (kept as given)."""

    name = "size"

    def convert(self, value, param, ctx):
        try:
            parse_memory_limit(value)
        except InputError:
            self.fail(f"{value!r} is not a size such as 2GiB, 500MB or auto", param, ctx)
        return value


def _options(*options):
    """Apply click ``options`` so that ``--help`` lists them in the order given (click lists a
    command's options in the reverse order of their application)."""
    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f

    return apply


_scheme_options = _options(
    click.option("--scheme", "scheme", default="int8", show_default=True,
                 help=f"Preset name ({', '.join(PRESETS)}), a scheme's JSON, or a .json/.npy "
                      "file written by fit-codebook."),
    click.option("--bits", type=int, help="Override the scheme's bits."),
    click.option("--axis", type=int, help="Override: one scale per index of this axis."),
    click.option("--block-size", type=int, help="Override: one scale per block of values."),
    # the choices in the help (not click.Choice): a bad value is then the one-line error of the
    # scheme that names the field (rounding='up'), as for every other scheme field
    click.option("--rounding", help=f"Override the rounding mode: {', '.join(MODES)}."),
    click.option("--range", "range_", help=f"Override the range calibration: {', '.join(RANGES)}."),
    click.option("--seed", type=int, help="Override the seed of stochastic rounding."),
)


def _workflow_scheduler(path):
    """The scheduler named by the ``[cluster]`` table of the workflow file ``path`` (threads if none)."""
    with open(path, "rb") as f:
        return tomllib.load(f).get("cluster", {}).get("scheduler", "threads")


def _cluster_options(default):
    """The scheduler options; ``default`` is the help's account of the scheduler used without one."""
    return _options(
        click.option("--scheduler", default=None,
                     help=f"threads | processes | sync | local | tcp://host:port  [default: {default}]"),
        click.option("--workers", type=click.IntRange(min=1),
                     help="Workers (local cluster) or threads/processes."),
        click.option("--threads-per-worker", type=click.IntRange(min=1),
                     help="Threads per local-cluster worker."),
        click.option("--memory-limit", type=MemorySize(),
                     help="Memory per local-cluster worker, e.g. 2GiB or auto; a chunk that cannot fit "
                          "is refused before the run."),
    )


_common = _options(
    click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output."),
    click.option("--progress/--no-progress", default=True, show_default=True,
                 help="Progress bars, and the line saying that kernels are being compiled."),
)


def _say(text):
    """A message for the user on standard error (never mixed into --json output)."""
    click.echo(text, err=True)


def _quiet(text):
    """No message (``--no-progress``)."""


def _scheme_from(scheme, bits, axis, block_size, rounding, range_, seed):
    return resolve_scheme(scheme, bits=bits, axis=axis, block_size=block_size, rounding=rounding,
                          range=range_, seed=seed)


def _emit(obj, as_json, text):
    if as_json:
        click.echo(json.dumps(obj, indent=2, default=str))
    else:
        click.echo(text)


def _one_line(e):
    """The message of ``e`` on one line (a multi-line message from a library is joined)."""
    text = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
    return text or type(e).__name__


def _guard(func):
    """Turn nquant errors, and the operating system's errors on the user's paths, into one line and
    exit status 2 (traceback with --debug).  Other exceptions are bugs: they keep their traceback."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except (NQuantError, OSError) as e:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"nquant: error: {_one_line(e)}", err=True)
            sys.exit(2)

    return wrapper


def _on_interrupt(signum, frame):
    """SIGINT of the console process: one line, then exit 130 at once.

    Unwinding instead would run the teardown of worker threads, event loops and cluster
    processes, which prints tracebacks and warnings after the message, and can wait for
    running tasks.  Exiting at once leaves what a kill leaves: partial outputs that the
    next run resumes (and a lock that it takes over).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os.write(2, (("\n" if bar_open() else "") + INTERRUPTED + "\n").encode())
    for child in multiprocessing.active_children():  # local-cluster workers, process-pool workers
        try:
            child.kill()
        except (OSError, ValueError):
            pass
    os._exit(INTERRUPTED_STATUS)


_console = False  # the process is the console script (its SIGINT handler installed)


def _quiet_process_helpers():
    """Start multiprocessing's resource tracker with its standard error on /dev/null.

    On Ctrl-C the process exits at once, and the tracker (a helper process that outlives
    it) then releases the semaphores of the cluster's worker processes and would warn
    about each on standard error, after the one line.  Only for the console process.
    """
    if not _console:
        return
    from multiprocessing import resource_tracker

    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class OneLineErrors(click.Group):
    """A click group whose usage errors are one line (``nquant quantize: error: ...``), status 2."""

    def main(self, args=None, prog_name=None, **kwargs):
        kwargs.pop("standalone_mode", None)
        if args is None and threading.current_thread() is threading.main_thread():
            global _console
            _console = True  # the console script (not an in-process call)
            signal.signal(signal.SIGINT, _on_interrupt)
        try:
            return super().main(args, prog_name="nquant", standalone_mode=False, **kwargs)
        except click.UsageError as e:
            cmd = e.ctx.command_path if e.ctx is not None else "nquant"
            click.echo(f"{cmd}: error: {e.format_message()} (see '{cmd} --help')", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"nquant: error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):
                click.echo(INTERRUPTED, err=True)
                sys.exit(INTERRUPTED_STATUS)
            click.echo("nquant: aborted", err=True)
            sys.exit(1)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nquant")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def main(log_level, debug):
    """nquant: quantize NumPy, Dask and Zarr arrays with Numba kernels."""
    cluster.LOG_LEVEL = getattr(logging, log_level.upper())
    logging.getLogger("nquant").setLevel(cluster.LOG_LEVEL)


def _source(path):
    """A Dask array from a Zarr array or a .npy file (memory-mapped)."""
    import dask.array as da
    import numpy as np

    if str(path).endswith(".npy"):
        try:
            return da.from_array(np.load(path, mmap_mode="r"), name=False)
        except FileNotFoundError:
            raise InputError(f"src={path!r} does not exist") from None
        except (OSError, ValueError, EOFError) as e:  # truncated, a pickle, not a .npy file
            raise InputError(f"src={path!r} is not a readable .npy file: {_one_line(e)}") from None
    return path


def _memory_check(src, scheme, threads_per_worker, memory_limit):
    """Refuse, before a local cluster starts, chunks that cannot fit a worker's memory limit
    (``quantize_zarr`` checks the workers of a running cluster itself)."""
    x = chunked.prepare(family(scheme), scheme, open_array(src))
    check_chunk_memory(tuple(c[0] for c in x.chunks), x.dtype, memory_limit, threads_per_worker)


_model_options = _options(
    click.option("--calibration", type=click.Path(),
                 help="Models: a calibration store (.npz or Zarr group of per-tensor inputs or Hessians, "
                      "keyed by tensor name): calibrated rounding per tensor."),
    click.option("--recipe", type=click.Choice(sorted(RECIPES)),
                 help="Models: how calibrated tensors are rounded: adaptive (adaptive_round with --scheme; "
                      "the default), codebook<bits> (a codebook fitted per layer, rows scaled by their "
                      "absmax; needs no --scheme) or alloc (codebooks of 3-6 bits spread by sensitivity "
                      "within --bits-per-value)."),
    click.option("--recipe-for", "recipe_for", multiple=True, metavar="GLOB=RECIPE",
                 help="Models: the recipe of the tensors whose names match GLOB (repeatable, first match "
                      "wins; the others take --recipe): mixed precision, e.g. "
                      "'*.intermediate.dense.weight=codebook5'."),
    click.option("--bits-per-value", "bits_per_value", type=float,
                 help="Models, --recipe alloc: the budget, stored bits per value of the calibrated tensors "
                      "(side information included), spread over them by sensitivity, e.g. 4.25."),
    click.option("--damp", type=click.FloatRange(min=0), help="Models: the recipe's Hessian damping."),
    click.option("--act-order/--no-act-order", default=None,
                 help="Models: visit columns by decreasing Hessian diagonal (default: the recipe's)."),
    click.option("--include", multiple=True, help="Models: tensor name globs to quantize (repeatable; "
                                                  "default: every floating tensor of 2+ dimensions)."),
    click.option("--dequantized", type=click.Path(),
                 help="Models: also write the dequantized model to this .safetensors file."),
)


def _recipe_map(recipe, recipe_for):
    """``--recipe`` alone, or ``{glob: recipe}`` from ``--recipe-for`` with ``--recipe`` (default
    adaptive) for ``"*"``."""
    if not recipe_for:
        return recipe
    out = {}
    for item in recipe_for:
        glob, sep, name = item.rpartition("=")
        if not sep or not glob or name not in RECIPES:
            raise InputError(f"--recipe-for {item!r} is invalid: expected GLOB=RECIPE with RECIPE one of "
                             f"{sorted(RECIPES)}")
        out.setdefault(glob, name)
    out.setdefault("*", recipe or "adaptive")
    return out


def _model_text(dst, report):
    total = report["total"]
    text = (f"{dst}: {len(report) - 1} tensors, {total['values']} values, "
            f"{total['bits_per_value']:.4f} bits/value (side information included)")
    if "recipe" in total:
        plain = total["uncalibrated"]
        shown = total["recipe"] if isinstance(total["recipe"], str) else json.dumps(total["recipe"])
        text += (f"; recipe {shown}: {total['calibrated']} tensors calibrated, {len(plain)} rounded "
                 f"to nearest without a calibration entry" + (f" ({', '.join(plain[:5])}"
                                                             f"{', ...' if len(plain) > 5 else ''})" if plain else ""))
        if total["unused"]:
            text += f"; {len(total['unused'])} calibration entries match no tensor"
    if "allocation" in total:
        a = total["allocation"]
        chosen = [f"  {n}: {t['bits']} bits, " + (f"absmax per {t['block_size']} columns" if t["block_size"]
                                                  else "absmax per row") + f", {t['bits_per_value']:.3f} bits/value"
                  for n, t in report.items() if n != "total" and "bits" in t]
        text += (f"\n  budget {a['bits_per_value']} bits/value, priced by {a['priced_by']}:\n" + "\n".join(chosen))
    return text


@main.command()
@click.argument("src")
@click.argument("dst")
@_scheme_options
@_model_options
@_cluster_options("threads")
@_common
@click.option("--overwrite", is_flag=True, help="Recompute even if DST is complete.")
@click.option("--abs-error", type=float, default=None,
              help="Guarantee max |x - x_hat| <= ABS_ERROR (a uniform scheme; 16-bit codes unless --bits).")
@click.option("--fill-value", type=float, default=None,
              help="A missing-data marker (_FillValue) of SRC: kept exactly, left out of the fit (uniform schemes).")
@click.option("--compression", default="auto", show_default=True,
              type=click.Choice([c or "none" for c in COMPRESSIONS]),
              help="Lossless stage of the stored codes (auto: Lorenzo prediction + zstd for whole-byte "
                   "codes, zstd for packed ones; pcodec: smallest, slower; zstd: readable without nquant).")
@_guard
def quantize(src, dst, scheme, bits, axis, block_size, rounding, range_, seed, calibration, recipe, recipe_for,
             bits_per_value, damp, act_order, include, dequantized, scheduler, workers, threads_per_worker,
             memory_limit, as_json, progress, overwrite, abs_error, fill_value, compression):
    """Quantize SRC (a Zarr array, .npy or .safetensors file) into the nquant Zarr group DST.

    A .safetensors model gets one group per floating tensor of 2 or more dimensions; with
    --calibration, the tensors with an entry in the store are rounded against their calibration
    inputs (--recipe), in parallel.
    """
    model_flags = {"--calibration": calibration, "--recipe": recipe, "--recipe-for": recipe_for or None,
                   "--bits-per-value": bits_per_value, "--damp": damp, "--act-order": act_order,
                   "--include": include or None,
                   "--dequantized": dequantized}

    def chosen_scheme():
        s = _scheme_from(scheme, bits, axis, block_size, rounding, range_, seed)
        if abs_error is not None:
            s = resolve_scheme(s, abs_error=abs_error, bits=bits or 16)
        return s if fill_value is None else resolve_scheme(s, fill_value=fill_value)
    if str(src).endswith(".safetensors"):
        ctx = click.get_current_context()
        recipes = _recipe_map(recipe, recipe_for)
        codebook = recipe is not None and "adaptive" not in (recipes.values() if isinstance(recipes, dict)
                                                             else [recipes])
        given = [f"--{n.rstrip('_').replace('_', '-')}" for n in ("scheme", "bits", "axis", "block_size",
                                                                 "rounding", "range_", "seed", "abs_error", "fill_value")
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if codebook and given:
            raise InputError(f"{given[0]}: --recipe {recipe} chooses its own scheme (a codebook fitted per "
                             "layer, for every tensor); leave out the scheme options")
        if (bits_per_value is not None) != (recipe == "alloc" and not recipe_for):
            raise InputError(f"--bits-per-value {bits_per_value}: only with --recipe alloc (and no --recipe-for)"
                             if bits_per_value is not None else "--recipe alloc needs --bits-per-value (e.g. 4.25)")
        if bits_per_value is not None and not 0 < bits_per_value < float("inf"):
            raise InputError(f"--bits-per-value {bits_per_value} is invalid: expected a number > 0")
        s = None if codebook else chosen_scheme()
        kind = "model" if calibration is None and recipe is None else f"calibrated model {recipe or 'adaptive'}"
        if scheduler in ("local", "processes"):
            _quiet_process_helpers()
        with warmup.compiling(warmup.scheme_key(kind, s or {}), _say if progress else _quiet), \
                run_on(scheduler or "threads", workers, threads_per_worker or 1, memory_limit or "auto"):
            # the calibrated tensors run on the scheduler (one task each), the rest in this process
            report = quantize_safetensors(src, dst, s, overwrite=overwrite, include=list(include) or None,
                                          calibration=calibration, recipe=recipes, damp=damp, act_order=act_order,
                                          bits_per_value=bits_per_value, write_dequantized=dequantized)
        _emit(report, as_json, _model_text(dst, report))
        return
    used = [k for k, v in model_flags.items() if v is not None]
    if used:
        raise InputError(f"{used[0]}: only for a .safetensors model source, not {src!r}")
    s = chosen_scheme()
    source = _source(src)
    name = scheduler or "threads"
    if name == "local":
        _memory_check(source, s, threads_per_worker or 1, memory_limit or "auto")
    if name in ("local", "processes"):
        _quiet_process_helpers()
    with run_on(name, workers, threads_per_worker or 1, memory_limit or "auto") as client:
        x = open_array(source)
        compile_first = (lambda: _compile_first(s, x.dtype, x.ndim, client)) if progress else None
        q = quantize_zarr(source, dst, s, overwrite=overwrite, client=client, progress=progress,
                          before_compute=compile_first,
                          compression=None if compression == "none" else compression)
    info = _info_dict(dst, q)
    _emit(info, as_json, _info_text(info))


def _compile_first(scheme, dtype, ndim, client=None):
    """When the kernels of a chunked job of ``scheme`` on ``ndim``-D ``dtype`` arrays are not compiled
    yet, say so and compile them (here or on the workers of ``client``) by a tiny job, so that the
    compilation happens before the progress bar starts."""
    message = warmup.notice([warmup.array_key(scheme, dtype, ndim)])
    if message is None:
        return
    _say(message)
    warmup.warm_array(scheme, dtype, ndim, client)


def _info_dict(store, q):
    return {"store": os.fspath(store), "scheme": json.loads(q.scheme.to_json()), "shape": list(q.shape),
            "dtype": str(q.dtype), "chunks": [list(c) for c in q.chunks] if q.chunks else None,
            "bits_per_value": q.bits_per_value, "nbytes": q.nbytes, "metrics": q.info.get("metrics", {}),
            **storage_summary(store)}


def _info_text(info):
    m = info["metrics"]
    lines = [f"{info['store']}: {info['dtype']} {tuple(info['shape'])}",
             f"  scheme: {json.dumps({k: v for k, v in info['scheme'].items() if k != 'format_version'})}",
             f"  bits/value: {info['bits_per_value']:.4f} (side information included), {info['nbytes']} bytes"]
    if info.get("ratio_float32") is not None:
        source = info.get("ratio_source")
        against_source = "" if source is None else f", {source:.2f} vs the source's stored bytes"
        lines.append(f"  stored: {info['stored_bytes']} bytes ({info['compression'] or 'uncompressed'}), "
                     f"ratio {info['ratio_float32']:.2f} vs float32{against_source}")
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
    import numpy as np

    if is_model_group(store):
        qs = open_model(store)  # validates the group and every tensor's (StoreError otherwise)
        meta = model_meta(store)
        figures = meta.get("tensors") if isinstance(meta.get("tensors"), dict) else {}
        values = sum(int(np.prod(q.shape, dtype=np.int64)) for q in qs.values())
        bits = sum(q.bits_per_value * int(np.prod(q.shape, dtype=np.int64)) for q in qs.values())
        scheme = meta.get("scheme") if isinstance(meta.get("scheme"), dict) else {}
        lines = [f"{store}: model {meta.get('source')}, {len(qs)} tensors, {values} values, "
                 f"{bits / values if values else 0.0:.4f} bits/value (side information included)",
                 f"  scheme: {json.dumps({k: v for k, v in scheme.items() if k != 'format_version'})}"]
        if isinstance(meta.get("recipe"), (str, dict)):  # calibrated: a scheme per tensor (block size, levels)
            shown = meta["recipe"] if isinstance(meta["recipe"], str) else json.dumps(meta["recipe"])
            lines[1] = f"  recipe: {shown} (calibrated rounding, a scheme fitted per tensor)"
        for name, q in qs.items():
            t = figures.get(name) if isinstance(figures.get(name), dict) else {}
            line = f"  {name}: {t.get('dtype', q.dtype)} {tuple(q.shape)}, {q.bits_per_value:.4f} bits/value"
            if isinstance(t.get("calibrated"), bool):
                line += ", calibrated" if t["calibrated"] else ", nearest (no calibration entry)"
            if isinstance(t.get("rmse"), (int, float)) and isinstance(t.get("sqnr_db"), (int, float)):
                line += f", rmse {t['rmse']:.4g}, SQNR {t['sqnr_db']:.2f} dB"
            lines.append(line)
        _emit({"store": os.fspath(store), **meta}, as_json, "\n".join(lines))
        return
    q = open_store(store)
    d = _info_dict(store, q)
    _emit(d, as_json, _info_text(d))


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--overwrite", is_flag=True,
              help="Replace DST if it is an nquant output (never anything else).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@_guard
def dequantize(src, dst, overwrite, as_json):
    """Write the dequantized values of the nquant group SRC to DST.

    DST is a Zarr array, or a .npy file when it ends in .npy.  For a model group (made
    from a .safetensors file) DST is a Zarr group with one array per tensor, or a
    .safetensors file when it ends in .safetensors, each tensor in its original dtype.
    A model group holds only the tensors that were quantized: the others (integer
    tensors, vectors, tensors not included) are not in it and are not written.
    """
    if is_model_group(src):
        key = warmup.scheme_key("dequantize model", model_meta(src).get("scheme") or {})
        with warmup.compiling(key, _say):
            written = dequantize_model(src, dst, overwrite=overwrite)
        lines = [f"{dst}: {len(written)} tensors"]
        lines += [f"  {name}: {t['dtype']} {tuple(t['shape'])}" for name, t in written.items()]
        _emit({"dst": dst, "tensors": written}, as_json, "\n".join(lines))
        return
    if str(dst).endswith(".safetensors"):
        raise InputError(f"dst={dst!r}: a .safetensors output is for model groups; {src!r} is one array "
                         "(write a Zarr array or a .npy file)")
    q = open_store(src)
    arr = dequantize_zarr(src, dst, overwrite=overwrite,
                          before_compute=lambda: _compile_first(q.scheme, q.dtype, len(q.shape)))
    _emit({"dst": dst, "dtype": str(arr.dtype), "shape": list(arr.shape)}, as_json,
          f"{dst}: {arr.dtype} {tuple(arr.shape)}")


def _chunk_check(store, decode):
    """Every chunk of the nquant group ``store`` read and checked; a StoreError naming the first problem."""
    r = verify_chunks(store, decode=decode)
    if r["problems"]:
        more = f" (and {len(r['problems']) - 1} more)" if len(r["problems"]) > 1 else ""
        raise StoreError(f"store={os.fspath(store)!r} failed verification: "
                         f"{_one_line(r['problems'][0])}{more}")
    return r


def _chunk_text(r):
    how = "checksums verified" if r["verified"] else "unverified: written without checksums"
    return f"{r['chunks']} chunks read, {how}"


@main.command()
@click.argument("store")
@click.option("--source", default=None,
              help="The original: a Zarr array or .npy file, or the .safetensors file of a model group; "
                   "the error is recomputed against it.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@_guard
def verify(store, source, as_json):
    """Read and check every chunk of STORE; with --source, recompute its error against the source.

    Each chunk of the codes and side arrays is read: missing chunks, checksum mismatches
    (stores written with checksums) and codes beyond the levels are errors (status 2).
    STORE may be a model group made from a .safetensors file: every tensor is checked,
    and --source gives the error per tensor and in total.
    """
    if is_model_group(store):
        if source is not None and not str(source).endswith(".safetensors"):
            raise InputError(f"source={source!r}: the model group {store!r} is verified against its "
                             ".safetensors file")
        names = list(open_model(store))
        checks = {name: _chunk_check(member_location(store, name), decode=source is None) for name in names}
        chunks = {"chunks": sum(r["chunks"] for r in checks.values()),
                  "verified": all(r["verified"] for r in checks.values())}
        d = {"store": os.fspath(store), "tensors": len(names), **chunks}
        lines = [f"{store}: model, {len(names)} tensors, {_chunk_text(chunks)}"]
        if source is not None:
            figures = verify_model(store, source)
            d["figures"] = figures
            for name, m in figures.items():
                lines.append(f"  {name}: rmse {m['rmse']:.4g}, max abs {m['max_abs']:.4g}, "
                             f"SQNR {m['sqnr_db']:.2f} dB, {m['bits_per_value']:.4f} bits/value"
                             if "rmse" in m else f"  {name}: no values")
        _emit(d, as_json, "\n".join(lines))
        return
    if source is not None and str(source).endswith(".safetensors"):
        raise InputError(f"source={source!r}: a .safetensors source is for model groups; {store!r} is one "
                         "array (give its Zarr array or .npy file)")
    r = _chunk_check(store, decode=source is None)
    d = {"store": os.fspath(store), "chunks": r["chunks"], "verified": r["verified"]}
    text = f"{store}: {_chunk_text(r)}"
    if source is not None:
        m = wf.verify(store, source)
        d.update(m)
        text += (f"; rmse {m['rmse']:.4g}, max abs {m['max_abs']:.4g}, SQNR {m['sqnr_db']:.2f} dB, "
                 f"bias {m['bias']:.3g}, {m['bits_per_value']:.4f} bits/value")
    _emit(d, as_json, text)


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
@click.option("--max-values", type=click.IntRange(min=0), default=1 << 20, show_default=True,
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
    k = (1 << bits) if k is None else k
    if not out.endswith((".json", ".npy")):
        raise click.BadParameter(f"{out!r} is invalid: expected a .json or .npy file name", param_hint="OUT")
    if os.path.exists(out) and not overwrite:
        raise click.BadParameter(f"{out!r} exists; pass --overwrite to replace it", param_hint="OUT")
    if src.endswith(".npy"):
        _source(src)  # a missing, truncated or foreign .npy file: one line naming it
    with warmup.compiling(f"fit-codebook {method}", _say):
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
    rows = wf.plan(wf.load(workflow, wf.parse_assignments(assignments)))
    lines = [f"{'job':<20} {'shape':<18} {'chunks':<16} {'MB in':>8} {'MB out':>8} {'bits/val':>8} {'tasks':>6}"]
    for r in rows:
        lines.append(f"{r['job']:<20} {str(tuple(r['shape'])):<18} {str(tuple(r['chunks'])):<16} "
                     f"{r['bytes_in'] / 1e6:>8.2f} {r['bytes_out'] / 1e6:>8.2f} {r['bits_per_value']:>8.3f} "
                     f"{r['tasks']:>6}")
    _emit(rows, as_json, "\n".join(lines))


def _workflow_memory_check(spec, given):
    """Check the workflow's cluster settings, and on a local cluster refuse, before the run, an array
    job whose chunks cannot fit a worker's memory limit (the plan knows the chunks)."""
    import numpy as np

    cfg = spec.get("cluster", {})

    def setting(key, option):  # the command line wins over the workflow file
        return (given[key], option) if given.get(key) is not None else (cfg.get(key), f"cluster.{key}")

    (workers, wname), (threads, tname) = setting("workers", "--workers"), setting("threads_per_worker",
                                                                                   "--threads-per-worker")
    check_count(workers, wname)
    threads = check_count(threads, tname) or 1
    (limit, lname), (name, _) = setting("memory_limit", "--memory-limit"), setting("scheduler", "--scheduler")
    name = name or "threads"
    limit = "auto" if limit is None else limit
    parse_memory_limit(limit, threads, name=lname)
    if name in ("local", "processes"):
        _quiet_process_helpers()
    if name != "local":
        return
    for row in wf.plan(spec):
        if row["kind"] != "array" or not row["shape"]:
            continue
        itemsize = row["bytes_in"] // max(1, int(np.prod(row["shape"], dtype=np.int64)))
        dtype = np.dtype(f"f{itemsize if itemsize in (2, 4, 8) else 4}")
        check_chunk_memory(row["chunks"], dtype, limit, threads, param=lname)


def _run(workflow, assignments, overwrite, progress, scheduler, workers, threads_per_worker, memory_limit,
         as_json):
    spec = wf.load(workflow, wf.parse_assignments(assignments))
    given = {"scheduler": scheduler, "workers": workers, "threads_per_worker": threads_per_worker,
             "memory_limit": memory_limit}
    _workflow_memory_check(spec, given)
    echo = (lambda s: click.echo(s, err=True)) if as_json else click.echo
    report = wf.run(spec, overwrite=overwrite, progress=progress, echo=echo,
                    notice=_say if progress else _quiet,
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
        compiled = sum(j.get("compile_seconds") or 0.0 for j in report["jobs"] if j["status"] != "skipped")
        click.echo(f"  (MB/s: the jobs' work, kernel compilation excluded: {compiled:.1f} s)")
        click.echo(f"report: {report['paths']['html']}")


@main.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE", help="Override a variable.")
@click.option("--overwrite", is_flag=True, help="Start over (also into an output made by another spec).")
@_cluster_options("the workflow's [cluster] scheduler, else threads")
@_common
@_guard
def run(workflow, assignments, overwrite, scheduler, workers, threads_per_worker, memory_limit, as_json,
        progress):
    """Run WORKFLOW (a TOML file): sources, quantize, verify, report; resumes an interrupted run."""
    _run(workflow, assignments, overwrite, progress, scheduler, workers, threads_per_worker, memory_limit,
         as_json)


@main.command("warmup")
@click.option("--preset", "names", multiple=True, type=click.Choice(list(PRESETS)),
              help="A preset to compile for (repeatable)  [default: every preset].")
@click.option("--dtype", "dtypes", multiple=True, type=click.Choice(["float32", "float16", "float64"]),
              default=("float32",), show_default=True,
              help="Dtype of the arrays to compile for (repeatable).")
@click.option("--ndim", "ndims", multiple=True, type=click.IntRange(min=1), default=(1, 2), show_default=True,
              help="Dimensions of the arrays to compile for (repeatable).")
@click.option("--scheduler", default=None,
              help="Compile on the workers of this cluster (tcp://host:port)  [default: this process].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@_guard
def warmup_command(names, dtypes, ndims, scheduler, as_json):
    """Compile the kernels of the presets ahead of time, into Numba's on-disk cache.

    Without it the first use of each scheme compiles its kernels (seconds each).  Run it once
    when building a container image, or on a new machine before its first jobs, or with
    --scheduler on the workers of a cluster whose machines do not share the cache directory.
    The cache is NUMBA_CACHE_DIR when set, else the __pycache__ beside nquant/kernels (or, when
    that is not writable, Numba's folder in the user's cache); it holds until nquant or Numba
    changes.
    """
    chosen = {name: PRESETS[name] for name in (names or PRESETS)}
    if scheduler is not None and not scheduler.startswith(("tcp://", "tls://")):
        raise InputError(f"scheduler={scheduler!r} is invalid: expected a cluster's address tcp://host:port")
    rows = []
    with run_on(scheduler or "sync") as client:
        for name, scheme in chosen.items():
            for dtype in dtypes:
                for ndim in ndims:
                    t0 = time.perf_counter()
                    result = (warmup.warm_array(scheme, dtype, ndim, client)
                              or {"seconds": 0.0, "kernels": None})
                    row = {"preset": name, "dtype": dtype, "ndim": ndim, "seconds": time.perf_counter() - t0,
                           "compile_seconds": result["seconds"], "kernels": result["kernels"]}
                    rows.append(row)
                    if not as_json:
                        what = (f"{len(row['kernels'])} kernels compiled in {row['compile_seconds']:.2f} s"
                                if row["kernels"] else "cached already" if row["kernels"] is not None
                                else "not for these arrays")
                        click.echo(f"{name:<14} {dtype} {ndim}-D: {what} ({row['seconds']:.2f} s)")
    total = sum(r["compile_seconds"] for r in rows)
    where = warmup.cache_dir() if client is None else "the workers' caches"
    _emit({"cache": where, "compile_seconds": total, "paths": rows}, as_json,
          f"compiled in {total:.1f} s into {where}")


def demo_workflow_path():
    """Path of the packaged demo workflow (``workflows/demo.toml`` in the repository)."""
    return str(resources.files("nquant") / "workflows" / "demo.toml")


@main.command()
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE",
              help="Override a variable of the demo workflow (e.g. out=DIR, rows=512).")
@click.option("--overwrite", is_flag=True, help="Start over.")
@_cluster_options(f"{_workflow_scheduler(demo_workflow_path())} (the demo workflow's [cluster] table)")
@_common
@_guard
def demo(assignments, overwrite, scheduler, workers, threads_per_worker, memory_limit, as_json, progress):
    """The main job: make a synthetic Zarr store, quantize it three ways, verify, report.

    The demo runs on the scheduler of its workflow's [cluster] table (a local cluster of worker
    processes), unless --scheduler names another.
    """
    _run(demo_workflow_path(), assignments, overwrite, progress, scheduler, workers, threads_per_worker,
         memory_limit, as_json)


if __name__ == "__main__":
    main()
