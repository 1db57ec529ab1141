"""Kernel compilation made visible: what was compiled, how long it took, and whether a path still must.

Numba compiles nquant's kernels on first use and caches the machine code on disk (in
``NUMBA_CACHE_DIR`` when set, else beside ``nquant/kernels``).  A small JSON marker in that
same directory, ``nquant-compiled.json``, records the paths (a scheme on arrays of a dtype and
number of dimensions, a codebook fit, ...) whose kernels the cache holds, with the compile
time measured when they were compiled.  An entry counts only for the build it was made by:
the kernel sources (:data:`nquant.kernels._jit.SOURCES_HASH`), Numba's version and the CPU.
The command line reads it to say, before a path compiles, that it will and about how long
(:func:`notice`), and ``nquant warmup`` fills it ahead of time (:func:`warm_array`).

Compile times are measured with Numba's event API (``numba:compile`` events): only the
outermost compilation counts (a kernel compiles the helpers it calls inside its own event).
"""

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import threading
import time

import dask
import dask.array as da
import llvmlite.binding as ll
import numba
import numpy as np
from numba.core import event
from numba.core.dispatcher import Dispatcher

from nquant.api import dequantize
from nquant.errors import NQuantError
from nquant.kernels import bitpack
from nquant.kernels._jit import SOURCES_HASH
from nquant.store import quantize_zarr

MARKER = "nquant-compiled.json"
#: Seconds shown for a path never compiled on this machine: the first path compiles the kernels
#: every path shares (packing, statistics), later ones mostly their own.
FIRST_PATH_SECONDS = 8.0
MORE_PATH_SECONDS = 3.0


# ----------------------------------------------------------------------------- measuring


class CompileLog:
    """Numba compilations seen while the ``with`` body runs (any thread of this process).

    Parameters
    ----------
    on_first : callable, optional
        Called (no arguments) when the first compilation starts, in the compiling thread.

    Attributes after the body: ``kernels``, a list of ``{"kernel", "signature", "seconds"}``
    (outermost compilations of nquant functions, in order, seconds inclusive of the helpers
    compiled inside), and ``seconds``, the total of all outermost compilations.
    """

    def __init__(self, on_first=None):
        self.kernels, self.seconds = [], 0.0
        self.buffer, self._on_first, self._listening = [], on_first, None

    def __enter__(self):
        self._listening = event.install_listener("numba:compile", _Listener(self))
        self._listening.__enter__()
        return self

    def __exit__(self, *exc):
        self._listening.__exit__(*exc)
        self.kernels, self.seconds = outermost(self.buffer)

    def _seen(self, ev):
        if not self.buffer and ev.is_start and self._on_first is not None:
            self._on_first()
        self.buffer.append((time.time(), ev))

    def summary(self):
        """``{"seconds": total, "kernels": [...]}`` (JSON-ready)."""
        return {"seconds": self.seconds, "kernels": self.kernels}


class _Listener(event.Listener):
    def __init__(self, log):
        self.log = log

    def on_start(self, ev):
        self.log._seen(ev)

    def on_end(self, ev):
        self.log._seen(ev)


def outermost(buffer):
    """``(kernels, total seconds)`` of the outermost compilations in a recorder's ``buffer``.

    ``buffer``: ``(time.time(), Event)`` pairs of ``numba:compile`` events.  Numba compiles
    under one global lock, so start and end events nest properly even across threads.
    """
    kernels, total, stack = [], 0.0, []
    for t, ev in buffer:
        if ev.is_start:
            stack.append(t)
            continue
        if not stack:
            continue
        t0 = stack.pop()
        if stack:
            continue
        total += t - t0
        fn = getattr(ev.data.get("dispatcher"), "py_func", None)
        module = getattr(fn, "__module__", "") or ""
        if module.split(".")[0] == "nquant":
            kernels.append({"kernel": f"{module}.{fn.__qualname__}",
                            "signature": "(" + ", ".join(str(a) for a in ev.data.get("args", ())) + ")",
                            "seconds": t - t0})
    return kernels, total


# ----------------------------------------------------------------------------- the marker


def cache_dir():
    """The directory where Numba caches nquant's kernels (None when caching is off)."""
    for value in vars(bitpack).values():
        if isinstance(value, Dispatcher) and getattr(value, "py_func", None) is not None:
            path = getattr(value._cache, "cache_path", None)  # a NullCache has none: caching is off
            return path
    return None


def build_id():
    """What a cached kernel depends on: the kernel sources, Numba's version and the CPU."""
    text = f"{SOURCES_HASH}|{numba.__version__}|{platform.machine()}|{_cpu_name()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpu_name():
    return numba.config.CPU_NAME or ll.get_host_cpu_name()


_lock = threading.Lock()


def _marker_path():
    folder = cache_dir()
    return None if folder is None else os.path.join(folder, MARKER)


def read_marker():
    """``{path key: {"build", "seconds"}}`` from the marker ({} when missing or unreadable)."""
    path = _marker_path()
    if path is None:
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    paths = data.get("paths") if isinstance(data, dict) else None
    return paths if isinstance(paths, dict) else {}


def compiled(key):
    """Whether the kernels of path ``key`` are in the cache for this build."""
    entry = read_marker().get(key)
    return isinstance(entry, dict) and entry.get("build") == build_id()


def record(key, seconds):
    """Mark path ``key`` compiled for this build, in ``seconds`` (no-op when caching is off or the
    cache directory is not writable: the next run then says again that it compiles)."""
    path = _marker_path()
    if path is None:
        return
    with _lock:
        paths = read_marker()
        paths[key] = {"build": build_id(), "seconds": round(float(seconds), 3)}
        tmp = None
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            # a temporary made here, new (never an existing file), then renamed over the marker:
            # concurrent writers, the last one wins, nothing half-written
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                                       dir=os.path.dirname(path))
            with os.fdopen(fd, "w") as f:
                json.dump({"paths": paths}, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.remove(tmp)


def estimate(keys):
    """Seconds to compile the paths ``keys`` not compiled yet: each one's last measured compile time
    (of an earlier build) or a default (:data:`FIRST_PATH_SECONDS`, then :data:`MORE_PATH_SECONDS`)."""
    paths, build = read_marker(), build_id()
    fresh = not any(isinstance(e, dict) and e.get("build") == build for e in paths.values())
    total = 0.0
    for key in dict.fromkeys(keys):
        entry = paths.get(key)
        if isinstance(entry, dict) and entry.get("build") == build:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("seconds"), (int, float)):
            total += entry["seconds"]
        else:
            total += FIRST_PATH_SECONDS if fresh else MORE_PATH_SECONDS
        fresh = False
    return total


def notice(keys, force=False):
    """The one line to show before paths ``keys`` run, or None when the marker records them all
    (``force``: the line even then, with :data:`MORE_PATH_SECONDS` as the estimate)."""
    missing = [k for k in dict.fromkeys(keys) if not compiled(k)]
    if not missing and not force:
        return None
    seconds = estimate(missing) if missing else MORE_PATH_SECONDS
    return f"compiling kernels for this machine, once: ~{max(1, round(seconds))} s"


# ----------------------------------------------------------------------------- paths


@contextlib.contextmanager
def compiling(key, say):
    """Run the body (work in this process) as path ``key``: ``say`` (a function of one line) tells,
    when the first kernel compilation starts, that kernels are being compiled and about how long it
    takes; when the body succeeds the path is recorded with its measured compile time.  Yields the
    :class:`CompileLog` of the body."""
    with CompileLog(on_first=lambda: say(notice([key], force=True))) as log:
        yield log
    record(key, log.seconds)


def scheme_key(kind, scheme):
    """The path key of ``kind`` (``"model"``, ``"pq"``, ...) with ``scheme`` (a Scheme or a dict)."""
    fields = scheme if isinstance(scheme, dict) else json.loads(scheme.to_json())
    fields = {k: v for k, v in fields.items() if k not in ("seed", "format_version")}
    return f"{kind} {json.dumps(fields, sort_keys=True, default=str)}"


def array_key(scheme, dtype, ndim):
    """The path key of quantizing, verifying and dequantizing ``ndim``-D ``dtype`` arrays with
    ``scheme`` (the seed of stochastic rounding changes no kernel and is left out)."""
    return f"{scheme_key('array', scheme)} {np.dtype(dtype).name} {int(ndim)}-D"


def tiny_array(dtype, ndim):
    """A small seeded array of ``ndim`` dimensions (chunked in two along the first) that runs the
    kernels of a chunked job with the signatures of a large one (dtype, dimensions, layout)."""
    shape = (8,) + (4,) * max(0, ndim - 2) + (256,) if ndim >= 2 else (512,) * ndim
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return da.from_array(x, chunks=(shape[0] // 2,) + shape[1:] if ndim else ())


def _warm_here(scheme, dtype, ndim):
    """Run a tiny chunked job of ``scheme`` in this process (quantize, verify, dequantize); returns
    its :meth:`CompileLog.summary`."""
    x = tiny_array(dtype, ndim)
    with tempfile.TemporaryDirectory(prefix="nquant-warmup-") as tmp, CompileLog() as log, \
            dask.config.set(scheduler="sync"):
        q = quantize_zarr(x, os.path.join(tmp, "q.zarr"), scheme)
        dequantize(q).compute()
    return log.summary()


def warm_array(scheme, dtype, ndim, client=None):
    """Compile (or load from the cache) the kernels of a chunked job of ``scheme`` on ``ndim``-D
    ``dtype`` arrays, here or on every worker of ``client``, and record the path in the marker.

    Returns
    -------
    dict: ``seconds`` (compile time; on a cluster the longest of this process's and the workers')
    and ``kernels`` (what was compiled, see :class:`CompileLog`); None when the tiny job is refused
    (an ``NQuantError``: a scheme that the tiny array cannot take), the path then left unrecorded
    """
    result = None
    try:
        key = array_key(scheme, dtype, ndim)
        if client is None or (getattr(client, "cluster", None) is not None and not compiled(key)):
            # a local cluster's workers share this process's cache directory: compiled once here,
            # the kernels are then only loaded by each worker (instead of every worker compiling
            # them side by side, which takes as many times longer as there are workers per core)
            result = _warm_here(scheme, dtype, ndim)
        if client is not None:
            results = list(client.run(_warm_here, scheme, np.dtype(dtype).name, ndim).values())
            result = max(results + ([result] if result else []), key=lambda r: r["seconds"], default=None)
    except NQuantError:  # a scheme the tiny array cannot take (the job's own data may): not warmed
        return None
    result = result or {"seconds": 0.0, "kernels": []}
    record(key, result["seconds"])
    return result
