"""ONNX models on the native ONNX Runtime runtime (C API, csrc/onnxruntime_runtime.h)
served by a real server: what the C API path does that ONNX Runtime's Python API
could not, and the session options a config sets."""

from __future__ import annotations

import ctypes
import os
import struct
import time

import pytest

from conftest import (HOST, ServerProcess, infer, nv_infer_response, request_header,
                      split_infer_body, write_identity, write_model)
from pyserver.examples import onnx_models

httpclient = pytest.importorskip("tritonclient.http")


def _strings(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _add_sub_config(name: str, intra_op_threads: int) -> str:
    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
            'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] },'
            ' { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
            'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] },'
            ' { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
            'instance_group [ { count: 1 kind: KIND_CPU } ]\n'
            'parameters { key: "intra_op_thread_count" '
            f'value {{ string_value: "{intra_op_threads}" }} }}\n')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("ort_store")
    write_identity(store, "identity_string", "STRING", (4,))
    for threads in (1, 4):
        write_model(store, f"add_sub_{threads}", _add_sub_config(f"add_sub_{threads}", threads),
                    {1: onnx_models.add_sub()})
    srv = ServerProcess(store, "--model-control-mode=explicit", "--load-model=identity_string",
                        workdir=tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def test_strings_that_are_not_utf8_round_trip_byte_for_byte(server):
    data = _strings([b"\xff\xfe", b"ok", b"\x80\x00\x81", b""])
    header = request_header(1, [{"name": "INPUT0", "batch_byte_size": len(data)}])
    status, headers, body = infer(server.port, "identity_string", header, data)
    assert status == 200, headers
    raw, _ = split_infer_body(body, nv_infer_response(headers))
    assert raw["OUTPUT0"] == data


def _threads_after_loading(server, client, model: str) -> int:
    """How many threads loading ``model`` adds to the server process."""
    def count() -> int:
        return len(os.listdir(f"/proc/{server.proc.pid}/task"))

    before = count()
    client.load_model(model)
    time.sleep(0.2)  # the instance thread starts right after the load answers
    return count() - before


def test_intra_op_thread_count_sizes_the_sessions_thread_pool(server):
    client = httpclient.InferenceServerClient(f"{HOST}:{server.port}")
    try:
        # A load already made once: what a first load adds besides the model
        # (an executor thread that runs loads, with front-end workers) is there.
        client.load_model("identity_string")
        time.sleep(0.2)
        one = _threads_after_loading(server, client, "add_sub_1")
        four = _threads_after_loading(server, client, "add_sub_4")
    finally:
        client.close()
    # A pool of n intra-op threads is the calling thread plus n - 1 workers.
    assert four - one == 3, (one, four)


class _Payload:
    def __init__(self, inputs: dict, outputs: list[str]) -> None:
        self.inputs, self.outputs = inputs, outputs
        self.shape_key = self.priority = self.timeout_us = 0


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


def test_an_onnx_request_completes_while_python_holds_the_gil(tmp_path):
    """The instance thread runs the session, scatters and completes without
    the GIL: while this thread keeps the GIL (libc calls through ctypes.PyDLL
    never release it), the completion arrives. A Python runtime fails this."""
    import numpy as np
    from google.protobuf import text_format

    from pyserver import _core
    from pyserver.backends import onnxruntime_onnx
    from pyserver.protos import model_config_pb2 as mc

    config = text_format.Parse(_add_sub_config("add_sub", 1), mc.ModelConfig())
    (tmp_path / "model.onnx").write_bytes(onnx_models.add_sub())
    pool = _core.HostMemoryPool(1 << 20)
    runtime = onnxruntime_onnx.load_native(config, tmp_path / "model.onnx",
                                           config.instance_group[0], -1, pool)
    completions, stats = _core.CompletionQueue(), _core.ModelStats()
    scheduler = _core.ModelScheduler([runtime], completions, stats, pool=pool,
                                     input_names=("INPUT0", "INPUT1"),
                                     output_names=("OUTPUT0", "OUTPUT1"))
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    libc = ctypes.PyDLL(None)
    ready = _PollFd(completions.fileno(), 1, 0)  # POLLIN
    scheduler.enqueue(7, 1, _core.monotonic_ns(), _Payload({"INPUT0": a, "INPUT1": a},
                                                           ["OUTPUT0"]))
    libc.usleep(500_000)
    assert libc.poll(ctypes.byref(ready), 1, 0) == 1, \
        "the ONNX request did not complete while Python held the GIL"
    ((ticket, code, message, result, _),) = completions.drain()
    assert (ticket, code, message) == (7, 1, "")
    assert result["OUTPUT0"].tolist() == (a + a).tolist()
    scheduler.stop()
