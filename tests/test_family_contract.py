"""The family contract: every registered family through the same checks.

In the spirit of numcodecs' ``check_encode_decode``: for a representative scheme of every
scheme class in :mod:`nquant.families.registry` (the class's defaults unless ``EXAMPLES``
names richer ones, so a new family is picked up without touching this file):

- NumPy and Dask give the same codes, side arrays and values for odd chunkings;
- a save/open round trip is bit for bit;
- ``bits_per_value`` (the family's figure) equals the bytes actually stored times 8 over the
  number of values, and ``QuantizedArray.bits_per_value``;
- the report's ``level_view`` gives finite levels and a clipped fraction in [0, 1];
- bad input (an integer array) is an ``InputError``, NumPy and Dask alike;
- where the family has a CUDA path, it agrees with the CPU (CUDA simulator, tiny input).
"""

import dataclasses
import math
import pickle

import dask.array as da
import numpy as np
import pytest
import zarr

import nquant as nq
from nquant.errors import InputError
from nquant.families.base import Family, Side
from nquant.families.registry import family, registered
from nquant.interfaces.samples import level_view
from nquant.interfaces.workflow import estimate_bits_per_value

EXAMPLES = {
    nq.Uniform: [nq.Uniform(bits=4), nq.Uniform(bits=3, axis=1, symmetric=True),
                 nq.Uniform(bits=5, block_size=6, zero_point="float"), nq.Uniform(bits=12, axis=0),
                 nq.Uniform(abs_error=0.01, block_size=6),
                 # compact side information
                 nq.Uniform(bits=4, symmetric=True, block_size=6, scale_dtype="float16",
                            zero_point_storage="packed"),
                 nq.Uniform(bits=3, block_size=4, scale_dtype="bfloat16", zero_point_storage="packed"),
                 nq.Uniform(bits=5, axis=1, scale_dtype="float16", zero_point_storage="packed"),
                 nq.Uniform(bits=4, block_size=6, zero_point="float", scale_dtype="bfloat16"),
                 nq.Uniform(bits=4, block_size=2, double_quant=True, zero_point_storage="packed"),
                 nq.Uniform(bits=4, symmetric=True, block_size=2, double_quant=True,
                            zero_point_storage="packed")],
    nq.Codebook: [nq.Codebook(values=(-1.0, -0.25, 0.5, 1.0))],
    nq.Blockwise: [nq.NF4(block_size=16), nq.NF4(block_size=2, double_quant=True),
                   nq.NF4(block_size=16, scale_dtype="float16"), nq.NF4(block_size=6, scale_dtype="bfloat16")],
    nq.KMeansBlockwise: [nq.KMeansBlockwise(bits=3, block_size=16, min_size=0, bins=256),
                         nq.KMeansBlockwise(bits=3, block_size=16, min_size=0, bins=256, scale_dtype="float16")],
    nq.Outliers: [nq.Outliers(base=nq.NF4(block_size=16), fraction=0.02),
                  nq.Outliers(base=nq.Uniform(bits=4, axis=0), fraction=0.05),
                  nq.Outliers(base=nq.Uniform(bits=4, symmetric=True, block_size=6, scale_dtype="float16",
                                              zero_point_storage="packed"), fraction=0.02)],
    nq.ASQ: [nq.ASQ(bits=3), nq.ASQ(bits=2, axis=0)],
    nq.Significant: [nq.Significant(keepbits=3), nq.Significant(rel_error=0.01)],
}


def _examples():
    out = []
    for cls in registered():
        for scheme in EXAMPLES[cls] if cls in EXAMPLES else [cls()]:
            out.append(pytest.param(scheme, id=f"{scheme.type}-{len(out)}"))
    return out


SCHEMES = _examples()
SHAPE = (13, 36)
CHUNKINGS = [((5, 8), (36,)), ((4, 4, 5), (17, 19)), ((13,), (7, 11, 18))]


@pytest.fixture(scope="module")
def data():
    x = np.random.default_rng(7).standard_normal(SHAPE).astype(np.float32)
    x[3, 5] = 9.0  # an outlier
    return x


def _side(q):
    return {k: np.asarray(v.compute() if hasattr(v, "compute") else v) for k, v in q.side.items()}


def _same_side(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert a[k].dtype == b[k].dtype, k


def test_every_registered_family_has_a_representative():
    assert set(EXAMPLES) <= set(registered())
    types = {p.values[0].type for p in SCHEMES}
    want = {"uniform", "codebook", "blockwise", "kmeans_blockwise", "outliers", "asq", "mxfp4", "mxfp8"}
    assert want <= types


@pytest.mark.parametrize("scheme", SCHEMES)
def test_family_is_declared_and_pickles(scheme):
    fam = family(scheme)
    assert isinstance(fam, Family)
    for f in dataclasses.fields(Family):
        hook = getattr(fam, f.name)
        if f.default is dataclasses.MISSING and f.name != "name":
            assert callable(hook), f.name
    assert pickle.loads(pickle.dumps(fam)) == fam  # distributed workers get it by value
    side = fam.expected_side(scheme, SHAPE, np.dtype(np.float32))
    assert all(isinstance(s, Side) for s in side.values())
    # only a family that fits nothing, globally or per block, may store no side arrays
    assert side or (fam.fit(scheme, np.ones(SHAPE, np.float32)) == {} and fam.param_specs is None)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_numpy_and_dask_agree_for_odd_chunkings(scheme, data):
    q = nq.quantize(data, scheme)
    codes, side, x_hat = np.asarray(q.codes_unpacked), _side(q), nq.dequantize(q)
    for chunks in CHUNKINGS:
        qd = nq.quantize(da.from_array(data, chunks=chunks), scheme)
        np.testing.assert_array_equal(np.asarray(qd.codes_unpacked), codes, err_msg=str(chunks))
        _same_side(_side(qd), side)
        np.testing.assert_array_equal(nq.dequantize(qd).compute(), x_hat)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_save_open_round_trip_and_stored_bits(scheme, data, tmp_path):
    q = nq.quantize(data, scheme)
    path = str(tmp_path / "q.zarr")
    nq.save(q, path, chunks=(5, 36))
    r = nq.open(path)
    assert r.scheme == scheme and r.shape == q.shape and r.dtype == q.dtype
    np.testing.assert_array_equal(np.asarray(r.codes_unpacked), np.asarray(q.codes_unpacked))
    _same_side(_side(r), _side(q))
    np.testing.assert_array_equal(nq.dequantize(r).compute(), nq.dequantize(q))
    # the stored bytes: codes and side arrays as Zarr holds them (uncompressed)
    group = zarr.open_group(path, mode="r")
    stored = sum(math.prod(group[k].shape) * group[k].dtype.itemsize for k in group.array_keys())
    want = 8.0 * stored / data.size
    assert q.bits_per_value == want
    assert family(scheme).bits_per_value(scheme, data.shape, data.dtype) == want


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bits_per_value_of_the_workflow_estimate(scheme):
    x = np.random.default_rng(3).standard_normal((8, 40))
    q = nq.quantize(x, scheme)
    assert estimate_bits_per_value(scheme, x.shape, x.dtype) == q.bits_per_value
    assert estimate_bits_per_value(scheme, (0, 40)) == 0.0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_level_view(scheme, data):
    q = nq.quantize(data, scheme)
    view = level_view(scheme, _side(q), data, nq.dequantize(q))
    assert view["values"].shape == (data.size,)
    assert isinstance(view["xlabel"], str)
    assert view["levels"].size and np.isfinite(view["levels"]).all()
    assert view["clipped"] is None or 0.0 <= view["clipped"] <= 1.0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bad_input_is_an_input_error(scheme):
    bad = np.arange(12, dtype=np.int32).reshape(3, 4)
    with pytest.raises(InputError, match="dtype=int32"):
        nq.quantize(bad, scheme)
    with pytest.raises(InputError, match="dtype=int32"):
        nq.quantize(da.from_array(bad, chunks=2), scheme)


CUDA_SCHEMES = [p for p in SCHEMES if family(p.values[0]).cuda is not None
                and (family(p.values[0]).cuda_refuses is None or family(p.values[0]).cuda_refuses(p.values[0]) is None)]


@pytest.mark.cuda
@pytest.mark.parametrize("scheme", CUDA_SCHEMES)
def test_cuda_twin_agrees(scheme, monkeypatch):
    from numba import cuda

    from nquant.cuda import _launch

    monkeypatch.setattr(_launch, "THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(_launch, "MAX_BLOCKS", 2)
    x = np.random.default_rng(5).standard_normal((3, 12)).astype(np.float32)
    q = nq.quantize(x, scheme)
    g = nq.quantize(x, scheme, device="cuda")
    np.testing.assert_array_equal(np.asarray(g.codes), np.asarray(q.codes))
    _same_side(_side(g), _side(q))
    d = nq.quantize(cuda.to_device(x), scheme)  # device input: decoded on the device
    np.testing.assert_array_equal(nq.dequantize(d).copy_to_host(), nq.dequantize(q))
