"""Declarative batch workflows: TOML files that chain source -> quantize -> verify -> report.

A workflow file::

    [workflow]            name, output (directory for the outputs, manifest and report)
    [vars]                values substituted for "${name}" anywhere; overridable (--set k=v)
    [cluster]             scheduler ("threads" | "processes" | "local" | "tcp://..."),
                          workers, threads_per_worker, memory_limit
    [sources.<name>]      path (a Zarr array), optional generate = {kind, shape, chunks,
                          seed, dtype}: made if missing
    [[jobs]]              name, source, scheme (preset or JSON), overrides = {field = value},
                          verify (default true)

Each job streams its source to ``<output>/<job>.zarr`` with ``nquant.quantize_zarr``
(calibrate, quantize, write), recomputes the error against the source (verify), and
the report step writes ``report.json`` and ``report.md`` (with PNG plots when
matplotlib is installed).  A manifest records the workflow's fingerprint and each
job's state: a rerun resumes unfinished jobs (chunk by chunk), skips finished ones,
and refuses an output made by a different spec unless ``overwrite``.
"""

import copy
import hashlib
import json
import os
import re
import time
import tomllib

import numpy as np

from nquant import __version__
from nquant.errors import NQuantError

SCHEMA = {
    "workflow": {"name": str, "output": str, "description": str},
    "vars": None,  # free-form
    "cluster": {"scheduler": str, "workers": int, "threads_per_worker": int, "memory_limit": (str, int)},
    "sources": {"*": {"path": str, "generate": {"kind": str, "shape": list, "chunks": list, "seed": int,
                                                 "dtype": str}}},
    "jobs": [{"name": str, "source": str, "scheme": (str, dict), "overrides": dict, "verify": bool}],
}
GENERATORS = ("weights", "gaussian", "lognormal")


class WorkflowError(NQuantError):
    """A workflow file is invalid (the message names the key's path) or cannot run."""


# ----------------------------------------------------------------------------- parsing


def _parse_value(text):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items):
    """``["rows=512", "out=x"]`` -> ``{"rows": 512, "out": "x"}`` (TOML values, else strings)."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise WorkflowError(f"--set {item!r} is invalid: expected name=value")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(obj, variables, path):
    if isinstance(obj, dict):
        return {k: _substitute(v, variables, f"{path}.{k}" if path else k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, variables, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, str):
        m = _VAR.fullmatch(obj)
        if m:
            if m.group(1) not in variables:
                raise WorkflowError(f"{path}: unknown variable ${{{m.group(1)}}}")
            return variables[m.group(1)]

        def repl(mm):
            if mm.group(1) not in variables:
                raise WorkflowError(f"{path}: unknown variable ${{{mm.group(1)}}}")
            return str(variables[mm.group(1)])

        return _VAR.sub(repl, obj)
    return obj


def _check(obj, schema, path):
    if schema is None:
        return
    if isinstance(schema, list):
        if not isinstance(obj, list):
            raise WorkflowError(f"{path}: expected an array of tables ([[{path}]]), got {type(obj).__name__}")
        for i, item in enumerate(obj):
            _check(item, schema[0], f"{path}[{i}]")
        return
    if isinstance(schema, dict):
        if not isinstance(obj, dict):
            raise WorkflowError(f"{path}: expected a table, got {obj!r}")
        if "*" in schema:
            for k, v in obj.items():
                _check(v, schema["*"], f"{path}.{k}")
            return
        for k, v in obj.items():
            if k not in schema:
                raise WorkflowError(f"{path + '.' if path else ''}{k}: unknown key (allowed: {sorted(schema)})")
            _check(v, schema[k], f"{path + '.' if path else ''}{k}")
        return
    types = schema if isinstance(schema, tuple) else (schema,)
    if isinstance(obj, bool) and bool not in types:
        raise WorkflowError(f"{path}: expected {' or '.join(t.__name__ for t in types)}, got {obj!r}")
    if not isinstance(obj, types):
        raise WorkflowError(f"{path}: expected {' or '.join(t.__name__ for t in types)}, got {obj!r}")


def load(path, overrides=None):
    """Read, substitute and validate a workflow file; returns the resolved spec (dict).

    Raises ``WorkflowError`` naming the path of the bad key (``jobs[1].scheme``)
    before anything runs.
    """
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise WorkflowError(f"workflow file {os.fspath(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise WorkflowError(f"workflow file {os.fspath(path)!r} is not valid TOML: {e}") from None
    variables = dict(raw.get("vars", {}))
    unknown = set(overrides or {}) - set(variables)
    if unknown:
        raise WorkflowError(f"--set {sorted(unknown)[0]}: not a variable of this workflow "
                            f"(variables: {sorted(variables)})")
    variables.update(overrides or {})
    spec = _substitute({k: v for k, v in raw.items() if k != "vars"}, variables, "")
    spec["vars"] = variables
    _check(spec, SCHEMA, "")
    validate(spec)
    return spec


def validate(spec):
    """Semantic checks: required keys, known sources and generators, valid schemes."""
    from nquant.presets import resolve_scheme

    wf = spec.get("workflow", {})
    for key in ("name", "output"):
        if key not in wf:
            raise WorkflowError(f"workflow.{key}: missing")
    jobs = spec.get("jobs", [])
    if not jobs:
        raise WorkflowError("jobs: a workflow needs at least one [[jobs]] table")
    names = set()
    for i, job in enumerate(jobs):
        for key in ("name", "source", "scheme"):
            if key not in job:
                raise WorkflowError(f"jobs[{i}].{key}: missing")
        if job["name"] in names:
            raise WorkflowError(f"jobs[{i}].name: duplicate job name {job['name']!r}")
        names.add(job["name"])
        if job["source"] not in spec.get("sources", {}):
            raise WorkflowError(f"jobs[{i}].source: unknown source {job['source']!r} "
                                f"(sources: {sorted(spec.get('sources', {}))})")
        try:
            resolve_scheme(job["scheme"], **job.get("overrides", {}))
        except NQuantError as e:
            raise WorkflowError(f"jobs[{i}].scheme: {e}") from None
    for name, src in spec.get("sources", {}).items():
        if "path" not in src:
            raise WorkflowError(f"sources.{name}.path: missing")
        gen = src.get("generate")
        if gen is not None:
            if gen.get("kind", "weights") not in GENERATORS:
                raise WorkflowError(f"sources.{name}.generate.kind: {gen.get('kind')!r} is not one of "
                                    f"{GENERATORS}")
            if "shape" not in gen:
                raise WorkflowError(f"sources.{name}.generate.shape: missing")
    sched = spec.get("cluster", {}).get("scheduler", "threads")
    if sched not in ("threads", "processes", "sync", "local") and "://" not in sched:
        raise WorkflowError(f"cluster.scheduler: {sched!r} is not threads, processes, sync, local or "
                            "tcp://host:port")


def fingerprint(spec):
    """Hash of the resolved spec and nquant's version (what makes outputs comparable)."""
    body = {k: v for k, v in spec.items() if k not in ("vars", "cluster")}
    text = json.dumps({"spec": body, "nquant": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- sources


def _generate_block(block_info=None, kind="weights", seed=0, out_dtype="float32"):
    info = block_info[None]
    loc = info["array-location"]
    shape = info["chunk-shape"]
    rng = np.random.default_rng([seed] + [lo for lo, _ in loc])
    x = rng.standard_normal(shape)
    if kind == "weights" and len(shape) >= 1:
        rows = np.random.default_rng([seed, 1] + [lo for lo, _ in loc[:1]]).lognormal(0, 0.5, (shape[0],))
        x *= rows.reshape((-1,) + (1,) * (len(shape) - 1))
        x[rng.random(shape) < 1e-3] *= 8
    elif kind == "lognormal":
        x = np.exp(x)
    return x.astype(out_dtype)


def make_source(path, generate):
    """Write a synthetic Zarr array at ``path`` unless it exists (written, then renamed)."""
    import shutil

    import dask.array as da
    import zarr

    if os.path.exists(path):
        return zarr.open_array(path, mode="r")
    shape = tuple(int(s) for s in generate["shape"])
    chunks = tuple(int(c) for c in generate.get("chunks", shape))
    dtype = generate.get("dtype", "float32")
    x = da.map_blocks(_generate_block, chunks=da.core.normalize_chunks(chunks, shape), dtype=dtype,
                      kind=generate.get("kind", "weights"), seed=int(generate.get("seed", 0)),
                      out_dtype=dtype)
    tmp = path.rstrip("/") + ".partial"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    da.to_zarr(x, tmp, overwrite=True)
    os.replace(tmp, path)
    return zarr.open_array(path, mode="r")


# ----------------------------------------------------------------------------- plan / run


def _job_output(spec, job):
    return os.path.join(spec["workflow"]["output"], f"{job['name']}.zarr")


def plan(spec):
    """Dry run: per job the shapes, chunks, bytes in and out, bits/value and task count.

    Computes nothing; sources that do not exist yet are described from their
    ``generate`` table.
    """
    import zarr

    from nquant.presets import resolve_scheme

    rows = []
    for job in spec["jobs"]:
        src = spec["sources"][job["source"]]
        scheme = resolve_scheme(job["scheme"], **job.get("overrides", {}))
        if os.path.exists(src["path"]):
            arr = zarr.open_array(src["path"], mode="r")
            shape, chunks, dtype = tuple(arr.shape), tuple(arr.chunks), arr.dtype
        else:
            gen = src.get("generate", {})
            shape = tuple(int(v) for v in gen.get("shape", ()))
            chunks = tuple(int(v) for v in gen.get("chunks", shape))
            dtype = np.dtype(gen.get("dtype", "float32"))
        n = int(np.prod(shape, dtype=np.int64))
        nchunks = int(np.prod([-(-s // c) for s, c in zip(shape, chunks)], dtype=np.int64)) if shape else 1
        bpv = estimate_bits_per_value(scheme, shape)
        rows.append({"job": job["name"], "source": src["path"], "output": _job_output(spec, job),
                     "scheme": json.loads(scheme.to_json()), "shape": list(shape), "chunks": list(chunks),
                     "bytes_in": n * np.dtype(dtype).itemsize, "bytes_out": int(np.ceil(n * bpv / 8)),
                     "bits_per_value": bpv, "tasks": nchunks})
    return rows


def estimate_bits_per_value(scheme, shape):
    """Bits per value of ``scheme`` on an array of ``shape``, side information included."""
    n = int(np.prod(shape, dtype=np.int64)) or 1
    bits = scheme.bits
    if getattr(scheme, "block_size", None):
        groups = -(-n // scheme.block_size)
    elif getattr(scheme, "axis", None) is not None:
        groups = shape[scheme.axis]
    else:
        groups = 1
    return bits + groups * 64 / n


class Manifest:
    """``<output>/manifest.json``: the workflow's fingerprint and each job's state."""

    def __init__(self, output):
        self.path = os.path.join(output, "manifest.json")
        self.data = None
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.data = json.load(f)

    def start(self, fp, overwrite):
        if self.data and self.data.get("fingerprint") != fp and not overwrite:
            raise WorkflowError(f"output {os.path.dirname(self.path)!r} was made by a different workflow "
                                f"spec (fingerprint {self.data.get('fingerprint')} != {fp}); pass "
                                "--overwrite to start over")
        if not self.data or overwrite or self.data.get("fingerprint") != fp:
            self.data = {"fingerprint": fp, "nquant": __version__, "jobs": {}}
        self.save()

    def state(self, job):
        return self.data["jobs"].get(job, {}).get("state", "pending")

    def set(self, job, **fields):
        self.data["jobs"].setdefault(job, {}).update(fields)
        self.save()

    def save(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2, default=str)
        os.replace(tmp, self.path)


def verify(store, source):
    """Error figures of a stored quantized array against its source (streamed, chunk by chunk)."""
    import dask
    import dask.array as da

    from nquant.api import dequantize
    from nquant.metrics import error_stats, merge_error_stats, metrics_from_stats
    from nquant.store import _open_source, open

    q = open(store)
    x = _open_source(source).rechunk(q.chunks) if q.shape else _open_source(source)
    x_hat = dequantize(q)
    parts = [dask.delayed(error_stats)(a, b) for a, b in zip(x.to_delayed().ravel(), x_hat.to_delayed().ravel())]
    merged = None
    for s in dask.compute(*parts):
        merged = s if merged is None else merge_error_stats(merged, s)
    out = metrics_from_stats(merged)
    out["bits_per_value"] = q.bits_per_value
    return out


def run(spec, overwrite=False, progress=True, echo=print, scheduler_overrides=None):
    """Run a loaded workflow; returns the report dict (also written to the output directory)."""
    from nquant.cluster import scheduler
    from nquant.presets import resolve_scheme
    from nquant.store import is_complete, quantize_zarr

    out_dir = spec["workflow"]["output"]
    os.makedirs(out_dir, exist_ok=True)
    manifest = Manifest(out_dir)
    manifest.start(fingerprint(spec), overwrite)
    cl = {**spec.get("cluster", {}), **{k: v for k, v in (scheduler_overrides or {}).items() if v is not None}}
    results = []
    with scheduler(cl.get("scheduler", "threads"), cl.get("workers"), cl.get("threads_per_worker", 1),
                   cl.get("memory_limit", "auto")) as client:
        for name, src in spec.get("sources", {}).items():
            if src.get("generate") is not None and not os.path.exists(src["path"]):
                echo(f"source {name}: generating {src['path']}")
                make_source(src["path"], src["generate"])
        for job in spec["jobs"]:
            name = job["name"]
            dst = _job_output(spec, job)
            src = spec["sources"][job["source"]]["path"]
            scheme = resolve_scheme(job["scheme"], **job.get("overrides", {}))
            if manifest.state(name) == "done" and is_complete(dst) and not overwrite:
                echo(f"job {name}: done already, skipped")
                results.append(manifest.data["jobs"][name]["result"])
                continue
            manifest.set(name, state="running")
            echo(f"job {name}: {src} -> {dst}")
            t0 = time.perf_counter()
            quantize_zarr(src, dst, scheme, overwrite=overwrite, client=client, progress=progress)
            seconds = time.perf_counter() - t0
            figures = verify(dst, src) if job.get("verify", True) else {}
            import zarr

            arr = zarr.open_array(src, mode="r")
            result = {"job": name, "source": src, "output": dst, "scheme": json.loads(scheme.to_json()),
                      "shape": list(arr.shape), "seconds": seconds,
                      "throughput_mb_s": arr.nbytes / seconds / 1e6, **figures}
            manifest.set(name, state="done", result=result)
            results.append(result)
    report = {"workflow": spec["workflow"]["name"], "fingerprint": manifest.data["fingerprint"],
              "nquant": __version__, "jobs": results}
    from nquant.report import write_report

    report["paths"] = write_report(report, out_dir)
    return report
