"""gRPC ModelControl and Repository in explicit model control mode: the
same server calls as HTTP's /api/modelcontrol (facts §3.2)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GRPC_TIMEOUT_S, Code, ServerProcess, grpc_infer_request, grpc_stub
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model
from pyserver.protos import grpc_service_pb2 as gs
from pyserver.protos import server_status_pb2 as ss

LOAD, UNLOAD = gs.ModelControlRequest.LOAD, gs.ModelControlRequest.UNLOAD


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc_control_store")
    for name, constant in (("first", 1.0), ("second", 2.0)):
        write_model(root, name, config(name, 8, [tensor("INPUT0", "FP32", [16])],
                                       [tensor("OUTPUT0", "FP32", [16])]),
                    {1: onnx_models.add_constant(constant)})
    srv = ServerProcess(root, "--model-control-mode=explicit", "--load-model=first",
                        workdir=tmp_path_factory.mktemp("grpc_control_server"))
    yield srv
    code = srv.stop()
    assert code == 0, f"server exit code {code}:\n{srv.log_text()}"


@pytest.fixture(scope="module")
def stub(server):
    channel, stub = grpc_stub(server.grpc_target)
    yield stub
    channel.close()


def _control(stub, kind: int, name: str) -> gs.ModelControlResponse:
    return stub.ModelControl(gs.ModelControlRequest(model_name=name, type=kind),
                             timeout=GRPC_TIMEOUT_S)


def _infer(stub, name: str) -> gs.InferResponse:
    x = np.zeros((1, 16), np.float32)
    return stub.Infer(grpc_infer_request(name, 1, {"INPUT0": x}), timeout=GRPC_TIMEOUT_S)


def _loaded(stub) -> list[str]:
    status = stub.Status(gs.StatusRequest(), timeout=GRPC_TIMEOUT_S).server_status
    return sorted(name for name, model in status.model_status.items()
                  if any(v.ready_state == ss.MODEL_READY for v in model.version_status.values()))


def test_load_then_infer_then_unload(stub):
    assert _control(stub, LOAD, "second").request_status.code == Code.SUCCESS
    response = _infer(stub, "second")
    assert response.request_status.code == Code.SUCCESS
    assert np.frombuffer(response.raw_output[0], np.float32)[0] == 2.0
    assert _control(stub, UNLOAD, "second").request_status.code == Code.SUCCESS
    assert _infer(stub, "second").request_status.code == Code.NOT_FOUND
    assert _loaded(stub) == ["first"]


def test_reload_keeps_serving(stub):
    assert _control(stub, LOAD, "first").request_status.code == Code.SUCCESS
    assert _infer(stub, "first").request_status.code == Code.SUCCESS


def test_type_defaults_to_unload(stub):
    assert _control(stub, LOAD, "second").request_status.code == Code.SUCCESS
    request = gs.ModelControlRequest(model_name="second")  # type left at 0 = UNLOAD
    assert stub.ModelControl(request, timeout=GRPC_TIMEOUT_S).request_status.code == Code.SUCCESS
    assert "second" not in _loaded(stub)


def test_loading_a_model_not_in_the_store_is_not_found(stub):
    response = _control(stub, LOAD, "missing")
    assert response.request_status.code == Code.NOT_FOUND
    assert "missing" in response.request_status.msg


@pytest.mark.parametrize("name", ["", "..", ".", "a/b"])
def test_a_name_that_is_no_model_name_is_invalid_arg(stub, name):
    response = _control(stub, LOAD, name)
    assert response.request_status.code == Code.INVALID_ARG
    assert _loaded(stub) == ["first"]


def test_repository_index_lists_loaded_and_unloaded_models(stub):
    response = stub.Repository(gs.RepositoryRequest(index=True), timeout=GRPC_TIMEOUT_S)
    assert response.request_status.code == Code.SUCCESS
    assert [m.name for m in response.index.models] == ["first", "second"]
