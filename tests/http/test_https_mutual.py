"""Mutual TLS (--tls-client-ca) on HTTP and gRPC alike: a client with a
certificate signed by that CA is served (http.client, curl,
tritonclient.http, a grpc secure channel); one without a certificate, or
with another CA's, fails its handshake, and the server keeps serving."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess

import grpc
import numpy as np
import pytest

from conftest import HOST, ServerProcess, http_request, raw_request, read_response
from pyserver.protos import grpc_service_pb2, grpc_service_pb2_grpc
from tls_helpers import HOSTNAME, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(example_store, certs, tmp_path_factory):
    srv = ServerProcess(example_store, f"--tls-cert={certs.server_cert}",
                        f"--tls-key={certs.server_key}", f"--tls-client-ca={certs.ca_cert}",
                        workdir=tmp_path_factory.mktemp("server"),
                        ssl_context=certs.client_context(with_client_cert=True))
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(autouse=True)
def still_serves(server, certs):
    yield
    good = certs.client_context(with_client_cert=True)
    assert http_request(server.port, "GET", "/v2/health/ready", ssl_context=good)[0] == 200


def _get_ready(server, context: ssl.SSLContext):
    """One request over a fresh connection; what came back, or raises."""
    with socket.create_connection((HOST, server.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=HOSTNAME) as sock:
            sock.sendall(raw_request("GET", "/v2/health/ready"))
            return read_response(sock.makefile("rb"))


def test_a_client_with_a_certificate_from_the_ca_is_served(server, certs):
    status, _, _ = _get_ready(server, certs.client_context(with_client_cert=True))
    assert status == 200


def _refused(server, context: ssl.SSLContext) -> str:
    """Why the request failed (fails the test if it was answered)."""
    try:
        answer = _get_ready(server, context)
    except (ssl.SSLError, ConnectionError) as exc:
        return str(exc)
    assert answer is None, f"answered without a valid client certificate: {answer}"
    return "closed without an answer"


def test_a_client_without_a_certificate_fails_its_handshake(server, certs):
    # TLS 1.3: the server's alert arrives after the client's handshake has
    # ended, at its first read.
    why = _refused(server, certs.client_context())
    assert "certificate" in why.lower() or "closed" in why or "reset" in why.lower(), why


def test_a_certificate_from_another_ca_is_refused(server, certs):
    _refused(server, certs.client_context(foreign_client_cert=True))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_and_without_its_client_certificate(server, certs):
    url = f"https://{HOSTNAME}:{server.port}/v2/health/ready"
    base = ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
            "--cacert", str(certs.ca_cert)]
    good = subprocess.run(base + ["--cert", str(certs.client_cert), "--key",
                                  str(certs.client_key), url],
                          capture_output=True, text=True, timeout=30)
    assert good.returncode == 0 and good.stdout == "200", (good.stdout, good.stderr)
    bare = subprocess.run(base + [url], capture_output=True, text=True, timeout=30)
    assert bare.returncode != 0, (bare.stdout, bare.stderr)
    assert bare.stdout != "200"


def test_tritonclient_http_with_a_client_certificate(server, certs):
    httpclient = pytest.importorskip("tritonclient.http")
    import gevent.ssl

    def context():
        ctx = gevent.ssl.create_default_context(cafile=str(certs.ca_cert))
        ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        return ctx

    client = httpclient.InferenceServerClient(f"{HOSTNAME}:{server.port}", ssl=True,
                                              ssl_context_factory=context)
    try:
        assert client.is_server_live()
        a = np.arange(16, dtype=np.float32)[None]
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "FP32"),
                  httpclient.InferInput("INPUT1", [1, 16], "FP32")]
        for i in inputs:
            i.set_data_from_numpy(a)
        np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), a + a)
    finally:
        client.close()


def _grpc_health(server, certs, with_client_cert: bool) -> bool:
    credentials = grpc.ssl_channel_credentials(
        certs.ca_cert.read_bytes(),
        private_key=certs.client_key.read_bytes() if with_client_cert else None,
        certificate_chain=certs.client_cert.read_bytes() if with_client_cert else None)
    with grpc.secure_channel(server.grpc_target, credentials,
                             options=[("grpc.ssl_target_name_override", HOSTNAME)]) as channel:
        stub = grpc_service_pb2_grpc.GRPCServiceStub(channel)
        return stub.Health(grpc_service_pb2.HealthRequest(mode="live"), timeout=10).health


def test_grpc_with_a_client_certificate_is_served(server, certs):
    assert _grpc_health(server, certs, with_client_cert=True)


def test_grpc_without_a_client_certificate_is_refused(server, certs):
    with pytest.raises(grpc.RpcError) as failure:
        _grpc_health(server, certs, with_client_cert=False)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _grpc_health(server, certs, with_client_cert=True)  # and serves on
