"""pyserver-perf: perf_client-style load and latency measurement for v1
inference servers (HTTP and gRPC), with the server-side breakdown read from
the v1 status statistics."""

__version__ = "0.1.0"
