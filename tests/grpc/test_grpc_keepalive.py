"""gRPC keep-alive enforcement, seen on the wire by a raw HTTP/2 client: a
client pinging more often than --grpc-min-ping-interval-secs is sent GOAWAY
(ENHANCE_YOUR_CALM, "too_many_pings") after --grpc-max-ping-strikes and
disconnected, while other clients keep being served; one pinging at the
allowed rate is not; one that never answers the server's keep-alive pings
is closed after --grpc-keepalive-time-secs + --grpc-keepalive-timeout-secs."""

from __future__ import annotations

import time

import pytest

from conftest import ServerProcess, grpc_stub
from http2_helpers import ACK, ENHANCE_YOUR_CALM, GOAWAY, PING, RawHttp2, goaway_of
from pyserver.protos import grpc_service_pb2

MIN_PING_INTERVAL_S = 1.0
KEEPALIVE_TIME_S = 1.0
KEEPALIVE_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    srv = ServerProcess(example_store, f"--grpc-min-ping-interval-secs={MIN_PING_INTERVAL_S}",
                        "--grpc-max-ping-strikes=2",
                        f"--grpc-keepalive-time-secs={KEEPALIVE_TIME_S}",
                        f"--grpc-keepalive-timeout-secs={KEEPALIVE_TIMEOUT_S}",
                        workdir=tmp_path_factory.mktemp("server"))
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(autouse=True)
def others_served(server):
    yield
    assert _health(server)


def _health(server) -> bool:
    channel, stub = grpc_stub(server.grpc_target)
    with channel:
        return stub.Health(grpc_service_pb2.HealthRequest(mode="live"), timeout=10).health


def test_a_client_pinging_too_often_gets_goaway_too_many_pings(server):
    client = RawHttp2(server)
    try:
        list(client.frames(0.3))  # settings exchanged
        goaway = None
        closed = False
        start = time.monotonic()
        while time.monotonic() - start < 5 and not closed:
            try:
                client.ping()
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            for kind, _, payload in client.frames(0.05):
                if kind == GOAWAY:
                    goaway = goaway_of(payload)
                elif kind is None:
                    closed = True
        for kind, _, payload in client.frames(3):  # then the server closes
            if kind == GOAWAY and goaway is None:
                goaway = goaway_of(payload)
            closed = closed or kind is None
    finally:
        client.close()
    assert goaway == (ENHANCE_YOUR_CALM, b"too_many_pings"), goaway
    assert closed


def test_others_are_served_while_a_client_floods_pings(server):
    client = RawHttp2(server)
    try:
        list(client.frames(0.2))
        for _ in range(3):
            client.ping()
        assert _health(server)
    finally:
        client.close()


def test_a_client_pinging_at_the_allowed_rate_keeps_its_connection(server):
    client = RawHttp2(server)
    try:
        acks = 0
        for _ in range(4):
            client.ping(b"rate-ok!")
            for kind, flags, payload in client.frames(MIN_PING_INTERVAL_S * 1.3):
                assert kind not in (GOAWAY, None), (kind, payload)
                if kind == PING and flags & ACK and payload == b"rate-ok!":
                    acks += 1
        assert acks == 4
    finally:
        client.close()


def test_a_client_that_never_answers_keepalive_pings_is_closed(server):
    client = RawHttp2(server, answer_pings=False)
    try:
        start = time.monotonic()
        pinged = closed = False
        for kind, flags, _ in client.frames(KEEPALIVE_TIME_S + KEEPALIVE_TIMEOUT_S + 5):
            pinged = pinged or (kind == PING and not flags & ACK)
            if kind is None:
                closed = True
                break
        elapsed = time.monotonic() - start
    finally:
        client.close()
    assert pinged, "the server sent no keep-alive ping"
    assert closed, f"still open after {elapsed:.1f} s"
    assert elapsed >= KEEPALIVE_TIME_S * 0.9, elapsed
