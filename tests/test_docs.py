"""The documentation is tested: the site builds with warnings as errors, and every Python and
console example of the README and the guides runs with its printed output checked.

- ```` ```python ```` blocks written as a session (``>>>``) run as doctests (ELLIPSIS on);
- other ```` ```python ```` blocks (the README's) run as scripts, in the namespace that
  ``README_SETUP`` gives each section (the small arrays and files their names refer to), with the
  printed output checked where the README states it (``README_OUTPUT``);
- ```` ```console ```` blocks run each ``$ command`` in a shell and compare its standard output;
- ```` ```bash ```` blocks are installation commands (the README's Quick start and development
  section, which CI itself runs: ``.ci/run``, and the site build test below), or the README's command
  summary, whose every line runs here on small files of the names it uses.

The blocks of one page share a namespace and a fresh working directory, in page order.
"""

import contextlib
import doctest
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_DIRS = {"_build", "_generated", "generated", "_ext"}
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def blocks(path):
    """``[(language, code, line number, section heading)]`` of the fenced blocks of a Markdown file."""
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        start = text.count("\n", 0, m.start()) + 1
        heads = re.findall(r"^#+ (.+)$", text[:m.start()], re.M)
        found.append((m.group(1), m.group(2), start, heads[-1] if heads else ""))
    return found


def pages():
    """The Markdown pages of the site that hold examples, and the README."""
    found = [ROOT / "README.md"]
    for p in sorted(DOCS.rglob("*.md")):
        if not SKIP_DIRS & set(p.relative_to(DOCS).parts):
            found.append(p)
    return found


def _readme_arrays(ns):
    rng = np.random.default_rng(0)
    ns.update(X=rng.standard_normal((512, 32)).astype(np.float32),
              g=rng.standard_normal(4096).astype(np.float32),
              G=rng.standard_normal((8, 256)).astype(np.float32),
              w=rng.standard_normal(4096).astype(np.float32),
              W=rng.standard_normal((64, 512)).astype(np.float32),  # W @ X: X is (in, n) there
              x=rng.standard_normal((4, 64)).astype(np.float32))
    import nquant as nq

    ns["qw"] = nq.quantize(ns["W"], nq.Uniform(bits=8, symmetric=True, axis=0))
    ns["qx"] = nq.quantize(rng.standard_normal((512, 16)).astype(np.float32), nq.Uniform(bits=8))


def _readme_store(ns):
    import zarr

    x = np.random.default_rng(1).standard_normal((512, 64)).astype(np.float32)
    zarr.create_array("data.zarr", shape=x.shape, chunks=(128, 64), dtype="float32")[:] = x


# the names each README section's example refers to without defining them (small, float32)
README_SETUP = {"Dask arrays and Zarr stores": _readme_store, "More families and tools": _readme_arrays}
# what the README says its examples print
README_OUTPUT = {"NumPy arrays": r"8\.03125 \{'mse': [0-9.e-]+, 'rmse': [0-9.e-]+, 'max_abs': [0-9.e-]+, "
                                 r"'sqnr_db': 4\d\.\d+, 'bias': [0-9.e-]+\}\n"}


def _run_doctest(code, ns, name, lineno):
    test = doctest.DocTestParser().get_doctest(code, ns, name, name, lineno)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=out.write, clear_globs=False)
    ns.update(test.globs)  # the next block of the page sees this one's names
    assert result.failed == 0, out.getvalue()


def _run_script(code, ns, name, lineno, heading):
    if heading in README_SETUP:
        README_SETUP[heading](ns)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile("\n" * (lineno) + code, name, "exec"), ns)  # noqa: S102  (the README's own code)
    if heading in README_OUTPUT:
        assert re.fullmatch(README_OUTPUT[heading], out.getvalue()), (name, lineno, out.getvalue())


def _run_console(code, name, lineno):
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path}  # the nquant command of this interpreter
    commands = re.split(r"^\$ ", code, flags=re.M)[1:]
    checker = doctest.OutputChecker()
    for cmd in commands:
        line, _, expected = cmd.partition("\n")
        res = subprocess.run(line, shell=True, capture_output=True, text=True, env=env, timeout=300)
        got = res.stdout if res.stdout or not res.stderr.startswith("nquant: error") else res.stderr
        assert checker.check_output(expected, got, FLAGS), (
            f"{name}:{lineno}: $ {line}\nexpected:\n{expected}\n"
            f"got (status {res.returncode}):\n{got}{res.stderr}")


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run_and_print_what_they_show(page, tmp_path, monkeypatch):
    found = [b for b in blocks(page) if b[0] in ("python", "console")]
    if not found:
        pytest.skip(f"{page.name} has no Python or console example")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "workflows").symlink_to(ROOT / "workflows")
    ns = {"__name__": "__docs__"}
    name = str(page.relative_to(ROOT))
    for lang, code, lineno, heading in found:
        if lang == "console":
            _run_console(code, name, lineno)
        elif ">>>" in code:
            _run_doctest(code, ns, name, lineno)
        else:
            _run_script(code, ns, name, lineno, heading)


def _summary_inputs(d):
    """The files the README's command summary names, small: a Zarr array, a .npy, a .safetensors."""
    from nquant.calibration import write_calibration
    from nquant.safetensors_io import write_tensors

    rng = np.random.default_rng(2)
    _readme_store({})
    np.save(d / "weights.npy", rng.standard_normal((64, 128)).astype(np.float32))
    write_tensors(d / "model.safetensors", {"layer.weight": (rng.standard_normal((64, 128)).astype(np.float32), "F32"),
                                            "layer.bias": (rng.standard_normal(64).astype(np.float32), "F32")})
    write_calibration(d / "cal.npz", {"layer.weight": rng.standard_normal((256, 128)).astype(np.float32)})


@pytest.mark.slow
def test_readme_command_summary_runs(tmp_path, monkeypatch):
    """Every line of the README's command summary exits 0 (in order: later lines use earlier outputs)."""
    (summary,) = [code for lang, code, _, head in blocks(ROOT / "README.md")
                  if lang == "bash" and head == "Command line and workflows"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "workflows").symlink_to(ROOT / "workflows")
    _summary_inputs(tmp_path)
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    lines = [line.partition("#")[0].strip() for line in summary.splitlines()]
    lines = [line for line in lines if line]
    assert len(lines) >= 10 and all(line.startswith("nquant ") for line in lines), lines
    for line in lines:
        res = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PATH": path})
        assert res.returncode == 0, f"$ {line}\n{res.stdout}{res.stderr}"
    assert (tmp_path / "restored.zarr" / "zarr.json").is_file() and (tmp_path / "model-nf4.safetensors").is_file()
    assert (tmp_path / "demo-out" / "report.html").is_file()


def test_every_guide_example_is_a_checked_session():
    """Guide examples show their output (doctest sessions or console transcripts), so a change in
    what nquant prints fails here; only the README keeps plain scripts."""
    plain = [f"{p.relative_to(ROOT)}:{line}" for p in pages() if p.name != "README.md"
             for lang, code, line, _ in blocks(p) if lang == "python" and ">>>" not in code]
    assert not plain, plain


def test_the_block_parser_sees_every_kind(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A\n```python\n>>> 1 + 1\n2\n```\n## B\n```console\n$ echo hi\nhi\n```\n"
                    "```bash\npip install .\n```\n")
    assert [(lang, line, head) for lang, _, line, head in blocks(page)] == [
        ("python", 2, "A"), ("console", 7, "B"), ("bash", 11, "B")]


# ----------------------------------------------------------------------------- the site

def _sphinx_missing():
    for mod in ("sphinx", "myst_parser", "pydata_sphinx_theme", "matplotlib"):
        try:
            __import__(mod)
        except ImportError:
            return mod
    return None


@pytest.mark.slow
def test_site_builds_without_warnings(tmp_path):
    missing = _sphinx_missing()
    if missing:
        pytest.skip(f"{missing} is not installed: pip install '.[docs]' (or '.[test]') to build the site")
    src = tmp_path / "src" / "docs"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns(*SKIP_DIRS - {"_ext"}))
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path / "src" / "CHANGELOG.md")
    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q", str(src), str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "WARNING" not in res.stderr and "ERROR" not in res.stderr, res.stderr
    for page in ("index.html", "getting-started.html", "guides/choosing-a-scheme.html", "api.html",
                 "formats.html", "generated/nquant.quantize.html", "generated/nquant.Uniform.html",
                 "changelog.html"):
        assert (out / page).is_file(), page
    # the scheme guide shows the measured table and figures, made by this build
    guide = (out / "guides" / "choosing-a-scheme.html").read_text()
    assert "int4 per channel" in guide and "jacksboro_fault_dem.npz" in guide
    for fig in ("error_vs_bits_dem.png", "hist_dem_3.png", "hist_dem_8.png"):
        assert (out / "_images" / fig).stat().st_size > 10_000, fig
    # the measured figures are real: more bits, less error; per channel no worse than per tensor
    rows = {r["job"]: r for r in json.loads((src / "_generated" / "rows_dem.json").read_text())}
    sqnr = {k: r["sqnr_db"] for k, r in rows.items()}
    assert sqnr["int8 per channel"] > sqnr["int4 per channel"] > sqnr["int2 per channel"] > 10
    assert sqnr["int8 per channel"] >= sqnr["int8 per tensor"]
    # NF4 on 344 x 403 values: rows of 403 4-bit codes padded to 202 bytes, a float32 absmax per 64
    # values (the last block partial)
    n = 344 * 403
    assert rows["NF4"]["bits_per_value"] == pytest.approx((344 * 202 * 8 + 32 * np.ceil(n / 64)) / n)
    assert rows["NF4, double quantization"]["bits_per_value"] < 4.15
    assert 40 < sqnr["int8 per tensor"] < 60  # 8 bits over a 840 m range: steps of 3.3 m, RMSE about 1 m
