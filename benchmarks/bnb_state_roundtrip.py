"""bitsandbytes NF4 quantization states <-> nquant, checked bit for bit in one run.

Usage::

    python benchmarks/bnb_state_roundtrip.py
    python benchmarks/bnb_state_roundtrip.py --write-golden tests/fixtures/bnb_state_golden.npz

Needs ``bitsandbytes`` (and torch) importable next to nquant; prints a skip message and exits 0
otherwise (neither is a dependency of nquant).  For each case (shapes with odd last axes and
partial last blocks, float32 / float16 / bfloat16, block sizes 64 and 128, with and without
double quantization) it checks:

1. bnb -> nquant: ``nquant.bnb.from_bnb_state(packed, QuantState.as_dict())`` dequantizes with
   ``nq.dequantize`` to bitsandbytes' ``dequantize_4bit`` output, bit for bit;
2. nquant -> bnb: ``QuantState.from_dict(to_bnb_state(q))`` with ``to_bnb_weight(q)``
   dequantizes in bitsandbytes to ``nq.dequantize(q)``, bit for bit;
3. nquant's own NF4 codes equal bitsandbytes' packed weight (and its absmax, without double
   quantization) on the same data;
4. nquant -> dict -> nquant keeps every side array and the codes;
5. the safetensors form: ``to_bnb_state(from_bnb_state(packed, as_dict()), packed=True)`` equals
   bitsandbytes' ``as_dict(packed=True)`` byte for byte (arrays and the JSON item), and
   ``from_bnb_state`` reads that form too.

Exits 1 if any check fails.  ``--write-golden`` saves small bitsandbytes states and their
dequantized values for ``tests/test_bnb_state.py``.
"""

import argparse
import json
import sys

import numpy as np

CASES = [
    # (shape, dtype, blocksize, nested, all-zero partial last block)
    ((25, 43), "float32", 64, True, False),
    ((3, 64, 10), "float16", 64, False, False),
    ((300, 256), "float32", 64, True, False),
    ((7, 130), "bfloat16", 128, True, False),
    ((1001,), "float32", 128, False, False),
    ((33, 17), "float32", 64, False, False),
    ((5, 30), "float32", 64, False, True),
]


def _data(shape, seed, zero_tail=False, block=64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * rng.uniform(0.01, 3.0, shape[-1])
    x.reshape(-1)[rng.integers(0, x.size, max(1, x.size // 100))] *= 8
    if zero_tail:
        x.reshape(-1)[(x.size // block) * block:] = 0
    return x.astype(np.float32)


def _state_numpy(st, packed=False):
    import torch

    d = st.as_dict(packed=packed)
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in d.items()}


def _state_torch(d):
    return {k: (__import__("torch").from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
            for k, v in d.items()}


def _f32_view(t):
    """A torch output as comparable NumPy bits: float32/float16 as they are, bfloat16 as uint16."""
    import torch

    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _nq_bits(x_hat, dtype):
    from nquant.safetensors_io import float32_to_bf16

    return float32_to_bf16(x_hat) if dtype == "bfloat16" else x_hat


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def run_case(shape, dtype, block, nested, zero_tail, seed):
    import torch
    import bitsandbytes.functional as F
    from bitsandbytes.functional import QuantState

    import nquant as nq
    from nquant.bnb import from_bnb_state, to_bnb_state, to_bnb_weight

    x = _data(shape, seed, zero_tail, block)
    xt = torch.from_numpy(x).to(getattr(torch, dtype))
    packed, st = F.quantize_4bit(xt, blocksize=block, quant_type="nf4", compress_statistics=nested)
    bnb_hat = F.dequantize_4bit(packed, st).reshape(shape)  # 1-D states come back as (1, n)
    d = _state_numpy(st)

    # 1. bnb -> nquant
    q = from_bnb_state(packed.numpy(), d)
    ok1 = _same(_nq_bits(nq.dequantize(q), dtype), _f32_view(bnb_hat))

    # 2. nquant -> bnb (nquant's own quantization of the same values, as bnb sees them)
    x_in = xt.float().numpy() if dtype == "bfloat16" else xt.numpy()
    qn = nq.quantize(x_in, nq.NF4(block_size=block, double_quant=nested))
    st2 = QuantState.from_dict(_state_torch(to_bnb_state(qn, dtype=dtype)), device=torch.device("cpu"))
    w2 = torch.from_numpy(to_bnb_weight(qn))
    ok2 = _same(_f32_view(F.dequantize_4bit(w2, st2).reshape(shape)), _nq_bits(nq.dequantize(qn), dtype))

    # 3. nquant's codes (and absmax) equal bitsandbytes'
    ok3 = _same(to_bnb_weight(qn), packed.numpy())
    if not nested:
        am = d["absmax"].copy()
        ours = qn.absmax
        # bitsandbytes stores 1e-38 for an all-zero partial last block (nquant: 0)
        ok3 = ok3 and _same(np.where((ours == 0) & (am == np.float32(1e-38)), np.float32(0), am), ours)
    # the round trip nquant -> dict -> nquant keeps every side array
    back = from_bnb_state(to_bnb_weight(qn), to_bnb_state(qn, dtype=dtype))
    ok4 = all(_same(back.side[k], v) for k, v in qn.side.items()) and _same(back.codes, qn.codes)

    # 5. the packed (safetensors) form
    dp = _state_numpy(st, packed=True)
    ours = to_bnb_state(q, packed=True)
    ok5 = list(ours) == list(dp) and all(_same(ours[k], dp[k]) for k in dp)
    ok5 = ok5 and _same(nq.dequantize(from_bnb_state(packed.numpy(), dp)), nq.dequantize(q))
    return ok1, ok2, ok3, ok4 and ok5, d, packed.numpy().reshape(-1), _f32_view(bnb_hat), x, dp


def run():
    import bitsandbytes
    import torch

    print(f"bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}")
    print(f"{'shape':<14}{'dtype':<10}{'block':>6}{'nested':>8}  bnb->nq  nq->bnb  codes==bnb  "
          "nq->dict->nq, packed dict")
    all_ok = True
    for i, (shape, dtype, block, nested, zero_tail) in enumerate(CASES):
        ok1, ok2, ok3, ok4, *_ = run_case(shape, dtype, block, nested, zero_tail, seed=i)
        all_ok &= ok1 and ok2 and ok3 and ok4
        print(f"{str(shape):<14}{dtype:<10}{block:>6}{str(nested):>8}  {str(ok1):<8} {str(ok2):<8} "
              f"{str(ok3):<11} {ok4}")
    print("all bit-identical" if all_ok else "MISMATCH")
    return 0 if all_ok else 1


def write_golden(path):
    """Small bitsandbytes states, packed weights and dequantized values for tests/test_bnb_state.py."""
    import bitsandbytes
    import torch

    out = {"bitsandbytes_version": np.array(bitsandbytes.__version__),
           "torch_version": np.array(torch.__version__)}
    names = []
    for i, (shape, dtype, block, nested, zero_tail) in enumerate(CASES):
        if int(np.prod(shape)) > 20000:
            continue
        ok1, ok2, ok3, ok4, d, packed, bnb_hat, x, dp = run_case(shape, dtype, block, nested, zero_tail,
                                                                 seed=i)
        if not (ok1 and ok2 and ok3 and ok4):
            raise SystemExit(f"case {i} is not bit-identical; not writing golden vectors")
        name = f"case{i}"
        names.append(name)
        scalars = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()
                   if not isinstance(v, np.ndarray)}
        out[f"{name}/scalars"] = np.array(json.dumps(scalars))
        for k, v in d.items():
            if isinstance(v, np.ndarray):
                out[f"{name}/{k}"] = v
        out[f"{name}/packed"] = packed
        out[f"{name}/packed_state_json"] = dp["quant_state.bitsandbytes__nf4"]
        out[f"{name}/x"] = x
        out[f"{name}/x_hat"] = bnb_hat
    out["cases"] = np.array(names)
    np.savez_compressed(path, **out)
    print(f"wrote {path}: {len(names)} states (bitsandbytes {bitsandbytes.__version__})")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    return run()


if __name__ == "__main__":
    sys.exit(main())
