"""The models every server of ``compare`` runs (the same ONNX files), and the fixed requests
each API sends for them, with the check of the answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from google.protobuf import text_format

from pyserver.examples import onnx_models
from pyserver.examples.store import config as v1_config, tensor
from pyserver.protos import model_config_pb2 as mc

from ...harness.processes import HOST, Unavailable
from ...pyserver_perf import target as perf_target

PROBE_TIMEOUT_S = 20.0
ECHO_BODY = bytes(range(128))


@dataclass
class Model:
    name: str
    onnx: bytes
    max_batch_size: int
    instances: int
    inputs: list[tuple[str, list[int]]]
    outputs: list[tuple[str, list[int]]]
    data: dict[str, np.ndarray] = field(default_factory=dict)       # batch-1 inputs
    expected: dict[str, np.ndarray] = field(default_factory=dict)   # their outputs

    def v1_config(self) -> str:
        return v1_config(self.name, self.max_batch_size,
                         [tensor(n, "FP32", d) for n, d in self.inputs],
                         [tensor(n, "FP32", d) for n, d in self.outputs],
                         f"instance_group [ {{ count: {self.instances} kind: KIND_CPU }} ]")

    def triton_config(self) -> str:
        def entries(items):
            return ", ".join(f'{{ name: "{n}" data_type: TYPE_FP32 dims: [ '
                             f'{", ".join(map(str, d))} ] }}' for n, d in items)
        return (f'name: "{self.name}"\nbackend: "python"\nmax_batch_size: {self.max_batch_size}\n'
                f"input [ {entries(self.inputs)} ]\noutput [ {entries(self.outputs)} ]\n"
                f"instance_group [ {{ count: {self.instances} kind: KIND_CPU }} ]\n")


def make_models(names: list[str]) -> list[Model]:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    built = {
        "add": lambda: Model("add", onnx_models.add_sub("FP32", 16), 8, 1,
                             [("INPUT0", [16]), ("INPUT1", [16])],
                             [("OUTPUT0", [16]), ("OUTPUT1", [16])]),
        "mlp": lambda: Model("mlp", onnx_models.mlp(), 32, 2, [("INPUT0", [512])],
                             [("OUTPUT0", [1000])]),
    }
    models = []
    for name in names:
        model = built[name]()
        model.data = {n: rng.random([1, *d]).astype(np.float32) for n, d in model.inputs}
        session = ort.InferenceSession(model.onnx, providers=["CPUExecutionProvider"])
        outs = session.run([n for n, _ in model.outputs], model.data)
        model.expected = dict(zip([n for n, _ in model.outputs], outs))
        models.append(model)
    return models


@dataclass
class Request:
    """One fixed request: what wrk sends, and how to check the answer."""
    path: str
    body: bytes
    headers: dict[str, str]
    check: Callable[[int, dict, bytes], None]


def _close(name: str, got: np.ndarray, want: np.ndarray) -> None:
    if got.size != want.size or not np.allclose(got.reshape(-1), want.reshape(-1),
                                                rtol=1e-3, atol=1e-3):
        raise Unavailable(f"wrong answer for {name}")


def _ok(status: int) -> None:
    if status != 200:
        raise Unavailable(f"HTTP {status}")


def v1_request(model: Model, port: int) -> Request:
    config = text_format.Parse(model.v1_config(), mc.ModelConfig())
    inputs = [(n, d, model.data[n].tobytes()) for n, d in model.inputs]
    header = perf_target.request_header(config, 1, inputs)
    raw = perf_target.http_request(perf_target.Endpoint("http", HOST, port), model.name, -1,
                                   header, inputs)
    head, body = raw.split(b"\r\n\r\n", 1)
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    headers = {k: v for k, v in headers.items() if k not in ("Host", "Content-Length")}

    def check(status, _headers, answer):
        _ok(status)
        offset = 0
        for name, dims in model.outputs:
            size = 4 * int(np.prod(dims))
            _close(name, np.frombuffer(answer[offset:offset + size], np.float32),
                   model.expected[name])
            offset += size

    return Request(f"/api/infer/{model.name}", body, headers, check)


def v2_json_request(model: Model) -> Request:
    body = json.dumps({"inputs": [
        {"name": n, "shape": [1, *d], "datatype": "FP32",
         "data": model.data[n].reshape(-1).tolist()} for n, d in model.inputs]}).encode()

    def check(status, _headers, answer):
        _ok(status)
        outputs = {o["name"]: o for o in json.loads(answer)["outputs"]}
        for name, _ in model.outputs:
            if name not in outputs:
                raise Unavailable(f"no output {name}")
            _close(name, np.asarray(outputs[name]["data"], np.float32), model.expected[name])

    return Request(f"/v2/models/{model.name}/infer", body,
                   {"Content-Type": "application/json"}, check)


def v2_binary_request(model: Model) -> Request:
    """Triton's binary-tensor extension: a JSON head, then the raw tensors."""
    head = json.dumps({
        "inputs": [{"name": n, "shape": [1, *d], "datatype": "FP32",
                    "parameters": {"binary_data_size": model.data[n].nbytes}}
                   for n, d in model.inputs],
        "outputs": [{"name": n, "parameters": {"binary_data": True}}
                    for n, _ in model.outputs]}).encode()
    body = head + b"".join(model.data[n].tobytes() for n, _ in model.inputs)

    def check(status, headers, answer):
        _ok(status)
        length = int(headers.get("inference-header-content-length", len(answer)))
        meta = json.loads(answer[:length])
        offset = length
        for out in meta["outputs"]:
            size = out["parameters"]["binary_data_size"]
            _close(out["name"], np.frombuffer(answer[offset:offset + size], np.float32),
                   model.expected[out["name"]])
            offset += size

    return Request(f"/v2/models/{model.name}/infer", body,
                   {"Content-Type": "application/octet-stream",
                    "Inference-Header-Content-Length": str(len(head))}, check)


def torchserve_request(model: Model) -> Request:
    body = json.dumps({n: model.data[n].tolist() for n, _ in model.inputs}).encode()

    def check(status, _headers, answer):
        _ok(status)
        outputs = json.loads(answer)
        for name, _ in model.outputs:
            _close(name, np.asarray(outputs[name], np.float32), model.expected[name])

    return Request(f"/predictions/{model.name}", body, {"Content-Type": "application/json"},
                   check)


def echo_request() -> Request:
    def check(status, _headers, answer):
        _ok(status)
        if answer != ECHO_BODY:
            raise Unavailable("the echo did not echo")

    return Request("/", ECHO_BODY, {"Content-Type": "application/octet-stream"}, check)


def probe(port: int, request: Request) -> None:
    """One request, checked; raises Unavailable."""
    http_request = urllib.request.Request(f"http://{HOST}:{port}{request.path}",
                                          data=request.body, headers=request.headers,
                                          method="POST")
    try:
        with urllib.request.urlopen(http_request, timeout=PROBE_TIMEOUT_S) as response:
            status, headers, answer = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:200].decode(errors="replace")
        raise Unavailable(f"HTTP {exc.code}: {detail}") from None
    except OSError as exc:
        raise Unavailable(f"no answer: {exc}") from None
    request.check(status, {k.lower(): v for k, v in headers.items()}, answer)
