"""System shared memory through the real tritonclient.grpc, in a process of
its own (see v2/grpc_v2_checks.py: tritonclient's protos and pyserver's
cannot share one process).

    python grpc_shm_checks.py HOST:PORT [disabled]

"disabled" runs only the checks of a server started without
--allow-shared-memory.

Prints one JSON object {check name: "ok" or the failure}.
"""

from __future__ import annotations

import base64
import json
import sys
import traceback
import uuid

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

BYTES = 2 * 16 * 4


def _pair():
    return np.arange(32, dtype=np.float32).reshape(2, 16), np.full((2, 16), 3, np.float32)


class Region:
    def __init__(self, client, byte_size, *arrays, register=True):
        self.client = client
        self.name = f"g{uuid.uuid4().hex[:12]}"
        self.key = f"/pyserver-test-{self.name}"
        self.handle = shm.create_shared_memory_region(self.name, self.key, byte_size)
        if arrays:
            shm.set_shared_memory_region(self.handle, list(arrays))
        if register:
            client.register_system_shared_memory(self.name, self.key, byte_size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.client.unregister_system_shared_memory(self.name)
        shm.destroy_shared_memory_region(self.handle)

    def array(self, offset=0):
        return shm.get_contents_as_numpy(self.handle, np.float32, [2, 16], offset=offset)


def _raises(status, call, fragment=""):
    try:
        call()
    except InferenceServerException as exc:
        assert exc.status() == status, (exc.status(), exc.message())
        assert fragment in exc.message(), exc.message()
        return
    raise AssertionError(f"expected {status}")


def check_infer_in_shared_memory(client):
    a, b = _pair()
    with Region(client, 2 * BYTES, a, b) as inp, Region(client, 2 * BYTES) as out:
        i0 = grpcclient.InferInput("INPUT0", [2, 16], "FP32")
        i0.set_shared_memory(inp.name, BYTES)
        i1 = grpcclient.InferInput("INPUT1", [2, 16], "FP32")
        i1.set_shared_memory(inp.name, BYTES, offset=BYTES)
        o0 = grpcclient.InferRequestedOutput("OUTPUT0")
        o0.set_shared_memory(out.name, BYTES)
        o1 = grpcclient.InferRequestedOutput("OUTPUT1")
        o1.set_shared_memory(out.name, BYTES, offset=BYTES)
        result = client.infer("simple", [i0, i1], outputs=[o0, o1])
        assert list(result.get_output("OUTPUT1").shape) == [2, 16]
        assert len(result.get_response().raw_output_contents) == 0
        np.testing.assert_array_equal(out.array(), a + b)
        np.testing.assert_array_equal(out.array(BYTES), a - b)


def check_register_status_unregister(client):
    name = f"s{uuid.uuid4().hex[:12]}"
    key = f"/pyserver-test-{name}"
    handle = shm.create_shared_memory_region(name, key, 4096)
    try:
        client.register_system_shared_memory(name, key, 1024, offset=512)
        status = client.get_system_shared_memory_status(region_name=name, as_json=True)
        assert status["regions"][name] == {"name": name, "key": key, "offset": "512",
                                           "byte_size": "1024"}, status
        _raises("StatusCode.ALREADY_EXISTS",
                lambda: client.register_system_shared_memory(name, key, 8), "already")
        client.unregister_system_shared_memory(name)
        after = client.get_system_shared_memory_status(as_json=True).get("regions", {})
        assert name not in after, after
        _raises("StatusCode.NOT_FOUND",
                lambda: client.get_system_shared_memory_status(region_name=name))
    finally:
        shm.destroy_shared_memory_region(handle)


def check_mixed_body_and_shm(client):
    a, b = _pair()
    with Region(client, BYTES, b) as inp, Region(client, BYTES) as out:
        i0 = grpcclient.InferInput("INPUT0", [2, 16], "FP32")
        i0.set_data_from_numpy(a)
        i1 = grpcclient.InferInput("INPUT1", [2, 16], "FP32")
        i1.set_shared_memory(inp.name, BYTES)
        o0 = grpcclient.InferRequestedOutput("OUTPUT0")
        o0.set_shared_memory(out.name, BYTES)
        o1 = grpcclient.InferRequestedOutput("OUTPUT1")
        result = client.infer("simple", [i0, i1], outputs=[o0, o1])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1").reshape(2, 16), a - b)
        np.testing.assert_array_equal(out.array(), a + b)


def check_refusals(client):
    i0 = grpcclient.InferInput("INPUT0", [2, 16], "FP32")
    i0.set_shared_memory("no_such_region", BYTES)
    i1 = grpcclient.InferInput("INPUT1", [2, 16], "FP32")
    i1.set_shared_memory("no_such_region", BYTES)
    _raises("StatusCode.INVALID_ARGUMENT", lambda: client.infer("simple", [i0, i1]),
            "no shared memory region 'no_such_region'")
    _raises("StatusCode.INVALID_ARGUMENT",
            lambda: client.register_system_shared_memory("bad", "/a/../b", 8),
            "POSIX shared memory name")
    a, b = _pair()
    with Region(client, BYTES, a) as inp:
        i0.set_shared_memory(inp.name, BYTES, offset=BYTES)
        i1.set_shared_memory(inp.name, BYTES)
        _raises("StatusCode.INVALID_ARGUMENT", lambda: client.infer("simple", [i0, i1]),
                "pass the end")
    assert client.is_server_ready()


def check_cuda_without_gpu(client):
    handle = base64.b64encode(bytes(64))
    try:
        client.register_cuda_shared_memory("gpu", handle, 0, 64)
    except InferenceServerException as exc:
        if "has none" not in exc.message():
            return  # a GPU is present: the GPU checks cover it
        assert exc.status() == "StatusCode.UNAVAILABLE", exc.status()
        assert client.get_cuda_shared_memory_status(as_json=True).get("regions", {}) == {}
        return
    client.unregister_cuda_shared_memory("gpu")
    raise AssertionError("a zero handle was registered")


def disabled_check_every_rpc_is_unavailable(client):
    calls = [lambda: client.register_system_shared_memory("r", "/k", 8),
             lambda: client.get_system_shared_memory_status(),
             lambda: client.unregister_system_shared_memory(),
             lambda: client.register_cuda_shared_memory("r", base64.b64encode(bytes(64)), 0, 8),
             lambda: client.get_cuda_shared_memory_status()]
    for call in calls:
        _raises("StatusCode.UNAVAILABLE", call, "--allow-shared-memory")
    i0 = grpcclient.InferInput("INPUT0", [2, 16], "FP32")
    i0.set_shared_memory("r", BYTES)
    i1 = grpcclient.InferInput("INPUT1", [2, 16], "FP32")
    i1.set_shared_memory("r", BYTES)
    _raises("StatusCode.UNAVAILABLE", lambda: client.infer("simple", [i0, i1]),
            "shared memory is disabled")
    assert client.is_server_ready()


def main() -> int:
    client = grpcclient.InferenceServerClient(sys.argv[1])
    outcome = {}
    prefix = "disabled_check_" if sys.argv[2:] == ["disabled"] else "check_"
    for name, check in sorted(globals().items()):
        if name.startswith(prefix):
            try:
                check(client)
                outcome[name[len(prefix):]] = "ok"
            except Exception:  # noqa: BLE001 - reported to the test
                outcome[name[len(prefix):]] = traceback.format_exc()[-2000:]
    client.close()
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
