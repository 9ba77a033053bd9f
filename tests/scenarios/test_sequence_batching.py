"""The sequence batcher through a real server: many interleaved sequences
from several client threads (tritonclient.http and tritonclient.grpc with
sequence_id / sequence_start / sequence_end, v2 gRPC stubs and
tritonclient.grpc over ModelStreamInfer, v1 HTTP with NV-InferRequest flags) against stateful models generated in code (a
Python accumulator keeping its sums per CORRID, and an ONNX accumulator whose
state the server keeps), both strategies; every running sum is checked, and
bad sequence requests get clear errors while the server keeps serving."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import Code, ServerProcess, assert_error, grpc_infer_request, grpc_stub, infer, \
    nv_infer_response, request_header, split_infer_body
from pyserver.examples import onnx_models, python_models
from pyserver.examples.store import tensor

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

GRPC_CHECKS = Path(__file__).with_name("sequence_grpc_checks.py")
IO = ([tensor("INPUT", "INT32", [1])], [tensor("OUTPUT", "INT32", [1])])


def _int32_control(name: str, kind: str) -> str:
    return (f'{{ name: "{name}" control [ {{ kind: {kind} int32_false_true: [ 0, 1 ] }} ] }}')


PY_CONTROLS = ("control_input [ " + ", ".join([
    _int32_control("START", "CONTROL_SEQUENCE_START"),
    _int32_control("END", "CONTROL_SEQUENCE_END"),
    _int32_control("READY", "CONTROL_SEQUENCE_READY"),
    '{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }',
]) + " ]")
ONNX_STATE = (_int32_control("START", "CONTROL_SEQUENCE_START").join(["control_input [ ", " ]"])
              + ' state [ { input_name: "STATE_IN" output_name: "STATE_OUT" '
                'data_type: TYPE_INT32 dims: [ 1 ] initial_state { data_type: TYPE_INT32 '
                'dims: [ 1 ] zero_data: true name: "zeros" } } ]')
DIRECT = "direct { }"
OLDEST = ("oldest { max_candidate_sequences: 6 preferred_batch_size: [ 2, 4 ] "
          "max_queue_delay_microseconds: 2000 }")
INSTANCES = "instance_group [ { count: 2 kind: KIND_CPU } ]"
MODELS = ("acc_py_direct", "acc_py_oldest", "acc_onnx_direct", "acc_onnx_oldest")
THREADS = 8            # client threads, each running sequences one after another
SEQUENCES = 12         # per model: more than the 2 x 4 direct slots, so some wait
STEPS = 6


def platform_config(name: str, platform: str, max_batch_size: int, inputs, outputs,
                    *extra: str) -> str:
    kind = 'backend: "python"' if platform == "python" else f'platform: "{platform}"'
    return "\n".join([f'name: "{name}"', kind, f"max_batch_size: {max_batch_size}",
                      f"input [ {', '.join(inputs)} ]", f"output [ {', '.join(outputs)} ]",
                      *extra]) + "\n"


def write_version(root, name: str, config_text: str, files: dict[str, bytes | str]) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(config_text)
    for filename, data in files.items():
        path = root / name / "1" / filename
        path.write_text(data) if isinstance(data, str) else path.write_bytes(data)


def _sequence_batching(body: str, strategy: str, idle_us: int = 0) -> str:
    idle = f"max_sequence_idle_microseconds: {idle_us} " if idle_us else ""
    return f"sequence_batching {{ {idle}{strategy} {body} }}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequence") / "store"
    for name, strategy in (("acc_py_direct", DIRECT), ("acc_py_oldest", OLDEST)):
        write_version(root, name, platform_config(
            name, "python", 4, *IO, _sequence_batching(PY_CONTROLS, strategy), INSTANCES),
            {"model.py": python_models.ACCUMULATOR})
    for name, strategy in (("acc_onnx_direct", DIRECT), ("acc_onnx_oldest", OLDEST)):
        write_version(root, name, platform_config(
            name, "onnxruntime_onnx", 4, *IO, _sequence_batching(ONNX_STATE, strategy),
            INSTANCES), {"model.onnx": onnx_models.accumulator()})
    write_version(root, "acc_idle", platform_config(
        "acc_idle", "python", 4, *IO, _sequence_batching(PY_CONTROLS, DIRECT, 600000)),
        {"model.py": python_models.ACCUMULATOR})
    return root


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    process = ServerProcess(store, workdir=tmp_path_factory.mktemp("sequence-server"))
    yield process
    assert process.stop() == 0, process.log_text()


def _http_step(client, model: str, sequence_id, value: int, start: bool, end: bool) -> int:
    item = httpclient.InferInput("INPUT", [1, 1], "INT32")
    item.set_data_from_numpy(np.array([[value]], np.int32))
    result = client.infer(model, [item], sequence_id=sequence_id, sequence_start=start,
                          sequence_end=end)
    return int(result.as_numpy("OUTPUT").reshape(-1)[0])


def _run_sequence(url: str, model: str, sequence_id, seed: int) -> list[tuple[int, int]]:
    """One whole sequence; (expected, got) per step."""
    client = httpclient.InferenceServerClient(url)
    try:
        total, out = 0, []
        for step in range(STEPS):
            value = seed * 10 + step + 1
            total += value
            got = _http_step(client, model, sequence_id, value, step == 0, step == STEPS - 1)
            out.append((total, got))
        return out
    finally:
        client.close()


@pytest.mark.parametrize("model", MODELS)
def test_interleaved_sequences_keep_their_sums(server, model):
    url = f"127.0.0.1:{server.port}"
    # The ONNX models have no CORRID control, so string ids serve them too.
    ids = [f"seq-{i}" if model.startswith("acc_onnx") and i % 2 else 1000 + i
           for i in range(SEQUENCES)]
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda i: _run_sequence(url, model, ids[i], i),
                                range(SEQUENCES)))
    for i, steps in enumerate(results):
        assert [got for _, got in steps] == [want for want, _ in steps], (model, ids[i])


def test_v1_http_flags_drive_sequences(server):
    def step(corrid: int, value: int, flags: int) -> int:
        header = request_header(1, ["INPUT"], ["OUTPUT"]) + \
            f" correlation_id: {corrid} flags: {flags}"
        status, headers, body = infer(server.port, "acc_py_oldest", header,
                                      np.array([value], np.int32).tobytes())
        assert status == 200, (status, headers, body)
        raw, _ = split_infer_body(body, nv_infer_response(headers))
        return int(np.frombuffer(raw["OUTPUT"], np.int32)[0])

    def sequence(corrid: int) -> list[int]:
        return [step(corrid, corrid + k, 1 if k == 0 else (2 if k == 3 else 0))
                for k in range(4)]

    with ThreadPoolExecutor(4) as pool:
        sums = list(pool.map(sequence, [7001, 7002, 7003, 7004]))
    for corrid, got in zip([7001, 7002, 7003, 7004], sums):
        assert got == list(np.cumsum([corrid + k for k in range(4)])), corrid


def test_v2_grpc_stream_carries_sequences(server):
    from pyserver.protos import v2_grpc_service_pb2 as pb
    from pyserver.protos import v2_grpc_service_pb2_grpc as pb_grpc

    def message(model: str, sequence_id, value: int, start: bool, end: bool, tag: str):
        request = pb.ModelInferRequest(model_name=model, id=tag)
        request.inputs.add(name="INPUT", datatype="INT32", shape=[1, 1])
        request.raw_input_contents.append(np.array([value], np.int32).tobytes())
        if isinstance(sequence_id, str):
            request.parameters["sequence_id"].string_param = sequence_id
        else:
            request.parameters["sequence_id"].int64_param = sequence_id
        request.parameters["sequence_start"].bool_param = start
        request.parameters["sequence_end"].bool_param = end
        return request

    plan = []  # (model, id, value, start, end, tag, expected)
    sums: dict = {}
    for step in range(4):
        for model, sequence_id in (("acc_onnx_direct", "grpc-a"), ("acc_onnx_oldest", 9001),
                                   ("acc_py_direct", 9002), ("acc_py_oldest", 9003)):
            value = step + (len(plan) % 5)
            sums[sequence_id] = (0 if step == 0 else sums[sequence_id]) + value
            plan.append((model, sequence_id, value, step == 0, step == 3,
                         f"{sequence_id}-{step}", sums[sequence_id]))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        replies = list(stub.ModelStreamInfer(iter([message(*p[:6]) for p in plan]), timeout=30))
    assert len(replies) == len(plan)
    got = {}
    for reply in replies:
        assert reply.error_message == "", reply.error_message
        got[reply.infer_response.id] = int(np.frombuffer(
            reply.infer_response.raw_output_contents[0], np.int32)[0])
    assert got == {p[5]: p[6] for p in plan}


def _http_error(client, model: str, sequence_id, start=False, end=False) -> str:
    with pytest.raises(InferenceServerException) as info:
        _http_step(client, model, sequence_id, 1, start, end)
    assert info.value.status() == "400", info.value
    return info.value.message()


def test_bad_sequence_requests_get_clear_errors(server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        message = _http_error(client, "acc_py_direct", 0, start=True)
        assert "must specify a non-zero or non-empty correlation ID" in message
        message = _http_error(client, "acc_py_direct", 555)
        assert message == ("inference request for sequence 555 to model 'acc_py_direct' must "
                           "specify the START flag on the first request of the sequence")
        assert _http_step(client, "acc_py_direct", 556, 4, True, True) == 4
        assert "must specify the START flag" in _http_error(client, "acc_py_direct", 556)
        message = _http_error(client, "acc_py_direct", "text-id", start=True)
        assert "string correlation ID 'text-id'" in message
        # The server keeps serving: a good sequence afterwards.
        assert _http_step(client, "acc_py_direct", 557, 2, True, False) == 2
        assert _http_step(client, "acc_py_direct", 557, 3, False, True) == 5
    finally:
        client.close()


def test_v1_request_without_correlation_id_is_refused(server):
    header = request_header(1, ["INPUT"], ["OUTPUT"]) + " flags: 1"
    result = infer(server.port, "acc_py_oldest", header, np.array([1], np.int32).tobytes())
    assert_error(result, Code.INVALID_ARG, "non-zero or non-empty correlation ID")


def test_idle_sequence_is_released(server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert _http_step(client, "acc_idle", 31, 5, True, False) == 5
        assert _http_step(client, "acc_idle", 31, 1, False, False) == 6  # within the 0.6 s
        time.sleep(1.5)
        assert "must specify the START flag" in _http_error(client, "acc_idle", 31)
        assert _http_step(client, "acc_idle", 31, 7, True, True) == 7  # a new sequence
    finally:
        client.close()


@pytest.fixture(scope="module")
def grpc_outcome(server):
    if importlib.util.find_spec("tritonclient.grpc") is None:
        pytest.skip("tritonclient[grpc] is not installed")
    done = subprocess.run([sys.executable, str(GRPC_CHECKS), server.grpc_target],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["threads", "stream", "errors"])
def test_tritonclient_grpc_sequences(grpc_outcome, name):
    assert grpc_outcome.get(name) == "ok", grpc_outcome.get(name, "check did not run")


def test_config_reports_sequence_batching(server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        seq = client.get_model_config("acc_onnx_oldest")["sequence_batching"]
    finally:
        client.close()
    assert seq["max_sequence_idle_microseconds"] == 1000000
    assert seq["oldest"]["max_candidate_sequences"] == 6
    assert seq["state"][0]["input_name"] == "STATE_IN"
    assert seq["control_input"][0]["control"][0]["int32_false_true"] == [0, 1]


def test_v1_grpc_header_drives_a_sequence(server):
    channel, stub = grpc_stub(server.grpc_target)
    try:
        sums = []
        for step, flags in enumerate((1, 0, 2)):
            request = grpc_infer_request("acc_onnx_direct", 1,
                                         {"INPUT": np.array([[step + 4]], np.int32)}, ["OUTPUT"])
            request.meta_data.correlation_id = 8080
            request.meta_data.flags = flags
            response = stub.Infer(request, timeout=30)
            assert response.request_status.code == Code.SUCCESS, response.request_status
            sums.append(int(np.frombuffer(response.raw_output[0], np.int32)[0]))
        assert sums == [4, 9, 15]
        request = grpc_infer_request("acc_onnx_direct", 1, {"INPUT": np.array([[1]], np.int32)})
        request.meta_data.correlation_id = 8080  # ended: needs START again
        response = stub.Infer(request, timeout=30)
        assert response.request_status.code == Code.INVALID_ARG
        assert "must specify the START flag" in response.request_status.msg
    finally:
        channel.close()
