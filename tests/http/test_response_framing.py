"""How answers are framed on the wire, whichever parser (tests/run.py runs this once
per parser): a body sent as parts (the JSON head, then output tensors written from the
runtime's buffers as they are) arrives whole and in order, with a content-length that
counts every part; large and small answers pipelined on one connection stay in order;
header values cannot split the head."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from conftest import (HOST, ServerProcess, nv_infer_response, raw_request, read_response,
                      request_header, split_infer_body, write_identity)
from pyserver.http.connection import HeaderBlock, body_length

LARGE = 1 << 18   # FP32 elements: a 1 MiB output, far above the separate-write size
SMALL = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    write_identity(store, "large", dims=[LARGE], max_batch_size=0)
    write_identity(store, "small", dims=[SMALL], max_batch_size=0)
    srv = ServerProcess(store, workdir=tmp_path_factory.mktemp("server"))
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


def _v2_binary_request(model: str, data: np.ndarray) -> bytes:
    head = json.dumps({
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(data.shape),
                    "parameters": {"binary_data_size": data.nbytes}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    return raw_request("POST", f"/v2/models/{model}/infer",
                       {"Inference-Header-Content-Length": str(len(head))},
                       head + data.tobytes())


def _binary_output(answer: tuple[int, dict, bytes]) -> tuple[dict, np.ndarray]:
    status, headers, body = answer
    assert status == 200, body[:300]
    length = int(headers["inference-header-content-length"])
    doc = json.loads(body[:length])
    size = doc["outputs"][0]["parameters"]["binary_data_size"]
    assert len(body) == length + size
    return doc, np.frombuffer(body[length:], np.float32)


def _exchange(port: int, requests: list[bytes]) -> list[tuple[int, dict, bytes]]:
    with socket.create_connection((HOST, port), timeout=20) as sock:
        sock.sendall(b"".join(requests))
        stream = sock.makefile("rb")
        return [read_response(stream) for _ in requests]


def test_a_large_binary_output_arrives_whole(server):
    data = np.random.default_rng(1).random(LARGE, dtype=np.float32)
    [answer] = _exchange(server.port, [_v2_binary_request("large", data)])
    doc, out = _binary_output(answer)
    assert doc["outputs"][0]["shape"] == [LARGE]
    np.testing.assert_array_equal(out, data)


def test_large_and_small_answers_pipelined_stay_in_order(server):
    rng = np.random.default_rng(2)
    tensors = [rng.random(LARGE if i % 2 == 0 else SMALL, dtype=np.float32) for i in range(6)]
    requests = [_v2_binary_request("large" if t.size == LARGE else "small", t) for t in tensors]
    for answer, sent in zip(_exchange(server.port, requests), tensors):
        _, out = _binary_output(answer)
        np.testing.assert_array_equal(out, sent)


def test_a_large_v1_output_arrives_whole(server):
    data = np.random.default_rng(3).random(LARGE, dtype=np.float32)
    header = request_header(1, [{"name": "INPUT0", "batch_byte_size": data.nbytes}],
                            ["OUTPUT0"])
    request = raw_request("POST", "/api/infer/large?format=binary",
                          {"NV-InferRequest": header}, data.tobytes())
    [(status, headers, body)] = _exchange(server.port, [request])
    assert status == 200, body[:300]
    raw, trailer = split_infer_body(body, nv_infer_response(headers))
    assert trailer.output[0].name == "OUTPUT0"
    np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT0"], np.float32), data)


def test_header_block_replaces_cr_and_lf_in_values():
    block = HeaderBlock([(b"x-note", b"one\r\nset-cookie: evil"), (b"x-plain", b"two")])
    assert block.lines == b"x-note: one  set-cookie: evil\r\nx-plain: two\r\n"
    assert list(block) == [(b"x-note", b"one  set-cookie: evil"), (b"x-plain", b"two")]


def test_body_length_counts_every_part():
    view = memoryview(np.zeros(5, np.float32)).cast("B")
    assert body_length([b"abc", view, b""]) == 3 + 20
    assert body_length(b"abcd") == 4
