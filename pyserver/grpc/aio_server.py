"""The gRPC listener: a grpc.aio server on the running event loop."""

from __future__ import annotations

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class GrpcBindError(OSError):
    """The gRPC port could not be bound."""


async def serve_grpc(handler: grpc.GenericRpcHandler | tuple, address: str, port: int,
                     max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.aio.Server:
    """Starts serving ``handler`` (one, or a tuple of them) on ``address:port``; returns the started
    server. Messages larger than ``max_message_bytes`` either way are
    refused by grpc itself (RESOURCE_EXHAUSTED). Raises GrpcBindError when
    the port is taken: SO_REUSEPORT is off, so two servers never share one
    port silently."""
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ])
    server.add_generic_rpc_handlers(handler if isinstance(handler, tuple) else (handler,))
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    try:
        bound = server.add_insecure_port(target)
    except RuntimeError as exc:
        raise GrpcBindError(f"cannot listen on {target}: {exc}") from None
    if bound == 0:
        raise GrpcBindError(f"cannot listen on {target}")
    await server.start()
    return server
