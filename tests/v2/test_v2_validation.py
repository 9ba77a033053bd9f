"""v2 HTTP validation before allocation (issue 15): wrong JSON types, deep
nesting, shape products beyond 64 bits, out-of-range classification counts
and declared sizes beyond the body are 400s naming the field, never a 500;
the server keeps serving with its memory bounded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ServerProcess, http_request
from validation_helpers import (HUGE_COUNT, MEMORY_SLACK_BYTES, build_validation_store,
                                peak_rss_bytes)

X = np.arange(32, dtype=np.float32).reshape(2, 16)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = build_validation_store(tmp_path_factory.mktemp("store"))
    srv = ServerProcess(store, workdir=tmp_path_factory.mktemp("server"))
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


def _good_doc() -> dict:
    return {"inputs": [{"name": f"INPUT{i}", "datatype": "FP32", "shape": [2, 16],
                        "data": X.ravel().tolist()} for i in range(2)]}


def _post(server, model: str, body: bytes, headers: dict | None = None):
    return http_request(server.port, "POST", f"/v2/models/{model}/infer", headers or {}, body)


def _infer_json(server, doc, model: str = "simple"):
    return _post(server, model, doc if isinstance(doc, bytes) else json.dumps(doc).encode())


def _assert_400(result, *fragments: str) -> str:
    status, _, body = result
    assert status == 400, result
    message = json.loads(body)["error"]
    for fragment in fragments:
        assert fragment in message, message
    assert "<class" not in message and "Traceback" not in message
    return message


@pytest.fixture(autouse=True)
def still_serves(server):
    yield
    status, _, body = _infer_json(server, _good_doc())
    assert status == 200, body


def test_json_nested_thousands_deep_is_400(server):
    body = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    _assert_400(_infer_json(server, body), "JSON")


def test_data_lists_nested_deeper_than_the_limit_are_400(server):
    doc = _good_doc()
    doc["inputs"][0]["data"] = json.loads("[" * 100 + "1" + "]" * 100)
    _assert_400(_infer_json(server, doc), "INPUT0", "nests deeper")


@pytest.mark.parametrize("field, value, fragment", [
    ("parameters", [1], "'parameters'"),
    ("parameters", "x", "'parameters'"),
    ("outputs", {"name": "OUTPUT0"}, "'outputs'"),
    ("outputs", [{"name": 5}], "output"),
    ("outputs", [{"name": "OUTPUT0", "parameters": [1]}], "OUTPUT0"),
    ("outputs", [{"name": "OUTPUT0", "parameters": {"binary_data": "yes"}}], "binary_data"),
    ("inputs", "INPUT0", "inputs"),
    ("inputs", [["INPUT0"]], "input"),
    ("id", 7, "'id'"),
])
def test_a_field_of_the_wrong_json_type_is_400_naming_it(server, field, value, fragment):
    doc = _good_doc()
    doc[field] = value
    _assert_400(_infer_json(server, doc), fragment)


def test_input_parameters_of_the_wrong_type_are_400(server):
    doc = _good_doc()
    doc["inputs"][0]["parameters"] = "binary"
    _assert_400(_infer_json(server, doc), "INPUT0", "parameters")


def test_a_shape_product_beyond_64_bits_is_400(server):
    doc = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2**40, 2**40],
                       "data": [1.0]}]}
    _assert_400(_infer_json(server, doc, "grid"), "INPUT0", "shape")


def test_a_dimension_beyond_int64_is_400(server):
    doc = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2**70],
                       "data": [1.0]}]}
    _assert_400(_infer_json(server, doc, "floats"), "INPUT0")


@pytest.mark.parametrize("count", [2**40, -1, True, 1.5])
def test_a_classification_count_out_of_range_is_400(server, count):
    doc = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 8], "data": [0.0] * 8}],
           "outputs": [{"name": "OUTPUT", "parameters": {"classification": count}}]}
    _assert_400(_infer_json(server, doc, "classifier"), "OUTPUT", "classification")


def test_a_priority_out_of_range_is_400(server):
    doc = _good_doc()
    doc["parameters"] = {"priority": 2**40}
    _assert_400(_infer_json(server, doc), "priority")


def test_huge_declared_strings_in_4_binary_bytes_allocate_nothing(server):
    before = peak_rss_bytes(server.proc.pid)
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "BYTES",
                                   "shape": [1, HUGE_COUNT],
                                   "parameters": {"binary_data_size": 4}}]}).encode()
    result = _post(server, "strings", head + b"\0" * 4,
                   {"Inference-Header-Content-Length": str(len(head))})
    _assert_400(result, "INPUT0", "string elements")
    assert peak_rss_bytes(server.proc.pid) - before < MEMORY_SLACK_BYTES


def test_a_huge_declared_tensor_in_4_binary_bytes_is_400(server):
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32",
                                   "shape": [1, 2**40],
                                   "parameters": {"binary_data_size": 4}}]}).encode()
    result = _post(server, "floats", head + b"\0" * 4,
                   {"Inference-Header-Content-Length": str(len(head))})
    _assert_400(result, "INPUT0", "unexpected size 4")


def test_a_data_count_that_differs_from_the_shape_is_400(server):
    doc = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 10**9],
                       "data": [1.0, 2.0]}]}
    _assert_400(_infer_json(server, doc, "floats"), "INPUT0", "elements")


def test_non_numeric_data_is_400(server):
    doc = _good_doc()
    doc["inputs"][0]["data"] = ["a"] * 32
    _assert_400(_infer_json(server, doc), "INPUT0")


def test_repository_index_with_a_non_boolean_ready_is_400(server):
    result = http_request(server.port, "POST", "/v2/repository/index", {}, b'{"ready": "yes"}')
    _assert_400(result, "'ready'")
