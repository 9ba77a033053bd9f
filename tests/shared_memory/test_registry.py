"""pyserver.shared_memory without sockets: key rules, overflow-safe range
checks at registration and use, regions kept mapped by their users after
unregister, the region limit, and the output write."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from pyserver import shared_memory as sm
from pyserver.api.plan import InputPlan
from pyserver.api.request import InferenceRequest, InferInput, RequestedOutput
from pyserver.api.response import InferOutput
from pyserver.errors import Code, ServerError
from pyserver.protos import model_config_pb2 as mc


@pytest.fixture
def shm_object():
    """A fresh POSIX shared-memory object of 8192 bytes: (key, fd)."""
    key = f"/pyserver-unit-{uuid.uuid4().hex[:12]}"
    fd = os.open("/dev/shm" + key, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, 8192)
    yield key, fd
    os.close(fd)
    try:
        os.unlink("/dev/shm" + key)
    except FileNotFoundError:
        pass


def _code(call) -> ServerError:
    with pytest.raises(ServerError) as err:
        call()
    return err.value


@pytest.mark.parametrize("key", ["", "x", "/", "//x", "/a/b", "/.", "/..", "/a\0b", 7, None,
                                 "/" + "k" * 256])
def test_check_key_refuses_what_is_not_an_shm_name(key):
    assert _code(lambda: sm.check_key(key)).code == Code.INVALID_ARG


@pytest.mark.parametrize("key", ["/a", "/input0", "/" + "k" * 255, "/a.b-c_d"])
def test_check_key_accepts_shm_names(key):
    assert sm.check_key(key) == key


@pytest.mark.parametrize("offset, byte_size", [(0, 8193), (8192, 1), (1, 8192), (2**64 - 1, 2),
                                               (2**64, 1), (-1, 8), (0, 0), (0, 2**64)])
def test_registration_outside_the_object_is_refused(shm_object, offset, byte_size):
    key, _ = shm_object
    registry = sm.SharedMemoryRegistry(True)
    err = _code(lambda: registry.register_system("r", key, offset, byte_size))
    assert err.code == Code.INVALID_ARG and key not in err.message
    assert registry.status(None) == []


def test_unaligned_offsets_map_the_right_bytes(shm_object):
    key, fd = shm_object
    os.pwrite(fd, bytes(range(256)) * 32, 0)
    registry = sm.SharedMemoryRegistry(True)
    registry.register_system("r", key, 4099, 100)
    region = registry.regions()[0]
    assert bytes(region.view(1, 4, "t")) == bytes([(4100 + i) % 256 for i in range(4)])
    for offset, size in ((0, 101), (100, 1), (2**64 - 1, 2), (-1, 1)):
        assert _code(lambda: region.view(offset, size, "t")).code == Code.INVALID_ARG


def test_a_shrunk_object_is_refused_at_use(shm_object):
    key, fd = shm_object
    registry = sm.SharedMemoryRegistry(True)
    registry.register_system("r", key, 4096, 4096)
    region = registry.regions()[0]
    os.ftruncate(fd, 6000)
    assert "shrank" in _code(lambda: region.view(0, 4096, "t")).message
    assert len(region.view(0, 1000, "t")) == 1000  # what is still backed stays usable


def test_a_view_outlives_unregister(shm_object):
    key, fd = shm_object
    os.pwrite(fd, b"abcd", 0)
    registry = sm.SharedMemoryRegistry(True)
    registry.register_system("r", key, 0, 8192)
    view = registry.regions()[0].view(0, 4, "t")
    registry.unregister(sm.SystemRegion, "r")
    assert registry.status(None) == []
    import gc
    gc.collect()  # the region object is gone; its mapping lives on in the view
    assert bytes(view) == b"abcd"


def test_names_are_unique_and_bounded(shm_object, monkeypatch):
    key, _ = shm_object
    registry = sm.SharedMemoryRegistry(True)
    registry.register_system("r", key, 0, 8)
    assert _code(lambda: registry.register_system("r", key, 0, 8)).code == Code.ALREADY_EXISTS
    monkeypatch.setattr(sm, "MAX_REGIONS", 2)
    registry.register_system("s", key, 0, 8)
    assert _code(lambda: registry.register_system("t", key, 0, 8)).code == Code.UNAVAILABLE


def test_disabled_registry_refuses_everything():
    registry = sm.SharedMemoryRegistry(False)
    for call in (lambda: registry.register_system("r", "/k", 0, 8),
                 lambda: registry.status(None), lambda: registry.unregister(None)):
        err = _code(call)
        assert err.code == Code.FORBIDDEN and "--allow-shared-memory" in err.message


def test_non_regular_objects_are_refused():
    key = f"/pyserver-unit-dir-{uuid.uuid4().hex[:8]}"
    os.mkdir("/dev/shm" + key)
    try:
        registry = sm.SharedMemoryRegistry(True)
        assert _code(lambda: registry.register_system("r", key, 0, 8)).code == Code.INVALID_ARG
    finally:
        os.rmdir("/dev/shm" + key)


def test_resolve_and_write_outputs(shm_object):
    key, fd = shm_object
    a = np.arange(4, dtype=np.float32)
    os.pwrite(fd, a.tobytes(), 0)
    registry = sm.SharedMemoryRegistry(True)
    registry.register_system("r", key, 0, 64)
    request = InferenceRequest("m", [InferInput("IN", "FP32", [4], shared_memory=sm.SharedMemoryRef(
        "r", 0, 16))], [RequestedOutput("OUT", 0, sm.SharedMemoryRef("r", 32, 16))],
        shared_memory=True)
    destinations = registry.resolve(request)
    assert np.frombuffer(request.inputs[0].data, np.float32).tolist() == a.tolist()
    output = InferOutput("OUT", "FP32", a * 2)
    sm.write_outputs([output], destinations)
    assert np.frombuffer(os.pread(fd, 16, 32), np.float32).tolist() == (a * 2).tolist()
    assert output.shared_memory.byte_size == 16
    too_big = InferOutput("OUT", "FP32", np.zeros(5, np.float32))
    assert "too small" in _code(lambda: sm.write_outputs([too_big], destinations)).message



def test_cuda_input_sizes_are_checked_before_any_copy():
    # A region object with no device mapping: reaching a copy would fail the test
    # with AttributeError, not the ServerError the size check gives.
    region = sm.CudaRegion("gpu", 0, 1 << 40, None)
    request = InferenceRequest("m", [InferInput("IN", "FP32", [4], data=sm.CudaInput(
        region, sm.SharedMemoryRef("gpu", 0, 1 << 39)))])
    fixed = InputPlan("IN", mc.TYPE_FP32, (4,), 4, 16)
    err = _code(lambda: sm.fetch_cuda_inputs(request, [fixed]))
    assert err.code == Code.INVALID_ARG and "expecting 16" in err.message
    strings = InputPlan("IN", mc.TYPE_STRING, (4,), 4, 0)
    err = _code(lambda: sm.fetch_cuda_inputs(request, [strings]))
    assert err.code == Code.INVALID_ARG and str(sm.MAX_CUDA_STRING_BYTES) in err.message
