"""Run every asv benchmark once on tiny data so benchmarks cannot rot."""

import importlib
import inspect
import itertools
import pkgutil
import sys
from pathlib import Path

import pytest

ASV = Path(__file__).resolve().parents[1] / "asv_bench"
sys.path.insert(0, str(ASV))

import benchmarks  # noqa: E402
from benchmarks import common  # noqa: E402

MODULES = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name != "common")


def _cases():
    for name in MODULES:
        mod = importlib.import_module(f"benchmarks.{name}")
        for cls_name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__:
                continue
            params = getattr(cls, "params", ())
            if params and not isinstance(params[0], (list, tuple)):
                params = (params,)
            combos = list(itertools.product(*params)) if params else [()]
            yield pytest.param(cls, combos[0], id=f"{name}.{cls_name}")


@pytest.mark.parametrize("cls, params", list(_cases()))
def test_benchmark_runs(cls, params, monkeypatch):
    monkeypatch.setattr(common, "N", 4096)
    bench = cls()
    if hasattr(bench, "setup_cache"):
        cache = bench.setup_cache()
        params = (cache, *params)
    if hasattr(bench, "setup"):
        bench.setup(*params)
    methods = [m for m in dir(bench) if m.split("_")[0] in ("time", "peakmem", "track", "mem")]
    assert methods, f"{cls.__name__} has no benchmark methods"
    for m in methods:
        result = getattr(bench, m)(*params)
        if m.startswith("track"):
            assert result == result, f"{cls.__name__}.{m} returned NaN"
    if hasattr(bench, "teardown"):
        bench.teardown(*params)
