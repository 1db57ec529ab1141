"""Workflow sources: open a Zarr array, ``.npy`` or ``.safetensors`` file, or generate one if missing.

A source table of a workflow file::

    [sources.<name>]
    path = "data.zarr"        # a Zarr array, a .npy file or a .safetensors model file
    tensor = "w.weight"       # optional, .safetensors only: one tensor as the source array
    generate = {kind = "weights", shape = [4096, 1024], chunks = [512, 1024], seed = 0,
                dtype = "float32", clusters = 64, layers = 2}    # made if ``path`` is missing

Generators (every block drawn from a generator keyed by the seed and the block's
position, so the data do not depend on the scheduler):

- ``weights``: Gaussian rows with log-normal scales and rare 8x outliers (a weight matrix)
- ``gaussian``, ``lognormal``: i.i.d. values
- ``gradients``: heavy-tailed Student-t (3 degrees of freedom) values scaled by 1e-3
- ``embeddings``: rows drawn around ``clusters`` Gaussian centres (an embeddings matrix)
- ``model`` (``.safetensors`` paths only): ``layers`` layers of ``weights`` matrices of
  ``shape`` (and its transpose) plus 1-D norm weights, in ``dtype`` (float16, bfloat16, float32)
"""

import math
import os
import shutil

import numpy as np
import zarr

from nquant import limits, outputs
from nquant.errors import InputError
from nquant.safetensors_io import FLOATS, read_header, read_tensors, write_tensors

GENERATORS = ("weights", "gaussian", "lognormal", "gradients", "embeddings", "model")
ST_TAGS = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64"}


def kind_of(path):
    """``"npy"``, ``"safetensors"`` or ``"zarr"`` from a source path."""
    p = os.fspath(path)
    if p.endswith(".npy"):
        return "npy"
    if p.endswith(".safetensors"):
        return "safetensors"
    return "zarr"


def _generate_block(block_info=None, kind="weights", seed=0, out_dtype="float32", clusters=16,
                    ncols=None):
    info = block_info[None]
    loc = info["array-location"]
    shape = info["chunk-shape"]
    rng = np.random.default_rng([seed] + [lo for lo, _ in loc])
    if kind == "gradients":
        return (rng.standard_t(3, shape) * 1e-3).astype(out_dtype)
    if kind == "embeddings":
        centres = np.random.default_rng([seed, 7]).standard_normal((clusters, ncols))
        rows = rng.integers(0, clusters, shape[0])
        x = centres[rows][:, loc[1][0]:loc[1][1]] + 0.35 * rng.standard_normal(shape)
        return x.astype(out_dtype)
    x = rng.standard_normal(shape)
    if kind == "weights" and len(shape) >= 1:
        rows = np.random.default_rng([seed, 1] + [lo for lo, _ in loc[:1]]).lognormal(0, 0.5, (shape[0],))
        x *= rows.reshape((-1,) + (1,) * (len(shape) - 1))
        x[rng.random(shape) < 1e-3] *= 8
    elif kind == "lognormal":
        x = np.exp(x)
    return x.astype(out_dtype)


def check_generate(generate, kind="zarr"):
    """Bound what a ``generate`` table makes, before anything is allocated (``InputError``).

    A generated array holds at most ``limits.MAX_GENERATED_BYTES``; one chunk (drawn in
    float64, then cast) must fit in the available memory, and so must the whole array for a
    ``.npy`` path and every tensor of a generated model (``.safetensors``: built in memory,
    then written).
    """
    shape = [int(v) for v in generate.get("shape", ())]
    chunks = [int(v) for v in generate.get("chunks", shape)]
    itemsize = np.dtype("float32" if generate.get("dtype", "float32") == "bfloat16"
                        else generate.get("dtype", "float32")).itemsize
    if kind == "safetensors":
        rows, cols = shape
        values = int(generate.get("layers", 2)) * (3 * rows * cols + cols)
        limits.check_memory("generate.shape", shape, values * (4 + 2 * itemsize), InputError)
        return
    total = math.prod(shape) * itemsize
    if total > limits.MAX_GENERATED_BYTES:
        raise InputError(f"generate.shape={shape} is invalid: {total} bytes, more than the "
                         f"{limits.MAX_GENERATED_BYTES} bytes a generated array may hold")
    if len(chunks) != len(shape):
        chunks = shape
    if generate.get("kind") == "embeddings" and len(shape) == 2:
        chunks = [chunks[0], shape[1]]  # embeddings are generated in full rows
    chunk = math.prod(chunks)
    limits.check_memory("generate.chunks" if "chunks" in generate else "generate.shape",
                        chunks if "chunks" in generate else shape, chunk * (16 + itemsize), InputError)
    if kind == "npy":
        limits.check_memory("generate.shape", shape, total * 2 + chunk * 16, InputError)


def _generated(generate, shape=None, chunks=None):
    import dask.array as da

    if shape is None:
        check_generate(generate)
    shape = tuple(int(s) for s in (shape or generate["shape"]))
    chunks = tuple(int(c) for c in (chunks or generate.get("chunks", shape)))
    kind = generate.get("kind", "weights")
    dtype = generate.get("dtype", "float32")
    if kind == "embeddings":
        if len(shape) != 2:
            raise InputError(f"generate.shape={list(shape)} is invalid for kind 'embeddings': expected [rows, dim]")
        chunks = (chunks[0], shape[1])
    return da.map_blocks(_generate_block, chunks=da.core.normalize_chunks(chunks, shape), dtype=dtype,
                         kind=kind, seed=int(generate.get("seed", 0)), out_dtype=dtype,
                         clusters=int(generate.get("clusters", 16)), ncols=shape[-1] if shape else 1)


def _model_tensors(generate):
    check_generate(generate, "safetensors")
    rows, cols = (int(s) for s in generate["shape"])
    seed = int(generate.get("seed", 0))
    tag = ST_TAGS[generate.get("dtype", "float16")]
    out = {}
    for i in range(int(generate.get("layers", 2))):
        for j, (name, shape) in enumerate((("attention.weight", (rows, cols)), ("mlp.up.weight", (rows, cols)),
                                            ("mlp.down.weight", (cols, rows)))):
            g = {"kind": "weights", "seed": seed * 1000 + 10 * i + j}
            out[f"layers.{i}.{name}"] = (np.asarray(_generated(g, shape).compute(), np.float32), tag)
        norm = 1 + 0.1 * np.random.default_rng([seed, i]).standard_normal(cols)
        out[f"layers.{i}.norm.weight"] = (norm.astype(np.float32), tag)
    return out


def make_source(path, generate):
    """Write the synthetic source ``path`` (Zarr array, ``.npy`` or ``.safetensors``) unless it exists."""
    import dask.array as da

    if os.path.exists(path):
        return path
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = path.rstrip("/") + ".partial"
    kind = kind_of(path)
    if kind == "safetensors":
        write_tensors(path, _model_tensors(generate))  # writes a temporary file, then renames
        return path
    x = _generated(generate)
    outputs.clear_partial(tmp)  # a leftover of an interrupted generation (nothing else is removed)
    if kind == "npy":
        with open(tmp, "wb") as f:
            np.save(f, x.compute())
    else:
        z = zarr.create_array(tmp, shape=x.shape, chunks=x.chunksize, dtype=x.dtype,
                              attributes={outputs.PARTIAL_MARK: True})  # nquant's until complete
        da.store(x, z, lock=False)
        del z.attrs[outputs.PARTIAL_MARK]
    os.replace(tmp, path)
    return path


def remove_source(path):
    """Delete a source that a workflow generated (its manifest says so): a Zarr array directory,
    a ``.npy`` or a ``.safetensors`` file, as :func:`make_source` writes them.  A path holding
    anything else is refused (``InputError``), never deleted."""
    kind = kind_of(path)
    if not os.path.lexists(path):
        return
    if kind == "zarr":
        ours = os.path.isdir(path) and not os.path.islink(path) and outputs.zarr_node_type(path) == "array"
    else:
        ours = os.path.isfile(path) and not os.path.islink(path) and outputs.is_file_kind(path, "." + kind)
    if not ours:
        raise InputError(f"source path={path!r} is not a {kind} source as nquant generates them; it is not "
                         "removed (remove it by hand to have it generated again)")
    if kind == "zarr":
        shutil.rmtree(path)
    else:
        os.remove(path)


def open_source(src):
    """The source table ``src`` as a Dask array (Zarr and ``.npy`` paths, or one safetensors tensor)."""
    import dask.array as da
    import zarr

    path = src["path"]
    kind = kind_of(path)
    if kind == "npy":
        return da.from_array(np.load(path, mmap_mode="r"), name=False)
    if kind == "safetensors":
        tensors = read_tensors(path)
        if src.get("tensor") not in tensors:
            raise InputError(f"tensor={src.get('tensor')!r} is not in {path!r} (tensors: {sorted(tensors)[:8]}...)")
        arr, tag = tensors[src["tensor"]]
        arr = np.asarray(arr)
        if tag == "F16" or tag == "BF16":
            arr = arr.astype(np.float32)
        return da.from_array(arr, name=False)
    try:
        return da.from_zarr(zarr.open_array(path, mode="r"))
    except Exception as e:
        raise InputError(f"source path={path!r} cannot be opened as a Zarr array: {e}") from None


def model_shapes(src, include=None):
    """Shapes of the tensors a model job quantizes (floating, 2 or more dimensions), read from the
    file's header or, for a file still to generate, from its ``generate`` table."""
    return [s for _, s in model_tensors(src, include)]


def model_tensors(src, include=None):
    """``[(name, shape)]`` of the tensors a model job quantizes (as :func:`model_shapes`)."""
    import fnmatch

    path = src["path"]
    if os.path.exists(path):
        header, _, _ = read_header(path)
        items = [(n, tuple(h["shape"])) for n, h in header.items() if h["dtype"] in FLOATS]
    else:
        gen = src.get("generate", {})
        rows, cols = (int(s) for s in gen["shape"])
        items = []
        for i in range(int(gen.get("layers", 2))):
            items += [(f"layers.{i}.attention.weight", (rows, cols)), (f"layers.{i}.mlp.up.weight", (rows, cols)),
                      (f"layers.{i}.mlp.down.weight", (cols, rows)), (f"layers.{i}.norm.weight", (cols,))]
    patterns = None if include is None else ([include] if isinstance(include, str) else list(include))
    return [(n, s) for n, s in items if len(s) >= 2 and
            (patterns is None or any(fnmatch.fnmatchcase(n, p) for p in patterns))]


def model_itemsize(src):
    """Bytes per value of a model source's tensors (the first floating tensor's, or the generated dtype's)."""
    path = src["path"]
    if os.path.exists(path):
        header, _, _ = read_header(path)
        tags = [h["dtype"] for h in header.values() if h["dtype"] in FLOATS]
        return {"F64": 8, "F32": 4}.get(tags[0], 2) if tags else 4
    return 4 if src.get("generate", {}).get("dtype", "float16") == "float32" else 2


def describe(src):
    """``(shape, chunks, dtype)`` of a source without reading its values (generated ones from ``generate``)."""
    import zarr

    path = src["path"]
    if os.path.exists(path) and kind_of(path) != "safetensors":
        if kind_of(path) == "npy":
            a = np.load(path, mmap_mode="r")
            return tuple(a.shape), tuple(a.shape), a.dtype
        arr = zarr.open_array(path, mode="r")
        return tuple(arr.shape), tuple(arr.chunks), arr.dtype
    if os.path.exists(path):
        header, _, _ = read_header(path)
        if src.get("tensor"):
            shape = tuple(header[src["tensor"]]["shape"])
            return shape, shape, np.dtype("float32")
        n = sum(int(np.prod(h["shape"], dtype=np.int64)) for h in header.values() if len(h["shape"]) >= 2)
        return (n,), (n,), np.dtype("float32")
    gen = src.get("generate", {})
    if gen.get("kind") == "model":
        rows, cols = (int(s) for s in gen["shape"])
        n = 3 * rows * cols * int(gen.get("layers", 2))
        return (n,), (n,), np.dtype("float32")
    shape = tuple(int(v) for v in gen.get("shape", ()))
    chunks = tuple(int(v) for v in gen.get("chunks", shape))
    return shape, chunks, np.dtype(gen.get("dtype", "float32"))
