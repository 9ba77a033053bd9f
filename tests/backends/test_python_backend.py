"""Python models written as for Triton's Python backend, served through a
real server (each instance in a stub process of its own), against the same
model class called directly in this process; failures stay with the
requests they concern and the server keeps serving."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from backend_helpers import platform_config, serve, write_version
from conftest import (Code, ServerProcess, assert_error, free_ports, get_status, http_request,
                      infer, request_header)
from pyserver.backends import python as python_backend
from pyserver.backends.python import triton_python_backend_utils as pb_utils
from pyserver.examples import python_models
from pyserver.examples.store import tensor
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import server_status_pb2 as ss
from pyserver.repository import config as config_module

ADD_SUB_IO = ([tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
              [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])])
FLAKY_IO = ([tensor("INPUT0", "FP32", [4])], [tensor("OUTPUT0", "FP32", [4])])
BATCHING = "dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 20000 }"

PROCESS_ID = '''\
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        pid = np.array([[os.getpid()]], dtype=np.int64)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("PID", np.repeat(pid, len(
            pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()), axis=0))])
            for r in requests]
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("python") / "store"
    write_version(root, "add_sub", platform_config("add_sub", "python", 8, *ADD_SUB_IO),
                  {"model.py": python_models.ADD_SUB})
    write_version(root, "add_sub_batched",
                  platform_config("add_sub_batched", "python", 8, *ADD_SUB_IO, BATCHING),
                  {"model.py": python_models.ADD_SUB})
    write_version(root, "flaky", platform_config("flaky", "python", 8, *FLAKY_IO),
                  {"model.py": python_models.FLAKY})
    write_version(root, "reverse", platform_config(
        "reverse", "python", 8, [tensor("INPUT0", "STRING", [2])],
        [tensor("OUTPUT0", "STRING", [2])]), {"model.py": python_models.REVERSE_STRINGS})
    write_version(root, "pids", platform_config(
        "pids", "python", 8, [tensor("INPUT0", "FP32", [1])], [tensor("PID", "INT64", [1])],
        "instance_group [ { count: 2 kind: KIND_CPU } ]"), {"model.py": PROCESS_ID})
    write_version(root, "broken_initialize", platform_config(
        "broken_initialize", "python", 8, *FLAKY_IO), {"model.py": python_models.BROKEN_INITIALIZE})
    return root


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    process = ServerProcess(models, "--exit-on-error=false",
                            workdir=tmp_path_factory.mktemp("python-server"))
    yield process
    assert process.stop() == 0, process.log_text()


def direct_model(source: str, config_text: str, tmp_path):
    """The model class imported and initialised in this process: the reference."""
    sys.modules.setdefault("triton_python_backend_utils", pb_utils)
    path = tmp_path / "model.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("reference_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from google.protobuf import text_format
    config = config_module.normalize(text_format.Parse(config_text, mc.ModelConfig()))
    model = module.TritonPythonModel()
    model.initialize({"model_config": python_backend.model_config_json(config)})
    return model


def add_sub_inputs(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 16)).astype(np.float32),
            rng.standard_normal((batch, 16)).astype(np.float32))


@pytest.mark.parametrize("batch", [1, 3])
def test_outputs_equal_the_model_called_directly(server, tmp_path, batch):
    a, b = add_sub_inputs(batch, seed=batch)
    got = serve(server.port, "add_sub", {"INPUT0": a, "INPUT1": b},
                {"OUTPUT0": "FP32", "OUTPUT1": "FP32"}, batch)
    model = direct_model(python_models.ADD_SUB,
                         platform_config("add_sub", "python", 8, *ADD_SUB_IO), tmp_path)
    (response,) = model.execute([pb_utils.InferenceRequest(
        [pb_utils.Tensor("INPUT0", a), pb_utils.Tensor("INPUT1", b)])])
    for name in ("OUTPUT0", "OUTPUT1"):
        np.testing.assert_array_equal(
            got[name], pb_utils.get_output_tensor_by_name(response, name).as_numpy())


def test_dynamic_batching_gives_the_model_whole_batches(server):
    pairs = [add_sub_inputs(1, seed=300 + i) for i in range(24)]

    def call(i):
        a, b = pairs[i]
        return serve(server.port, "add_sub_batched", {"INPUT0": a, "INPUT1": b},
                     {"OUTPUT0": "FP32", "OUTPUT1": "FP32"}, 1)

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(len(pairs))))
    for (a, b), got in zip(pairs, results):
        np.testing.assert_array_equal(got["OUTPUT0"], a + b)
        np.testing.assert_array_equal(got["OUTPUT1"], a - b)
    version = get_status(server.port, "add_sub_batched") \
        .model_status["add_sub_batched"].version_status[1]
    assert version.model_inference_count == len(pairs)
    assert version.model_execution_count < version.model_inference_count


def test_string_tensors(server):
    x = np.array([[b"abc", b""], [b"hello", b"\x00\xff"]], dtype=np.object_)
    got = serve(server.port, "reverse", {"INPUT0": x}, {"OUTPUT0": "STRING"}, 2)
    assert got["OUTPUT0"] == [b"cba", b"", b"olleh", b"\xff\x00"]


def flaky(port: int, value: float):
    return infer(port, "flaky", request_header(1, ["INPUT0"], ["OUTPUT0"]),
                 np.full(4, value, np.float32).tobytes())


def test_a_model_that_raises_fails_the_request_as_internal(server):
    assert_error(flaky(server.port, -1), Code.INTERNAL, "negative input is not allowed")
    assert flaky(server.port, 1)[0] == 200


def test_an_error_response_fails_only_its_request_with_its_code(server):
    assert_error(flaky(server.port, 99), Code.INVALID_ARG, "99 is refused")
    assert flaky(server.port, 2)[0] == 200


def test_a_model_that_kills_its_process_fails_the_request_and_is_restarted(server):
    assert_error(flaky(server.port, 13), Code.INTERNAL, "process exited")
    status, _, body = flaky(server.port, 3)
    assert status == 200
    version = get_status(server.port, "flaky").model_status["flaky"].version_status[1]
    assert version.ready_state == ss.MODEL_READY


def test_each_instance_runs_in_a_process_of_its_own(server):
    header = request_header(1, ["INPUT0"], ["PID"])

    def pid(i):
        status, headers, body = infer(server.port, "pids", header, np.zeros(1, np.float32).tobytes())
        assert status == 200
        return int(np.frombuffer(body[:8], np.int64)[0])

    with ThreadPoolExecutor(8) as pool:
        pids = set(pool.map(pid, range(64)))
    assert server.proc.pid not in pids
    assert len(pids) == 2


def test_a_failing_initialize_is_unavailable_with_the_reason(server):
    version = get_status(server.port, "broken_initialize") \
        .model_status["broken_initialize"].version_status[1]
    assert version.ready_state == ss.MODEL_UNAVAILABLE
    assert "cannot find my weights" in version.ready_state_reason.message
    assert flaky(server.port, 4)[0] == 200


def test_platform_python_is_reported_in_status(server):
    assert get_status(server.port, "add_sub").model_status["add_sub"].config.platform == "python"


# -- triton_python_backend_utils, in process ------------------------------------------------

def test_initialize_args_carry_the_config_as_triton_json(tmp_path):
    from google.protobuf import text_format
    config = config_module.normalize(text_format.Parse(
        platform_config("add_sub", "python", 8, *ADD_SUB_IO), mc.ModelConfig()))
    model_file = tmp_path / "add_sub" / "3" / "model.py"
    args = python_backend.initialize_args(config, model_file, config.instance_group[0], -1)
    assert args["model_name"] == "add_sub" and args["model_version"] == "3"
    assert args["model_instance_kind"] == "CPU"
    assert args["model_repository"] == str(tmp_path / "add_sub")
    parsed = json.loads(args["model_config"])
    assert parsed["max_batch_size"] == 8
    output = pb_utils.get_output_config_by_name(parsed, "OUTPUT1")
    assert pb_utils.triton_string_to_numpy(output["data_type"]) == np.float32
    assert pb_utils.get_input_config_by_name(args["model_config"], "INPUT0")["name"] == "INPUT0"


def test_byte_tensors_serialize_as_triton_does():
    values = np.array([b"a", b"", "ü".encode()], dtype=np.object_)
    encoded = pb_utils.serialize_byte_tensor(values)
    assert encoded.dtype == np.uint8
    assert encoded.tobytes() == b"\x01\x00\x00\x00a\x00\x00\x00\x00\x02\x00\x00\x00\xc3\xbc"
    assert list(pb_utils.deserialize_bytes_tensor(encoded)) == list(values)


def test_responses_and_errors():
    out = pb_utils.Tensor("OUT", np.arange(3, dtype=np.int32))
    response = pb_utils.InferenceResponse(output_tensors=[out])
    assert not response.has_error()
    assert pb_utils.get_output_tensor_by_name(response, "OUT") is out
    assert out.triton_dtype() == "TYPE_INT32"
    failed = pb_utils.InferenceResponse(error=pb_utils.TritonError("no"))
    assert failed.has_error() and failed.error().message() == "no"
    assert failed.error().code() == pb_utils.TritonError.INTERNAL
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.InferenceRequest().exec()


def stub_pids(port: int) -> set[int]:
    header = request_header(1, ["INPUT0"], ["PID"])

    def pid(i):
        status, headers, body = infer(port, "pids", header, np.zeros(1, np.float32).tobytes())
        assert status == 200, body
        return int(np.frombuffer(body[:8], np.int64)[0])

    with ThreadPoolExecutor(8) as pool:
        return set(pool.map(pid, range(64)))


def test_a_stub_killed_while_idle_is_restarted_before_the_next_request(server):
    before = stub_pids(server.port)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    # Every request after the kill is answered by a new process.
    after = stub_pids(server.port)
    assert not before & after
    assert len(after) == 2


def test_a_stub_killed_by_a_signal_fails_its_request_naming_the_signal(server):
    assert_error(flaky(server.port, 9), Code.INTERNAL, "signal 9 (SIGKILL)")
    assert flaky(server.port, 5)[0] == 200


def test_a_stub_that_exits_fails_its_request_naming_the_exit_code(server):
    assert_error(flaky(server.port, 13), Code.INTERNAL, "exited with code 3")
    assert flaky(server.port, 6)[0] == 200


# A model that records every request it runs, then raises when one of the
# batch is negative.
RECORDING = '''\
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.log = os.path.join(args["model_repository"], "runs.log")

    def execute(self, requests):
        values = [float(pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy().reshape(-1)[0])
                  for r in requests]
        with open(self.log, "a") as log:
            log.write("".join(f"{v}\\n" for v in values))
        if min(values) < 0:
            raise pb_utils.TritonModelException("negative input is not allowed")
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() * 2)])
            for r in requests]
'''


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("recording") / "store"
    batching = "dynamic_batching { max_queue_delay_microseconds: 200000 preferred_batch_size: [ 4 ] }"
    for name, retry in (("retry_each", "true"), ("run_once", "false")):
        extra = (f'{batching} parameters {{ key: "retry_failed_batch_per_request" '
                 f'value {{ string_value: "{retry}" }} }}')
        write_version(root, name, platform_config(name, "python", 8, *FLAKY_IO, extra),
                      {"model.py": RECORDING})
    process = ServerProcess(root, workdir=tmp_path_factory.mktemp("recording-server"))
    yield root, process
    assert process.stop() == 0, process.log_text()


def batch_of_four(port: int, model: str) -> list[int]:
    header = request_header(1, ["INPUT0"], ["OUTPUT0"])

    def call(value):
        return infer(port, model, header, np.full(4, value, np.float32).tobytes())[0]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(call, [1.0, 2.0, -3.0, 4.0]))


def test_a_failed_batch_reruns_each_request_alone_when_the_model_allows(recording):
    root, server = recording
    statuses = batch_of_four(server.port, "retry_each")
    assert statuses == [200, 200, 400, 200]


def test_a_failed_batch_never_runs_a_request_twice_when_retry_is_off(recording):
    root, server = recording
    batch_of_four(server.port, "run_once")
    runs = (root / "run_once" / "runs.log").read_text().split()
    assert sorted(runs) == sorted(set(runs))  # no request ran twice


# A folder like the repository root: a `pyserver/` that is not the package.
def test_stubs_never_import_from_the_servers_working_directory(models, tmp_path):
    decoy = tmp_path / "pyserver"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('imported from the working directory')\n")
    console_script = os.path.join(os.path.dirname(sys.executable), "pyserver")
    if not os.path.exists(console_script):
        pytest.skip("the pyserver console script is not installed beside this interpreter")
    ports = free_ports(3)
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [console_script, f"--model-store={models}", "--http-address=127.0.0.1",
         f"--http-port={ports[0]}", "--grpc-address=127.0.0.1", f"--grpc-port={ports[1]}",
         "--metrics-address=127.0.0.1", f"--metrics-port={ports[2]}", "--exit-on-error=false"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http_request(ports[0], "GET", "/api/health/live", timeout=1.0)[0] in (200, 400):
                    break
            except OSError:
                time.sleep(0.1)
        assert flaky(ports[0], 1)[0] == 200, (tmp_path / "server.log").read_text()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
