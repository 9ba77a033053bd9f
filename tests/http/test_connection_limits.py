"""Connection and memory bounds of the HTTP listener: connections beyond
--http-max-connections are answered 503 and closed while the accepted ones
keep being served; request bodies beyond --http-body-memory-budget (bodies
still arriving count at their declared size) get 503 with Retry-After; the
open-file soft limit is raised to the hard limit; repeated log lines are
rate-limited."""

from __future__ import annotations

import logging
import resource
import socket
import time

import pytest

from conftest import HOST, ServerProcess, http_request, raw_request, read_response, request_header
from pyserver.process_limits import RepeatedMessageFilter

MAX_CONNECTIONS = 8
BUDGET = 200_000
DECLARED = 120_000
SIMPLE_HEADER = request_header(1, ["INPUT0", "INPUT1"])


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 512) if hard == resource.RLIM_INFINITY or hard > 512 else soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))  # the server inherits it
    try:
        srv = ServerProcess(example_store, f"--http-max-connections={MAX_CONNECTIONS}",
                            f"--http-body-memory-budget={BUDGET}",
                            f"--http-max-input-size={DECLARED + 1000}",
                            workdir=tmp_path_factory.mktemp("server"))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    srv.lowered_soft_limit = lowered
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


def _open_file_limits(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


def test_connections_beyond_the_limit_get_503_and_accepted_ones_are_served(server):
    accepted = [socket.create_connection((HOST, server.port), timeout=10)
                for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # the server has taken them all
        with socket.create_connection((HOST, server.port), timeout=10) as extra:
            refused = read_response(extra.makefile("rb"))
            assert refused is not None and refused[0] == 503, refused
            assert refused[1].get("retry-after") == "1"
            assert refused[1].get("connection") == "close"
            assert extra.recv(1) == b""
        for sock in accepted:
            sock.sendall(raw_request("GET", "/api/health/live"))
            assert read_response(sock.makefile("rb"))[0] == 200
    finally:
        for sock in accepted:
            sock.close()
    time.sleep(0.3)
    assert http_request(server.port, "GET", "/api/health/live")[0] == 200


def _infer_head(length: int) -> bytes:
    body = b"\0" * length
    request = raw_request("POST", "/api/infer/simple", {"NV-InferRequest": SIMPLE_HEADER}, body)
    return request[:-length]


def test_bodies_beyond_the_memory_budget_get_503_with_retry_after(server):
    holding = socket.create_connection((HOST, server.port), timeout=10)
    try:
        holding.sendall(_infer_head(DECLARED) + b"\0" * 10)  # declared, mostly unsent
        time.sleep(0.3)
        with socket.create_connection((HOST, server.port), timeout=10) as second:
            second.sendall(_infer_head(DECLARED))
            status, headers, text = read_response(second.makefile("rb"))
        assert status == 503, (status, headers, text)
        assert headers.get("retry-after") == "1"
        assert b"budget" in text
    finally:
        holding.close()
    time.sleep(0.3)  # the held bytes go back to the budget when the connection goes
    status, headers, _ = http_request(server.port, "POST", "/api/infer/simple",
                                      {"NV-InferRequest": SIMPLE_HEADER}, b"\0" * DECLARED)
    assert status == 400, headers  # read and refused for its content, not for memory


def test_open_file_soft_limit_is_raised_to_the_hard_limit(server):
    soft, hard = _open_file_limits(server.proc.pid)
    assert soft == hard, (soft, hard, server.lowered_soft_limit)


def test_repeated_log_lines_are_rate_limited():
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("pyserver.test.repeated")
    logger.propagate = False
    handler = Collect()
    flt = RepeatedMessageFilter(interval_secs=0.2)
    handler.addFilter(flt)
    logger.addHandler(handler)
    try:
        for _ in range(1000):
            logger.error("accept failed: too many open files (limit %d)", 1024)
            logger.error("model '%s' failed to load", "a")  # distinct messages all pass
            logger.error("model '%s' failed to load", "b")
        time.sleep(0.25)
        logger.error("accept failed: too many open files (limit %d)", 1024)
    finally:
        logger.removeHandler(handler)
    assert records == ["accept failed: too many open files (limit 1024)",
                       "model 'a' failed to load", "model 'b' failed to load",
                       "accept failed: too many open files (limit 1024) "
                       "(999 identical messages suppressed)"]
