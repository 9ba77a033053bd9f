"""The protocol-neutral server API that every front end speaks to.

Front ends resolve a model version, build a payload and ``submit`` it; the
C++ core schedules it onto an instance, and the completion comes back on the
event loop through the completion queue's file descriptor, where the
caller's callback runs.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pyserver import _core, __version__
from pyserver.errors import Code, ServerError, unavailable
from pyserver.repository.manager import LATEST, ModelVersion, RepositoryManager

log = logging.getLogger("pyserver")

# on_done(code, message, result, timings): result is what the runtime
# returned (None on failure); timings are core-clock nanoseconds.
DoneCallback = Callable[[int, str, Any, tuple], None]


class ServerState(enum.IntEnum):
    """Values are the v1 ServerReadyState numbers."""

    INITIALIZING = 1
    READY = 2
    EXITING = 3
    FAILED_TO_INITIALIZE = 10


class ModelControlMode(str, enum.Enum):
    NONE = "none"          # load everything at start-up, never change
    POLL = "poll"          # also rescan the store every repository_poll_secs
    EXPLICIT = "explicit"  # load only what start-up flags and load requests name


@dataclass
class ServerOptions:
    model_store: Path
    server_id: str = "inference:0"
    strict_readiness: bool = True
    repository_poll_secs: float = 0.0
    model_control_mode: ModelControlMode = ModelControlMode.POLL
    startup_models: tuple[str, ...] = ()  # explicit mode: models loaded at start-up
    exit_timeout_secs: float = 30.0
    gpu_count: int = 0
    pinned_memory_pool_byte_size: int = 256 * 1024 * 1024


class InferenceServer:
    """Models, their schedulers and the completion path. Single event loop:
    every method except ``poll_repository`` runs on the loop's thread."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.id = options.server_id
        self.version = __version__
        self.state = ServerState.INITIALIZING
        self.start_ns = time.time_ns()
        self._completions = _core.CompletionQueue()
        self.memory_pool = _core.HostMemoryPool(options.pinned_memory_pool_byte_size)
        self.repository = RepositoryManager(options.model_store, self._completions,
                                            self.memory_pool, options.gpu_count)
        self._tickets = itertools.count(1)
        self._pending: dict[int, DoneCallback] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._request_ids = itertools.count(1)

    # -- start and stop -----------------------------------------------------

    def load_models(self) -> list[str]:
        """Loads the start-up models (all, or in explicit mode those named).
        Blocks. Returns load failures."""
        if self.options.model_control_mode != ModelControlMode.EXPLICIT:
            self.repository.poll()
            return self.repository.failures()
        failures = []
        for name in self.options.startup_models:
            try:
                self.repository.load_model(name)
            except ServerError as exc:
                failures.append(exc.message)
        return failures

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Delivers completions on ``loop`` from now on."""
        self._loop = loop
        loop.add_reader(self._completions.fileno(), self._drain)

    def mark_ready(self) -> None:
        self.state = ServerState.READY

    async def shutdown(self) -> None:
        """Refuses new requests, waits for accepted ones (up to the exit
        timeout), then unloads every model."""
        self.state = ServerState.EXITING
        deadline = time.monotonic() + self.options.exit_timeout_secs
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._pending:
            log.warning("exit timeout: %d requests still in flight", len(self._pending))
        await asyncio.get_running_loop().run_in_executor(None, self.repository.stop)
        self._drain()
        if self._loop is not None:
            self._loop.remove_reader(self._completions.fileno())

    def poll_repository(self) -> None:
        """Rescans the store (worker thread). Blocks while models load."""
        self.repository.poll()

    # -- model control ------------------------------------------------------------

    async def load_model(self, name: str) -> None:
        """Loads or reloads a model (explicit mode only). Raises ServerError."""
        self._check_explicit()
        await asyncio.get_running_loop().run_in_executor(None, self.repository.load_model, name)

    async def unload_model(self, name: str) -> None:
        """Unloads a model (explicit mode only). Raises ServerError."""
        self._check_explicit()
        await asyncio.get_running_loop().run_in_executor(None, self.repository.unload_model, name)

    def _check_explicit(self) -> None:
        if self.options.model_control_mode != ModelControlMode.EXPLICIT:
            raise unavailable("explicit model load / unload is not allowed if polling is "
                              "enabled" if self.options.model_control_mode == ModelControlMode.POLL
                              else "explicit model load / unload needs --model-control-mode=explicit")

    # -- health ---------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.state in (ServerState.READY, ServerState.EXITING)

    @property
    def ready(self) -> bool:
        if self.state != ServerState.READY:
            return False
        return self.repository.all_ready() if self.options.strict_readiness else True

    def next_request_id(self) -> int:
        """Server-side request number reported in v1 RequestStatus."""
        return next(self._request_ids)

    # -- inference --------------------------------------------------------------

    def resolve(self, model: str, version: int = LATEST) -> ModelVersion:
        if self.state != ServerState.READY:
            raise unavailable("server is not ready" if self.state != ServerState.EXITING
                              else "Server exiting")
        return self.repository.resolve(model, version)

    def submit(self, version: ModelVersion, batch_size: int, payload: Any,
               received_ns: int, on_done: DoneCallback) -> None:
        """Queues a request; ``on_done`` runs on the event loop when it
        finishes. Raises ServerError if the scheduler refuses it."""
        ticket = next(self._tickets)
        self._pending[ticket] = on_done
        try:
            version.scheduler.enqueue(ticket, batch_size, received_ns, payload)
        except ServerError:
            del self._pending[ticket]
            raise

    async def infer(self, version: ModelVersion, batch_size: int, payload: Any,
                    received_ns: int) -> tuple[Any, tuple]:
        """``submit`` for coroutines: returns (result, timings) or raises."""
        future = asyncio.get_running_loop().create_future()

        def done(code: int, message: str, result: Any, timings: tuple) -> None:
            if future.done():
                return
            if code == Code.SUCCESS:
                future.set_result((result, timings))
            else:
                future.set_exception(ServerError(code, message))

        self.submit(version, batch_size, payload, received_ns, done)
        return await future

    def record_rejected(self, version: ModelVersion, batch_size: int, received_ns: int) -> None:
        """Counts a request that failed before it reached the scheduler."""
        version.stats.record_rejected(batch_size, _core.monotonic_ns() - received_ns)

    def _drain(self) -> None:
        pending = self._pending
        for ticket, code, message, result, timings in self._completions.drain():
            callback = pending.pop(ticket, None)
            if callback is None:
                continue
            try:
                callback(code, message, result, timings)
            except Exception:  # a broken callback must not stop other completions
                log.exception("completion callback failed")
