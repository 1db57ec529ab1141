"""Where Dask work runs: threads, processes, a LocalCluster or an existing scheduler."""

import contextlib
import logging
import os

import dask

from nquant.errors import NQuantError

SCHEDULERS = ("threads", "processes", "sync", "local")


LOG_LEVEL = logging.WARNING


def quiet_distributed_logs(level=None):
    """Set every ``distributed`` logger (and the worker processes') to ``level`` (default LOG_LEVEL)."""
    import distributed  # noqa: F401  (configures its loggers on import)

    level = LOG_LEVEL if level is None else level
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(level)
    os.environ["DASK_LOGGING__DISTRIBUTED"] = logging.getLevelName(level).lower()
    return level


@contextlib.contextmanager
def scheduler(name="threads", workers=None, threads_per_worker=1, memory_limit="auto"):
    """Context that runs Dask computations on the named scheduler; yields a Client or None.

    Parameters
    ----------
    name : "threads", "processes", "sync", "local" (a ``distributed.LocalCluster`` of
        processes) or a scheduler address ``"tcp://host:port"``
    workers : int, number of workers (``local``) or of threads/processes (default: cores)
    threads_per_worker : int, threads per ``local`` worker
    memory_limit : str or int, memory per ``local`` worker (``"2GiB"``, ``"auto"``)
    """
    if name in ("threads", "processes", "sync"):
        cfg = {"scheduler": name}
        if workers:
            cfg["num_workers"] = int(workers)
        with dask.config.set(cfg):
            yield None
        return
    from distributed import Client, LocalCluster

    if name == "local":
        level = quiet_distributed_logs()
        with LocalCluster(n_workers=int(workers or 2), threads_per_worker=int(threads_per_worker),
                          processes=True, memory_limit=memory_limit, dashboard_address=None,
                          silence_logs=level) as cluster, \
                Client(cluster) as client:
            yield client
        return
    if name.startswith("tcp://") or name.startswith("tls://"):
        with Client(name) as client:
            yield client
        return
    raise NQuantError(f"scheduler={name!r} is invalid: expected one of {SCHEDULERS} or tcp://host:port")
