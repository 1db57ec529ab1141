"""Documented limits on what a parameter, a file header or a workflow may size.

Every allocation whose size comes from a parameter (histogram ``bins``, the ``m`` grid
of approximate ASQ, numbers of levels), from a file (a ``.safetensors`` header) or from
a workflow (generated shapes, variable expansion, nesting) is checked here *before* it
is made, against a fixed limit and against the memory the machine has available.  The
errors are one line naming the parameter, the value and the limit.

Limits
------
``MAX_BINS``            histogram bins of ``Uniform`` (``percentile``/``mse``) and
                        ``KMeansBlockwise`` (``fit="histogram"``): 2**24.
``MAX_GRID``            ``m`` of ``ASQ(method="quiver_approx")`` and ``nquant.asq``: 2**24.
``MAX_LEVELS``          levels of the ASQ solvers (``s``) and of 1-D k-means (``k``): 2**16.
``MAX_CLUSTERS``        ``n_clusters`` of ``nquant.KMeans`` (vectors): 2**24.
``MAX_HEADER_BYTES``    a ``.safetensors`` JSON header: 100 MB (the reference
                        implementation's limit).
``MAX_GENERATED_BYTES`` an array a workflow generates: 1 TiB (one chunk, and a whole
                        generated model, must also fit in available memory).
``MAX_VAR_LENGTH``      a workflow variable after substitution: 65536 characters.
``MAX_NESTING``         tables and arrays nested in a workflow file: 32 levels.
``MEMORY_FRACTION``     one allocation may take at most this fraction of the available
                        memory: 0.5.
"""

import os

import numpy as np

from nquant.errors import SchemeError

MAX_BINS = 1 << 24
MAX_GRID = 1 << 24
MAX_LEVELS = 1 << 16
MAX_CLUSTERS = 1 << 24
MAX_HEADER_BYTES = 100_000_000
MAX_GENERATED_BYTES = 1 << 40
MAX_VAR_LENGTH = 65536
MAX_NESTING = 32
MEMORY_FRACTION = 0.5


def available_memory():
    """Bytes of memory available now (psutil when installed, else ``sysconf``; 16 GiB when
    neither can tell)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError, RuntimeError):  # psutil missing, or unable to read /proc
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 << 30


def _fmt_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check_count(name, value, limit, error=SchemeError):
    """Raise ``error`` unless ``value <= limit`` (a count such as bins, levels or ``m``)."""
    if value > limit:
        raise error(f"{name}={value!r} is invalid: at most {limit} is supported")


def check_memory(name, value, nbytes, error=SchemeError):
    """Raise ``error`` when ``nbytes`` (what ``name=value`` makes nquant allocate) exceeds
    ``MEMORY_FRACTION`` of the available memory."""
    budget = int(available_memory() * MEMORY_FRACTION)
    if nbytes > budget:
        raise error(f"{name}={value!r} needs {_fmt_bytes(nbytes)} of memory, more than the "
                    f"{_fmt_bytes(budget)} available (half of the free memory)")


# ----------------------------------------------------------------------------- float ranges

F32_MAX = float(np.finfo(np.float32).max)
"""Largest finite float32: the side arrays (scales, offsets, absmax, codebooks) are float32."""
F32_ROUNDS_FINITE = 2.0**128 - 2.0**103
"""float64 magnitudes below this round to a finite float32 (``3.4028235e38`` as written does)."""


def fits_float32(v):
    """Whether the float ``v`` rounds to a finite float32."""
    return abs(v) < F32_ROUNDS_FINITE


def check_float32_range(name, lo, hi, error):
    """Raise ``error`` when a value of ``[lo, hi]`` (arrays, float64) lies beyond the float32
    range that the side arrays hold; the message names the value and the limit."""
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    big = np.maximum(np.abs(lo), np.abs(hi))
    if big.size and big.max() >= F32_ROUNDS_FINITE:
        g = int(np.argmax(big))
        v = lo.reshape(-1)[g] if abs(lo.reshape(-1)[g]) >= abs(hi.reshape(-1)[g]) else hi.reshape(-1)[g]
        raise error(f"{name} holds {v:.6g}, beyond the float32 range (|value| <= {F32_MAX:.8g}) of "
                    "the side arrays; scale the data down or use a scheme that stores it exactly "
                    "(ASQ, Outliers)")


def finite_cast(res, dtype):
    """``res`` as ``dtype``; a narrowing float cast (float32 to float16) first clips to the
    largest finite value of ``dtype``, so that decoded values just beyond it (a level half a
    step above the data's maximum) stay finite.  NaN stays NaN; ``res`` may be clipped in place."""
    dtype = np.dtype(dtype)
    if res.dtype == dtype:
        return res
    if dtype.kind == "f" and res.dtype.kind == "f" and dtype.itemsize < res.dtype.itemsize:
        big = res.dtype.type(np.finfo(dtype).max)
        np.clip(res, -big, big, out=res)
    return res.astype(dtype)
