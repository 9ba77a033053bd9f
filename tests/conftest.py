"""Shared helpers for the end-to-end tests: start the real server as a
subprocess on a free port, talk v1 HTTP to it, parse its protobuf headers.

Every server is a real ``python -m pyserver`` process over a store of real
ONNX models (pyserver.examples); nothing is mocked.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import grpc
import numpy as np
import pytest
from google.protobuf import json_format, text_format

from pyserver.examples import onnx_models
from pyserver.examples.store import build_example_store, config, tensor, write_model
from pyserver.protos import (api_pb2, grpc_service_pb2, grpc_service_pb2_grpc, request_status_pb2,
                             server_status_pb2)

HOST = "127.0.0.1"
# The HTTP parser under test: tests/run.py runs the HTTP tests once per parser.
HTTP_PARSER = os.environ.get("PYSERVER_TEST_HTTP_PARSER", "httptools")
# The suite's second configuration: every server with this many front-end workers.
FRONTEND_WORKERS = int(os.environ.get("PYSERVER_TEST_FRONTEND_WORKERS", "1"))
START_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 20.0

Code = request_status_pb2.RequestStatusCode


# -- processes ------------------------------------------------------------------

def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nobody listens on right now."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class ServerProcess:
    """``python -m pyserver`` on free ports (HTTP, gRPC, metrics), its
    output in a log file.

    With ``wait=True`` the constructor returns once ``/api/health/ready``
    (v1: the server has started) answers 200 (at most 30 s), and raises with the log if the process dies
    first. The gRPC and metrics listeners are bound before the HTTP one
    answers.
    """

    def __init__(self, store: Path | str, *args: str, poll_secs: float = 0,
                 workdir: Path | str | None = None, wait: bool = True,
                 python_flags: Sequence[str] = (),
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.port, self.grpc_port, self.metrics_port = free_ports(3)
        self.ssl_context = ssl_context  # for an HTTPS server: how wait_live connects
        self.url = f"{'https' if ssl_context else 'http'}://{HOST}:{self.port}"
        self.grpc_target = f"{HOST}:{self.grpc_port}"
        self.metrics_url = f"http://{HOST}:{self.metrics_port}/metrics"
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pyserver-test-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"server-{self.port}.log"
        self.command = [sys.executable, *python_flags, "-m", "pyserver", f"--model-store={store}",
                        f"--http-address={HOST}", f"--http-port={self.port}",
                        f"--http-parser={HTTP_PARSER}",
                        f"--grpc-address={HOST}", f"--grpc-port={self.grpc_port}",
                        f"--metrics-address={HOST}", f"--metrics-port={self.metrics_port}",
                        f"--repository-poll-secs={poll_secs}",
                        *([f"--frontend-workers={FRONTEND_WORKERS}"]
                          if FRONTEND_WORKERS > 1 and not any(
                              a.startswith("--frontend-workers") for a in args) else []),
                        *args]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command, cwd=self.workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _STARTED.append(self)
        if wait:
            self.wait_live()

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_live(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before it was "
                                   f"ready:\n{self.log_text()}")
            try:
                status, _, _ = http_request(self.port, "GET", "/api/health/ready", timeout=1.0,
                                            ssl_context=self.ssl_context)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log_text()}")

    def wait(self, timeout: float = 15.0) -> int:
        """Exit code, once the process ends by itself (kill on timeout)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            if not self._log.closed:
                self._log.flush()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then the exit code; SIGKILL (and -9) past ``timeout``."""
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


_STARTED: list[ServerProcess] = []


@pytest.fixture(scope="session", autouse=True)
def _no_server_outlives_the_session():
    """Kills any server a failed test left running."""
    yield
    for srv in _STARTED:
        srv.kill()


def wait_until(predicate: Callable[[], object], timeout: float = 15.0,
               interval: float = 0.1, what: str = "condition"):
    """Polls ``predicate`` until it returns something truthy (returned)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


# -- HTTP -----------------------------------------------------------------------

def http_request(port: int, method: str, path: str, headers: dict | None = None,
                 body: bytes = b"", timeout: float = REQUEST_TIMEOUT_S,
                 connection: http.client.HTTPConnection | None = None,
                 ssl_context: ssl.SSLContext | None = None):
    """(status, headers with lower-case names, body); over HTTPS with
    ``ssl_context``."""
    if connection is not None:
        conn = connection
    elif ssl_context is not None:
        conn = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=ssl_context)
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        if connection is None:
            conn.close()


def infer(port: int, model: str, header_text: str, body: bytes, version: int | None = None,
          binary: bool = True, connection: http.client.HTTPConnection | None = None):
    """POST /api/infer/<model>[/<version>][?format=binary]."""
    path = f"/api/infer/{model}" + (f"/{version}" if version is not None else "")
    if binary:
        path += "?format=binary"
    headers = {"NV-InferRequest": header_text, "Content-Type": "application/octet-stream"}
    return http_request(port, "POST", path, headers, body, connection=connection)


def request_header(batch_size: int, inputs: Sequence, outputs: Sequence = (),
                   request_id: int = 0) -> str:
    """A one-line NV-InferRequest. ``inputs``: names or dicts of Input fields;
    ``outputs``: names, or (name, cls_count) pairs."""
    header = api_pb2.InferRequestHeader(batch_size=batch_size, id=request_id)
    for spec in inputs:
        header.input.add(**({"name": spec} if isinstance(spec, str) else spec))
    for spec in outputs:
        if isinstance(spec, str):
            header.output.add(name=spec)
        else:
            name, count = spec
            header.output.add(name=name).cls.count = count
    return text_format.MessageToString(header, as_one_line=True)


def nv_status(headers: dict) -> request_status_pb2.RequestStatus:
    assert "nv-status" in headers, f"no NV-Status header in {headers}"
    return text_format.Parse(headers["nv-status"], request_status_pb2.RequestStatus())


def nv_infer_response(headers: dict) -> api_pb2.InferResponseHeader:
    assert "nv-inferresponse" in headers, f"no NV-InferResponse header in {headers}"
    return text_format.Parse(headers["nv-inferresponse"], api_pb2.InferResponseHeader())


def text_form(header: api_pb2.InferResponseHeader) -> api_pb2.InferResponseHeader:
    """``header`` as the text forms carry it (NV-InferResponse, the text
    trailer): without ``Output.data_type``, which text parsers of clients
    before 1.12 reject. The binary forms carry it."""
    copy = api_pb2.InferResponseHeader()
    copy.CopyFrom(header)
    for output in copy.output:
        output.ClearField("data_type")
    return copy


def split_infer_body(body: bytes, header: api_pb2.InferResponseHeader,
                     binary: bool = True) -> tuple[dict[str, bytes], api_pb2.InferResponseHeader]:
    """Raw output bytes by name (in header order) and the trailing header."""
    raw = {}
    offset = 0
    for output in header.output:
        if output.HasField("raw"):
            size = output.raw.batch_byte_size
            raw[output.name] = body[offset:offset + size]
            assert len(raw[output.name]) == size, "body shorter than the raw outputs"
            offset += size
    trailer = api_pb2.InferResponseHeader()
    if binary:
        trailer.ParseFromString(body[offset:])
    else:
        text_format.Parse(body[offset:].decode(), trailer)
    return raw, trailer


def assert_error(result, code: int, *fragments: str, http_status: int = 400):
    """A v1 error answer: status, NV-Status code and message fragments."""
    status, headers, _ = result
    assert status == http_status, result
    request_status = nv_status(headers)
    assert request_status.code == code, request_status
    for fragment in fragments:
        assert fragment.lower() in request_status.msg.lower(), request_status
    return request_status


def get_status(port: int, model: str = "") -> server_status_pb2.ServerStatus:
    path = "/api/status" + (f"/{model}" if model else "") + "?format=binary"
    status, headers, body = http_request(port, "GET", path)
    assert status == 200, (status, headers, body)
    assert nv_status(headers).code == Code.SUCCESS
    return server_status_pb2.ServerStatus.FromString(body)


def parse_json_status(body: bytes) -> server_status_pb2.ServerStatus:
    return json_format.Parse(body.decode(), server_status_pb2.ServerStatus())


# Raw sockets, for what http.client hides (pipelining, half requests).

def raw_request(method: str, path: str, headers: dict | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(stream) -> tuple[int, dict, bytes] | None:
    """One response from a socket's ``makefile('rb')``; None on a clean EOF
    before any byte. Raises AssertionError on a truncated response."""
    status_line = stream.readline()
    if not status_line:
        return None
    assert status_line.endswith(b"\r\n"), f"truncated status line {status_line!r}"
    status = int(status_line.split(b" ", 2)[1])
    headers = {}
    while True:
        line = stream.readline()
        assert line.endswith(b"\r\n"), f"truncated headers (got {line!r})"
        if line == b"\r\n":
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = stream.read(length)
    assert len(body) == length, f"truncated body: {len(body)} of {length} bytes"
    return status, headers, body


# -- gRPC -----------------------------------------------------------------------

GRPC_TIMEOUT_S = 20.0


def grpc_stub(target: str, max_message_bytes: int = 256 * 1024 * 1024
              ) -> tuple[grpc.Channel, grpc_service_pb2_grpc.GRPCServiceStub]:
    """A channel to ``target`` and a GRPCService stub on it (close the
    channel when done)."""
    channel = grpc.insecure_channel(target, options=[
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes)])
    return channel, grpc_service_pb2_grpc.GRPCServiceStub(channel)


def grpc_infer_request(model: str, batch_size: int, inputs: dict[str, np.ndarray],
                       outputs: Sequence = (), version: int = -1,
                       request_id: int = 0) -> grpc_service_pb2.InferRequest:
    """An InferRequest: ``inputs`` maps names to whole-batch arrays (in
    order), ``outputs`` as for request_header."""
    request = grpc_service_pb2.InferRequest(model_name=model, model_version=version)
    header = request.meta_data
    header.batch_size = batch_size
    header.id = request_id
    for name, array in inputs.items():
        header.input.add(name=name)
        request.raw_input.append(np.ascontiguousarray(array).tobytes())
    for spec in outputs:
        if isinstance(spec, str):
            header.output.add(name=spec)
        else:
            name, count = spec
            header.output.add(name=name).cls.count = count
    return request


def raw_grpc_call(channel: grpc.Channel, method: str, payload: bytes,
                  timeout: float = GRPC_TIMEOUT_S) -> bytes:
    """A unary GRPCService call with ``payload`` sent as is (no protobuf
    encoding); returns the response bytes."""
    call = channel.unary_unary(f"/nvidia.inferenceserver.GRPCService/{method}",
                               request_serializer=None, response_deserializer=None)
    return call(payload, timeout=timeout)


# -- stores -----------------------------------------------------------------------

def identity_config(name: str, dtype: str, dims: Sequence[int], max_batch_size: int = 8) -> str:
    return config(name, max_batch_size, [tensor("INPUT0", dtype, dims)],
                  [tensor("OUTPUT0", dtype, dims)])


def write_identity(root: Path, name: str, dtype: str = "FP32", dims: Sequence[int] = (4,),
                   versions: Sequence[int] = (1,), max_batch_size: int = 8) -> Path:
    shape = (["batch"] if max_batch_size else []) + [
        d if d > 0 else f"d{i}" for i, d in enumerate(dims)]
    model = onnx_models.identity(dtype, shape)
    return write_model(root, name, identity_config(name, dtype, dims, max_batch_size),
                       {v: model for v in versions})


GARBAGE_ONNX = b"this is not an ONNX model\x00\x01\x02" * 8


def build_broken_store(root: Path) -> Path:
    """Good models plus broken ones:
    - ``good``: identity FP32 [4], version 1;
    - ``half_broken``: policy all, version 1 good, version 2 garbage model.onnx;
    - ``bad_parse``: a config.pbtxt that does not parse (version 1 is a good model);
    - ``bad_onnx``: a good config whose version 1 model.onnx is garbage bytes;
    - ``bad_name``: config name 'other_name' in folder 'bad_name' (version 1 good);
    - ``no_file``: a good config and an empty version 1 folder (no model.onnx).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    good = onnx_models.identity("FP32", ["batch", 4])
    write_identity(root, "good")
    write_model(root, "half_broken",
                identity_config("half_broken", "FP32", [4]) + "version_policy: { all { } }\n",
                {1: good, 2: GARBAGE_ONNX})
    write_model(root, "bad_parse", 'name: "bad_parse"\nthis is { not a model config\n', {1: good})
    write_model(root, "bad_onnx", identity_config("bad_onnx", "FP32", [4]), {1: GARBAGE_ONNX})
    write_model(root, "bad_name", identity_config("other_name", "FP32", [4]), {1: good})
    write_model(root, "no_file", identity_config("no_file", "FP32", [4]), {})
    (root / "no_file" / "1").mkdir()
    return root


@pytest.fixture(scope="session")
def broken_store(tmp_path_factory) -> Path:
    return build_broken_store(tmp_path_factory.mktemp("broken_store"))


@pytest.fixture(scope="session")
def example_store(tmp_path_factory) -> Path:
    """The example store (simple, simple_int32, simple_nobatch, classifier,
    versioned, mlp, image_classifier); read-only for tests."""
    return build_example_store(tmp_path_factory.mktemp("example_store"))


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    """One server per test module over the example store."""
    srv = ServerProcess(example_store, workdir=tmp_path_factory.mktemp("server"))
    yield srv
    code = srv.stop()
    assert code == 0, f"server exit code {code}:\n{srv.log_text()}"


def add_sub_body(a: np.ndarray, b: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes() + np.ascontiguousarray(b).tobytes()


