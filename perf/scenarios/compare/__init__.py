"""pyserver beside Triton and the other serving peers, on the same models and load, in one run.

One table of throughput and p50/p99 per server, client and concurrency, with ratios to
pyserver. Models (the same ONNX files for every server, onnxruntime with one intra-op
thread everywhere): ``add`` (FP32[16] add/sub, one instance) and ``mlp`` (512→1000→1000
FP32, two instances where the server has instances).

Clients: wrk with a fixed request body is the common client of every row (v1 binary for
pyserver, v2 binary or JSON for Triton, v2 JSON for MLServer and KServe, JSON for
TorchServe, a 128-byte POST for the echo ceilings); beside it, pyserver is measured with
pyserver-perf (v1) and Triton with perf_analyzer (v2, binary tensors), the perf_client
family. "× pyserver" divides by the pyserver row measured by the same client (wrk by
pyserver over wrk; perf_analyzer by pyserver-perf, marked †: same method, not the same
binary). ``grpc_aio`` is the ceiling of grpc.aio itself (perf/peers/grpc_aio_ceiling.py:
ModelInfer answered from cached bytes, in pyserver's venv), measured by perf_analyzer over
v2 gRPC, unary and streaming (``--streaming``: ModelStreamInfer), beside pyserver's and
Triton's gRPC rows. ``pyserver_w2`` is pyserver with two
front-end worker processes (``--frontend-workers=2``), measured by perf_analyzer and wrk on
the v2 API beside the one-process rows.

Rounds alternate the servers (the order rotates each round) and the table quotes medians:
the machine is shared. Every server binds 127.0.0.1 only; every process and client run is
bounded in time. A peer that cannot be installed, started or answer correctly stays in the
table with the reason. Peers install with ``python -m perf install-peers`` (run first
unless ``--no-install``).

    python -m perf compare                              # install peers if needed, 3 rounds
    python -m perf compare --rounds 3 --seconds 4 -c 1 -c 8 --append-results
    python -m perf compare --servers pyserver,triton --models add --rounds 1 --seconds 2
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

from ...harness.cpu import cpu_seconds
from ...harness.options import add_levels
from ...harness.paths import PERF
from ...harness.processes import Build, Unavailable
from ...harness.report import load_average
from .. import install_peers
from .clients import Clients
from .models import Model, make_models, probe
from .peer_servers import KServe, MLServer, TorchServe, Triton
from .servers import (PEER_OF, GrpcAioCeiling, H11Echo, NginxEcho, PyServer, PyServerBaseline,
                      PyServerWorkers, Row, Server)
from .tables import render_json, render_section, row_record

SERVER_CLASSES: dict[str, type[Server]] = {
    "pyserver": PyServer, "pyserver_w2": PyServerWorkers, "baseline": PyServerBaseline,
    "triton": Triton, "mlserver": MLServer,
    "kserve": KServe, "torchserve": TorchServe, "nginx": NginxEcho, "h11": H11Echo, "grpc_aio": GrpcAioCeiling}
MODEL_NAMES = ("add", "mlp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="measured seconds per run (wrk -d; perf clients: 3 windows of half)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians)")
    add_levels(parser, [1, 8])
    parser.add_argument("--models", default="add,mlp", help="comma-separated: add, mlp")
    parser.add_argument("--servers", default=",".join(n for n in SERVER_CLASSES if n != "baseline"),
                        help=f"comma-separated, from {','.join(SERVER_CLASSES)}")
    parser.add_argument("--baseline-pythonpath", metavar="DIR",
                        help="another pyserver install (pip install --target DIR), served as "
                             "'baseline' with pyserver's rows (add baseline to --servers)")
    parser.add_argument("--apis", default="",
                        help="comma-separated row APIs to keep, e.g. 'v2 gRPC stream' "
                             "(default: every row)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not install missing peers (they are reported as not installed)")
    parser.add_argument("--workdir",
                        help="where stores, logs and client files go (default: a temp dir)")
    parser.add_argument("--append-results", action="store_true",
                        help="append the section to perf/RESULTS.md")
    parser.add_argument("--from-json", metavar="FILE",
                        help="only render the table of an earlier run's results.json")


def placeholder_rows(name: str, models: list[Model], reason: str) -> list[Row]:
    """The rows a server would have had, each carrying why it could not run."""
    apis = {"pyserver": [("v1 HTTP binary", "pyserver-perf"), ("v1 HTTP binary", "wrk")],
            "pyserver_w2": [("v2 HTTP binary", "perf_analyzer"), ("v2 gRPC", "perf_analyzer")],
            "baseline": [("v1 HTTP binary", "pyserver-perf"), ("v1 HTTP binary", "wrk")],
            "triton": [("v2 HTTP binary", "perf_analyzer"), ("v2 HTTP binary", "wrk"),
                       ("v2 HTTP JSON", "wrk")],
            "mlserver": [("v2 HTTP JSON", "wrk")], "kserve": [("v2 HTTP JSON", "wrk")],
            "torchserve": [("HTTP JSON", "wrk")], "nginx": [("echo 128 B", "wrk")],
            "h11": [("echo 128 B", "wrk")],
            "grpc_aio": [("v2 gRPC", "perf_analyzer"), ("v2 gRPC stream", "perf_analyzer")]}[name]
    names = ["echo"] if name in ("nginx", "h11") else [m.name for m in models]
    return [Row(name, api, client, model, reason=reason) for model in names
            for api, client in apis]


def start_servers(names: list[str], workdir: pathlib.Path, models: list[Model],
                  clients: Clients) -> tuple[list[Server], list[Row], list[str]]:
    """(the servers started, every row, a status line per server)."""
    servers: list[Server] = []
    rows: list[Row] = []
    status_lines = []
    for name in names:
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
    return servers, rows, status_lines


def measure_rounds(rows: list[Row], servers: list[Server], clients: Clients, rounds: int,
                   levels: list[int], model_names: list[str]) -> None:
    runnable = [r for r in rows if not r.reason]
    pids = {s.name: s.pid for s in servers}
    for round_index in range(rounds):
        for c in levels:
            for model in [*model_names, "echo"]:
                group = [r for r in runnable if r.model == model]
                if not group:
                    continue
                shift = round_index % len(group)
                for row in group[shift:] + group[:shift]:
                    try:
                        clients.warm_up(row, c)
                        cpu0 = cpu_seconds(pids[row.server], tree=True)
                        result = clients.measure(row, c)
                    except (RuntimeError, subprocess.SubprocessError, OSError,
                            KeyError, ValueError) as exc:
                        result = {"failed": str(exc).splitlines()[0][:200]}
                    else:
                        if result.get("requests"):
                            result["server_cpu_us"] = (cpu_seconds(pids[row.server], tree=True)
                                                       - cpu0) / result["requests"] * 1e6
                    row.results.setdefault(c, []).append(result)
                    shown = (f"{result['rps']:.0f}/s p50 {result['p50']:.0f} µs"
                             if "failed" not in result else f"failed: {result['failed']}")
                    print(f"round {round_index + 1} c={c} {model} {row.label} "
                          f"({row.client}): {shown}", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.from_json:
        return render_json(args.from_json)
    model_names = [m for m in args.models.split(",") if m]
    server_names = [s for s in args.servers.split(",") if s]
    unknown = ([s for s in server_names if s not in SERVER_CLASSES]
               + [m for m in model_names if m not in MODEL_NAMES])
    if unknown:
        raise SystemExit(f"error: unknown server(s) or model(s): {', '.join(unknown)}")
    command = "python -m perf " + " ".join(sys.argv[1:])
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = load_average()
    if not args.no_install:
        wanted = ["system", "perf_analyzer"] + [PEER_OF[s] for s in server_names if s in PEER_OF]
        install_peers.run(argparse.Namespace(peers=wanted, force=False))

    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="pyserver-compare-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"# workdir {workdir}", flush=True)
    models = make_models(model_names)
    clients = Clients(workdir, args.seconds)
    servers: list[Server] = []
    try:
        if args.baseline_pythonpath:
            PyServerBaseline.build = Build(pythonpath=args.baseline_pythonpath)
        elif "baseline" in server_names:
            raise SystemExit("error: the baseline server needs --baseline-pythonpath")
        servers, rows, status_lines = start_servers(server_names, workdir, models, clients)
        if args.apis:
            kept = {api.strip() for api in args.apis.split(",")}
            rows = [row for row in rows if row.api in kept]
        measure_rounds(rows, servers, clients, args.rounds, args.concurrency, model_names)
    finally:
        for server in servers:
            server.stop()

    meta = {"started": started, "command": command.strip(), "load_before": load_before,
            "load_after": load_average(), "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "rounds": args.rounds, "seconds": args.seconds, "levels": args.concurrency,
            "models": model_names, "status_lines": status_lines}
    raw = workdir / "results.json"
    raw.write_text(json.dumps({"meta": meta, "rows": [row_record(r) for r in rows]}, indent=1))
    section = render_section(meta, rows)
    print(f"\n# raw results: {raw} (python -m perf compare --from-json {raw} renders them)")
    print("\n" + section)
    if args.append_results:
        with open(PERF / "RESULTS.md", "a") as out:
            out.write("\n" + section)
    return 0
