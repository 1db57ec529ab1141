"""Numba options live in one place (nquant/kernels/_jit.py) and fastmath is never on."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nquant"
JIT = PACKAGE / "kernels" / "_jit.py"

DIRECT = re.compile(r"numba\.njit\s*\(|@\s*njit\b|numba\.jit\s*\(|@\s*numba\.n?jit\b|from\s+numba\s+import\s+[^\n]*\bn?jit\b")
FASTMATH = re.compile(r"fastmath\s*=\s*(True|\{|\"|')")


def _sources():
    files = sorted(PACKAGE.rglob("*.py"))
    assert JIT in files and len(files) > 10
    return files


def test_patterns_catch_what_they_should():
    for bad in ["@numba.njit(cache=True)", "f = numba.njit(g)", "@njit", "@ njit(parallel=True)",
                "numba.jit(nopython=True)", "@numba.njit", "from numba import njit, prange"]:
        assert DIRECT.search(bad), bad
    for ok in ["@jit", "@jit_parallel", "from nquant.kernels._jit import jit", "numba.prange",
               "import numba", "njit_cache = 1"]:
        assert not DIRECT.search(ok), ok
    assert FASTMATH.search("numba.njit(fastmath=True)") and FASTMATH.search("fastmath = {'nnan'}")
    assert not FASTMATH.search('"fastmath": False')


def test_numba_njit_only_in_jit_module():
    offenders = []
    for path in _sources():
        if path == JIT:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if DIRECT.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "use nquant.kernels._jit.jit / jit_parallel:\n" + "\n".join(offenders)
    assert "numba.njit(" in JIT.read_text()


def test_fastmath_never_enabled():
    roots = [PACKAGE, ROOT / "asv_bench", ROOT / "benchmarks"]
    offenders = []
    for root in roots:
        for path in sorted(root.rglob("*.py")) if root.exists() else []:
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if FASTMATH.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    from nquant.kernels import _jit

    assert _jit.OPTIONS["fastmath"] is False
