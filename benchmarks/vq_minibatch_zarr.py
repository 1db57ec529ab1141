"""Mini-batch k-means over a Zarr store larger than the memory given to the Dask workers.

Writes a float32 Gaussian-mixture store chunk by chunk (never holding it in memory), starts a
``distributed.LocalCluster`` whose workers get ``--memory-limit`` each (less than the store),
fits ``KMeans(algorithm="minibatch")`` on ``zarr.open_array(store)`` for one epoch, and reports the
time, the inertia per point and the peak memory of the workers (sampled every 0.1 s) and of
this client process (``ru_maxrss``)::

    python benchmarks/vq_minibatch_zarr.py                      # 2 GiB store, 512 MiB workers
    python benchmarks/vq_minibatch_zarr.py --rows 262144 --memory-limit 64MiB   # quick

The chunks are read by the workers and streamed to the client one at a time (the next one
prefetched), so the client holds at most two chunks plus a batch.
"""

import argparse
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def write_store(path, rows, d, chunk_rows, k=256, seed=0):
    import zarr

    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d)).astype(np.float32)
    z = zarr.create_array(str(path), shape=(rows, d), chunks=(chunk_rows, d), dtype="float32",
                          compressors=None, overwrite=True)
    for s in range(0, rows, chunk_rows):
        e = min(rows, s + chunk_rows)
        x = rng.standard_normal((e - s, d), dtype=np.float32)
        x *= np.float32(0.5)
        x += means[rng.integers(0, k, e - s)]
        z[s:e] = x
    return z


def _rss():
    import psutil

    return psutil.Process().memory_info().rss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1 << 22, help="rows of 128 float32 (default 2 GiB)")
    ap.add_argument("--chunk-rows", type=int, default=1 << 16)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--memory-limit", default="512MiB", help="per worker")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where to write the store (a temporary folder)")
    args = ap.parse_args(argv)

    import dask
    import zarr
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    from nquant.kmeans import KMeans

    d = 128
    tmp = Path(tempfile.mkdtemp(dir=args.dir, prefix="nquant-vq-"))
    try:
        t0 = time.perf_counter()
        write_store(tmp / "x.zarr", args.rows, d, args.chunk_rows)
        store_bytes = args.rows * d * 4
        print(f"store {args.rows} x {d} float32 = {store_bytes / 2**30:.2f} GiB in chunks of "
              f"{args.chunk_rows} rows ({args.chunk_rows * d * 4 / 2**20:.0f} MiB), "
              f"written in {time.perf_counter() - t0:.1f} s")
        limit = parse_bytes(args.memory_limit)
        with dask.config.set({"distributed.worker.memory.spill": False}), \
                LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit=limit,
                             processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
            peaks = {}
            stop = threading.Event()

            def monitor():
                while not stop.is_set():
                    try:
                        for w, rss in client.run(_rss).items():
                            peaks[w] = max(peaks.get(w, 0), rss)
                    except Exception:  # noqa: BLE001 - a worker restarting; keep sampling
                        pass
                    stop.wait(0.1)

            th = threading.Thread(target=monitor, daemon=True)
            th.start()
            z = zarr.open_array(str(tmp / "x.zarr"), mode="r")
            t0 = time.perf_counter()
            km = KMeans(args.k, algorithm="minibatch", batch_size=args.batch_size, max_iter=1,
                           max_no_improvement=None, tol=0.0, seed=0).fit(z)
            elapsed = time.perf_counter() - t0
            stop.set()
            th.join()
        client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"mini-batch k-means, k={args.k}, batch {args.batch_size}, one epoch: {elapsed:.1f} s, "
              f"{km.n_steps_} steps, inertia per point {km.inertia_ / args.rows:.4f}")
        print(f"worker memory limit {limit / 2**20:.0f} MiB x {args.workers}; peak worker RSS "
              + ", ".join(f"{v / 2**20:.0f} MiB" for v in peaks.values())
              + f"; client peak RSS {client_peak / 2**20:.0f} MiB; store {store_bytes / 2**20:.0f} MiB")
        return km, peaks, client_peak
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
