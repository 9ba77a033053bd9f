"""gRPC over TLS with Triton's flag names: --grpc-use-ssl with
--grpc-server-cert / --grpc-server-key (the HTTP port stays plain, as in
Triton), and --grpc-use-ssl-mutual with --grpc-root-cert. Real clients: a
grpc secure channel and tritonclient.grpc with ssl=True (in a child process,
see tritonclient_tls_check.py); a plain-text channel or a client without its
certificate is refused and the server keeps serving."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import HOST, ServerProcess, http_request
from pyserver.protos import grpc_service_pb2, grpc_service_pb2_grpc
from tls_helpers import HOSTNAME, make_certificates

CHECK = Path(__file__).with_name("tritonclient_tls_check.py")
HANDSHAKE_TIMEOUT_S = 2.0
HAVE_TRITONCLIENT = importlib.util.find_spec("tritonclient") is not None and \
    importlib.util.find_spec("tritonclient.grpc") is not None


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _start(store, tmp_path_factory, *flags: str) -> ServerProcess:
    return ServerProcess(store, *flags, workdir=tmp_path_factory.mktemp("server"))


@pytest.fixture(scope="module")
def server(example_store, certs, tmp_path_factory):
    srv = _start(example_store, tmp_path_factory, "--grpc-use-ssl=true",
                 f"--grpc-server-cert={certs.server_cert}",
                 f"--grpc-server-key={certs.server_key}",
                 f"--grpc-handshake-timeout-secs={HANDSHAKE_TIMEOUT_S}")
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def mutual_server(example_store, certs, tmp_path_factory):
    srv = _start(example_store, tmp_path_factory, "--grpc-use-ssl-mutual",
                 f"--grpc-server-cert={certs.server_cert}",
                 f"--grpc-server-key={certs.server_key}", f"--grpc-root-cert={certs.ca_cert}")
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


def _channel(srv, certs, client_cert: bool = False) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        certs.ca_cert.read_bytes(),
        private_key=certs.client_key.read_bytes() if client_cert else None,
        certificate_chain=certs.client_cert.read_bytes() if client_cert else None)
    return grpc.secure_channel(f"{HOSTNAME}:{srv.grpc_port}", credentials)


def _v1_infer(channel: grpc.Channel) -> np.ndarray:
    a = np.arange(16, dtype=np.float32)
    request = grpc_service_pb2.InferRequest(model_name="simple", model_version=-1,
                                            raw_input=[a.tobytes(), a.tobytes()])
    request.meta_data.batch_size = 1
    request.meta_data.input.add(name="INPUT0")
    request.meta_data.input.add(name="INPUT1")
    request.meta_data.output.add(name="OUTPUT0")
    response = grpc_service_pb2_grpc.GRPCServiceStub(channel).Infer(request, timeout=10)
    assert response.request_status.code == 1, response.request_status
    return np.frombuffer(response.raw_output[0], np.float32)


def _tritonclient(srv, certs, client_cert: bool = False) -> dict:
    extra = [str(certs.client_cert), str(certs.client_key)] if client_cert else []
    done = subprocess.run([sys.executable, str(CHECK), f"{HOSTNAME}:{srv.grpc_port}",
                           str(certs.ca_cert), *extra],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_secure_channel_infers(server, certs):
    with _channel(server, certs) as channel:
        np.testing.assert_array_equal(_v1_infer(channel), np.arange(16, dtype=np.float32) * 2)


@pytest.mark.skipif(not HAVE_TRITONCLIENT, reason="tritonclient[grpc] is not installed")
def test_tritonclient_grpc_with_ssl_and_root_certificates(server, certs):
    outcome = _tritonclient(server, certs)
    assert outcome == {"ready": True, "sum": (np.arange(16) * 2.0).tolist()}, outcome


def test_a_plain_text_channel_is_refused_and_the_server_serves_on(server, certs):
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = grpc_service_pb2_grpc.GRPCServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.Health(grpc_service_pb2.HealthRequest(mode="live"), timeout=10)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    with _channel(server, certs) as channel:
        assert _v1_infer(channel).size == 16


def _seconds_until_closed(srv, first_bytes: bytes, limit: float) -> float:
    with socket.create_connection((HOST, srv.grpc_port), timeout=10) as sock:
        sock.sendall(first_bytes)
        start = time.monotonic()
        sock.settimeout(limit)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail(f"the gRPC TLS port kept a connection open {limit} s")
        return time.monotonic() - start


def test_a_stalled_tls_handshake_on_grpc_is_closed_after_the_handshake_timeout(server,
                                                                                certs):
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # a ClientHello's start
    elapsed = _seconds_until_closed(server, hello, HANDSHAKE_TIMEOUT_S + 5)
    assert elapsed >= HANDSHAKE_TIMEOUT_S * 0.8, elapsed
    with _channel(server, certs) as channel:
        assert _v1_infer(channel).size == 16


def test_plain_text_on_the_grpc_tls_port_is_closed_at_once(server):
    elapsed = _seconds_until_closed(server, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                                    HANDSHAKE_TIMEOUT_S + 5)
    assert elapsed < HANDSHAKE_TIMEOUT_S * 0.8, elapsed


def test_tritons_grpc_flags_leave_http_plain(server):
    assert http_request(server.port, "GET", "/v2/health/ready")[0] == 200


def test_mutual_a_client_with_its_certificate_is_served(mutual_server, certs):
    with _channel(mutual_server, certs, client_cert=True) as channel:
        assert _v1_infer(channel).size == 16


@pytest.mark.skipif(not HAVE_TRITONCLIENT, reason="tritonclient[grpc] is not installed")
def test_mutual_tritonclient_grpc_with_its_certificate(mutual_server, certs):
    outcome = _tritonclient(mutual_server, certs, client_cert=True)
    assert outcome.get("ready") is True, outcome


@pytest.mark.skipif(not HAVE_TRITONCLIENT, reason="tritonclient[grpc] is not installed")
def test_mutual_tritonclient_grpc_without_a_certificate_is_refused(mutual_server, certs):
    outcome = _tritonclient(mutual_server, certs)
    assert "StatusCode.UNAVAILABLE" in outcome.get("error", ""), outcome


def test_mutual_a_client_without_a_certificate_is_refused_and_others_served(mutual_server,
                                                                              certs):
    with _channel(mutual_server, certs) as channel:
        with pytest.raises(grpc.RpcError) as failure:
            _v1_infer(channel)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    with _channel(mutual_server, certs, client_cert=True) as channel:
        assert _v1_infer(channel).size == 16
