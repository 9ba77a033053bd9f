"""v1 gRPC translation (pyserver.protocol.v1_grpc), without sockets:
server API plans from InferRequest headers, and InferResponse bytes written
by hand that protobuf must read back exactly."""

import numpy as np
import pytest
from google.protobuf import text_format

from pyserver.api import plan as api_plan
from pyserver.api.request import LATEST
from pyserver.errors import Code, ServerError
from pyserver.protocol import v1_grpc, v1_infer
from pyserver.protos import api_pb2
from pyserver.protos import grpc_service_pb2 as gs
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import request_status_pb2 as rs
from pyserver.repository import config as cfg
from pyserver.repository.manager import ModelVersion

CONFIG = """
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "A" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "P" data_type: TYPE_FP32 dims: [ 3 ] },
         { name: "Q" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


def version() -> ModelVersion:
    config = cfg.normalize(text_format.Parse(CONFIG, mc.ModelConfig()))
    return ModelVersion("m", 2, config, labels={"Q": ["x", "y", "z"]})


def header(request_id: int = 0, batch_size: int = 2) -> api_pb2.InferRequestHeader:
    h = api_pb2.InferRequestHeader(batch_size=batch_size, id=request_id)
    h.input.add(name="A")
    h.output.add(name="P")
    h.output.add(name="Q").cls.count = 2
    return h


def request_of(h: api_pb2.InferRequestHeader, raw=()):
    return v1_infer.TemplateCache().from_header(h).request("m", LATEST, 0, list(raw))


def plan_for(v: ModelVersion, h: api_pb2.InferRequestHeader) -> api_plan.InferPlan:
    return api_plan.plan_for(v, request_of(h))


def test_requests_differing_only_in_id_share_a_plan():
    v = version()
    first, second = header(request_id=1), header(request_id=2)
    assert plan_for(v, first) is plan_for(v, second)
    assert first.id == 0 and second.id == 0


def test_plan_for_a_bad_header_is_invalid_arg():
    bad = header(batch_size=5)
    with pytest.raises(ServerError) as info:
        plan_for(version(), bad)
    assert info.value.code == Code.INVALID_ARG


def test_malformed_bytes_are_invalid_arg():
    with pytest.raises(ServerError) as info:
        v1_grpc.parse(gs.InferRequest, b"\xff\xff\xff")
    assert info.value.code == Code.INVALID_ARG
    assert "malformed InferRequest" in info.value.message


def test_success_status_bytes_are_a_request_status():
    encoder = v1_grpc.StatusEncoder("inference:7")
    status = rs.RequestStatus.FromString(encoder.success(300))
    assert status == rs.RequestStatus(code=rs.SUCCESS, server_id="inference:7", request_id=300)


def test_infer_response_reads_back_with_raw_outputs_aligned():
    v = version()
    request = request_of(header())
    plan = api_plan.plan_for(v, request)
    p = np.arange(6, dtype=np.float32).reshape(2, 3)
    q = np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]], np.float32)
    result = v1_infer.encode_response(plan.response(request, {"P": p, "Q": q}), request_id=99)
    status = v1_grpc.StatusEncoder("s").success(5)
    response = gs.InferResponse.FromString(v1_grpc.infer_response(status, result.binary,
                                                                  result.raw))
    assert response.request_status.code == rs.SUCCESS and response.request_status.request_id == 5
    assert response.meta_data.id == 99 and response.meta_data.model_version == 2
    assert [o.name for o in response.meta_data.output] == ["P", "Q"]
    assert response.meta_data.output[0].data_type == mc.TYPE_FP32
    assert list(response.raw_output) == [p.tobytes(), b""]
    assert [c.label for c in response.meta_data.output[1].batch_classes[0].cls] == ["y", "z"]


def test_error_response_holds_only_the_id():
    encoder = v1_grpc.StatusEncoder("s")
    status = encoder.error(ServerError(Code.NOT_FOUND, "model 'x' is not found"), 8)
    response = gs.InferResponse.FromString(v1_grpc.infer_error_response(status, 41))
    assert response.request_status == rs.RequestStatus(
        code=rs.NOT_FOUND, msg="model 'x' is not found", server_id="s", request_id=8)
    assert response.meta_data == api_pb2.InferResponseHeader(id=41)
    assert list(response.raw_output) == []


def test_large_raw_output_lengths_are_encoded():
    big = b"\x01" * 300_000
    response = gs.InferResponse.FromString(v1_grpc.infer_response(b"", b"", [big, b"", big]))
    assert list(response.raw_output) == [big, b"", big]
