"""Time nquant's CUDA kernels against the GPU's device-to-device copy bandwidth, in one run.

Needs an NVIDIA GPU and numba-cuda (``pip install 'nquant[cuda]'``); refuses to run under the
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which cannot time anything::

    NUMBA_ENABLE_CUDASIM=0 python benchmarks/compare_cuda.py [--gib 1.0] [--repeat 5]

All data lives on the device (at least ``--gib`` GiB of float32 input per section, 1 GiB by
default); times are medians of ``--repeat`` runs measured with CUDA events after a warm-up call
(which compiles the kernels).  Sections:

1. Roofline: device-to-device copy of the input (``DeviceNDArray.copy_to_device``, a
   cudaMemcpy) and a grid-stride copy kernel; the faster one's bandwidth (bytes read + written
   per second) is the reference every kernel is compared with.
2. Uniform 8-bit per-tensor quantization: the encode kernel with fitted parameters
   (``nquant.cuda.affine.quantize_affine``), and the whole ``nq.quantize(x_dev, Uniform(8))``
   (min/max pass + encode).  PyTorch's ``torch.quantize_per_tensor`` on the GPU (same data,
   zero-copy through ``__cuda_array_interface__``) when torch with CUDA is importable.
3. NF4 blockwise (block 64, packed 4-bit codes): fused absmax + encode
   (``nquant.cuda.blockwise.absmax_quantize_blockwise``) and decode (``dequantize_blockwise``).

The test suite runs this script under the simulator on a few KiB with
``NQUANT_CUDA_BENCH_SMOKE=1`` (and ``--gib`` tiny) to check that it runs; the figures it
prints then mean nothing.

For each kernel: time, effective bandwidth = (bytes it must read + write) / time, and that
bandwidth as a fraction of the copy bandwidth (1.0 = as fast as copying the bytes it touches).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np


def _refuse(msg):
    print(f"compare_cuda.py: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _check_gpu():
    try:
        from numba import cuda
    except ImportError:
        _refuse("numba-cuda is not installed: pip install 'nquant[cuda]'")
    from nquant.cuda import _launch

    if _launch.SIMULATOR and os.environ.get("NQUANT_CUDA_BENCH_SMOKE") != "1":
        _refuse("NUMBA_ENABLE_CUDASIM=1 selects the CUDA simulator (one Python thread per CUDA thread): "
                "it cannot time GPU kernels. Run on a machine with an NVIDIA GPU with "
                "NUMBA_ENABLE_CUDASIM=0 (or unset).")
    if not cuda.is_available():
        _refuse("no CUDA GPU is available (numba.cuda.is_available() is False)")
    return cuda


def gpu_time(cuda, fn, repeat):
    """Median seconds of ``fn()`` between two CUDA events, after a warm-up call."""
    from nquant.cuda._launch import SIMULATOR

    fn()
    cuda.synchronize()
    times = []
    for _ in range(repeat):
        if SIMULATOR:  # smoke test only: the simulator's events record no time
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            continue
        start, end = cuda.event(), cuda.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="GiB of float32 input per section (>= 1 for the "
                    "reported figures)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    cuda = _check_gpu()

    import nquant as nq
    from nquant.families import uniform
    from nquant.cuda import affine, blockwise
    from nquant.cuda._launch import launch
    from nquant.cuda.api import _cast as copy_kernel  # grid-stride dst[i] = src[i]
    from nquant.kernels.rng import stream_key
    from nquant.kernels.rounding import MODES

    name = getattr(cuda.get_current_device(), "name", b"CUDA simulator")
    name = name.decode() if isinstance(name, bytes) else str(name)
    n = int(args.gib * 2**30) // 4
    t0 = time.perf_counter()
    x_host = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    x = cuda.to_device(x_host)
    del x_host
    cuda.synchronize()
    print(f"device: {name}; "
          f"input {n} float32 = {4 * n / 2**30:.2f} GiB (generated in {time.perf_counter() - t0:.1f} s); "
          f"median of {args.repeat} (CUDA events)")
    rows = []

    def report(name, seconds, nbytes, extra=""):
        rows.append((name, seconds, nbytes, extra))

    # 1. roofline ------------------------------------------------------------------------------------
    dst = cuda.device_array_like(x)
    t_memcpy = gpu_time(cuda, lambda: dst.copy_to_device(x), args.repeat)
    t_kcopy = gpu_time(cuda, lambda: launch(copy_kernel, n, x, dst), args.repeat)
    copy_bw = 2 * 4 * n / min(t_memcpy, t_kcopy)
    report("device-to-device copy (cudaMemcpy)", t_memcpy, 8 * n)
    report("device-to-device copy (copy kernel)", t_kcopy, 8 * n)
    del dst

    # 2. uniform 8-bit -------------------------------------------------------------------------------
    scheme = nq.Uniform(bits=8)
    q = nq.quantize(x, scheme)  # warm-up and parameters
    params = uniform.plain_side(scheme, q.side)  # one scale and int32 zero point per group
    _, inv, offset, c0 = uniform.kernel_params(scheme, params, np.dtype(np.float32))
    hi, nan_code = uniform.code_limits(scheme)
    lay = uniform.layout(scheme, (n,))
    parts = [(p.view(x), cuda.to_device(p.row_index), cuda.to_device(p.row_group), p) for p in lay.parts]
    d_inv, d_off, d_c0 = cuda.to_device(inv), cuda.to_device(offset), cuda.to_device(c0)
    codes = cuda.device_array(n, np.uint8)
    key = np.uint64(stream_key(np.uint64(0)))

    def encode():
        for xv, ri, rg, p in parts:
            affine.quantize_affine(xv, ri, rg, lay.col_step, d_inv, d_off, d_c0, hi, nan_code,
                                   MODES["nearest"], key, p.view(codes))

    report("uniform 8-bit encode (fitted params)", gpu_time(cuda, encode, args.repeat), 5 * n)
    report("uniform 8-bit nq.quantize (min/max + encode)",
           gpu_time(cuda, lambda: nq.quantize(x, scheme), args.repeat), 5 * n, "reads x twice")
    del parts, codes
    torch_rows = []
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        xt = torch.as_tensor(x, device="cuda")
        s = float(q.side["scale"][0])
        zp = int(params["zero_point"][0])

        def torch_encode():
            torch.quantize_per_tensor(xt, s, zp, torch.quint8)

        def torch_quantize():
            lo, hi_ = xt.min().item(), xt.max().item()
            sc = (max(hi_, 0.0) - min(lo, 0.0)) / 255
            torch.quantize_per_tensor(xt, sc, int(round(-min(lo, 0.0) / sc)), torch.quint8)

        t_te = gpu_time(cuda, torch_encode, args.repeat)
        t_tq = gpu_time(cuda, torch_quantize, args.repeat)
        report("torch.quantize_per_tensor (given params)", t_te, 5 * n)
        report("torch min/max + quantize_per_tensor", t_tq, 5 * n)
        torch_rows = [(t_te, "uniform 8-bit encode (fitted params)"),
                      (t_tq, "uniform 8-bit nq.quantize (min/max + encode)")]
        del xt
    else:
        print("torch with CUDA not importable: no PyTorch comparison")

    # 3. NF4 blockwise -------------------------------------------------------------------------------
    bs = 64
    nb = -(-n // bs)
    levels = nq.normal_float(4)
    absmax = cuda.device_array(nb, np.float32)
    packed = cuda.device_array((n + 1) // 2, np.uint8)
    out = cuda.device_array(n, np.float32)
    report("NF4 absmax + encode (packed, block 64)",
           gpu_time(cuda, lambda: blockwise.absmax_quantize_blockwise(x, bs, levels, absmax, packed, True),
                    args.repeat),
           4 * n + n // 2 + 4 * nb, "reads x twice")
    report("NF4 decode (packed, block 64)",
           gpu_time(cuda, lambda: blockwise.dequantize_blockwise(packed, absmax, bs, levels, out, True),
                    args.repeat),
           4 * n + n // 2 + 4 * nb)
    del absmax, packed, out, x

    # ------------------------------------------------------------------------------------------------
    print(f"copy bandwidth (reference): {copy_bw / 1e9:.1f} GB/s (read + write)")
    print(f"  {'kernel':<48} {'time ms':>9} {'GB/s':>8} {'of copy':>8}")
    for name, sec, nbytes, extra in rows:
        bw = nbytes / sec
        print(f"  {name:<48} {sec * 1e3:9.2f} {bw / 1e9:8.1f} {bw / copy_bw:8.2f}  {extra}")
    if torch_rows:
        times = {name: sec for name, sec, _, _ in rows}
        print("PyTorch / nquant time ratio (> 1: nquant faster)")
        for t_torch, name in torch_rows:
            print(f"  {name:<48} {t_torch / times[name]:6.2f}x")


if __name__ == "__main__":
    main()
