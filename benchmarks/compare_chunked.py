"""Streaming quantization of Zarr stores vs a plain Dask copy (the I/O roofline).

Makes float32 Zarr stores of 1 GiB and 4 GiB on local disk (default codec), then
in one run times, for each: (a) a Dask copy into another Zarr store (read,
decompress, compress, write), (b) ``quantize_zarr`` to 8-bit per channel, (c) to
4-bit blocks of 64; prints throughput (GB/s of float32 input) and the peak
resident memory of the whole process tree (sampled every 50 ms)::

    python benchmarks/compare_chunked.py [--dir DIR] [--sizes 1,4] [--repeat 1] [--scheduler threads|local]

Every job runs once on a small slice of the store first (imports, kernels loaded from
Numba's cache), so no timed run pays a one-time cost; with ``--repeat N`` the jobs run in
turn N times and the medians are reported.
"""

import argparse
import os
import shutil
import threading
import time

import dask
import dask.array as da
import numpy as np
import zarr

import nquant as nq

COLS = 4096
CHUNK_ROWS = 256  # 4 MiB chunks


def _tree_rss(pid):
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class PeakMemory:
    """Peak RSS of this process and its children while the context runs."""

    def __enter__(self):
        self.peak = _tree_rss(os.getpid())
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _tree_rss(os.getpid()))

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _fill(block_info=None):
    loc = block_info[None]["array-location"]
    shape = block_info[None]["chunk-shape"]
    rng = np.random.default_rng(loc[0][0])
    return rng.standard_normal(shape, dtype=np.float32)


def make_store(path, gib):
    if os.path.exists(path):
        return zarr.open_array(path, mode="r")
    rows = int(gib * 2**30 // (4 * COLS))
    x = da.map_blocks(_fill, chunks=da.core.normalize_chunks((CHUNK_ROWS, COLS), (rows, COLS)),
                      dtype=np.float32)
    da.to_zarr(x, path + ".partial", overwrite=True)
    os.replace(path + ".partial", path)
    return zarr.open_array(path, mode="r")


def timed(label, fn, nbytes):
    """Run ``fn``; returns wall seconds, CPU seconds of this process (all threads) and peak RSS."""
    with PeakMemory() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"  {label:<28} {dt:8.2f} s {nbytes / dt / 1e9:8.3f} GB/s   CPU {cpu:7.2f} s   "
          f"peak RSS {mem.peak / 2**30:6.2f} GiB", flush=True)
    return dt, cpu, mem.peak


SCHEMES = {
    "quantize_zarr int8/channel": nq.Uniform(bits=8, symmetric=True, axis=0),
    "quantize_zarr int4/block64": nq.Uniform(bits=4, block_size=64),
}
COPY = "dask copy (roofline)"
OUTPUTS = {COPY: "copy.zarr", "quantize_zarr int8/channel": "q8.zarr",
           "quantize_zarr int4/block64": "q4.zarr"}


def jobs(src, out_dir, client):
    """label -> a function running the job on ``src`` (a Zarr store path or a Dask array)."""
    def copy():
        x = da.from_zarr(src) if isinstance(src, str) else src
        da.to_zarr(x, os.path.join(out_dir, OUTPUTS[COPY]), overwrite=True, compute=True)

    def quantize(label):
        return lambda: nq.quantize_zarr(src, os.path.join(out_dir, OUTPUTS[label]), SCHEMES[label],
                                        overwrite=True, client=client)

    return {COPY: copy, **{label: quantize(label) for label in SCHEMES}}


def clear(out_dir):
    for name in OUTPUTS.values():
        shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="bench-chunked")
    ap.add_argument("--sizes", default="1,4", help="store sizes in GiB, comma separated")
    ap.add_argument("--scheduler", default="threads")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each job (in turn); medians reported")
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    from nquant.cluster import scheduler

    results = {}
    with scheduler(args.scheduler) as client:
        for gib in [float(s) for s in args.sizes.split(",")]:
            src = os.path.join(args.dir, f"src-{gib:g}gib.zarr")
            arr = make_store(src, gib)
            print(f"{src}: {arr.shape} float32, chunks {arr.chunks}, {arr.nbytes / 2**30:.2f} GiB", flush=True)
            if not results:  # warm-up on two chunks: imports and kernels, never in a timed run
                for fn in jobs(da.from_zarr(src)[:2 * CHUNK_ROWS], args.dir, client).values():
                    fn()
                clear(args.dir)
            runs = {}
            for _ in range(args.repeat):
                for label, fn in jobs(src, args.dir, client).items():
                    runs.setdefault(label, []).append(timed(label, fn, arr.nbytes))
                clear(args.dir)
            results[gib] = {label: (float(np.median([t for t, _, _ in r])),
                                    float(np.median([c for _, c, _ in r])), max(p for _, _, p in r))
                            for label, r in runs.items()}
    print("ratios (medians: throughput and CPU time vs the copy in the same run; peak memory vs the "
          "smallest store)")
    first = min(results)
    for gib, out in results.items():
        copy_t, copy_cpu, _ = out[COPY]
        for label in SCHEMES:
            t, cpu, peak = out[label]
            print(f"  {gib:g} GiB {label:<28} {copy_t / t:6.2f}x copy throughput, "
                  f"{copy_cpu / cpu:5.2f}x less CPU, peak {peak / 2**30:.2f} GiB "
                  f"({peak / results[first][label][2]:.2f}x the {first:g} GiB run)")
    return results


if __name__ == "__main__":
    with dask.config.set({"array.chunk-size": "64MiB"}):
        main()
