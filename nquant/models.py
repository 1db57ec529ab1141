"""Quantize the weights of a ``.safetensors`` model file into one Zarr group."""

import fnmatch
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import numpy as np
import zarr

from nquant import outputs
from nquant.api import dequantize, quantize
from nquant._threads import in_task, single_blas
from nquant.allocate import quantize_allocated
from nquant.calibration import ALLOC_CANDIDATES, Recipe, open_calibration, recipe_label, recipes_for
from nquant.calibration import identity as calibration_identity
from nquant.errors import InputError, SchemeError, StoreError
from nquant.metrics import error_stats, merge_error_stats, metrics, metrics_from_stats
from nquant.safetensors_io import FLOATS, read_tensors, write_tensors
from nquant.schemes import FORMAT_VERSION, Scheme
from nquant.containers import QuantizedArray
from nquant._types import PathLike, StoreLike
from nquant.store import ATTR, PARTIAL, as_store, finish_partial, open_group, partial_location, write_group
from nquant.store import open as open_store

MODEL_ATTR = "nquant_model"


def _selected(name, arr, tag, include, min_ndim):
    if tag not in FLOATS or arr.ndim < min_ndim:
        return False
    if include is None:
        return True
    patterns = [include] if isinstance(include, str) else list(include)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def quantize_safetensors(path: PathLike, dst: StoreLike, scheme: Scheme | None = None, *,
                         include: Sequence[str] | str | None = None, min_ndim: int = 2,
                         write_dequantized: PathLike | None = None, overwrite: bool = False,
                         calibration: Any = None, recipe: str | Recipe | None = None,
                         damp: float | None = None, act_order: bool | None = None,
                         bits_per_value: float | None = None, scheduler: Any = None) -> dict[str, Any]:
    """Quantize every selected floating tensor of a ``.safetensors`` file.

    Parameters
    ----------
    path : str, the ``.safetensors`` file (float16, bfloat16, float32 and float64 tensors)
    dst : str, a local directory: one Zarr group holding one nquant group per tensor
        (named as the tensor: ``"encoder/layer.0.weight"`` becomes nested groups), with
        per-tensor error figures in the root attributes
    scheme : Scheme, e.g. ``nq.NF4(double_quant=True)``
    include : str or list of str, optional, glob patterns of tensor names (default: all)
    min_ndim : int, only tensors with at least this many dimensions (default 2: matrices)
    write_dequantized : str, optional, also write a ``.safetensors`` file with every tensor,
        the quantized ones replaced by their dequantized values in their original dtype
    overwrite : bool
        Replace a finished model group (and an existing ``write_dequantized`` file).  Otherwise a
        finished ``dst`` is a no-op when its recorded fingerprint (source file, scheme, selection,
        format version) matches, and a ``StoreError`` showing both when it does not.

    calibration : str or mapping, optional
        A calibration store (:mod:`nquant.calibration`: an ``.npz`` file or a Zarr group keyed by
        tensor name, holding each layer's inputs (rows, in) or Hessian (in, in); or a mapping
        ``{name: array}``).  Every selected 2-D tensor with an entry is quantized by ``recipe``
        against its Hessian, in parallel over tensors (Dask, ``scheduler``); the others are rounded
        to nearest with the recipe's scheme, and the report's ``"total"`` names them
        (``uncalibrated``), with the store's entries that matched no tensor (``unused``).  Entries
        are validated (float dtype, shape matching the tensor, bounded size, finite values) before
        anything is written: a bad one is an ``InputError`` naming the tensor and both shapes.
    recipe : str, Recipe or mapping, optional
        ``"adaptive"`` (default: :func:`nquant.adaptive.adaptive_round` with ``scheme``) or
        ``"codebook<bits>"`` (a codebook fitted per layer, rows scaled by their absmax, calibrated
        rounding with ``act_order``; stored as ``KMeansBlockwise(bits, block_size=in)``, ``scheme``
        not needed); :data:`nquant.calibration.RECIPES`.  A mapping ``{glob: recipe}`` gives each
        tensor the recipe of the first pattern its name matches (``"*"`` last for the others; mixed
        precision, e.g. ``{"*.intermediate.dense.weight": "codebook5", "*": "codebook4"}``).  Without
        ``calibration`` a recipe rounds every tensor to nearest with its scheme.
        ``"alloc"`` (the whole model's recipe, not per tensor): every calibrated tensor is
        quantized at each of :data:`nquant.calibration.ALLOC_CANDIDATES` and
        :func:`nquant.allocate.quantize_allocated` picks one per tensor so that their stored bits
        stay within ``bits_per_value`` times their values, pricing each by the store's recorded
        sensitivities when it holds one for every calibrated tensor, else by the relative output
        error; the report gives each tensor's ``bits`` and ``block_size``.
    damp, act_order : optional, the recipe's options (default: the recipe's defaults)
    bits_per_value : float, the budget of ``recipe="alloc"`` (side information included)
    scheduler : optional, the Dask scheduler of the calibrated tensors (a name or a
        ``distributed.Client``; default: Dask's current one, threads unless configured)

    Tensor names become paths under ``dst``: every selected name must pass
    :func:`nquant.outputs.check_name` (no absolute paths, no ``..``, no empty parts), checked
    before anything is written.  ``dst`` is never a path that is not an nquant output.

    Returns
    -------
    dict: per tensor ``{shape, dtype, bits_per_value, rmse, max_abs, sqnr_db, bias}`` (with a
    calibration also ``calibrated``, and ``rel_error`` / ``rel_error_nearest``, the relative output
    error on the calibration data) and ``"total"``: ``{values, bits_per_value}`` over the quantized
    tensors (with a calibration also ``calibrated``: how many, ``uncalibrated`` and ``unused``).
    """
    if outputs.local_path(dst) is None:
        raise StoreError(f"dst={dst!r} is not a local directory (a model group is written locally)")
    dst = outputs.local_path(dst)
    outputs.check_source_destination(path, dst)
    if write_dequantized is not None:
        write_dequantized = os.fspath(write_dequantized)
        outputs.check_source_destination(path, write_dequantized, what="write_dequantized")
        outputs.check_source_destination(dst, write_dequantized, what="write_dequantized", source="dst")
    tensors = read_tensors(path)
    selected = [name for name, (arr, tag) in tensors.items() if _selected(name, arr, tag, include, min_ndim)]
    for name in selected:  # names from the file become paths: all checked before any write
        outputs.check_name(name, "tensor name", InputError)
    outputs.check_nested(selected, "tensor name", InputError)
    chosen = set(selected)
    calibrated = recipe is not None or calibration is not None
    # without calibration or recipe: "adaptive", whose scheme is the one given
    recs = recipes_for(recipe, selected)
    if scheme is None and any(r.name == "adaptive" for r in recs.values()):
        raise SchemeError("scheme=None is invalid: pass a scheme (with a calibration, a scheme for "
                          "adaptive_round, or a codebook recipe such as recipe='codebook4')")
    alloc = isinstance(recipe, str) and recipe == "alloc"
    if alloc or isinstance(recipe, Mapping) and "alloc" in map(recipe_label, recipe.values()):
        if not alloc:
            raise SchemeError("recipe 'alloc' is invalid in a {glob: recipe} mapping: it spreads one bit "
                              "budget over every calibrated tensor, pass recipe='alloc' alone")
        if calibration is None:
            raise SchemeError("recipe='alloc' needs a calibration store (calibration=...)")
    if (bits_per_value is not None) != alloc:
        raise SchemeError(f"bits_per_value={bits_per_value!r} is invalid: " + (
            "recipe='alloc' needs a budget (e.g. 4.25)" if alloc else "only recipe='alloc' takes a budget"))
    if alloc and (isinstance(bits_per_value, bool) or not isinstance(bits_per_value, (int, float))
                  or not 0 < bits_per_value < np.inf):
        raise SchemeError(f"bits_per_value={bits_per_value!r} is invalid: expected a number > 0")
    budget = float(bits_per_value) if alloc and bits_per_value is not None else 0.0
    cal = open_calibration(calibration) if calibration is not None else None
    schemes = {name: recs[name].scheme(scheme, tensors[name][0].shape) for name in selected}
    kinds = {}
    if cal is not None:  # every entry checked (dtype, shape, size) before anything is computed or written
        kinds = {name: cal.check(name, tensors[name][0].shape) for name in selected if name in cal}
    given = {k: v for k, v in (("damp", damp), ("act_order", act_order)) if v is not None}
    options = {name: {**recs[name].defaults, **given} for name in selected}
    shown_recipe = recipe_label(recipe)
    shown = scheme if scheme is not None else next(iter(schemes.values()), None)
    request = {"format_version": FORMAT_VERSION,
               "scheme": json.loads(shown.to_json()) if shown is not None else None,
               "source": outputs.source_identity(path), "include": include, "min_ndim": int(min_ndim)}
    if calibrated:
        request["calibration"] = {"store": calibration_identity(calibration), "recipe": shown_recipe,
                                  "options": given, "entries": sorted(kinds)}
        if alloc:
            request["calibration"]["bits_per_value"] = budget
    with outputs.writing(dst), outputs.write_errors(dst):
        if outputs.check_destination(dst, overwrite) == "ours" and not overwrite:
            meta = model_meta(dst)
            if meta is None or meta.get("complete") is not True:
                raise StoreError(f"dst={dst!r} holds another nquant output (not a model group); pass "
                                 "overwrite=True (--overwrite) to replace it")
            diff = outputs.fingerprint_difference(meta.get("fingerprint") or {"scheme": meta.get("scheme")},
                                                  request)
            if diff is not None:
                raise StoreError(f"dst={dst!r} holds a finished model of another request ({diff}); pass "
                                 "overwrite=True (--overwrite) to replace it")
            if write_dequantized:
                qs = open_model(dst)
                out = {n: ((np.asarray(dequantize(qs[n])), t) if n in qs else (np.asarray(a), t))
                       for n, (a, t) in tensors.items()}
                _write_dequantized(write_dequantized, out, shown, overwrite)
            return meta["tensors"]
        if write_dequantized:
            outputs.check_destination(write_dequantized, overwrite, what="write_dequantized",
                                      file_kind=".safetensors")
        partial = partial_location(dst)
        outputs.clear_partial(partial)
        root = outputs.partial_group(partial)
        report, out_tensors, total_bits, total_values = {}, {}, 0.0, 0
        priced = None
        if alloc:
            done, priced = _allocated_tensors(tensors, kinds, cal, budget, given)
        else:
            done = _calibrated_tensors(tensors, kinds, cal, recs, schemes, options, scheduler) if cal is not None \
                else {}
        for name, (arr, tag) in tensors.items():
            if name not in chosen:
                out_tensors[name] = (np.asarray(arr), tag)
                continue
            x = np.asarray(arr)
            q = done[name] if name in done else quantize(x, schemes[name])
            x_hat = dequantize(q)
            m = metrics(x, x_hat)
            write_group(q, outputs.inside(partial, os.path.join(partial, name)))
            report[name] = {"shape": list(x.shape), "dtype": tag, "bits_per_value": q.bits_per_value, **m}
            if calibrated:
                report[name]["calibrated"] = name in done
                if name in done:
                    info = q.info.get("adaptive_round", {})
                    report[name].update({k: info.get(k) for k in ("rel_error", "rel_error_nearest")})
                    if alloc:
                        report[name]["bits"], report[name]["block_size"] = q.info["allocate"]["chosen"]
            total_bits += q.bits_per_value * x.size
            total_values += x.size
            out_tensors[name] = (x_hat, tag)
        report["total"] = {"values": total_values,
                           "bits_per_value": total_bits / total_values if total_values else 0.0}
        if calibrated:
            report["total"].update({"recipe": shown_recipe, "calibrated": len(done),
                                    "uncalibrated": [n for n in selected if n not in done],
                                    "unused": sorted(set(cal.names) - chosen) if cal else []})
            if alloc:
                report["total"]["allocation"] = {"bits_per_value": budget, "priced_by": priced}
        outputs.complete_group(root, MODEL_ATTR, {
            "source": os.path.basename(os.fspath(path)), "scheme": request["scheme"], "tensors": report,
            "complete": True, "fingerprint": request, **({"recipe": shown_recipe} if calibrated else {})})
        finish_partial(partial, dst)
        if write_dequantized:
            _write_dequantized(write_dequantized, out_tensors, shown, overwrite)
    return report


@in_task
def _calibrated_tensor(name, x, cal, rec, scheme, options):
    with dask.config.set(scheduler="sync"):  # a Dask entry is reduced inside this task, in order
        H, n = cal.hessian(name, x.shape)
    try:
        q = rec.run(np.asarray(x), H, scheme, **options)
    except InputError as e:
        raise InputError(f"calibration={cal.label}: tensor {name!r}: {e}") from None
    q.info.setdefault("adaptive_round", {})["n_samples"] = n
    return q


def _calibrated_tensors(tensors, kinds, cal, recs, schemes, options, scheduler):
    """``{name: QuantizedArray}`` of the calibrated tensors, computed in parallel (one Dask task each;
    BLAS runs one thread per task while they run, Numba's threads are shared out among the tasks)."""
    names = list(kinds)
    tasks = [dask.delayed(_calibrated_tensor, pure=False)(n, tensors[n][0], cal, recs[n], schemes[n], options[n])
             for n in names]
    with single_blas():
        done = dask.compute(*tasks, scheduler=scheduler)
    return dict(zip(names, done))


def _allocated_tensors(tensors, kinds, cal, bits_per_value, options):
    """``({name: QuantizedArray}, priced_by)``: the calibrated tensors of the ``"alloc"`` recipe,
    quantized together within ``bits_per_value`` (:func:`nquant.allocate.quantize_allocated`)."""
    names = list(kinds)
    if not names:
        return {}, None
    weights = {n: np.asarray(tensors[n][0]) for n in names}
    hs = {}
    for n in names:
        with dask.config.set(scheduler="sync"):
            hs[n], _ = cal.hessian(n, weights[n].shape)
    sens = {n: cal.sensitivity(n) for n in names}
    priced = "sensitivity" if all(v is not None for v in sens.values()) else "relative output error"
    cands = [c for c in ALLOC_CANDIDATES if isinstance(c, int) or all(w.shape[1] % c[1] == 0
                                                                      for w in weights.values())]
    with single_blas():
        done = quantize_allocated(weights, hs, bits_per_value, candidates=cands,
                                  sensitivity=sens if priced == "sensitivity" else None, double_quant=True,
                                  **options)
    return done, priced


def model_meta(dst):
    """The model attributes of the group ``dst``, or None when it is not an nquant model group."""
    try:
        meta = zarr.open_group(dst, mode="r").attrs.asdict().get(MODEL_ATTR)
    except Exception:
        return None
    return meta if isinstance(meta, dict) else None


def _write_dequantized(path, tensors, scheme, overwrite):
    outputs.check_destination(path, overwrite, what="write_dequantized", file_kind=".safetensors")
    write_tensors(path, tensors, metadata={"nquant_scheme": scheme.to_json()} if scheme is not None else None)


def is_complete_model(dst):
    """Whether ``dst`` holds a complete quantized model group."""
    try:
        return bool(zarr.open_group(dst, mode="r").attrs.asdict().get(MODEL_ATTR, {}).get("complete"))
    except Exception:
        return False


def open(store: StoreLike, *, storage_options: dict[str, Any] | None = None  # noqa: A001  (mirrors zarr.open)
         ) -> QuantizedArray | dict[str, QuantizedArray]:
    """``nq.open``: a stored quantized array, lazily (a Dask-backed ``QuantizedArray``,
    :func:`nquant.store.open`), or ``{tensor name: QuantizedArray}`` for a model group written by
    :func:`quantize_safetensors` (:func:`open_model`).  Both are validated before anything is
    decoded; ``storage_options``: fsspec options for a URL ``store``."""
    group = open_group(as_store(store, storage_options))
    attrs = group.attrs.asdict()
    if MODEL_ATTR in attrs and ATTR not in attrs:
        return open_model(store, storage_options=storage_options)
    return open_store(store, storage_options=storage_options)


def open_model(dst: StoreLike, *, storage_options: dict[str, Any] | None = None) -> dict[str, QuantizedArray]:
    """``{tensor name: QuantizedArray}`` of a quantized model group (lazy), each tensor's group
    validated as :func:`nquant.open` validates one (``StoreError`` naming what is wrong)."""

    store = as_store(dst, storage_options)
    root = open_group(store)
    meta = root.attrs.asdict().get(MODEL_ATTR)
    if not isinstance(meta, dict):
        raise StoreError(f"dst={dst!r} is not an nquant model group (no '{MODEL_ATTR}' attributes)")
    if meta.get("complete") is not True:
        raise StoreError(f"dst={dst!r} is an incomplete model group (complete={meta.get('complete')!r}); "
                         "rerun quantize_safetensors")
    tensors = meta.get("tensors")
    if not isinstance(tensors, dict):
        raise StoreError(f"dst={dst!r}: model attribute tensors={tensors!r} is invalid: expected a dict")
    out = {}
    for name in tensors:
        if name == "total":
            continue
        outputs.check_name(name, what=f"dst={dst!r}: tensor name")
        out[name] = open_store(member_location(store, name))
    return out


def member_location(store, name):
    """The location of the group ``name`` (a checked relative path) inside the group ``store``."""
    if isinstance(store, (str, os.PathLike)):
        s = os.fspath(store)
        return os.path.join(s, *name.split("/")) if "://" not in s else s.rstrip("/") + "/" + name
    return zarr.storage.StorePath(store, name)


__all__ = ["quantize_safetensors", "open", "open_model", "ATTR"]


# ----------------------------------------------------------------------------- model groups: read back


def is_model_group(store: StoreLike) -> bool:
    """Whether ``store`` is a model group (complete or not): its root carries ``nquant_model``."""
    return model_meta(store) is not None


def dequantize_model(src: StoreLike, dst: PathLike, *, overwrite: bool = False) -> dict[str, Any]:
    """Write the dequantized tensors of the model group ``src`` to ``dst``.

    Parameters
    ----------
    src : str, a model group written by :func:`quantize_safetensors`
    dst : str, a local path: a ``.safetensors`` file (each tensor in its original dtype,
        bfloat16 included) or else a Zarr group with one array per tensor, named as the tensor
    overwrite : bool, replace an existing nquant output (never anything else)

    The group holds only the tensors that were quantized: tensors that
    :func:`quantize_safetensors` left out (integers, vectors, names not included) cannot be
    recovered from it and are not written.  Written under ``<dst>.partial`` and renamed.

    Returns
    -------
    dict: tensor name -> ``{"shape", "dtype"}`` of what was written
    """
    path = outputs.local_path(dst)
    if path is None:
        raise StoreError(f"dst={dst!r} is not a local path (a dequantized model is written locally)")
    outputs.check_source_destination(src, dst)
    tensors = open_model(src)
    tags = {name: t.get("dtype") for name, t in model_meta(src)["tensors"].items()
            if name != "total" and isinstance(t, dict)}
    kind = ".safetensors" if path.endswith(".safetensors") else None
    written = {}
    with outputs.writing(path), outputs.write_errors(path):
        state = outputs.check_destination(path, overwrite, file_kind=kind)
        if state == "ours" and not overwrite:
            raise StoreError(f"dst={path!r} already exists; pass overwrite=True (--overwrite) to replace it")
        partial = path.rstrip(os.sep) + PARTIAL
        outputs.clear_partial(partial)
        if kind:
            out = {}
            for name, q in tensors.items():
                tag = tags.get(name) if tags.get(name) in FLOATS else {2: "F16", 4: "F32", 8: "F64"}[
                    np.dtype(q.dtype).itemsize]
                out[name] = (np.asarray(dequantize(q)), tag)
                written[name] = {"shape": list(q.shape), "dtype": tag}
            write_tensors(path, out, metadata={"nquant_model": os.fspath(src)})  # written, then renamed
            return written
        root = outputs.partial_group(partial)
        for name, q in tensors.items():
            x_hat = np.asarray(dequantize(q))
            outputs.inside(partial, os.path.join(partial, name))
            root.create_array(name, data=x_hat)
            written[name] = {"shape": list(x_hat.shape), "dtype": str(x_hat.dtype)}
        outputs.complete_group(root, outputs.ARRAY_MARK, {"source": outputs.source_identity(src), "model": True,
                                                          "tensors": written, "complete": True})
        outputs.replace_dir(partial, path)
    return written


def verify_model(store, source):
    """Error of every tensor of the model group ``store`` against the ``.safetensors`` ``source``.

    Returns
    -------
    dict: tensor name -> ``{rmse, max_abs, sqnr_db, bias, bits_per_value, shape}`` and
    ``"total"``: the same figures over every tensor, with ``values``.  An ``InputError``
    names a tensor missing from ``source`` or of another shape there.
    """
    tensors = open_model(store)
    originals = read_tensors(source)
    out, merged, bits, values = {}, None, 0.0, 0
    for name, q in tensors.items():
        if name not in originals:
            raise InputError(f"source={os.fspath(source)!r} has no tensor {name!r} of the model group "
                             f"{os.fspath(store)!r}")
        x = np.asarray(originals[name][0])
        if x.shape != tuple(q.shape):
            raise InputError(f"source={os.fspath(source)!r}: tensor {name!r} has shape {x.shape}, the model "
                             f"group {os.fspath(store)!r} holds shape {tuple(q.shape)}")
        stats = error_stats(x, np.asarray(dequantize(q)))
        merged = stats if merged is None else merge_error_stats(merged, stats)
        out[name] = {**metrics_from_stats(stats), "bits_per_value": q.bits_per_value, "shape": list(q.shape)}
        bits += q.bits_per_value * x.size
        values += x.size
    total = metrics_from_stats(merged) if merged is not None else {}
    out["total"] = {**total, "values": values, "bits_per_value": bits / values if values else 0.0}
    return out


