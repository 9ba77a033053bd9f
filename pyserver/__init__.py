"""pyserver: an inference server with a C++ core and v1 HTTP/gRPC APIs."""

__version__ = "0.1.0"
