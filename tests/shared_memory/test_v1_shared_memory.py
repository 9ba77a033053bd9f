"""v1 shared memory with a server started with --allow-shared-memory: gRPC
SharedMemoryControl through the v1 stubs (register, status, unregister,
unregister_all, duplicate names, bad keys) and HTTP /api/sharedmemorycontrol
(register with the key's '//' in the path, status in every format,
unregister, unregisterall), InferRequestHeader inputs and outputs in
shared memory over both, and a region unregistered (and unlinked by its
client) while a request that uses it waits in the batcher."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import numpy as np
import pytest
from google.protobuf import text_format

from conftest import (GRPC_TIMEOUT_S, ServerProcess, grpc_stub, http_request, infer,
                      nv_infer_response, nv_status, request_header)
from pyserver.examples import onnx_models
from pyserver.examples.store import build_example_store, config, tensor, write_model
from pyserver.protos import api_pb2
from pyserver.protos import grpc_service_pb2 as gs
from pyserver.protos import request_status_pb2 as rs
from pyserver.protos import server_status_pb2 as ss

shm = pytest.importorskip("tritonclient.utils.shared_memory")

BYTES = 16 * 4  # one [16] FP32 batch element
SLOW = "simple_slow"  # add_sub whose batcher holds a lone request for a second


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = build_example_store(tmp_path_factory.mktemp("store"))
    write_model(store, SLOW, config(SLOW, 8, [tensor(f"INPUT{i}", "FP32", [16]) for i in (0, 1)],
                                    [tensor(f"OUTPUT{i}", "FP32", [16]) for i in (0, 1)],
                                    "dynamic_batching { preferred_batch_size: [ 8 ] "
                                    "max_queue_delay_microseconds: 1000000 }"),
                {1: onnx_models.add_sub("FP32", 16, batched=True)})
    srv = ServerProcess(store, "--allow-shared-memory", workdir=tmp_path_factory.mktemp("srv"))
    yield srv
    code = srv.stop()
    assert code == 0, f"server exit code {code}:\n{srv.log_text()}"


@pytest.fixture(scope="module")
def stub(server):
    channel, stub = grpc_stub(server.grpc_target)
    yield stub
    channel.close()


class Regions:
    def __init__(self, stub):
        self.stub = stub
        self.handles = {}

    def make(self, byte_size, *arrays):
        name = f"v{uuid.uuid4().hex[:12]}"
        key = f"/pyserver-test-{name}"
        handle = shm.create_shared_memory_region(name, key, byte_size)
        if arrays:
            shm.set_shared_memory_region(handle, list(arrays))
        self.handles[name] = handle
        return name, key, handle

    def destroy(self, name):
        shm.destroy_shared_memory_region(self.handles.pop(name))

    def close(self):
        request = gs.SharedMemoryControlRequest()
        request.unregister_all.SetInParent()
        self.stub.SharedMemoryControl(request, timeout=GRPC_TIMEOUT_S)
        for handle in self.handles.values():
            shm.destroy_shared_memory_region(handle)


@pytest.fixture
def regions(stub):
    r = Regions(stub)
    yield r
    r.close()


def _control(stub, **oneof) -> gs.SharedMemoryControlResponse:
    request = gs.SharedMemoryControlRequest(**oneof)
    return stub.SharedMemoryControl(request, timeout=GRPC_TIMEOUT_S)


def _register(stub, name, key, byte_size, offset=0):
    register = gs.SharedMemoryControlRequest.Register(name=name, byte_size=byte_size)
    register.system_shared_memory.shared_memory_key = key
    register.system_shared_memory.offset = offset
    return _control(stub, register=register)


def _status(stub) -> dict:
    status = gs.SharedMemoryControlRequest.Status()
    response = _control(stub, status=status)
    assert response.request_status.code == rs.SUCCESS
    return {r.name: r for r in response.shared_memory_status.shared_memory_region}


def _pair():
    return np.arange(16, dtype=np.float32).reshape(1, 16), np.full((1, 16), 2, np.float32)


def _shm_header(in_name, out_name, model=None) -> api_pb2.InferRequestHeader:
    header = api_pb2.InferRequestHeader(batch_size=1)
    for i in (0, 1):
        item = header.input.add(name=f"INPUT{i}")
        item.shared_memory.name = in_name
        item.shared_memory.offset = i * BYTES
        item.shared_memory.byte_size = BYTES
    for i in (0, 1):
        item = header.output.add(name=f"OUTPUT{i}")
        item.shared_memory.name = out_name
        item.shared_memory.offset = i * BYTES
        item.shared_memory.byte_size = BYTES
    return header


# -- gRPC SharedMemoryControl -------------------------------------------------------------

def test_grpc_register_status_unregister(stub, regions):
    name, key, _ = regions.make(4096)
    assert _register(stub, name, key, 1024, offset=256).request_status.code == rs.SUCCESS
    region = _status(stub)[name]
    assert region.system_shared_memory.shared_memory_key == key
    assert region.system_shared_memory.offset == 256 and region.byte_size == 1024
    unregister = gs.SharedMemoryControlRequest.Unregister(name=name)
    assert _control(stub, unregister=unregister).request_status.code == rs.SUCCESS
    assert name not in _status(stub)


def test_grpc_duplicate_name_is_already_exists(stub, regions):
    name, key, _ = regions.make(BYTES)
    assert _register(stub, name, key, BYTES).request_status.code == rs.SUCCESS
    response = _register(stub, name, key, BYTES)
    assert response.request_status.code == rs.ALREADY_EXISTS
    assert "already registered" in response.request_status.msg


def test_grpc_unregister_all(stub, regions):
    for _ in range(2):
        name, key, _ = regions.make(BYTES)
        _register(stub, name, key, BYTES)
    all_ = gs.SharedMemoryControlRequest.UnregisterAll()
    assert _control(stub, unregister_all=all_).request_status.code == rs.SUCCESS
    assert _status(stub) == {}


@pytest.mark.parametrize("key", ["/etc/passwd", "../x", "/..", "relative"])
def test_grpc_bad_key_is_invalid_arg(stub, key):
    response = _register(stub, "bad", key, 8)
    assert response.request_status.code == rs.INVALID_ARG
    assert "POSIX shared memory name" in response.request_status.msg


def test_grpc_size_past_the_object_is_invalid_arg(stub, regions):
    name, key, _ = regions.make(BYTES)
    response = _register(stub, name, key, BYTES, offset=1)
    assert response.request_status.code == rs.INVALID_ARG
    assert "pass the end" in response.request_status.msg
    assert name not in _status(stub)


def test_grpc_infer_in_shared_memory(stub, regions):
    a, b = _pair()
    in_name, in_key, _ = regions.make(2 * BYTES, a, b)
    out_name, out_key, out_handle = regions.make(2 * BYTES)
    _register(stub, in_name, in_key, 2 * BYTES)
    _register(stub, out_name, out_key, 2 * BYTES)
    request = gs.InferRequest(model_name="simple", model_version=-1,
                              meta_data=_shm_header(in_name, out_name))
    response = stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    assert response.request_status.code == rs.SUCCESS, response.request_status
    assert list(response.raw_output) == [b"", b""]
    assert [o.raw.batch_byte_size for o in response.meta_data.output] == [BYTES, BYTES]
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [1, 16]),
                                  a + b)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(out_handle, np.float32, [1, 16], offset=BYTES), a - b)


def test_grpc_infer_unknown_region_is_invalid_arg(stub):
    request = gs.InferRequest(model_name="simple", model_version=-1,
                              meta_data=_shm_header("nowhere", "nowhere"))
    response = stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    assert response.request_status.code == rs.INVALID_ARG
    assert "no shared memory region 'nowhere'" in response.request_status.msg


# -- HTTP /api/sharedmemorycontrol --------------------------------------------------------

def _post(server, path, body=b""):
    return http_request(server.port, "POST", path, {}, body)


def test_http_register_status_unregister(server, regions):
    name, key, _ = regions.make(2 * BYTES)
    status, headers, _ = _post(server, f"/api/sharedmemorycontrol/register/{name}/{key}/0/"
                                       f"{2 * BYTES}")
    assert status == 200 and nv_status(headers).code == rs.SUCCESS
    status, headers, body = http_request(server.port, "GET",
                                         "/api/sharedmemorycontrol/status?format=binary")
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    regions_ = {r.name: r for r in ss.SharedMemoryStatus.FromString(body).shared_memory_region}
    assert regions_[name].system_shared_memory.shared_memory_key == key
    assert regions_[name].byte_size == 2 * BYTES
    status, _, text = http_request(server.port, "GET", "/api/sharedmemorycontrol/status")
    assert status == 200 and name.encode() in text
    status, headers, _ = _post(server, f"/api/sharedmemorycontrol/unregister/{name}")
    assert status == 200 and nv_status(headers).code == rs.SUCCESS
    assert name not in _status_names(server)


def _status_names(server):
    _, _, body = http_request(server.port, "GET", "/api/sharedmemorycontrol/status?format=binary")
    return [r.name for r in ss.SharedMemoryStatus.FromString(body).shared_memory_region]


def test_http_unregisterall(server, regions):
    name, key, _ = regions.make(BYTES)
    _post(server, f"/api/sharedmemorycontrol/register/{name}/{key}/0/{BYTES}")
    status, headers, _ = _post(server, "/api/sharedmemorycontrol/unregisterall")
    assert status == 200 and _status_names(server) == []


@pytest.mark.parametrize("path, fragment", [
    ("register/x//pyserver-test-none/0/8", "no such object"),
    ("register/x//a/b/0/8", "POSIX shared memory name"),
    ("register/x/noslash/0/8", "POSIX shared memory name"),
    ("register/x//k/zero/8", "offset must be"),
    ("cudaregister/x/64/0", "raw_handle"),
    ("bogus", "sharedmemorycontrol path"),
])
def test_http_bad_requests_are_invalid_arg(server, path, fragment):
    status, headers, _ = _post(server, f"/api/sharedmemorycontrol/{path}")
    assert status == 400
    assert nv_status(headers).code == rs.INVALID_ARG and fragment in nv_status(headers).msg


def test_http_wrong_method_is_405(server):
    status, _, _ = http_request(server.port, "GET", "/api/sharedmemorycontrol/unregisterall")
    assert status == 405


def test_http_infer_in_shared_memory(server, regions):
    a, b = _pair()
    in_name, in_key, _ = regions.make(2 * BYTES, a, b)
    out_name, out_key, out_handle = regions.make(2 * BYTES)
    for name, key in ((in_name, in_key), (out_name, out_key)):
        _post(server, f"/api/sharedmemorycontrol/register/{name}/{key}/0/{2 * BYTES}")
    header = text_format.MessageToString(_shm_header(in_name, out_name), as_one_line=True)
    status, headers, body = infer(server.port, "simple", header, b"")
    assert status == 200, nv_status(headers)
    # no raw bytes in the body: both outputs went to the region; only the trailer is left
    trailer = api_pb2.InferResponseHeader.FromString(body)
    assert [o.raw.batch_byte_size for o in trailer.output] == [BYTES, BYTES]
    assert [o.raw.batch_byte_size for o in nv_infer_response(headers).output] == [BYTES, BYTES]
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [1, 16]),
                                  a + b)


def test_http_infer_one_input_in_the_body(server, regions):
    a, b = _pair()
    in_name, in_key, _ = regions.make(BYTES, b)
    _post(server, f"/api/sharedmemorycontrol/register/{in_name}/{in_key}/0/{BYTES}")
    header = request_header(1, ["INPUT0", {"name": "INPUT1", "shared_memory": {
        "name": in_name, "byte_size": BYTES}}], ["OUTPUT0"])
    status, headers, body = infer(server.port, "simple", header, a.tobytes())
    assert status == 200, nv_status(headers)
    np.testing.assert_array_equal(np.frombuffer(body[:BYTES], np.float32), (a + b).reshape(-1))


# -- unregister during a request --------------------------------------------------------

def test_unregister_and_unlink_while_a_request_waits_in_the_batcher(stub, regions):
    a, b = _pair()
    in_name, in_key, _ = regions.make(2 * BYTES, a, b)
    out_name, out_key, out_handle = regions.make(2 * BYTES)
    _register(stub, in_name, in_key, 2 * BYTES)
    _register(stub, out_name, out_key, 2 * BYTES)
    request = gs.InferRequest(model_name=SLOW, model_version=-1,
                              meta_data=_shm_header(in_name, out_name))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        pending = pool.submit(stub.Infer, request, timeout=GRPC_TIMEOUT_S)
        time.sleep(0.3)  # the request waits for a batch that never fills
        assert not pending.done()
        all_ = gs.SharedMemoryControlRequest.UnregisterAll()
        assert _control(stub, unregister_all=all_).request_status.code == rs.SUCCESS
        regions.destroy(in_name)  # the client unmaps and unlinks its input object
        response = pending.result()
    assert time.monotonic() - started >= 0.9  # it did wait in the batcher
    assert response.request_status.code == rs.SUCCESS, response.request_status
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [1, 16]),
                                  a + b)
    # and a new request naming the regions is refused
    again = stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    assert again.request_status.code == rs.INVALID_ARG
