"""The load generators ``compare`` measures every server with: wrk with a fixed body (the
common client), pyserver-perf (pyserver's v1) and perf_analyzer (v2), each run bounded in time."""

from __future__ import annotations

import os
import pathlib
import re
import resource
import shutil
import subprocess
import sys
import time

from ...harness.paths import PERF
from ...harness.processes import HOST
from .. import install_peers
from .servers import Row

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
        self.perf_analyzer, self.pa_env, self.pa_reason = install_peers.perf_analyzer()

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
             *(["--streaming"] if "stream" in row.api else []),
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
