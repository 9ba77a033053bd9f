"""The v1 gRPC API's unary RPCs on the example store (facts §3): every
outcome travels in ``request_status`` under gRPC status OK; grpc itself
answers only what never reaches the service (an oversized message)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from conftest import (GRPC_TIMEOUT_S, Code, ServerProcess, grpc_infer_request, grpc_stub,
                      raw_grpc_call)
from pyserver.examples.onnx_models import classifier_reference
from pyserver.examples.store import LABELS
from pyserver.protos import grpc_service_pb2 as gs
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import server_status_pb2 as ss

MAX_MESSAGE_BYTES = 1024 * 1024
RNG = np.random.default_rng(4321)
EXAMPLE_MODELS = ["classifier", "image_classifier", "mlp", "simple", "simple_int32",
                  "simple_nobatch", "versioned"]


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    srv = ServerProcess(example_store, f"--grpc-max-message-size={MAX_MESSAGE_BYTES}",
                        workdir=tmp_path_factory.mktemp("grpc_server"))
    yield srv
    code = srv.stop()
    assert code == 0, f"server exit code {code}:\n{srv.log_text()}"
    assert "Traceback" not in srv.log_text(), srv.log_text()


@pytest.fixture(scope="module")
def connection(server):
    channel, stub = grpc_stub(server.grpc_target)
    yield channel, stub
    channel.close()


@pytest.fixture
def channel(connection):
    return connection[0]


@pytest.fixture
def stub(connection):
    return connection[1]


def _add_sub(stub, model="simple", batch_size=1, dtype=np.float32, **kwargs):
    shape = (batch_size, 16) if model != "simple_nobatch" else (16,)
    a = RNG.standard_normal(shape).astype(dtype)
    b = RNG.standard_normal(shape).astype(dtype)
    request = grpc_infer_request(model, batch_size, {"INPUT0": a, "INPUT1": b}, **kwargs)
    return a, b, stub.Infer(request, timeout=GRPC_TIMEOUT_S)


def _raw(response, index, dtype=np.float32):
    return np.frombuffer(response.raw_output[index], dtype)


def _assert_failed(response, code, *fragments, request_id=0):
    assert response.request_status.code == code, response.request_status
    for fragment in fragments:
        assert fragment.lower() in response.request_status.msg.lower(), response.request_status
    if hasattr(response, "raw_output"):
        assert list(response.raw_output) == []
        expected = gs.InferResponse().meta_data
        expected.id = request_id
        assert response.meta_data == expected


# -- Health ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["live", "ready"])
def test_health_is_true_when_serving(stub, mode):
    response = stub.Health(gs.HealthRequest(mode=mode), timeout=GRPC_TIMEOUT_S)
    assert response.health is True
    assert response.request_status.code == Code.SUCCESS
    assert response.request_status.server_id == "inference:0"


def test_health_unknown_mode_is_unknown_error(stub):
    response = stub.Health(gs.HealthRequest(mode="sideways"), timeout=GRPC_TIMEOUT_S)
    assert response.request_status.code == Code.UNKNOWN
    assert "unknown health mode" in response.request_status.msg
    assert response.health is False


def test_request_ids_increase_across_calls(stub):
    first = stub.Health(gs.HealthRequest(mode="live"), timeout=GRPC_TIMEOUT_S)
    second = stub.Health(gs.HealthRequest(mode="live"), timeout=GRPC_TIMEOUT_S)
    assert second.request_status.request_id > first.request_status.request_id > 0


# -- Status -----------------------------------------------------------------------

def test_status_of_all_models(stub):
    response = stub.Status(gs.StatusRequest(), timeout=GRPC_TIMEOUT_S)
    assert response.request_status.code == Code.SUCCESS
    status = response.server_status
    assert sorted(status.model_status) == EXAMPLE_MODELS
    assert status.ready_state == ss.SERVER_READY
    assert status.id == "inference:0"


def test_status_of_one_model_has_its_config(stub):
    response = stub.Status(gs.StatusRequest(model_name="versioned"), timeout=GRPC_TIMEOUT_S)
    assert response.request_status.code == Code.SUCCESS
    (name,) = response.server_status.model_status
    model = response.server_status.model_status[name]
    assert name == "versioned" and model.config.max_batch_size == 8
    assert model.config.platform == "onnxruntime_onnx"
    assert {v: s.ready_state for v, s in model.version_status.items()} == {
        1: ss.MODEL_READY, 2: ss.MODEL_READY, 3: ss.MODEL_READY}


def test_status_of_unknown_model_is_invalid_arg(stub):
    response = stub.Status(gs.StatusRequest(model_name="nope"), timeout=GRPC_TIMEOUT_S)
    _assert_failed(response, Code.INVALID_ARG, "unknown model", "nope")
    assert not response.HasField("server_status")


def test_status_counts_grpc_inferences(stub):
    def successes():
        status = stub.Status(gs.StatusRequest(model_name="simple_int32"), timeout=GRPC_TIMEOUT_S)
        stats = status.server_status.model_status["simple_int32"].version_status[1].infer_stats
        return stats[2].success.count if 2 in stats else 0

    before = successes()
    _add_sub(stub, "simple_int32", 2, np.int32)
    assert successes() == before + 1


# -- Repository, ModelControl, SharedMemoryControl ----------------------------------

def test_repository_index_lists_every_model(stub):
    response = stub.Repository(gs.RepositoryRequest(index=True), timeout=GRPC_TIMEOUT_S)
    assert response.request_status.code == Code.SUCCESS
    assert [m.name for m in response.index.models] == EXAMPLE_MODELS


def test_repository_without_request_type_is_unknown_error(stub):
    response = stub.Repository(gs.RepositoryRequest(), timeout=GRPC_TIMEOUT_S)
    _assert_failed(response, Code.UNKNOWN, "request type is not specified")


@pytest.mark.parametrize("kind", [gs.ModelControlRequest.LOAD, gs.ModelControlRequest.UNLOAD])
def test_model_control_in_poll_mode_is_unavailable(stub, kind):
    response = stub.ModelControl(gs.ModelControlRequest(model_name="simple", type=kind),
                                 timeout=GRPC_TIMEOUT_S)
    _assert_failed(response, Code.UNAVAILABLE, "not allowed if polling is enabled")
    assert stub.Health(gs.HealthRequest(mode="ready"), timeout=GRPC_TIMEOUT_S).health


def test_shared_memory_control_without_the_flag_is_unavailable(stub):
    request = gs.SharedMemoryControlRequest()
    request.register.name = "region"
    request.register.system_shared_memory.shared_memory_key = "/key"
    request.register.byte_size = 64
    response = stub.SharedMemoryControl(request, timeout=GRPC_TIMEOUT_S)
    _assert_failed(response, Code.UNAVAILABLE, "shared memory is disabled", "--allow-shared-memory")


# -- Infer ----------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 8])
def test_infer_add_sub(stub, batch_size):
    a, b, response = _add_sub(stub, batch_size=batch_size, request_id=42)
    assert response.request_status.code == Code.SUCCESS, response.request_status
    header = response.meta_data
    assert (header.model_name, header.model_version, header.batch_size, header.id) == (
        "simple", 1, batch_size, 42)
    assert [o.name for o in header.output] == ["OUTPUT0", "OUTPUT1"]
    for output in header.output:
        assert list(output.raw.dims) == [16]
        assert output.raw.batch_byte_size == 64 * batch_size
        assert output.data_type == mc.TYPE_FP32
    np.testing.assert_array_equal(_raw(response, 0).reshape(a.shape), a + b)
    np.testing.assert_array_equal(_raw(response, 1).reshape(a.shape), a - b)


def test_infer_without_batching(stub):
    a, b, response = _add_sub(stub, "simple_nobatch")
    assert response.request_status.code == Code.SUCCESS, response.request_status
    np.testing.assert_array_equal(_raw(response, 0), a + b)


def test_infer_int32(stub):
    a, b, response = _add_sub(stub, "simple_int32", 3, np.int32)
    assert response.request_status.code == Code.SUCCESS, response.request_status
    np.testing.assert_array_equal(_raw(response, 1, np.int32).reshape(a.shape), a - b)


def test_raw_output_follows_the_requested_output_order(stub):
    a, b, response = _add_sub(stub, batch_size=2, outputs=["OUTPUT1", "OUTPUT0"])
    assert [o.name for o in response.meta_data.output] == ["OUTPUT1", "OUTPUT0"]
    np.testing.assert_array_equal(_raw(response, 0).reshape(a.shape), a - b)
    np.testing.assert_array_equal(_raw(response, 1).reshape(a.shape), a + b)


def test_one_of_two_outputs(stub):
    a, b, response = _add_sub(stub, outputs=["OUTPUT1"])
    assert len(response.raw_output) == 1
    np.testing.assert_array_equal(_raw(response, 0).reshape(a.shape), a - b)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_classification_output_has_empty_raw_output(stub, batch_size):
    x = RNG.standard_normal((batch_size, 8)).astype(np.float32)
    request = grpc_infer_request("classifier", batch_size, {"INPUT": x}, [("OUTPUT", 3)],
                                 request_id=11)
    response = stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    assert response.request_status.code == Code.SUCCESS, response.request_status
    assert list(response.raw_output) == [b""]
    (output,) = response.meta_data.output
    assert not output.HasField("raw")
    reference = classifier_reference(x)
    assert len(output.batch_classes) == batch_size
    for scores, classes in zip(reference, output.batch_classes):
        order = np.argsort(-scores, kind="stable")[:3]
        assert [c.idx for c in classes.cls] == order.tolist()
        assert [c.label for c in classes.cls] == [LABELS[i] for i in order]
        np.testing.assert_allclose([c.value for c in classes.cls], scores[order], rtol=1e-5)


def test_raw_and_classification_outputs_stay_aligned(stub):
    a, b, response = _add_sub(stub, outputs=[("OUTPUT0", 2), "OUTPUT1"])
    assert response.request_status.code == Code.SUCCESS, response.request_status
    assert [o.name for o in response.meta_data.output] == ["OUTPUT0", "OUTPUT1"]
    assert response.raw_output[0] == b""
    np.testing.assert_array_equal(_raw(response, 1).reshape(a.shape), a - b)


@pytest.mark.parametrize("version, added", [(1, 1.0), (2, 2.0), (-1, 3.0)])
def test_chosen_version_and_minus_one_for_latest(stub, version, added):
    x = RNG.standard_normal((1, 16)).astype(np.float32)
    request = grpc_infer_request("versioned", 1, {"INPUT0": x}, version=version)
    response = stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    assert response.request_status.code == Code.SUCCESS, response.request_status
    assert response.meta_data.model_version == (3 if version == -1 else version)
    np.testing.assert_allclose(_raw(response, 0), (x + added).ravel(), rtol=1e-6)


def test_version_zero_is_version_zero_not_latest(stub):
    x = np.zeros((1, 16), np.float32)
    request = grpc_infer_request("versioned", 1, {"INPUT0": x}, version=0, request_id=3)
    response = stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    _assert_failed(response, Code.NOT_FOUND, "version 0", request_id=3)


def test_unknown_model_keeps_only_the_id(stub):
    _, _, response = _add_sub(stub, "no_such_model", request_id=77)
    _assert_failed(response, Code.NOT_FOUND, "no_such_model", request_id=77)


def test_unknown_version_is_not_found(stub):
    _, _, response = _add_sub(stub, version=9)
    _assert_failed(response, Code.NOT_FOUND, "version 9")


def test_wrong_input_size_is_invalid_arg(stub):
    request = grpc_infer_request("simple", 2, {"INPUT0": np.zeros((2, 16), np.float32),
                                               "INPUT1": np.zeros((1, 16), np.float32)},
                                 request_id=5)
    response = stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    _assert_failed(response, Code.INVALID_ARG, "unexpected size 64", "INPUT1", request_id=5)


def test_missing_raw_input_is_invalid_arg(stub):
    request = grpc_infer_request("simple", 1, {"INPUT0": np.zeros((1, 16), np.float32),
                                               "INPUT1": np.zeros((1, 16), np.float32)})
    del request.raw_input[1]
    response = stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    _assert_failed(response, Code.INVALID_ARG, "expected tensor data for at least 2 inputs")


def test_batch_size_over_the_maximum_is_invalid_arg(stub):
    _, _, response = _add_sub(stub, batch_size=9)
    _assert_failed(response, Code.INVALID_ARG, "batch-size must be <= 8")


def test_unknown_output_is_invalid_arg(stub):
    _, _, response = _add_sub(stub, outputs=["OUTPUT7"])
    _assert_failed(response, Code.INVALID_ARG, "unexpected inference output 'OUTPUT7'")


def test_input_in_shared_memory_without_the_flag_is_unavailable(stub):
    request = grpc_infer_request("simple", 1, {"INPUT0": np.zeros((1, 16), np.float32),
                                               "INPUT1": np.zeros((1, 16), np.float32)})
    request.meta_data.input[1].shared_memory.name = "region"
    request.meta_data.input[1].shared_memory.byte_size = 64
    del request.raw_input[1]
    response = stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    _assert_failed(response, Code.UNAVAILABLE, "shared memory is disabled")


# -- bad messages -----------------------------------------------------------------

@pytest.mark.parametrize("method, response_type", [
    ("Infer", gs.InferResponse), ("Health", gs.HealthResponse), ("Status", gs.StatusResponse),
    ("Repository", gs.RepositoryResponse)])
def test_malformed_protobuf_is_invalid_arg(channel, stub, method, response_type):
    answer = raw_grpc_call(channel, method, b"\xff\xff\xff\xff not a protobuf")
    response = response_type.FromString(answer)
    assert response.request_status.code == Code.INVALID_ARG
    assert "malformed" in response.request_status.msg
    assert stub.Health(gs.HealthRequest(mode="ready"), timeout=GRPC_TIMEOUT_S).health


def test_oversized_message_is_resource_exhausted_and_the_server_keeps_serving(stub):
    big = np.zeros((8, MAX_MESSAGE_BYTES // 4 // 8 + 1), np.float32)
    request = grpc_infer_request("simple", 8, {"INPUT0": big, "INPUT1": big})
    with pytest.raises(grpc.RpcError) as failure:
        stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    a, b, response = _add_sub(stub)
    assert response.request_status.code == Code.SUCCESS


def test_unknown_method_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as failure:
        raw_grpc_call(channel, "Profile", b"")
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_cancelled_call_leaves_the_server_serving(stub):
    x = RNG.standard_normal((32, 512)).astype(np.float32)
    future = stub.Infer.future(grpc_infer_request("mlp", 32, {"INPUT0": x}),
                               timeout=GRPC_TIMEOUT_S)
    future.cancel()
    a, b, response = _add_sub(stub)
    assert response.request_status.code == Code.SUCCESS
    np.testing.assert_array_equal(_raw(response, 0).reshape(a.shape), a + b)
