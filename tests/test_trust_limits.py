"""Finite in, finite out; bounded resources; malformed files and specs give one-line errors.

Issue 16, bullets 5 and 6 and the malformed-safetensors part of bullet 8.
"""

import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nquant as nq
from nquant import limits
from nquant.codebooks import asq
from nquant.errors import InputError, SchemeError
from nquant.schemes import scheme_from_json

F32 = float(np.finfo(np.float32).max)
F16 = float(np.finfo(np.float16).max)

# ----------------------------------------------------------------------------- finite in, finite out

SCHEMES = [
    nq.Uniform(bits=3),
    nq.Uniform(bits=1),
    nq.Uniform(bits=2, zero_point="float"),
    nq.Uniform(bits=3, zero_point="float", rounding="ceil"),
    nq.Uniform(bits=8, zero_point="float", rounding="stochastic"),
    nq.Uniform(bits=8, symmetric=True),
    nq.Uniform(bits=4, symmetric=True, narrow_range=True, rounding="floor"),
    nq.Uniform(bits=4, symmetric=True, signed=False),
    nq.Uniform(bits=3, range="percentile", rounding="stochastic"),
    nq.Uniform(bits=3, range="percentile_exact", zero_point="float", rounding="floor"),
    nq.Uniform(bits=2, range="mse", rounding="nearest_away"),
    nq.Uniform(bits=3, range="mse", zero_point="float"),
    nq.Uniform(bits=3, range="mse", symmetric=True),
    nq.Uniform(bits=3, range=(-3e38, 3e38)),
    nq.Uniform(bits=3, range=(-F32, F32), zero_point="float", rounding="ceil"),
    nq.Uniform(bits=4, axis=0, range="mse"),
    nq.Uniform(bits=3, axis=-1, zero_point="float", rounding="stochastic"),
    nq.Uniform(bits=3, block_size=3),
    nq.Uniform(bits=8, block_size=4, zero_point="float", nan="propagate"),
    nq.Codebook(values=(-F32, -1.0, 0.0, 3e38)),
    nq.Codebook(values=(-1.0, 0.5), rounding="stochastic"),
    nq.NF4(block_size=2),
    nq.NF4(block_size=4, double_quant=True),
    nq.Blockwise(codebook=(-1.0, 0.0, 1.0), block_size=2, double_quant=True),
    nq.KMeansBlockwise(bits=2, block_size=2, min_size=0),
    nq.KMeansBlockwise(bits=2, block_size=2, min_size=0, double_quant=True, fit="exact"),
    nq.Outliers(base=nq.Uniform(bits=3), fraction=0.2),
    nq.Outliers(base=nq.NF4(block_size=2, double_quant=True), threshold=1e30),
    nq.ASQ(bits=2),
    nq.ASQ(bits=2, method="quiver_approx", m=64),
]


def _magnitudes(dtype):
    big = F16 if dtype == np.float16 else F32
    return [0.0, 1.0, 1e-40, 1e-45, 1e-8, 1e4, 6e4, big / 3, big / 2, big * 0.99, big]


@st.composite
def extreme_arrays(draw):
    """Finite arrays mixing values near the float32 (or float16) limits with tiny and normal ones."""
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    n = draw(st.integers(1, 12))
    mags = _magnitudes(dtype)
    vals = draw(st.lists(st.tuples(st.sampled_from(mags), st.sampled_from([-1.0, 1.0]),
                                   st.floats(0.5, 1.0)), min_size=n, max_size=n))
    x = np.array([m * s * (f if m < mags[-1] else 1.0) for m, s, f in vals], np.float64)
    if draw(st.booleans()):  # constant arrays
        x[:] = x[0]
    with np.errstate(over="ignore"):
        x = x.astype(dtype)
    x[~np.isfinite(x)] = np.finfo(dtype).max
    return x


def _roundtrip(x, scheme):
    if getattr(scheme, "axis", None) is not None:
        x = x.reshape(1, -1) if scheme.axis == -1 else x.reshape(-1, 1)
    return np.asarray(nq.dequantize(nq.quantize(x, scheme)))


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.to_json()[:90])
@given(x=extreme_arrays())
def test_finite_input_decodes_to_finite_output(scheme, x):
    y = _roundtrip(x, scheme)
    assert y.dtype == x.dtype
    assert np.isfinite(y).all(), (x, y)


@pytest.mark.parametrize("scheme", [nq.Uniform(bits=3), nq.Uniform(bits=3, zero_point="float"),
                                    nq.Uniform(bits=2, symmetric=True, range="percentile"),
                                    nq.Uniform(bits=1)])
def test_reproducer_near_float32_limit(scheme):
    x = np.float32([-3e38, 3e38, 0])
    y = nq.dequantize(nq.quantize(x, scheme))
    assert np.isfinite(y).all()
    # the grid ends inside the float32 range: every value within one step of its decoding
    step = 6e38 / ((1 << scheme.bits) - 1)
    assert np.abs(y.astype(np.float64) - x).max() <= step


def test_reproducer_exact_values():
    y = nq.dequantize(nq.quantize(np.float32([-3e38, 3e38, 0]), nq.Uniform(bits=3)))
    assert y[0] == np.float32(-F32) and y[2] == 0
    assert 2.5e38 < y[1] < 3e38


def test_dask_matches_numpy_near_limit():
    da = pytest.importorskip("dask.array")
    x = np.float32([-3e38, 3e38, 0, 1e38, -2e38, 5, 3.3e38, -1])
    s = nq.Uniform(bits=3, zero_point="float")
    y = nq.dequantize(nq.quantize(x, s))
    yd = nq.dequantize(nq.quantize(da.from_array(x, chunks=3), s)).compute()
    np.testing.assert_array_equal(y, yd)
    assert np.isfinite(y).all()


def test_float16_near_65504_stays_finite():
    x = np.float16([-65504, 65504, 0, 1])
    for s in [nq.Uniform(bits=3), nq.Uniform(bits=2, zero_point="float", rounding="ceil"),
              nq.NF4(block_size=2, double_quant=True)]:
        y = nq.dequantize(nq.quantize(x, s))
        assert y.dtype == np.float16 and np.isfinite(y).all()
    # a float32 array decoded to float16 clips to float16's range instead of overflowing
    q = nq.quantize(np.float32([1e6, -1e6, 0.5]), nq.Uniform(bits=8))
    y = nq.dequantize(q, dtype=np.float16)
    assert y[0] == F16 and y[1] == -F16


def test_constants_near_limit_stay_exact():
    for v in (np.float32(3e38), np.float32(-F32), np.float32(F32)):
        x = np.full(5, v, np.float32)
        for s in [nq.Uniform(), nq.Uniform(symmetric=True), nq.Uniform(rounding="ceil")]:
            np.testing.assert_array_equal(nq.dequantize(nq.quantize(x, s)), x)


@pytest.mark.parametrize("scheme", [nq.Uniform(bits=8), nq.Uniform(bits=4, zero_point="float"),
                                    nq.Uniform(range="percentile"), nq.NF4(block_size=2),
                                    nq.KMeansBlockwise(bits=2, block_size=2, min_size=0)])
def test_float64_beyond_float32_is_a_clear_error(scheme):
    x = np.float64([1e300, -1.0, 0.5, 2.0])
    with pytest.raises(InputError, match=r"x.* holds 9.9\d*e\+299, beyond the float32 range \(\|value\| <= "
                       r"3.4028235e\+38\)" if getattr(scheme, "range", None) == "percentile" else
                       r"^x holds 1e\+300, beyond the float32 range \(\|value\| <= 3.4028235e\+38\)"):
        nq.quantize(x, scheme)


def test_float64_beyond_float32_exact_schemes_keep_it():
    x = np.float64([1e300, -1.0, 0.5, -1e300])
    for s in [nq.ASQ(bits=2), nq.Outliers(base=nq.Uniform(bits=4), threshold=1e30)]:
        y = nq.dequantize(nq.quantize(x, s))
        assert np.isfinite(y).all() and y[0] == 1e300 and y[3] == -1e300


def test_float32_side_values_are_checked_in_schemes():
    with pytest.raises(SchemeError, match=r"values=.*within the float32 range"):
        nq.Codebook(values=(0.0, 1e39))
    with pytest.raises(SchemeError, match=r"range=.*within the float32 range"):
        nq.Uniform(range=(-1e39, 1.0))


def test_codebook_beyond_unit_times_absmax_is_refused():
    x = np.float32([-3e38, 3e38, 1, 0])
    for s in [nq.Blockwise(codebook=(-1.5, 0.0, 1.5), block_size=2),
              nq.Blockwise(codebook=(-1.5, 0.0, 1.5), block_size=2, double_quant=True)]:
        with pytest.raises(InputError, match=r"block absmax of 3e\+38: times the codebook's level 1.5"):
            nq.quantize(x, s)
    # the same codebook on data it can scale is fine
    wide = nq.Blockwise(codebook=(-1.5, 0.0, 1.5), block_size=2)
    y = nq.dequantize(nq.quantize(np.float32([-3.0, 3.0]), wide))
    np.testing.assert_array_equal(y, [-4.5, 4.5])


# ----------------------------------------------------------------------------- bounded resources


def test_asq_grid_m_is_bounded_before_allocation():
    with pytest.raises(SchemeError, match=r"^m=2147483648 is invalid: expected None or an integer in "
                                          r"1\.\.16777216$"):
        nq.ASQ(method="quiver_approx", m=2**31)
    with pytest.raises(SchemeError, match=r"^m=2147483648 is invalid: at most 16777216 is supported$"):
        asq.solve(np.arange(10.0), 4, method="quiver_approx", m=2**31)
    with pytest.raises(SchemeError, match=r"^s=1000000000 is invalid: at most 65536 is supported$"):
        asq.solve(np.arange(10.0), 10**9)


def test_numbers_of_levels_are_bounded():
    from nquant.codebooks.optimal1d import kmeans1d

    with pytest.raises(SchemeError, match=r"^k=1000000000 is invalid: at most 65536 is supported$"):
        kmeans1d(np.arange(5.0), 10**9)
    with pytest.raises(SchemeError, match=r"^n_clusters=1073741824 is invalid: expected an int in "
                                          r"\[1, 16777216\]$"):
        nq.KMeans(2**30)
    with pytest.raises(SchemeError, match=r"^values='<257 values>' is invalid: expected 1\.\.256 values$"):
        nq.Codebook(values=tuple(range(257)))
    with pytest.raises(SchemeError, match=r"^bins=33554432 is invalid: expected an integer in "
                                          r"16\.\.16777216$"):
        nq.KMeansBlockwise(bins=2**25)


def test_memory_checks_name_parameter_and_need(monkeypatch):
    monkeypatch.setattr(limits, "available_memory", lambda: 64 << 20)  # 64 MiB free
    # the grid of 2**20 cells with 256 levels needs about 1.2 GiB for its DP table
    with pytest.raises(SchemeError, match=r"^m=1048576 needs 1\.\d GiB of memory, more than the "
                                          r"32\.0 MiB available"):
        nq.quantize(np.float32([1, 2, 3]), nq.ASQ(bits=8, method="quiver_approx", m=2**20))
    # a per-channel histogram: 1000 channels x 2**20 bins of int64
    with pytest.raises(SchemeError, match=r"^bins=1048576 needs \d+\.\d GiB of memory, more than "
                                          r"the 32\.0 MiB"):
        nq.quantize(np.ones((1000, 2), np.float32), nq.Uniform(range="percentile", bins=2**20, axis=0))
    # small requests pass
    q = nq.quantize(np.float32([1, 2, 3]), nq.Uniform(range="percentile", percentile=(0, 100), bins=64))
    np.testing.assert_allclose(nq.dequantize(q), [1, 2, 3], atol=2 / 64)  # within one bin


def test_uniform_bins_limit():
    with pytest.raises(SchemeError, match=r"^bins=1000000000 is invalid: expected None or an integer "
                                          r"in 16\.\.16777216$"):
        nq.Uniform(range="percentile", bins=10**9)
    assert nq.Uniform(range="percentile", bins=limits.MAX_BINS).hist_bins == 1 << 24


def test_available_memory_is_positive():
    assert limits.available_memory() > 0


# ----------------------------------------------------------------------------- scheme JSON


@pytest.mark.parametrize("text, message", [
    ("[1,2]", r"^scheme=\[1, 2\] is invalid: expected a JSON object"),
    ("3", r"^scheme=3 is invalid: expected a JSON object"),
    ("null", r"^scheme=None is invalid"),
    ("{", r"^scheme JSON is invalid: Expecting property name"),
    ('{"type": [1]}', r"^type=\[1\] is not a known scheme type"),
    ('{"type": "uniform", "bits": "8"}', r"^bits='8' is invalid: expected an integer in 1\.\.16$"),
    ('{"type": "uniform", "format_version": [2]}', r"^format_version=\[2\] is newer than this nquant reads"),
    ('{"type": "outliers", "base": [1], "fraction": 0.1}', r"^base=\[1\] is invalid"),
    ('{"type": "codebook", "values": [[1]]}',
     r"^values=\(\[1\],\) is invalid: expected a sequence of numbers$"),
    ('{"type": "uniform", "axis": {}}', r"^axis=\{\} is invalid"),
    ('{"type": "asq", "method": "quiver_approx", "m": 2147483648}', r"^m=2147483648 is invalid"),
    ('{"type": "uniform", "rounding": [1]}', r"^rounding=\(1,\) is invalid"),
    ("[" * 100000 + "]" * 100000, r"^scheme JSON is invalid"),
])
def test_scheme_from_json_errors_are_one_line(text, message):
    with pytest.raises(SchemeError, match=message) as info:
        scheme_from_json(text)
    assert "\n" not in str(info.value)


def test_scheme_from_json_still_reads_schemes():
    for s in [nq.Uniform(bits=3, range=(-1.0, 2.0)), nq.NF4(double_quant=True),
              nq.ASQ(m=100, method="quiver_approx"), nq.Outliers(base=nq.Uniform(), threshold=3.0)]:
        assert scheme_from_json(s.to_json()) == s


# ----------------------------------------------------------------------------- malformed safetensors


def _st_file(path, header, data=b"", length=None, raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text) if length is None else length))
        f.write(text)
        f.write(data)
    return str(path)


GOOD = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]}}


def _with(name, **changes):
    h = json.loads(json.dumps(GOOD))
    h[name].update(changes)
    return h


MALFORMED = [
    ("negative offset", _with("a", data_offsets=[-8, 8]),
     r"tensor 'a' has data_offsets=\[-8, 8\], outside the data"),
    ("misordered offsets", _with("a", data_offsets=[16, 0]),
     r"tensor 'a' has data_offsets=\[16, 0\], outside"),
    ("beyond the file", _with("b", data_offsets=[16, 4096]),
     r"tensor 'b' has data_offsets=\[16, 4096\], outside the data section \[0, 24\]"),
    ("overlapping", _with("b", data_offsets=[8, 16], shape=[4]),
     r"tensors 'a' \[0, 16\] and 'b' \[8, 16\] overlap"),
    ("size mismatch", _with("a", shape=[2, 3]), r"tensor 'a' has data_offsets=\[0, 16\] \(16 bytes\), but "
     r"shape=\[2, 3\] of F32 needs 24 bytes"),
    ("negative shape", _with("a", shape=[-1, 128]),
     r"tensor 'a' has shape=\[-1, 128\], expected a list of integers"),
    ("float shape", _with("a", shape=[2.0, 2]),
     r"tensor 'a' has shape=\[2\.0, 2\], expected a list of integers"),
    ("bool shape", _with("a", shape=[True, 4]), r"tensor 'a' has shape=\[true|True"),
    ("unknown dtype", _with("a", dtype="F128"), r"tensor 'a' has unknown dtype='F128'"),
    ("non-string dtype", _with("a", dtype=3), r"tensor 'a' has unknown dtype=3"),
    ("entry not an object", {"a": [1, 2]}, r"tensor 'a' has entry \[1, 2\], expected an object"),
    ("offsets not a pair", _with("a", data_offsets=[0]),
     r"tensor 'a' has data_offsets=\[0\], expected \[begin, end\]"),
    ("header is a list", [1, 2], r"its header is a JSON list, expected an object"),
    ("metadata not an object", {**GOOD, "__metadata__": [1]}, r"__metadata__ is a JSON list"),
]


@pytest.mark.parametrize("what, header, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_safetensors_headers(tmp_path, what, header, message):
    from nquant.safetensors_io import read_tensors

    path = _st_file(tmp_path / "m.safetensors", header, b"\0" * 24)
    prefix = r"^path='.*m\.safetensors' is not a valid \.safetensors file: "
    with pytest.raises(InputError, match=prefix + message) as info:
        read_tensors(path)
    assert "\n" not in str(info.value)


def test_safetensors_header_length_and_truncation(tmp_path):
    from nquant.safetensors_io import read_header, read_tensors

    huge = _st_file(tmp_path / "huge.safetensors", GOOD, b"\0" * 24, length=2**36)
    with pytest.raises(InputError, match=r"header length 68719476736 exceeds the limit of 100000000 bytes"):
        read_header(huge)
    past = _st_file(tmp_path / "past.safetensors", GOOD, b"\0" * 24, length=10**6)
    with pytest.raises(InputError, match=r"header length 1000000 runs past the end of the file "
                                         r"\(\d+ bytes\)"):
        read_header(past)
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02\x03")
    with pytest.raises(InputError, match=r"3 bytes, fewer than the 8 of the header length"):
        read_header(str(short))
    bad_json = _st_file(tmp_path / "json.safetensors", None, raw_header=b'{"a": ')
    with pytest.raises(InputError, match=r"its header is not JSON"):
        read_header(bad_json)
    binary = _st_file(tmp_path / "bin.safetensors", None, raw_header=b"\xff\xfe\x00")
    with pytest.raises(InputError, match=r"its header is not JSON"):
        read_header(binary)
    # data truncated after a valid header: the offsets run beyond the file
    cut = _st_file(tmp_path / "cut.safetensors", GOOD, b"\0" * 20)
    with pytest.raises(InputError, match=r"tensor 'b' has data_offsets=\[16, 24\], outside the data "
                                         r"section \[0, 20\]"):
        read_tensors(cut)


def test_valid_safetensors_still_read(tmp_path):
    from nquant.safetensors_io import read_tensors, write_tensors

    path = str(tmp_path / "ok.safetensors")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_tensors(path, {"w": (a, "F32"), "e": (np.zeros((0, 4), np.float32), "F16"),
                         "s": (np.float32(2), "F32")})
    got = read_tensors(path)
    np.testing.assert_array_equal(got["w"][0], a)
    assert got["e"][0].shape == (0, 4) and got["s"][0].shape == ()
    empty = str(tmp_path / "empty.safetensors")
    write_tensors(empty, {})
    assert read_tensors(empty) == {}


# ----------------------------------------------------------------------------- workflows

WORKFLOW = """
[workflow]
name = "t"
output = "{output}"
[sources.s]
path = "{source}"
generate = {{kind = "{kind}", shape = {shape}{chunks}}}
[[jobs]]
name = "j"
source = "s"
scheme = "int8"
"""


def _workflow(tmp_path, vars_text="", output="out", source="s.zarr", kind="weights", shape="[8, 8]",
              chunks="", extra=""):
    from nquant.interfaces.workflow import load

    text = vars_text + WORKFLOW.format(output=output, source=source, kind=kind, shape=shape,
                                       chunks=f", chunks = {chunks}" if chunks else "") + extra
    path = tmp_path / "w.toml"
    path.write_text(text)
    return lambda **kw: load(str(path), **kw)


def _workflow_error(load, message, **kw):
    from nquant.interfaces.workflow import WorkflowError

    with pytest.raises(WorkflowError, match=message) as info:
        load(**kw)
    assert "\n" not in str(info.value)


def test_variable_cycles_are_reported(tmp_path):
    load = _workflow(tmp_path, '[vars]\na = "${b}"\nb = "${a}"\n', output="${a}")
    _workflow_error(load, r"^vars\.a: variable cycle a -> b -> a$")
    load = _workflow(tmp_path, '[vars]\na = "x${a}"\n')
    _workflow_error(load, r"^vars\.a: variable cycle a -> a$")
    load = _workflow(tmp_path, '[vars]\na = "${c}"\nb = "${a}"\nc = "${b}/x"\n')
    _workflow_error(load, r"^vars\.a: variable cycle a -> c -> b -> a$")


def test_variable_expansion_is_bounded(tmp_path):
    doubling = "".join(f'v{i + 1} = "${{v{i}}}${{v{i}}}"\n' for i in range(60))
    load = _workflow(tmp_path, '[vars]\nv0 = "0123456789"\n' + doubling)
    _workflow_error(load, r"^vars\.v13: expands to more than 65536 characters")


def test_unresolved_and_unknown_references(tmp_path):
    _workflow_error(_workflow(tmp_path, '[vars]\na = "${zz}"\n'), r"^vars\.a: unknown variable \$\{zz\}$")
    _workflow_error(_workflow(tmp_path, output="${nope}"), r"^workflow\.output: unknown variable \$\{nope\}$")
    _workflow_error(_workflow(tmp_path, '[vars]\na = "$"\nb = "{a}"\nc = "${a}${b}"\n'),
                    r"^vars\.c: \$\{a\} is left unresolved after substitution$")


def test_variables_resolve_in_any_order_and_overrides(tmp_path):
    load = _workflow(tmp_path, '[vars]\np = "${root}/x"\nroot = "r"\n', output="${p}/out")
    assert load()["workflow"]["output"] == "r/x/out"
    assert load(overrides={"root": "q"})["workflow"]["output"] == "q/x/out"
    _workflow_error(load, r"^vars\.p: variable cycle p -> root -> p$", overrides={"root": "${p}"})


def test_deep_nesting_is_one_line(tmp_path):
    from nquant.interfaces.workflow import load

    for depth, message in [(5000, r"nests tables or arrays too deeply \(at most 32 levels\)"),
                           (40, r"^deep(\[0\]){32}: nested more than 32 levels deep$")]:
        path = tmp_path / "deep.toml"
        path.write_text("deep = " + "[" * depth + "]" * depth + "\n")
        _workflow_error(lambda: load(str(path)), message)


def test_generated_shapes_are_bounded(tmp_path, monkeypatch):
    _workflow_error(_workflow(tmp_path, shape="[100000000, 100000000]"),
                    r"^sources\.s\.generate\.shape=\[100000000, 100000000\] is invalid: "
                    r"40000000000000000 bytes, more than the 1099511627776 bytes a generated array may hold$")
    monkeypatch.setattr(limits, "available_memory", lambda: 1 << 30)
    # one 4 GB chunk (drawn in float64: 20 bytes a value) cannot be made in 1 GiB; small chunks can
    _workflow_error(_workflow(tmp_path, shape="[100000, 10000]"),
                    r"^sources\.s\.generate\.shape=\[100000, 10000\] needs 18\.6 GiB of memory, more "
                    r"than the 512\.0 MiB available")
    assert _workflow(tmp_path, shape="[100000, 10000]", chunks="[1000, 1000]")()["sources"]["s"]["generate"]
    _workflow_error(_workflow(tmp_path, source="m.safetensors", kind="model", shape="[100000, 10000]"),
                    r"^sources\.s\.generate\.shape=\[100000, 10000\] needs \d+\.\d GiB of memory")
    from nquant.interfaces.sources import check_generate

    with pytest.raises(InputError, match=r"^generate\.shape=\[100000, 10000\] needs"):
        check_generate({"shape": [100000, 10000], "chunks": [1000, 1000]}, "npy")
