"""v1 HTTP validation before allocation (issue 15): sizes, counts and shape
products a client declares are checked against what it sent, in Python
integers; every client mistake is a 400 with INVALID_ARG naming the field,
and the server keeps serving with its memory bounded."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import Code, ServerProcess, add_sub_body, assert_error, infer, request_header
from validation_helpers import (HUGE_COUNT, MEMORY_SLACK_BYTES, build_validation_store,
                                peak_rss_bytes)

ONE = np.arange(16, dtype=np.float32).reshape(1, 16)
SIMPLE_BODY = add_sub_body(ONE, ONE)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = build_validation_store(tmp_path_factory.mktemp("store"))
    srv = ServerProcess(store, workdir=tmp_path_factory.mktemp("server"))
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(autouse=True)
def still_serves(server):
    yield
    status, headers, _ = infer(server.port, "simple", request_header(1, ["INPUT0", "INPUT1"]),
                               SIMPLE_BODY)
    assert status == 200, headers


def test_batch_size_beyond_uint32_is_invalid_arg(server):
    header = 'batch_size: 4294967296 input { name: "INPUT0" } input { name: "INPUT1" }'
    assert_error(infer(server.port, "simple", header, SIMPLE_BODY), Code.INVALID_ARG,
                 "batch_size")


def test_request_id_beyond_uint64_is_invalid_arg(server):
    header = request_header(1, ["INPUT0", "INPUT1"]) + " id: 18446744073709551616"
    assert_error(infer(server.port, "simple", header, SIMPLE_BODY), Code.INVALID_ARG,
                 "request id", "out of range")


def test_the_largest_uint64_request_id_is_echoed(server):
    header = request_header(1, ["INPUT0", "INPUT1"]) + " id: 18446744073709551615"
    status, headers, _ = infer(server.port, "simple", header, SIMPLE_BODY)
    assert status == 200 and "id: 18446744073709551615" in headers["nv-inferresponse"]


def test_a_shape_product_beyond_64_bits_is_invalid_arg(server):
    header = request_header(1, [{"name": "INPUT0", "dims": [2**40, 2**40]}])
    assert_error(infer(server.port, "grid", header, b"\0" * 4), Code.INVALID_ARG, "INPUT0",
                 "shape")


def test_a_huge_declared_tensor_in_a_small_body_is_invalid_arg(server):
    header = request_header(1, [{"name": "INPUT0", "dims": [2**40]}])
    assert_error(infer(server.port, "floats", header, b"\0" * 4), Code.INVALID_ARG,
                 "unexpected size 4", "INPUT0")


def test_huge_declared_strings_in_a_4_byte_body_allocate_nothing(server):
    before = peak_rss_bytes(server.proc.pid)
    header = request_header(1, [{"name": "INPUT0", "dims": [HUGE_COUNT], "batch_byte_size": 4}])
    assert_error(infer(server.port, "strings", header, b"\0" * 4), Code.INVALID_ARG, "INPUT0",
                 "string elements")
    assert peak_rss_bytes(server.proc.pid) - before < MEMORY_SLACK_BYTES


def test_a_negative_dimension_is_invalid_arg(server):
    header = request_header(1, [{"name": "INPUT0", "dims": [-4]}])
    assert_error(infer(server.port, "floats", header, b"\0" * 16), Code.INVALID_ARG, "INPUT0")


def test_a_classification_of_a_batch_is_answered(server):
    x = np.ones((2, 8), np.float32)
    header = request_header(2, ["INPUT"], [("OUTPUT", 3)])
    status, headers, _ = infer(server.port, "classifier", header, x.tobytes())
    assert status == 200, headers
