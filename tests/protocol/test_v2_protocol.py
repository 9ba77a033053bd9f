"""protocol.v2 without sockets: the HTTP body split (JSON header + binary
part), request validation errors, Triton's error-code -> HTTP status table,
and the config as Triton's JSON (int64 as numbers, enums as names)."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format

from pyserver.errors import Code, ServerError
from pyserver.protocol import v2
from pyserver.protos import model_config_pb2 as mc


def _doc(**extra):
    doc = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2],
                       "parameters": {"binary_data_size": 8}}]}
    doc.update(extra)
    return json.dumps(doc).encode()


def test_binary_split():
    head = _doc(outputs=[{"name": "OUTPUT0", "parameters": {"classification": 2}}],
                parameters={"binary_data_output": True})
    request = v2.parse_http_body(head + b"\1" * 8, str(len(head)).encode())
    given = request.inputs[0]
    name, datatype, shape, data = given.name, given.datatype, list(given.shape), given.data
    assert (name, datatype, shape, bytes(data)) == ("INPUT0", "FP32", [1, 2], b"\1" * 8)
    assert request.outputs == [("OUTPUT0", 2, True)]


@pytest.mark.parametrize("body, length, fragment", [
    (b"{nope", None, "JSON"),
    (b"[1, 2]", None, "JSON object"),
    (_doc() + b"\0" * 4, str(len(_doc())).encode(), "binary_data_size"),
    (_doc() + b"\0" * 9, str(len(_doc())).encode(), "additional"),
    (_doc(), b"x", "Inference-Header-Content-Length"),
    (_doc(), b"100000", "Inference-Header-Content-Length"),
    (json.dumps({"inputs": [{"name": "I", "datatype": "FP32", "shape": ["a"]}]}).encode(),
     None, "shape"),
    (json.dumps({"inputs": [{"name": "I", "datatype": "FP32", "shape": [1]}]}).encode(),
     None, "neither"),
])
def test_bad_requests(body, length, fragment):
    with pytest.raises(ServerError) as err:
        v2.parse_http_body(body, length)
    assert err.value.code == Code.INVALID_ARG and fragment in err.value.message


def test_shared_memory_input_becomes_a_reference():
    body = json.dumps({"inputs": [{"name": "I", "datatype": "FP32", "shape": [4],
                                   "parameters": {"shared_memory_region": "r",
                                                  "shared_memory_offset": 8,
                                                  "shared_memory_byte_size": 16}}]}).encode()
    request = v2.parse_http_body(body, None).request
    ref = request.inputs[0].shared_memory
    assert request.shared_memory and request.inputs[0].data is None
    assert (ref.region, ref.offset, ref.byte_size) == ("r", 8, 16)


@pytest.mark.parametrize("params, fragment", [
    ({"shared_memory_region": "r"}, "needs shared_memory_byte_size"),
    ({"shared_memory_region": 3, "shared_memory_byte_size": 4}, "must be a region name"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": -1}, "shared_memory_byte_size"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": 4, "shared_memory_offset": "0"},
     "shared_memory_offset"),
    ({"shared_memory_byte_size": 4}, "need shared_memory_region"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": 4, "binary_data_size": 4},
     "also data"),
])
def test_bad_shared_memory_parameters(params, fragment):
    body = json.dumps({"inputs": [{"name": "I", "datatype": "FP32", "shape": [1],
                                   "parameters": params}]}).encode()
    with pytest.raises(ServerError) as err:
        v2.parse_http_body(body, None)
    assert err.value.code == Code.INVALID_ARG and fragment in err.value.message


def test_http_status_table():
    assert [v2.http_status(c) for c in (Code.INVALID_ARG, Code.NOT_FOUND, Code.UNAVAILABLE,
                                        Code.INTERNAL, Code.UNSUPPORTED, Code.UNKNOWN,
                                        Code.ALREADY_EXISTS, Code.FORBIDDEN)] == [
        400, 404, 503, 500, 501, 400, 400, 403]


def test_config_json_shape():
    config = text_format.Parse(
        'name: "m" platform: "onnxruntime_onnx" max_batch_size: 4 '
        'input [ { name: "I" data_type: TYPE_FP32 dims: [ 3, -1 ] } ] '
        'output [ { name: "O" data_type: TYPE_STRING dims: [ 1 ] } ] '
        'dynamic_batching { max_queue_delay_microseconds: 100 } '
        'parameters { key: "k" value: { string_value: "v" } }', mc.ModelConfig())
    doc = v2.message_to_dict(config)
    assert doc["input"][0] == {"name": "I", "data_type": "TYPE_FP32", "dims": [3, -1]}
    assert doc["output"][0]["data_type"] == "TYPE_STRING"
    assert doc["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert doc["parameters"] == {"k": {"string_value": "v"}}


def test_grpc_request_typed_and_raw_contents():
    from pyserver.protos import v2_grpc_service_pb2 as pb
    typed = pb.ModelInferRequest(model_name="m", id="t")
    typed.inputs.add(name="A", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend(
        [1.5, 2.5])
    typed.inputs.add(name="S", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    typed.outputs.add(name="O").parameters["classification"].int64_param = 3
    request = v2.request_from_grpc(typed)
    assert request.request.id == "t"
    assert [(i.name, i.datatype, list(i.shape), i.data) for i in request.inputs] == [
        ("A", "FP32", [1, 2], [1.5, 2.5]), ("S", "BYTES", [1], [b"x"])]
    assert request.outputs == [("O", 3, True)]
    raw = pb.ModelInferRequest(raw_input_contents=[b"\0" * 8])
    raw.inputs.add(name="A", datatype="FP32", shape=[1, 2])
    assert bytes(v2.request_from_grpc(raw).inputs[0].data) == b"\0" * 8
    raw.raw_input_contents.append(b"extra")
    with pytest.raises(ServerError) as err:
        v2.request_from_grpc(raw)
    assert err.value.code == Code.INVALID_ARG
    fp16 = pb.ModelInferRequest()
    fp16.inputs.add(name="H", datatype="FP16", shape=[1])
    with pytest.raises(ServerError) as err:
        v2.request_from_grpc(fp16)
    assert "raw_input_contents" in err.value.message
