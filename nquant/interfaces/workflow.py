"""Declarative batch workflows: TOML files that chain source -> quantize -> verify -> report.

A workflow file::

    [workflow]            name, output (directory for the outputs, manifest and report)
    [vars]                values substituted for "${name}" anywhere; overridable (--set k=v)
    [cluster]             scheduler ("threads" | "processes" | "local" | "tcp://..."),
                          workers, threads_per_worker, memory_limit
    [sources.<name>]      path (a Zarr array, .npy or .safetensors file), tensor (one
                          tensor of a .safetensors file), generate = {kind, shape, chunks,
                          seed, dtype, clusters, layers}: made if missing (nquant.interfaces.sources)
    [[jobs]]              name, source, scheme (preset, JSON, .json/.npy file, or a table:
                          {type = "pq", M, nbits, ...}), overrides = {field = value},
                          verify (default true), include (model jobs: tensor name globs),
                          queries, k (pq jobs: held-out query rows, recall@k),
                          calibration (model jobs: a calibration store, which makes the job a
                          "calibrated" one), recipe, damp, act_order (calibrated jobs; a codebook
                          recipe needs no scheme)

Steps per job (:mod:`nquant.interfaces.jobs`): source -> calibrate -> quantize -> write (into
``<output>/<job>.zarr``; a .safetensors source without ``tensor`` quantizes the whole
model, with ``calibration`` by calibrated rounding per tensor, a ``pq`` scheme runs a
product quantizer) -> verify (the error recomputed
against the source) -> report (``report.json``, ``report.md`` and a self-contained
``report.html`` with figures when matplotlib is installed; :mod:`nquant.interfaces.report`).
Variables may refer to other variables.  A manifest records the workflow's
fingerprint and each job's state: a rerun resumes unfinished jobs (array jobs chunk by
chunk), skips finished ones, and refuses an output made by a different spec unless
``overwrite``.
"""

import hashlib
import json
import os
import re
import time
import tomllib

import numpy as np

from nquant import __version__, limits
from nquant.api import dequantize
from nquant.cluster import scheduler
from nquant.errors import InputError, NQuantError
from nquant.families.registry import family
from nquant.interfaces import jobs as J
from nquant.interfaces import warmup
from nquant.interfaces.presets import resolve_scheme
from nquant.interfaces.report import write_report
from nquant.interfaces.sources import (
    GENERATORS,
    check_generate,
    describe,
    kind_of,
    make_source,
    model_itemsize,
    model_tensors,
    open_source,
    remove_source,
)
from nquant.metrics import error_stats, merge_error_stats, metrics_from_stats
from nquant.calibration import recipe_label, recipes_for
from nquant.models import is_complete_model
from nquant.outputs import check_name, check_source_destination, inside, writing
from nquant.store import is_complete, open_array
from nquant.store import open as open_store

SCHEMA = {
    "workflow": {"name": str, "output": str, "description": str},
    "vars": None,  # free-form
    "cluster": {"scheduler": str, "workers": int, "threads_per_worker": int, "memory_limit": (str, int)},
    "sources": {"*": {"path": str, "tensor": str,
                      "generate": {"kind": str, "shape": list, "chunks": list, "seed": int, "dtype": str,
                                   "clusters": int, "layers": int}}},
    "jobs": [{"name": str, "source": str, "scheme": (str, dict), "overrides": dict, "verify": bool,
              "include": (str, list), "queries": int, "k": int, "calibration": str, "recipe": (str, dict),
              "damp": (int, float), "act_order": bool}],
}


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
    """``obj`` with every ``${name}`` replaced by ``variables[name]`` (already resolved): a
    string that is exactly ``"${name}"`` takes the variable's value and type, others get its
    text.  Unknown names, and strings longer than ``limits.MAX_VAR_LENGTH``, are errors."""
    if isinstance(obj, dict):
        return {k: _substitute(v, variables, f"{path}.{k}" if path else k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, variables, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, str):
        return _expand(obj, lambda name: _lookup(variables, name, path), path)
    return obj


def _lookup(variables, name, path):
    if name not in variables:
        raise WorkflowError(f"{path}: unknown variable ${{{name}}}")
    return variables[name]


def _expand(text, value_of, path):
    """``text`` with its ``${name}`` references replaced by ``value_of(name)``, bounded in length."""
    m = _VAR.fullmatch(text)
    if m:
        return value_of(m.group(1))
    pieces, pos, size = [], 0, 0
    for mm in _VAR.finditer(text):
        piece = str(value_of(mm.group(1)))
        pieces += [text[pos:mm.start()], piece]
        size += mm.start() - pos + len(piece)
        pos = mm.end()
        if size > limits.MAX_VAR_LENGTH:
            raise WorkflowError(f"{path}: expands to more than {limits.MAX_VAR_LENGTH} characters "
                                "(a variable that repeats itself?)")
    if not pieces:
        return text
    out = "".join(pieces) + text[pos:]
    left = _VAR.search(out)
    if left:  # pieces that only together spell a reference ("$" and "{x}")
        raise WorkflowError(f"{path}: {left.group(0)} is left unresolved after substitution")
    return out


def resolve_variables(variables):
    """Every variable with the variables it refers to substituted (depth first, each once).

    A reference chain that comes back to itself is an error naming the cycle
    (``vars.a: variable cycle a -> b -> a``); so are unknown names and expansions longer than
    ``limits.MAX_VAR_LENGTH`` characters.
    """
    done = {}

    def visit(name, chain):
        if name in done:
            return done[name]
        if name in chain:
            cycle = chain[chain.index(name):] + [name]
            raise WorkflowError(f"vars.{cycle[0]}: variable cycle {' -> '.join(cycle)}")
        here = chain + [name]

        def value_of(ref):
            if ref not in variables:
                raise WorkflowError(f"vars.{name}: unknown variable ${{{ref}}}")
            return visit(ref, here)

        done[name] = _walk(variables[name], lambda text, path: _expand(text, value_of, path), f"vars.{name}")
        return done[name]

    for name in variables:
        visit(name, [])
    return done


def _walk(obj, on_string, path):
    """``obj`` with ``on_string(text, path)`` applied to every string in it."""
    if isinstance(obj, dict):
        return {k: _walk(v, on_string, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [_walk(v, on_string, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, str):
        return on_string(obj, path)
    return obj


def _check_depth(obj, path):
    """``WorkflowError`` for tables or arrays nested deeper than ``limits.MAX_NESTING``
    (iterative: a deep document cannot exhaust the stack here)."""
    stack = [(obj, path, 0)]
    while stack:
        o, p, d = stack.pop()
        if d > limits.MAX_NESTING:
            raise WorkflowError(f"{p}: nested more than {limits.MAX_NESTING} levels deep")
        if isinstance(o, dict):
            stack += [(v, f"{p}.{k}" if p else k, d + 1) for k, v in o.items()]
        elif isinstance(o, list):
            stack += [(v, f"{p}[{i}]", d + 1) for i, v in enumerate(o)]


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise WorkflowError(f"workflow file {os.fspath(path)!r} is not valid TOML: {e}") from None
    except RecursionError:
        raise WorkflowError(f"workflow file {os.fspath(path)!r} nests tables or arrays too deeply "
                            f"(at most {limits.MAX_NESTING} levels)") from None
    except OSError as e:
        raise WorkflowError(f"workflow file {os.fspath(path)!r} cannot be read: {e}") from None
    _check_depth(raw, "")
    variables = raw.get("vars", {})
    if not isinstance(variables, dict):
        raise WorkflowError(f"vars: expected a table, got {variables!r}")
    variables = dict(variables)
    unknown = set(overrides or {}) - set(variables)
    if unknown:
        raise WorkflowError(f"--set {sorted(unknown)[0]}: not a variable of this workflow "
                            f"(variables: {sorted(variables)})")
    variables.update(overrides or {})
    # variables may refer to variables ("${out}/model.safetensors"), in any order
    variables = resolve_variables(variables)
    spec = _substitute({k: v for k, v in raw.items() if k != "vars"}, variables, "")
    spec["vars"] = variables
    _check(spec, SCHEMA, "")
    validate(spec)
    return spec


def validate(spec):
    """Semantic checks: required keys, known sources and generators, valid schemes."""
    wf = spec.get("workflow", {})
    for key in ("name", "output"):
        if key not in wf:
            raise WorkflowError(f"workflow.{key}: missing")
    jobs = spec.get("jobs", [])
    if not jobs:
        raise WorkflowError("jobs: a workflow needs at least one [[jobs]] table")
    for name, src in spec.get("sources", {}).items():
        if "path" not in src:
            raise WorkflowError(f"sources.{name}.path: missing")
        kind = kind_of(src["path"])
        if "tensor" in src and kind != "safetensors":
            raise WorkflowError(f"sources.{name}.tensor: only a .safetensors source has tensors "
                                f"(path {src['path']!r})")
        gen = src.get("generate")
        if gen is not None:
            gkind = gen.get("kind", "weights")
            if gkind not in GENERATORS:
                raise WorkflowError(f"sources.{name}.generate.kind: {gkind!r} is not one of {GENERATORS}")
            if (gkind == "model") != (kind == "safetensors"):
                raise WorkflowError(f"sources.{name}.generate.kind: {gkind!r} cannot make {src['path']!r} "
                                    "(kind 'model' makes .safetensors files, the others Zarr arrays or .npy)")
            if "shape" not in gen:
                raise WorkflowError(f"sources.{name}.generate.shape: missing")
            for key in ("shape", "chunks"):
                vals = gen.get(key, [])
                for j, v in enumerate(vals):
                    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                        raise WorkflowError(f"sources.{name}.generate.{key}[{j}]: {v!r} is not an integer >= 1")
            if "chunks" in gen and len(gen["chunks"]) != len(gen["shape"]):
                raise WorkflowError(f"sources.{name}.generate.chunks: {gen['chunks']} does not match "
                                    f"shape {gen['shape']}")
            if gkind == "model" and len(gen["shape"]) != 2:
                raise WorkflowError(f"sources.{name}.generate.shape: {gen['shape']} is invalid for kind "
                                    "'model': expected [rows, cols]")
            dtypes = ("float16", "bfloat16", "float32") if gkind == "model" else ("float16", "float32", "float64")
            if gen.get("dtype", dtypes[-1] if gkind != "model" else "float16") not in dtypes:
                raise WorkflowError(f"sources.{name}.generate.dtype: {gen['dtype']!r} is not one of {dtypes}")
            try:
                check_generate(gen if gkind != "model" else {"dtype": "float16", **gen}, kind)
            except NQuantError as e:
                raise WorkflowError(f"sources.{name}.{e}") from None
    names = set()
    for i, job in enumerate(jobs):
        for key in ("name", "source", "scheme"):
            if key == "scheme" and _codebook_recipe(job):
                continue
            if key not in job:
                raise WorkflowError(f"jobs[{i}].{key}: missing")
        if job["name"] in names:
            raise WorkflowError(f"jobs[{i}].name: duplicate job name {job['name']!r}")
        names.add(job["name"])
        if job["source"] not in spec.get("sources", {}):
            raise WorkflowError(f"jobs[{i}].source: unknown source {job['source']!r} "
                                f"(sources: {sorted(spec.get('sources', {}))})")
        _validate_job(spec, i, job)
    check_names(spec)
    sched = spec.get("cluster", {}).get("scheduler", "threads")
    if sched not in ("threads", "processes", "sync", "local") and "://" not in sched:
        raise WorkflowError(f"cluster.scheduler: {sched!r} is not threads, processes, sync, local or "
                            "tcp://host:port")


def _codebook_recipe(job):
    """Whether a job's recipes all choose their own scheme (``codebook<bits>``; ``recipe`` is a name
    or a table ``{glob = name}``)."""
    recipe = job.get("recipe", "adaptive")
    return "adaptive" not in (recipe.values() if isinstance(recipe, dict) else [recipe])


CALIBRATED_KEYS = ("recipe", "damp", "act_order")


def job_kind(spec, job):
    """``"pq"``, ``"model"``, ``"calibrated"`` (a model with a calibration store) or ``"array"``."""
    if J.is_pq(job.get("scheme")):
        return "pq"
    src = spec["sources"][job["source"]]
    if kind_of(src["path"]) == "safetensors" and "tensor" not in src:
        return "calibrated" if "calibration" in job else "model"
    return "array"


def _validate_job(spec, i, job):
    kind = job_kind(spec, job)
    allowed = {"array": (), "model": ("include",), "pq": ("queries", "k"),
               "calibrated": ("include", "calibration", *CALIBRATED_KEYS)}[kind]
    for key in ("include", "queries", "k", "calibration", *CALIBRATED_KEYS):
        if key in job and key not in allowed:
            hint = " (add calibration = <store> to a model job)" if key in CALIBRATED_KEYS else ""
            raise WorkflowError(f"jobs[{i}].{key}: not a key of {kind} jobs{hint}")
    if kind == "calibrated":
        try:
            recipe_label(job.get("recipe"))
        except NQuantError as e:
            raise WorkflowError(f"jobs[{i}].recipe: {e}") from None
        if "damp" in job and not 0 <= job["damp"] < float("inf"):
            raise WorkflowError(f"jobs[{i}].damp: {job['damp']!r} is not a number >= 0")
        if _codebook_recipe(job):
            if "scheme" in job or "overrides" in job:
                raise WorkflowError(f"jobs[{i}].scheme: recipe {job['recipe']!r} chooses its own scheme (a "
                                    "codebook fitted per layer); leave out scheme and overrides")
            return
    for key in ("queries", "k"):
        if key in job and job[key] < 1:
            raise WorkflowError(f"jobs[{i}].{key}: {job[key]!r} is not an integer >= 1")
    if kind == "pq":
        if "overrides" in job:
            raise WorkflowError(f"jobs[{i}].overrides: a pq scheme takes its fields in the scheme table")
        try:
            J.pq_from_spec(job["scheme"])
        except NQuantError as e:
            raise WorkflowError(f"jobs[{i}].scheme.{e}") from None
        return
    try:
        resolve_scheme(job["scheme"], **job.get("overrides", {}))
    except NQuantError as e:
        raise WorkflowError(f"jobs[{i}].scheme: {e}") from None


def fingerprint(spec):
    """Hash of the resolved spec and nquant's version (what makes outputs comparable)."""
    body = {k: v for k, v in spec.items() if k not in ("vars", "cluster")}
    text = json.dumps({"spec": body, "nquant": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- plan / run


def _job_output(spec, job, suffix=".zarr"):
    """``<output>/<job name><suffix>``, checked to lie inside the output directory."""
    out = spec["workflow"]["output"]
    path = os.path.join(out, f"{job['name']}{suffix}")
    try:
        inside(out, path)
    except NQuantError as e:
        raise WorkflowError(f"job {job['name']!r}: {e}") from None
    return path


REPORT_FILES = ("manifest.json", "report.json", "report.md", "report.html", "error_vs_bits.png")
JOB_FILES = (".zarr", ".sample.npz", ".png")


def check_names(spec):
    """Job and source names follow :func:`nquant.outputs.check_name` and are single path parts
    (a job's name names its files in the output directory); no job name takes a report file's."""
    for name in spec.get("sources", {}):
        check_name(name, f"sources.{name}", WorkflowError)
        if "/" in name:
            raise WorkflowError(f"sources.{name}: a source name may not contain '/'")
    for i, job in enumerate(spec.get("jobs", [])):
        check_name(job.get("name"), f"jobs[{i}].name", WorkflowError)
        if "/" in job["name"]:
            raise WorkflowError(f"jobs[{i}].name={job['name']!r} is not a valid name: a job name may not "
                                "contain '/' (it names files in the output directory)")
        if f"{job['name']}.png" in REPORT_FILES:
            raise WorkflowError(f"jobs[{i}].name={job['name']!r} is reserved (the report's figure "
                                f"{job['name']}.png)")


def check_output(spec):
    """Before anything is written: job names valid, no output file on a source, and an existing
    output directory that is not empty must be a workflow output (its ``manifest.json``) or hold
    nothing but this workflow's sources."""
    check_names(spec)
    out = spec["workflow"]["output"]
    files = [os.path.join(out, f) for f in REPORT_FILES]
    files += [_job_output(spec, job, suffix) for job in spec["jobs"] for suffix in JOB_FILES]
    sources = {n: src["path"] for n, src in spec.get("sources", {}).items()}
    for name, path in sources.items():
        for f in files:
            try:
                check_source_destination(path, f, what="output")
            except NQuantError as e:
                raise WorkflowError(f"sources.{name}.path: {e}") from None
    if os.path.lexists(out) and not os.path.isdir(out):
        raise WorkflowError(f"workflow.output={out!r} exists and is not a directory")
    if not os.path.isdir(out) or os.path.exists(os.path.join(out, "manifest.json")):
        return
    own = {os.path.realpath(p) for p in sources.values()}
    own.add(os.path.realpath(os.path.join(out, "manifest.json.tmp")))  # a first manifest being written
    foreign = sorted(e for e in os.listdir(out) if os.path.realpath(os.path.join(out, e)) not in own)
    if foreign:
        raise WorkflowError(f"workflow.output={out!r} is a directory holding other files ({foreign[0]!r}, "
                            "...) and no workflow manifest; nquant writes only into a new, empty or workflow "
                            "output directory (not even with --overwrite): choose another output")


def plan(spec):
    """Dry run: per job the shapes, chunks, bytes in and out, bits/value and task count.

    Computes nothing; sources that do not exist yet are described from their
    ``generate`` table.
    """
    check_names(spec)
    rows = []
    for job in spec["jobs"]:
        src = spec["sources"][job["source"]]
        kind = job_kind(spec, job)
        if kind in ("model", "calibrated"):
            tensors = model_tensors(src, job.get("include"))
            names, shapes = [n for n, _ in tensors], [s for _, s in tensors]
            scheme = _job_scheme(job)
            recs = recipes_for(job.get("recipe") if kind == "calibrated" else None, names)
            n = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
            bits = sum(estimate_bits_per_value(recs[name].scheme(scheme, s), s) * int(np.prod(s))
                       for name, s in zip(names, shapes))
            shape, chunks, itemsize, tasks = [n], [n], model_itemsize(src), len(shapes)
            bpv = bits / n if n else 0.0
            scheme_json = _scheme_json(job, scheme)
        else:
            shape, chunks, dtype = describe(src)
            n = int(np.prod(shape, dtype=np.int64))
            itemsize = np.dtype(dtype).itemsize
            tasks = int(np.prod([-(-s // c) for s, c in zip(shape, chunks)], dtype=np.int64)) if shape else 1
            if kind == "pq":
                pq = J.pq_from_spec(job["scheme"])
                d = shape[-1]
                bpv = (pq.M * pq.nbits + (pq.ksub * d * 32) / max(1, shape[0])) / d
                scheme_json = dict(job["scheme"])
            else:
                scheme = resolve_scheme(job["scheme"], **job.get("overrides", {}))
                bpv = estimate_bits_per_value(scheme, shape, dtype)
                scheme_json = json.loads(scheme.to_json())
        rows.append({"job": job["name"], "kind": kind, "source": src["path"], "output": _job_output(spec, job),
                     "scheme": scheme_json, "shape": list(shape), "chunks": list(chunks),
                     "bytes_in": n * itemsize, "bytes_out": int(np.ceil(n * bpv / 8)),
                     "bits_per_value": bpv, "tasks": tasks})
    return rows


def estimate_bits_per_value(scheme, shape, dtype=np.float32):
    """Bits per value of ``scheme`` on an array of ``shape``, side information included: the
    family's ``bits_per_value`` (exact, but for side arrays whose size depends on the data)."""
    return family(scheme).bits_per_value(scheme, tuple(shape), np.dtype(dtype))


class Manifest:
    """``<output>/manifest.json``: the workflow's fingerprint and each job's state."""

    def __init__(self, output):
        self.path = os.path.join(output, "manifest.json")
        self.data = None
        if os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    self.data = json.load(f)
            except (OSError, ValueError) as e:
                raise WorkflowError(f"{self.path!r} is not a readable workflow manifest: {e}") from None
            if not isinstance(self.data, dict) or not isinstance(self.data.get("jobs"), dict):
                raise WorkflowError(f"{self.path!r} is not an nquant workflow manifest; choose another "
                                    "output")

    def start(self, fp, overwrite):
        if self.data and self.data.get("fingerprint") != fp and not overwrite:
            raise WorkflowError(f"output {os.path.dirname(self.path)!r} was made by a different workflow "
                                f"spec (fingerprint {self.data.get('fingerprint')} != {fp}); pass "
                                "--overwrite to start over")
        if not self.data or overwrite or self.data.get("fingerprint") != fp:
            # sources this output generated stay recorded: a changed generate table remakes them
            self.data = {"fingerprint": fp, "nquant": __version__, "jobs": {},
                         "generated": (self.data or {}).get("generated", {})}
        self.save()

    def generated(self, path):
        """The ``generate`` table that made ``path`` for this output (None if it did not)."""
        return self.data.setdefault("generated", {}).get(os.path.abspath(path))

    def set_generated(self, path, generate):
        self.data.setdefault("generated", {})[os.path.abspath(path)] = generate
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
    """Error figures of a stored quantized array against its source (streamed, chunk by chunk).

    ``source``: a Zarr array (path or object), a ``.npy`` path or a Dask array, of the
    store's shape (an ``InputError`` naming both shapes otherwise).
    """
    import dask
    import dask.array as da

    q = open_store(store)
    if isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(".npy"):
        try:
            x = da.from_array(np.load(source, mmap_mode="r"), name=False)
        except (OSError, ValueError) as e:
            raise InputError(f"source={os.fspath(source)!r} is not a readable .npy file: {e}") from None
    else:
        x = open_array(source)
    if tuple(x.shape) != tuple(q.shape):
        def shown(v):
            return repr(os.fspath(v)) if isinstance(v, (str, os.PathLike)) else "<array>"

        raise InputError(f"source={shown(source)} has shape {tuple(x.shape)}, but store={shown(store)} "
                         f"holds shape {tuple(q.shape)}: not its source")
    x = x.rechunk(q.chunks) if q.shape else x
    x_hat = dequantize(q)
    parts = [dask.delayed(error_stats)(a, b) for a, b in zip(x.to_delayed().ravel(), x_hat.to_delayed().ravel())]
    merged = None
    for s in dask.compute(*parts):
        merged = s if merged is None else merge_error_stats(merged, s)
    out = metrics_from_stats(merged)
    out["bits_per_value"] = q.bits_per_value
    return out


def run(spec, overwrite=False, progress=True, echo=print, scheduler_overrides=None, notice=None):
    """Run a loaded workflow; returns the report dict (also written to the output directory).

    ``echo`` shows each step; ``notice`` (default ``echo``) the one line that says, before the
    jobs, that kernels must be compiled for them (:func:`nquant.interfaces.warmup.notice`).

    Each job's result carries ``status``: ``"done"`` (computed now), ``"resumed"``
    (finished now after an interrupted run) or ``"skipped"`` (finished before).  Checks the
    names and the output directory first (:func:`check_output`); one run per output
    directory at a time (the lock ``<output>.lock``).
    """
    check_output(spec)
    with writing(spec["workflow"]["output"]):
        return _run(spec, overwrite, progress, echo, scheduler_overrides, echo if notice is None else notice)


def _job_scheme(job):
    """A job's Scheme (its table for a pq job; None for a codebook recipe, which chooses its own)."""
    if J.is_pq(job.get("scheme")):
        return job["scheme"]
    if "calibration" in job and _codebook_recipe(job):
        return None
    return resolve_scheme(job["scheme"], **job.get("overrides", {}))


def _scheme_json(job, scheme):
    """What a report shows as a job's scheme: the scheme's fields, the recipe of a calibrated job."""
    out = json.loads(scheme.to_json()) if scheme is not None else {}
    if "calibration" in job:
        out["recipe"] = recipe_label(job.get("recipe"))
    return out


def _run(spec, overwrite, progress, echo, scheduler_overrides, notice):
    out_dir = spec["workflow"]["output"]
    os.makedirs(out_dir, exist_ok=True)
    manifest = Manifest(out_dir)
    manifest.start(fingerprint(spec), overwrite)
    cl = {**spec.get("cluster", {}), **{k: v for k, v in (scheduler_overrides or {}).items() if v is not None}}
    results = []
    complete = {"array": is_complete, "model": is_complete_model, "calibrated": is_complete_model,
                "pq": J.is_complete_pq}
    with scheduler(cl.get("scheduler", "threads"), cl.get("workers"), cl.get("threads_per_worker", 1),
                   cl.get("memory_limit", "auto")) as client:
        for name, src in spec.get("sources", {}).items():
            gen, path = src.get("generate"), src["path"]
            if gen is None:
                continue
            made = manifest.generated(path)
            if os.path.exists(path) and made is not None and made != gen:  # made by this output, differently
                echo(f"source {name}: generate table changed, remaking {path}")
                remove_source(path)
            if not os.path.exists(path):
                echo(f"source {name}: generating {path}")
                make_source(path, gen)
                manifest.set_generated(path, gen)
        keys = []
        for job in spec["jobs"]:
            kind, dst = job_kind(spec, job), _job_output(spec, job)
            if manifest.state(job["name"]) == "done" and complete[kind](dst) and not overwrite:
                continue
            src = open_source(spec["sources"][job["source"]]) if kind == "array" else None
            keys.append(J.job_key(kind, _job_scheme(job) or {"recipe": job.get("recipe")}, src))
        message = warmup.notice(keys)
        if message:
            notice(message)
        for job in spec["jobs"]:
            name = job["name"]
            kind = job_kind(spec, job)
            dst = _job_output(spec, job)
            source = spec["sources"][job["source"]]
            state = manifest.state(name)
            if state == "done" and complete[kind](dst) and not overwrite:
                echo(f"job {name}: done already, skipped")
                results.append({**manifest.data["jobs"][name]["result"], "status": "skipped"})
                continue
            manifest.set(name, state="running", started=time.time())
            echo(f"job {name}: {source['path']} -> {dst}" + (" (resuming)" if state == "running" else ""))
            verify_ = job.get("verify", True)
            if kind == "pq":
                result, view = J.run_pq_job(open_source(source), dst, job["scheme"], overwrite=overwrite,
                                            queries=job.get("queries", 100), k=job.get("k", 10), verify=verify_)
                scheme_json = dict(job["scheme"])
            else:
                scheme = _job_scheme(job)
                scheme_json = _scheme_json(job, scheme)
                if kind in ("model", "calibrated"):
                    calibrated = ({k: job.get(k) for k in ("calibration", *CALIBRATED_KEYS)}
                                  if kind == "calibrated" else {})
                    result, view = J.run_model_job(source["path"], dst, scheme, include=job.get("include"),
                                                   overwrite=overwrite, verify=verify_, **calibrated)
                else:
                    result, view = J.run_array_job(open_source(source), dst, scheme, overwrite=overwrite,
                                                   client=client, progress=progress, verify=verify_)
            J.save_view(_job_output(spec, job, ".sample.npz"), view)
            result = {"job": name, "source": source["path"], "output": dst, "scheme": scheme_json, **result}
            manifest.set(name, state="done", result=result)
            results.append({**result, "status": "resumed" if state == "running" else "done"})
    report = {"workflow": spec["workflow"]["name"], "fingerprint": manifest.data["fingerprint"],
              "nquant": __version__, "jobs": results}
    report["paths"] = write_report(report, out_dir)
    return report
