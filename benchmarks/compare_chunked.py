"""Streaming quantization of Zarr stores vs a plain Dask copy (the I/O roofline).

Makes float32 Zarr stores of 1 GiB and 4 GiB on local disk (default codec), then
in one run times, for each: (a) a Dask copy into another Zarr store (read,
decompress, compress, write), (b) ``quantize_zarr`` to 8-bit per channel, (c) to
4-bit blocks of 64; prints throughput (GB/s of float32 input) and the peak
resident memory of the whole process tree (sampled every 50 ms)::

    python benchmarks/compare_chunked.py [--dir DIR] [--sizes 1,4] [--scheduler threads|local]
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
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
    print(f"  {label:<28} {dt:8.2f} s {nbytes / dt / 1e9:8.3f} GB/s   peak RSS {mem.peak / 2**30:6.2f} GiB",
          flush=True)
    return dt, mem.peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="bench-chunked")
    ap.add_argument("--sizes", default="1,4", help="store sizes in GiB, comma separated")
    ap.add_argument("--scheduler", default="threads")
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    from nquant.cluster import scheduler

    results = {}
    with scheduler(args.scheduler) as client:
        for gib in [float(s) for s in args.sizes.split(",")]:
            src = os.path.join(args.dir, f"src-{gib:g}gib.zarr")
            arr = make_store(src, gib)
            print(f"{src}: {arr.shape} float32, chunks {arr.chunks}, {arr.nbytes / 2**30:.2f} GiB", flush=True)
            out = {}
            for label, job in [
                ("dask copy (roofline)", lambda: da.to_zarr(da.from_zarr(src), os.path.join(args.dir, "copy.zarr"),
                                                             overwrite=True, compute=True)),
                ("quantize_zarr int8/channel", lambda: nq.quantize_zarr(
                    src, os.path.join(args.dir, "q8.zarr"), nq.Uniform(bits=8, symmetric=True, axis=0),
                    overwrite=True, client=client)),
                ("quantize_zarr int4/block64", lambda: nq.quantize_zarr(
                    src, os.path.join(args.dir, "q4.zarr"), nq.Uniform(bits=4, block_size=64),
                    overwrite=True, client=client)),
            ]:
                out[label] = timed(label, job, arr.nbytes)
            results[gib] = out
            for name in ("copy.zarr", "q8.zarr", "q4.zarr"):
                shutil.rmtree(os.path.join(args.dir, name), ignore_errors=True)
    print("ratios (throughput vs the copy in the same run; peak memory vs the smallest store)")
    first = min(results)
    for gib, out in results.items():
        copy_t = out["dask copy (roofline)"][0]
        for label in ("quantize_zarr int8/channel", "quantize_zarr int4/block64"):
            t, peak = out[label]
            print(f"  {gib:g} GiB {label:<28} {copy_t / t:6.2f}x copy throughput, "
                  f"peak {peak / 2**30:.2f} GiB ({peak / results[first][label][1]:.2f}x the {first:g} GiB run)")
    return results


if __name__ == "__main__":
    with dask.config.set({"array.chunk-size": "64MiB"}):
        main()
