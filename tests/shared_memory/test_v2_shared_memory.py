"""System shared memory over v2 with the real tritonclient (2.51.0): regions
made with tritonclient.utils.shared_memory, registered over HTTP and gRPC,
inputs read from and outputs written into them for the `simple` ONNX model
(OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1), status, unregister,
and the refusals (unknown region, ranges past a region, bad keys, a region
used after unregister) with the server still serving. CUDA shared memory
needs a GPU: its checks skip here when there is none. One server per module
with --allow-shared-memory."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import HOST, ServerProcess, http_request

httpclient = pytest.importorskip("tritonclient.http")
shm = pytest.importorskip("tritonclient.utils.shared_memory")
from tritonclient.utils import InferenceServerException  # noqa: E402

BYTES = 2 * 16 * 4  # one [2, 16] FP32 tensor


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    srv = ServerProcess(example_store, "--allow-shared-memory",
                        workdir=tmp_path_factory.mktemp("server"))
    yield srv
    code = srv.stop()
    assert code == 0, f"server exit code {code}:\n{srv.log_text()}"


@pytest.fixture(scope="module")
def http(server):
    c = httpclient.InferenceServerClient(f"{HOST}:{server.port}")
    yield c
    c.close()


CHECKS = Path(__file__).with_name("grpc_shm_checks.py")
GRPC_CHECKS = ["infer_in_shared_memory", "register_status_unregister", "mixed_body_and_shm",
               "refusals", "cuda_without_gpu"]


@pytest.fixture(scope="module")
def grpc_outcome(server):
    """tritonclient.grpc runs in a child process (v2/grpc_v2_checks.py says why)."""
    if importlib.util.find_spec("tritonclient.grpc") is None:
        pytest.skip("tritonclient[grpc] is not installed")
    done = subprocess.run([sys.executable, str(CHECKS), server.grpc_target], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


class Regions:
    """Shared-memory objects made for one test, destroyed after it (and
    unregistered from the server)."""

    def __init__(self, http) -> None:
        self.http = http
        self.handles = []
        self.names = []

    def make(self, byte_size: int, *arrays, register: bool = True, offset: int = 0):
        name = f"r{uuid.uuid4().hex[:12]}"
        key = f"/pyserver-test-{name}"
        handle = shm.create_shared_memory_region(name, key, byte_size)
        self.handles.append(handle)
        if arrays:
            shm.set_shared_memory_region(handle, list(arrays), offset=offset)
        if register:
            self.http.register_system_shared_memory(name, key, byte_size)
            self.names.append(name)
        return name, key, handle

    def close(self) -> None:
        for name in self.names:
            try:
                self.http.unregister_system_shared_memory(name)
            except InferenceServerException:
                pass
        for handle in self.handles:
            shm.destroy_shared_memory_region(handle)


@pytest.fixture
def regions(http):
    r = Regions(http)
    yield r
    r.close()


def _pair():
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    b = np.full((2, 16), 3, dtype=np.float32)
    return a, b


def _http_inputs(in_region, byte_size=BYTES, offset1=BYTES):
    i0 = httpclient.InferInput("INPUT0", [2, 16], "FP32")
    i0.set_shared_memory(in_region, byte_size)
    i1 = httpclient.InferInput("INPUT1", [2, 16], "FP32")
    i1.set_shared_memory(in_region, byte_size, offset=offset1)
    return [i0, i1]


def _http_outputs(out_region, byte_size=BYTES):
    o0 = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
    o0.set_shared_memory(out_region, byte_size)
    o1 = httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)
    o1.set_shared_memory(out_region, byte_size, offset=byte_size)
    return [o0, o1]


def _error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        call()
    return err.value


def _still_serves(http):
    a, b = _pair()
    i0 = httpclient.InferInput("INPUT0", [2, 16], "FP32")
    i0.set_data_from_numpy(a)
    i1 = httpclient.InferInput("INPUT1", [2, 16], "FP32")
    i1.set_data_from_numpy(b)
    np.testing.assert_array_equal(http.infer("simple", [i0, i1]).as_numpy("OUTPUT0"), a + b)


# -- the data path ----------------------------------------------------------------

def test_http_infer_reads_inputs_and_writes_outputs_in_shared_memory(http, regions):
    a, b = _pair()
    in_name, _, _ = regions.make(2 * BYTES, a, b)
    out_name, _, out_handle = regions.make(2 * BYTES)
    result = http.infer("simple", _http_inputs(in_name), outputs=_http_outputs(out_name))
    # the response carries no data for outputs in shared memory
    output = result.get_output("OUTPUT0")
    assert output["shape"] == [2, 16] and output["datatype"] == "FP32"
    assert "data" not in output and "binary_data_size" not in output["parameters"]
    assert output["parameters"]["shared_memory_region"] == out_name
    assert output["parameters"]["shared_memory_byte_size"] == BYTES
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(out_handle, np.float32, [2, 16]), a + b)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(out_handle, np.float32, [2, 16], offset=BYTES), a - b)


@pytest.mark.parametrize("name", GRPC_CHECKS)
def test_grpc(grpc_outcome, name):
    assert grpc_outcome.get(name) == "ok", grpc_outcome.get(name, "check did not run")


def test_status_lists_registered_regions(http, regions):
    name, key, _ = regions.make(BYTES)
    everything = http.get_system_shared_memory_status()
    assert {"name": name, "key": key, "offset": 0, "byte_size": BYTES} in everything
    assert http.get_system_shared_memory_status(name) == [
        {"name": name, "key": key, "offset": 0, "byte_size": BYTES}]


def test_status_of_an_unknown_region_is_not_found(http):
    err = _error(lambda: http.get_system_shared_memory_status("no_such_region"))
    assert err.status() == "404" and "no_such_region" in err.message()


def test_unregister_all(http, regions):
    first, _, _ = regions.make(BYTES)
    second, _, _ = regions.make(BYTES)
    http.unregister_system_shared_memory()
    names = [r["name"] for r in http.get_system_shared_memory_status()]
    assert first not in names and second not in names


# -- refusals -----------------------------------------------------------------------

def test_unknown_region_in_infer_is_invalid(http):
    err = _error(lambda: http.infer("simple", _http_inputs("no_such_region")))
    assert err.status() == "400"
    assert "no shared memory region 'no_such_region'" in err.message()
    _still_serves(http)


def test_input_offset_past_the_region_is_refused(http, regions):
    a, b = _pair()
    name, _, _ = regions.make(2 * BYTES, a, b)
    err = _error(lambda: http.infer("simple", _http_inputs(name, offset1=2 * BYTES)))
    assert err.status() == "400" and "pass the end of shared memory region" in err.message()
    _still_serves(http)


def test_input_byte_size_larger_than_the_region_is_refused(http, regions):
    a, b = _pair()
    name, _, _ = regions.make(2 * BYTES, a, b)
    err = _error(lambda: http.infer("simple", _http_inputs(name, byte_size=4 * BYTES,
                                                            offset1=0)))
    assert err.status() == "400" and "pass the end of shared memory region" in err.message()
    _still_serves(http)


def test_input_byte_size_must_match_the_tensor(http, regions):
    a, b = _pair()
    name, _, _ = regions.make(2 * BYTES, a, b)
    err = _error(lambda: http.infer("simple", _http_inputs(name, byte_size=BYTES - 4)))
    assert err.status() == "400" and "unexpected size" in err.message()


def test_output_region_too_small_is_refused(http, regions):
    a, b = _pair()
    in_name, _, _ = regions.make(2 * BYTES, a, b)
    out_name, _, _ = regions.make(2 * BYTES)
    err = _error(lambda: http.infer("simple", _http_inputs(in_name),
                                    outputs=_http_outputs(out_name, byte_size=BYTES // 2)))
    assert err.status() == "400" and "too small" in err.message()
    _still_serves(http)


def test_register_past_the_end_of_the_object_is_refused(http, regions):
    name, key, _ = regions.make(BYTES, register=False)
    err = _error(lambda: http.register_system_shared_memory(name, key, BYTES + 1))
    assert err.status() == "400" and "pass the end" in err.message()
    err = _error(lambda: http.register_system_shared_memory(name, key, 8, offset=BYTES - 4))
    assert err.status() == "400" and "pass the end" in err.message()
    err = _error(lambda: http.register_system_shared_memory(name, key, 8,
                                                            offset=2**64 - 4))
    assert err.status() == "400"
    assert name not in [r["name"] for r in http.get_system_shared_memory_status()]


@pytest.mark.parametrize("key", ["/dev/shm/x", "/../etc/passwd", "noslash", "/a/b", "/..",
                                 "/.", "/", "/with\x00nul"])
def test_keys_that_are_not_shm_names_are_refused(http, key):
    err = _error(lambda: http.register_system_shared_memory("badkey", key, 8))
    assert err.status() == "400" and "POSIX shared memory name" in err.message()
    assert len(key) < 3 or key not in err.message()


def test_a_symlink_in_dev_shm_is_not_followed(http, tmp_path):
    target = tmp_path / "secret"
    target.write_bytes(b"x" * 64)
    link = f"/dev/shm/pyserver-test-link-{uuid.uuid4().hex[:8]}"
    os.symlink(target, link)
    try:
        err = _error(lambda: http.register_system_shared_memory("linked", link[8:], 8))
        assert err.status() == "400" and "link" in err.message()
    finally:
        os.unlink(link)


def test_a_missing_object_is_refused_without_naming_the_key(http):
    key = f"/pyserver-test-missing-{uuid.uuid4().hex[:8]}"
    err = _error(lambda: http.register_system_shared_memory("missing", key, 8))
    assert err.status() == "400" and "no such object" in err.message()
    assert key not in err.message()


def test_a_name_registered_twice_is_refused(http, regions):
    name, key, _ = regions.make(BYTES)
    err = _error(lambda: http.register_system_shared_memory(name, key, BYTES))
    assert err.status() == "400" and "already registered" in err.message()


def test_a_region_used_after_unregister_is_refused(http, regions):
    a, b = _pair()
    name, _, _ = regions.make(2 * BYTES, a, b)
    http.infer("simple", _http_inputs(name))
    http.unregister_system_shared_memory(name)
    err = _error(lambda: http.infer("simple", _http_inputs(name)))
    assert err.status() == "400" and f"no shared memory region '{name}'" in err.message()
    _still_serves(http)


def test_an_object_shrunk_after_registration_is_refused(http, regions):
    a, b = _pair()
    name, key, _ = regions.make(2 * BYTES, a, b)
    fd = os.open("/dev/shm" + key, os.O_RDWR)
    try:
        os.ftruncate(fd, BYTES)
    finally:
        os.close(fd)
    err = _error(lambda: http.infer("simple", _http_inputs(name)))
    assert err.status() == "400" and "shrank" in err.message()
    _still_serves(http)


def test_raw_http_register_with_bad_json_fields(server):
    status, _, body = http_request(server.port, "POST",
                                   "/v2/systemsharedmemory/region/x/register", {},
                                   json.dumps({"key": "/k", "byte_size": -1}).encode())
    assert status == 400 and "byte_size" in json.loads(body)["error"]
    status, _, body = http_request(server.port, "POST",
                                   "/v2/systemsharedmemory/region/x/register", {},
                                   json.dumps({"key": 5, "byte_size": 8}).encode())
    assert status == 400 and "key" in json.loads(body)["error"]


# -- CUDA shared memory: needs a GPU --------------------------------------------------

def test_cuda_register_without_a_gpu_is_unavailable(http):
    from pyserver import _core
    try:
        _core.CudaIpcRegion.open(bytes(64), 0, 1)
    except Exception as exc:  # noqa: BLE001 - the reason decides the skip
        if "has none" not in str(exc):
            pytest.skip("this machine has a GPU: the GPU tests cover CUDA registration")
    err = _error(lambda: http.register_cuda_shared_memory("gpu", b"AAAA", 0, 64))
    assert err.status() == "400"  # the handle is malformed before any GPU is needed
    import base64
    handle = base64.b64encode(bytes(64))
    err = _error(lambda: http.register_cuda_shared_memory("gpu", handle, 0, 64))
    assert err.status() == "503" and "GPU" in err.message()
    assert http.get_cuda_shared_memory_status() == []


def test_cuda_infer_through_an_ipc_handle(http):
    from pyserver import _core
    try:
        _core.CudaIpcRegion.open(bytes(64), 0, 1)
    except Exception as exc:  # noqa: BLE001
        if "has none" in str(exc):
            pytest.skip("no CUDA GPU on this machine: CUDA shared memory cannot be tested")
    if importlib.util.find_spec("cuda") is None:
        pytest.skip("tritonclient's CUDA shared-memory utilities need cuda-python")
    import tritonclient.utils.cuda_shared_memory as cudashm
    a, b = _pair()
    in_handle = cudashm.create_shared_memory_region("gpu_in", 2 * BYTES, 0)
    out_handle = cudashm.create_shared_memory_region("gpu_out", 2 * BYTES, 0)
    try:
        cudashm.set_shared_memory_region(in_handle, [a, b])
        http.register_cuda_shared_memory("gpu_in", cudashm.get_raw_handle(in_handle), 0,
                                         2 * BYTES)
        http.register_cuda_shared_memory("gpu_out", cudashm.get_raw_handle(out_handle), 0,
                                         2 * BYTES)
        http.infer("simple", _http_inputs("gpu_in"), outputs=_http_outputs("gpu_out"))
        np.testing.assert_array_equal(
            cudashm.get_contents_as_numpy(out_handle, np.float32, [2, 16]), a + b)
        assert {r["name"] for r in http.get_cuda_shared_memory_status()} == {"gpu_in",
                                                                             "gpu_out"}
    finally:
        http.unregister_cuda_shared_memory()
        cudashm.destroy_shared_memory_region(in_handle)
        cudashm.destroy_shared_memory_region(out_handle)
