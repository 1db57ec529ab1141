"""Compare nquant with the error-bounded scientific compressors at equal maximum absolute error.

One run on the same arrays: for each array and each bound ``e`` (a fraction of the data range),
every method reports the achieved ``max |x - x_hat|`` (flagged when above ``e``), stored bytes and
the ratio against the float32 bytes, encode and decode throughput (MB/s of float32 input, median of
``--repeat`` timed calls after one warm-up call) and an error histogram (percent of ``|err|`` in
``[0, e/4)``, ``[e/4, e/2)``, ``[e/2, e]`` and above ``e``)::

    python benchmarks/compare_scientific.py [--size 2048] [--bounds 1e-2 1e-3 1e-4] [--level 3]

Methods (a missing package skips its rows with the reason):

- ``Quantize+zstd``: numcodecs ``Quantize(digits)`` then ``Zstd``.  ``digits`` counts decimal places
  after the point (an absolute precision ``10**-digits``, not significant digits): Quantize keeps
  ``ceil(log2(10**digits))`` fraction bits, so its error is at most half of that power of two.  The
  smallest ``digits`` whose achieved error meets ``e`` is used.
- ``BitRound+zstd``: numcodecs ``BitRound(keepbits)`` then ``Zstd``; a relative bound
  (``|x| * 2**-(keepbits+1)``), so the smallest ``keepbits`` whose achieved error meets ``e`` is used.
- ``ZFP``: ``zfpy.compress_numpy(x, tolerance=e)`` (fixed-accuracy mode).
- ``SZ3``: ``pysz`` in absolute-error mode (its default predictor).
- ``pcodec (lossless)``: the float32 array through pcodec, a reference without error.
- ``nquant``: :func:`nquant_encode` (``Uniform(abs_error=e)`` where the scheme has it, otherwise the
  smallest ``Uniform(bits=1..8, zero_point="float")`` whose half step meets ``e``), the codes and side
  arrays through a lossless stage: packed codes + zstd as stored today, and candidate stages on the
  unpacked codes (delta along the last axis, 2-D Lorenzo prediction on the last two axes, SZ3-style
  multilevel linear interpolation on 2-D codes, byte shuffle, zstd, pcodec), and the order-0 entropy
  of the Lorenzo residuals (the bytes an ideal Huffman/ANS coder of them would need).
- ``plan``: a NumPy emulation of the error-bounded 1-16-bit codes nquant does not have yet (``step``
  just under ``2 e``, so every bound gets a row, 8 bits or not), through the same lossless stages; its
  bytes show what those stages give, its throughput is NumPy's, not nquant's.

Data: matplotlib's sample arrays (two elevation grids, an MRI slice, four EEG channels) as float32
and a synthetic ``--size`` x ``--size`` Gaussian random field (power-law spectrum plus a smooth
trend) for throughput.
"""

import argparse
import gzip
import importlib.metadata
import statistics
import time

import numpy as np

import nquant as nq
from nquant.containers import QuantizedArray
from nquant.packing import pack_codes

# -- peers (each optional) ----------------------------------------------------------------------

MISSING = {}


def _optional(name, importer):
    try:
        return importer()
    except (ImportError, ValueError) as exc:  # numcodecs 0.16.3 raises ValueError on zfpy "1.0.1.post0"
        MISSING[name] = f"{type(exc).__name__}: {exc}"
        return None


numcodecs = _optional("numcodecs", lambda: __import__("numcodecs"))
zfpy = _optional("zfpy", lambda: __import__("zfpy"))
pysz = _optional("pysz", lambda: __import__("pysz"))
pcodec = _optional("pcodec", lambda: __import__("pcodec"))


def versions():
    out = []
    for dist in ("nquant", "numpy", "numcodecs", "zfpy", "pysz", "pcodec", "xbitinfo", "matplotlib"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


# -- data -----------------------------------------------------------------------------------------

def sample_arrays():
    """matplotlib's sample data as float32 arrays; name -> (array, description)."""
    try:
        from matplotlib import cbook
    except ImportError as exc:
        MISSING["matplotlib sample data"] = str(exc)
        return {}
    out = {}
    dem = cbook.get_sample_data("jacksboro_fault_dem.npz")
    out["jacksboro DEM"] = (dem["elevation"].astype(np.float32), "elevation grid, int16 metres")
    topo = cbook.get_sample_data("topobathy.npz")
    out["topobathy"] = (np.ascontiguousarray(topo["topo"], dtype=np.float32), "elevation/bathymetry, float32 m")
    with cbook.get_sample_data("s1045.ima.gz") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # some matplotlib versions hand back the gzip stream undecoded
        raw = gzip.decompress(raw)
    mri = np.frombuffer(raw, ">u2").reshape(256, 256).astype(np.float32)
    out["MRI slice"] = (mri, "uint16 big-endian 256x256")
    with cbook.get_sample_data("eeg.dat") as f:
        eeg = np.fromfile(f, dtype="<f8")
    # 800 samples of 4 channels, sample-major (as matplotlib's mri_with_eeg example reads it);
    # stored channel-major so that the last axis is time.
    out["EEG"] = (np.ascontiguousarray(eeg.reshape(800, 4).T, dtype=np.float32), "4 channels x 800 samples, float64")
    return out


def gaussian_field(n, slope=3.0, seed=0):
    """Float32 (n, n) Gaussian random field with power spectrum ~ k**-slope plus a smooth trend."""
    rng = np.random.default_rng(seed)
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = 1.0 / n
    amp = k ** (-slope / 2)
    spec = (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) * amp
    f = np.fft.irfft2(spec, s=(n, n))
    f *= 10.0 / f.std()
    t = np.linspace(0.0, 1.0, n)
    trend = 280.0 + 15.0 * t[:, None] + 5.0 * np.sin(2 * np.pi * t)[None, :]
    return (f + trend).astype(np.float32)


# -- helpers --------------------------------------------------------------------------------------

def median_time(fn, repeat):
    """Median seconds of ``repeat`` calls after one warm-up call, and the warm-up's result."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def max_err(x, x_hat):
    return float(np.max(np.abs(x.astype(np.float64) - x_hat.astype(np.float64)))) if x.size else 0.0


def histogram(x, x_hat, e):
    """Percent of |err| in [0, e/4), [e/4, e/2), [e/2, e], (e, inf)."""
    err = np.abs(x.astype(np.float64) - x_hat.astype(np.float64)).ravel()
    if e == 0:
        return "-"
    # bins are half-open [a, b): the edge just above e puts err == e into [e/2, e]
    c = np.histogram(err, bins=[0.0, e / 4, e / 2, np.nextafter(e, np.inf), np.inf])[0]
    pct = 100.0 * c / err.size
    return "/".join(f"{p:.0f}" for p in pct)


def nbytes(payload):
    return sum(len(p) if isinstance(p, (bytes, bytearray)) else np.asarray(p).nbytes for p in payload)


# -- lossless stages on integer codes -------------------------------------------------------------
# Prediction works in the codes' own unsigned width with wrap-around (so it is exactly invertible
# by a wrapping cumulative sum) and stores the residuals zigzag-mapped, so that small negative
# residuals get small codes with zero high bytes.

def _zigzag(r):
    s = r.view(r.dtype.str.replace("u", "i"))
    w = 8 * r.dtype.itemsize
    return ((s << 1) ^ (s >> (w - 1))).view(r.dtype)


def _unzigzag(z):
    s = z.view(z.dtype.str.replace("u", "i"))
    return ((z >> 1) ^ -(s & 1).view(z.dtype)).view(z.dtype)


def _interp_between(known, n_t):
    """Linear prediction of the ``n_t`` points halfway between rows of ``known`` (axis 0)."""
    a = known[:n_t]
    b = known[1:n_t + 1]
    if b.shape[0] < n_t:  # the last target has no neighbour after it
        b = np.concatenate([b, known[n_t - 1:n_t]], axis=0)
    return (a + b) >> 1


def _interp(c, inverse, mask=-1):
    """Multilevel interpolation on a 2-D int64 array (SZ3's predictor, linear, on integer codes).

    Points on the grid of stride ``s`` are predicted from the grid of stride ``2 s``, first along
    axis 0 then along axis 1, coarse to fine.  Forward: ``c`` holds codes, returns residuals;
    inverse: ``c`` holds residuals, returns codes (each level masked by ``mask`` = 2**width - 1, as the
    forward pass saw them).
    """
    out = c.copy()
    known_src = out if inverse else c
    sign = 1 if inverse else -1
    s = 1
    while s < max(c.shape):
        s *= 2
    while s >= 1:
        tgt = (slice(s, None, 2 * s), slice(0, None, 2 * s))
        n_t = out[tgt].shape[0]
        if out[tgt].size:
            out[tgt] += sign * _interp_between(known_src[0::2 * s, 0::2 * s], n_t)
            out[tgt] &= mask
        tgt = (slice(0, None, s), slice(s, None, 2 * s))
        n_t = out[tgt].shape[1]
        if out[tgt].size:
            out[tgt] += sign * _interp_between(known_src[0::s, 0::2 * s].T, n_t).T
            out[tgt] &= mask
        s //= 2
    return out


def predict(codes, kind):
    """Residuals (same unsigned dtype) of ``kind``: "none", "delta" (last axis), "lorenzo" (last two),
    "interp" (2-D multilevel interpolation)."""
    r = np.asarray(codes)
    if kind == "none":
        return r
    if kind == "interp":
        # the int64 residual wraps modulo 2**width on the cast back, exactly invertible
        return _zigzag(_interp(r.astype(np.int64), False).astype(r.dtype))
    axes = (-1,) if kind == "delta" or r.ndim < 2 else (-1, -2)
    for ax in axes:
        d = r.copy()
        rest = [slice(None)] * r.ndim
        rest[ax] = slice(1, None)
        d[tuple(rest)] = np.diff(r, axis=ax)  # wraps modulo 2**width
        r = d
    return _zigzag(r)


def unpredict(res, kind):
    if kind == "none":
        return res
    r = _unzigzag(res)
    if kind == "interp":
        return _interp(r.astype(np.int64), True, np.iinfo(r.dtype).max).astype(r.dtype)
    axes = (-2, -1) if kind == "lorenzo" and r.ndim >= 2 else (-1,)
    for ax in axes:
        r = np.cumsum(r, axis=ax, dtype=r.dtype)  # wraps modulo 2**width: exact inverse
    return r


def _shuffle(a):
    return a.reshape(-1).view(np.uint8).reshape(-1, a.dtype.itemsize).T.copy()


def _unshuffle(b, dtype, shape):
    size = np.dtype(dtype).itemsize
    return np.ascontiguousarray(b.reshape(size, -1).T).view(dtype).reshape(shape)


def entropy_encode(res, coder, level):
    if coder == "zstd":
        return numcodecs.Zstd(level=level).encode(res)
    if coder == "shuffle+zstd":
        return numcodecs.Zstd(level=level).encode(_shuffle(res))
    if coder == "pcodec":
        # pcodec has no 8-bit type: widen to 16 bits (it removes the unused high bits itself)
        wide = res.astype(np.uint16) if res.dtype.itemsize == 1 else res
        return pcodec.standalone.simple_compress(wide.reshape(-1), pcodec.ChunkConfig())
    raise ValueError(coder)


def entropy_decode(blob, coder, dtype, shape):
    if coder == "zstd":
        return np.frombuffer(numcodecs.Zstd().decode(blob), dtype).reshape(shape)
    if coder == "shuffle+zstd":
        raw = np.frombuffer(numcodecs.Zstd().decode(blob), np.uint8)
        return _unshuffle(raw, dtype, shape)
    if coder == "pcodec":
        return pcodec.standalone.simple_decompress(blob).astype(dtype, copy=False).reshape(shape)
    raise ValueError(coder)


# Lossless stages tried on the codes; (prediction, coder, zstd level or None for the --level default)
STAGES = [
    ("delta", "zstd", None),
    ("delta", "shuffle+zstd", None),
    ("lorenzo", "zstd", None),
    ("lorenzo", "shuffle+zstd", None),
    ("lorenzo", "zstd", 19),
    ("none", "pcodec", None),
    ("lorenzo", "pcodec", None),
    ("interp", "zstd", None),
    ("interp", "pcodec", None),
]


# -- nquant ---------------------------------------------------------------------------------------

def nquant_scheme(x, e):
    """The Uniform scheme nquant uses for the bound ``e``, or (None, reason)."""
    try:
        return nq.Uniform(abs_error=e), "abs_error"
    except TypeError:
        pass
    lo, hi = float(np.min(x)), float(np.max(x))
    span = hi - lo
    for bits in range(1, 9):
        # zero_point="float" keeps the grid on [lo, hi] (the "int" zero point widens it to contain 0)
        if span / (2**bits - 1) / 2 <= e:
            return nq.Uniform(bits=bits, zero_point="float"), f"bits={bits}"
    need = int(np.ceil(np.log2(span / (2 * e) + 1)))
    return None, f"needs {need} bits (> 8, 9-16-bit codes not in Uniform yet)"


def nquant_encode(x, e):
    """Quantize ``x`` (float32 ndarray) so that ``max |x - x_hat| <= e``: (QuantizedArray or None, note)."""
    scheme, note = nquant_scheme(x, e)
    if scheme is None:
        return None, note
    return nq.quantize(x, scheme), note


def _side_bytes(q):
    return [np.ascontiguousarray(a) for a in q.side.values()]


def _rebuild(q, codes_packed):
    return QuantizedArray(q.scheme, q.shape, q.dtype, codes_packed, q.bits, dict(q.side))


# -- methods --------------------------------------------------------------------------------------
# Each method returns a list of rows; a row is (name, setting, encode, decode) with
# encode() -> payload (list of bytes/arrays) and decode(payload) -> x_hat, or (name, None, reason).

def m_quantize(x, e, level):
    name = "Quantize+zstd"
    if numcodecs is None:
        return [(name, None, "numcodecs: " + MISSING["numcodecs"])]
    zstd = numcodecs.Zstd(level=level)
    d0 = max(0, int(np.floor(-np.log10(e))) - 1)
    for digits in range(d0, d0 + 6):
        qc = numcodecs.Quantize(digits=digits, dtype="<f4")
        if max_err(x, qc.encode(x).astype(np.float32)) <= e:
            break
    else:
        return [(name, None, f"no digits in {d0}..{d0 + 5} meets e (float32 spacing of the data)")]

    def enc():
        return [zstd.encode(np.ascontiguousarray(qc.encode(x), dtype="<f4"))]

    def dec(p):
        return np.frombuffer(zstd.decode(p[0]), "<f4").reshape(x.shape)

    return [(name, f"digits={digits}", enc, dec)]


def m_bitround(x, e, level):
    name = "BitRound+zstd"
    if numcodecs is None:
        return [(name, None, "numcodecs: " + MISSING["numcodecs"])]
    zstd = numcodecs.Zstd(level=level)
    amax = float(np.max(np.abs(x)))
    k0 = max(0, int(np.ceil(np.log2(amax / e))) - 3) if amax > 0 else 0
    for keep in range(min(k0, 23), 24):
        br = numcodecs.BitRound(keepbits=keep)
        if max_err(x, br.encode(x).view(np.float32).reshape(x.shape)) <= e:
            break
    else:
        return [(name, None, "keepbits 23 does not meet e")]

    def enc():
        return [zstd.encode(br.encode(x))]

    def dec(p):
        return np.frombuffer(zstd.decode(p[0]), "<f4").reshape(x.shape)

    return [(name, f"keepbits={keep}", enc, dec)]


def m_zfp(x, e, level):
    if zfpy is None:
        return [("ZFP", None, "zfpy: " + MISSING["zfpy"])]
    return [("ZFP", f"tolerance={e:.3g}",
             lambda: [zfpy.compress_numpy(x, tolerance=e)],
             lambda p: zfpy.decompress_numpy(p[0]))]


def m_sz3(x, e, level):
    if pysz is None:
        return [("SZ3", None, "pysz: " + MISSING["pysz"])]
    cfg = pysz.szConfig(x.shape)
    cfg.errorBoundMode = pysz.szErrorBoundMode.ABS
    cfg.absErrorBound = e

    def enc():
        return [pysz.sz.compress(x, cfg)[0]]

    def dec(p):
        return pysz.sz.decompress(p[0], np.float32, x.shape)[0]

    return [("SZ3", f"abs={e:.3g}", enc, dec)]


def m_pcodec(x, e, level):
    if pcodec is None:
        return [("pcodec (lossless)", None, "pcodec: " + MISSING["pcodec"])]
    flat = np.ascontiguousarray(x).reshape(-1)
    return [("pcodec (lossless)", "level 8",
             lambda: [pcodec.standalone.simple_compress(flat, pcodec.ChunkConfig())],
             lambda p: pcodec.standalone.simple_decompress(p[0]).reshape(x.shape))]


def _stage_rows(prefix, setting, x, level, encode_codes, decode_codes):
    """Rows for each lossless stage on integer codes.

    ``encode_codes() -> (codes ndarray (unsigned, shape of x), side list)`` runs the quantizer;
    ``decode_codes(codes, side) -> x_hat`` runs its decoder.
    """
    rows = []
    for pred, coder, lev in STAGES:
        if pred == "interp" and x.ndim != 2:
            continue
        if coder == "pcodec" and pcodec is None:
            rows.append((f"{prefix} {pred}+{coder}", None, "pcodec: " + MISSING["pcodec"]))
            continue
        if coder != "pcodec" and numcodecs is None:
            rows.append((f"{prefix} {pred}+{coder}", None, "numcodecs: " + MISSING["numcodecs"]))
            continue
        lev = level if lev is None else lev
        label = f"{prefix} {pred}+{coder}" + (f"({lev})" if "zstd" in coder else "")

        def enc(pred=pred, coder=coder, lev=lev):
            codes, side = encode_codes()
            return [entropy_encode(predict(codes, pred), coder, lev), codes.dtype.str] + side

        def dec(p, pred=pred, coder=coder):
            dtype = np.dtype(p[1])
            codes = unpredict(entropy_decode(p[0], coder, dtype, x.shape), pred)
            return decode_codes(codes, p[2:])

        rows.append((label, setting, enc, dec))
    rows.append((f"{prefix} lorenzo H0", setting, encode_codes))
    return rows


def entropy_bytes(codes, pred):
    """Zeroth-order entropy of the residuals in bytes: what an ideal order-0 coder (Huffman/ANS) needs."""
    _, counts = np.unique(predict(codes, pred), return_counts=True)
    p = counts / counts.sum()
    return int(np.ceil(-(counts * np.log2(p)).sum() / 8))


def m_nquant(x, e, level):
    q, note = nquant_encode(x, e)
    if q is None:
        return [("nquant", None, note)]
    rows = []
    if numcodecs is not None:
        zstd = numcodecs.Zstd(level=level)

        def enc():
            qq, _ = nquant_encode(x, e)
            return [zstd.encode(np.ascontiguousarray(qq.codes))] + _side_bytes(qq)

        def dec(p):
            packed = np.frombuffer(zstd.decode(p[0]), np.uint8).reshape(q.codes.shape)
            return nq.dequantize(_rebuild(q, packed))

        rows.append((f"nquant packed+zstd({level})", note, enc, dec))

    def encode_codes():
        qq, _ = nquant_encode(x, e)
        return qq.codes_unpacked, _side_bytes(qq)

    def decode_codes(codes, side):
        return nq.dequantize(_rebuild(q, pack_codes(codes, q.bits)))

    # the payload's side arrays are counted in bytes; the decoder reads the (identical) ones of q
    rows += _stage_rows("nquant", note, x, level, encode_codes, decode_codes)
    return rows


def m_plan(x, e, level):
    """NumPy emulation of error-bounded 1-16-bit codes (a step just under 2e from the minimum)."""
    lo = float(np.min(x))
    span = float(np.max(x)) - lo
    # step 2e less the float32 spacing at the largest magnitude, so that rounding x_hat to
    # float32 keeps the error within e
    spacing = float(np.spacing(np.float32(max(abs(lo), abs(lo + span)))))
    step = 2 * e - 2 * spacing
    levels = int(np.floor(span / step)) + 1
    if step <= 0 or levels > 2**16:
        return [("plan", None, f"{levels} levels need more than 16 bits")]
    bits = max(1, int(np.ceil(np.log2(levels))))
    # at <= 8 bits the row still differs from nquant's: its step is 2e, not span / (2**bits - 1)
    dtype = np.uint8 if bits <= 8 else np.uint16

    def encode_codes():
        lo_ = np.float64(np.min(x))
        codes = np.rint((x - lo_) / step).astype(dtype)
        return codes, [np.array([lo_, step])]

    def decode_codes(codes, side):
        lo_, st = side[0]
        return (lo_ + codes * st).astype(np.float32)

    return _stage_rows("plan", f"bits={bits} step=2e (NumPy)", x, level, encode_codes, decode_codes)


METHODS = [m_quantize, m_bitround, m_zfp, m_sz3, m_pcodec, m_nquant, m_plan]
PEERS_BOUNDED = ("Quantize+zstd", "BitRound+zstd", "ZFP", "SZ3")


# -- run ------------------------------------------------------------------------------------------

def measure(x, e, enc, dec, repeat):
    """Bytes, achieved error, histogram and throughputs (MB/s of float32 input) of one method."""
    mb = x.astype(np.float32).nbytes / 1e6
    t_enc, payload = median_time(enc, repeat)
    t_dec, x_hat = median_time(lambda: dec(payload), repeat)
    return {"err": max_err(x, x_hat), "bytes": nbytes(payload), "enc": mb / t_enc, "dec": mb / t_dec,
            "hist": histogram(x, x_hat, e)}


def run_array(name, desc, x, rel_bounds, level, repeat, pcodec_cache):
    span = float(np.max(x) - np.min(x))
    raw = x.astype(np.float32).nbytes
    print(f"\n## {name} ({desc}): shape {x.shape}, range {np.min(x):.6g}..{np.max(x):.6g}, "
          f"{raw} float32 bytes\n")
    for rel in rel_bounds:
        e = rel * span
        print(f"### {name}, e = {rel:g} x range = {e:.4g}\n")
        print("| method | setting | max abs err | ok | bytes | ratio | enc MB/s | dec MB/s | err % [0,e/4)/[e/4,e/2)/[e/2,e]/>e |")
        print("|---|---|---:|:-:|---:|---:|---:|---:|---|")
        results = {}
        for method in METHODS:
            for row in method(x, e, level):
                if row[1] is None:
                    print(f"| {row[0]} | skipped | | | | | | | {row[2]} |")
                    continue
                if len(row) == 3:  # an entropy bound, not a codec: bytes only
                    codes, side = row[2]()
                    h = entropy_bytes(codes, "lorenzo") + nbytes(side)
                    print(f"| {row[0]} | {row[1]} | | | {h} | {raw / h:.2f} | | | order-0 entropy of residuals |")
                    continue
                label, setting, enc, dec = row
                if label.startswith("pcodec") and label in pcodec_cache:
                    r = pcodec_cache[label]
                else:
                    r = measure(x, e, enc, dec, repeat)
                    r["lossless"] = label.startswith("pcodec")
                    if r["lossless"]:
                        pcodec_cache[label] = r
                ok = "yes" if r["err"] <= e else "NO"
                results[label] = r
                print(f"| {label} | {setting} | {r['err']:.4g} | {ok} | {r['bytes']} | {raw / r['bytes']:.2f} "
                      f"| {r['enc']:.0f} | {r['dec']:.0f} | {r['hist'] if not r['lossless'] else 'lossless'} |")
        print()
        summary(name, e, rel, results)


def summary(name, e, rel, results):
    """Per group of own rows (nquant today, the NumPy plan): smallest row against the peers' bytes, its
    encode throughput and the fastest own row's against the fastest error-bounded peer."""
    ok = {k: v for k, v in results.items() if v["err"] <= e}
    peers = {k: v for k, v in ok.items() if k in PEERS_BOUNDED}
    for prefix, who in (("nquant", "nquant"), ("plan", "plan (NumPy emulation)")):
        own = {k: v for k, v in ok.items() if k.startswith(prefix)}
        if not own:
            print(f"summary {name} e={rel:g} {who}: no row meets e")
            continue
        best = min(own, key=lambda k: own[k]["bytes"])
        b = own[best]["bytes"]
        parts = [f"smallest {best} {b} B"]
        parts += [f"{b / ok[p]['bytes']:.2f}x {p}" for p in ("SZ3", "Quantize+zstd", "BitRound+zstd", "ZFP")
                  if p in ok]
        if peers:
            fastest = max(peers, key=lambda k: peers[k]["enc"])
            f_enc = peers[fastest]["enc"]
            fast = max(own, key=lambda k: own[k]["enc"])
            # the smallest row is often a slow one (zstd 19, pcodec): quote it and the fastest own row
            parts.append(f"encode {own[best]['enc']:.0f} MB/s = {own[best]['enc'] / f_enc:.2f}x fastest peer "
                         f"({fastest} {f_enc:.0f} MB/s)")
            parts.append(f"fastest {fast} {own[fast]['enc']:.0f} MB/s = {own[fast]['enc'] / f_enc:.2f}x, "
                         f"{own[fast]['bytes']} B = {own[fast]['bytes'] / ok['SZ3']['bytes']:.2f}x SZ3"
                         if "SZ3" in ok else f"fastest {fast} {own[fast]['enc']:.0f} MB/s")
        print(f"summary {name} e={rel:g} {who}: " + "; ".join(parts))
    print()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="side of the synthetic field (0: skip it)")
    ap.add_argument("--bounds", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4],
                    help="maximum absolute errors as fractions of each array's range")
    ap.add_argument("--level", type=int, default=3, help="zstd level (every zstd row but the level-19 one)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="names of arrays to run (substring match)")
    args = ap.parse_args(argv)

    print("# compare_scientific: equal maximum absolute error")
    print(versions())
    for k, v in MISSING.items():
        print(f"skipped {k}: {v}")
    arrays = sample_arrays()
    if args.size:
        t0 = time.perf_counter()
        field = gaussian_field(args.size)
        arrays[f"GRF {args.size}x{args.size}"] = (field, f"synthetic, made in {time.perf_counter() - t0:.1f} s")
    for name, (x, desc) in arrays.items():
        if args.only and not any(s in name for s in args.only):
            continue
        run_array(name, desc, x, args.bounds, args.level, args.repeat, {})


if __name__ == "__main__":
    main()
