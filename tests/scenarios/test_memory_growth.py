"""Memory growth, in the manner of Triton's memory-growth tests: a fixed
load (v1 HTTP, v2 HTTP and v1 gRPC infers from a few clients) for a fixed
time, the server's RSS sampled (with its child processes': front-end
workers, stubs; shared memory aside, see rss_bytes), and the check fails when RSS grows by more than
GROWTH_BOUND_MIB between the start and the end of the run.

The control case proves the check can fail: a server started with the
test-only PYSERVER_TEST_LEAK_BYTES_PER_REQUEST (off unless set; see
pyserver/http/connection.py) keeps that many bytes per HTTP request, and
the same check must report growth above the bound.

PYSERVER_MEMORY_GROWTH_SECS lengthens the run (a soak) outside CI.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import (HOST, ServerProcess, grpc_infer_request, grpc_stub, request_header)

LOAD_SECS = float(os.environ.get("PYSERVER_MEMORY_GROWTH_SECS", "15"))
WARMUP_SECS = 3.0
SAMPLE_SECS = 0.25
GROWTH_BOUND_MIB = 24.0
LEAK_BYTES = 16 * 1024
CLIENTS = 3

ONE = np.arange(16, dtype=np.float32).reshape(1, 16)
V1_HEADER = request_header(1, ["INPUT0", "INPUT1"], ["OUTPUT0"])
V2_BODY = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": ONE.ravel().tolist()},
    {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": ONE.ravel().tolist()}]})


def rss_bytes(pid: int) -> int:
    """Resident anonymous and file-backed memory, without shared memory
    (RssShmem): the front-end workers' hop rings are memfd regions of a fixed
    size whose pages become resident as the rings first fill (in both
    processes that map them), which is not growth."""
    sizes = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                sizes[key] = int(value.split()[0]) * 1024
    if len(sizes) != 2:
        raise AssertionError("no RssAnon/RssFile")
    return sizes["RssAnon"] + sizes["RssFile"]


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(child) for child in f.read().split()]
        except OSError:
            pass  # gone meanwhile
    return found


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for member in _tree(pid):
        try:
            total += rss_bytes(member)
        except OSError:
            pass  # gone meanwhile
    return total


@dataclass
class Growth:
    start_mib: float
    end_mib: float
    requests: int
    errors: int

    @property
    def mib(self) -> float:
        return self.end_mib - self.start_mib

    def within(self, bound_mib: float) -> bool:
        return self.mib <= bound_mib


def _http_client(port: int, stop: threading.Event, counts: list) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=20)
    body = ONE.tobytes() * 2
    i = 0
    while not stop.is_set():
        if i % 2 == 0:
            conn.request("POST", "/api/infer/simple?format=binary", body=body,
                         headers={"NV-InferRequest": V1_HEADER})
        else:
            conn.request("POST", "/v2/models/simple/infer", body=V2_BODY,
                         headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        counts[0 if response.status == 200 else 1] += 1
        i += 1
    conn.close()


def _grpc_client(target: str, stop: threading.Event, counts: list) -> None:
    channel, stub = grpc_stub(target)
    request = grpc_infer_request("simple", 1, {"INPUT0": ONE, "INPUT1": ONE}, ["OUTPUT0"])
    while not stop.is_set():
        stub.Infer(request, timeout=20)
        counts[0] += 1
    channel.close()


def measure_growth(srv: ServerProcess, secs: float = LOAD_SECS) -> Growth:
    """RSS growth of ``srv`` under the fixed load: the median of the last
    fifth of the samples minus the median of the first fifth, after a warm-up."""
    stop = threading.Event()
    counts = [0, 0]
    threads = [threading.Thread(target=_http_client, args=(srv.port, stop, counts))
               for _ in range(CLIENTS)]
    threads.append(threading.Thread(target=_grpc_client, args=(srv.grpc_target, stop, counts)))
    for thread in threads:
        thread.start()
    try:
        time.sleep(WARMUP_SECS)
        samples = []
        end = time.monotonic() + secs
        while time.monotonic() < end:
            samples.append(tree_rss_bytes(srv.proc.pid))
            time.sleep(SAMPLE_SECS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    fifth = max(1, len(samples) // 5)
    mib = 1024 * 1024
    return Growth(statistics.median(samples[:fifth]) / mib,
                  statistics.median(samples[-fifth:]) / mib, counts[0], counts[1])


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    srv = ServerProcess(example_store, workdir=tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def leaking_server(example_store, tmp_path_factory):
    os.environ["PYSERVER_TEST_LEAK_BYTES_PER_REQUEST"] = str(LEAK_BYTES)
    try:
        srv = ServerProcess(example_store, workdir=tmp_path_factory.mktemp("leaking"))
    finally:
        del os.environ["PYSERVER_TEST_LEAK_BYTES_PER_REQUEST"]
    yield srv
    assert srv.stop() == 0, srv.log_text()


def test_rss_stays_within_the_bound_under_a_fixed_load(server):
    growth = measure_growth(server)
    print(f"memory growth (healthy): {growth} {growth.mib:.1f} MiB")
    assert growth.requests > 100 and growth.errors == 0, growth
    assert growth.within(GROWTH_BOUND_MIB), growth


def test_the_check_fails_for_a_server_that_leaks(leaking_server):
    growth = measure_growth(leaking_server)
    print(f"memory growth (leaking control): {growth} {growth.mib:.1f} MiB")
    assert growth.requests > 100 and growth.errors == 0, growth
    assert not growth.within(GROWTH_BOUND_MIB), growth
