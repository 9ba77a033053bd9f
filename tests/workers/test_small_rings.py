"""The hop with rings of a few records (PYSERVER_TEST_HOP_RING_BYTES, a
test-only setting): under a burst from many clients, every request is
answered in full and right, whether records fit or wait for room; and an
idle hop costs no CPU (no ring answers a ring that says nothing new)."""

from __future__ import annotations

import http.client
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import HOST, ServerProcess, infer, nv_infer_response, request_header, split_infer_body

RING_BYTES = 2048  # five records: a burst of requests or answers fills it
CLIENTS = 24
REQUESTS = 2400
A = np.arange(16, dtype=np.float32)
HEADER = request_header(1, ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"])


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    os.environ["PYSERVER_TEST_HOP_RING_BYTES"] = str(RING_BYTES)
    try:
        srv = ServerProcess(example_store, "--frontend-workers=2",
                            workdir=tmp_path_factory.mktemp("full-rings"))
    finally:
        del os.environ["PYSERVER_TEST_HOP_RING_BYTES"]
    yield srv
    assert srv.stop() == 0, srv.log_text()


def _infer(port: int, i: int, connection: http.client.HTTPConnection | None = None) -> None:
    a = A + i
    status, headers, body = infer(port, "simple", HEADER, a.tobytes() + A.tobytes(),
                                  connection=connection)
    assert status == 200, (status, headers, body)
    raw, _ = split_infer_body(body, nv_infer_response(headers))
    np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT0"], np.float32), a + A)
    np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT1"], np.float32), a - A)


def _client(port: int, first: int) -> None:
    """REQUESTS // CLIENTS requests on one keep-alive connection."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        for i in range(first, first + REQUESTS // CLIENTS):
            _infer(port, i, connection)
    finally:
        connection.close()


def test_every_request_is_answered_through_small_rings(server):
    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(_client, server.port, n * REQUESTS // CLIENTS)
                       for n in range(CLIENTS)]:
            future.result(timeout=60)


def _cpu_ticks(pid: int) -> int:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_an_idle_hop_costs_no_cpu(server):
    _infer(server.port, 0)
    time.sleep(0.3)
    before = _cpu_ticks(server.proc.pid)
    time.sleep(1.0)
    assert _cpu_ticks(server.proc.pid) - before <= 5  # ticks of 10 ms: a spin shows at once
