"""A server with two front-end worker processes: both serve the shared
ports, one engine sees every request (statistics and /metrics count them
all, once), a worker killed mid-run is replaced while the other keeps
serving, and the engine stops its workers on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest import ServerProcess, grpc_infer_request, grpc_stub, wait_until

REQUESTS = 24


def _workers(server: ServerProcess) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True)
    return sorted(int(pid) for pid in out.stdout.split())


A = np.arange(16, dtype=np.float32).reshape(1, 16)


def _http(server: ServerProcess) -> np.ndarray:
    """OUTPUT0 of simple(A, A) over v2 HTTP, on a new connection."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    inputs = [httpclient.InferInput(name, [1, 16], "FP32") for name in ("INPUT0", "INPUT1")]
    for given in inputs:
        given.set_data_from_numpy(A)
    result = client.infer("simple", inputs).as_numpy("OUTPUT0")
    client.close()
    return result


def _grpc(server: ServerProcess) -> np.ndarray:
    """OUTPUT0 of simple(A, A) over v1 gRPC, on a new channel."""
    channel, stub = grpc_stub(server.grpc_target)
    with channel:
        reply = stub.Infer(grpc_infer_request("simple", 1, {"INPUT0": A, "INPUT1": A},
                                              ["OUTPUT0"]), timeout=10)
    assert reply.request_status.code == 1, reply.request_status
    return np.frombuffer(reply.raw_output[0], np.float32).reshape(1, 16)


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    srv = ServerProcess(example_store, "--frontend-workers=2",
                        workdir=tmp_path_factory.mktemp("workers"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def test_two_workers_run_beside_the_engine(server):
    assert len(_workers(server)) == 2


def test_every_request_reaches_the_one_engine_and_is_counted_once(server):
    before = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}") \
        .get_inference_statistics("simple")["model_stats"][0]["inference_count"]
    expected = (np.arange(16, dtype=np.float32) * 2).reshape(1, 16)
    for i in range(REQUESTS):  # a new connection each: the kernel spreads them
        np.testing.assert_array_equal(_http(server) if i % 2 else _grpc(server), expected)
    stats = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}") \
        .get_inference_statistics("simple")["model_stats"][0]
    assert stats["inference_count"] == before + REQUESTS
    metrics = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    line = next(l for l in metrics.splitlines()
                if l.startswith("nv_inference_request_success{") and 'model="simple"' in l)
    assert float(line.rsplit(" ", 1)[1]) == stats["inference_count"]


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(server):
    first, second = _workers(server)
    os.kill(first, signal.SIGKILL)
    for _ in range(6):  # whichever worker a connection lands on, it is answered
        wait_until(lambda: _safe(lambda: _http(server)), timeout=15)
    wait_until(lambda: len(_workers(server)) == 2 and first not in _workers(server), timeout=15)
    assert second in _workers(server)
    wait_until(lambda: "front-end worker 0 restarted" in server.log_text()
               or "front-end worker 1 restarted" in server.log_text(), timeout=15)
    np.testing.assert_array_equal(_grpc(server)[0, :2], [0, 2])


def _safe(work) -> bool:
    try:
        work()
        return True
    except Exception:
        return False


def test_sigterm_stops_the_workers_with_the_engine(example_store, tmp_path):
    srv = ServerProcess(example_store, "--frontend-workers=2", workdir=tmp_path)
    workers = _workers(srv)
    assert srv.stop() == 0, srv.log_text()
    wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers), timeout=10)
