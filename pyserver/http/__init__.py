"""HTTP transport: the connection base, two parsers behind it (httptools, the default,
and h11, the reference), the listener, and the v1 HTTP API."""
