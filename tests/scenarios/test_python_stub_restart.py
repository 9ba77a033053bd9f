"""A Python model's stub process that dies, by any signal, is replaced
before the next request; the requests it was running fail with an error
naming the signal; and the stub imports the installed package even when the
server's working directory holds a ``pyserver/`` folder."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from conftest import (Code, ServerProcess, assert_error, get_status, infer, request_header,
                      wait_until)
from pyserver.examples.store import tensor
from pyserver.protos import server_status_pb2 as ss

# OUTPUT0 is the stub's pid; an input of 7 first writes "<pid>" to the file
# named by the SLEEP_MARKER parameter, then sleeps (a request to kill it under).
PID_MODEL = '''\
import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.marker = config["parameters"]["SLEEP_MARKER"]["string_value"]

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if float(x.reshape(-1)[0]) == 7:
                with open(self.marker, "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(60)
            pid = np.full(x.shape, os.getpid(), np.int64)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pid)]))
        return responses
'''

POISON = 'raise ImportError("imported pyserver from the working directory")\n'


def _write_store(root, marker) -> None:
    model = root / "pids"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(PID_MODEL)
    (model / "config.pbtxt").write_text("\n".join([
        'name: "pids"', 'backend: "python"', "max_batch_size: 8",
        f"input [ {tensor('INPUT0', 'FP32', [1])} ]",
        f"output [ {tensor('OUTPUT0', 'INT64', [1])} ]",
        f'parameters {{ key: "SLEEP_MARKER" value {{ string_value: "{marker}" }} }}']) + "\n")


@pytest.fixture(scope="module")
def marker(tmp_path_factory):
    return tmp_path_factory.mktemp("marker") / "sleeping"


@pytest.fixture(scope="module")
def server(tmp_path_factory, marker):
    """Started from a folder holding a poisoned ``pyserver/`` package; the
    server itself runs with ``-P`` so only its stubs could import it."""
    store = tmp_path_factory.mktemp("stub_store")
    _write_store(store, marker)
    workdir = tmp_path_factory.mktemp("workdir_with_pyserver")
    (workdir / "pyserver" / "backends" / "python").mkdir(parents=True)
    for package in ("pyserver", "pyserver/backends", "pyserver/backends/python"):
        (workdir / package / "__init__.py").write_text(POISON)
    (workdir / "pyserver" / "backends" / "python" / "stub.py").write_text(POISON)
    srv = ServerProcess(store, workdir=workdir, python_flags=("-P",))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def _pid(port: int, value: float = 1.0):
    result = infer(port, "pids", request_header(1, ["INPUT0"], ["OUTPUT0"]),
                   np.full(1, value, np.float32).tobytes())
    return result


def _served_pid(port: int) -> int:
    status, headers, body = _pid(port)
    assert status == 200, (status, headers, body)
    return int(np.frombuffer(body[:8], np.int64)[0])


def test_stub_does_not_import_the_working_directory(server):
    version = get_status(server.port, "pids").model_status["pids"].version_status[1]
    assert version.ready_state == ss.MODEL_READY, version
    assert _served_pid(server.port) != server.proc.pid
    assert "imported pyserver from the working directory" not in server.log_text()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_stub_killed_while_idle_is_replaced_before_the_next_request(server, signum):
    old = _served_pid(server.port)
    os.kill(old, signum)
    new = _served_pid(server.port)  # at once: no wait for the process to go
    assert new != old


def test_request_running_in_a_killed_stub_fails_naming_the_signal(server, marker):
    if marker.exists():
        marker.unlink()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", _pid(server.port, 7.0)))
    thread.start()
    pid = int(wait_until(lambda: marker.exists() and marker.read_text(), timeout=20,
                         what="the model sleeping"))
    os.kill(pid, signal.SIGKILL)
    thread.join(20)
    assert not thread.is_alive()
    assert_error(result["r"], Code.INTERNAL, "SIGKILL")
    assert _served_pid(server.port) != pid
