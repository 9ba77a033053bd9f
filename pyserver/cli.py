"""``pyserver``: flags, start-up, signals and shutdown."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pyserver import metrics
from pyserver.grpc.aio_server import DEFAULT_MAX_MESSAGE_BYTES, serve_grpc
from pyserver.grpc.v1_service import V1GrpcService
from pyserver.grpc.v2_service import V2GrpcService
from pyserver.http.connection import HttpLimits
from pyserver.http.listener import PARSERS, serve_http
from pyserver.http.v1_api import V1HttpApi
from pyserver.http.v2_api import HttpRouter, V2HttpApi
from pyserver.server import InferenceServer, ModelControlMode, ServerOptions

log = logging.getLogger("pyserver")

# After the drain, how long gRPC calls still open get to send their last
# answers before they are cancelled.
GRPC_FLUSH_SECS = 1.0


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyserver",
                                description="Inference server (v1 HTTP and gRPC APIs).")
    p.add_argument("--model-store", "--model-repository", dest="model_store", required=True,
                   help="model store folder: <store>/<model>/config.pbtxt and version folders")
    p.add_argument("--id", default="inference:0", help="server id reported in status")
    p.add_argument("--http-address", default="0.0.0.0")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--http-parser", choices=PARSERS, default="httptools",
                   help="HTTP/1.1 parser: httptools (llhttp, in C; the default) or h11 (pure "
                        "Python, the reference); both pass the same protocol tests")
    p.add_argument("--allow-grpc", type=_bool, nargs="?", const=True, default=True,
                   help="serve the v1 gRPC API (default true)")
    p.add_argument("--grpc-address", default="0.0.0.0")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--grpc-max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                   help="largest gRPC message accepted or sent, in bytes")
    p.add_argument("--allow-metrics", type=_bool, nargs="?", const=True, default=True,
                   help="serve Prometheus metrics at /metrics (default true)")
    p.add_argument("--allow-gpu-metrics", type=_bool, nargs="?", const=True, default=True,
                   help="add NVML GPU gauges where a GPU is found (default true)")
    p.add_argument("--metrics-address", default="0.0.0.0")
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--http-max-input-size", type=int, default=64 * 1024 * 1024,
                   help="largest request body accepted, in bytes")
    p.add_argument("--strict-liveness", "--strict-readiness", dest="strict_readiness",
                   type=_bool, nargs="?", const=True, default=True,
                   help="ready only when every model is ready (default true)")
    p.add_argument("--exit-on-error", type=_bool, nargs="?", const=True, default=True,
                   help="exit when a model fails to load at start-up (default true)")
    p.add_argument("--repository-poll-secs", type=float, default=15.0,
                   help="poll mode: rescan the store this often")
    p.add_argument("--model-control-mode", choices=[m.value for m in ModelControlMode],
                   default="poll",
                   help="none: load the store once; poll: also pick up changes; explicit: "
                        "load only --load-model models and load/unload requests")
    p.add_argument("--load-model", action="append", default=[], metavar="NAME",
                   help="explicit mode: a model to load at start-up (repeatable)")
    p.add_argument("--pinned-memory-pool-byte-size", type=int, default=256 * 1024 * 1024,
                   help="bytes of (pinned where CUDA is present) host memory kept for reuse "
                        "by the batcher")
    p.add_argument("--exit-timeout-secs", type=float, default=30.0,
                   help="on shutdown, wait this long for requests in flight")
    p.add_argument("--event-loop", choices=("asyncio", "uvloop", "auto"), default="asyncio",
                   help="event loop: the standard one, uvloop (if installed), or auto "
                        "(uvloop when installed)")
    p.add_argument("--log-verbose", type=int, nargs="?", const=1, default=0)
    return p


async def run(args: argparse.Namespace) -> int:
    options = ServerOptions(model_store=Path(args.model_store), server_id=args.id,
                            strict_readiness=args.strict_readiness,
                            repository_poll_secs=args.repository_poll_secs,
                            model_control_mode=ModelControlMode(args.model_control_mode),
                            startup_models=tuple(args.load_model),
                            exit_timeout_secs=args.exit_timeout_secs,
                            pinned_memory_pool_byte_size=args.pinned_memory_pool_byte_size)
    if not options.model_store.is_dir():
        log.error("model store '%s' is not a folder", options.model_store)
        return 1
    port_error = _port_conflict(args)
    if port_error:
        log.error("%s", port_error)
        return 1
    server = InferenceServer(options)
    loop = asyncio.get_running_loop()
    server.attach(loop)
    failures = await loop.run_in_executor(None, server.load_models)
    if failures and args.exit_on_error:
        for line in failures:
            log.error("failed to load %s", line)
        log.error("exiting: some models failed to load (use --exit-on-error=false to serve the rest)")
        await server.shutdown()
        return 1
    endpoints = Endpoints()
    try:
        await endpoints.start(server, args)
    except OSError as exc:
        log.error("exiting: %s", exc)
        await endpoints.stop(server)
        return 1
    server.mark_ready()

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    poll_secs = (options.repository_poll_secs
                 if options.model_control_mode == ModelControlMode.POLL else 0)
    poller = loop.create_task(_poll(server, poll_secs))
    await stop.wait()

    log.info("shutting down: refusing new requests, draining those in flight")
    poller.cancel()
    await endpoints.stop(server)
    log.info("server stopped")
    return 0


def _port_conflict(args: argparse.Namespace) -> str:
    """Why the ports cannot all be bound (v1's rule: HTTP, gRPC and metrics
    ports differ), or ''."""
    used = [("HTTP", args.http_port)]
    if args.allow_grpc:
        used.append(("gRPC", args.grpc_port))
    if args.allow_metrics:
        used.append(("metrics", args.metrics_port))
    for i, (name, port) in enumerate(used):
        for other, other_port in used[i + 1:]:
            if port == other_port:
                return f"the {name} and {other} ports must differ (both {port})"
    return ""


@dataclass
class Endpoints:
    """The listeners of one server: v1 HTTP, and gRPC and metrics where
    allowed."""

    http_server: asyncio.AbstractServer | None = None
    http_connections: set = field(default_factory=set)
    grpc_server: grpc.aio.Server | None = None
    metrics_server: asyncio.AbstractServer | None = None
    metrics_connections: set = field(default_factory=set)

    async def start(self, server: InferenceServer, args: argparse.Namespace) -> None:
        """Binds every listener. Raises OSError when a port cannot be bound
        (``stop`` closes what was started)."""
        limits = HttpLimits(max_body_bytes=args.http_max_input_size)
        app = HttpRouter(V1HttpApi(server), V2HttpApi(server))
        self.http_server = await serve_http(app, args.http_address, args.http_port,
                                            limits, self.http_connections, args.http_parser)
        log.info("Starting server '%s' (pyserver %s) on model store %s", server.id,
                 server.version, server.options.model_store)
        log.info("Started HTTPService at %s:%d", args.http_address, args.http_port)
        if args.allow_grpc:
            handlers = (V1GrpcService(server).rpc_handler(), V2GrpcService(server).rpc_handler())
            self.grpc_server = await serve_grpc(handlers,
                                                args.grpc_address, args.grpc_port,
                                                args.grpc_max_message_size)
            log.info("Started GRPCService at %s:%d", args.grpc_address, args.grpc_port)
        if args.allow_metrics:
            registry = metrics.build_registry(server, gpu_metrics=args.allow_gpu_metrics)
            self.metrics_server = await serve_http(
                metrics.MetricsApp(registry), args.metrics_address, args.metrics_port,
                HttpLimits(max_body_bytes=65536), self.metrics_connections, parser="h11")
            log.info("Started Metrics Service at %s:%d", args.metrics_address, args.metrics_port)

    async def stop(self, server: InferenceServer) -> None:
        """Graceful: stops accepting, lets the server drain the requests it
        accepted (up to its exit timeout), sends their answers, closes."""
        if self.http_server is not None:
            self.http_server.close()
        stopping = None
        if self.grpc_server is not None:
            # New calls are refused from now on; open ones may still finish.
            stopping = asyncio.ensure_future(
                self.grpc_server.stop(server.options.exit_timeout_secs))
        await server.shutdown()
        for connection in list(self.http_connections):
            connection.shutdown()
        if stopping is not None:
            await self.grpc_server.stop(GRPC_FLUSH_SECS)
            await stopping
        if self.metrics_server is not None:
            self.metrics_server.close()
            for connection in list(self.metrics_connections):
                connection.shutdown()
            await self.metrics_server.wait_closed()
        if self.http_server is not None:
            await self.http_server.wait_closed()


async def _poll(server: InferenceServer, interval: float) -> None:
    if interval <= 0:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        try:
            await loop.run_in_executor(None, server.poll_repository)
        except Exception:
            log.exception("model store scan failed")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.log_verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
                        stream=sys.stderr)
    try:
        return _run_with_loop(run(args), args.event_loop)
    except KeyboardInterrupt:
        return 130


def _run_with_loop(main_coroutine, choice: str) -> int:
    """asyncio.run on uvloop when asked for, or when 'auto' finds it."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("--event-loop=uvloop: uvloop is not installed")
        else:
            return uvloop.run(main_coroutine)
    return asyncio.run(main_coroutine)


if __name__ == "__main__":
    sys.exit(main())
