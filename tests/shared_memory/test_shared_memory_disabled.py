"""A server started without --allow-shared-memory refuses every shared-memory
API and every tensor in shared memory with one clear message naming the
flag: v2 HTTP 403, v2 gRPC UNAVAILABLE, v1 (HTTP and gRPC) UNAVAILABLE; it
keeps serving."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import http_request, nv_status
from pyserver.protos import request_status_pb2 as rs

CHECKS = Path(__file__).with_name("grpc_shm_checks.py")
BYTES = 2 * 16 * 4


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v2/systemsharedmemory/region/r/register",
     {"key": "/k", "offset": 0, "byte_size": 8}),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("GET", "/v2/systemsharedmemory/region/r/status", None),
    ("POST", "/v2/systemsharedmemory/unregister", None),
    ("POST", "/v2/cudasharedmemory/region/r/register",
     {"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 8}),
    ("GET", "/v2/cudasharedmemory/status", None),
])
def test_v2_http_shared_memory_apis_are_forbidden(server, method, path, body):
    status, _, data = http_request(server.port, method, path, {},
                                   json.dumps(body).encode() if body else b"")
    assert status == 403
    assert "--allow-shared-memory" in json.loads(data)["error"]


def test_v2_http_infer_with_a_shared_memory_input_is_forbidden(server):
    doc = {"inputs": [{"name": f"INPUT{i}", "datatype": "FP32", "shape": [2, 16],
                       "parameters": {"shared_memory_region": "r",
                                      "shared_memory_byte_size": BYTES}} for i in (0, 1)]}
    status, _, data = http_request(server.port, "POST", "/v2/models/simple/infer", {},
                                   json.dumps(doc).encode())
    assert status == 403 and "shared memory is disabled" in json.loads(data)["error"]
    status, _, _ = http_request(server.port, "GET", "/v2/health/ready")
    assert status == 200


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/sharedmemorycontrol/register/r//k/0/8"),
    ("GET", "/api/sharedmemorycontrol/status"),
    ("POST", "/api/sharedmemorycontrol/unregisterall"),
])
def test_v1_http_shared_memory_control_is_unavailable(server, method, path):
    status, headers, _ = http_request(server.port, method, path)
    assert status == 400
    assert nv_status(headers).code == rs.UNAVAILABLE
    assert "--allow-shared-memory" in nv_status(headers).msg


def test_v2_grpc_shared_memory_rpcs_are_unavailable(server):
    if importlib.util.find_spec("tritonclient.grpc") is None:
        pytest.skip("tritonclient[grpc] is not installed")
    done = subprocess.run([sys.executable, str(CHECKS), server.grpc_target, "disabled"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"every_rpc_is_unavailable": "ok"}, outcome
