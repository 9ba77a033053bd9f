"""POST /api/infer on the example store (facts §2.2, §2.4-§2.7)."""

from __future__ import annotations

import http.client
import re
import socket
import threading

import numpy as np
import pytest
from conftest import (HOST, Code, add_sub_body, http_request, infer, nv_infer_response, nv_status,
                      raw_request, read_response, request_header, split_infer_body, text_form)
from pyserver.examples.onnx_models import classifier_reference
from pyserver.examples.store import LABELS
from pyserver.protos import api_pb2
from pyserver.protos import model_config_pb2 as mc

RNG = np.random.default_rng(1234)


def _add_sub(port, model, dtype, batch_size, request_id=0, binary=True, outputs=(),
             connection=None):
    """Runs add/sub; returns (a, b, status, headers, body)."""
    shape = (batch_size, 16) if batch_size else (16,)
    if np.dtype(dtype).kind == "f":
        a = RNG.standard_normal(shape).astype(dtype)
        b = RNG.standard_normal(shape).astype(dtype)
    else:
        a = RNG.integers(-1000, 1000, shape).astype(dtype)
        b = RNG.integers(-1000, 1000, shape).astype(dtype)
    header = request_header(batch_size or 1, ["INPUT0", "INPUT1"], outputs, request_id)
    status, headers, body = infer(port, model, header, add_sub_body(a, b), binary=binary,
                                  connection=connection)
    return a, b, status, headers, body


def _check_add_sub(a, b, status, headers, body, dtype, binary=True, expect_outputs=None):
    assert status == 200, (headers, body)
    assert nv_status(headers).code == Code.SUCCESS
    assert headers["content-type"] == "application/octet-stream"
    response = nv_infer_response(headers)
    raw, trailer = split_infer_body(body, response, binary)
    expected = {"OUTPUT0": a + b, "OUTPUT1": a - b}
    names = expect_outputs or ["OUTPUT0", "OUTPUT1"]
    assert [o.name for o in response.output] == names
    for name in names:
        np.testing.assert_array_equal(np.frombuffer(raw[name], dtype).reshape(a.shape),
                                      expected[name])
    return response, trailer


@pytest.mark.parametrize("batch_size", [1, 8])
def test_simple_add_sub(server, batch_size):
    a, b, *result = _add_sub(server.port, "simple", np.float32, batch_size, request_id=42)
    response, trailer = _check_add_sub(a, b, *result, np.float32)
    assert text_form(trailer) == response
    assert response.model_name == "simple"
    assert response.model_version == 1
    assert response.batch_size == batch_size
    assert response.id == 42
    for output in response.output:
        assert list(output.raw.dims) == [16]
        assert output.raw.batch_byte_size == 16 * 4 * batch_size
        assert not output.batch_classes


def test_simple_batch_sizes_in_between(server):
    for batch_size in (2, 3, 5, 7):
        a, b, *result = _add_sub(server.port, "simple", np.float32, batch_size)
        _check_add_sub(a, b, *result, np.float32)


def test_text_response_header(server):
    """Without ?format=binary the trailing header is multi-line text format."""
    a, b, status, headers, body = _add_sub(server.port, "simple", np.float32, 2, request_id=9,
                                           binary=False)
    response, trailer = _check_add_sub(a, b, status, headers, body, np.float32, binary=False)
    assert trailer == response
    assert body[2 * 2 * 64:].count(b"\n") > 3
    assert trailer.id == 9


def test_binary_and_text_carry_the_same_header(server):
    a = np.ones((1, 16), np.float32)
    header = request_header(1, ["INPUT0", "INPUT1"], request_id=5)
    _, h_bin, body_bin = infer(server.port, "simple", header, add_sub_body(a, a), binary=True)
    _, h_txt, body_txt = infer(server.port, "simple", header, add_sub_body(a, a), binary=False)
    response = nv_infer_response(h_bin)
    assert nv_infer_response(h_txt) == response
    raw_bin, trailer_bin = split_infer_body(body_bin, response, True)
    raw_txt, trailer_txt = split_infer_body(body_txt, response, False)
    assert raw_bin == raw_txt
    assert text_form(trailer_bin) == trailer_txt


def test_no_id_when_request_has_none(server):
    a, b, *result = _add_sub(server.port, "simple", np.float32, 1)
    response, trailer = _check_add_sub(a, b, *result, np.float32)
    assert response.id == 0 and trailer.id == 0
    assert not re.search(r"(^| )id:", result[1]["nv-inferresponse"])


def test_nv_infer_response_is_one_line(server):
    a, b, status, headers, body = _add_sub(server.port, "simple", np.float32, 1, request_id=3)
    assert "\n" not in headers["nv-inferresponse"]
    assert "\n" not in headers["nv-status"]


def test_simple_int32(server):
    for batch_size in (1, 8):
        a, b, *result = _add_sub(server.port, "simple_int32", np.int32, batch_size)
        response, _ = _check_add_sub(a, b, *result, np.int32)
        assert response.model_name == "simple_int32"
        assert response.output[0].raw.batch_byte_size == 64 * batch_size


def test_simple_nobatch(server):
    """max_batch_size 0: dims are the full shape, batch_size must be 1."""
    a, b, *result = _add_sub(server.port, "simple_nobatch", np.float32, 0)
    response, _ = _check_add_sub(a, b, *result, np.float32)
    assert response.batch_size == 1
    for output in response.output:
        assert list(output.raw.dims) == [16]
        assert output.raw.batch_byte_size == 64


def test_one_of_two_outputs(server):
    a, b, *result = _add_sub(server.port, "simple", np.float32, 2, outputs=["OUTPUT1"])
    response, _ = _check_add_sub(a, b, *result, np.float32, expect_outputs=["OUTPUT1"])
    raw, trailer = split_infer_body(result[2], response)
    assert list(raw) == ["OUTPUT1"] and len(raw["OUTPUT1"]) == 2 * 64
    assert text_form(trailer) == response


def test_outputs_in_request_order(server):
    a, b, *result = _add_sub(server.port, "simple", np.float32, 3,
                             outputs=["OUTPUT1", "OUTPUT0"])
    _check_add_sub(a, b, *result, np.float32, expect_outputs=["OUTPUT1", "OUTPUT0"])


def test_request_dims_and_batch_byte_size_accepted(server):
    a = RNG.standard_normal((2, 16)).astype(np.float32)
    header = request_header(2, [{"name": "INPUT0", "dims": [16], "batch_byte_size": 128},
                                {"name": "INPUT1", "dims": [16]}])
    _check_add_sub(a, a, *infer(server.port, "simple", header, add_sub_body(a, a)), np.float32)


# -- classification -------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 3])
def test_classifier_top_k(server, batch_size):
    x = RNG.standard_normal((batch_size, 8)).astype(np.float32)
    header = request_header(batch_size, ["INPUT"], [("OUTPUT", 3)], request_id=11)
    status, headers, body = infer(server.port, "classifier", header, x.tobytes())
    assert status == 200, headers
    response = nv_infer_response(headers)
    assert response.id == 11
    assert response.batch_size == batch_size
    (output,) = response.output
    assert output.name == "OUTPUT"
    assert not output.HasField("raw")
    assert len(output.batch_classes) == batch_size
    # no raw bytes: the body is the header alone
    assert text_form(api_pb2.InferResponseHeader.FromString(body)) == response
    reference = classifier_reference(x)
    for scores, classes in zip(reference, output.batch_classes):
        order = np.argsort(-scores, kind="stable")[:3]
        assert [c.idx for c in classes.cls] == order.tolist()
        values = [c.value for c in classes.cls]
        assert values == sorted(values, reverse=True)
        np.testing.assert_allclose(values, scores[order], rtol=1e-5, atol=1e-6)
        assert [c.label for c in classes.cls] == [LABELS[i] for i in order]


def test_classifier_count_larger_than_classes(server):
    x = RNG.standard_normal((1, 8)).astype(np.float32)
    header = request_header(1, ["INPUT"], [("OUTPUT", 50)])
    status, headers, _ = infer(server.port, "classifier", header, x.tobytes())
    assert status == 200
    (classes,) = nv_infer_response(headers).output[0].batch_classes
    assert sorted(c.idx for c in classes.cls) == list(range(10))


def test_classifier_raw_output(server):
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    header = request_header(2, ["INPUT"], ["OUTPUT"])
    status, headers, body = infer(server.port, "classifier", header, x.tobytes())
    assert status == 200
    response = nv_infer_response(headers)
    raw, _ = split_infer_body(body, response)
    np.testing.assert_allclose(np.frombuffer(raw["OUTPUT"], np.float32).reshape(2, 10),
                               classifier_reference(x), rtol=1e-5, atol=1e-6)


# -- versions ---------------------------------------------------------------------

@pytest.mark.parametrize("version, added", [(None, 3.0), (1, 1.0), (2, 2.0), (3, 3.0)])
def test_versioned(server, version, added):
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    header = request_header(2, ["INPUT0"])
    status, headers, body = infer(server.port, "versioned", header, x.tobytes(), version=version)
    assert status == 200, headers
    response = nv_infer_response(headers)
    assert response.model_version == int(added)
    raw, _ = split_infer_body(body, response)
    np.testing.assert_allclose(np.frombuffer(raw["OUTPUT0"], np.float32).reshape(2, 16),
                               x + np.float32(added), rtol=1e-6)


# -- connections -------------------------------------------------------------------

def test_keep_alive(server):
    """Many requests on one connection: the server never closes it."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=20)
    try:
        local = None
        for i in range(60):
            a, b, *result = _add_sub(server.port, "simple", np.float32, 1 + i % 8,
                                     request_id=i + 1, connection=conn)
            response, _ = _check_add_sub(a, b, *result, np.float32)
            assert response.id == i + 1
            assert "close" not in result[1].get("connection", "")
            name = conn.sock.getsockname()
            assert local in (None, name), "the connection was re-opened"
            local = name
        # other endpoints on the same connection too
        assert http_request(server.port, "GET", "/api/health/ready", connection=conn)[0] == 200
        assert http_request(server.port, "GET", "/api/status/simple", connection=conn)[0] == 200
        assert conn.sock.getsockname() == local
    finally:
        conn.close()


def test_pipelined_requests(server):
    """Requests written back to back on one socket get answers in order."""
    inputs = [RNG.standard_normal((n, 16)).astype(np.float32) for n in (1, 4, 2)]
    data = b""
    for i, x in enumerate(inputs):
        header = request_header(len(x), ["INPUT0", "INPUT1"], request_id=100 + i)
        data += raw_request("POST", "/api/infer/simple?format=binary",
                            {"NV-InferRequest": header}, add_sub_body(x, x))
    data += raw_request("GET", "/api/health/live")
    with socket.create_connection((HOST, server.port), timeout=20) as sock:
        sock.sendall(data)
        stream = sock.makefile("rb")
        for i, x in enumerate(inputs):
            status, headers, body = read_response(stream)
            assert status == 200, headers
            response = nv_infer_response(headers)
            assert response.id == 100 + i
            assert response.batch_size == len(x)
            raw, _ = split_infer_body(body, response)
            np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT0"], np.float32), (x + x).ravel())
        status, headers, _ = read_response(stream)
        assert status == 200
        assert nv_status(headers).code == Code.SUCCESS


def test_chunked_request_body(server):
    a = RNG.standard_normal((2, 16)).astype(np.float32)
    body = add_sub_body(a, a)
    header = request_header(2, ["INPUT0", "INPUT1"])
    head = (f"POST /api/infer/simple?format=binary HTTP/1.1\r\nHost: {HOST}\r\n"
            f"NV-InferRequest: {header}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50]), body[i:i + 50])
                      for i in range(0, len(body), 50))
    with socket.create_connection((HOST, server.port), timeout=20) as sock:
        sock.sendall(head + chunks + b"0\r\n\r\n")
        status, headers, data = read_response(sock.makefile("rb"))
    assert status == 200, headers
    raw, _ = split_infer_body(data, nv_infer_response(headers))
    np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT0"], np.float32), (a + a).ravel())


def test_response_data_type_in_binary_trailer_only(server):
    """Output.data_type (1.12) would break the text parser of the 1.11
    client, so NV-InferResponse leaves it out; the binary trailer has it."""
    _, _, status, headers, body = _add_sub(server.port, "simple_int32", np.int32, 1)
    assert status == 200
    response = nv_infer_response(headers)
    assert "data_type" not in headers["nv-inferresponse"]
    _, trailer = split_infer_body(body, response)
    assert {o.data_type for o in trailer.output} == {mc.TYPE_INT32}


def test_pipelined_requests_with_an_error_between(server):
    x = RNG.standard_normal((1, 16)).astype(np.float32)
    header = request_header(1, ["INPUT0", "INPUT1"], request_id=1)
    good = raw_request("POST", "/api/infer/simple?format=binary", {"NV-InferRequest": header},
                       add_sub_body(x, x))
    bad = raw_request("POST", "/api/infer/no_such_model", {"NV-InferRequest": header},
                      add_sub_body(x, x))
    with socket.create_connection((HOST, server.port), timeout=20) as sock:
        sock.sendall(good + bad + good)
        stream = sock.makefile("rb")
        answers = [read_response(stream) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 400, 200]
    assert nv_status(answers[1][1]).code == Code.NOT_FOUND


def test_connection_close_request_header(server):
    x = RNG.standard_normal((1, 16)).astype(np.float32)
    request = raw_request("POST", "/api/infer/simple?format=binary",
                          {"NV-InferRequest": request_header(1, ["INPUT0", "INPUT1"]),
                           "Connection": "close"}, add_sub_body(x, x))
    with socket.create_connection((HOST, server.port), timeout=20) as sock:
        sock.sendall(request)
        stream = sock.makefile("rb")
        status, headers, _ = read_response(stream)
        assert status == 200
        assert stream.read() == b""  # the server closed


def test_many_concurrent_clients(server):
    """Concurrent connections over several models each get their own answer."""
    errors: list[str] = []

    def client(index: int) -> None:
        rng = np.random.default_rng(index)
        conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
        try:
            for i in range(8):
                model = ("simple", "versioned", "classifier")[(index + i) % 3]
                request_id = index * 100 + i + 1
                batch_size = 1 + (index + i) % 4
                if model == "simple":
                    x = rng.standard_normal((batch_size, 16)).astype(np.float32)
                    header = request_header(batch_size, ["INPUT0", "INPUT1"], ["OUTPUT1"],
                                            request_id)
                    body, expected = add_sub_body(x, 2 * x), x - 2 * x
                elif model == "versioned":
                    x = rng.standard_normal((batch_size, 16)).astype(np.float32)
                    header = request_header(batch_size, ["INPUT0"], request_id=request_id)
                    body, expected = x.tobytes(), x + np.float32(3)
                else:
                    x = rng.standard_normal((batch_size, 8)).astype(np.float32)
                    header = request_header(batch_size, ["INPUT"], ["OUTPUT"], request_id)
                    body, expected = x.tobytes(), classifier_reference(x)
                status, headers, data = infer(server.port, model, header, body, connection=conn)
                response = nv_infer_response(headers)
                if status != 200 or response.id != request_id:
                    errors.append(f"{model} {request_id}: {status} {headers}")
                    continue
                raw, _ = split_infer_body(data, response)
                got = np.frombuffer(next(iter(raw.values())), np.float32)
                if not np.allclose(got, expected.ravel(), rtol=1e-5, atol=1e-6):
                    errors.append(f"{model} {request_id}: wrong outputs")
        except Exception as exc:  # reported below
            errors.append(f"client {index}: {exc!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:5]
