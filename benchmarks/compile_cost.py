"""What a first run pays for Numba compilation, path by path.

Each path runs in a fresh Python process with an empty cache directory (``NUMBA_CACHE_DIR``
and ``XDG_CACHE_HOME`` pointing to a new temporary folder): the "cold" pass.  A second process
then reuses that folder: the "warm" pass, what every later run pays.  Paths:

- ``baseline``: importing numpy, numba, dask (with dask.array) and zarr, the floor;
- ``import``: ``import nquant``;
- ``preset:NAME``: ``import nquant``, then the first ``nq.quantize`` + ``nq.dequantize`` of 1M
  float32 values with the preset (``int8`` is ``nq.Uniform(bits=8)``);
- ``demo``: ``nquant demo`` into a temporary folder (job times from its report).

For each path the kernels compiled (outermost Numba compilations of nquant functions, with the
helpers they compile inside) are listed with their compile time.

Usage::

    python benchmarks/compile_cost.py                      # every preset and the demo
    python benchmarks/compile_cost.py --preset int8 --no-demo --json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time
path = sys.argv[1]
out = {}
t0 = time.perf_counter()
if path == "baseline":
    import numpy, numba, dask, dask.array, zarr  # noqa: F401
    out["import_s"] = time.perf_counter() - t0
elif path == "demo":
    import subprocess
    run = subprocess.run([sys.executable, "-m", "nquant", "demo", "--json", "--set", "out=" + sys.argv[2]],
                         capture_output=True, text=True)
    out["wall_s"] = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(run.stderr)
    report = json.loads(run.stdout)
    out["jobs"] = [{k: j.get(k) for k in ("job", "seconds", "compile_seconds", "throughput_mb_s")}
                   for j in report["jobs"]]
    out["kernels"] = [k for j in report["jobs"] for k in j.get("compiled", [])]
    out["compile_s"] = sum(j.get("compile_seconds") or 0.0 for j in report["jobs"])
    out["stderr"] = [line for line in run.stderr.splitlines() if "compiling" in line or "WARNING" in line]
else:
    import nquant as nq
    out["import_s"] = time.perf_counter() - t0
    if path.startswith("preset:"):
        import numpy as np
        from nquant.interfaces.presets import PRESETS
        from nquant.interfaces.warmup import CompileLog

        scheme = PRESETS[path.split(":", 1)[1]]
        x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
        with CompileLog() as log:
            t1 = time.perf_counter()
            nq.dequantize(nq.quantize(x, scheme))
            out["first_call_s"] = time.perf_counter() - t1
        out["compile_s"] = log.seconds
        out["kernels"] = log.kernels
print("RESULT " + json.dumps(out))
"""


def run_child(path, cache, extra=()):
    """Run one path in a fresh interpreter whose Numba cache is ``cache``; its result dict."""
    env = {**os.environ, "NUMBA_CACHE_DIR": os.path.join(cache, "numba"), "XDG_CACHE_HOME": cache}
    env.pop("NQUANT_NUMBA_CACHE", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, path, *extra], env=env, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{path}: the child process failed:\n{proc.stderr}")
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")][-1]
    return {"path": path, "process_s": wall, **json.loads(line[len("RESULT "):])}


def measure(paths):
    """``{path: {"cold": result, "warm": result}}``, each path with its own new cache folder."""
    results = {}
    for path in paths:
        with tempfile.TemporaryDirectory(prefix="nquant-compile-") as cache:
            # each demo pass into a new output folder: a finished one would be skipped
            extra = {name: (os.path.join(cache, f"demo-{name}"),) if path == "demo" else ()
                     for name in ("cold", "warm")}
            cold = run_child(path, cache, extra["cold"])
            warm = run_child(path, cache, extra["warm"])
            results[path] = {"cold": cold, "warm": warm}
            print(f"measured {path}: cold {cold['process_s']:.2f} s, warm {warm['process_s']:.2f} s",
                  file=sys.stderr, flush=True)
    return results


def _cell(r, key):
    v = r.get(key)
    return f"{v:8.2f}" if isinstance(v, (int, float)) else f"{'':>8}"


def table(results):
    """The results as text: one row per path and pass, then the kernels compiled on each path."""
    lines = [f"{'path':<22} {'pass':<5} {'process':>8} {'import':>8} {'1st call':>8} {'compile':>8}",
             f"{'':<22} {'':<5} {'s':>8} {'s':>8} {'s':>8} {'s':>8}"]
    for path, passes in results.items():
        for name, r in passes.items():
            lines.append(f"{path:<22} {name:<5} {_cell(r, 'process_s')} {_cell(r, 'import_s')} "
                         f"{_cell(r, 'first_call_s')} {_cell(r, 'compile_s')}")
    lines.append("(process: the child's wall time, interpreter start included; 1st call: the first "
                 "quantize + dequantize of 1M float32 values; compile: outermost Numba compilations)")
    demo = results.get("demo")
    if demo:
        lines.append("")
        for name, r in demo.items():
            jobs = ", ".join(f"{j['job']} {j['seconds']:.2f} s "
                             f"(compile {j.get('compile_seconds') or 0:.2f} s)" for j in r["jobs"])
            lines.append(f"demo {name}: {r['wall_s']:.2f} s wall; jobs: {jobs}")
            lines += [f"  stderr: {s}" for s in r.get("stderr", [])]
    for path, passes in results.items():
        kernels = passes["cold"].get("kernels")
        if not kernels:
            continue
        lines.append("")
        lines.append(f"kernels compiled, {path} (cold, seconds inclusive of the helpers inside):")
        for k in kernels:
            lines.append(f"  {k['seconds']:6.2f}  {k['kernel']}{k['signature']}")
        warm = passes["warm"].get("kernels") or []
        if warm:
            lines.append(f"  warm pass compiled {len(warm)} again: {[k['kernel'] for k in warm]}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", action="append", help="Measure only these presets (repeatable).")
    parser.add_argument("--no-demo", action="store_true", help="Leave out the demo.")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args(argv)
    if args.preset is None:
        code = "from nquant.interfaces.presets import PRESETS; print(' '.join(PRESETS))"
        listing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        presets = listing.stdout.split()
    else:
        presets = args.preset
    paths = ["baseline", "import"] + [f"preset:{p}" for p in presets] + ([] if args.no_demo else ["demo"])
    results = measure(paths)
    print(json.dumps(results, indent=1) if args.json else table(results))


if __name__ == "__main__":
    main()
