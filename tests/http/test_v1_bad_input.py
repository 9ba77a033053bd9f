"""Bad requests get the right status, NV-Status code and message, and the
server goes on serving (facts §2.1-§2.4, §2.7)."""

from __future__ import annotations

import http.client
import socket
import time

import numpy as np
import pytest

from conftest import (HOST, Code, ServerProcess, add_sub_body, assert_error, http_request, infer,
                      nv_infer_response, nv_status, raw_request, read_response, request_header,
                      split_infer_body)

MAX_INPUT = 4096
SIMPLE_HEADER = request_header(1, ["INPUT0", "INPUT1"])
ONE = np.arange(16, dtype=np.float32).reshape(1, 16)
GOOD_BODY = add_sub_body(ONE, ONE)


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    srv = ServerProcess(example_store, f"--http-max-input-size={MAX_INPUT}",
                        workdir=tmp_path_factory.mktemp("server"))
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


def assert_good_request(port: int, connection=None) -> None:
    status, headers, body = infer(port, "simple", SIMPLE_HEADER, GOOD_BODY, connection=connection)
    assert status == 200, (status, headers, body)
    raw, _ = split_infer_body(body, nv_infer_response(headers))
    np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT0"], np.float32), (ONE + ONE).ravel())


@pytest.fixture(autouse=True)
def still_serves(server):
    """After every test here, a good request still succeeds."""
    yield
    assert_good_request(server.port)


def _simple(server, header, body=GOOD_BODY, model="simple", version=None):
    return infer(server.port, model, header, body, version=version)


# -- NV-InferRequest problems -----------------------------------------------------

def test_missing_infer_request_header(server):
    result = http_request(server.port, "POST", "/api/infer/simple?format=binary", {}, GOOD_BODY)
    assert_error(result, Code.INVALID_ARG, "NV-InferRequest")


@pytest.mark.parametrize("text", ["garbage {{", 'batch_size: "one"', "no_such_field: 1",
                                  "input { name: INPUT0 }"])
def test_malformed_infer_request_header(server, text):
    assert_error(_simple(server, text), Code.INVALID_ARG, "malformed")


def test_too_few_bytes(server):
    assert_error(_simple(server, SIMPLE_HEADER, GOOD_BODY[:-4]), Code.INVALID_ARG,
                 "unexpected size", "INPUT1")


def test_no_bytes(server):
    assert_error(_simple(server, SIMPLE_HEADER, b""), Code.INVALID_ARG, "INPUT0")


def test_too_many_bytes(server):
    assert_error(_simple(server, SIMPLE_HEADER, GOOD_BODY + b"\0" * 4), Code.INVALID_ARG,
                 "additional input data")


def test_unknown_model(server):
    assert_error(_simple(server, SIMPLE_HEADER, model="no_such_model"), Code.NOT_FOUND,
                 "no_such_model", "not found")


def test_unknown_version(server):
    assert_error(_simple(server, SIMPLE_HEADER, version=7), Code.NOT_FOUND, "version 7",
                 "not found")


def test_batch_size_zero(server):
    header = request_header(0, ["INPUT0", "INPUT1"])
    assert_error(_simple(server, header, b""), Code.INVALID_ARG, "batch")


def test_batch_size_over_max(server):
    x = np.zeros((9, 16), np.float32)
    header = request_header(9, ["INPUT0", "INPUT1"])
    assert_error(_simple(server, header, add_sub_body(x, x)), Code.INVALID_ARG, "batch", "8")


def test_nobatch_model_accepts_only_batch_size_one(server):
    x = np.zeros((2, 16), np.float32)
    header = request_header(2, ["INPUT0", "INPUT1"])
    assert_error(_simple(server, header, add_sub_body(x, x), model="simple_nobatch"),
                 Code.INVALID_ARG, "batch")


def test_wrong_input_name(server):
    header = request_header(1, ["INPUT0", "INPUT9"])
    assert_error(_simple(server, header), Code.INVALID_ARG, "INPUT9")


@pytest.mark.parametrize("inputs", [["INPUT0"], ["INPUT0", "INPUT1", "INPUT1"], []])
def test_wrong_number_of_inputs(server, inputs):
    assert_error(_simple(server, request_header(1, inputs)), Code.INVALID_ARG, "inputs")


def test_duplicate_input(server):
    assert_error(_simple(server, request_header(1, ["INPUT0", "INPUT0"])), Code.INVALID_ARG,
                 "INPUT0")


def test_unknown_output(server):
    header = request_header(1, ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT7"])
    assert_error(_simple(server, header), Code.INVALID_ARG, "OUTPUT7")


def test_wrong_batch_byte_size(server):
    header = request_header(1, [{"name": "INPUT0", "batch_byte_size": 60}, "INPUT1"])
    assert_error(_simple(server, header), Code.INVALID_ARG, "batch_byte_size")


def test_wrong_input_dims(server):
    header = request_header(1, [{"name": "INPUT0", "dims": [4, 4]}, "INPUT1"])
    assert_error(_simple(server, header), Code.INVALID_ARG, "shape", "INPUT0")


def test_failure_answer_shape(server):
    """On failure: 400, NV-Status, NV-InferResponse carrying only the id."""
    header = request_header(1, ["INPUT0", "INPUT1"], request_id=31)
    status, headers, _ = _simple(server, header, GOOD_BODY[:10])
    assert status == 400
    assert nv_status(headers).code == Code.INVALID_ARG
    response = nv_infer_response(headers)
    assert response == type(response)(id=31)


@pytest.mark.parametrize("case", [
    "unknown_model",
    "unknown_version",
    "batch_size_zero",
    "unknown_output",
    "too_few_bytes",
    "too_many_bytes",
])
def test_failure_echoes_request_id(server, case):
    """TRTIS sets InferResponseHeader.id = request id on every failure after
    the NV-InferRequest header parsed (facts §2.2, §2.5)."""
    model, version, body = "simple", None, GOOD_BODY
    header = request_header(1, ["INPUT0", "INPUT1"], request_id=77)
    if case == "unknown_model":
        model = "no_such_model"
    elif case == "unknown_version":
        version = 9
    elif case == "batch_size_zero":
        header = request_header(0, ["INPUT0", "INPUT1"], request_id=77)
    elif case == "unknown_output":
        header = request_header(1, ["INPUT0", "INPUT1"], ["NOPE"], request_id=77)
    elif case == "too_few_bytes":
        body = GOOD_BODY[:-1]
    elif case == "too_many_bytes":
        body = GOOD_BODY + b"\0"
    status, headers, _ = infer(server.port, model, header, body, version=version)
    assert status == 400
    assert nv_status(headers).code != Code.SUCCESS
    assert nv_infer_response(headers).id == 77


def test_error_keeps_the_connection(server):
    """An error answered after the whole body was read leaves the
    connection usable."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=20)
    try:
        infer(server.port, "simple", SIMPLE_HEADER, GOOD_BODY[:-4], connection=conn)
        local = conn.sock.getsockname()
        assert_error(infer(server.port, "no_such_model", SIMPLE_HEADER, GOOD_BODY,
                           connection=conn), Code.NOT_FOUND)
        assert_good_request(server.port, connection=conn)
        assert conn.sock.getsockname() == local
    finally:
        conn.close()


# -- routing ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_on_infer_is_405(server, method):
    status, headers, _ = http_request(server.port, method, "/api/infer/simple")
    assert status == 405
    assert "nv-status" not in headers


@pytest.mark.parametrize("path", ["/", "/foo", "/api", "/api/", "/api/unknown", "/v2/models",
                                  "/api/statusx", "/metrics"])
def test_unknown_path_is_400(server, path):
    for method in ("GET", "POST"):
        status, headers, _ = http_request(server.port, method, path)
        assert status == 400, (method, path)
        assert "nv-status" not in headers


@pytest.mark.parametrize("path", ["/api/infer", "/api/infer/", "/api/infer/simple/x",
                                  "/api/infer/simple/1/2"])
def test_malformed_infer_path_is_400(server, path):
    status, _, _ = http_request(server.port, "POST", path, {"NV-InferRequest": SIMPLE_HEADER},
                                GOOD_BODY)
    assert status == 400


# -- transport -------------------------------------------------------------------------

def _connection_closed(stream) -> bool:
    try:
        return stream.read(1) == b""
    except ConnectionResetError:
        return True


def test_body_over_limit_is_413(server):
    """Refused on Content-Length alone, before the body is read."""
    request = raw_request("POST", "/api/infer/simple", {"NV-InferRequest": SIMPLE_HEADER},
                          b"\0" * (MAX_INPUT * 2))
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(request)  # one write: the server reads it whole
        stream = sock.makefile("rb")
        status, headers, text = read_response(stream)
        assert status == 413
        assert str(MAX_INPUT).encode() in text
        assert headers.get("connection") == "close"
        assert _connection_closed(stream)


def test_body_at_limit_is_not_413(server):
    status, headers, _ = http_request(server.port, "POST", "/api/infer/simple",
                                      {"NV-InferRequest": SIMPLE_HEADER}, b"\0" * MAX_INPUT)
    assert status == 400  # the size is fine; the content is not
    assert nv_status(headers).code == Code.INVALID_ARG


def test_chunked_body_over_limit_is_413(server):
    body = b"\0" * 1000
    head = (f"POST /api/infer/simple HTTP/1.1\r\nHost: {HOST}\r\nNV-InferRequest: "
            f"{SIMPLE_HEADER}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body), body) for _ in range(6)) + b"0\r\n\r\n"
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(head + chunks)
        stream = sock.makefile("rb")
        status, headers, _ = read_response(stream)
        assert status == 413
        assert headers.get("connection") == "close"
        assert _connection_closed(stream)


def test_half_body_then_disconnect(server):
    """A client that sends the headers and half the body, then goes."""
    request = raw_request("POST", "/api/infer/simple?format=binary",
                          {"NV-InferRequest": SIMPLE_HEADER}, GOOD_BODY)
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(request[:len(request) - len(GOOD_BODY) // 2])
        time.sleep(0.1)


def test_half_body_does_not_block_others(server):
    """While one client stalls mid-body, other clients are served."""
    request = raw_request("POST", "/api/infer/simple?format=binary",
                          {"NV-InferRequest": SIMPLE_HEADER}, GOOD_BODY)
    stalled = [socket.create_connection((HOST, server.port), timeout=10) for _ in range(3)]
    try:
        for sock in stalled:
            sock.sendall(request[:len(request) - 10])
        for _ in range(3):
            assert_good_request(server.port)
        # the stalled requests complete once the rest arrives
        for sock in stalled:
            sock.sendall(request[len(request) - 10:])
            status, headers, _ = read_response(sock.makefile("rb"))
            assert status == 200, headers
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize("data", [
    b"\x00\x01\x02garbage\r\n\r\n",
    b"NOT AN HTTP REQUEST\r\n\r\n",
    b"GET /api/health/live HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
    b"GET /api/health/live HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"POST /api/infer/simple HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /api/infer/simple HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_malformed_http_is_400_and_closes(server, data):
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(data)
        stream = sock.makefile("rb")
        status, headers, _ = read_response(stream)
        assert status == 400
        assert _connection_closed(stream)


def test_oversized_request_headers_are_refused(server):
    head = (f"GET /api/health/live HTTP/1.1\r\nHost: {HOST}\r\n"
            f"X-Big: {'a' * 1_000_000}\r\n\r\n").encode()
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        try:
            sock.sendall(head)
        except (ConnectionResetError, BrokenPipeError):
            return  # refused before it was all sent
        try:
            response = read_response(sock.makefile("rb"))
        except ConnectionResetError:
            return
    assert response is not None
    assert response[0] in (400, 431)


def test_http_1_0_request(server):
    """An HTTP/1.0 client gets an answer and the connection closes."""
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(b"GET /api/health/ready HTTP/1.0\r\n\r\n")
        stream = sock.makefile("rb")
        status, headers, _ = read_response(stream)
        assert status == 200
        assert nv_status(headers).code == Code.SUCCESS
        assert _connection_closed(stream)


def test_expect_100_continue_is_answered(server):
    request = raw_request("POST", "/api/infer/simple?format=binary",
                          {"NV-InferRequest": SIMPLE_HEADER, "Expect": "100-continue"},
                          GOOD_BODY)
    head, body = request[:len(request) - len(GOOD_BODY)], GOOD_BODY
    with socket.create_connection((HOST, server.port), timeout=2) as sock:
        sock.sendall(head)
        stream = sock.makefile("rb")
        try:
            first = stream.readline()
        except socket.timeout:
            first = b""
        assert first.startswith(b"HTTP/1.1 100"), first
        assert stream.readline() == b"\r\n"
        sock.sendall(body)
        status, _, _ = read_response(stream)
        assert status == 200
