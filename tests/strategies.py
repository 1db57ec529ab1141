"""Hypothesis strategies: adversarial float arrays and random chunkings.

Reusable by the NumPy and the Dask tests:

- :func:`float_arrays`: arrays of float16/32/64 mixing ordinary values,
  huge and tiny magnitudes, subnormals, exact ties, constants, empty and 0-d
  shapes.
- :func:`tie_arrays`: values ``k / 2`` that are exact ties ``k + 0.5`` after a
  scale of 1 (use with ``range=(0, 2**bits - 1)``).
- :func:`layouts` / :func:`apply_layout`: the same values as a C-contiguous
  array, a strided view, a transposed (F-ordered) view or a read-only copy.
- :func:`chunkings` / :func:`iter_chunks`: Dask-style chunks of a shape and
  the (slices, start) of every chunk.
- :func:`block_chunkings`: chunkings of a 1-D length along block boundaries.
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = (np.float16, np.float32, np.float64)

# magnitudes every dtype holds with a float32 scale: up to 1e30 (float16: its max)
HUGE = {np.float16: 6.0e4, np.float32: 1.0e30, np.float64: 1.0e30}
SUBNORMAL = {np.float16: 6.0e-8, np.float32: 1.0e-40, np.float64: 1.0e-310}


def shapes(min_dims=0, max_dims=3, min_side=0, max_side=7):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def _finite(dtype):
    dtype = np.dtype(dtype).type
    width = {np.float16: 16, np.float32: 32, np.float64: 64}[dtype]
    bound = float(dtype(HUGE[dtype]))  # exactly representable in the dtype
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False,
                     allow_subnormal=True, width=width)


@st.composite
def float_arrays(draw, dtypes=DTYPES, shape=None, min_dims=0, max_dims=3, max_side=7):
    """Finite float arrays with adversarial contents.

    A *kind* is drawn first: ``ordinary`` (normal values times a magnitude in
    1e-30..1e30), ``any`` (any finite value, subnormals included), ``constant``,
    ``ties`` (half integers), ``tiny`` (subnormal-sized) or ``sparse`` (mostly
    zeros with a few large values).
    """
    dtype = np.dtype(draw(st.sampled_from(dtypes))).type
    if shape is None:
        shape = draw(shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side))
    n = int(np.prod(shape, dtype=np.int64))
    kind = draw(st.sampled_from(["ordinary", "ordinary", "any", "constant", "ties", "tiny", "sparse"]))
    if kind == "any":
        a = draw(hnp.arrays(dtype, shape, elements=_finite(dtype)))
        return a
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "ordinary":
        mags = [1e-30, 1e-6, 1e-2, 1.0, 3.0, 1e3, 1e6, 1e30]
        mag = min(draw(st.sampled_from(mags)), HUGE[dtype] / 16)
        shift = draw(st.sampled_from([0.0, 0.0, 1.0, -5.0]))
        v = (rng.standard_normal(n) + shift) * mag
    elif kind == "constant":
        c = draw(_finite(dtype))
        v = np.full(n, c)
    elif kind == "ties":
        v = rng.integers(-40, 41, n) / 2.0
    elif kind == "tiny":
        v = rng.integers(-7, 8, n) * SUBNORMAL[dtype]
    else:
        v = np.zeros(n)
        k = max(1, n // 20)
        v[rng.integers(0, max(n, 1), k)[: n]] = rng.standard_normal(min(k, n)) * min(1e4, HUGE[dtype])
    return v.astype(dtype).reshape(shape)


@st.composite
def tie_arrays(draw, bits, dtypes=DTYPES, max_side=40):
    """Half integers ``k / 2`` in ``[0, 2**bits - 1]`` (exact ties with scale 1, offset 0)."""
    dtype = draw(st.sampled_from(dtypes))
    n = draw(st.integers(0, max_side))
    top = 2 * (2**bits - 1)
    k = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, top)))
    return (k / 2.0).astype(dtype)


LAYOUTS = ("c", "strided", "fortran", "readonly", "readonly_strided")


def layouts():
    return st.sampled_from(LAYOUTS)


def apply_layout(a, layout):
    """The values of ``a`` in a given memory layout (same shape, same values)."""
    a = np.asarray(a)
    if layout == "c":
        return np.array(a, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    if layout in ("strided", "readonly_strided"):
        big = np.zeros(a.shape + (2,), a.dtype)
        big[..., 0] = a
        v = big[..., 0]
        if a.ndim and a.size > 1:
            assert not v.flags.c_contiguous
        if layout == "readonly_strided":
            v.setflags(write=False)
        return v
    if layout == "fortran":
        return np.array(a, order="F")
    if layout == "readonly":
        r = a.copy()
        r.setflags(write=False)
        return r
    raise ValueError(layout)


@st.composite
def chunkings(draw, shape, max_chunks=4):
    """Dask-style chunks: for each dimension a tuple of positive sizes summing to it
    (``(0,)`` for a zero-length dimension)."""
    out = []
    for n in shape:
        if n == 0:
            out.append((0,))
            continue
        k = draw(st.integers(1, min(n, max_chunks)))
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), min_size=k - 1, max_size=k - 1))) if k > 1 else []
        bounds = [0, *cuts, n]
        out.append(tuple(b - a for a, b in zip(bounds[:-1], bounds[1:])))
    return tuple(out)


def iter_chunks(chunks):
    """``(slices, start)`` of every chunk of a Dask-style chunking, in C order of chunks."""
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in chunks]
    for idx in np.ndindex(*[len(c) for c in chunks]):
        start = tuple(int(starts[d][i]) for d, i in enumerate(idx))
        slices = tuple(slice(s, s + chunks[d][i]) for d, (s, i) in enumerate(zip(start, idx)))
        yield slices, start


@st.composite
def block_chunkings(draw, n, block_size, max_chunks=4):
    """Chunks of a length ``n`` whose boundaries fall on multiples of ``block_size``."""
    nblocks = -(-n // block_size)
    if nblocks <= 1:
        return ((n,),)
    k = draw(st.integers(1, min(nblocks, max_chunks)))
    cuts = sorted(draw(st.sets(st.integers(1, nblocks - 1), min_size=k - 1, max_size=k - 1)))
    bounds = [0, *[c * block_size for c in cuts], n]
    return (tuple(b - a for a, b in zip(bounds[:-1], bounds[1:])),)
