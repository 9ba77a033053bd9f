"""pyserver: an inference server with a C++ core, v1 and v2 HTTP/gRPC APIs,
and an in-process Python API (``pyserver.Server``)."""

__version__ = "0.1.0"


def _prefer_the_installed_copy() -> None:
    """Python started in a source checkout (``python -c``, a REPL, a
    heredoc) finds this folder first, which lacks the compiled core and the
    generated protos; the submodules are then taken from the installed
    copy of the same package, if there is one."""
    import importlib.metadata
    from pathlib import Path

    here = Path(__file__).resolve().parent
    if (here / "protos").is_dir():
        return  # an installed (or built in place) copy
    try:
        installed = Path(importlib.metadata.distribution("pyserver").locate_file("pyserver"))
    except importlib.metadata.PackageNotFoundError:
        return
    if installed.resolve() != here and (installed / "protos").is_dir():
        __path__[:] = [str(installed)]


_prefer_the_installed_copy()
del _prefer_the_installed_copy


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
