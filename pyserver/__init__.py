"""pyserver: an inference server with a C++ core, v1 and v2 HTTP/gRPC APIs,
and an in-process Python API (``pyserver.Server``)."""

__version__ = "0.1.0"

_PUBLIC = {
    "Server": "pyserver.inprocess",
    "InferenceRequest": "pyserver.api.request",
    "InferInput": "pyserver.api.request",
    "RequestedOutput": "pyserver.api.request",
    "LATEST": "pyserver.api.request",
    "InferenceResponse": "pyserver.api.response",
    "InferOutput": "pyserver.api.response",
    "Class": "pyserver.api.response",
    "ServerError": "pyserver.errors",
    "Code": "pyserver.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    # Imported on first use: ``python -m pyserver`` and the client library
    # need not load the core to import this package.
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pyserver' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
