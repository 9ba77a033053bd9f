"""Starts an HTTP listener with the chosen parser."""

from __future__ import annotations

import asyncio
import ssl

from pyserver.http.connection import HttpApp, HttpConnection, HttpLimits, TimeoutSweep

PARSERS = ("h11", "httptools")


def connection_class(parser: str) -> type[HttpConnection]:
    """The connection class of ``parser`` ('h11', the reference, or
    'httptools'). Raises ValueError for an unknown or unavailable parser."""
    if parser == "h11":
        from pyserver.http.h11_protocol import H11Connection
        return H11Connection
    if parser == "httptools":
        try:
            from pyserver.http.httptools_protocol import HttptoolsConnection
        except ImportError as exc:
            raise ValueError(f"the httptools parser is not installed ({exc})") from None
        return HttptoolsConnection
    raise ValueError(f"unknown HTTP parser '{parser}'; use one of {', '.join(PARSERS)}")


async def serve_http(app: HttpApp, host: str, port: int, limits: HttpLimits, connections: set,
                     parser: str = "httptools",
                     tls: ssl.SSLContext | None = None,
                     reuse_port: bool = False) -> asyncio.AbstractServer:
    """Starts listening; returns the asyncio server. ``connections`` collects
    the open connections (for a graceful shutdown); their timeouts are
    checked by a sweep that runs for as long as the event loop does.
    Connections beyond ``limits.max_connections`` are answered 503 and
    closed as soon as they are accepted. With ``tls``, each connection is
    upgraded to TLS after it is accepted and counted (HttpConnection), so
    handshakes count against the limit and the header timeout; over the
    limit a TLS connection is closed without an answer. ``reuse_port``
    sets SO_REUSEPORT: the front-end workers of one server share the port
    (the kernel spreads connections over them)."""
    cls = connection_class(parser)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: cls(app, limits, connections, tls), host, port,
                                      reuse_address=True, reuse_port=reuse_port or None,
                                      backlog=1024)
    TimeoutSweep(connections, limits).start()
    return server
