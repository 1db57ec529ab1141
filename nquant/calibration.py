"""Calibration stores: per-tensor calibration inputs or Hessians for whole-model adaptive rounding.

A calibration store maps tensor names (as in the ``.safetensors`` file) to one array each:

- **inputs**: float (rows, in), the rows a layer ``y = x @ W.T`` saw (one per token or sample;
  ``W`` has shape (out, in)); turned into ``H = X^T X`` with the mergeable statistics of
  :func:`nquant.adaptive.hessian` (a Dask tree reduction for Zarr entries, so a store larger
  than memory streams chunk by chunk);
- **Hessians**: float (in, in), ``H = X^T X`` already accumulated (e.g. by
  :func:`write_calibration`, or by the user with ``nquant.hessian`` over batches).

Stores: a ``.npz`` file (one array per tensor name; read into memory, so each entry must fit
half of the free memory) or a Zarr group (arrays named as the tensors; ``a/b`` names are nested
groups; read lazily with Dask).  The kind of every entry is recorded in the store's metadata
(the JSON string ``__nquant_calibration__`` of an ``.npz``, the ``nquant_calibration``
attribute of a Zarr group: ``{"format_version", "kinds": {name: "inputs" | "hessian"},
"n_samples": {name: int}}``); an entry without a recorded kind is a Hessian when it is
(in, in) and symmetric with a non-negative diagonal, inputs otherwise.  A mapping
``{name: array}`` (NumPy or Dask) works as a store too.

Stores are untrusted: before any value is read, every entry's dtype (float16/32/64), shape
(2-D, matching its tensor) and size (an ``.npz`` entry, and one chunk of a Zarr entry, at most
half of the free memory) are checked; values must be finite and Hessians symmetric with a
non-negative diagonal.  Every failure is one ``InputError`` line naming the store and the entry.
"""

import dataclasses
import fnmatch
import json
import os
import uuid
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import zarr

from nquant import chunked, limits, outputs
from nquant.adaptive import adaptive_round, fit_levels, hessian_finalize, hessian_stats
from nquant.api import dequantize, quantize
from nquant.containers import QuantizedArray
from nquant.errors import InputError, SchemeError, StoreError
from nquant.packing import pack_codes
from nquant.schemes import Codebook, KMeansBlockwise, Scheme

META_KEY = "__nquant_calibration__"
"""Key of the metadata (a JSON string) in an ``.npz`` store."""
ATTR = "nquant_calibration"
"""Attribute of a Zarr calibration group holding its metadata."""
FORMAT_VERSION = 1
KINDS = ("inputs", "hessian")
FLOAT_DTYPES = ("float16", "float32", "float64")


class Calibration:
    """A calibration store opened for reading (:func:`open_calibration`).

    Attributes
    ----------
    names : list of str, the tensor names with an entry
    """

    def __init__(self, label, arrays, meta, loader=None):
        self.label = label
        self._arrays = arrays          # name -> (shape, dtype, chunk bytes, source)
        self._loader = loader
        kinds = meta.get("kinds") or {}
        n_samples = meta.get("n_samples") or {}
        if not isinstance(kinds, dict) or not isinstance(n_samples, dict):
            raise InputError(f"calibration={label}: metadata kinds/n_samples must be objects")
        for name, kind in kinds.items():
            if kind not in KINDS:
                raise InputError(f"calibration={label}: entry {name!r} has kind={kind!r:.40}, expected one "
                                 f"of {KINDS}")
        self._kinds = kinds
        self._n = n_samples
        self._sensitivity = _check_sensitivity(meta.get("sensitivity") or {}, f"calibration={label}: metadata "
                                                                                "sensitivity")
        self.names = list(arrays)

    def __contains__(self, name):
        return name in self._arrays

    def check(self, name, weight_shape):
        """The kind (``"inputs"`` or ``"hessian"``) of entry ``name`` for a weight of
        ``weight_shape`` (out, in); ``InputError`` (one line) when its dtype, shape or size cannot be."""
        shape, dtype, chunk_bytes, _ = self._arrays[name]
        where = f"calibration={self.label}: entry {name!r}"
        if np.dtype(dtype).name not in FLOAT_DTYPES:
            raise InputError(f"{where} has dtype={np.dtype(dtype).name}, expected one of {FLOAT_DTYPES}")
        if len(weight_shape) != 2:
            raise InputError(f"{where}: tensor {name!r} has shape {tuple(weight_shape)}, but calibrated "
                             "rounding needs a 2-D weight (out, in)")
        n_in = int(weight_shape[1])
        kind = self._kinds.get(name)
        want = {"inputs": f"inputs (rows, {n_in})", "hessian": f"a Hessian ({n_in}, {n_in})",
                None: f"inputs (rows, {n_in}) or a Hessian ({n_in}, {n_in})"}[kind]
        if not (len(shape) == 2 and shape[0] >= 1 and shape[1] == n_in and (kind != "hessian" or shape[0] == n_in)):
            raise InputError(f"{where} has shape {tuple(shape)}, but tensor {name!r} has shape "
                             f"{tuple(weight_shape)}: expected {want}")
        limits.check_memory(f"calibration entry {name!r} of shape", tuple(shape), chunk_bytes, InputError)
        if kind is None:
            kind = "hessian" if shape[0] == n_in and self._looks_like_hessian(name) else "inputs"
        return kind

    def _looks_like_hessian(self, name):
        return hessian_problem(np.asarray(self._read(name), np.float64)) is None

    def _read(self, name):
        """Entry ``name``: NumPy (``.npz``, read whole, or a mapping's) or Dask (Zarr, lazy)."""
        if self._loader is None:
            return self._arrays[name][3]
        kind, path = self._loader  # a path, not an open file: the store pickles to Dask workers
        if kind == "zarr":
            import dask.array as da

            return da.from_zarr(zarr.open_group(path, mode="r")[name])
        try:
            with np.load(path, allow_pickle=False) as z:
                return z[name]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise InputError(f"calibration={self.label}: entry {name!r} cannot be read: "
                             f"{' '.join(str(e).split())}") from None

    def sensitivity(self, name):
        """The recorded sensitivity of tensor ``name`` (the model's loss per unit of the layer's
        output error ``tr(E H E^T)`` with this store's ``H``; see :func:`write_calibration`), or None."""
        return self._sensitivity.get(name)

    def n_samples(self, name):
        """Samples behind entry ``name`` when recorded, else None."""
        n = self._n.get(name)
        return int(n) if isinstance(n, int) and not isinstance(n, bool) else None

    def hessian(self, name, weight_shape):
        """``(H, n_samples)``: float64 (in, in) of entry ``name`` for a weight of ``weight_shape``.

        Inputs are reduced with :func:`nquant.adaptive.hessian_stats` (Dask entries chunk by
        chunk, finite values checked); a stored Hessian is returned as float64 once
        :func:`hessian_problem` finds nothing wrong with it.
        """
        kind = self.check(name, weight_shape)
        where = f"calibration={self.label}: entry {name!r}"
        a = self._read(name)
        try:
            if kind == "hessian":
                H = np.asarray(a.compute() if chunked.is_dask(a) else a, dtype=np.float64)
                problem = hessian_problem(H)
                if problem is not None:
                    raise InputError(problem)
                return H, self.n_samples(name)
            st = hessian_stats(a.T)
            return hessian_finalize(st), int(st["n"])
        except InputError as e:
            raise InputError(f"{where}: {e}") from None


SYMMETRY_TOL = 1e-5
"""Relative tolerance (to ``max |H|``) of a stored Hessian's symmetry (a sum in float32 passes)."""


def _check_sensitivity(sens, where):
    """``{name: float >= 0}`` from a mapping of finite non-negative numbers; else one InputError line."""
    if not isinstance(sens, Mapping):
        raise InputError(f"{where} is {type(sens).__name__}, expected an object {{tensor name: number}}")
    out = {}
    for name, v in sens.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (
                np.isfinite(v) and v >= 0):
            raise InputError(f"{where}[{name!r}]={v!r:.40} is invalid: expected a finite number >= 0")
        out[str(name)] = float(v)
    return out


def hessian_problem(H):
    """What makes the float64 square matrix ``H`` no Hessian ``X^T X`` (one line), or None: non-finite
    values, a negative diagonal entry, asymmetry beyond ``SYMMETRY_TOL`` relative to ``max |H|``."""
    bad = int((~np.isfinite(H)).sum())
    if bad:
        return f"H contains {bad} non-finite value(s) (NaN or inf)"
    if (np.diag(H) < 0).any():
        return "H has negative diagonal entries: expected a positive semi-definite X^T X"
    if not np.allclose(H, H.T, rtol=0.0, atol=SYMMETRY_TOL * float(np.abs(H).max() if H.size else 0.0)):
        return "H is not symmetric: expected X^T X (see nquant.adaptive.hessian)"
    return None


def _npz_entries(path):
    """``{name: (shape, dtype, nbytes)}`` of the ``.npy`` members of an ``.npz``, from their headers
    alone (nothing is decompressed beyond the headers), and the metadata dict."""
    p = os.fspath(path)
    entries, meta = {}, {}
    try:
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-4]
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version in ((2, 0), (3, 0)):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"member {info.filename!r}: unsupported .npy version {version}")
                if name == META_KEY:
                    if dtype.kind != "U" or shape != () or dtype.itemsize > limits.MAX_HEADER_BYTES:
                        raise ValueError(f"{META_KEY} must be a JSON string")
                    text = str(np.load(z.open(info), allow_pickle=False))
                    meta = json.loads(text)
                    if not isinstance(meta, dict):
                        raise ValueError(f"{META_KEY} is a JSON {type(meta).__name__}, expected an object")
                    continue
                if dtype.hasobject:
                    raise ValueError(f"entry {name!r} holds Python objects (a pickle), expected floats")
                entries[name] = (tuple(int(d) for d in shape), dtype,
                                 int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    except FileNotFoundError:
        raise InputError(f"calibration={p!r} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, RecursionError) as e:
        raise InputError(f"calibration={p!r} is not a readable .npz calibration store: "
                         f"{' '.join(str(e).split())}") from None
    return entries, meta


def _zarr_entries(path):
    group = zarr.open_group(path, mode="r")
    meta = group.attrs.asdict().get(ATTR, {})  # the metadata of the entries only: no values read
    if not isinstance(meta, dict):
        raise InputError(f"calibration={path!r}: attribute {ATTR} is {type(meta).__name__}, expected an object")
    entries = {}
    for path_name, arr in _walk_arrays(group):
        chunk_bytes = int(np.prod(arr.chunks, dtype=np.int64)) * arr.dtype.itemsize if arr.ndim else 0
        entries[path_name] = (tuple(int(d) for d in arr.shape), arr.dtype, chunk_bytes)
    return entries, meta


def _walk_arrays(group, prefix=""):
    for name, node in group.members():
        full = f"{prefix}{name}"
        if isinstance(node, zarr.Array):
            yield full, node
        else:
            yield from _walk_arrays(node, full + "/")


def open_calibration(calibration: Any) -> Calibration:
    """A :class:`Calibration` from an ``.npz`` path, a Zarr group path, a mapping or a
    :class:`Calibration` (returned as is).  Only metadata is read here."""
    if isinstance(calibration, Calibration):
        return calibration
    if isinstance(calibration, Mapping):
        arrays = {}
        for name, a in calibration.items():
            if not isinstance(name, str):
                raise InputError(f"calibration: key {name!r} is not a tensor name (str)")
            chunk = 0  # a NumPy entry is in memory already
            if chunked.is_dask(a):  # a Dask entry is read one chunk at a time
                chunk = int(np.prod([c[0] for c in a.chunks], dtype=np.int64)) * a.dtype.itemsize if a.ndim else 0
            else:
                a = np.asarray(a)
            arrays[name] = (tuple(int(d) for d in a.shape), a.dtype, chunk, a)
        return Calibration("<mapping>", arrays, {})
    if not isinstance(calibration, (str, os.PathLike)):
        raise InputError(f"calibration of type {type(calibration).__name__} is invalid: expected an .npz "
                         "path, a Zarr group path or a mapping {tensor name: array}")
    p = os.fspath(calibration)
    label = repr(p)
    if p.endswith(".npz") or os.path.isfile(p):
        entries, meta = _npz_entries(p)
        arrays = {n: (*v, None) for n, v in entries.items()}
        return Calibration(label, arrays, meta, loader=("npz", p))
    if not os.path.isdir(p):
        raise InputError(f"calibration={p!r} does not exist")
    try:
        entries, meta = _zarr_entries(p)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"calibration={p!r} is not a readable Zarr calibration group: "
                         f"{' '.join(str(e).split())}") from None
    arrays = {n: (*v, None) for n, v in entries.items()}
    return Calibration(label, arrays, meta, loader=("zarr", p))


def identity(calibration):
    """What identifies a calibration store in a model's fingerprint (None for a mapping)."""
    if isinstance(calibration, (str, os.PathLike)):
        p = os.fspath(calibration)
        ident = outputs.source_identity(p)
        if os.path.isdir(p):  # a group: its metadata file
            meta = os.path.join(p, "zarr.json")
            if os.path.exists(meta):
                st = os.stat(meta)
                ident = {"path": os.path.abspath(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return ident
    return None


# ----------------------------------------------------------------------------- writing


def write_calibration(path: Any, entries: Mapping[str, Any], *, kind: str = "hessian",
                      sensitivity: Mapping[str, float] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write a calibration store from each layer's inputs.

    Parameters
    ----------
    path : str, an ``.npz`` file or (any other name) a local Zarr group
    entries : mapping tensor name -> inputs, float (rows, in): a NumPy or Dask array, or an
        iterable of such batches (rows, in); or (``"hessian"`` only) the merged statistics of
        :func:`nquant.adaptive.hessian_partial` / :func:`~nquant.adaptive.hessian_merge` of the
        inputs as columns (``hessian_partial(X.T)``)
    kind : "hessian" (default: ``H = X^T X``, float64 (in, in), accumulated with
        :func:`nquant.adaptive.hessian`, so a Dask array or a stream of batches never has to fit
        in memory) or "inputs" (the rows themselves, float32)
    sensitivity : mapping tensor name -> float >= 0, optional
        How much the model's output moves per unit of each layer's output error: the loss the
        user's framework measured with only that tensor quantized (e.g. ``1 - cosine`` of the
        model's outputs), divided by that quantization's ``tr(E H E^T)`` with the stored ``H``
        (``q.info["adaptive_round"]["objective"]``).  The ``"alloc"`` recipe spreads its bit
        budget by it; without it every layer's relative output error counts alike.
    overwrite : bool, replace an existing calibration store (never any other file)

    Returns
    -------
    dict: name -> ``{"kind", "shape", "n_samples"}``
    """
    if kind not in KINDS:
        raise InputError(f"kind={kind!r} is invalid: expected one of {KINDS}")
    arrays, summary = {}, {}
    for name, X in entries.items():
        outputs.check_name(name, "tensor name", InputError)
        if kind == "hessian":
            if isinstance(X, Mapping):  # statistics of nquant.adaptive.hessian_partial / hessian_merge
                if "H" not in X or "n" not in X:
                    raise InputError(f"entries[{name!r}] is a mapping without 'H' and 'n': expected "
                                     "hessian_partial / hessian_merge statistics")
                st = X
            elif chunked.is_dask(X) or isinstance(X, np.ndarray) or hasattr(X, "__array__"):
                st = hessian_stats(X.T if chunked.is_dask(X) else np.asarray(X).T)
            else:  # batches of rows
                st = hessian_stats(np.asarray(b).T for b in X)
            arrays[name] = hessian_finalize(st)
            n = int(st["n"])
        else:
            a = X.compute() if chunked.is_dask(X) else X
            arrays[name] = np.ascontiguousarray(a, dtype=np.float32)
            if arrays[name].ndim != 2:
                raise InputError(f"entries[{name!r}] shape={arrays[name].shape} is invalid: expected (rows, in)")
            n = int(arrays[name].shape[0])
        summary[name] = {"kind": kind, "shape": list(arrays[name].shape), "n_samples": n}
    meta = {"format_version": FORMAT_VERSION, "kinds": {n: kind for n in arrays},
            "n_samples": {n: s["n_samples"] for n, s in summary.items()}}
    if sensitivity is not None:
        checked = _check_sensitivity(sensitivity, "sensitivity")
        meta["sensitivity"] = checked
        unknown = sorted(set(checked) - set(arrays))
        if unknown:
            raise InputError(f"sensitivity[{unknown[0]!r}] is invalid: no entry of that name")
    p = os.fspath(path)
    with outputs.writing(p), outputs.write_errors(p):
        if p.endswith(".npz"):
            _write_npz(p, arrays, meta, overwrite)
        else:
            _write_zarr(p, arrays, meta, overwrite)
    return summary


def _write_npz(p, arrays, meta, overwrite):
    if os.path.lexists(p):
        if not (os.path.isfile(p) and not os.path.islink(p) and zipfile.is_zipfile(p)):
            raise StoreError(f"dst={p!r} exists and is not an .npz file; nquant never replaces it (not even "
                             "with --overwrite): remove it by hand or choose another path")
        if not overwrite:
            raise StoreError(f"dst={p!r} already exists; pass overwrite=True (--overwrite) to replace it")
    # a new file of a unique name beside the destination ("x": never an existing file), then renamed
    tmp = os.path.join(os.path.dirname(os.path.abspath(p)), f".{os.path.basename(p)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **arrays, **{META_KEY: np.array(json.dumps(meta))})
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_zarr(p, arrays, meta, overwrite):
    if outputs.check_destination(p, overwrite) == "ours" and not overwrite:
        raise StoreError(f"dst={p!r} already exists; pass overwrite=True (--overwrite) to replace it")
    partial = p.rstrip(os.sep) + outputs.PARTIAL
    outputs.clear_partial(partial)
    root = outputs.partial_group(partial)
    for name, a in arrays.items():
        outputs.inside(partial, os.path.join(partial, name))
        root.create_array(name, data=a, chunks=(min(a.shape[0], max(1, (1 << 24) // max(1, a.shape[1] * 8))),
                                                a.shape[1]))
    outputs.complete_group(root, ATTR, meta)
    outputs.replace_dir(partial, p)


# ----------------------------------------------------------------------------- recipes


def codebook_scheme(bits, shape):
    """The stored scheme of the codebook recipes for a weight of ``shape``: one absmax per row
    (``block_size`` = the last dimension) and a codebook of ``2**bits`` levels fitted to the tensor
    (``KMeansBlockwise(min_size=0)``: nearest rounding with it, levels fitted to the weights alone,
    is the plain recipe for tensors without calibration)."""
    return KMeansBlockwise(bits=bits, block_size=int(shape[-1]) if len(shape) else 1, min_size=0)


def codebook_round(W, H, scheme, *, damp=0.01, act_order=True, bins=16384):
    """Calibrated rounding to a codebook fitted per layer, rows scaled by their absmax.

    ``W = diag(s) V`` with ``s`` the float32 absmax of each row (``V = W * float32(1 / s)``, as
    ``KMeansBlockwise`` normalises); the levels are the exact 1-D k-means of ``V`` weighted by each
    value's share of the layer's output error (``s_r**2 * H_jj``), and
    :func:`nquant.adaptive.adaptive_round` rounds ``V`` to them with error feedback (scaling a row
    scales its objective ``e H e^T`` only, so rounding ``V`` with ``H`` is rounding ``W`` with ``H``).

    Parameters
    ----------
    W : ndarray (out, in), float; H : ndarray (in, in), float64
    scheme : KMeansBlockwise from :func:`codebook_scheme` (bits and block size)
    damp, act_order : options of :func:`nquant.adaptive.adaptive_round`
    bins : int or None, the levels' fit (:func:`fit_levels`; None: exact over every value)

    Returns
    -------
    QuantizedArray of ``scheme``: codes, ``absmax`` (out,) and ``codebook`` (float32 levels).
    """
    W32 = np.ascontiguousarray(W, dtype=np.float32)
    s = np.abs(W32).max(axis=1)
    inv = (np.float32(1) / np.maximum(s, np.float32(1e-38))).astype(np.float32)
    V = np.clip(W32 * inv[:, None], np.float32(-1), np.float32(1))
    weights = (s.astype(np.float64) ** 2)[:, None] * np.diag(H)[None, :]
    if not (weights > 0).any():  # no weight anywhere (zero rows or inputs): the plain fit
        return quantize(np.asarray(W), scheme)
    levels = np.unique(fit_levels(V, weights, scheme.levels, bins).astype(np.float32))
    grid = Codebook(tuple(float(v) for v in levels))
    qa = adaptive_round(V, H, grid, kind="hessian", damp=damp, act_order=act_order)

    def stored(c):
        return QuantizedArray(scheme=scheme, shape=W32.shape, dtype=np.asarray(W).dtype,
                              codes=pack_codes(c, scheme.bits), bits=scheme.bits,
                              side={"absmax": s, "codebook": levels},
                              info={"adaptive_round": dict(qa.info["adaptive_round"])})

    q = stored(qa.codes_unpacked)
    q.info["adaptive_round"]["levels"] = {"fit": "weighted k-means", "bins": bins}
    # the figures of adaptive_round are those of V; those of W weigh row r by s_r**2
    W64 = np.asarray(W, np.float64)
    ref = float(np.einsum("ij,ij->", W64 @ H, W64))
    info = q.info["adaptive_round"]
    for key, c in (("", qa.codes_unpacked), ("_nearest", quantize(V, grid).codes_unpacked)):
        E = W64 - np.asarray(dequantize(stored(c)), np.float64)
        obj = float(np.einsum("ij,ij->", E @ H, E))
        info["objective" + key] = obj
        info["rel_error" + key] = float(np.sqrt(max(obj, 0.0) / ref)) if ref > 0 else 0.0
    return q


def adaptive_scheme_round(W, H, scheme, *, damp=0.01, act_order=False):
    """:func:`nquant.adaptive.adaptive_round` of ``W`` with the given Hessian and ``scheme``."""
    return adaptive_round(W, H, scheme, kind="hessian", damp=damp, act_order=act_order)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one weight is quantized against its calibration Hessian.

    ``scheme(given, shape)``: the stored scheme of a tensor of ``shape`` (``given``: the scheme
    the caller passed, or None); tensors without a calibration entry are rounded to nearest with
    it.  ``run(W, H, scheme, **options)``: the calibrated ``QuantizedArray``.  ``defaults``:
    the options (``damp``, ``act_order``) used when the caller gives none.
    """

    name: str
    scheme: Callable[[Scheme | None, tuple[int, ...]], Scheme]
    run: Callable[..., QuantizedArray]
    defaults: dict = dataclasses.field(default_factory=dict)


def _given(scheme, shape):
    if scheme is None:
        raise SchemeError("scheme=None is invalid for recipe='adaptive': pass the scheme to round to "
                          "(a Uniform or Codebook scheme), or a codebook recipe (recipe='codebook4')")
    return scheme


def _codebook_recipe(bits):
    def scheme(given, shape):
        return codebook_scheme(bits, shape)

    return Recipe(f"codebook{bits}", scheme, codebook_round, {"damp": 0.01, "act_order": True})


ALLOC_CANDIDATES = (3, 4, 5, 6, (4, 128), (5, 128))
"""Encodings the ``"alloc"`` recipe tries for every tensor: code bits with one absmax per row, or
``(bits, 128)`` with one absmax per 128 columns (only where every calibrated tensor's ``in``
divides by 128); the absmax values double-quantized."""


def _whole_model(W, H, scheme, **options):
    raise SchemeError("recipe='alloc' quantizes the calibrated tensors together (a bit budget spread "
                      "over them): pass it as the recipe of the whole model, not per tensor")


RECIPES = {
    "adaptive": Recipe("adaptive", _given, adaptive_scheme_round, {"damp": 0.01, "act_order": False}),
    **{f"codebook{b}": _codebook_recipe(b) for b in (2, 3, 4, 5, 6, 8)},
    "alloc": Recipe("alloc", _codebook_recipe(4).scheme, _whole_model, {"damp": 0.01, "act_order": True}),
}
"""Named recipes: ``"adaptive"`` (``adaptive_round`` with the given scheme), ``"codebook<bits>"``
(:func:`codebook_round`) and ``"alloc"`` (:func:`nquant.allocate.quantize_allocated` over every
calibrated tensor within a bits-per-value budget, :data:`ALLOC_CANDIDATES`; tensors without an
entry are rounded to nearest as ``"codebook4"``)."""


def get_recipe(recipe):
    """A :class:`Recipe` from a name of :data:`RECIPES` (None: ``"adaptive"``) or a Recipe."""
    if recipe is None:
        return RECIPES["adaptive"]
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str) and recipe in RECIPES:
        return RECIPES[recipe]
    raise SchemeError(f"recipe={recipe!r} is invalid: expected one of {sorted(RECIPES)} or a Recipe")


def recipes_for(recipe, names):
    """``{name: Recipe}`` of every tensor name: ``recipe`` (a name, a Recipe or None, see
    :func:`get_recipe`) for all, or from a mapping ``{glob: recipe}`` the first pattern a name
    matches (``SchemeError`` naming a tensor no pattern matches)."""
    if not isinstance(recipe, Mapping):
        r = get_recipe(recipe)
        return {name: r for name in names}
    if not recipe:
        raise SchemeError("recipe={} is invalid: a mapping needs at least one {glob: recipe} entry")
    patterns = [(str(g), get_recipe(r)) for g, r in recipe.items()]
    out = {}
    for name in names:
        match = next((r for g, r in patterns if fnmatch.fnmatchcase(name, g)), None)
        if match is None:
            raise SchemeError(f"recipe: tensor {name!r} matches no pattern of {sorted(recipe)}; add "
                              "'*' for the others")
        out[name] = match
    return out


def recipe_label(recipe):
    """A JSON-able account of ``recipe`` (its name, or ``{glob: name}``) for reports and fingerprints."""
    if isinstance(recipe, Mapping):
        return {str(g): get_recipe(r).name for g, r in recipe.items()}
    return get_recipe(recipe).name


__all__ = ["ALLOC_CANDIDATES", "RECIPES", "Calibration", "Recipe", "codebook_round", "get_recipe", "open_calibration",
           "recipe_label", "recipes_for", "write_calibration"]
