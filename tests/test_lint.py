"""Rules checked on the source: Numba options in one place (nquant/kernels/_jit.py), fastmath never on,
every CUDA twin matched by a CPU twin of the same names and by its tests, private names kept private,
and one name per kernel: ``nquant/kernels/X.py`` has its reference ``tests/reference/X.py``, tests
named by X and the benchmark class ``CamelCase(X)`` in ``asv_bench/benchmarks/kernels.py``."""

import ast
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


# ----------------------------------------------------------------------------- CUDA twins

CUDA = PACKAGE / "cuda"
KERNELS = PACKAGE / "kernels"
NOT_TWINS = {"__init__.py", "api.py"}  # the package and the dispatch of device="cuda"; _*.py are helpers
CPU_ELSEWHERE = {
    # CUDA function -> the file and names of its CPU counterpart, where the CPU computes the same
    # statistic outside the kernel module of the same name (the test checks they exist)
    ("affine", "group_minmax"): ("nquant/kernels/stats.py", ("row_minmax", "column_minmax")),
}


def _tree(path):
    return ast.parse(path.read_text(), filename=str(path))


def _top_level_names(path):
    """Names a module defines or imports at its top level."""
    names = set()
    for node in _tree(path).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names


def _public_functions(path):
    """``__all__`` (or the top-level ``def``s) of a module, without UPPER_CASE constants."""
    tree = _tree(path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                for t in node.targets):
            names = ast.literal_eval(node.value)
            break
    else:
        names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    return sorted(n for n in names if not n.startswith("_") and not n.isupper())


def _twins():
    return sorted(p.stem for p in CUDA.glob("*.py") if p.name not in NOT_TWINS and not p.name.startswith("_"))


def test_the_twin_rules_see_the_twins():
    twins = _twins()
    assert {"affine", "bitpack", "blockwise", "codebook1d", "rng", "rounding"} <= set(twins)
    assert "quantize_affine" in _public_functions(CUDA / "affine.py")
    assert "mix64" in _public_functions(CUDA / "rng.py") and "GAMMA" not in _public_functions(CUDA / "rng.py")


def test_every_cuda_twin_has_a_cpu_twin_of_the_same_names():
    problems = []
    for name in _twins():
        cpu = KERNELS / f"{name}.py"
        if not cpu.exists():
            problems.append(f"nquant/cuda/{name}.py has no CPU twin nquant/kernels/{name}.py")
            continue
        cpu_names = _top_level_names(cpu)
        for fn in _public_functions(CUDA / f"{name}.py"):
            if (name, fn) in CPU_ELSEWHERE:
                where, cpu_fns = CPU_ELSEWHERE[name, fn]
                missing = [f for f in cpu_fns if f not in _top_level_names(ROOT / where)]
                if missing:
                    problems.append(f"nquant/cuda/{name}.py:{fn}: its CPU counterpart {where}:{missing} is gone")
            elif fn not in cpu_names:
                problems.append(f"nquant/cuda/{name}.py:{fn} has no function of that name in nquant/kernels/{name}.py")
    assert not problems, "\n".join(problems)


def test_every_cuda_twin_function_is_tested():
    """``tests/test_cuda_<X>.py`` imports ``nquant.cuda.<X>`` and calls every public function of it."""
    problems = []
    for name in _twins():
        test = ROOT / "tests" / f"test_cuda_{name}.py"
        if not test.exists():
            problems.append(f"nquant/cuda/{name}.py has no tests/test_cuda_{name}.py")
            continue
        tree = _tree(test)
        imported = any(
            (isinstance(n, ast.ImportFrom) and n.module == "nquant.cuda" and any(a.name == name for a in n.names))
            or (isinstance(n, ast.ImportFrom) and n.module == f"nquant.cuda.{name}")
            for n in ast.walk(tree))
        if not imported:
            problems.append(f"tests/test_cuda_{name}.py does not import nquant.cuda.{name}")
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        problems += [f"tests/test_cuda_{name}.py never uses nquant.cuda.{name}.{fn}"
                     for fn in _public_functions(CUDA / f"{name}.py") if fn not in used]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- private names

KNOWN_PRIVATE_USES = {
    # module: private names of other nquant modules it still uses (this set may only shrink)
    "nquant.adaptive": {"nquant.families.codebook._levels"},
    "nquant.cuda.api": {"nquant.families.codebook._levels"},
    "nquant.families.asq": {"nquant.codebooks.asq._check_m"},
    "nquant.families.kmeans_blockwise": {"nquant.families.blockwise._absmax", "nquant.families.blockwise._flat32"},
}


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_uses(path, modules, me=None):
    """``module.name`` of every private name of another nquant module that ``path`` (module ``me``) uses.

    A private *module* (``from nquant import _alloc``) is fine; so is a CUDA twin compiling a
    private helper of its CPU twin of the same name (one source, two targets).
    """
    me = me or _module_name(path)
    tree = _tree(path)
    aliases, found = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nquant"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in modules:
                    aliases[a.asname or a.name] = full
                elif a.name.startswith("_") and not a.name.startswith("__") and node.module != me:
                    found.add(full)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("nquant") and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")
                and aliases[node.value.id] != me):
            found.add(f"{aliases[node.value.id]}.{node.attr}")
    if me.startswith("nquant.cuda."):
        twin = "nquant.kernels." + me.rsplit(".", 1)[1]
        found = {f for f in found if f.rsplit(".", 1)[0] != twin}
    return found


def test_the_private_rule_sees_private_uses(tmp_path):
    modules = {_module_name(p) for p in _sources()}
    probe = tmp_path / "probe.py"
    probe.write_text("from nquant.store import _secret, open\n"
                     "from nquant import _alloc, store as st\n"
                     "from nquant.kernels import codebook1d as _cpu\n"
                     "x = st._hidden + _alloc.empty + _cpu._fill_thresholds + st.__name__\n")
    assert _private_uses(probe, modules, "nquant.probe") == {
        "nquant.store._secret", "nquant.store._hidden", "nquant.kernels.codebook1d._fill_thresholds"}
    # a CUDA twin may compile its CPU twin's private helpers, not another kernel's
    assert _private_uses(probe, modules, "nquant.cuda.codebook1d") == {
        "nquant.store._secret", "nquant.store._hidden"}


def test_no_module_uses_another_modules_private_names():
    modules = {_module_name(p) for p in _sources()}
    offenders = []
    for path in _sources():
        me = _module_name(path)
        new = _private_uses(path, modules) - KNOWN_PRIVATE_USES.get(me, set())
        offenders += [f"{path.relative_to(ROOT)}: {name}" for name in sorted(new)]
    assert not offenders, ("make the name public (no underscore, with a docstring) in its home module, "
                           "or move it where it belongs:\n" + "\n".join(offenders))


# ----------------------------------------------------------------------------- layers

# the families, the execution layer and the kernels sit below nquant.api: the interfaces and the
# package's __init__ may import it, these never do (not even inside a function)
BELOW_API = ([PACKAGE / "families", KERNELS, CUDA]
             + [PACKAGE / f"{name}.py" for name in ("chunked", "store", "codec", "validate", "outputs")])


def _imported_modules(path, me):
    """Every module that ``path`` (module ``me``) imports, top-level or in a function, as dotted names
    (``from a import b`` counts as ``a`` and ``a.b``)."""
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _imports_api(path, me):
    return any(m == "nquant.api" or m.startswith("nquant.api.") for m in _imported_modules(path, me))


def _below_api_sources():
    return [p for p in _sources() if any(p == b or b in p.parents for b in BELOW_API)]


def test_the_layer_rule_sees_api_imports(tmp_path):
    cases = {"from nquant.api import quantize\n": True, "import nquant.api\n": True,
             "from nquant import api, store\n": True, "def f():\n    from nquant import api\n": True,
             "from ..api import quantize\n": True, "from nquant import store\n": False,
             "from nquant.cuda.api import quantize\n": False, "from .api import quantize\n": False}
    for text, expected in cases.items():
        probe = tmp_path / "probe.py"
        probe.write_text(text)
        assert _imports_api(probe, "nquant.families.probe") is expected, text
    assert PACKAGE / "store.py" in _below_api_sources()
    assert PACKAGE / "families" / "uniform.py" in _below_api_sources()


def test_families_execution_layer_and_kernels_never_import_api():
    offenders = [str(p.relative_to(ROOT)) for p in _below_api_sources() if _imports_api(p, _module_name(p))]
    assert not offenders, "these modules sit below nquant.api and may not import it:\n" + "\n".join(offenders)


# ----------------------------------------------------------------------------- imports at module top

LOCAL_IMPORTS_ALLOWED = {
    # nquant.api dispatches device="cuda" to nquant.cuda.api only when asked: ``import nquant``
    # never imports numba.cuda or nquant.cuda (tests/test_cuda_api.py checks it)
    ("nquant/api.py", "nquant.cuda.api"),
    # scalar.py's helpers are plain Python compiled for both targets; the CPU decorator (and the
    # Numba options and kernel-source hash of nquant.kernels._jit) is imported when the CPU set is
    # first compiled, so that the CUDA twins (nquant.cuda._device) import scalar.py without it
    ("nquant/kernels/scalar.py", "nquant.kernels._jit"),
}


def _local_nquant_imports(path):
    """``(line, module)`` of every import of an nquant module inside a function of ``path``."""
    found = []
    for fn in ast.walk(_tree(path)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "nquant"]
            elif isinstance(node, ast.ImportFrom) and (node.level or
                                                       (node.module or "").split(".")[0] == "nquant"):
                found.append((node.lineno, "." * node.level + (node.module or "")))
    return sorted(set(found))


def test_local_import_rule_sees_function_imports(tmp_path):
    cases = {"def f():\n    from nquant.store import open\n": [(2, "nquant.store")],
             "def f():\n    import nquant.api as a\n": [(2, "nquant.api")],
             "class C:\n    def m(self):\n        if x:\n            from . import store\n": [(4, ".")],
             "from nquant import store\n": [], "def f():\n    import zarr\n": [],
             "def f():\n    from nquantile import x\n": []}
    for text, expected in cases.items():
        probe = tmp_path / "probe.py"
        probe.write_text(text)
        assert _local_nquant_imports(probe) == expected, text


def test_nquant_modules_imported_at_module_top():
    """No function-local import of an nquant module (they hide import circles); import at the top.
    The exceptions, each with its reason, are in LOCAL_IMPORTS_ALLOWED."""
    offenders, seen = [], set()
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        for line, module in _local_nquant_imports(path):
            if (rel, module) in LOCAL_IMPORTS_ALLOWED:
                seen.add((rel, module))
            else:
                offenders.append(f"{rel}:{line}: {module}")
    assert not offenders, "import these at the module's top:\n" + "\n".join(offenders)
    assert seen == LOCAL_IMPORTS_ALLOWED, f"stale allow-list entries: {LOCAL_IMPORTS_ALLOWED - seen}"


# ----------------------------------------------------------------------------- one name per kernel

TESTS = ROOT / "tests"
REFERENCE = TESTS / "reference"
ASV_KERNELS = ROOT / "asv_bench" / "benchmarks" / "kernels.py"
BENCHMARK_KINDS = ("time_", "peakmem_", "mem_", "track_")


def _kernels():
    return sorted(p.stem for p in KERNELS.glob("*.py") if not p.name.startswith("_"))


def _camel(name):
    """``asq_dp`` -> ``AsqDp``, ``codebook1d`` -> ``Codebook1d``: the benchmark class of a kernel."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _test_functions(path):
    """Names of the test functions of a test module (top level and in ``Test*`` classes)."""
    tree = _tree(path)
    nodes = list(tree.body) + [n for c in tree.body if isinstance(c, ast.ClassDef) for n in c.body]
    return {n.name for n in nodes if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def _reference_imports(path):
    """The modules of ``tests/reference`` that a test module imports (any of the import forms)."""
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.module in ("tests.reference", "reference"):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for prefix in ("tests.reference.", "reference."):
                if node.module.startswith(prefix):
                    found.add(node.module[len(prefix):].split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("tests.reference."))
    return found


def _benchmark_classes(path):
    """``{class name: its benchmark methods}`` of an asv module."""
    return {c.name: [n.name for n in c.body
                     if isinstance(n, ast.FunctionDef) and n.name.startswith(BENCHMARK_KINDS)]
            for c in _tree(path).body if isinstance(c, ast.ClassDef)}


def test_the_kernel_name_rules_see_kernels_tests_and_references(tmp_path):
    kernels = _kernels()
    assert {"affine", "asq_dp", "codebook1d", "stats"} <= set(kernels) and "_jit" not in kernels
    assert _camel("asq_dp") == "AsqDp" and _camel("codebook1d") == "Codebook1d" and _camel("pq") == "Pq"
    probe = tmp_path / "test_probe.py"
    probe.write_text("from tests.reference import affine as affine_ref, rng\nfrom reference import qat\n"
                     "from tests.reference.stats import row_minmax\nimport tests.reference.pq\n"
                     "from tests.helpers import readonly\n"
                     "def test_affine_x():\n    pass\nclass TestY:\n    def test_rng_y(self):\n        pass\n"
                     "def helper():\n    pass\n")
    assert _reference_imports(probe) == {"affine", "rng", "qat", "stats", "pq"}
    assert _test_functions(probe) == {"test_affine_x", "test_rng_y"}
    assert _benchmark_classes(ASV_KERNELS)["Affine"]


def test_every_kernel_has_a_reference_tests_and_a_benchmark_of_its_name():
    """For every ``nquant/kernels/X.py``: the NumPy reference ``tests/reference/X.py``; a test module
    named by X (``tests/test_X.py``, or one with test functions ``test_X_*``) that imports that
    reference; and the benchmark class ``CamelCase(X)`` in ``asv_bench/benchmarks/kernels.py``."""
    tests = {p: (_test_functions(p), _reference_imports(p)) for p in sorted(TESTS.glob("test_*.py"))}
    benchmarks = _benchmark_classes(ASV_KERNELS)
    problems = []
    for name in _kernels():
        if not (REFERENCE / f"{name}.py").exists():
            problems.append(f"nquant/kernels/{name}.py has no tests/reference/{name}.py")
        named = [p for p, (functions, _) in tests.items()
                 if p.name == f"test_{name}.py" or any(f.startswith(f"test_{name}_") for f in functions)]
        if not named:
            problems.append(f"nquant/kernels/{name}.py has no tests/test_{name}.py and no test function "
                            f"test_{name}_*")
        elif not any(name in tests[p][1] for p in named):
            problems.append(f"no test module named by {name} ({', '.join(p.name for p in named)}) "
                            f"imports tests.reference.{name}")
        if not benchmarks.get(_camel(name)):
            problems.append(f"nquant/kernels/{name}.py has no benchmark class {_camel(name)} with "
                            f"time_/peakmem_/mem_/track_ methods in asv_bench/benchmarks/kernels.py")
    assert not problems, "\n".join(problems)


def test_kernel_benchmarks_and_references_name_existing_modules():
    """No stale names: every class of ``asv_bench/benchmarks/kernels.py`` is a kernel's, every
    ``tests/reference`` module is a kernel's or a family's / module's of nquant (which may import
    the kernel-level references), and every reference module is imported by some test module."""
    kernels = set(_kernels())
    stale = [f"asv_bench/benchmarks/kernels.py: class {c} names no kernel"
             for c in _benchmark_classes(ASV_KERNELS) if c not in {_camel(k) for k in kernels}]
    imported = set().union(*(_reference_imports(p) for p in TESTS.glob("test_*.py")))
    for path in sorted(REFERENCE.glob("*.py")):
        name = path.stem
        if name == "__init__":
            continue
        if name not in kernels and not ((PACKAGE / f"{name}.py").exists()
                                        or (PACKAGE / "families" / f"{name}.py").exists()):
            stale.append(f"tests/reference/{name}.py names neither a kernel nor an nquant module")
        if name not in imported:
            stale.append(f"tests/reference/{name}.py is imported by no test module")
    assert not stale, "\n".join(stale)


# ----------------------------------------------------------------------------- import cycles


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(files):
    """``{module: {nquant modules it imports at module level}}`` (absolute imports)."""
    names = {_module_name(p): p for p in files}
    graph = {}
    for name, path in names.items():
        found = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {m for m in found if m in names and m != name}
    return graph


def _cycles(graph):
    """Import cycles of ``graph``, leaving out a package importing its own sub-modules (which
    Python runs in order, not in a circle)."""
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                cycle = stack[stack.index(v):] + [v]
                if not any(b.startswith(a + ".") for a, b in zip(cycle, cycle[1:])):
                    found.append(cycle)
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


def test_the_cycle_rule_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"p": {"p.x"}, "p.x": {"p"}}) == []  # a package and its own sub-module
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_nquant_modules():
    graph = _import_graph(_sources())
    assert len(graph) > 40 and "nquant.api" in graph["nquant"]
    assert _cycles(graph) == []
