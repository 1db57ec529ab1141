"""Typical user code, checked by mypy against nquant's annotations (tests/test_typing.py).

It is type-checked, not run: every name a user types in a notebook or a pipeline appears once.
"""

import numpy as np

import nquant as nq
from nquant.errors import InputError, NQuantError, SchemeError, StoreError


def numpy_roundtrip(x: np.ndarray) -> dict[str, float]:
    scheme = nq.Uniform(bits=8, symmetric=True, axis=0, rounding="stochastic", seed=3)
    q: nq.QuantizedArray = nq.quantize(x, scheme)
    bits: float = q.bits_per_value
    shape: tuple[int, ...] = q.shape
    x_hat = nq.dequantize(q, dtype=np.float32)
    assert bits > 0 and len(shape) == x.ndim
    return nq.metrics(x, x_hat)


def schemes() -> list[nq.schemes.Scheme]:
    text = nq.NF4(double_quant=True).to_json()
    back = nq.scheme_from_json(text)
    narrower = nq.Uniform(bits=4).replace(bits=2)
    return [back, narrower, nq.Codebook(nq.normal_float(3)), nq.Blockwise(nq.normal_float(4), block_size=32),
            nq.ASQ(bits=3, method="quiver_approx", m=1000), nq.KMeansBlockwise(bits=3),
            nq.Outliers(nq.Uniform(bits=4, axis=0), fraction=0.001), nq.MXFP4(),
            nq.Uniform(range=(-1.0, 1.0))]


def stores(x: np.ndarray, path: str) -> float:
    nq.save(nq.quantize(x, nq.Uniform(bits=8, axis=0)), path, overwrite=True)
    opened = nq.open(path)
    q = opened if isinstance(opened, nq.QuantizedArray) else opened["weight"]
    nq.quantize_zarr("data.zarr", "data-nf4.zarr", nq.NF4(), resume=True)
    nq.dequantize_zarr("data-nf4.zarr", "restored.zarr")
    report = nq.quantize_safetensors("model.safetensors", "model.zarr", nq.NF4(), include=["*.weight"])
    return float(report["total"]["bits_per_value"]) + q.bits_per_value


def estimators(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    km = nq.KMeans(16, seed=1).fit(X)
    labels, dist = nq.assign(X, km.cluster_centers_)
    pq = nq.ProductQuantizer(M=4, nbits=4).fit(X)
    codes = pq.encode(X)
    D, I = pq.search(X[:3], 5, codes=codes)
    levels: np.ndarray = nq.asq.solve(X.ravel(), 8).levels
    centers: np.ndarray = nq.optimal1d.kmeans1d(X.ravel(), 8).centers
    qw = nq.adaptive_round(W, X, nq.Uniform(bits=4, symmetric=True, axis=0))
    y, mask = nq.fake_quantize(X, nq.Uniform(bits=8))
    packed: np.ndarray = nq.pack(np.zeros(16, np.uint8), 4)
    unpacked: np.ndarray = nq.unpack(packed, 4, 16)
    return np.concatenate([levels, centers, D.ravel(), I.ravel(), y.ravel(), unpacked, qw.codes.ravel()])


def errors(x: np.ndarray) -> str:
    try:
        nq.quantize(x, nq.Uniform(bits=9))
    except SchemeError as e:
        return str(e)
    except (InputError, StoreError) as e:
        return type(e).__name__
    except NQuantError:
        raise
    return ""
