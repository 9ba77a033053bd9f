"""Start-up of the three listeners (HTTP, gRPC, metrics): each is logged,
each can be switched off, and a port that cannot be bound stops the server
with a clear error instead of a half-started server."""

from __future__ import annotations

import socket

import pytest
from conftest import HOST, ServerProcess, free_port, grpc_stub, write_identity
from pyserver.protos import grpc_service_pb2 as gs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("listeners_store")
    write_identity(root, "identity")
    return root


def _refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_start_up_names_each_service(store, tmp_path):
    srv = ServerProcess(store, workdir=tmp_path)
    try:
        log = srv.log_text()
        assert f"Started HTTPService at {HOST}:{srv.port}" in log
        assert f"Started GRPCService at {HOST}:{srv.grpc_port}" in log
        assert f"Started Metrics Service at {HOST}:{srv.metrics_port}" in log
    finally:
        assert srv.stop() == 0


def test_allow_grpc_false_serves_no_grpc_port(store, tmp_path):
    srv = ServerProcess(store, "--allow-grpc=false", workdir=tmp_path)
    try:
        assert _refused(srv.grpc_port)
        assert "Started GRPCService" not in srv.log_text()
    finally:
        assert srv.stop() == 0


def test_grpc_serves_while_http_does(store, tmp_path):
    srv = ServerProcess(store, workdir=tmp_path)
    channel, stub = grpc_stub(srv.grpc_target)
    try:
        assert stub.Health(gs.HealthRequest(mode="ready"), timeout=10).health
    finally:
        channel.close()
        assert srv.stop() == 0


def test_same_port_for_two_services_is_refused(store, tmp_path):
    port = free_port()
    srv = ServerProcess(store, f"--http-port={port}", f"--grpc-port={port}", workdir=tmp_path,
                        wait=False)
    assert srv.wait(30) == 1
    assert f"the HTTP and gRPC ports must differ (both {port})" in srv.log_text()


def test_grpc_port_in_use_stops_the_server(store, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = ServerProcess(store, f"--grpc-port={port}", workdir=tmp_path, wait=False)
        assert srv.wait(30) == 1
    log = srv.log_text()
    assert "cannot listen" in log and str(port) in log


def test_metrics_port_in_use_stops_the_server(store, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = ServerProcess(store, f"--metrics-port={port}", workdir=tmp_path, wait=False)
        assert srv.wait(30) == 1
    assert "exiting" in srv.log_text()
