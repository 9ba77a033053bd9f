"""The public in-process Python API: ``pyserver.Server``.

The same server API the HTTP and gRPC front ends speak to, with no
listener at all: models load from a store in this process and requests go
straight to the C++ core. The server runs its event loop (completions and
model control) on one thread of its own, so ``infer`` may be called from
any other thread, and ``infer_async`` from any event loop.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from pyserver.api.request import LATEST, InferenceRequest, InferInput, RequestedOutput
from pyserver.api.response import InferenceResponse
from pyserver.api.status import IndexEntry, ModelMetadata, ModelStatus, VersionStatus
from pyserver.errors import Code, ServerError
from pyserver.protos import model_config_pb2 as mc
from pyserver.server import InferenceServer, ModelControlMode, ServerOptions

__all__ = ["Server"]


class Server:
    """An inference server over ``model_store``, in this process.

    ``model_control_mode`` "none" loads every model of the store at
    ``start``; "explicit" loads only ``load_models`` then, and ``load`` /
    ``unload`` change what is loaded. Use it as a context manager, or call
    ``start`` and ``stop``. Every method but ``infer_async`` blocks its
    caller; none may be called from the server's own thread.
    ``response_cache_byte_size`` > 0 gives the models whose config enables
    ``response_cache`` a response cache of that size (outputs answered from
    it are read-only arrays)."""

    def __init__(self, model_store: str | Path, *, model_control_mode: str = "none",
                 load_models: Sequence[str] = (), strict_readiness: bool = True,
                 exit_timeout_secs: float = 30.0,
                 pinned_memory_pool_byte_size: int = 256 * 1024 * 1024,
                 response_cache_byte_size: int = 0,
                 server_id: str = "inference:0") -> None:
        self.options = ServerOptions(
            model_store=Path(model_store), server_id=server_id,
            strict_readiness=strict_readiness, model_control_mode=ModelControlMode(
                model_control_mode), startup_models=tuple(load_models),
            exit_timeout_secs=exit_timeout_secs,
            pinned_memory_pool_byte_size=pinned_memory_pool_byte_size,
            response_cache_byte_size=response_cache_byte_size)
        self.load_failures: list[str] = []
        self._server: InferenceServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- start and stop -----------------------------------------------------------

    def start(self) -> "Server":
        """Loads the models and starts serving. Blocks while models load. A
        model that fails to load is left out (``load_failures`` says why);
        the others serve. Raises ValueError when the store is not a folder."""
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        if not self.options.model_store.is_dir():
            raise ValueError(f"model store '{self.options.model_store}' is not a folder")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(target=_run_loop, args=(loop, ready), name="pyserver-loop",
                                  daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread
        try:
            server = InferenceServer(self.options)
            self._call(_attach(server, loop))
            self.load_failures = server.load_models()
            server.mark_ready()
        except BaseException:
            self._close_loop()
            raise
        self._server = server
        return self

    def stop(self) -> None:
        """Refuses new requests, waits for those in flight (up to the exit
        timeout), unloads every model and ends the server's thread."""
        server = self._server
        if server is None:
            return
        self._server = None
        try:
            self._call(server.shutdown())
        finally:
            self._close_loop()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- inference ----------------------------------------------------------------------

    def infer(self, request: InferenceRequest | str, inputs: Mapping[str, Any] | None = None,
              outputs: Sequence[RequestedOutput | str] = (), **options: Any
              ) -> InferenceResponse:
        """Runs one request and returns its response; raises ServerError
        when it fails. Either an InferenceRequest, or a model name with
        ``inputs`` (name -> numpy array, batch dimension included when the
        model batches), optional ``outputs`` (names or RequestedOutputs;
        none = all) and InferenceRequest's keyword options (``version``,
        ``id``, ``priority``, ``timeout_us``, ``parameters``, and for
        sequence models ``sequence_id``, ``sequence_start``, ``sequence_end``)."""
        request = _request(request, inputs, outputs, options)
        return self._call(self._running().infer_async(request)).raise_for_error()

    async def infer_async(self, request: InferenceRequest | str,
                          inputs: Mapping[str, Any] | None = None,
                          outputs: Sequence[RequestedOutput | str] = (), **options: Any
                          ) -> InferenceResponse:
        """``infer`` for coroutines, on any event loop."""
        request = _request(request, inputs, outputs, options)
        future = asyncio.run_coroutine_threadsafe(self._running().infer_async(request),
                                                  self._loop)
        response = await asyncio.wrap_future(future)
        return response.raise_for_error()

    # -- health, metadata, status ---------------------------------------------------------

    def live(self) -> bool:
        return self._server is not None and self._server.live

    def ready(self) -> bool:
        return self._server is not None and self._server.ready

    def metadata(self) -> dict:
        """The server's name, version and protocol extensions."""
        server = self._running()
        return {"name": "pyserver", "version": server.version, "id": server.id}

    def model_ready(self, model: str, version: int = LATEST) -> bool:
        return self._running().model_ready(model, version)

    def model_metadata(self, model: str, version: int = LATEST) -> ModelMetadata:
        """Raises ServerError (NOT_FOUND, UNAVAILABLE)."""
        return self._running().model_metadata(model, version)

    def model_config(self, model: str, version: int = LATEST) -> mc.ModelConfig:
        """The normalised config. Raises ServerError (NOT_FOUND, UNAVAILABLE)."""
        return self._running().model_config(model, version)

    def model_status(self, model: str = "") -> list[ModelStatus]:
        return self._running().model_status(model)

    def statistics(self, model: str = "", version: int = 0) -> list[VersionStatus]:
        return self._running().statistics(model, version)

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        return self._running().index(ready_only)

    # -- model control -------------------------------------------------------------------

    def load(self, model: str) -> None:
        """Loads or reloads ``model`` (explicit model control). Blocks.
        Raises ServerError."""
        self._call(self._running().load_model(model))

    def unload(self, model: str) -> None:
        """Unloads ``model`` once its requests finish (explicit model
        control). Blocks. Raises ServerError."""
        self._call(self._running().unload_model(model))

    # -- internals -----------------------------------------------------------------------

    def _running(self) -> InferenceServer:
        if self._server is None:
            raise ServerError(Code.UNAVAILABLE, "the server is not started")
        return self._server

    def _call(self, coroutine) -> Any:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a blocking Server call from the server's own thread")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _close_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


async def _attach(server: InferenceServer, loop: asyncio.AbstractEventLoop) -> None:
    server.attach(loop)


def _request(request: InferenceRequest | str, inputs: Mapping[str, Any] | None,
             outputs: Sequence[RequestedOutput | str], options: dict) -> InferenceRequest:
    if isinstance(request, InferenceRequest):
        if inputs is not None or outputs or options:
            raise TypeError("pass either an InferenceRequest or a model name with inputs")
        return request
    if inputs is None:
        raise TypeError("infer needs inputs: a mapping of input name to array")
    return InferenceRequest(request, {name: value if isinstance(value, InferInput) else
                                      InferInput.from_array(name, value)
                                      for name, value in inputs.items()}, outputs, **options)
