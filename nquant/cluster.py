"""Where Dask work runs: threads, processes, a LocalCluster or an existing scheduler.

A job on a ``distributed`` cluster ends, it never waits forever:

- a chunk too large for a worker's memory limit is refused before the run
  (:func:`check_chunk_memory`);
- a task whose worker dies more than :data:`ALLOWED_FAILURES` times fails the job
  (``distributed``'s ``KilledWorker``, raised as :class:`ClusterError`);
- when the cluster has no running worker for :data:`NO_WORKER_TIMEOUT` seconds (the
  workers died and their nannies could not restart them, or every worker stays paused
  at its memory limit), a watchdog cancels the client's tasks and the job fails with a
  :class:`ClusterError`.
"""

import asyncio
import concurrent.futures
import concurrent.futures.process
import contextlib
import logging
import os
import signal
import threading
import time

import dask
import numpy as np

from nquant.errors import InputError, NQuantError

SCHEDULERS = ("threads", "processes", "sync", "local")

LOG_LEVEL = logging.WARNING

#: Times a task may lose its worker before the job fails (``distributed.scheduler.allowed-failures``).
ALLOWED_FAILURES = 2
#: Seconds without any running worker after which a job on a cluster is cancelled.
NO_WORKER_TIMEOUT = 30.0
#: Seconds a LocalCluster may take to close before its worker processes are killed (and
#: after it lost every worker).
CLOSE_TIMEOUT = 10.0
BROKEN_CLOSE_TIMEOUT = 3.0
#: Memory of a worker process before it holds any chunk: Python, NumPy, Numba, Zarr and
#: nquant's kernels loaded (about 270 MB measured), with a margin.
WORKER_BASELINE_BYTES = 320 * 2**20
#: Bytes a chunk task holds per value besides the source chunk itself: the chunk as read
#: (and rechunked), its decoded copy for the error statistics, and the codes (one byte
#: per value unpacked, ``bits/8`` packed, rounded up to one).  See :func:`chunk_task_bytes`.
CODE_BYTES_PER_VALUE = 2


class ClusterError(NQuantError, RuntimeError):
    """A job on a cluster cannot finish: workers keep dying, or none is left running."""


def quiet_distributed_logs(level=None):
    """Set every ``distributed`` logger (and the worker processes') to ``level`` (default LOG_LEVEL)."""
    import distributed  # noqa: F401  (configures its loggers on import)

    level = LOG_LEVEL if level is None else level
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(level)
    os.environ["DASK_LOGGING__DISTRIBUTED"] = logging.getLevelName(level).lower()
    return level


# ----------------------------------------------------------------------------- arguments


def check_count(value, name):
    """``value`` as an int >= 1, or None when None (InputError naming ``name`` otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name}={value!r} is invalid: expected an integer >= 1")
    return int(value)


def parse_memory_limit(value, threads_per_worker=1, name="memory_limit"):
    """Bytes of one worker's memory limit: ``"2GiB"``, ``"500MB"``, ``4e9``, ``"auto"``
    (the machine's memory shared by threads, as ``distributed`` does) or a fraction <= 1
    of the machine's memory; None or 0 mean no limit (None returned).

    Raises InputError naming ``name`` for anything else (``"abc"``, negative sizes).
    """
    from dask.utils import parse_bytes

    if value is None:
        return None
    text = str(value).strip()
    try:
        if not text:
            raise ValueError("empty")
        if text == "auto":
            from distributed import system

            ncores = os.cpu_count() or 1
            return int(system.MEMORY_LIMIT * min(1, int(threads_per_worker or 1) / ncores))
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and 0 < number <= 1:
            from distributed import system

            return int(number * system.MEMORY_LIMIT)
        nbytes = parse_bytes(text) if number is None else number
    except (ValueError, TypeError, KeyError, IndexError):
        nbytes = None
    if nbytes is None or not np.isfinite(nbytes) or nbytes < 0:
        raise InputError(f"{name}={value!r} is invalid: expected a size such as 2GiB or 500MB, or auto")
    return int(nbytes) or None


# ----------------------------------------------------------------------------- chunk memory


def _fmt(nbytes):
    from dask.utils import format_bytes

    return format_bytes(int(nbytes))


def chunk_task_bytes(chunk_shape, dtype):
    """Peak bytes one chunk task holds: 3 copies of the chunk (as read, rechunked, and
    decoded for the error statistics) plus :data:`CODE_BYTES_PER_VALUE` per value of codes."""
    n = int(np.prod(chunk_shape, dtype=np.int64)) if len(chunk_shape) else 1
    return n * (3 * np.dtype(dtype).itemsize + CODE_BYTES_PER_VALUE)


def _pause_fraction():
    # above this fraction of its limit a worker stops running tasks (distributed's default 0.8)
    fraction = dask.config.get("distributed.worker.memory.pause", 0.8)
    return float(fraction) if fraction else 0.95


def check_chunk_memory(chunk_shape, dtype, memory_limit=None, threads_per_worker=1, *, client=None,
                       param="--memory-limit"):
    """Refuse a job whose chunk tasks cannot fit a worker's memory limit.

    A worker needs :data:`WORKER_BASELINE_BYTES` plus, per thread, :func:`chunk_task_bytes`
    (about 3x the chunk's bytes), below the fraction of its limit where ``distributed``
    pauses it (``distributed.worker.memory.pause``, 0.8).  A chunk over that would kill or
    stall the worker again and again; refusing it up front names the fix.

    Parameters
    ----------
    chunk_shape : tuple of int, the largest chunk of the job
    dtype : the source's dtype
    memory_limit : int or str, one worker's limit (a size, ``"auto"``); None: no limit
    threads_per_worker : int
    client : distributed.Client, optional
        Read the limits and threads of the cluster's workers instead (the smallest limit).
    param : str, the parameter named in the error

    Returns
    -------
    int, the bytes a worker needs (0 when there is no limit to check)
    """
    if client is not None:
        workers = client.scheduler_info()["workers"].values()
        limits = [(w.get("memory_limit") or 0, w.get("nthreads") or 1) for w in workers]
        limits = [lw for lw in limits if lw[0]]
        if not limits:
            return 0
        limit, threads_per_worker = min(limits)
        shown = _fmt(limit)
    else:
        limit = parse_memory_limit(memory_limit, threads_per_worker, name=param)
        if limit is None:
            return 0
        shown = str(memory_limit)
    task = chunk_task_bytes(chunk_shape, dtype)
    needed = WORKER_BASELINE_BYTES + int(threads_per_worker) * task
    usable = int(limit * _pause_fraction())
    if needed > usable:
        chunk = int(np.prod(chunk_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        raise InputError(
            f"{param}={shown} is too small for chunks of {_fmt(chunk)} "
            f"({tuple(chunk_shape)} {np.dtype(dtype)}): "
            f"a worker with {threads_per_worker} thread(s) needs at least {_fmt(needed / _pause_fraction())} "
            f"({_fmt(WORKER_BASELINE_BYTES)} for its process plus {_fmt(task)} per chunk task, below the "
            f"{_pause_fraction():.0%} of its limit where it pauses); raise {param} or use smaller chunks")
    return needed


# ----------------------------------------------------------------------------- watchdog


class _Watchdog:
    """Cancels the client's tasks once the cluster has had no running worker for ``timeout`` s.

    A worker counts once it is seen running at two polls in a row: a worker that a nanny
    restarts again and again (killed at its memory limit as soon as it starts) never does.
    """

    def __init__(self, client, timeout, poll=0.5):
        self.client, self.timeout, self.poll = client, float(timeout), poll
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="nquant-cluster-watchdog", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5.0)  # a daemon thread: never held up by an unresponsive scheduler

    def _running_workers(self):
        workers = self.client.scheduler_info()["workers"]
        return {addr for addr, w in workers.items() if w.get("status", "running") == "running"}

    def _watch(self):
        since, before = None, set()
        while not self._stop.wait(self.poll):
            try:
                running = self._running_workers()
            except Exception:  # the scheduler went away: the client's own calls fail and report it
                return
            steady, before = running & before, running
            if steady:
                since = None
                continue
            since = time.monotonic() if since is None else since
            if time.monotonic() - since >= self.timeout:  # and again at each poll while none is back:
                self.fired = True  # tasks submitted meanwhile must not wait either
                self._cancel()

    def _cancel(self):
        from distributed import Future

        keys = list(self.client.futures)
        if keys:
            self.client.cancel([Future(k, self.client) for k in keys], force=True,
                               reason="nquant: no running worker",
                               msg=f"no running worker for {self.timeout:g} s")


@contextlib.contextmanager
def _cluster_errors(client, what, timeout):
    """Run the body under a watchdog; KilledWorker and a watchdog's cancellation become ClusterError."""
    from distributed import KilledWorker

    with _Watchdog(client, timeout) as dog:
        try:
            yield dog
        except KilledWorker as e:
            raise ClusterError(
                f"the cluster lost a worker {e.allowed_failures + 1} times running task {e.task!r} "
                f"({what}); killed, or out of memory (a worker's memory limit too small for a chunk?): "
                "rerun to resume") from None
        except (asyncio.CancelledError, concurrent.futures.CancelledError):
            if not dog.fired:
                raise
            raise ClusterError(
                f"the cluster has had no running worker for {timeout:g} s ({what}): its workers died "
                "and were not restarted, or stay paused at their memory limit; job cancelled, "
                "rerun to resume") from None


async def _close_workers(cluster, timeout):
    """Ask every worker of ``cluster`` to stop and wait for its process up to ``0.8 * timeout`` s."""
    await asyncio.gather(*(nanny.close(timeout=timeout) for nanny in list(cluster.workers.values())))


def _close_cluster(cluster, timeout=CLOSE_TIMEOUT):
    """Close a LocalCluster; when that does not finish in ``timeout`` s (a nanny left broken by a
    failed restart never closes), kill its worker processes and leave it marked closed."""
    try:
        # the workers first, each given the whole timeout: the cluster's own close gives a worker
        # process 4 s to exit before its nanny kills it and warns, which a loaded machine exceeds
        cluster.sync(_close_workers, cluster, timeout, callback_timeout=timeout + 1)
        cluster.close(timeout=timeout)
        return
    except (TimeoutError, asyncio.TimeoutError, OSError):
        pass
    from distributed.core import Status

    for nanny in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(getattr(getattr(nanny, "process", None), "process", None), "pid", None)
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    cluster.status = Status.closed  # its close cannot finish: not retried at exit


@contextlib.contextmanager
def scheduler(name="threads", workers=None, threads_per_worker=1, memory_limit="auto", *,
              no_worker_timeout=None):
    """Context that runs Dask computations on the named scheduler; yields a Client or None.

    Parameters
    ----------
    name : "threads", "processes", "sync", "local" (a ``distributed.LocalCluster`` of
        processes) or a scheduler address ``"tcp://host:port"``
    workers : int, number of workers (``local``) or of threads/processes (default: cores)
    threads_per_worker : int, threads per ``local`` worker
    memory_limit : str or int, memory per ``local`` worker (``"2GiB"``, ``"auto"``)
    no_worker_timeout : float, seconds without a running worker before the work on a
        cluster is cancelled with a :class:`ClusterError` (default :data:`NO_WORKER_TIMEOUT`)

    Raises
    ------
    InputError
        A bad ``workers``, ``threads_per_worker`` or ``memory_limit`` (before anything starts).
    ClusterError
        Inside the context: a task's worker died more than :data:`ALLOWED_FAILURES` times,
        or the cluster had no running worker for ``no_worker_timeout`` seconds.
    """
    workers = check_count(workers, "workers")
    threads_per_worker = check_count(threads_per_worker, "threads_per_worker") or 1
    timeout = NO_WORKER_TIMEOUT if no_worker_timeout is None else float(no_worker_timeout)
    if not isinstance(name, str):
        raise InputError(f"scheduler={name!r} is invalid: expected one of {SCHEDULERS} or tcp://host:port")
    if name in ("threads", "processes", "sync"):
        cfg = {"scheduler": name}
        if workers:
            cfg["num_workers"] = workers
        with dask.config.set(cfg):
            try:
                yield None
            except concurrent.futures.process.BrokenProcessPool:
                raise ClusterError(f"a worker process of the {name!r} scheduler died (killed, or out of "
                                   "memory?); rerun to resume") from None
        return
    if name == "local":
        parse_memory_limit(memory_limit, threads_per_worker)  # a bad size fails before the cluster starts
        from distributed import Client, LocalCluster

        level = quiet_distributed_logs()
        # the scheduler reads allowed-failures when it is made
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=threads_per_worker,
                                   processes=True, memory_limit=memory_limit, dashboard_address=None,
                                   # its HTTP server on a free port: no warning that 8787 is taken
                                   scheduler_kwargs={"dashboard_address": ":0"}, silence_logs=level)
        dog = None
        try:
            with Client(cluster) as client, \
                    _cluster_errors(client, f"local cluster, memory_limit={memory_limit}", timeout) as dog:
                yield client
        finally:  # a cluster that lost its workers may not close: a short wait, then its processes killed
            _close_cluster(cluster, BROKEN_CLOSE_TIMEOUT if dog is not None and dog.fired else CLOSE_TIMEOUT)
        return
    if name.startswith("tcp://") or name.startswith("tls://"):
        from distributed import Client

        try:
            client = Client(name)
        except (OSError, asyncio.TimeoutError) as e:
            raise InputError(f"scheduler={name!r} cannot be reached: {e}") from None
        with client, _cluster_errors(client, f"scheduler {name}", timeout):
            yield client
        return
    raise InputError(f"scheduler={name!r} is invalid: expected one of {SCHEDULERS} or tcp://host:port")
