"""NF4 blockwise quantization: nquant vs NumPy vs bitsandbytes' CPU path, in one run.

Usage::

    python benchmarks/compare_codebook.py [--n 16777216] [--block 64] [--repeat 5]
    python benchmarks/compare_codebook.py --write-golden tests/fixtures/bnb_nf4_golden.npz

Needs ``bitsandbytes`` (and torch) importable next to nquant; prints a skip message and exits 0
otherwise.  Neither is a dependency of nquant: install them in a separate environment (plus
nquant's own requirements) to run this.

Timings are medians of ``--repeat`` runs after a warm-up call, all in this one process, with
preallocated outputs for nquant and NumPy (bitsandbytes allocates its own).  Reported per
method: quantize and dequantize time, ratio to bitsandbytes, RMSE of the reconstruction, and
whether codes and absmax are bit-identical to bitsandbytes'.
"""

import argparse
import sys
import time

import numpy as np


def _median_time(fn, repeat):
    fn()  # warm (compiles, faults pages in)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _numpy_nf4(x, block, levels, codes_out, absmax_out):
    """Plain NumPy: absmax, float32 scale, searchsorted on float32 midpoints, pack."""
    f32 = np.float32
    xb = x.reshape(-1, block)
    np.max(np.abs(xb), axis=1, out=absmax_out)
    scale = f32(1.0) / np.maximum(absmax_out, f32(1e-38))
    y = xb * scale[:, None]
    mids = (levels[:-1] + levels[1:]) / f32(2)
    c = np.searchsorted(mids, y.reshape(-1), side="left").astype(np.uint8)
    np.bitwise_or(c[0::2] << 4, c[1::2], out=codes_out)


def _numpy_dequant(packed, absmax, block, levels, out):
    c = np.empty(packed.size * 2, np.uint8)
    c[0::2] = packed >> 4
    c[1::2] = packed & 15
    np.multiply(levels[c].reshape(-1, block), absmax[:, None], out=out.reshape(-1, block))


def run_benchmark(n, block, repeat):
    import torch
    import bitsandbytes
    import bitsandbytes.functional as F

    from nquant.codebooks.grids import normal_float
    from nquant.kernels import blockwise as bw

    levels = normal_float(4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32)
    xt = torch.from_numpy(x)
    nb = -(-n // block)
    print(f"NF4 blockwise, {n} float32 values, block {block}, median of {repeat} (warmed)")
    import numba
    print(f"bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); numba {numba.__version__} "
          f"({numba.get_num_threads()} threads); numpy {np.__version__}")

    # bitsandbytes
    state = {}

    def bnb_q():
        state["q"], state["st"] = F.quantize_4bit(xt, blocksize=block, quant_type="nf4")

    def bnb_dq():
        state["xh"] = F.dequantize_4bit(state["q"], state["st"])

    t_bnb_q = _median_time(bnb_q, repeat)
    t_bnb_dq = _median_time(bnb_dq, repeat)
    bnb_codes = state["q"].numpy().reshape(-1)
    bnb_absmax = state["st"].absmax.numpy()
    bnb_xh = state["xh"].numpy().reshape(-1)

    # nquant: fused absmax + quantize + 4-bit packing; decode with unpacking fused
    packed = np.empty((n + 1) // 2, np.uint8)
    absmax = np.empty(nb, np.float32)
    xh = np.empty(n, np.float32)
    t_nq_q = _median_time(lambda: bw.absmax_quantize_blockwise(x, block, levels, absmax, packed, packed=True), repeat)
    t_nq_dq = _median_time(lambda: bw.dequantize_blockwise(packed, absmax, block, levels, xh, packed=True), repeat)

    # nquant variants: two passes (absmax, then quantize) and unpacked codes
    codes = np.empty(n, np.uint8)
    absmax2 = np.empty(nb, np.float32)
    t_two = _median_time(lambda: (bw.blockwise_absmax(x, block, absmax2),
                                  bw.quantize_blockwise(x, absmax2, block, levels, packed, packed=True)), repeat)
    t_unpacked = _median_time(lambda: bw.absmax_quantize_blockwise(x, block, levels, absmax2, codes), repeat)
    xh2 = np.empty(n, np.float32)
    t_dq_unpacked = _median_time(lambda: bw.dequantize_blockwise(codes, absmax2, block, levels, xh2), repeat)

    # the public API (allocates its outputs; fused packed kernels where rows hold whole bytes)
    import nquant as nq

    scheme = nq.Blockwise(tuple(float(v) for v in levels), block_size=block)
    q = nq.quantize(x, scheme)
    t_api_q = _median_time(lambda: nq.quantize(x, scheme), repeat)
    t_api_dq = _median_time(lambda: nq.dequantize(q), repeat)

    # NumPy
    np_packed = np.empty((n + 1) // 2, np.uint8)
    np_absmax = np.empty(nb, np.float32)
    np_xh = np.empty(n, np.float32)
    t_np_q = _median_time(lambda: _numpy_nf4(x, block, levels, np_packed, np_absmax), repeat)
    t_np_dq = _median_time(lambda: _numpy_dequant(np_packed, np_absmax, block, levels, np_xh), repeat)

    def rmse(a):
        return float(np.sqrt(np.mean((a.astype(np.float64) - x) ** 2)))

    rows = [
        ("bitsandbytes CPU", t_bnb_q, t_bnb_dq, rmse(bnb_xh), True, True),
        ("nquant (fused, packed)", t_nq_q, t_nq_dq, rmse(xh),
         np.array_equal(packed, bnb_codes), np.array_equal(absmax, bnb_absmax)),
        ("nq.quantize/dequantize", t_api_q, t_api_dq, rmse(nq.dequantize(q)),
         np.array_equal(q.codes, bnb_codes.reshape(q.codes.shape)),
         np.array_equal(q.side["absmax"], bnb_absmax)),
        ("numpy searchsorted", t_np_q, t_np_dq, rmse(np_xh),
         np.array_equal(np_packed, bnb_codes), np.array_equal(np_absmax, bnb_absmax)),
    ]
    print(f"{'method':<24}{'quantize ms':>12}{'x vs bnb':>10}{'dequant ms':>12}{'x vs bnb':>10}"
          f"{'RMSE':>12}  codes==bnb absmax==bnb")
    for name, tq, tdq, e, same_c, same_a in rows:
        print(f"{name:<24}{tq * 1e3:12.2f}{t_bnb_q / tq:10.1f}{tdq * 1e3:12.2f}{t_bnb_dq / tdq:10.1f}"
              f"{e:12.6f}  {str(same_c):<10} {same_a}")
    print(f"nquant variants: two passes (absmax, quantize) {t_two * 1e3:.2f} ms; unpacked codes "
          f"{t_unpacked * 1e3:.2f} ms; unpacked dequantize {t_dq_unpacked * 1e3:.2f} ms")
    print(f"decoded values identical to bitsandbytes': {np.array_equal(xh, bnb_xh)}")
    ok = rows[1][4] and rows[1][5]
    return 0 if ok else 1


def write_golden(path):
    """Small golden vectors from bitsandbytes for tests/test_blockwise.py."""
    import torch
    import bitsandbytes
    import bitsandbytes.functional as F

    f32 = np.float32
    rng = np.random.default_rng(2024)
    nf4 = F.get_4bit_type("nf4", device="cpu").numpy()
    mids = ((nf4[:-1] + nf4[1:]) / f32(2)).astype(f32)
    blocks = []
    blocks.append(rng.standard_normal(64 * 8).astype(f32))                    # ordinary data
    ties = np.concatenate([[1.0, -1.0], mids, np.nextafter(mids, f32(2)), np.nextafter(mids, f32(-2)),
                           nf4[:14]]).astype(f32)[:64]                         # absmax 1: y == x
    blocks.append(ties)
    blocks.append((ties * f32(4.0)).astype(f32))                              # absmax 4: exact scale
    blocks.append(np.zeros(64, f32))                                           # all-zero block
    blocks.append((rng.standard_normal(64) * 1e-39).astype(f32))              # subnormal absmax
    blocks.append((rng.standard_normal(64) * 1e30).astype(f32))               # huge
    blocks.append((rng.standard_normal(64) * 1e-30).astype(f32))              # tiny
    blocks.append(np.concatenate([[3.0], rng.standard_normal(63)]).astype(f32))
    blocks.append(rng.standard_normal(10).astype(f32))                        # partial last block
    x = np.concatenate(blocks).astype(f32)
    q, st = F.quantize_4bit(torch.from_numpy(x), blocksize=64, quant_type="nf4")
    xh = F.dequantize_4bit(q, st).numpy().reshape(-1)

    # a zero partial last block: bitsandbytes stores absmax 1e-38 there
    x_zero_tail = np.concatenate([rng.standard_normal(64), np.zeros(6)]).astype(f32)
    qz, stz = F.quantize_4bit(torch.from_numpy(x_zero_tail), blocksize=64, quant_type="nf4")

    # double quantization (compress_statistics=True) on 300 blocks
    x_dq = rng.standard_normal(64 * 300).astype(f32) * rng.uniform(0.1, 3, 64 * 300).astype(f32)
    _, st_plain = F.quantize_4bit(torch.from_numpy(x_dq), blocksize=64, quant_type="nf4")
    q_dq, st_dq = F.quantize_4bit(torch.from_numpy(x_dq), blocksize=64, quant_type="nf4",
                                  compress_statistics=True)
    d = st_dq.as_dict()
    xh_dq = F.dequantize_4bit(q_dq, st_dq).numpy().reshape(-1)

    # 8-bit blockwise (the double-quant rule) on ties of the dynamic map
    code = F.create_dynamic_map(signed=True).numpy()
    cm = (f32(0.5) * (code[:-1] + code[1:])).astype(f32)
    x8 = np.concatenate([[1.0], cm, -cm, np.nextafter(cm, f32(2)), rng.standard_normal(256 * 2),
                         np.zeros(256), rng.standard_normal(100)]).astype(f32)
    q8, st8 = F.quantize_blockwise(torch.from_numpy(x8), blocksize=256)

    np.savez_compressed(
        path,
        bitsandbytes_version=np.array(bitsandbytes.__version__),
        torch_version=np.array(torch.__version__),
        x=x, packed=q.numpy().reshape(-1), absmax=st.absmax.numpy(), x_hat=xh,
        x_zero_tail=x_zero_tail, packed_zero_tail=qz.numpy().reshape(-1), absmax_zero_tail=stz.absmax.numpy(),
        dq_absmax=st_plain.absmax.numpy(), dq_packed=q_dq.numpy().reshape(-1),
        dq_qabsmax=d["absmax"].numpy(), dq_nested_absmax=d["nested_absmax"].numpy(),
        dq_nested_offset=np.float32(d["nested_offset"]), dq_nested_quant_map=d["nested_quant_map"].numpy(),
        dq_nested_blocksize=np.int64(d["nested_blocksize"]), dq_x_hat=xh_dq,
        x8=x8, codes8=q8.numpy(), absmax8=st8.absmax.numpy(), code8=st8.code.numpy(),
    )
    print(f"wrote {path} (bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__})")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16 * 1024 * 1024)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=0,
                   help="threads for both Numba and torch (default: their defaults)")
    p.add_argument("--write-golden", metavar="PATH")
    a = p.parse_args(argv)
    try:
        import bitsandbytes  # noqa: F401
        import torch  # noqa: F401
    except Exception as e:  # ImportError, or a broken native library
        print(f"SKIP: bitsandbytes/torch not importable here ({type(e).__name__}: {e}); "
              "install them in a separate environment to compare with bitsandbytes.")
        return 0
    if a.write_golden:
        return write_golden(a.write_golden)
    if a.threads:
        import numba
        import torch
        numba.set_num_threads(a.threads)
        torch.set_num_threads(a.threads)
    return run_benchmark(a.n, a.block, a.repeat)


if __name__ == "__main__":
    sys.exit(main())
