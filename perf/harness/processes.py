"""Server processes for the scenarios: free loopback ports, a process in a session of its own
(so its whole group stops together) logging to a file, readiness over HTTP, pyserver from a
given install on free ports, and the bare h11 echo."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .paths import SCENARIOS

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0
NO_REPOSITORY_POLLING = ("--repository-poll-secs=0",)


class Unavailable(Exception):
    """A server or client that cannot run here; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int:
    """The status of a GET of ``url``; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class ServerProcess:
    """A server process in its own session, its output in ``<workdir>/<name>.log``."""

    def __init__(self, name: str, command: Sequence[str], workdir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(list(command), cwd=workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, url: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"{self.name} exited with {self.proc.returncode} at start "
                                  f"({self.log_tail()})")
            if http_status(url) == 200:
                return
            time.sleep(0.1)
        raise Unavailable(f"{self.name} not ready after {timeout:.0f} s ({self.log_tail()})")

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


def start(name: str, command: Sequence[str], workdir: Path, ready_url: str,
          env: dict[str, str] | None = None) -> ServerProcess:
    """A server process, returned once ``ready_url`` answers 200 (stopped if it never does)."""
    process = ServerProcess(name, command, workdir, env)
    try:
        process.wait_ready(ready_url)
    except BaseException:
        process.stop()
        raise
    return process


@contextlib.contextmanager
def serving(name: str, command: Sequence[str], workdir: Path, ready_url: str,
            env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    process = start(name, command, workdir, ready_url, env)
    try:
        yield process
    finally:
        process.stop()


@dataclass(frozen=True)
class Build:
    """A pyserver install to serve from: an interpreter, and optionally a folder put first on
    its PYTHONPATH (an install made with ``pip install --target``)."""
    python: str = sys.executable
    pythonpath: str = ""

    def env(self) -> dict[str, str] | None:
        return dict(os.environ, PYTHONPATH=self.pythonpath) if self.pythonpath else None


THIS_BUILD = Build()


@dataclass
class PyServer:
    process: ServerProcess
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.http_port}{path}"


def start_pyserver(store: Path, workdir: Path, name: str = "pyserver",
                   build: Build = THIS_BUILD,
                   flags: Sequence[str] = NO_REPOSITORY_POLLING) -> PyServer:
    """pyserver over ``store`` on free loopback ports, run from ``workdir`` (so no source
    tree is on its path), returned once ready."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    command = [build.python, "-m", "pyserver", f"--model-store={store}",
               f"--http-address={HOST}", f"--http-port={http}",
               f"--grpc-address={HOST}", f"--grpc-port={grpc}",
               f"--metrics-address={HOST}", f"--metrics-port={metrics}", *flags]
    process = start(name, command, workdir, f"http://{HOST}:{http}/api/health/ready",
                    build.env())
    return PyServer(process, http, grpc, metrics)


@contextlib.contextmanager
def pyserver(store: Path, workdir: Path, name: str = "pyserver", build: Build = THIS_BUILD,
             flags: Sequence[str] = NO_REPOSITORY_POLLING) -> Iterator[PyServer]:
    """``start_pyserver`` until the block ends."""
    server = start_pyserver(store, workdir, name, build, flags)
    try:
        yield server
    finally:
        server.process.stop()


@contextlib.contextmanager
def h11_echo(workdir: Path) -> Iterator[tuple[ServerProcess, int]]:
    """The bare h11 echo (perf/scenarios/h11_echo.py) on a free port: (process, port)."""
    port = free_port()
    with serving("h11_echo", [sys.executable, str(SCENARIOS / "h11_echo.py"), f"--port={port}"],
                 workdir, f"http://{HOST}:{port}/") as process:
        yield process, port
