"""Compare nquant with the error-bounded scientific compressors at equal maximum absolute error.

One run on the same arrays: for each array and each bound ``e`` (a fraction of the data range),
every method reports the achieved ``max |x - x_hat|`` (flagged when above ``e``), stored bytes and
the ratio against the float32 bytes, encode and decode throughput (MB/s of float32 input, fastest of
``--repeat`` timed calls after one warm-up call: on a shared machine the fastest call is the one
least slowed by other processes) and an error histogram (percent of ``|err|`` in
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
- ``nquant``: :func:`nquant_encode` (``Uniform(abs_error=e)``: 16-bit codes at most, a step just under
  ``2 e`` proved to keep the bound), the codes through
  nquant's lossless stage (``nquant.lossless.encode_chunk``, what the Zarr codec runs per chunk:
  ``adaptive-zstd`` the default (Lorenzo or no prediction per chunk), ``lorenzo-zstd``, ``delta-zstd``,
  ``lorenzo-pcodec`` the smallest), side arrays counted;
  ``nquant save()``: the whole Zarr group written by ``nq.save`` (metadata and checksums included) and
  read back by ``nq.open``; ``lorenzo H0``: the order-0 entropy of the Lorenzo residuals (the bytes an
  ideal Huffman/ANS coder of them would need).
Data: matplotlib's sample arrays (two elevation grids, an MRI slice, four EEG channels) as float32
and a synthetic ``--size`` x ``--size`` Gaussian random field (power-law spectrum plus a smooth
trend) for throughput.
"""

import argparse
import gzip
import importlib.metadata
import time

import numpy as np
import zarr

import nquant as nq
from nquant import lossless
from nquant.containers import QuantizedArray
from nquant.kernels import predict
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

def best_time(fn, repeat):
    """Fewest seconds of ``repeat`` calls after one warm-up call, and the warm-up's result."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


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
    """Bytes of a payload: a list of bytes, arrays, dtype strings (not counted) and store dicts."""
    total = 0
    for p in payload:
        if isinstance(p, dict):  # a zarr memory store: every value it holds
            total += sum(len(v.to_bytes()) for v in p.values())
        elif isinstance(p, (bytes, bytearray)):
            total += len(p)
        elif not isinstance(p, str):
            total += np.asarray(p).nbytes
    return total


# -- nquant ---------------------------------------------------------------------------------------
# Codes go through nquant's lossless stage (nquant.lossless: the function the Zarr codec runs on each
# chunk), as one chunk; "nquant save()" rows write the real group (nq.save into a memory store, every
# array, metadata and checksums included) and read it back with nq.open.

COMPRESSIONS = ["adaptive-zstd", "lorenzo-zstd", "delta-zstd", "lorenzo-pcodec"]


def nquant_scheme(x, e):
    """The scheme for the bound ``e``: ``(Uniform(abs_error=e), note)``."""
    return nq.Uniform(abs_error=e), "abs_error"


def nquant_encode(x, e):
    """Quantize ``x`` (float32 ndarray) so that ``max |x - x_hat| <= e``: (QuantizedArray or None, note);
    None where the bound needs more than 16-bit codes (the one-line error is the note)."""
    scheme, note = nquant_scheme(x, e)
    try:
        return nq.quantize(x, scheme), note
    except nq.errors.InputError as err:
        return None, str(err)


def _side_bytes(q):
    return [np.ascontiguousarray(a) for a in q.side.values()]


def _rebuild(q, codes_packed):
    return QuantizedArray(q.scheme, q.shape, q.dtype, codes_packed, q.bits, dict(q.side))


def _codec_rows(prefix, setting, x, encode_codes, decode_codes):
    """Rows for each lossless stage of ``nquant.lossless`` on the codes.

    ``encode_codes() -> (codes ndarray (uint8/uint16, shape of x), side list)`` runs the quantizer;
    ``decode_codes(codes, side) -> x_hat`` runs its decoder.
    """
    rows = []
    for name in COMPRESSIONS:
        label = f"{prefix} {name}"
        if "pcodec" in name and pcodec is None:
            rows.append((label, None, "pcodec: " + MISSING["pcodec"]))
            continue
        codec = lossless.codec_for(name)

        def enc(codec=codec):
            codes, side = encode_codes()
            return [lossless.encode_chunk(codes, codec.predictor, codec.coder, codec.level, codec.axis),
                    codes.dtype.str] + side

        def dec(p, codec=codec):
            codes = lossless.decode_chunk(p[0], np.dtype(p[1]), x.shape, codec.predictor, codec.coder,
                                          codec.axis)
            return decode_codes(codes, p[2:])

        rows.append((label, setting, enc, dec))
    rows.append((f"{prefix} lorenzo H0", setting, encode_codes))
    return rows


def entropy_bytes(codes):
    """Zeroth-order entropy of the zigzag Lorenzo residuals in bytes: what an ideal order-0 coder
    (Huffman/ANS) of them needs."""
    shape3, left, up = predict.view3(codes.shape, "lorenzo")
    planes = np.empty((codes.dtype.itemsize, codes.size), np.uint8)
    predict.encode(np.ascontiguousarray(codes).reshape(shape3), left, up, planes)
    z = planes[0].astype(np.uint32)
    if planes.shape[0] == 2:
        z |= planes[1].astype(np.uint32) << 8
    counts = np.bincount(z)
    counts = counts[counts > 0]
    return int(np.ceil(-(counts * np.log2(counts / counts.sum())).sum() / 8))


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


def m_nquant(x, e, level):
    q, note = nquant_encode(x, e)
    if q is None:
        return [("nquant", None, note)]

    def encode_codes():
        qq, _ = nquant_encode(x, e)
        return qq.codes_unpacked, _side_bytes(qq)

    def decode_codes(codes, side):
        return nq.dequantize(_rebuild(q, pack_codes(codes, q.bits)))

    # the payload's side arrays are counted in bytes; the decoder reads the (identical) ones of q
    rows = _codec_rows("nquant", note, x, encode_codes, decode_codes)

    def enc_store():
        qq, _ = nquant_encode(x, e)
        d = {}
        nq.save(qq, zarr.storage.MemoryStore(d))  # compression="auto": adaptive-zstd
        return [d]

    def dec_store(p):
        return np.asarray(nq.dequantize(nq.open(zarr.storage.MemoryStore(p[0]))))

    rows.append(("nquant save()", note + ", the Zarr group", enc_store, dec_store))
    return rows


METHODS = [m_quantize, m_bitround, m_zfp, m_sz3, m_pcodec, m_nquant]
PEERS_BOUNDED = ("Quantize+zstd", "BitRound+zstd", "ZFP", "SZ3")


# -- run ------------------------------------------------------------------------------------------

def measure(x, e, enc, dec, repeat):
    """Bytes, achieved error, histogram and throughputs (MB/s of float32 input) of one method."""
    mb = x.astype(np.float32).nbytes / 1e6
    t_enc, payload = best_time(enc, repeat)
    t_dec, x_hat = best_time(lambda: dec(payload), repeat)
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
                    h = entropy_bytes(codes) + nbytes(side)
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
    """nquant's smallest row against the peers' bytes, its encode throughput and the fastest nquant row's
    against the fastest error-bounded peer."""
    ok = {k: v for k, v in results.items() if v["err"] <= e}
    peers = {k: v for k, v in ok.items() if k in PEERS_BOUNDED}
    for prefix, who in (("nquant", "nquant"),):
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
    ap.add_argument("--level", type=int, default=3, help="zstd level of the Quantize and BitRound rows")
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
