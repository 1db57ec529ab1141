"""What a new process pays before its first result: imports and kernel compilation.

asv runs each ``timeraw_`` benchmark's code in a fresh interpreter, after its setup code (not
timed).  "Cold" setups point Numba's cache (``NUMBA_CACHE_DIR``, ``XDG_CACHE_HOME``) at a new
empty folder, so the kernels compile as on a new machine; "warm" setups fill a cache folder
first, in another process, so only loading the cached kernels is timed.
benchmarks/compile_cost.py reports the same paths kernel by kernel.
"""

# A new empty cache folder, before anything imports numba (it reads NUMBA_CACHE_DIR at import).
COLD = """
import os, tempfile
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="nquant-asv-cold-")
os.environ["NUMBA_CACHE_DIR"] = os.path.join(os.environ["XDG_CACHE_HOME"], "numba")
"""

FIRST_QUANTIZE = """
import numpy as np
import nquant as nq
x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
nq.dequantize(nq.quantize(x, nq.Uniform(bits=8)))
"""

# A cache folder kept between runs (its entries are keyed by the kernel sources), filled by a
# process of its own, then used by the timed one.
WARM = f"""
import os, subprocess, sys, tempfile
os.environ["XDG_CACHE_HOME"] = os.path.join(tempfile.gettempdir(), "nquant-asv-warm-cache")
os.environ["NUMBA_CACHE_DIR"] = os.path.join(os.environ["XDG_CACHE_HOME"], "numba")
subprocess.run([sys.executable, "-c", {FIRST_QUANTIZE!r}], check=True)
"""


def timeraw_import_dependencies():
    """The floor: numpy, numba, dask (with dask.array) and zarr."""
    return "import numpy, numba, dask, dask.array, zarr", COLD


def timeraw_import_nquant():
    return "import nquant", COLD


def timeraw_first_quantize_cold():
    """Import, then the first quantize + dequantize of 1M float32 values, compiling the kernels."""
    return FIRST_QUANTIZE, COLD


def timeraw_first_quantize_warm():
    """Import, then the first quantize + dequantize of 1M float32 values, kernels from the cache."""
    return FIRST_QUANTIZE, WARM


timeraw_first_quantize_cold.timeout = 300
timeraw_first_quantize_warm.timeout = 300
