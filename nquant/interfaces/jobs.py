"""The three kinds of workflow jobs: an array, a safetensors model, a product quantizer.

Each ``run_*`` function quantizes, writes, verifies, and returns ``(result, view)``:
``result`` the job's figures for the report (scheme, bits/value with side information,
RMSE, max error, SQNR, bias, fraction clipped, throughput; recall for PQ) and ``view``
the sample of :mod:`nquant.interfaces.samples` behind its figures.

- array jobs stream a Zarr array or ``.npy`` file with ``nquant.quantize_zarr``
  (resumable chunk by chunk);
- model jobs run ``nquant.quantize_safetensors`` on every selected tensor (calibrated jobs with
  a calibration store and a recipe);
- PQ jobs (``scheme = {type = "pq", M = 8, nbits = 8}``) fit a ``ProductQuantizer`` on a
  matrix of vectors (rows), store codes and codebooks in a Zarr group, and measure
  recall@k of the nearest neighbour for held-out query rows.
"""

import json
import os
import time

import numpy as np

from nquant import outputs
from nquant.api import dequantize
from nquant.errors import SchemeError, StoreError
from nquant.interfaces import warmup
from nquant.interfaces.samples import first_rows, level_view, pq_view
from nquant.metrics import error_stats, merge_error_stats, metrics_from_stats
from nquant.models import open_model, quantize_safetensors
from nquant.pq import ProductQuantizer
from nquant.safetensors_io import read_tensors
from nquant.store import PARTIAL, quantize_zarr, storage_summary

PQ_FIELDS = ("type", "M", "nbits", "seed", "max_iter", "tol", "init")
PQ_ATTR = "nquant_pq"


def is_pq(scheme):
    """Whether a job's ``scheme`` value describes a product quantizer."""
    return isinstance(scheme, dict) and scheme.get("type") == "pq"


def pq_from_spec(d):
    """A ``ProductQuantizer`` from ``{type = "pq", M, nbits, ...}`` (SchemeError naming a bad field)."""
    unknown = sorted(set(d) - set(PQ_FIELDS))
    if unknown:
        raise SchemeError(f"{unknown[0]}: unknown field of a pq scheme (fields: {list(PQ_FIELDS)})")
    if "M" not in d:
        raise SchemeError("M: missing (the number of sub-spaces of a pq scheme)")
    return ProductQuantizer(**{k: v for k, v in d.items() if k != "type"})


def _merged_stats(pairs):
    """Merged error figures of ``[(x, x_hat), ...]`` Dask array pairs, chunk by chunk."""
    import dask

    parts = []
    for x, x_hat in pairs:
        x = x.rechunk(x_hat.chunks)
        parts += [dask.delayed(error_stats)(a, b)
                  for a, b in zip(x.to_delayed().ravel(), x_hat.to_delayed().ravel())]
    merged = None
    for s in dask.compute(*parts):
        merged = s if merged is None else merge_error_stats(merged, s)
    return metrics_from_stats(merged)


def _side_sample(q, n_values):
    """NumPy side arrays of ``q`` covering its first ``n_values`` values."""
    side = {}
    limit = -(-n_values // q.scheme.block_size) + 1 if getattr(q.scheme, "block_size", None) else None
    for name, arr in q.side.items():
        part = arr[:limit] if limit is not None else arr
        side[name] = np.asarray(part.compute() if hasattr(part, "compute") else part)
    return side


def _array_view(q, x_source):
    """Level view and errors of the leading rows of a stored array ``q`` and its source."""
    rows = first_rows(q.shape)
    x = np.asarray(x_source[rows].compute() if hasattr(x_source, "compute") else x_source[rows])
    x_hat = np.asarray(dequantize(q)[rows].compute())
    view = level_view(q.scheme, _side_sample(q, x.size), x, x_hat)
    view["error"] = (x_hat.astype(np.float64) - x).reshape(-1)
    return view


def job_key(kind, scheme, src=None):
    """The path key (:mod:`nquant.interfaces.warmup`) of a job of ``kind`` with ``scheme`` (a Scheme,
    or the table of a pq job) on the source array ``src`` (Dask; array jobs)."""
    if kind == "array":
        return warmup.array_key(scheme, src.dtype, src.ndim)
    return warmup.scheme_key(kind, scheme)


def run_array_job(src, dst, scheme, *, overwrite, client, progress, verify):
    """Quantize the source array ``src`` (Dask) into the group ``dst``; resumes an interrupted write.

    The kernels are compiled (or loaded from the cache) first, by a tiny job of the same scheme, dtype
    and dimensions, here or on every worker of ``client``: the throughput is timed after it, so it
    excludes compilation, which ``compile_seconds`` reports (the slowest worker's).
    """
    compiled = warmup.warm_array(scheme, src.dtype, src.ndim, client) or {"seconds": 0.0, "kernels": []}
    t0 = time.perf_counter()
    with warmup.CompileLog() as log:  # what the tiny job left to compile, in this process
        q = quantize_zarr(src, dst, scheme, overwrite=overwrite, client=client, progress=progress)
    seconds = _compute_seconds(time.perf_counter() - t0, log)
    if verify:
        figures = _merged_stats([(src, dequantize(q))])
    else:
        figures = dict(q.info.get("metrics", {}))
    view = _array_view(q, src)
    result = {"kind": "array", "shape": list(q.shape), "dtype": str(q.dtype),
              "bits_per_value": q.bits_per_value, **figures, "fraction_clipped": view["clipped"],
              "seconds": seconds, "throughput_mb_s": src.nbytes / seconds / 1e6,
              "compile_seconds": compiled["seconds"] + log.seconds,
              "compiled": compiled["kernels"] + log.kernels}
    stored = storage_summary(dst)
    result.update({k: stored[k] for k in ("compression", "stored_bytes", "ratio_float32", "ratio_source")})
    return result, view


def _compute_seconds(seconds, log):
    """``seconds`` of a job less the compilation its :class:`warmup.CompileLog` saw in this process.

    Model and PQ jobs compile inside the timed work, in this process (their sources are read
    here and their Dask work runs on the local scheduler of the workflow); compilation on the
    workers of a distributed cluster would not be seen and stays in the time (array jobs compile
    there before they are timed)."""
    return max(seconds - log.seconds, 1e-9)


def run_model_job(path, dst, scheme, *, include, overwrite, verify, calibration=None, recipe=None, damp=None,
                  act_order=None):
    """Quantize the tensors of the ``.safetensors`` file ``path`` into the model group ``dst`` (with
    ``calibration``: calibrated rounding by ``recipe`` of the tensors with an entry)."""
    import dask.array as da

    t0 = time.perf_counter()
    # a group finished before an interruption, from this very request, is kept (its fingerprint
    # matches); one made by another request is refused unless overwrite
    with warmup.CompileLog() as log:
        report = quantize_safetensors(path, dst, scheme, include=include, overwrite=overwrite,
                                      calibration=calibration, recipe=recipe, damp=damp, act_order=act_order)
    seconds = _compute_seconds(time.perf_counter() - t0, log)
    kind = "model" if calibration is None else "calibrated"
    warmup.record(job_key(kind, scheme if scheme is not None else {"recipe": recipe}), log.seconds)
    tensors = read_tensors(path)
    qs = open_model(dst)
    names = [n for n in report if n != "total"]
    sources = {n: da.from_array(np.asarray(tensors[n][0], np.float32), name=False) for n in names}
    if verify:
        figures = _merged_stats([(sources[n], dequantize(qs[n]).astype(np.float32)) for n in names])
    else:
        figures = {}
    largest = max(names, key=lambda n: int(np.prod(report[n]["shape"])))
    view = _array_view(qs[largest], sources[largest])
    view["xlabel"] += f" ({largest})"
    nbytes = sum(np.asarray(tensors[n][0]).nbytes for n in names)
    result = {"kind": kind, "shape": [report["total"]["values"]], "tensors": len(names),
              "bits_per_value": report["total"]["bits_per_value"], **figures,
              "fraction_clipped": view["clipped"], "seconds": seconds,
              "throughput_mb_s": nbytes / seconds / 1e6,
              "compile_seconds": log.seconds, "compiled": log.kernels,
              "per_tensor": {n: {k: report[n][k] for k in ("shape", "dtype", "bits_per_value", "rmse",
                                                           "max_abs", "sqnr_db", "calibrated", "rel_error")
                                 if k in report[n]} for n in names}}
    if calibration is not None:
        result.update({k: report["total"][k] for k in ("recipe", "calibrated", "uncalibrated", "unused")})
    return result, view


def _recall(pq, X, codes, queries, k):
    """Fraction of held-out query rows whose exact nearest neighbour is in the PQ top ``k``."""
    n = X.shape[0]
    nq = int(min(queries, max(1, n // 10)))
    base, Q = np.asarray(X[:n - nq], np.float64), np.asarray(X[n - nq:], np.float64)
    d2 = (Q * Q).sum(1)[:, None] - 2 * Q @ base.T + (base * base).sum(1)[None, :]
    exact = d2.argmin(axis=1)
    _, found = pq.search(Q.astype(np.float32), k, codes=np.asarray(codes[:n - nq]))
    return float(np.mean([exact[i] in found[i] for i in range(nq)])), nq


def is_complete_pq(dst):
    """Whether ``dst`` holds a complete product-quantizer group."""
    import zarr

    try:
        return bool(zarr.open_group(dst, mode="r").attrs.asdict().get(PQ_ATTR, {}).get("complete"))
    except Exception:
        return False


def run_pq_job(src, dst, spec, *, overwrite, queries, k, verify):
    """Fit and apply a product quantizer to the rows of the source matrix ``src`` (Dask)."""
    import dask.array as da
    import zarr

    if src.ndim != 2:
        raise SchemeError(f"a pq job needs a 2-D source (rows of vectors), got shape {src.shape}")
    pq = pq_from_spec(spec)
    n, d = src.shape
    t0 = time.perf_counter()
    dst = os.fspath(dst)
    with outputs.writing(dst), outputs.write_errors(dst), warmup.CompileLog() as log:
        if outputs.check_destination(dst, overwrite) == "ours" and not overwrite:
            if not is_complete_pq(dst):
                raise StoreError(f"dst={dst!r} holds another nquant output (not a product quantizer); pass "
                                 "overwrite=True (--overwrite) to replace it")
            group = zarr.open_group(dst, mode="r")
            meta = group.attrs.asdict()[PQ_ATTR]
            diff = outputs.fingerprint_difference({"scheme": meta.get("scheme"), "shape": meta.get("shape")},
                                                  {"scheme": spec, "shape": [n, d]})
            if diff is not None:
                raise StoreError(f"dst={dst!r} holds a finished product quantizer of another request "
                                 f"({diff}); pass overwrite=True (--overwrite) to replace it")
            pq.codebooks_ = group["codebooks"][...]
        else:
            pq.fit(src)
            partial = dst.rstrip("/") + PARTIAL
            outputs.clear_partial(partial)
            group = outputs.partial_group(partial)
            group.create_array("codebooks", data=np.asarray(pq.codebooks_))
            codes = pq.encode(src)
            z = group.create_array("codes", shape=codes.shape, chunks=(src.chunks[0][0], codes.shape[1]),
                                   dtype=np.uint8)
            da.store(codes.rechunk(z.chunks), z, lock=False)
            outputs.complete_group(group, PQ_ATTR, {"scheme": spec, "shape": [n, d], "complete": True})
            outputs.replace_dir(partial, dst)
            group = zarr.open_group(dst, mode="r")
    seconds = _compute_seconds(time.perf_counter() - t0, log)
    warmup.record(job_key("pq", spec), log.seconds)
    codes = da.from_zarr(group["codes"])
    x_hat = pq.decode(codes)
    figures = _merged_stats([(src, x_hat)]) if verify else {}
    cb = np.asarray(pq.codebooks_)
    bits = (codes.size * 8 + cb.size * cb.itemsize * 8) / (n * d)
    recall, nq = _recall(pq, src.compute(), codes.compute(), queries, k)
    rows = slice(0, min(n, 1 << 16))
    view = pq_view(np.asarray(src[rows]), cb)
    view["error"] = (np.asarray(x_hat[rows], np.float64) - np.asarray(src[rows], np.float64)).reshape(-1)
    result = {"kind": "pq", "shape": [n, d], "bits_per_value": bits, **figures,
              "distortion": figures.get("mse", float("nan")) * d, f"recall_at_{k}": recall, "queries": nq,
              "fraction_clipped": None, "seconds": seconds, "throughput_mb_s": src.nbytes / seconds / 1e6,
              "compile_seconds": log.seconds, "compiled": log.kernels}
    return result, view


def save_view(path, view):
    """Store a job's figure sample (``.npz``) so that the report can be drawn again later."""
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, values=view["values"], levels=view["levels"], error=view["error"],
                        meta=np.array(json.dumps({"xlabel": view["xlabel"]})))
    os.replace(tmp, path)
    return path


def load_view(path):
    """The sample written by :func:`save_view` (None when missing)."""
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        return {"values": f["values"], "levels": f["levels"], "error": f["error"], **meta}
