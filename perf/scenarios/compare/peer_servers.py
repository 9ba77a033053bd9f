"""The peers ``compare`` measures pyserver against, each started from its venv under
perf/.peers/ (``python -m perf install-peers``): Triton, MLServer, KServe and TorchServe."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import time
import urllib.request

from ...harness.paths import PEER_FILES
from ...harness.processes import HOST, ServerProcess, Unavailable, free_port
from .models import Model, probe, torchserve_request, v2_binary_request, v2_json_request
from .servers import Row, Server


class V2Peer(Server):
    """A peer with the v2 API: started, then ready once /v2/health/ready answers."""

    def serve(self, name: str, command: list[str], workdir: pathlib.Path,
              env: dict[str, str] | None = None) -> None:
        self.processes.append(ServerProcess(name, command, workdir, env))
        self.processes[0].wait_ready(f"http://{HOST}:{self.port}/v2/health/ready")


class JsonV2Peer(V2Peer):
    """A peer measured over v2 HTTP with JSON tensors only."""

    def rows(self) -> list[Row]:
        return [Row(self.name, "v2 HTTP JSON", "wrk", m.name, self.port, v2_json_request(m))
                for m in self.models]


class Triton(V2Peer):
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
            shutil.copy2(PEER_FILES / "triton_model.py", folder / "1" / "model.py")
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
        self.serve("triton", command, self.workdir, env)

    def rows(self) -> list[Row]:
        rows = []
        for m in self.models:
            rows += [Row("triton", "v2 HTTP binary", "perf_analyzer", m.name, self.port),
                     Row("triton", "v2 gRPC", "perf_analyzer", m.name, self.grpc_port),
                     Row("triton", "v2 gRPC stream", "perf_analyzer", m.name, self.grpc_port),
                     Row("triton", "v2 HTTP binary", "wrk", m.name, self.port,
                         v2_binary_request(m)),
                     Row("triton", "v2 HTTP JSON", "wrk", m.name, self.port, v2_json_request(m))]
        return rows


class MLServer(JsonV2Peer):
    name = "mlserver"

    def start(self) -> None:
        python = self.peer_python()
        root = self.workdir / "models"
        root.mkdir(exist_ok=True)
        shutil.copy2(PEER_FILES / "mlserver_runtime.py", root / "mlserver_runtime.py")
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
        self.serve("mlserver", [str(python.parent / "mlserver"), "start", "."], root, env)


class KServe(JsonV2Peer):
    name = "kserve"

    def start(self) -> None:
        python = self.peer_python()
        specs = []
        for model in self.models:
            path = self.workdir / f"{model.name}.onnx"
            path.write_bytes(model.onnx)
            specs.append(f"{model.name}={path}")
        self.serve("kserve", [str(python), str(PEER_FILES / "kserve_server.py"),
                              "--http-port", str(self.port), *specs], self.workdir)


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
                            str(PEER_FILES / "torchserve_handler.py"),
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
        self.processes.append(ServerProcess("torchserve", command, self.workdir, env))
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
