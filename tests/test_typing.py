"""The public API is typed: mypy passes on the package and on typical user code, and catches misuse."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")

ROOT = Path(__file__).resolve().parents[1]


def _mypy(tmp_path, *targets):
    """mypy's exit status and output on ``targets`` with the project's configuration (pyproject)."""
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
           "--cache-dir", str(tmp_path / "mypy_cache"), *map(str, targets)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MYPY_FORCE_COLOR": "0"})
    return res.returncode, res.stdout + res.stderr


def test_py_typed_is_shipped():
    assert (ROOT / "nquant" / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text()


def test_mypy_passes_on_the_package_and_on_user_code(tmp_path):
    rc, out = _mypy(tmp_path, "nquant", ROOT / "tests" / "typing" / "user_code.py")
    assert rc == 0, out
    assert "Success: no issues found" in out


def test_mypy_catches_misuse_of_the_public_api(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nimport nquant as nq\n"
                   "a = nq.Uniform(bits='8')\n"
                   "b = nq.Uniform(rounding='round')\n"
                   "c = nq.quantize(np.zeros(4, np.float32), 'int8')\n"
                   "d: str = nq.quantize(np.zeros(4, np.float32), nq.NF4()).bits_per_value\n")
    rc, out = _mypy(tmp_path, bad)
    assert rc == 1, out
    lines = [ln for ln in out.splitlines() if ": error:" in ln]
    assert [ln.split(":")[1] for ln in lines] == ["3", "4", "5", "6"], out
