"""gRPC validation before allocation (issue 15), v1 GRPCService and v2
GRPCInferenceService on one server: a message that does not parse, a
model_version that is not a number, declared sizes beyond the data and
shape products beyond 64 bits are INVALID_ARGUMENT (v2) or a v1
INVALID_ARG status, with messages that never name a Python type; a bad
message on a stream fails that message only."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from conftest import (GRPC_TIMEOUT_S, Code, ServerProcess, grpc_infer_request, raw_grpc_call)
from pyserver.protos import grpc_service_pb2 as gs
from pyserver.protos import v2_grpc_service_pb2 as pb
from validation_helpers import (HUGE_COUNT, MEMORY_SLACK_BYTES, build_validation_store,
                                peak_rss_bytes)

V2 = "/inference.GRPCInferenceService/"
X = np.arange(16, dtype=np.float32).reshape(1, 16)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = build_validation_store(tmp_path_factory.mktemp("store"))
    srv = ServerProcess(store, workdir=tmp_path_factory.mktemp("server"))
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


def _v2_call(channel, method: str, payload: bytes):
    call = channel.unary_unary(V2 + method, request_serializer=None, response_deserializer=None)
    return call(payload, timeout=GRPC_TIMEOUT_S)


def _v2_error(channel, method: str, payload: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        _v2_call(channel, method, payload)
    details = err.value.details()
    assert "<class" not in details and "Traceback" not in details, details
    return err.value


def _v2_simple(version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="simple", model_version=version)
    for i in range(2):
        request.inputs.add(name=f"INPUT{i}", datatype="FP32", shape=[1, 16])
        request.raw_input_contents.append(X.tobytes())
    return request


def _v1_status(channel, request: gs.InferRequest):
    response = gs.InferResponse.FromString(raw_grpc_call(channel, "Infer",
                                                         request.SerializeToString()))
    return response.request_status


@pytest.fixture(autouse=True)
def still_serves(channel):
    yield
    response = pb.ModelInferResponse.FromString(
        _v2_call(channel, "ModelInfer", _v2_simple().SerializeToString()))
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32),
                                  (X + X).ravel())


# -- v2 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["ModelInfer", "ModelMetadata", "ModelReady",
                                    "ServerLive"])
def test_v2_a_message_that_does_not_parse_is_invalid_argument(channel, method):
    error = _v2_error(channel, method, b"\xff\xff\xff garbage")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in error.details()


@pytest.mark.parametrize("version", ["abc", "\u00b2", "1.5", "-1", "9" * 40])
def test_v2_a_model_version_that_is_not_a_number_is_invalid_argument(channel, version):
    error = _v2_error(channel, "ModelInfer", _v2_simple(version).SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model version" in error.details()


def test_v2_metadata_with_a_non_numeric_version_is_invalid_argument(channel):
    payload = pb.ModelMetadataRequest(name="simple", version="x").SerializeToString()
    assert _v2_error(channel, "ModelMetadata", payload).code() == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_v2_a_shape_product_beyond_64_bits_is_invalid_argument(channel):
    request = pb.ModelInferRequest(model_name="grid")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 2**40, 2**40])
    request.raw_input_contents.append(b"\0" * 4)
    error = _v2_error(channel, "ModelInfer", request.SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "INPUT0" in error.details()


def test_v2_huge_declared_strings_in_4_bytes_allocate_nothing(server, channel):
    before = peak_rss_bytes(server.proc.pid)
    request = pb.ModelInferRequest(model_name="strings")
    request.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, HUGE_COUNT])
    request.raw_input_contents.append(b"\0" * 4)
    error = _v2_error(channel, "ModelInfer", request.SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert peak_rss_bytes(server.proc.pid) - before < MEMORY_SLACK_BYTES


def test_v2_a_bad_message_on_a_stream_fails_only_that_message(channel):
    stream = channel.stream_stream(V2 + "ModelStreamInfer", request_serializer=None,
                                   response_deserializer=pb.ModelStreamInferResponse.FromString)
    bad_shape = _v2_simple()
    bad_shape.inputs[0].shape[:] = [1, 8]
    messages = [_v2_simple().SerializeToString(), b"\xff\xff garbage",
                bad_shape.SerializeToString(), _v2_simple("x").SerializeToString(),
                _v2_simple().SerializeToString()]
    responses = list(stream(iter(messages), timeout=GRPC_TIMEOUT_S))
    assert [bool(r.error_message) for r in responses] == [False, True, True, True, False]
    assert "malformed" in responses[1].error_message
    assert "INPUT0" in responses[2].error_message
    assert "model version" in responses[3].error_message
    out = np.frombuffer(responses[4].infer_response.raw_output_contents[0], np.float32)
    np.testing.assert_array_equal(out, (X + X).ravel())


# -- v1 ---------------------------------------------------------------------------------

def test_v1_huge_declared_strings_in_4_bytes_allocate_nothing(server, channel):
    before = peak_rss_bytes(server.proc.pid)
    request = gs.InferRequest(model_name="strings", model_version=-1)
    request.meta_data.batch_size = 1
    request.meta_data.input.add(name="INPUT0", dims=[HUGE_COUNT], batch_byte_size=4)
    request.raw_input.append(b"\0" * 4)
    status = _v1_status(channel, request)
    assert status.code == Code.INVALID_ARG and "INPUT0" in status.msg
    assert peak_rss_bytes(server.proc.pid) - before < MEMORY_SLACK_BYTES


def test_v1_a_shape_product_beyond_64_bits_is_invalid_arg(channel):
    request = gs.InferRequest(model_name="grid", model_version=-1)
    request.meta_data.batch_size = 1
    request.meta_data.input.add(name="INPUT0", dims=[2**40, 2**40])
    request.raw_input.append(b"\0" * 4)
    status = _v1_status(channel, request)
    assert status.code == Code.INVALID_ARG and "shape" in status.msg


def test_v1_a_huge_declared_tensor_in_4_bytes_is_invalid_arg(channel):
    request = grpc_infer_request("floats", 1, {"INPUT0": np.zeros(1, np.float32)})
    request.meta_data.input[0].dims[:] = [2**40]
    status = _v1_status(channel, request)
    assert status.code == Code.INVALID_ARG and "unexpected size 4" in status.msg
