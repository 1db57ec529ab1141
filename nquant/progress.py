"""Progress bars on standard error, for the local schedulers and for ``distributed`` clients.

One style everywhere (:class:`TextBar`: ``[#####     ]  50% 4/8 chunks 1.2s``), counting the
tasks given to :func:`compute`, not the graph's internal tasks.  Dask's own bars do not fit:
``dask.diagnostics.ProgressBar`` sees only the local schedulers and counts every task of the
graph, and ``distributed.progress`` writes to standard output, where ``--json`` output goes.
"""

import sys
import time

import dask
from dask.callbacks import Callback

_open_bars = 0  # bars drawn on standard error whose line is not ended yet


def bar_open():
    """Whether a progress bar is being drawn (its line not ended): a message must start a new line."""
    return _open_bars > 0


class _Drawing:
    """Counts a bar as open while the ``with`` body runs."""

    def __enter__(self):
        global _open_bars
        _open_bars += 1

    def __exit__(self, *exc):
        global _open_bars
        _open_bars -= 1


class TextBar:
    """``label [#####     ] 50% 5/10 tasks 1.2s`` redrawn in place on ``out`` (at most every ``dt`` s)."""

    def __init__(self, total, label="tasks", out=None, width=30, dt=0.1):
        self.total, self.label, self.width, self.dt = int(total), label, width, dt
        self.out = sys.stderr if out is None else out
        self.t0 = time.perf_counter()
        self.last = -1.0
        self.done = 0

    def update(self, done, force=False):
        self.done = done
        now = time.perf_counter()
        if not force and now - self.last < self.dt:
            return
        self.last = now
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(round(frac * self.width))
        self.out.write(f"\r[{bar:<{self.width}}] {frac:4.0%} {done}/{self.total} {self.label} "
                       f"{now - self.t0:.1f}s")
        self.out.flush()

    def close(self):
        self.update(self.done, force=True)
        self.out.write("\n")
        self.out.flush()


class _LocalBar(Callback):
    """A :class:`TextBar` of the tasks ``keys`` as a local scheduler finishes them (its callbacks run
    in the scheduler's own thread, one at a time)."""

    def __init__(self, keys, label):
        super().__init__()
        self.keys, self.label, self.done, self.bar = set(keys), label, 0, None

    def _start(self, dsk):
        self.bar = TextBar(len(self.keys), self.label)
        self.bar.update(0, force=True)

    def _posttask(self, key, result, dsk, state, worker_id):
        if key in self.keys:
            self.done += 1
            self.bar.update(self.done)

    def _finish(self, dsk, state, errored):
        self.bar.close()


def compute(tasks, client=None, progress=False, label="chunks"):
    """Compute the delayed ``tasks`` on ``client`` (or the current scheduler); results in order."""
    if client is None:
        if not progress:
            return list(dask.compute(*tasks))
        with _Drawing(), _LocalBar([t.key for t in tasks], label):
            return list(dask.compute(*tasks))
    futures = client.compute(list(tasks))
    if progress:
        from distributed import as_completed

        with _Drawing():
            bar = TextBar(len(futures), label)
            bar.update(0, force=True)
            for i, _ in enumerate(as_completed(futures), 1):
                bar.update(i)
            bar.close()
    return client.gather(futures)
