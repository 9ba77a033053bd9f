"""gRPC connection exhaustion: idle gRPC connections count against
--grpc-max-connections (a bound of its own, beside HTTP's, both within the
open-file limit), so however many a client opens, HTTP keeps serving and
gRPC connections beyond the bound are refused at once rather than queued;
connections that never finish their HTTP/2 set-up are closed after
--grpc-handshake-timeout-secs and idle ones after
--grpc-max-connection-idle-secs, and new gRPC clients are served again."""

from __future__ import annotations

import socket
import time

import grpc
import pytest

from conftest import HOST, ServerProcess, grpc_stub, http_request
from pyserver import process_limits
from pyserver.protos import grpc_service_pb2
from http2_helpers import GOAWAY, RawHttp2

MAX_CONNECTIONS = 16
HANDSHAKE_TIMEOUT_S = 2.0
IDLE_TIMEOUT_S = 4.0  # longer than the handshake timeout: grpc applies it before the set-up too


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    # One process: with front-end workers the bound is each worker's own
    # (gRPC core counts it), so the exact count asserted here is for one.
    srv = ServerProcess(example_store, "--frontend-workers=1",
                        f"--grpc-max-connections={MAX_CONNECTIONS}",
                        f"--grpc-handshake-timeout-secs={HANDSHAKE_TIMEOUT_S}",
                        f"--grpc-max-connection-idle-secs={IDLE_TIMEOUT_S}",
                        workdir=tmp_path_factory.mktemp("server"))
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


def _grpc_health(server, timeout: float = 10) -> bool:
    channel, stub = grpc_stub(server.grpc_target)
    with channel:
        return stub.Health(grpc_service_pb2.HealthRequest(mode="live"), timeout=timeout).health


def _open_idle(server, count: int) -> list[socket.socket]:
    return [socket.create_connection((HOST, server.grpc_port), timeout=10) for _ in range(count)]


def _closed(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _wait_all_closed(socks, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for sock in socks:
        assert _closed(sock, max(0.1, deadline - time.monotonic())), \
            f"a connection still open after {seconds} s"


def test_automatic_bounds_leave_descriptors_for_both_listeners():
    for open_files in (1024, 20000, 1 << 20):
        per_listener = process_limits.automatic_connection_limit(open_files)
        assert 2 * per_listener + process_limits.RESERVED_DESCRIPTORS <= open_files


def test_connections_beyond_the_grpc_bound_are_refused_at_once_and_http_serves_on(server):
    idle = [RawHttp2(server) for _ in range(MAX_CONNECTIONS)]  # set up, then no call
    try:
        for client in idle:
            list(client.frames(0.02))
        extra = _open_idle(server, 20)
        try:
            start = time.monotonic()
            for sock in extra:
                assert _closed(sock, 2.0), "a connection beyond the bound was kept"
            assert time.monotonic() - start < 2.0
        finally:
            for sock in extra:
                sock.close()
        assert http_request(server.port, "GET", "/v2/health/ready")[0] == 200
        with pytest.raises(grpc.RpcError) as failure:
            _grpc_health(server, timeout=IDLE_TIMEOUT_S * 0.5)
        assert failure.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        for client in idle:
            client.close()
    time.sleep(0.3)
    assert _grpc_health(server)


def test_connections_that_never_set_up_http2_are_closed_after_the_handshake_timeout(server):
    idle = _open_idle(server, MAX_CONNECTIONS)
    try:
        start = time.monotonic()
        _wait_all_closed(idle, HANDSHAKE_TIMEOUT_S + 3)
        assert time.monotonic() - start >= HANDSHAKE_TIMEOUT_S * 0.8
    finally:
        for sock in idle:
            sock.close()
    assert _grpc_health(server)  # the listener has its slots back, unaided


def test_idle_http2_connections_get_goaway_after_the_idle_timeout(server):
    clients = [RawHttp2(server) for _ in range(MAX_CONNECTIONS)]
    try:
        for client in clients:
            list(client.frames(0.05))
        start = time.monotonic()
        for client in clients:
            kinds = [kind for kind, _, _ in
                     client.frames(max(0.1, start + IDLE_TIMEOUT_S + 3 - time.monotonic()))
                     if kind in (GOAWAY, None)]
            assert kinds, "no GOAWAY for an idle connection"
        assert time.monotonic() - start >= IDLE_TIMEOUT_S * 0.8
    finally:
        for client in clients:
            client.close()
    assert _grpc_health(server)
