"""HTTPS (--tls-cert / --tls-key) with real clients: Python's ssl and
http.client, curl, tritonclient.http with ssl=True; and the bounds on TLS
connections: a plain-HTTP client on the TLS port, a client that never
starts or never finishes its handshake, and handshakes beyond the
connection limit end only their own connection, within the header timeout,
while the server keeps serving. Run once per parser (tests/run.py)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time

import numpy as np
import pytest

from conftest import (HOST, ServerProcess, add_sub_body, http_request, nv_infer_response,
                      nv_status, raw_request, read_response, request_header, split_infer_body)
from tls_helpers import HOSTNAME, make_certificates

HEADER_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(example_store, certs, tmp_path_factory):
    srv = ServerProcess(example_store, f"--tls-cert={certs.server_cert}",
                        f"--tls-key={certs.server_key}",
                        f"--http-header-timeout-secs={HEADER_TIMEOUT_S}",
                        f"--http-max-connections={MAX_CONNECTIONS}",
                        workdir=tmp_path_factory.mktemp("server"),
                        ssl_context=certs.client_context())
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


@pytest.fixture
def tls(certs):
    return certs.client_context()


@pytest.fixture(autouse=True)
def still_serves(server, tls):
    yield
    assert http_request(server.port, "GET", "/v2/health/ready", ssl_context=tls)[0] == 200


def _tls_connect(server, tls: ssl.SSLContext, hostname: str = HOSTNAME) -> ssl.SSLSocket:
    sock = socket.create_connection((HOST, server.port), timeout=10)
    return tls.wrap_socket(sock, server_hostname=hostname)


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``sock`` (reading and discarding);
    fails past ``seconds``."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        pytest.fail(f"the server did not close the connection within {seconds} s")
    return time.monotonic() - start


def test_v1_infer_over_https_returns_the_sums(server, tls):
    a = np.arange(16, dtype=np.float32)[None]
    b = np.full((1, 16), 2, dtype=np.float32)
    header = request_header(1, ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"])
    status, headers, body = http_request(
        server.port, "POST", "/api/infer/simple?format=binary",
        {"NV-InferRequest": header}, add_sub_body(a, b), ssl_context=tls)
    assert status == 200, (headers, body)
    raw, _ = split_infer_body(body, nv_infer_response(headers))
    np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT0"], np.float32), (a + b)[0])
    np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT1"], np.float32), (a - b)[0])


def test_keep_alive_requests_share_one_tls_connection(server, tls):
    with _tls_connect(server, tls) as sock:
        stream = sock.makefile("rb")
        for _ in range(5):
            sock.sendall(raw_request("GET", "/api/health/live"))
            status, headers, _ = read_response(stream)
            assert status == 200
            assert nv_status(headers).code == 1
        assert sock.version() in ("TLSv1.2", "TLSv1.3")


def test_a_large_body_and_answer_cross_tls_intact(server, tls):
    a = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal((8, 16)).astype(np.float32)
    payload = {"inputs": [{"name": "INPUT0", "shape": [8, 16], "datatype": "FP32",
                           "data": a.ravel().tolist()},
                          {"name": "INPUT1", "shape": [8, 16], "datatype": "FP32",
                           "data": b.ravel().tolist()}]}
    body = json.dumps(payload).encode() + b" " * 300_000  # JSON allows trailing blanks
    status, _, answer = http_request(server.port, "POST", "/v2/models/simple/infer",
                                     {"Content-Type": "application/json"}, body,
                                     ssl_context=tls)
    assert status == 200, answer
    outputs = {o["name"]: o for o in json.loads(answer)["outputs"]}
    np.testing.assert_allclose(np.array(outputs["OUTPUT0"]["data"], np.float32),
                               (a + b).ravel(), rtol=1e-6)


def test_the_server_certificate_verifies_for_its_names(server, certs):
    for hostname in (HOSTNAME, "127.0.0.1"):
        with _tls_connect(server, certs.client_context(), hostname=hostname) as sock:
            assert sock.getpeercert()["subject"] == ((("commonName", HOSTNAME),),)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_over_https(server, certs):
    done = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(certs.ca_cert),
                           f"https://{HOSTNAME}:{server.port}/v2/models/simple"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "simple"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_refuses_a_server_it_cannot_verify(server):
    done = subprocess.run(["curl", "-sS", "--max-time", "10",
                           f"https://{HOSTNAME}:{server.port}/v2/health/ready"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 60, (done.returncode, done.stderr)  # peer certificate not trusted


def test_tritonclient_http_with_ssl(server, certs):
    httpclient = pytest.importorskip("tritonclient.http")
    import gevent.ssl

    def context():
        return gevent.ssl.create_default_context(cafile=str(certs.ca_cert))

    client = httpclient.InferenceServerClient(f"{HOSTNAME}:{server.port}", ssl=True,
                                              ssl_context_factory=context)
    try:
        assert client.is_server_ready()
        a = np.arange(32, dtype=np.float32).reshape(2, 16)
        b = np.ones((2, 16), dtype=np.float32)
        inputs = [httpclient.InferInput("INPUT0", [2, 16], "FP32"),
                  httpclient.InferInput("INPUT1", [2, 16], "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b, binary_data=False)
        result = client.infer("simple", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    finally:
        client.close()


def test_plain_http_on_the_tls_port_is_closed_at_once(server):
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(raw_request("GET", "/v2/health/ready"))
        elapsed = _closed_within(sock, HEADER_TIMEOUT_S * 2 + 5)
    assert elapsed < HEADER_TIMEOUT_S, elapsed  # the handshake fails on the first bytes


def test_a_client_that_never_starts_the_handshake_is_closed_after_the_header_timeout(server):
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        elapsed = _closed_within(sock, HEADER_TIMEOUT_S * 2 + 5)
    assert elapsed >= HEADER_TIMEOUT_S * 0.9, elapsed


def test_a_handshake_stalled_halfway_is_closed_after_the_header_timeout(server, tls):
    # The first bytes of a real ClientHello, then nothing.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = tls.wrap_bio(incoming, outgoing, server_hostname=HOSTNAME)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(hello[:len(hello) // 2])
        elapsed = _closed_within(sock, HEADER_TIMEOUT_S * 2 + 5)
    assert elapsed >= HEADER_TIMEOUT_S * 0.9, elapsed


def test_garbage_instead_of_a_handshake_is_closed_and_the_server_serves_on(server, tls):
    for garbage in (b"\x16\x03\x01\x00\x05hello", b"\x00" * 1000, bytes(range(256)) * 20):
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            try:
                sock.sendall(garbage)
            except (BrokenPipeError, ConnectionResetError):
                pass
            _closed_within(sock, HEADER_TIMEOUT_S * 2 + 5)
        assert http_request(server.port, "GET", "/v2/health/live", ssl_context=tls)[0] == 200


def test_connections_still_in_their_handshake_count_against_the_limit(server, tls):
    idle = [socket.create_connection((HOST, server.port), timeout=10)
            for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # accepted and counted, no handshake started
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with _tls_connect(server, tls) as sock:
                sock.sendall(raw_request("GET", "/v2/health/ready"))
                assert read_response(sock.makefile("rb")) is None
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)  # the slots come back when the clients go


def test_many_failed_handshakes_are_not_logged_one_by_one(server):
    for _ in range(20):
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            sock.sendall(raw_request("GET", "/"))
            _closed_within(sock, 10)
    time.sleep(0.2)
    log = server.log_text()
    assert log.count("handshake") < 5, log[-2000:]


def test_errors_are_answered_over_https_as_over_http(server, tls):
    status, _, body = http_request(server.port, "GET", "/v2/models/no_such_model",
                                   ssl_context=tls)
    assert status in (400, 404), body
    assert "no_such_model" in json.loads(body)["error"]
