"""A process-based ``distributed`` cluster: chunk invariance, ``quantize_zarr(..., client=)``, a
worker killed in the middle of a job, and the same job on an S3-compatible server (moto).

One ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` serves the whole module.
Chunk functions defined here travel to the workers by value (``cloudpickle``), so the
workers need not import this test module.
"""

import logging
import os
import signal
import sys
import threading
import time
import uuid

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import nquant as nq
from nquant.errors import StoreError
from tests.helpers import assert_same_quantized
from tests.strategies import chunkings

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

pytestmark = pytest.mark.cluster


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                distributed.Client(cluster) as c:
            yield c
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def two_workers(client):
    """The cluster's client, with both workers up (a killed worker is restarted by its nanny)."""
    client.wait_for_workers(2, timeout=60)
    return client


# ----------------------------------------------------------------------------- helpers


def data(seed, shape, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 2 - 0.3).astype(dtype)


def slow_chunk(block, delay):
    time.sleep(delay)
    return block


def failing_chunk(block, fail_rows, delay, block_info=None):
    """Fails for the chunks whose row-chunk index is in ``fail_rows`` (after ``delay`` seconds)."""
    if block_info[0]["chunk-location"][0] in fail_rows:
        time.sleep(delay)
        raise RuntimeError(f"simulated read failure of chunk {block_info[0]['chunk-location']}")
    return block


def worker_pids(client):
    return client.run(os.getpid)


SCHEMES = [
    pytest.param(nq.Uniform(bits=8), id="int8"),
    pytest.param(nq.Uniform(bits=4, symmetric=True, axis=0), id="axis0"),
    pytest.param(nq.Uniform(bits=3, axis=1, range="mse", rounding="stochastic", bins=128), id="middle_mse"),
    pytest.param(nq.Uniform(bits=5, axis=-1, range="percentile", bins=256), id="last_percentile"),
    pytest.param(nq.Uniform(bits=4, block_size=16, rounding="stochastic"), id="blocks"),
    pytest.param(nq.NF4(block_size=16, double_quant=True), id="nf4_double_quant"),
]


# ----------------------------------------------------------------------------- chunk invariance


@pytest.mark.parametrize("scheme", SCHEMES)
def test_chunk_invariance_on_a_process_cluster(two_workers, scheme):
    x = data(1, (13, 6, 10))
    x_dask = da.from_array(x, chunks=((5, 3, 5), (4, 2), (8, 2)))
    with dask.config.set(scheduler=two_workers):
        q = nq.quantize(x_dask, scheme)
        assert_same_quantized(nq.quantize(x, scheme), q)


@settings(max_examples=5)
@given(draw=st.data())
def test_chunk_invariance_hypothesis_chunkings_on_a_process_cluster(client, draw):
    client.wait_for_workers(2, timeout=60)
    scheme = draw.draw(st.sampled_from([p.values[0] for p in SCHEMES]), label="scheme")
    x = data(6, (9, 6, 8))
    chunks = draw.draw(chunkings(x.shape, max_chunks=3), label="chunks")
    with dask.config.set(scheduler=client):
        assert_same_quantized(nq.quantize(x, scheme), nq.quantize(da.from_array(x, chunks=chunks), scheme))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantize_zarr_with_client(two_workers, tmp_path, scheme):
    x = data(2, (24, 6, 10))
    z = zarr.create_array(str(tmp_path / "src.zarr"), shape=x.shape, chunks=(5, 6, 10), dtype=x.dtype)
    z[...] = x
    q = nq.quantize_zarr(str(tmp_path / "src.zarr"), str(tmp_path / "out.zarr"), scheme, client=two_workers)
    assert_same_quantized(nq.quantize(x, scheme), q)
    assert sorted(os.listdir(tmp_path)) == ["out.zarr", "src.zarr"]


# ----------------------------------------------------------------------------- a worker dies


def test_worker_killed_mid_job(two_workers, tmp_path):
    client = two_workers
    x = data(3, (32, 16))
    scheme = nq.Uniform(bits=3, axis=-1, rounding="stochastic", seed=11)
    chunks = (2, 16)
    nblocks = 16
    z = zarr.create_array(str(tmp_path / "src.zarr"), shape=x.shape, chunks=chunks, dtype=x.dtype)
    z[...] = x
    src = da.from_zarr(z).map_blocks(slow_chunk, 0.15, dtype=x.dtype)
    dst = tmp_path / "out.zarr"
    partial = str(dst) + ".partial"
    pids = worker_pids(client)
    victim = min(pids.values())
    killed = {}

    def kill_when_some_chunks_are_done():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                done = zarr.open_group(partial, mode="r")["chunk_stats"][..., -1] == 1
            except Exception:  # not created yet, or being written
                time.sleep(0.02)
                continue
            if done.sum() >= 2:
                killed["done_before"] = int(done.sum())
                os.kill(victim, signal.SIGKILL)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_some_chunks_are_done, daemon=True)
    killer.start()
    q = nq.quantize_zarr(src, str(dst), scheme, client=client)
    killer.join(timeout=60)

    assert "done_before" in killed, "the worker was never killed"
    assert killed["done_before"] < nblocks, "the job had finished before the worker was killed"
    assert_same_quantized(nq.quantize(x, scheme), q)
    client.wait_for_workers(2, timeout=60)
    assert victim not in worker_pids(client).values()  # the nanny started a new worker process


# ----------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback and the fsspec storage options to reach it."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "us-east-1"}}
    finally:
        server.stop()


@pytest.fixture
def bucket(s3):
    boto3 = pytest.importorskip("boto3")  # installed with moto

    name = f"nquant-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3["endpoint_url"], aws_access_key_id=s3["key"],
                 aws_secret_access_key=s3["secret"], region_name="us-east-1").create_bucket(Bucket=name)
    return name


def test_quantize_zarr_on_s3(two_workers, s3, bucket):
    client = two_workers
    x = data(4, (24, 16))
    scheme = nq.Uniform(bits=4, axis=0, range="percentile", bins=256)
    src = f"s3://{bucket}/src.zarr"
    dst = f"s3://{bucket}/out.zarr"
    z = zarr.create_array(src, shape=x.shape, chunks=(4, 16), dtype=x.dtype, storage_options=s3)
    z[...] = x

    q = nq.quantize_zarr(src, dst, scheme, client=client, storage_options=s3)
    assert_same_quantized(nq.quantize(x, scheme), q)
    assert_same_quantized(nq.quantize(x, scheme), nq.open(dst, storage_options=s3))
    meta = zarr.open_group(dst, mode="r", storage_options=s3).attrs.asdict()["nquant"]
    assert meta["complete"] is True

    # a rerun of the completed job reads and writes nothing (a source failing on every chunk)
    failing = da.from_array(x, chunks=(4, 16)).map_blocks(failing_chunk, set(range(6)), 0.0, dtype=x.dtype)
    assert_same_quantized(nq.quantize(x, scheme), nq.quantize_zarr(failing, dst, scheme, client=client,
                                                         storage_options=s3))

    # save / open round trip through an s3:// URL
    nq.save(nq.quantize(x, nq.Uniform(bits=2, block_size=8)), f"s3://{bucket}/saved.zarr", storage_options=s3)
    assert_same_quantized(nq.quantize(x, nq.Uniform(bits=2, block_size=8)),
                nq.open(f"s3://{bucket}/saved.zarr", storage_options=s3))


def test_incomplete_group_on_s3_is_refused_then_resumed(two_workers, s3, bucket):
    client = two_workers
    x = data(5, (24, 16))
    scheme = nq.Uniform(bits=4, block_size=16, rounding="stochastic")
    dst = f"s3://{bucket}/part.zarr"
    # on an object store there is no rename: the group is written in place, complete: true last
    failing = da.from_array(x, chunks=(4, 16)).map_blocks(failing_chunk, {5}, 0.5, dtype=x.dtype)
    with pytest.raises(RuntimeError, match="simulated read failure"):
        nq.quantize_zarr(failing, dst, scheme, client=client, storage_options=s3)
    meta = zarr.open_group(dst, mode="r", storage_options=s3).attrs.asdict()["nquant"]
    assert meta["complete"] is False
    with pytest.raises(StoreError, match=r"incomplete"):
        nq.open(dst, storage_options=s3)

    q = nq.quantize_zarr(da.from_array(x, chunks=(4, 16)), dst, scheme, client=client, storage_options=s3)
    assert_same_quantized(nq.quantize(x, scheme), q)
    assert zarr.open_group(dst, mode="r", storage_options=s3).attrs.asdict()["nquant"]["complete"] is True
    assert_same_quantized(nq.quantize(x, scheme), nq.open(dst, storage_options=s3))
