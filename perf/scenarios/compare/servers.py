"""The servers ``compare`` starts that are not peers to install: pyserver itself, and the
ceilings (nginx's and h11's echo, a bare grpc.aio server); the rows each one is measured by."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import time
from dataclasses import dataclass, field

from pyserver.examples.store import write_model

from ...harness.paths import PEER_FILES, SCENARIOS
from ...harness.processes import (HOST, THIS_BUILD, Build, ServerProcess, Unavailable,
                                  free_port, http_status, start_pyserver)
from ...pyserver_perf import target as perf_target
from .. import install_peers
from .models import Model, Request, echo_request, probe, v1_request, v2_binary_request, \
    v2_json_request

PEER_OF = {"triton": "triton", "mlserver": "mlserver", "kserve": "kserve",
           "torchserve": "torchserve"}


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
        self.processes: list[ServerProcess] = []
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
    flags: tuple[str, ...] = ()
    build: Build = THIS_BUILD

    def start(self) -> None:
        store = self.workdir / "store"
        for model in self.models:
            write_model(store, model.name, model.v1_config(), {1: model.onnx})
        server = start_pyserver(store, self.workdir, self.name, self.build, self.flags)
        self.processes.append(server.process)
        self.port, self.grpc_port = server.http_port, server.grpc_port
        self.grpc = self._serves_grpc()
        self.v2 = http_status(f"http://{HOST}:{self.port}/v2/health/ready") == 200

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
            rows.append(Row(self.name, "v1 HTTP binary", "pyserver-perf", m.name, self.port,
                            v1_request(m, self.port)))
            rows.append(Row(self.name, "v1 HTTP binary", "wrk", m.name, self.port,
                            v1_request(m, self.port)))
            if self.grpc:
                rows.append(Row(self.name, "v1 gRPC", "pyserver-perf", m.name, self.grpc_port,
                                extra={"protocol": "grpc"}))
            if self.v2:
                rows.append(Row(self.name, "v2 HTTP binary", "wrk", m.name, self.port,
                                v2_binary_request(m)))
                rows.append(Row(self.name, "v2 HTTP JSON", "wrk", m.name, self.port,
                                v2_json_request(m)))
                rows.append(Row(self.name, "v2 HTTP binary", "perf_analyzer", m.name, self.port))
                if self.grpc:
                    rows.append(Row(self.name, "v2 gRPC", "perf_analyzer", m.name,
                                    self.grpc_port))
                    rows.append(Row(self.name, "v2 gRPC stream", "perf_analyzer", m.name,
                                    self.grpc_port))
        return rows


class PyServerWorkers(PyServer):
    """pyserver with two front-end worker processes (--frontend-workers=2): the v2 rows
    perf_analyzer and wrk measure, beside the one-process pyserver's."""
    name = "pyserver_w2"
    flags = ("--frontend-workers=2",)

    def rows(self) -> list[Row]:
        wanted = {("v2 HTTP binary", "perf_analyzer"), ("v2 gRPC", "perf_analyzer"),
                  ("v2 HTTP binary", "wrk")}
        return [row for row in super().rows() if (row.api, row.client) in wanted]


class PyServerBaseline(PyServer):
    """Another pyserver install (``--baseline-pythonpath``: e.g. the previous commit's, made
    with ``pip install --target``), with every row pyserver has: a change against what it
    replaces, beside the peers."""
    name = "baseline"


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
        self.processes.append(ServerProcess("nginx", [nginx, "-p", str(self.workdir), "-c", str(conf)],
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
        self.processes.append(ServerProcess("h11", [sys.executable, str(SCENARIOS / "h11_echo.py"),
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
            command = [sys.executable, str(PEER_FILES / "grpc_aio_ceiling.py"),
                       f"--address={HOST}", f"--port={port}", f"--model={model.name}",
                       f"--max-batch-size={model.max_batch_size}"]
            command += [f"--input={n}:{','.join(map(str, d))}" for n, d in model.inputs]
            command += [f"--output={n}:{','.join(map(str, d))}" for n, d in model.outputs]
            process = ServerProcess(f"grpc_aio_{model.name}", command, self.workdir)
            self.processes.append(process)
            deadline = time.monotonic() + 30
            while "serving" not in process.log_tail():
                if time.monotonic() > deadline or process.proc.poll() is not None:
                    raise Unavailable(f"grpc.aio ceiling did not start ({process.log_tail()})")
                time.sleep(0.1)

    def rows(self) -> list[Row]:
        return [Row("grpc_aio", api, "perf_analyzer", m.name, self.ports[m.name])
                for m in self.models for api in ("v2 gRPC", "v2 gRPC stream")]
