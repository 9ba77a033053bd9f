"""pyserver beside Triton and the other serving peers, on the same models and
the same load, in one run: one table of throughput and p50/p99 per server,
client and concurrency, with ratios to pyserver.

    python perf/compare.py                              # install peers if needed, 3 rounds
    python perf/compare.py --rounds 3 --seconds 4 -c 1 -c 8 --append-results
    python perf/compare.py --servers pyserver,triton --models add --rounds 1 --seconds 2

Models (the same ONNX files for every server, onnxruntime with one intra-op
thread everywhere): ``add`` (FP32[16] add/sub, one instance) and ``mlp``
(512→1000→1000 FP32, two instances where the server has instances).

Clients: wrk with a fixed request body is the common client of every row
(v1 binary for pyserver, v2 binary or JSON for Triton, v2 JSON for MLServer
and KServe, JSON for TorchServe, a 128-byte POST for the echo ceilings);
beside it, pyserver is measured with pyserver-perf (v1) and Triton with
perf_analyzer (v2, binary tensors), the perf_client family. "× pyserver"
divides by the pyserver row measured by the same client (wrk by pyserver
over wrk; perf_analyzer by pyserver-perf, marked †: same method, not the same
binary). ``grpc_aio`` is the ceiling of grpc.aio itself (perf/peers/grpc_aio_ceiling.py:
ModelInfer answered from cached bytes, in pyserver's venv), measured by perf_analyzer
over v2 gRPC beside pyserver's and Triton's gRPC rows.

Rounds alternate the servers (the order rotates each round) and the table
quotes medians: the machine is shared. Every server binds 127.0.0.1 only;
every process and client run is bounded in time. A peer that cannot be
installed, started or answer correctly stays in the table with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

PERF = pathlib.Path(__file__).resolve().parent
REPO = PERF.parent
sys.path.insert(0, str(PERF))

import install_peers  # noqa: E402
from pyserver_perf import target as perf_target  # noqa: E402

from google.protobuf import text_format  # noqa: E402
from pyserver.examples import onnx_models  # noqa: E402
from pyserver.examples.store import config as v1_config, tensor, write_model  # noqa: E402
from pyserver.protos import model_config_pb2 as mc  # noqa: E402

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0
PROBE_TIMEOUT_S = 20.0
ECHO_BODY = bytes(range(128))
SERVERS = ("pyserver", "triton", "mlserver", "kserve", "torchserve", "nginx", "h11", "grpc_aio")
PEER_OF = {"triton": "triton", "mlserver": "mlserver", "kserve": "kserve",
           "torchserve": "torchserve"}


class Unavailable(Exception):
    """A peer that cannot run here; the message says why."""


# -- the models ----------------------------------------------------------------------------

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


# -- request bodies and answer checks --------------------------------------------------------

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


# -- processes --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = pathlib.Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(fields[1])
        stats[int(entry)] = (ppid, (int(fields[11]) + int(fields[12])) / tick)
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo += children.get(p, [])
    return total


class Process:
    """A server process in its own session (so its whole group stops together)."""

    def __init__(self, name: str, command: list[str], workdir: pathlib.Path,
                 env: dict | None = None) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(command, cwd=workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, url: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"exited with {self.proc.returncode} at start "
                                  f"({self.log_tail()})")
            if _get(url) == 200:
                return
            time.sleep(0.25)
        raise Unavailable(f"not ready after {timeout:.0f} s ({self.log_tail()})")

    def log_tail(self, lines: int = 2) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip()[:200] for line in text[-lines:]) or "no output"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)   # stragglers of the group
        self._log.close()


# -- the servers ------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the table: a server, its API, the client measuring it, a model."""
    server: str
    api: str
    client: str            # "wrk", "pyserver-perf", "perf_analyzer"
    model: str             # model name, or "echo"
    port: int = 0
    request: Request | None = None
    extra: dict = field(default_factory=dict)
    reason: str = ""       # why the row cannot be measured
    results: dict[int, list[dict]] = field(default_factory=dict)   # concurrency -> rounds

    @property
    def label(self) -> str:
        return f"{self.server} {self.api}"


class Server:
    name = ""

    def __init__(self, workdir: pathlib.Path, models: list[Model]) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.models = models
        self.processes: list[Process] = []
        self.port = free_port()

    def start(self) -> None:
        raise NotImplementedError

    def rows(self) -> list[Row]:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        return self.processes[0].pid if self.processes else 0

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def peer_python(self) -> pathlib.Path:
        record = install_peers.install_record(PEER_OF[self.name])
        if not record.get("ok"):
            raise Unavailable(f"not installed: {record.get('reason', '?')}")
        return install_peers.peer_python(PEER_OF[self.name])


class PyServer(Server):
    name = "pyserver"

    def start(self) -> None:
        store = self.workdir / "store"
        for model in self.models:
            write_model(store, model.name, model.v1_config(), {1: model.onnx})
        help_text = subprocess.run([sys.executable, "-m", "pyserver", "--help"],
                                   capture_output=True, text=True, timeout=60).stdout
        command = [sys.executable, "-m", "pyserver", f"--model-store={store}",
                   f"--http-address={HOST}", f"--http-port={self.port}"]
        self.grpc_port = free_port()
        for flag, port in (("--grpc-port", self.grpc_port), ("--metrics-port", free_port())):
            if flag in help_text:
                command.append(f"{flag}={port}")
        for flag in ("--grpc-address", "--metrics-address"):
            if flag in help_text:
                command.append(f"{flag}={HOST}")
        self.processes.append(Process("pyserver", command, self.workdir))
        self.processes[0].wait_ready(f"http://{HOST}:{self.port}/api/health/ready")
        self.grpc = self._serves_grpc()
        self.v2 = _get(f"http://{HOST}:{self.port}/v2/health/ready") == 200

    def _serves_grpc(self) -> bool:
        try:
            client = perf_target.StatusClient(perf_target.Endpoint("grpc", HOST, self.grpc_port))
            client.status(self.models[0].name)
            client.close()
            return True
        except Exception:  # noqa: BLE001 - not served (yet)
            return False

    def rows(self) -> list[Row]:
        rows = []
        for m in self.models:
            rows.append(Row("pyserver", "v1 HTTP binary", "pyserver-perf", m.name, self.port,
                            v1_request(m, self.port)))
            rows.append(Row("pyserver", "v1 HTTP binary", "wrk", m.name, self.port,
                            v1_request(m, self.port)))
            if self.grpc:
                rows.append(Row("pyserver", "v1 gRPC", "pyserver-perf", m.name, self.grpc_port,
                                extra={"protocol": "grpc"}))
            if self.v2:
                rows.append(Row("pyserver", "v2 HTTP binary", "wrk", m.name, self.port,
                                v2_binary_request(m)))
                rows.append(Row("pyserver", "v2 HTTP JSON", "wrk", m.name, self.port,
                                v2_json_request(m)))
                rows.append(Row("pyserver", "v2 HTTP binary", "perf_analyzer", m.name, self.port))
                if self.grpc:
                    rows.append(Row("pyserver", "v2 gRPC", "perf_analyzer", m.name,
                                    self.grpc_port))
        return rows


class Triton(Server):
    name = "triton"

    def start(self) -> None:
        python = self.peer_python()
        self.grpc_port = free_port()
        site = next((python.parent.parent / "lib").glob("python3*/site-packages"))
        server = site / "pytriton" / "tritonserver"
        backends = self.workdir / "backends" / "python"
        backends.mkdir(parents=True, exist_ok=True)
        version = site.parent.name.removeprefix("python")   # the stub must match the venv
        for src in (server / "backends" / "python" / "libtriton_python.so",
                    server / "backends" / "python" / "triton_python_backend_utils.py",
                    server / "python_backend_stubs" / version / "triton_python_backend_stub"):
            if not src.exists():
                raise Unavailable(f"missing {src.name} in nvidia-pytriton")
            shutil.copy2(src, backends / src.name)
        repo = self.workdir / "repo"
        for model in self.models:
            folder = repo / model.name
            (folder / "1").mkdir(parents=True, exist_ok=True)
            (folder / "config.pbtxt").write_text(model.triton_config())
            (folder / "1" / "model.onnx").write_bytes(model.onnx)
            shutil.copy2(PERF / "peers" / "triton_model.py", folder / "1" / "model.py")
        libpython = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True, text=True, timeout=60).stdout.strip()
        libdirs = [str(site / "nvidia_pytriton.libs"), libpython]
        env = dict(os.environ, PATH=f"{python.parent}:{os.environ.get('PATH', '')}",
                   LD_LIBRARY_PATH=":".join(libdirs + [os.environ.get("LD_LIBRARY_PATH", "")]))
        command = [str(server / "bin" / "tritonserver"), f"--model-repository={repo}",
                   f"--backend-directory={self.workdir / 'backends'}",
                   f"--http-address={HOST}", f"--http-port={self.port}",
                   f"--grpc-address={HOST}", f"--grpc-port={self.grpc_port}",
                   f"--metrics-address={HOST}", f"--metrics-port={free_port()}",
                   "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
        self.processes.append(Process("triton", command, self.workdir, env))
        self.processes[0].wait_ready(f"http://{HOST}:{self.port}/v2/health/ready")

    def rows(self) -> list[Row]:
        rows = []
        for m in self.models:
            rows += [Row("triton", "v2 HTTP binary", "perf_analyzer", m.name, self.port),
                     Row("triton", "v2 gRPC", "perf_analyzer", m.name, self.grpc_port),
                     Row("triton", "v2 HTTP binary", "wrk", m.name, self.port,
                         v2_binary_request(m)),
                     Row("triton", "v2 HTTP JSON", "wrk", m.name, self.port, v2_json_request(m))]
        return rows


class MLServer(Server):
    name = "mlserver"

    def start(self) -> None:
        python = self.peer_python()
        root = self.workdir / "models"
        root.mkdir(exist_ok=True)
        shutil.copy2(PERF / "peers" / "mlserver_runtime.py", root / "mlserver_runtime.py")
        for model in self.models:
            (root / model.name).mkdir(exist_ok=True)
            (root / model.name / "model.onnx").write_bytes(model.onnx)
            (root / model.name / "model-settings.json").write_text(json.dumps({
                "name": model.name, "implementation": "mlserver_runtime.OnnxModel",
                "parameters": {"uri": "./model.onnx"}}))
        (root / "settings.json").write_text(json.dumps({
            "host": HOST, "http_port": self.port, "grpc_port": free_port(),
            "metrics_port": free_port(), "parallel_workers": 0, "debug": False}))
        env = dict(os.environ, PATH=f"{python.parent}:{os.environ.get('PATH', '')}")
        self.processes.append(Process("mlserver", [str(python.parent / "mlserver"), "start", "."],
                                      root, env))
        self.processes[0].wait_ready(f"http://{HOST}:{self.port}/v2/health/ready")

    def rows(self) -> list[Row]:
        return [Row("mlserver", "v2 HTTP JSON", "wrk", m.name, self.port, v2_json_request(m))
                for m in self.models]


class KServe(Server):
    name = "kserve"

    def start(self) -> None:
        python = self.peer_python()
        specs = []
        for model in self.models:
            path = self.workdir / f"{model.name}.onnx"
            path.write_bytes(model.onnx)
            specs.append(f"{model.name}={path}")
        self.processes.append(Process(
            "kserve", [str(python), str(PERF / "peers" / "kserve_server.py"),
                       "--http-port", str(self.port), *specs], self.workdir))
        self.processes[0].wait_ready(f"http://{HOST}:{self.port}/v2/health/ready")

    def rows(self) -> list[Row]:
        return [Row("kserve", "v2 HTTP JSON", "wrk", m.name, self.port, v2_json_request(m))
                for m in self.models]


class TorchServe(Server):
    name = "torchserve"

    def start(self) -> None:
        python = self.peer_python()
        if shutil.which("java") is None:
            raise Unavailable("no java on PATH (TorchServe's front end needs Java 17)")
        bin_dir = python.parent
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}")
        store = self.workdir / "store"
        store.mkdir(exist_ok=True)
        for model in self.models:
            build = self.workdir / f"build-{model.name}"
            build.mkdir(exist_ok=True)
            (build / "model.onnx").write_bytes(model.onnx)
            subprocess.run([str(bin_dir / "torch-model-archiver"), "--model-name", model.name,
                            "--version", "1.0", "--handler",
                            str(PERF / "peers" / "torchserve_handler.py"),
                            "--extra-files", str(build / "model.onnx"), "--export-path",
                            str(store), "--archive-format", "no-archive", "-f"],
                           check=True, cwd=build, env=env, timeout=120,
                           capture_output=True)
        self.management = free_port()
        (self.workdir / "config.properties").write_text(
            f"inference_address=http://{HOST}:{self.port}\n"
            f"management_address=http://{HOST}:{self.management}\n"
            f"metrics_address=http://{HOST}:{free_port()}\n"
            "disable_token_authorization=true\ndefault_workers_per_model=1\n")
        command = [str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs",
                   "--model-store", str(store), "--ts-config",
                   str(self.workdir / "config.properties"),
                   "--models", *[f"{m.name}={m.name}" for m in self.models]]
        self.processes.append(Process("torchserve", command, self.workdir, env))
        self.processes[0].wait_ready(f"http://{HOST}:{self.port}/ping")
        for model in self.models:
            self._wait_model(model)

    def _wait_model(self, model: Model) -> None:
        if model.instances > 1:
            request = urllib.request.Request(
                f"http://{HOST}:{self.management}/models/{model.name}?min_worker="
                f"{model.instances}&synchronous=true", method="PUT")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(request, timeout=60).read()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                probe(self.port, torchserve_request(model))
                return
            except Unavailable:
                time.sleep(0.5)
        probe(self.port, torchserve_request(model))

    def rows(self) -> list[Row]:
        return [Row("torchserve", "HTTP JSON", "wrk", m.name, self.port, torchserve_request(m))
                for m in self.models]


class NginxEcho(Server):
    name = "nginx"

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        module = pathlib.Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
        if not pathlib.Path(nginx).exists():
            raise Unavailable("nginx not installed (apt-get install nginx-light)")
        if not module.exists():
            raise Unavailable("nginx echo module missing (Debian's nginx-light ships it)")
        (self.workdir / "logs").mkdir(exist_ok=True)
        conf = self.workdir / "nginx.conf"
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"load_module {module};\n{user}worker_processes auto;\ndaemon off;\n"
            f"pid {self.workdir}/nginx.pid;\nerror_log {self.workdir}/logs/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n  access_log off;\n"
            f"  client_body_temp_path {self.workdir}/body;\n"
            f"  proxy_temp_path {self.workdir}/proxy;\n"
            f"  fastcgi_temp_path {self.workdir}/fastcgi;\n"
            f"  uwsgi_temp_path {self.workdir}/uwsgi;\n"
            f"  scgi_temp_path {self.workdir}/scgi;\n"
            "  keepalive_requests 100000000;\n"
            f"  server {{\n    listen {HOST}:{self.port};\n"
            "    client_body_buffer_size 64k;\n"
            "    location / { echo_read_request_body; echo_request_body; }\n  }\n}\n")
        self.processes.append(Process("nginx", [nginx, "-p", str(self.workdir), "-c", str(conf)],
                                      self.workdir))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                probe(self.port, echo_request())
                return
            except Unavailable:
                if self.processes[0].proc.poll() is not None:
                    raise Unavailable(f"nginx exited ({self.processes[0].log_tail()})")
                time.sleep(0.2)
        probe(self.port, echo_request())

    def rows(self) -> list[Row]:
        return [Row("nginx", "echo 128 B", "wrk", "echo", self.port, echo_request())]


class H11Echo(Server):
    name = "h11"

    def start(self) -> None:
        self.processes.append(Process("h11", [sys.executable, str(PERF / "h11_echo.py"),
                                              f"--port={self.port}"], self.workdir))
        deadline = time.monotonic() + 30
        while True:
            try:
                probe(self.port, echo_request())
                return
            except Unavailable:
                if time.monotonic() > deadline or self.processes[0].proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def rows(self) -> list[Row]:
        return [Row("h11", "echo 128 B", "wrk", "echo", self.port, echo_request())]


class GrpcAioCeiling(Server):
    """perf/peers/grpc_aio_ceiling.py: grpc.aio answering ModelInfer from cached bytes (the
    ceiling of any server on grpc.aio, in pyserver's venv and so its grpcio)."""
    name = "grpc_aio"

    def start(self) -> None:
        self.ports = {}
        for model in self.models:
            port = self.ports[model.name] = free_port()
            command = [sys.executable, str(PERF / "peers" / "grpc_aio_ceiling.py"),
                       f"--address={HOST}", f"--port={port}", f"--model={model.name}",
                       f"--max-batch-size={model.max_batch_size}"]
            command += [f"--input={n}:{','.join(map(str, d))}" for n, d in model.inputs]
            command += [f"--output={n}:{','.join(map(str, d))}" for n, d in model.outputs]
            process = Process(f"grpc_aio_{model.name}", command, self.workdir)
            self.processes.append(process)
            deadline = time.monotonic() + 30
            while "serving" not in process.log_tail():
                if time.monotonic() > deadline or process.proc.poll() is not None:
                    raise Unavailable(f"grpc.aio ceiling did not start ({process.log_tail()})")
                time.sleep(0.1)

    def rows(self) -> list[Row]:
        return [Row("grpc_aio", "v2 gRPC", "perf_analyzer", m.name, self.ports[m.name])
                for m in self.models]


SERVER_CLASSES = {"pyserver": PyServer, "triton": Triton, "mlserver": MLServer,
                  "kserve": KServe, "torchserve": TorchServe, "nginx": NginxEcho,
                  "h11": H11Echo, "grpc_aio": GrpcAioCeiling}


def placeholder_rows(name: str, models: list[Model], reason: str) -> list[Row]:
    """The rows a server would have had, each carrying why it could not run."""
    apis = {"pyserver": [("v1 HTTP binary", "pyserver-perf"), ("v1 HTTP binary", "wrk")],
            "triton": [("v2 HTTP binary", "perf_analyzer"), ("v2 HTTP binary", "wrk"),
                       ("v2 HTTP JSON", "wrk")],
            "mlserver": [("v2 HTTP JSON", "wrk")], "kserve": [("v2 HTTP JSON", "wrk")],
            "torchserve": [("HTTP JSON", "wrk")], "nginx": [("echo 128 B", "wrk")],
            "h11": [("echo 128 B", "wrk")], "grpc_aio": [("v2 gRPC", "perf_analyzer")]}[name]
    names = ["echo"] if name in ("nginx", "h11") else [m.name for m in models]
    return [Row(name, api, client, model, reason=reason) for model in names
            for api, client in apis]


# -- the clients -------------------------------------------------------------------------------

WRK_SCRIPT = """wrk.method = "POST"
wrk.path = [==[{path}]==]
{headers}
local f = assert(io.open([==[{body}]==], "rb"))
wrk.body = f:read("*a")
f:close()
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT %d %d %d %d %d %d\\n", summary.requests,
    summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


class Clients:
    def __init__(self, workdir: pathlib.Path, seconds: float) -> None:
        self.workdir = workdir / "clients"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.seconds = seconds
        self.wrk = shutil.which("wrk")
        self.perf_analyzer, self.pa_env, self.pa_reason = self._perf_analyzer()

    def _perf_analyzer(self) -> tuple[str | None, dict, str]:
        record = install_peers.install_record("perf_analyzer")
        if not record.get("ok"):
            return None, {}, f"perf_analyzer not installed: {record.get('reason')}"
        python = install_peers.peer_python("perf_analyzer")
        binary = python.parent / "perf_analyzer"
        if not binary.exists():
            return None, {}, "no bin/perf_analyzer in the tritonclient wheel"
        site = next((python.parent.parent / "lib").glob("python3*/site-packages"))
        cudart = site / "nvidia" / "cuda_runtime" / "lib"
        env = dict(os.environ, LD_LIBRARY_PATH=f"{cudart}:{os.environ.get('LD_LIBRARY_PATH', '')}")
        return str(binary), env, ""

    def unavailable(self, client: str) -> str:
        if client == "wrk" and not self.wrk:
            return "wrk not installed (apt-get install wrk)"
        if client == "perf_analyzer" and not self.perf_analyzer:
            return self.pa_reason
        return ""

    def _run(self, command: list[str], env: dict | None = None) -> tuple[str, float, float]:
        """(stdout, wall seconds, client CPU seconds, children included)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        timeout = self.seconds * 6 + 60
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env,
                                    timeout=timeout, cwd=self.workdir)
        except subprocess.TimeoutExpired as exc:
            log = self.workdir / f"timeout-{time.strftime('%H%M%S')}.log"
            log.write_text(f"$ {' '.join(command)}\n--- stdout\n{_text(exc.stdout)}\n"
                           f"--- stderr\n{_text(exc.stderr)}\n")
            raise RuntimeError(f"{_client_name(command)} ran past {timeout:.0f} s "
                               f"(output in {log})") from None
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if result.returncode != 0:
            raise RuntimeError(f"{_client_name(command)} exited {result.returncode}: "
                               f"{(result.stderr or result.stdout).strip()[-300:]}")
        return result.stdout, wall, cpu

    def measure(self, row: Row, concurrency: int) -> dict:
        if row.client == "wrk":
            return self._wrk(row, concurrency)
        if row.client == "pyserver-perf":
            return self._pyserver_perf(row, concurrency)
        return self._perf_analyzer_run(row, concurrency)

    def warm_up(self, row: Row, concurrency: int) -> None:
        """A second of the same load, unmeasured (wrk rows; the perf_client
        family discards unstable windows itself)."""
        if row.client == "wrk":
            self._wrk(row, concurrency, warmup=True)

    def _wrk(self, row: Row, concurrency: int, warmup: bool = False) -> dict:
        tag = re.sub(r"\W+", "_", f"{row.server}_{row.api}_{row.model}")
        body = self.workdir / f"{tag}.body"
        script = self.workdir / f"{tag}.lua"
        if not script.exists():
            body.write_bytes(row.request.body)
            headers = "\n".join(f'wrk.headers["{k}"] = [==[{v}]==]'
                                for k, v in row.request.headers.items())
            script.write_text(WRK_SCRIPT.format(path=row.request.path, headers=headers,
                                                body=body))
        threads = str(min(2, concurrency))
        url = f"http://{HOST}:{row.port}"
        if warmup:
            self._run([self.wrk, "-t", threads, "-c", str(concurrency), "-d", "1s", "-s",
                       str(script), url])
            return {}
        out, wall, cpu = self._run([self.wrk, "-t", threads, "-c", str(concurrency), "-d",
                                    f"{self.seconds:g}s", "--timeout", "10s", "-s", str(script),
                                    url])
        match = re.search(r"WRK_RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
        if not match:
            raise RuntimeError(f"no result from wrk: {out[-300:]}")
        requests, duration_us, status_errors, socket_errors, p50, p99 = map(int, match.groups())
        return {"rps": requests / (duration_us / 1e6), "p50": p50, "p99": p99,
                "errors": status_errors + socket_errors, "requests": requests,
                "client_cpu": cpu / wall}

    def _window_ms(self) -> int:
        return max(500, int(self.seconds * 1000 / 2))

    def _pyserver_perf(self, row: Row, concurrency: int) -> dict:
        csv_path = self.workdir / "pyserver_perf.csv"
        csv_path.unlink(missing_ok=True)
        protocol = row.extra.get("protocol", "http")
        env = dict(os.environ, PYTHONPATH=f"{PERF}:{os.environ.get('PYTHONPATH', '')}")
        out, wall, cpu = self._run(
            [sys.executable, "-m", "pyserver_perf", "-m", row.model, "-u",
             f"{HOST}:{row.port}", "-i", protocol, "--concurrency-range", str(concurrency),
             "-p", str(self._window_ms()), "-r", "3", "-s", "1000", "-f", str(csv_path),
             "--no-progress"], env)
        row_csv = _read_csv(csv_path)
        cpu_match = re.search(r"Load generator CPU: (\d+)%", out)
        return {"rps": float(row_csv["Inferences/Second"]), "p50": float(row_csv["p50 latency"]),
                "p99": float(row_csv["p99 latency"]), "errors": 0,
                "queue": float(row_csv["Server Queue"]),
                "compute": float(row_csv["Server Compute"]),
                "client_cpu": int(cpu_match.group(1)) / 100 if cpu_match else cpu / wall}

    def _perf_analyzer_run(self, row: Row, concurrency: int) -> dict:
        csv_path = self.workdir / "perf_analyzer.csv"
        csv_path.unlink(missing_ok=True)
        out, wall, cpu = self._run(
            [self.perf_analyzer, "-m", row.model, "-u", f"{HOST}:{row.port}",
             "-i", "grpc" if "gRPC" in row.api else "http",
             "--concurrency-range", f"{concurrency}:{concurrency}", "-p",
             str(self._window_ms()), "-r", "3", "-s", "1000", "-f", str(csv_path)], self.pa_env)
        row_csv = _read_csv(csv_path)
        return {"rps": float(row_csv["Inferences/Second"]), "p50": float(row_csv["p50 latency"]),
                "p99": float(row_csv["p99 latency"]), "errors": 0, "client_cpu": cpu / wall}


def _client_name(command: list[str]) -> str:
    return "pyserver-perf" if "pyserver_perf" in command else pathlib.Path(command[0]).name


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _read_csv(path: pathlib.Path) -> dict:
    import csv
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise RuntimeError(f"empty CSV {path.name}")
    return rows[-1]


# -- the run ------------------------------------------------------------------------------------

def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def reference_row(rows: list[Row], row: Row) -> Row | None:
    """The pyserver row a row is divided by, same model: the same client and
    API where pyserver has it; else the same client on the nearest API (v2
    JSON for a JSON API, else v1 binary); perf_analyzer against pyserver-perf
    when pyserver has no v2 row for it."""
    def find(client: str, api: str) -> Row | None:
        return next((r for r in rows if r.server == "pyserver" and r.client == client
                     and r.model == row.model and r.api == api and not r.reason), None)
    if row.model == "echo":
        return None
    nearest = "v2 HTTP JSON" if "JSON" in row.api else "v1 HTTP binary"
    return (find(row.client, row.api) or find(row.client, nearest)
            or find(row.client, "v1 HTTP binary")
            or (find("pyserver-perf", "v1 HTTP binary") if row.client == "perf_analyzer"
                else None))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: list[Row], levels: list[int], models: list[str]) -> str:
    lines = ["| model | conc. | server | API | client | infer/s | p50 µs | p99 µs | "
             "server CPU µs/req | client CPU | errors | × pyserver |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in [*models, "echo"]:
        for c in levels:
            for row in (r for r in rows if r.model == model):
                head = f"| {model} | {c} | {row.server} | {row.api} | {row.client} |"
                if row.reason:
                    lines.append(f"{head} – | – | – | – | – | – | not run: {row.reason} |")
                    continue
                rs = row.results.get(c, [])
                good = [r for r in rs if "failed" not in r]
                if not good:
                    why = next((r["failed"] for r in rs), "not measured")
                    lines.append(f"{head} – | – | – | – | – | – | failed: {why} |")
                    continue
                rps = median([r["rps"] for r in good])
                ref = reference_row(rows, row)
                ratio = "–"
                if ref is not None:
                    ref_good = [r for r in ref.results.get(c, []) if "failed" not in r]
                    if ref_good:
                        ratio = f"{rps / median([r['rps'] for r in ref_good]):.2f}"
                        if ref.client != row.client:
                            ratio += " †"
                        elif ref.api != row.api:
                            ratio += " ‡"
                cpu_req = [r["server_cpu_us"] for r in good if r.get("server_cpu_us")]
                failed_runs = len(rs) - len(good)
                errors = sum(r["errors"] for r in good)
                lines.append(
                    f"{head} {rps:.0f} | {median([r['p50'] for r in good]):.0f} | "
                    f"{median([r['p99'] for r in good]):.0f} | "
                    f"{median(cpu_req):.0f} |".replace("nan |", "– |")
                    + f" {median([r['client_cpu'] for r in good]) * 100:.0f}% | "
                    f"{errors}{f' ({failed_runs} runs failed)' if failed_runs else ''} | "
                    f"{ratio} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4.0,
                   help="measured seconds per run (wrk -d; perf clients: 3 windows of half)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians)")
    p.add_argument("-c", "--concurrency", type=int, action="append",
                   help="concurrency levels (default 1 and 8)")
    p.add_argument("--models", default="add,mlp", help="comma-separated: add, mlp")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help=f"comma-separated, from {','.join(SERVERS)}")
    p.add_argument("--no-install", action="store_true",
                   help="do not install missing peers (they are reported as not installed)")
    p.add_argument("--workdir", help="where stores, logs and client files go (default: a temp dir)")
    p.add_argument("--append-results", action="store_true",
                   help="append the section to perf/RESULTS.md")
    p.add_argument("--from-json", metavar="FILE",
                   help="only render the table of an earlier run's results.json")
    args = p.parse_args()
    if args.from_json:
        return render_json(args.from_json)
    levels = args.concurrency or [1, 8]
    model_names = [m for m in args.models.split(",") if m]
    server_names = [s for s in args.servers.split(",") if s]
    for name in server_names:
        if name not in SERVER_CLASSES:
            p.error(f"unknown server {name}")
    for name in model_names:
        if name not in ("add", "mlp"):
            p.error(f"unknown model {name}")
    command = "python perf/compare.py " + " ".join(sys.argv[1:])
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = load_average()

    if not args.no_install:
        wanted = ["system", "perf_analyzer"] + [PEER_OF[s] for s in server_names if s in PEER_OF]
        subprocess.run([sys.executable, str(PERF / "install_peers.py"), *wanted],
                       timeout=3 * 3600)

    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="pyserver-compare-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"# workdir {workdir}", flush=True)
    models = make_models(model_names)
    clients = Clients(workdir, args.seconds)
    servers: list[Server] = []
    rows: list[Row] = []
    status_lines = []
    try:
        for name in server_names:
            server = SERVER_CLASSES[name](workdir, [] if name in ("nginx", "h11") else models)
            t0 = time.monotonic()
            try:
                server.start()
                servers.append(server)
                new_rows = server.rows()
                for row in new_rows:
                    row.reason = clients.unavailable(row.client)
                    if row.request is not None and not row.reason:
                        try:
                            probe(row.port, row.request)
                        except Unavailable as exc:
                            row.reason = f"answer check failed: {exc}"
                rows += new_rows
                status_lines.append(f"- {name}: started in {time.monotonic() - t0:.0f} s")
            except (Unavailable, subprocess.SubprocessError, OSError) as exc:
                server.stop()
                rows += placeholder_rows(name, models, str(exc))
                status_lines.append(f"- {name}: NOT RUN: {exc}")
            print(status_lines[-1], flush=True)

        runnable = [r for r in rows if not r.reason]
        pids = {s.name: s.pid for s in servers}
        for round_index in range(args.rounds):
            for c in levels:
                for model in [*model_names, "echo"]:
                    group = [r for r in runnable if r.model == model]
                    if not group:
                        continue
                    shift = round_index % len(group)
                    for row in group[shift:] + group[:shift]:
                        try:
                            clients.warm_up(row, c)
                            cpu0 = tree_cpu_s(pids[row.server])
                            result = clients.measure(row, c)
                        except (RuntimeError, subprocess.SubprocessError, OSError,
                                KeyError, ValueError) as exc:
                            result = {"failed": str(exc).splitlines()[0][:200]}
                        else:
                            if result.get("requests"):
                                result["server_cpu_us"] = (tree_cpu_s(pids[row.server]) - cpu0) \
                                    / result["requests"] * 1e6
                        row.results.setdefault(c, []).append(result)
                        shown = (f"{result['rps']:.0f}/s p50 {result['p50']:.0f} µs"
                                 if "failed" not in result else f"failed: {result['failed']}")
                        print(f"round {round_index + 1} c={c} {model} {row.label} "
                              f"({row.client}): {shown}", flush=True)
    finally:
        for server in servers:
            server.stop()

    meta = {"started": started, "command": command.strip(), "load_before": load_before,
            "load_after": load_average(), "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "rounds": args.rounds, "seconds": args.seconds, "levels": levels,
            "models": model_names, "status_lines": status_lines}
    raw = workdir / "results.json"
    raw.write_text(json.dumps({"meta": meta, "rows": [row_record(r) for r in rows]}, indent=1))
    section = render_section(meta, rows)
    print(f"\n# raw results: {raw} (python perf/compare.py --from-json {raw} renders them)")
    print("\n" + section)
    if args.append_results:
        with open(PERF / "RESULTS.md", "a") as out:
            out.write("\n" + section)
    return 0


def row_record(row: Row) -> dict:
    return {"server": row.server, "api": row.api, "client": row.client, "model": row.model,
            "reason": row.reason, "results": {str(c): rs for c, rs in row.results.items()}}


def render_section(meta: dict, rows: list[Row]) -> str:
    return "\n".join([
        f"## {meta['started']} — perf/compare: pyserver beside Triton and the peers",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"Machine: {meta['cores']} cores (shared), {meta['platform']}, Python {meta['python']}; "
        f"load average (1/5/15 min) {meta['load_before']} at the start, {meta['load_after']} at "
        f"the end. {meta['rounds']} rounds × {meta['seconds']:g} s per run, servers "
        f"alternating; medians.",
        "",
        *meta["status_lines"],
        "",
        table(rows, meta["levels"], meta["models"]),
        "",
        "× pyserver: infer/s ÷ that of the pyserver row with the same client and API; ‡ same "
        "client, nearest pyserver API (v2 JSON for a JSON API, else v1 binary); † against "
        "pyserver measured by pyserver-perf (perf_analyzer and pyserver-perf follow the same "
        "perf_client method but are different programs). Server CPU µs/req: the server's "
        "whole process tree over a wrk run ÷ requests answered. Client CPU: the load "
        "generator's CPU time ÷ wall time (100% = one core).",
        ""])


def render_json(path: str) -> int:
    data = json.loads(pathlib.Path(path).read_text())
    rows = [Row(r["server"], r["api"], r["client"], r["model"], reason=r["reason"],
                results={int(c): rs for c, rs in r["results"].items()}) for r in data["rows"]]
    print(render_section(data["meta"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
