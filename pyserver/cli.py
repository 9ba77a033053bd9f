"""``pyserver``: flags, start-up, signals and shutdown."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# grpc core logs every failed TLS handshake at INFO, so any plain-text client
# or port scanner would write a line; its level is read when grpc is first
# imported. GRPC_VERBOSITY=INFO in the environment shows them again.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402 - after its log level

from pyserver import __version__, log_settings, metrics, process_limits  # noqa: E402
from pyserver.errors import ServerError  # noqa: E402
from pyserver.tls import TlsConfigError, TlsFiles, TlsMaterial, load_tls
from pyserver.grpc.aio_server import DEFAULT_MAX_MESSAGE_BYTES, GrpcLimits, serve_grpc
from pyserver.grpc.v1_service import V1GrpcService
from pyserver.grpc.v2_service import V2GrpcService
from pyserver.http.connection import HttpLimits
from pyserver.http.listener import PARSERS, serve_http
from pyserver.http.v1_api import V1HttpApi
from pyserver.http.v2_api import HttpRouter, V2HttpApi
from pyserver.server import InferenceServer, ModelControlMode, ServerOptions, ShutdownReport

if TYPE_CHECKING:
    from pyserver.workers.tally import Tally

log = logging.getLogger("pyserver")

# After the drain, how long gRPC calls still open get to send their last
# answers before they are cancelled.
GRPC_FLUSH_SECS = 1.0


# Exit codes beyond 0 (clean) and 1 (could not start).
EXIT_ABANDONED_WORK = 3  # shutdown answered requests UNAVAILABLE or left a model stuck
# After the exit timeout, how long models get to unload before the process
# exits without them (an instance stuck in a model never returns).
UNLOAD_TIMEOUT_SECS = 5.0


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every flag's help ends with its default; description and epilog
    keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is argparse.SUPPRESS or action.nargs == 0 or "%(default)" in text:
            return text
        if action.required:
            return text + " (required)"
        default = action.default
        if isinstance(default, bool):
            shown = "true" if default else "false"
        elif default is None or default == []:
            shown = "none"
        else:
            shown = "%(default)s"
        return f"{text} (default: {shown})"


def _add_bool(p: argparse.ArgumentParser, *names: str, default: bool, help: str,
              dest: str | None = None) -> None:
    """A boolean flag: ``--name`` or ``--name=true`` turns it on,
    ``--name=false`` off."""
    p.add_argument(*names, dest=dest, type=_bool, nargs="?", const=True, default=default,
                   metavar="true|false", help=help)


DESCRIPTION = """\
Inference server for a model store: the v1 API (TensorRT Inference Server:
/api/health, /api/status, /api/infer, gRPC GRPCService) and the v2 API
(KServe / Open Inference Protocol, Triton's extensions: /v2/..., gRPC
inference.GRPCInferenceService) on the same HTTP and gRPC ports, and
Prometheus metrics.
"""

EPILOG = """\
Booleans: --flag or --flag=true turns one on, --flag=false turns it off.

Health: v1 /api/health/ready is 200 once the server has started; v1
/api/health/live is 200 only while every model is loaded (unless
--strict-liveness=false). v2 /v2/health/live is 200 while the process serves;
/v2/health/ready is 200 only while every model is ready (same flag).

Shutdown (SIGTERM or SIGINT): readiness turns false at once on both APIs;
requests are still served for --drain-hold-secs (a second signal cuts the
hold short); then the listeners close and accepted requests get up to
--exit-timeout-secs to finish. Those still queued or running then are
answered UNAVAILABLE. Exit status 0 when everything accepted was answered,
3 when work was abandoned (the log says how much), 1 when start-up failed.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyserver", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"pyserver {__version__}")
    p.add_argument("--model-store", "--model-repository", dest="model_store", required=True,
                   metavar="DIR",
                   help="model store folder: <store>/<model>/config.pbtxt and version folders")
    p.add_argument("--id", default="inference:0", help="server id reported in status")
    p.add_argument("--http-address", default="0.0.0.0",
                   help="address of the HTTP listener (v1 and v2)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (v1 and v2)")
    p.add_argument("--http-parser", choices=PARSERS, default="httptools",
                   help="HTTP/1.1 parser: httptools (llhttp, in C) or h11 (pure Python, the "
                        "reference); both pass the same protocol tests")
    _add_bool(p, "--allow-grpc", default=True, help="serve gRPC (v1 GRPCService and v2 "
                                                     "GRPCInferenceService)")
    p.add_argument("--grpc-address", default="0.0.0.0", help="address of the gRPC listener")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (v1 and v2)")
    p.add_argument("--grpc-max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                   metavar="BYTES", help="largest gRPC message accepted or sent, in bytes")
    _add_bool(p, "--allow-metrics", default=True, help="serve Prometheus metrics at /metrics")
    _add_bool(p, "--allow-gpu-metrics", default=True,
              help="add NVML GPU gauges where a GPU is found")
    p.add_argument("--metrics-address", default="0.0.0.0",
                   help="address of the metrics listener")
    p.add_argument("--metrics-port", type=int, default=8002, help="metrics port")
    p.add_argument("--http-max-input-size", type=int, default=64 * 1024 * 1024, metavar="BYTES",
                   help="largest request body accepted, in bytes")
    _add_bool(p, "--strict-liveness", "--strict-readiness", dest="strict_readiness",
              default=True,
              help="the model check of health: v1 live and v2 ready are true only while every "
                   "model is ready (--strict-readiness is Triton's name for it)")
    _add_bool(p, "--exit-on-error", default=True,
              help="exit when a model fails to load at start-up")
    p.add_argument("--repository-poll-secs", type=float, default=15.0, metavar="SECS",
                   help="poll mode: rescan the store this often")
    p.add_argument("--model-control-mode", choices=[m.value for m in ModelControlMode],
                   default="poll",
                   help="none: load the store once; poll: also pick up changes; explicit: "
                        "load only --load-model models and load/unload requests")
    p.add_argument("--load-model", action="append", default=[], metavar="NAME",
                   help="explicit mode: a model to load at start-up (repeatable)")
    p.add_argument("--pinned-memory-pool-byte-size", type=int, default=256 * 1024 * 1024,
                   metavar="BYTES",
                   help="bytes of (pinned where CUDA is present) host memory kept for reuse "
                        "by the batcher")
    _add_bool(p, "--allow-shared-memory", dest="allow_shared_memory", default=False,
              help="serve the system and CUDA shared-memory APIs (v1 SharedMemoryControl, "
                   "v2 systemsharedmemory / cudasharedmemory) and tensors in registered "
                   "regions; off, they answer HTTP 403 / gRPC UNAVAILABLE. Any client that "
                   "can reach the server may then map POSIX shared-memory objects of this "
                   "server's user: enable only where clients are trusted")
    p.add_argument("--cache-size", "--response-cache-byte-size", dest="cache_size",
                   type=_byte_count, default=0, metavar="BYTES",
                   help="bytes of the response cache, shared by every model whose config has "
                        "response_cache { enable: true }; 0 turns the cache off "
                        "(--response-cache-byte-size is Triton's older name)")
    p.add_argument("--cache-config", dest="cache_size", type=_cache_config, default=0,
                   metavar="local,size=BYTES",
                   help="Triton's form of --cache-size: the 'local' cache and its size; the "
                        "last of these flags given wins")
    p.add_argument("--drain-hold-secs", type=_non_negative, default=0.0, metavar="SECS",
                   help="on SIGTERM, keep serving this long with readiness false (so that a "
                        "load balancer or Kubernetes removes the endpoint) before the "
                        "listeners close")
    p.add_argument("--exit-timeout-secs", type=_non_negative, default=30.0, metavar="SECS",
                   help="once the listeners are closed, wait this long for the requests in "
                        "flight; those left are answered UNAVAILABLE")
    p.add_argument("--frontend-workers", type=_worker_count, default=1, metavar="N|auto",
                   help="HTTP/gRPC front-end processes (auto: one per core this process may "
                        "use); above 1 they share the ports and hand requests to this "
                        "process, which holds the models, through shared memory")
    p.add_argument("--inline-execution-limit-us", type=float, default=50.0, metavar="US",
                   help="run a request on the event loop's thread, not an instance thread, "
                        "when its model's recent executions averaged at most this many µs, "
                        "an instance is idle and nothing waits (direct scheduling, CPU "
                        "ONNX Runtime and TensorFlow instances); 0: never")
    p.add_argument("--event-loop", choices=("asyncio", "uvloop", "auto"), default="auto",
                   help="event loop: the standard one, uvloop, or auto (uvloop when "
                        "installed, as it is with pyserver's dependencies, and HTTPS is "
                        "off; it costs gRPC ~20%% less CPU per call, HTTP ~10%%)")
    p.add_argument("--log-verbose", type=_verbose_level, nargs="?", const=1, default=0,
                   metavar="LEVEL", help="log debug messages when > 0 (--log-verbose alone: 1)")
    _add_bool(p, "--log-info", default=True, help="log INFO messages")
    _add_bool(p, "--log-warning", default=True, help="log WARNING messages")
    _add_bool(p, "--log-error", default=True, help="log ERROR messages")
    p.add_argument("--log-format", choices=log_settings.FORMATS, default="default",
                   help="timestamps local (default) or ISO8601 in UTC")
    p.add_argument("--log-file", default="", metavar="PATH",
                   help="append the log to this file (default: standard error); the log "
                        "settings but this one may be changed at run time (/v2/logging)")
    _add_trace_flags(p)
    _add_tls_flags(p)
    _add_limit_flags(p)
    return p


def _add_trace_flags(p: argparse.ArgumentParser) -> None:
    """The trace extension's global settings at start-up (Triton's older flag names);
    /v2/trace/setting changes them later."""
    p.add_argument("--trace-file", default=None, metavar="PATH",
                   help="where sampled requests' timestamps go")
    p.add_argument("--trace-level", action="append", default=None, metavar="LEVEL",
                   help="OFF (default) or TIMESTAMPS (repeatable, as Triton's)")
    p.add_argument("--trace-rate", default=None, metavar="N",
                   help="trace one request in N (default 1000)")
    p.add_argument("--trace-count", default=None, metavar="N",
                   help="traces to take, -1 (default) for no limit")
    p.add_argument("--trace-log-frequency", default=None, metavar="N",
                   help="write every N traces to <trace-file>.<i>; 0 (default): "
                        "<trace-file> at shutdown")


def trace_settings_of(args: argparse.Namespace) -> dict:
    """The trace settings the --trace-* flags give (those given only)."""
    given = {"trace_file": args.trace_file, "trace_level": args.trace_level,
             "trace_rate": args.trace_rate, "trace_count": args.trace_count,
             "log_frequency": args.trace_log_frequency}
    return {k: v for k, v in given.items() if v is not None}


def _byte_count(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of bytes, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of bytes >= 0, got '{text}'")
    return value


def _cache_config(text: str) -> int:
    """``local,size=N`` (Triton's --cache-config for its local cache) as N."""
    cache, comma, setting = text.partition(",")
    key, equals, value = setting.partition("=")
    if not comma or not equals:
        raise argparse.ArgumentTypeError(f"expected <cache>,<key>=<value> such as "
                                         f"local,size=1048576, got '{text}'")
    if cache != "local":
        raise argparse.ArgumentTypeError(f"unknown cache implementation '{cache}': pyserver "
                                         f"has only 'local'")
    if key != "size":
        raise argparse.ArgumentTypeError(f"the local cache has no setting '{key}': it takes "
                                         f"only size")
    return _byte_count(value)


def _worker_count(text: str) -> int:
    if text == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got '{text}'") from None
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError(f"expected 1 to 256 workers, got {count}")
    return count


def _milliseconds(text: str) -> float:
    """A Triton duration flag (integer milliseconds) as seconds."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected milliseconds >= 0, got '{text}'")
    return value / 1000.0


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got '{text}'")
    return value


# -- TLS --------------------------------------------------------------------------------------

def _add_tls_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "TLS", "HTTPS and gRPC over TLS. --tls-* apply to the HTTP and gRPC ports alike; "
               "Triton's --grpc-* names configure the gRPC port alone (and win there). The "
               "metrics port stays plain HTTP, as Triton's does: bind it with "
               "--metrics-address to a private address")
    g.add_argument("--tls-cert", type=Path, metavar="FILE",
                   help="PEM certificate (chain) of the server: HTTP and gRPC speak TLS only")
    g.add_argument("--tls-key", type=Path, metavar="FILE",
                   help="PEM private key (unencrypted) of --tls-cert")
    g.add_argument("--tls-client-ca", type=Path, metavar="FILE",
                   help="PEM CA certificate(s): clients must present a certificate it signed "
                        "(mutual TLS), on HTTP and gRPC")
    _add_bool(g, "--grpc-use-ssl", default=False,
              help="Triton's name: TLS on the gRPC port, with --grpc-server-cert and "
                   "--grpc-server-key (else --tls-cert and --tls-key)")
    _add_bool(g, "--grpc-use-ssl-mutual", default=False,
              help="Triton's name: as --grpc-use-ssl, and clients must present a certificate "
                   "signed by --grpc-root-cert (else --tls-client-ca)")
    g.add_argument("--grpc-server-cert", type=Path, metavar="FILE",
                   help="Triton's name: PEM certificate of the gRPC port (used with "
                        "--grpc-use-ssl)")
    g.add_argument("--grpc-server-key", type=Path, metavar="FILE",
                   help="Triton's name: PEM private key of --grpc-server-cert")
    g.add_argument("--grpc-root-cert", type=Path, metavar="FILE",
                   help="Triton's name: PEM CA that client certificates on the gRPC port must "
                        "chain to (used with --grpc-use-ssl-mutual)")


def tls_settings(args: argparse.Namespace) -> tuple[TlsMaterial | None, TlsMaterial | None]:
    """The checked TLS material of the HTTP and the gRPC port (None: plain).
    Raises TlsConfigError (one line naming the flag and file) for flags that
    do not fit together or files that cannot be used."""
    http = None
    if args.tls_key is not None and args.tls_cert is None:
        raise TlsConfigError("--tls-key needs --tls-cert")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise TlsConfigError("--tls-client-ca needs --tls-cert (mutual TLS is TLS first)")
    if args.tls_cert is not None:
        if args.tls_key is None:
            raise TlsConfigError("--tls-cert needs --tls-key (the certificate's private key)")
        http = load_tls(TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca))
    triton = args.grpc_use_ssl or args.grpc_use_ssl_mutual
    if not triton:
        for flag in ("grpc_server_cert", "grpc_server_key", "grpc_root_cert"):
            if getattr(args, flag) is not None:
                log.warning("--%s is ignored without --grpc-use-ssl or --grpc-use-ssl-mutual "
                            "(as in Triton)", flag.replace("_", "-"))
        return http, http
    if args.grpc_use_ssl_mutual:
        if args.grpc_root_cert is None and args.tls_client_ca is None:
            raise TlsConfigError("--grpc-use-ssl-mutual needs --grpc-root-cert (the CA that "
                                 "signs client certificates)")
    elif args.grpc_root_cert is not None:
        log.warning("--grpc-root-cert is used only with --grpc-use-ssl-mutual (as in Triton)")
    cert, cert_flag = _either(args.grpc_server_cert, "--grpc-server-cert",
                              args.tls_cert, "--tls-cert")
    key, key_flag = _either(args.grpc_server_key, "--grpc-server-key", args.tls_key, "--tls-key")
    if cert is None or key is None:
        raise TlsConfigError("--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key "
                             "(or --tls-cert and --tls-key)")
    ca, ca_flag = None, "--grpc-root-cert"
    if args.grpc_use_ssl_mutual:
        ca, ca_flag = _either(args.grpc_root_cert, "--grpc-root-cert",
                              args.tls_client_ca, "--tls-client-ca")
    elif args.grpc_server_cert is None:
        ca, ca_flag = args.tls_client_ca, "--tls-client-ca"  # the --tls-* set, as for HTTP
    grpc_tls = load_tls(TlsFiles(cert, key, ca, cert_flag=cert_flag, key_flag=key_flag,
                                 client_ca_flag=ca_flag))
    return http, grpc_tls


def _either(first: Path | None, first_flag: str, second: Path | None,
            second_flag: str) -> tuple[Path | None, str]:
    return (first, first_flag) if first is not None else (second, second_flag)


# -- transport limits (issue 15): one block --------------------------------------------------

def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("limits", "connection, timeout and memory bounds (0 disables one)")
    g.add_argument("--http-header-timeout-secs", type=float, default=30.0,
                   help="a request's line and headers must arrive within this (else 408)")
    g.add_argument("--http-body-timeout-secs", type=float, default=60.0,
                   help="the longest pause while a request body arrives (else 408)")
    g.add_argument("--http-min-body-rate", type=float, default=1024.0, metavar="BYTES_PER_SEC",
                   help="after --http-body-timeout-secs, a body arriving slower than this "
                        "is refused (408)")
    g.add_argument("--http-keepalive-timeout-secs", type=float, default=75.0,
                   help="an idle keep-alive connection is closed after this")
    g.add_argument("--http-write-timeout-secs", type=float, default=60.0,
                   help="a client that reads none of its answer this long is disconnected")
    g.add_argument("--http-max-connections", type=int, default=-1,
                   help="open HTTP connections at most; beyond it new ones get 503 and are "
                        "closed (-1: half the open-file limit left after a reserve of 256)")
    g.add_argument("--http-body-memory-budget", type=int,
                   default=process_limits.DEFAULT_BODY_BUDGET_BYTES, metavar="BYTES",
                   help="request bodies held in memory at once, declared sizes of bodies "
                        "still arriving included; beyond it: 503 with Retry-After")
    g.add_argument("--grpc-max-concurrent-rpcs", type=int, default=1024,
                   help="gRPC calls in progress at most; beyond it: RESOURCE_EXHAUSTED")
    g.add_argument("--grpc-max-concurrent-streams", type=int, default=256,
                   help="gRPC streams per connection at most (HTTP/2 setting)")
    g.add_argument("--grpc-max-connections", type=int, default=-1,
                   help="gRPC connections at most (-1: as for --http-max-connections); "
                   "with front-end workers, in each worker")
    g.add_argument("--grpc-keepalive-time-secs", type=float, default=60.0,
                   help="ping an idle gRPC connection this often; close it when a ping is "
                        "not answered within --grpc-keepalive-timeout-secs")
    g.add_argument("--grpc-keepalive-timeout-secs", type=float, default=20.0,
                   help="how long a keepalive ping may go unanswered")
    g.add_argument("--grpc-min-ping-interval-secs", type=float, default=10.0,
                   help="clients pinging more often than this are disconnected after "
                        "--grpc-max-ping-strikes")
    g.add_argument("--grpc-max-ping-strikes", type=int, default=2,
                   help="pings too early tolerated before the connection goes")
    g.add_argument("--grpc-max-connection-idle-secs", type=float, default=0.0,
                   help="close a gRPC connection with no call for this long")
    g.add_argument("--grpc-max-connection-age-secs", type=float, default=0.0,
                   help="send GOAWAY to a gRPC connection this old (clients reconnect; "
                        "spreads them over replicas)")
    g.add_argument("--grpc-max-connection-age-grace-secs", type=float, default=0.0,
                   help="after that GOAWAY, how long open calls may still run (0: as long as "
                        "they need)")
    g.add_argument("--grpc-handshake-timeout-secs", type=float, default=30.0,
                   help="a gRPC connection must finish its TLS handshake and HTTP/2 set-up "
                        "within this, else it is closed")
    # Triton's names for the same bounds, in milliseconds. The flags above come
    # first, so their defaults are the ones in force; these show theirs in ms.
    for triton, ours, default_secs in (
            ("--grpc-keepalive-time", "--grpc-keepalive-time-secs", 60.0),
            ("--grpc-keepalive-timeout", "--grpc-keepalive-timeout-secs", 20.0),
            ("--grpc-http2-min-recv-ping-interval-without-data",
             "--grpc-min-ping-interval-secs", 10.0),
            ("--grpc-max-connection-age", "--grpc-max-connection-age-secs", 0.0),
            ("--grpc-max-connection-age-grace", "--grpc-max-connection-age-grace-secs", 0.0)):
        g.add_argument(triton, dest=ours[2:].replace("-", "_"), type=_milliseconds,
                       default=int(default_secs * 1000), metavar="MS",
                       help=f"Triton's name for {ours}, in milliseconds")
    g.add_argument("--grpc-http2-max-ping-strikes", dest="grpc_max_ping_strikes", type=int,
                   default=2, help="Triton's name for --grpc-max-ping-strikes")


def _http_limits(args: argparse.Namespace, open_files: int) -> HttpLimits:
    connections = args.http_max_connections
    if connections < 0:
        connections = process_limits.automatic_connection_limit(open_files)
    return HttpLimits(max_body_bytes=args.http_max_input_size,
                      idle_timeout_secs=args.http_keepalive_timeout_secs,
                      header_timeout_secs=args.http_header_timeout_secs,
                      body_timeout_secs=args.http_body_timeout_secs,
                      min_body_bytes_per_sec=args.http_min_body_rate,
                      write_timeout_secs=args.http_write_timeout_secs,
                      max_connections=connections,
                      body_budget=process_limits.BodyBudget(args.http_body_memory_budget)
                      if args.http_body_memory_budget > 0 else None)


def _grpc_limits(args: argparse.Namespace, open_files: int) -> GrpcLimits:
    connections = args.grpc_max_connections
    if connections < 0:
        connections = process_limits.automatic_connection_limit(open_files)
    return GrpcLimits(max_message_bytes=args.grpc_max_message_size,
                      max_concurrent_rpcs=args.grpc_max_concurrent_rpcs,
                      max_concurrent_streams=args.grpc_max_concurrent_streams,
                      max_connections=connections,
                      keepalive_time_secs=args.grpc_keepalive_time_secs,
                      keepalive_timeout_secs=args.grpc_keepalive_timeout_secs,
                      min_client_ping_interval_secs=args.grpc_min_ping_interval_secs,
                      max_ping_strikes=args.grpc_max_ping_strikes,
                      max_connection_idle_secs=args.grpc_max_connection_idle_secs,
                      max_connection_age_secs=args.grpc_max_connection_age_secs,
                      max_connection_age_grace_secs=args.grpc_max_connection_age_grace_secs,
                      handshake_timeout_secs=args.grpc_handshake_timeout_secs)

# -- end of the transport limits block ------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    options = ServerOptions(model_store=Path(args.model_store), server_id=args.id,
                            strict_readiness=args.strict_readiness,
                            repository_poll_secs=args.repository_poll_secs,
                            model_control_mode=ModelControlMode(args.model_control_mode),
                            startup_models=tuple(args.load_model),
                            exit_timeout_secs=args.exit_timeout_secs,
                            unload_timeout_secs=UNLOAD_TIMEOUT_SECS,
                            pinned_memory_pool_byte_size=args.pinned_memory_pool_byte_size,
                            allow_shared_memory=args.allow_shared_memory,
                            response_cache_byte_size=args.cache_size,
                            inline_execution_limit_us=args.inline_execution_limit_us)
    if not options.model_store.is_dir():
        log.error("model store '%s' is not a folder", options.model_store)
        return 1
    port_error = _port_conflict(args)
    if port_error:
        log.error("%s", port_error)
        return 1
    try:
        http_tls, grpc_tls = tls_settings(args)
    except TlsConfigError as exc:
        log.error("exiting: %s", exc)
        return 1
    server = InferenceServer(options)
    try:
        server.update_trace_settings(trace_settings_of(args))
    except ServerError as exc:
        log.error("exiting: --trace-*: %s", exc.message)
        return 1
    loop = asyncio.get_running_loop()
    server.attach(loop)
    failures = await loop.run_in_executor(None, server.load_models)
    if failures and args.exit_on_error:
        for line in failures:
            log.error("failed to load %s", line)
        log.error("exiting: some models failed to load (use --exit-on-error=false to serve the rest)")
        await server.shutdown()
        return 1
    workers = None
    if args.frontend_workers > 1:
        endpoints = Endpoints(announce=False)
        try:
            workers = await _start_workers(server, args, http_tls, grpc_tls)
            await endpoints.start_metrics(server, args)
        except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
            log.error("exiting: %s", exc or "front-end workers did not start in time")
            if workers is not None:
                workers.begin_stop()
                await workers.wait_stopped(5.0)
            await endpoints.stop(server)
            return 1
    else:
        endpoints = Endpoints()
        try:
            await endpoints.start(server, args, http_tls, grpc_tls)
        except OSError as exc:
            log.error("exiting: %s", exc)
            await endpoints.stop(server)
            return 1
    server.mark_ready()

    signals = _ShutdownSignals(server)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signals.received, sig)
    poll_secs = (options.repository_poll_secs
                 if options.model_control_mode == ModelControlMode.POLL else 0)
    poller = loop.create_task(_poll(server, poll_secs))
    await signals.first.wait()
    poller.cancel()
    if args.drain_hold_secs > 0:
        log.info("draining: readiness is false; serving for %.1f s more (--drain-hold-secs)",
                 args.drain_hold_secs)
        try:
            await asyncio.wait_for(signals.second.wait(), args.drain_hold_secs)
            log.info("second signal: ending the drain hold early")
        except asyncio.TimeoutError:
            pass

    log.info("shutting down: refusing new requests, draining those in flight")
    if workers is not None:
        workers.begin_stop()
    report = await endpoints.stop(server)
    if workers is not None:
        await workers.wait_stopped(GRPC_FLUSH_SECS * 2 + 5.0)
    if report.clean:
        log.info("server stopped")
        return 0
    log.error("server stopped abandoning work: %d requests answered UNAVAILABLE at the exit "
              "timeout%s", report.abandoned_requests,
              "; models did not unload (an instance is stuck)" if report.stuck_unload else "")
    if report.stuck_unload:
        # The stuck instance threads would hold up the interpreter's exit.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_ABANDONED_WORK)
    return EXIT_ABANDONED_WORK


class _ShutdownSignals:
    """The first SIGTERM / SIGINT starts the drain (readiness false at
    once); a second one ends the drain hold early."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        self.first = asyncio.Event()
        self.second = asyncio.Event()

    def received(self, signum: int) -> None:
        if self.first.is_set():
            self.second.set()
            return
        self.server.begin_drain()
        log.info("%s received: readiness is false from now on", signal.Signals(signum).name)
        self.first.set()


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

    reuse_port: bool = False  # a front-end worker: the HTTP and gRPC ports are shared
    announce: bool = True  # log what started (a worker leaves that to the engine)
    # A front-end worker's views of the counts all workers share (Tally,
    # pyserver.workers.tally): open HTTP connections, request-body bytes.
    connection_tally: Tally | None = None
    body_tally: Tally | None = None
    http_server: asyncio.AbstractServer | None = None
    http_connections: set = field(default_factory=set)
    grpc_server: grpc.aio.Server | None = None
    metrics_server: asyncio.AbstractServer | None = None
    metrics_connections: set = field(default_factory=set)

    async def start(self, server: InferenceServer, args: argparse.Namespace,
                    http_tls: TlsMaterial | None = None,
                    grpc_tls: TlsMaterial | None = None) -> None:
        """Binds every listener (HTTP and gRPC over TLS where given the
        material). Raises OSError when a port cannot be bound (``stop``
        closes what was started)."""
        open_files = process_limits.raise_open_file_limit()
        limits = _http_limits(args, open_files)
        limits.connection_tally = self.connection_tally
        if limits.body_budget is not None:
            limits.body_budget.tally = self.body_tally
        app = HttpRouter(V1HttpApi(server), V2HttpApi(server))
        self.http_server = await serve_http(
            app, args.http_address, args.http_port, limits, self.http_connections,
            args.http_parser, tls=http_tls.server_context() if http_tls else None,
            reuse_port=self.reuse_port)
        if self.announce:
            log.info("Starting server '%s' (pyserver %s) on model store %s; event loop %s",
                     server.id, server.version, server.options.model_store, _loop_name())
            log.info("Started HTTPService at %s:%d%s", args.http_address, args.http_port,
                     _tls_note(http_tls))
        if args.allow_grpc:
            handlers = (V1GrpcService(server).rpc_handler(), V2GrpcService(server).rpc_handler())
            self.grpc_server = await serve_grpc(handlers,
                                                args.grpc_address, args.grpc_port,
                                                limits=_grpc_limits(args, open_files),
                                                tls=grpc_tls, reuse_port=self.reuse_port)
            if self.announce:
                log.info("Started GRPCService at %s:%d%s", args.grpc_address, args.grpc_port,
                         _tls_note(grpc_tls))
        await self.start_metrics(server, args)

    async def start_metrics(self, server: InferenceServer, args: argparse.Namespace) -> None:
        """Binds the metrics listener, where allowed."""
        if args.allow_metrics:
            registry = metrics.build_registry(server, gpu_metrics=args.allow_gpu_metrics)
            self.metrics_server = await serve_http(
                metrics.MetricsApp(registry), args.metrics_address, args.metrics_port,
                HttpLimits(max_body_bytes=65536, max_connections=64), self.metrics_connections,
                parser="h11")
            log.info("Started Metrics Service at %s:%d", args.metrics_address, args.metrics_port)

    async def stop(self, server: InferenceServer) -> ShutdownReport:
        """Graceful: stops accepting, lets the server drain the requests it
        accepted (up to its exit timeout, then answers the rest
        UNAVAILABLE), sends their answers, closes. Returns the server's
        shutdown report."""
        if self.http_server is not None:
            self.http_server.close()
        stopping = None
        if self.grpc_server is not None:
            # New calls are refused from now on; open ones may still finish.
            stopping = asyncio.ensure_future(self.grpc_server.stop(
                server.options.exit_timeout_secs + server.options.unload_timeout_secs +
                GRPC_FLUSH_SECS))
        report = await server.shutdown()
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
        if not report.clean:
            # Let the transports write the UNAVAILABLE answers before an exit
            # that may not wait for them.
            await asyncio.sleep(GRPC_FLUSH_SECS / 4)
        return report


async def _start_workers(server: InferenceServer, args: argparse.Namespace,
                         http_tls: TlsMaterial | None,
                         grpc_tls: TlsMaterial | None) -> "WorkerPool":
    """Starts ``--frontend-workers`` processes on the HTTP and gRPC ports
    (first checked free: the workers share them with each other only) and
    waits until each listens."""
    from pyserver.workers.pool import WorkerPool
    ports = [(args.http_address, args.http_port)]
    if args.allow_grpc:
        ports.append((args.grpc_address, args.grpc_port))
    for address, port in ports:
        _check_port_free(address, port)
    process_limits.raise_open_file_limit()  # the engine's own: rings, regions, model files
    pool = WorkerPool(server, args.frontend_workers, args.argv)
    await pool.start()
    log.info("Starting server '%s' (pyserver %s) on model store %s; event loop %s", server.id,
             server.version, server.options.model_store, _loop_name())
    log.info("Started HTTPService at %s:%d%s (%d front-end workers)", args.http_address,
             args.http_port, _tls_note(http_tls), args.frontend_workers)
    if args.allow_grpc:
        log.info("Started GRPCService at %s:%d%s (%d front-end workers)", args.grpc_address,
                 args.grpc_port, _tls_note(grpc_tls), args.frontend_workers)
    return pool


def _check_port_free(address: str, port: int) -> None:
    """Raises OSError when another process holds ``address:port``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {address}:{port}: {exc.strerror}") \
                from None


def _tls_note(tls: TlsMaterial | None) -> str:
    if tls is None:
        return ""
    return " (TLS, client certificates required)" if tls.mutual else " (TLS)"


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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        log_settings.configure(log_settings_of(args))
    except OSError as exc:
        parser.error(f"--log-file: cannot open {args.log_file!r}: {exc.strerror}")
    process_limits.rate_limit_repeated_logs()
    try:
        args.argv = list(sys.argv[1:] if argv is None else argv)
        return run_with_loop(run(args), event_loop_for(args))
    except KeyboardInterrupt:
        return 130


def log_settings_of(args: argparse.Namespace) -> log_settings.LogSettings:
    """The log settings the --log-* flags ask for."""
    return log_settings.LogSettings(
        log_file=args.log_file, log_info=args.log_info, log_warning=args.log_warning,
        log_error=args.log_error, log_verbose_level=args.log_verbose,
        log_format=args.log_format)


def _verbose_level(text: str) -> int:
    try:
        level = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if level < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return level


def _loop_name() -> str:
    """'uvloop' or 'asyncio': the loop this coroutine runs on."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") \
        else "asyncio"


def event_loop_for(args: argparse.Namespace) -> str:
    """The loop ``--event-loop`` means for this server: ``auto`` is uvloop unless HTTPS is
    on (an HTTP TLS connection is upgraded with loop.start_tls, which on uvloop 0.21-0.23
    leaves the listener refusing every handshake after one that failed: asyncio's loop
    then)."""
    if args.event_loop == "auto" and getattr(args, "tls_cert", None) is not None:
        return "asyncio"
    return args.event_loop


def run_with_loop(main_coroutine, choice: str) -> int:
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
