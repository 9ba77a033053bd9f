"""The gRPC listener: a grpc.aio server on the running event loop, plain or
TLS (grpc's own TLS: ``grpc.ssl_server_credentials``)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from pyserver.tls import TlsMaterial

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass
class GrpcLimits:
    """Bounds of the gRPC listener. 0 disables a bound (``max_connections``,
    ``max_connection_idle_secs``).

    Memory held by requests is bounded by ``max_concurrent_rpcs`` ×
    ``max_message_bytes`` for unary calls (grpc reads a whole message before
    the handler sees it; calls beyond the limit are refused with
    RESOURCE_EXHAUSTED, as are messages over the size), and per connection
    by HTTP/2 flow control for messages still arriving."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_rpcs: int = 1024
    max_concurrent_streams: int = 256      # per connection (HTTP/2 SETTINGS)
    max_connections: int = 0
    keepalive_time_secs: float = 60.0      # the server pings an idle connection this often
    keepalive_timeout_secs: float = 20.0   # and closes it when the ping is not answered in time
    min_client_ping_interval_secs: float = 10.0  # client pings more often are strikes
    max_ping_strikes: int = 2              # then the connection goes (GOAWAY)
    max_connection_idle_secs: float = 0.0
    max_connection_age_secs: float = 0.0   # GOAWAY after this; open calls get the grace
    max_connection_age_grace_secs: float = 0.0  # 0: open calls may take as long as they need
    handshake_timeout_secs: float = 30.0   # TCP accepted to HTTP/2 SETTINGS (TLS included)


def grpc_options(limits: GrpcLimits, reuse_port: bool = False) -> list[tuple[str, int]]:
    """The grpc core channel arguments that enforce ``limits``."""
    options = [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
        ("grpc.keepalive_time_ms", int(limits.keepalive_time_secs * 1000)),
        ("grpc.keepalive_timeout_ms", int(limits.keepalive_timeout_secs * 1000)),
        # grpc (1.85, measured) ends a connection whose keep-alive ping goes
        # unanswered only after ping_timeout_ms (default 1 min), whatever
        # keepalive_timeout_ms says.
        ("grpc.http2.ping_timeout_ms", int(limits.keepalive_timeout_secs * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms",
         int(limits.min_client_ping_interval_secs * 1000)),
        ("grpc.http2.max_ping_strikes", limits.max_ping_strikes),
    ]
    if limits.max_connections:
        options.append(("grpc.max_allowed_incoming_connections", limits.max_connections))
    if limits.max_connection_idle_secs:
        options.append(("grpc.max_connection_idle_ms",
                        int(limits.max_connection_idle_secs * 1000)))
    if limits.max_connection_age_secs:
        options.append(("grpc.max_connection_age_ms", int(limits.max_connection_age_secs * 1000)))
        if limits.max_connection_age_grace_secs:  # else calls open at the GOAWAY may finish
            options.append(("grpc.max_connection_age_grace_ms",
                            int(limits.max_connection_age_grace_secs * 1000)))
    if limits.handshake_timeout_secs:
        options.append(("grpc.server_handshake_timeout_ms",
                        int(limits.handshake_timeout_secs * 1000)))
    return options


def server_credentials(tls: TlsMaterial) -> grpc.ServerCredentials:
    """grpc's TLS credentials for ``tls``: a client certificate signed by
    its client CA is required when it has one."""
    return grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)],
                                       root_certificates=tls.client_ca_pem,
                                       require_client_auth=tls.mutual)


class GrpcBindError(OSError):
    """The gRPC port could not be bound."""


async def serve_grpc(handler: grpc.GenericRpcHandler | tuple, address: str, port: int,
                     max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                     limits: GrpcLimits | None = None,
                     tls: TlsMaterial | None = None,
                     reuse_port: bool = False) -> grpc.aio.Server:
    """Starts serving ``handler`` (one, or a tuple of them) on ``address:port``; returns the started
    server. ``limits`` (default: GrpcLimits with ``max_message_bytes``)
    bound messages, calls, streams and connections; with ``tls`` the port
    speaks TLS only (checked material: see pyserver.tls). Raises GrpcBindError when
    the port is taken: SO_REUSEPORT is off unless ``reuse_port`` (the
    front-end workers of one server share the port on purpose), so two
    servers never share one port silently."""
    if limits is None:
        limits = GrpcLimits(max_message_bytes=max_message_bytes)
    server = grpc.aio.server(options=grpc_options(limits, reuse_port),
                             maximum_concurrent_rpcs=limits.max_concurrent_rpcs or None)
    server.add_generic_rpc_handlers(handler if isinstance(handler, tuple) else (handler,))
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(target)
        else:
            bound = server.add_secure_port(target, server_credentials(tls))
    except RuntimeError as exc:
        raise GrpcBindError(f"cannot listen on {target}: {exc}") from None
    if bound == 0:
        raise GrpcBindError(f"cannot listen on {target}")
    await server.start()
    return server
