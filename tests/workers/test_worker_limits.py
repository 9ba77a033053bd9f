"""With front-end workers, --http-max-connections and
--http-body-memory-budget bound the whole server, not each worker: the
workers count what they hold in one shared tally."""

from __future__ import annotations

import socket
import time

import pytest
from conftest import HOST, ServerProcess, raw_request, read_response, request_header

MAX_CONNECTIONS = 4
BUDGET = 200_000
DECLARED = 120_000


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    srv = ServerProcess(example_store, "--frontend-workers=2",
                        f"--http-max-connections={MAX_CONNECTIONS}",
                        f"--http-body-memory-budget={BUDGET}",
                        f"--http-max-input-size={DECLARED + 1000}",
                        workdir=tmp_path_factory.mktemp("worker-limits"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def _opened(port: int, count: int) -> list[socket.socket]:
    """``count`` connections, one at a time (each accepted or refused
    before the next arrives), spread over the workers by the kernel."""
    sockets = []
    for _ in range(count):
        sockets.append(socket.create_connection((HOST, port), timeout=10))
        time.sleep(0.05)
    return sockets


def test_the_connection_bound_is_for_all_workers_together(server):
    sockets = _opened(server.port, 3 * MAX_CONNECTIONS)
    try:
        statuses = []
        for sock in sockets:
            sock.sendall(raw_request("GET", "/api/health/live"))
            statuses.append(read_response(sock.makefile("rb"))[0])
    finally:
        for sock in sockets:
            sock.close()
    assert statuses.count(200) == MAX_CONNECTIONS, statuses
    assert statuses.count(503) == 2 * MAX_CONNECTIONS, statuses


def test_the_body_budget_is_for_all_workers_together(server):
    head = raw_request("POST", "/api/infer/simple",
                       {"NV-InferRequest": request_header(1, ["INPUT0", "INPUT1"])},
                       b"\0" * DECLARED)[:-DECLARED]
    time.sleep(0.3)  # the connections of the test before are gone from the tally
    holding = _opened(server.port, 4)
    try:
        statuses = []
        for sock in holding:  # whichever worker each lands on, only one body fits
            sock.sendall(head + b"\0" * 10)
            time.sleep(0.3)
        for sock in holding:
            sock.settimeout(0.5)
            try:
                statuses.append(read_response(sock.makefile("rb"))[0])
            except (TimeoutError, socket.timeout):
                statuses.append(None)  # still reading its body: it holds its share
    finally:
        for sock in holding:
            sock.close()
    assert sorted(statuses, key=str) == [503, 503, 503, None], statuses
