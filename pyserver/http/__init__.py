"""HTTP transport (h11) and the v1 HTTP API on top of it."""
