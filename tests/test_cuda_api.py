"""``nq.quantize(..., device="cuda")`` and device inputs: the same codes as the CPU, results kept on
the device, refusals, device selection, and ``import nquant`` never importing CUDA."""

import os
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from tests.cuda_common import small_launches  # noqa: F401  (autouse fixture)
from tests.cuda_common import NF4, ROOT, cuda  # skips this module without numba-cuda
from tests.helpers import readonly

pytestmark = pytest.mark.cuda

import nquant as nq  # noqa: E402
from nquant import _device as selection  # noqa: E402
from nquant.cuda import _launch  # noqa: E402
from nquant.errors import DeviceError, InputError, SchemeError  # noqa: E402


SCHEMES = [
    nq.Uniform(bits=8),
    nq.Uniform(bits=4, symmetric=True, axis=0),
    nq.Uniform(bits=3, axis=-1, rounding="stochastic", seed=3),
    nq.Uniform(bits=5, block_size=16, zero_point="float", rounding="floor"),
    nq.Uniform(bits=8, range=(-2.0, 2.0), rounding="ceil", signed=True),
    nq.Uniform(bits=6, rounding="nearest_away", nan="propagate"),
    nq.Codebook(np.linspace(-3, 3, 11), rounding="stochastic", seed=1),
    nq.Codebook(NF4),
    nq.NF4(block_size=8),
    nq.NF4(block_size=4, double_quant=True),
    # compact side arrays: scale dtypes, packed or absent zero points, double-quantized scales
    nq.Uniform(bits=4, block_size=8, scale_dtype="bfloat16", zero_point_storage="packed"),
    nq.Uniform(bits=4, symmetric=True, block_size=4, double_quant=True, zero_point_storage="packed"),
    nq.Uniform(bits=3, block_size=4, double_quant=True, zero_point_storage="packed", rounding="stochastic"),
    nq.Uniform(bits=5, axis=0, scale_dtype="float16", zero_point_storage="packed"),
    nq.Uniform(bits=4, symmetric=True, scale_dtype="float16", zero_point_storage="packed"),
    nq.Uniform(bits=4, block_size=16, zero_point="float", scale_dtype="bfloat16"),
]


def _same_quantized(a, b):
    assert (a.shape, np.dtype(a.dtype), a.bits, a.scheme) == (b.shape, np.dtype(b.dtype), b.bits, b.scheme)
    assert_array_equal(b.codes, a.codes)
    assert list(b.side) == list(a.side)
    for k in a.side:
        assert_array_equal(b.side[k], a.side[k])


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.to_json()[:60])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_quantize_device_cuda_equals_cpu(scheme, dtype):
    x = (np.random.default_rng(15).standard_normal((6, 10)) * 3).astype(dtype)
    if getattr(scheme, "nan", "raise") == "propagate":
        x[2, 2] = np.nan
    q_cpu = nq.quantize(x, scheme)
    q_gpu = nq.quantize(readonly(x), scheme, device="cuda")
    assert isinstance(q_gpu.codes, np.ndarray)  # a host input gives host results
    _same_quantized(q_cpu, q_gpu)
    assert_array_equal(nq.dequantize(q_gpu), nq.dequantize(q_cpu))


@pytest.mark.parametrize("scheme", [SCHEMES[0], SCHEMES[2], SCHEMES[6], SCHEMES[9]], ids=lambda s: s.type)
def test_device_input_keeps_results_on_the_device(scheme):
    x = (np.random.default_rng(16).standard_normal((5, 12)) * 2).astype(np.float32)
    q_cpu = nq.quantize(x, scheme)
    q = nq.quantize(cuda.to_device(x), scheme)  # selected by the input, device="cpu" by default
    assert _launch.is_device(q.codes)
    host = {k: (v.copy_to_host() if _launch.is_device(v) else v) for k, v in q.side.items()}
    assert_array_equal(q.codes.copy_to_host(), q_cpu.codes)
    for k in q_cpu.side:
        assert_array_equal(host[k], q_cpu.side[k])
    if scheme.type == "blockwise":
        assert all(_launch.is_device(q.side[k]) for k in ("absmax_codes", "absmax2"))
    x_hat = nq.dequantize(q)
    assert _launch.is_device(x_hat) and tuple(x_hat.shape) == x.shape
    assert_array_equal(x_hat.copy_to_host(), nq.dequantize(q_cpu))
    out = cuda.device_array(x.shape, np.float64)
    assert nq.dequantize(q, dtype=np.float64, out=out) is out
    assert_array_equal(out.copy_to_host(), nq.dequantize(q_cpu, dtype=np.float64))
    host_out = np.empty(x.shape, np.float32)
    nq.dequantize(q, out=host_out)
    assert_array_equal(host_out, nq.dequantize(q_cpu))


@pytest.mark.parametrize("scheme", [nq.Uniform(bits=3), nq.Uniform(bits=2, zero_point="float", rounding="ceil"),
                                    nq.NF4(block_size=2, double_quant=True), nq.NF4(block_size=4)],
                         ids=lambda s: s.to_json()[:60])
@pytest.mark.parametrize("dtype, top", [(np.float32, 3.4e38), (np.float16, 65504)])
def test_device_decodes_finite_near_the_limit_as_the_cpu(scheme, dtype, top):
    x = np.array([-top, top, 0, top / 3, -top * 0.9, 1, top * 0.99, -1], dtype)
    q_cpu = nq.quantize(x, scheme)
    q = nq.quantize(cuda.to_device(x), scheme)
    host = {k: (v.copy_to_host() if _launch.is_device(v) else v) for k, v in q.side.items()}
    assert_array_equal(q.codes.copy_to_host(), q_cpu.codes)
    for k in q_cpu.side:
        assert_array_equal(host[k], q_cpu.side[k])
    x_hat = nq.dequantize(q).copy_to_host()
    assert x_hat.dtype == dtype and np.isfinite(x_hat).all()
    assert_array_equal(x_hat, nq.dequantize(q_cpu))


def test_device_refuses_levels_beyond_unit_times_a_huge_absmax():
    scheme = nq.Blockwise(codebook=(-2.0, 0.0, 2.0), block_size=2)
    x = np.float32([3e38, 1, -2, 0.5])
    with pytest.raises(InputError, match="exceeds the float32 range"):
        nq.quantize(x, scheme)
    with pytest.raises(InputError, match="exceeds the float32 range"):
        nq.quantize(cuda.to_device(x), scheme)


@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (1,), (7,), (2, 3, 5)])
def test_quantize_device_cuda_odd_shapes(shape):
    x = np.random.default_rng(17).standard_normal(shape).astype(np.float32)
    for scheme in (nq.Uniform(bits=4), nq.NF4(block_size=4)):
        _same_quantized(nq.quantize(x, scheme), nq.quantize(x, scheme, device="cuda"))


def test_device_errors_and_refusals():
    x = np.array([1.0, np.nan, 2.0], np.float32)
    with pytest.raises(InputError, match="1 NaN value"):
        nq.quantize(x, nq.Uniform(), device="cuda")
    with pytest.raises(InputError, match="infinite values"):
        nq.quantize(np.array([1.0, -np.inf]), nq.Uniform(nan="propagate"), device="cuda")
    with pytest.raises(InputError, match="NaN or infinite"):
        nq.quantize(x, nq.NF4(block_size=2), device="cuda")
    with pytest.raises(InputError, match="codebook needs finite"):
        nq.quantize(np.array([1.0, np.inf]), nq.Codebook([0.0, 1.0]), device="cuda")
    with pytest.raises(InputError, match="dtype=int64"):
        nq.quantize(cuda.to_device(np.arange(3)), nq.Uniform())
    with pytest.raises(DeviceError, match="range='percentile' is not available with device='cuda'"):
        nq.quantize(np.ones(4), nq.Uniform(range="percentile"), device="cuda")
    with pytest.raises(DeviceError, match="scheme type='asq' has no CUDA implementation"):
        nq.quantize(np.ones(4), nq.ASQ(bits=2), device="cuda")
    with pytest.raises(SchemeError):
        nq.quantize(np.ones(4), "int8", device="cuda")
    with pytest.raises(DeviceError, match="device='gpu' is not available"):
        nq.quantize(np.ones(4), nq.Uniform(), device="gpu")
    da = pytest.importorskip("dask.array")
    with pytest.raises(DeviceError, match="Dask array is not supported"):
        nq.quantize(da.ones(8, chunks=4), nq.Uniform(), device="cuda")


def test_device_error_without_gpu_or_numba_cuda(monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(cuda, "is_available", lambda: False)
        with pytest.raises(DeviceError, match=r"numba.cuda.is_available\(\) is False"):
            nq.quantize(np.ones(4), nq.Uniform(), device="cuda")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "numba.cuda", None)  # as if numba-cuda were not installed
        with pytest.raises(DeviceError, match="needs numba-cuda"):
            nq.quantize(np.ones(4), nq.Uniform(), device="cuda")
    assert nq.quantize(np.ones(4), nq.Uniform()).shape == (4,)  # the CPU never needs it


def test_resolve_device():
    class CAI:  # anything exposing the CUDA array interface (CuPy, torch.cuda) selects CUDA
        __cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "data": (0, False), "version": 3}

    assert selection.resolve_device(np.ones(3)) == "cpu"
    assert selection.resolve_device(np.ones(3), "cuda") == "cuda"
    assert selection.resolve_device(cuda.to_device(np.ones(3))) == "cuda"
    assert selection.resolve_device(CAI()) == "cuda"
    da = pytest.importorskip("dask.array")
    assert selection.resolve_device(da.ones(4, chunks=2)) == "cpu"
    dask_of_cupy = type("Array", (), {"__module__": "dask.array.core", "_meta": CAI()})()
    assert selection.is_cuda_array(dask_of_cupy)
    with pytest.raises(DeviceError, match="expected 'cpu' or 'cuda'"):
        selection.resolve_device(np.ones(3), "tpu")


def test_import_nquant_never_imports_cuda():
    code = ("import sys, numpy, nquant as nq\n"
            "nq.dequantize(nq.quantize(numpy.ones(5), nq.NF4(block_size=4)))\n"
            "prefixes = ('numba.cuda', 'numba_cuda', 'nquant.cuda')\n"
            "bad = sorted(m for m in sys.modules if m.startswith(prefixes))\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not _launch.SIMULATOR, reason="the refusal is for the simulator")
def test_benchmark_refuses_the_simulator_and_runs_as_a_smoke_test():
    script = str(ROOT / "benchmarks" / "compare_cuda.py")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    env.pop("NQUANT_CUDA_BENCH_SMOKE", None)
    r = subprocess.run([sys.executable, script], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "simulator" in r.stderr and "NUMBA_ENABLE_CUDASIM=0" in r.stderr
    env["NQUANT_CUDA_BENCH_SMOKE"] = "1"
    r = subprocess.run([sys.executable, "-W", "error", script, "--gib", "1e-6", "--repeat", "1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "copy bandwidth" in r.stdout and "NF4 decode" in r.stdout
