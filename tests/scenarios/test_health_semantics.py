"""Health over a store with broken models, served with --exit-on-error=false,
on every API: v1 as the seed defines it (ready = the server has started;
live = every model loaded, unless --strict-liveness=false) and v2 as KServe
and Triton define it (live = the process serves; ready = every model ready,
relaxed by the same flag). One strict and one lenient server."""

from __future__ import annotations

import grpc
import pytest

from conftest import (Code, ServerProcess, grpc_stub, http_request, nv_status)
from pyserver.protos import grpc_service_pb2 as gs
from pyserver.protos import v2_grpc_service_pb2 as v2pb

GRPC_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def strict(broken_store, tmp_path_factory):
    """The defaults: strict liveness."""
    srv = ServerProcess(broken_store, "--exit-on-error=false",
                        workdir=tmp_path_factory.mktemp("strict"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def lenient(broken_store, tmp_path_factory):
    srv = ServerProcess(broken_store, "--exit-on-error=false", "--strict-liveness=false",
                        workdir=tmp_path_factory.mktemp("lenient"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def _v1_http(srv: ServerProcess, probe: str) -> int:
    status, headers, body = http_request(srv.port, "GET", f"/api/health/{probe}")
    nv_status(headers)  # present and parsable either way
    assert body == b""
    return status


def _v1_grpc(srv: ServerProcess, probe: str) -> bool:
    channel, stub = grpc_stub(srv.grpc_target)
    with channel:
        response = stub.Health(gs.HealthRequest(mode=probe), timeout=GRPC_TIMEOUT_S)
    assert response.request_status.code == Code.SUCCESS
    return response.health


def _v2_http(srv: ServerProcess, probe: str) -> int:
    return http_request(srv.port, "GET", f"/v2/health/{probe}")[0]


def _v2_grpc(srv: ServerProcess, probe: str) -> bool:
    request, response = {"live": (v2pb.ServerLiveRequest, v2pb.ServerLiveResponse),
                         "ready": (v2pb.ServerReadyRequest, v2pb.ServerReadyResponse)}[probe]
    with grpc.insecure_channel(srv.grpc_target) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/Server{probe.title()}",
                                   request_serializer=request.SerializeToString,
                                   response_deserializer=response.FromString)
        answer = call(request(), timeout=GRPC_TIMEOUT_S)
    return answer.live if probe == "live" else answer.ready


def test_v1_ready_is_200_once_started_with_a_broken_model(strict):
    assert _v1_http(strict, "ready") == 200


def test_v1_live_is_400_with_a_broken_model(strict):
    status, headers, _ = http_request(strict.port, "GET", "/api/health/live")
    assert status == 400
    assert nv_status(headers).code == Code.SUCCESS  # the probe itself worked


def test_v1_grpc_health_matches_http(strict):
    assert _v1_grpc(strict, "ready") is True
    assert _v1_grpc(strict, "live") is False


def test_v2_live_is_200_with_a_broken_model(strict):
    assert _v2_http(strict, "live") == 200
    assert _v2_grpc(strict, "live") is True


def test_v2_ready_is_400_with_a_broken_model(strict):
    assert _v2_http(strict, "ready") == 400
    assert _v2_grpc(strict, "ready") is False


def test_strict_liveness_false_makes_v1_live(lenient):
    assert _v1_http(lenient, "live") == 200
    assert _v1_http(lenient, "ready") == 200
    assert _v1_grpc(lenient, "live") is True


def test_strict_liveness_false_makes_v2_ready(lenient):
    assert _v2_http(lenient, "ready") == 200
    assert _v2_grpc(lenient, "ready") is True

