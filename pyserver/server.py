"""The protocol-neutral server API that every front end speaks to.

Front ends translate their wire format into an InferenceRequest and call
``infer``; the server resolves the model version, validates the request
(pyserver.api.plan), builds the core payload and submits it. The C++ core
schedules it onto an instance, the completion comes back on the event loop
through the completion queue's file descriptor, and the caller's callback
gets an InferenceResponse. Status, statistics, the repository index and
model control sit beside it; none of it knows a protocol.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import numbers
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol

from pyserver import _core, __version__, log_settings
from pyserver.api import datatypes
from pyserver.api.plan import InferPlan, plan_for, rejected_batch_size
from pyserver.api.request import LATEST, InferenceRequest
from pyserver.api.response import InferenceResponse
from pyserver.api.status import (IndexEntry, ModelMetadata, ModelStatus, TensorMetadata,
                                 VersionStatus)
from pyserver.api.limits import UINT64_MAX
from pyserver.errors import Code, ServerError, internal, invalid_arg, not_found, unavailable
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import server_status_pb2 as ss
from pyserver.repository import config as cfg
from pyserver.repository.manager import ModelVersion, RepositoryManager
from pyserver.response_cache import ResponseCache, fresh_outputs
from pyserver.shared_memory import (OutputDestination, SharedMemoryRegistry, fetch_cuda_inputs,
                                    write_outputs)
from pyserver.tracing import Tracer

log = logging.getLogger("pyserver")

# on_done(response): runs on the event loop once the request is answered.
DoneCallback = Callable[[InferenceResponse], None]


class InferHandle(Protocol):
    """What ``InferenceServer.infer`` returns: the means to give the
    request up."""

    def cancel(self) -> bool:
        """If the request still waits in its model's queue, takes it out:
        it never runs, and its answer (code CANCELLED) goes to ``on_done``
        as for any request, once. Returns False, changing nothing, when it
        is already running or answered. Event-loop thread only."""


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
    unload_timeout_secs: float = 10.0  # after the exit timeout, for instances to stop
    gpu_count: int = 0
    pinned_memory_pool_byte_size: int = 256 * 1024 * 1024
    allow_shared_memory: bool = False  # system and CUDA shared-memory regions for tensors
    response_cache_byte_size: int = 0  # 0: no response cache
    # A request for a model whose recent executions averaged at most this many µs runs on
    # the event loop's thread, when an instance is idle and nothing waits, instead of
    # waking an instance thread (direct scheduling, CPU ONNX Runtime / TensorFlow
    # instances only). 0: never.
    inline_execution_limit_us: float = 50.0


@dataclass
class ShutdownReport:
    """What ``InferenceServer.shutdown`` had to give up on."""

    abandoned_requests: int = 0  # answered UNAVAILABLE at the exit timeout
    stuck_unload: bool = False   # some instance did not stop in time

    @property
    def clean(self) -> bool:
        return not self.abandoned_requests and not self.stuck_unload


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
        self.response_cache = ResponseCache(options.response_cache_byte_size) \
            if options.response_cache_byte_size > 0 else None
        self.repository = RepositoryManager(
            options.model_store, self._completions, self.memory_pool, options.gpu_count,
            on_unload=self._drop_cached if self.response_cache is not None else None,
            inline_limit_us=options.inline_execution_limit_us)
        self._tickets = itertools.count(1)
        self._pending: dict[int, _Call] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._request_ids = itertools.count(1)
        self.draining = False
        # Registered shared-memory regions (pyserver.shared_memory).
        self.shared_memory = SharedMemoryRegistry(options.allow_shared_memory)
        self.log_settings_listeners: list[Callable[[log_settings.LogSettings], None]] = []
        self.tracer = Tracer()

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

    def begin_drain(self) -> None:
        """Readiness turns false on every API from now on; requests are
        still accepted and served until ``shutdown``."""
        self.draining = True

    async def shutdown(self) -> ShutdownReport:
        """Refuses new requests and waits for accepted ones up to the exit
        timeout. At the deadline the requests still queued or running are
        answered UNAVAILABLE. Then unloads every model, waiting at most
        ``unload_timeout_secs`` for instances that do not return (a stuck
        model): the report says whether work was abandoned."""
        self.state = ServerState.EXITING
        self.draining = True
        report = ShutdownReport()
        deadline = time.monotonic() + self.options.exit_timeout_secs
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._pending:
            report.abandoned_requests = len(self._pending)
            log.warning("exit timeout (%.1f s): answering %d requests still queued or running "
                        "UNAVAILABLE", self.options.exit_timeout_secs, report.abandoned_requests)
            self._fail_pending("Server exiting: exit timeout reached before the request finished")
        if not await _in_daemon_thread(self.repository.stop, self.options.unload_timeout_secs):
            report.stuck_unload = True
            log.error("models did not unload within %.1f s (an instance is stuck)",
                      self.options.unload_timeout_secs)
        else:
            self._drain()
        if self._loop is not None:
            self._loop.remove_reader(self._completions.fileno())
        self.shared_memory.close()
        self.tracer.flush()
        return report

    def _fail_pending(self, message: str) -> None:
        pending, self._pending = self._pending, {}
        for call in pending.values():
            try:
                call.on_done(self._failure(call, unavailable(message)))
            except Exception:
                log.exception("completion callback failed")

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

    # v1 (the seed): ready = the server has initialised (and is not
    # draining); live = every model loaded, relaxed by strict_readiness=False
    # (--strict-liveness=false). v2 (KServe, Triton): live = the process is
    # up; ready = serving and every model ready (relaxed by the same flag).

    @property
    def live(self) -> bool:
        """v2 / KServe liveness."""
        return self.state in (ServerState.READY, ServerState.EXITING)

    @property
    def ready(self) -> bool:
        """v2 / KServe readiness."""
        if self.state != ServerState.READY or self.draining:
            return False
        return self.repository.all_ready() if self.options.strict_readiness else True

    @property
    def v1_live(self) -> bool:
        """v1 /api/health/live."""
        if self.state not in (ServerState.READY, ServerState.EXITING):
            return False
        return self.repository.all_ready() if self.options.strict_readiness else True

    @property
    def v1_ready(self) -> bool:
        """v1 /api/health/ready."""
        return self.state == ServerState.READY and not self.draining

    def next_request_id(self) -> int:
        """Server-side request number reported in v1 RequestStatus."""
        return next(self._request_ids)

    # -- inference --------------------------------------------------------------

    def resolve(self, model: str, version: int = LATEST) -> ModelVersion:
        if self.state != ServerState.READY:
            raise unavailable("server is not ready" if self.state != ServerState.EXITING
                              else "Server exiting")
        return self.repository.resolve(model, version)

    def infer(self, request: InferenceRequest, on_done: DoneCallback) -> InferHandle:
        """Runs ``request``; ``on_done(response)`` runs on the event loop
        with the InferenceResponse: later for an accepted request, before
        ``infer`` returns for a refused one or one answered from the
        response cache. Never raises for a bad request: every failure is
        the response's error. The handle returned cancels the request while
        it is queued (a front end calls it when its client goes away)."""
        received = _core.monotonic_ns()
        version = None
        try:
            version = self.resolve(request.model, request.version)
            # Shared-memory inputs become views of their regions, outputs get
            # destinations that keep their regions until the request is done.
            destinations = None
            if request.shared_memory:
                destinations = self.shared_memory.resolve(request)
            plan = plan_for(version, request)
            if request.shared_memory:  # CUDA inputs: copied once their sizes are checked
                fetch_cuda_inputs(request, plan.inputs)
            payload = plan.payload(request)
            if version.sequence:
                _set_sequence(payload, request)
            key = hit = None
            lookup_ns = -1  # -1: the cache is not consulted
            if version.cache_responses and self.response_cache is not None:
                key, lookup_ns, outputs = self._cache_lookup(plan, payload)
                if outputs is not None:
                    outputs = fresh_outputs(outputs)  # this response's own output objects
                    if destinations:
                        write_outputs(outputs, destinations)
                    hit = InferenceResponse(version.name, version.version, request.id,
                                            outputs, None, plan.batch_size, plan.batched,
                                            plan.cache)
                    version.stats.record_cache_hit(plan.batch_size, received,
                                                   _core.monotonic_ns(), lookup_ns)
            if hit is None:
                ticket = next(self._tickets)
                call = self._pending[ticket] = _Call(plan, request, on_done, ticket,
                                                     destinations, key, lookup_ns)
                if self.tracer.active:
                    call.trace = self.tracer.sample(version.name)
                try:
                    version.scheduler.enqueue(ticket, plan.batch_size, received, payload)
                except BaseException:
                    del self._pending[ticket]
                    raise
                return call
        except ServerError as exc:
            error = exc
        except Exception:  # a fault of ours: the client learns only that
            log.exception("inference request for '%s' failed", request.model)
            error = internal("internal error")
        else:
            on_done(hit)  # a cache hit: answered without queueing
            return ANSWERED
        if version is not None:
            version.stats.record_rejected(rejected_batch_size(version, request),
                                          _core.monotonic_ns() - received)
        on_done(InferenceResponse.failure(request.model, version.version if version else 0,
                                          request.id, error))
        return ANSWERED

    def _cache_lookup(self, plan: InferPlan, payload
                      ) -> tuple[_core.CacheKey | None, int, list | None]:
        """(key, lookup time in ns, cached outputs or None) of a request to
        a model whose responses are cached; key None: the request is too
        large to be cached."""
        start = _core.monotonic_ns()
        cache = self.response_cache
        key = cache.key(plan, payload)
        outputs = cache.lookup(key) if key is not None else None
        return key, _core.monotonic_ns() - start, outputs

    def _cache_store(self, call: "_Call", response: InferenceResponse) -> None:
        """Stores a missed request's successful response (unless it is too
        large to be keyed); counts the miss."""
        start = _core.monotonic_ns()
        version = call.plan.version
        if call.cache_key is not None:
            try:
                self.response_cache.insert(version, call.cache_key, response.outputs)
            except Exception:  # the answer is still right; only caching it failed
                log.exception("response cache: storing a response of '%s' failed",
                              version.name)
        version.stats.record_cache_miss(call.lookup_ns + _core.monotonic_ns() - start)

    def _drop_cached(self, version: ModelVersion) -> None:
        """The repository's unload hook: a version that unloads leaves no
        cached response behind (a reload of the same number must miss)."""
        dropped = self.response_cache.drop(version.generation)
        if dropped:
            log.info("response cache: dropped %d entries of %s version %d", dropped,
                     version.name, version.version)

    async def infer_async(self, request: InferenceRequest) -> InferenceResponse:
        """``infer`` for coroutines on the server's event loop. Cancelling
        the awaiting task cancels the request if it is still queued."""
        future = asyncio.get_running_loop().create_future()
        call = self.infer(request, _FutureCallback(future).done)
        try:
            return await future
        except asyncio.CancelledError:
            call.cancel()
            raise

    def _drain(self) -> None:
        pending = self._pending
        for ticket, code, message, result, timings in self._completions.drain():
            call = pending.pop(ticket, None)
            if call is None:
                continue
            request = call.request
            if code == Code.SUCCESS:
                try:
                    response = call.plan.response(request, result)
                    if call.destinations:
                        write_outputs(response.outputs, call.destinations)
                except ServerError as exc:
                    response = self._failure(call, exc)
                except Exception:
                    log.exception("building the response of '%s' failed", request.model)
                    response = self._failure(call, internal("internal error"))
                else:
                    if call.lookup_ns >= 0:
                        self._cache_store(call, response)
            else:
                response = self._failure(call, ServerError(code, message))
            if call.trace is not None:
                self.tracer.record(call.trace, response.model, response.version, request.id,
                                   timings, _core.monotonic_ns())
            try:
                call.on_done(response)
            except Exception:  # a broken callback must not stop other completions
                log.exception("completion callback failed")

    @staticmethod
    def _failure(call: "_Call", error: ServerError) -> InferenceResponse:
        version = call.plan.version
        return InferenceResponse(version.name, version.version, call.request.id, [], error,
                                 call.plan.batch_size, call.plan.batched, call.plan.cache)

    # -- models -------------------------------------------------------------------

    def model_ready(self, model: str, version: int = LATEST) -> bool:
        """Whether ``model`` (that version, or any) is READY to serve."""
        try:
            self.repository.resolve(model, version)
        except ServerError:
            return False
        return self.state == ServerState.READY

    def model_config(self, model: str, version: int = LATEST) -> mc.ModelConfig:
        """The normalised config of a ready version. Raises ServerError
        (NOT_FOUND, UNAVAILABLE)."""
        return self.repository.resolve(model, version).config

    def model_metadata(self, model: str, version: int = LATEST) -> ModelMetadata:
        """Inputs, outputs and ready versions of a ready model. Raises
        ServerError (NOT_FOUND, UNAVAILABLE)."""
        entry = self.repository.resolve(model, version)
        config = entry.config
        prefix = [-1] if config.max_batch_size > 0 else []
        found = self.repository.models.get(model)
        versions = [n for n, v in sorted(found.versions.items())
                    if v.state == ss.MODEL_READY] if found is not None else []
        return ModelMetadata(
            model, versions or [entry.version], config.platform or config.backend,
            [TensorMetadata(i.name, datatypes.NAMES[i.data_type], prefix + list(i.dims))
             for i in config.input],
            [TensorMetadata(o.name, datatypes.NAMES[o.data_type], prefix + list(o.dims))
             for o in config.output])

    def model_status(self, model: str = "") -> list[ModelStatus]:
        """Every model of the store as last scanned (or only ``model``),
        with every version. Raises ServerError(NOT_FOUND) for an unknown
        ``model``."""
        models = self.repository.models
        if model:
            found = models.get(model)
            if found is None:
                raise not_found(f"no status available for unknown model '{model}'")
            chosen = [(model, found)]
        else:
            chosen = list(models.items())
        out = []
        for name, entry in chosen:
            if entry.config is None:
                try:
                    numbers = cfg.versions_on_disk(entry.path)
                except OSError:
                    numbers = []
                versions = [VersionStatus(name, n, "UNAVAILABLE", entry.error) for n in numbers]
            else:
                versions = [_version_status(name, n, v)
                            for n, v in list(entry.versions.items())]
            out.append(ModelStatus(name, entry.config, entry.error, versions))
        return out

    def statistics(self, model: str = "", version: int = 0) -> list[VersionStatus]:
        """Counters of every ready version, of one model's ready versions,
        or of one version (whatever its state). Raises ServerError(NOT_FOUND)
        for an unknown model or version."""
        models = self.repository.models
        if model and model not in models:
            raise not_found(f"requested model '{model}' is not found")
        out = []
        for name, entry in sorted(models.items()):
            if model and name != model:
                continue
            for number, v in sorted(entry.versions.items()):
                if version and number != version:
                    continue
                if v.state != ss.MODEL_READY and not (model and version):
                    continue
                out.append(_version_status(name, number, v))
        if model and version and not out:
            raise not_found(f"requested model '{model}' version {version} is not found")
        return out

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every model folder of the store and every loaded model, sorted by
        name: one entry per version, or one for a model with none."""
        out = []
        repository = self.repository
        for name, loaded in repository.index():
            model = repository.models.get(name)
            if model is None or not model.versions:
                if not ready_only:
                    error = model.error if model is not None else ""
                    out.append(IndexEntry(name, None, "UNAVAILABLE" if error else None, error,
                                          loaded))
                continue
            for number, v in sorted(model.versions.items()):
                if ready_only and v.state != ss.MODEL_READY:
                    continue
                out.append(IndexEntry(name, number, _STATE_NAMES.get(v.state, "UNKNOWN"),
                                      v.reason, loaded))
        return out

    # -- trace settings -----------------------------------------------------

    def trace_settings(self, model: str = "") -> dict:
        """The trace settings in force for ``model`` (the global ones without), in
        Triton's JSON form (pyserver.tracing). Raises ServerError (NOT_FOUND) for a model
        the store does not have."""
        if model:
            self._check_model_known(model)
        return self.tracer.settings(model)

    def update_trace_settings(self, changes: Mapping[str, object], model: str = "") -> dict:
        """Changes the global trace settings, or ``model``'s own; returns those in force.
        Raises ServerError (INVALID_ARG, NOT_FOUND) and changes nothing on a bad one."""
        if model:
            self._check_model_known(model)
        return self.tracer.update(changes, model)

    def _check_model_known(self, model: str) -> None:
        if model not in self.repository.models and \
                model not in {name for name, _ in self.repository.index()}:
            raise not_found(f"requested model '{model}' is not found")

    # -- log settings -------------------------------------------------------

    def log_settings(self) -> dict:
        """This server's log settings, by Triton's names (pyserver.log_settings)."""
        return log_settings.current().as_dict()

    def update_log_settings(self, changes: Mapping[str, object]) -> dict:
        """Makes ``changes`` (some of the settings, by name) this server's and returns all
        of them; raises ServerError (INVALID_ARG) and changes nothing if one is not valid.
        Each callable in ``log_settings_listeners`` (the front-end workers') is handed the
        new LogSettings."""
        settings = log_settings.current().updated(changes)
        log_settings.apply(settings)
        for listener in self.log_settings_listeners:
            listener(settings)
        log.info("log settings now %s", settings.as_dict())
        return settings.as_dict()


class _Call:
    """An accepted request waiting for its completion; its InferHandle.
    ``lookup_ns`` >= 0: it missed the response cache after a lookup that
    long, and its response is stored under ``cache_key`` (None: too large
    to be cached)."""

    __slots__ = ("plan", "request", "on_done", "ticket", "destinations", "cache_key",
                 "lookup_ns", "trace")

    def __init__(self, plan: InferPlan, request: InferenceRequest, on_done: DoneCallback,
                 ticket: int, destinations: list[OutputDestination] | None = None,
                 cache_key: _core.CacheKey | None = None, lookup_ns: int = -1) -> None:
        self.plan = plan
        self.request = request
        self.on_done = on_done
        self.ticket = ticket
        self.destinations = destinations  # shared-memory outputs
        self.cache_key = cache_key
        self.lookup_ns = lookup_ns
        self.trace = None  # the Tracer's handle when this request is traced

    def cancel(self) -> bool:
        # Tickets are never reused: one already answered is simply not found.
        scheduler = self.plan.version.scheduler
        return scheduler is not None and scheduler.cancel(self.ticket)


class _Answered:
    """The handle of a request answered before ``infer`` returned."""

    __slots__ = ()

    def cancel(self) -> bool:
        return False


ANSWERED = _Answered()


class _FutureCallback:
    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future) -> None:
        self.future = future

    def done(self, response: InferenceResponse) -> None:
        if not self.future.done():
            self.future.set_result(response)


_STATE_NAMES = {ss.MODEL_READY: "READY", ss.MODEL_LOADING: "LOADING",
                ss.MODEL_UNLOADING: "UNLOADING", ss.MODEL_UNAVAILABLE: "UNAVAILABLE"}


def _set_sequence(payload, request: InferenceRequest) -> None:
    """Copies the request's sequence fields to the payload of a sequence
    model, checked: an id is an int in uint64 range or a str."""
    sequence_id = request.sequence_id
    if isinstance(sequence_id, numbers.Integral) and not isinstance(sequence_id, bool):
        sequence_id = int(sequence_id)  # numpy integers too
    if not isinstance(sequence_id, (int, str)) or isinstance(sequence_id, bool) or (
            isinstance(sequence_id, int) and not 0 <= sequence_id <= UINT64_MAX):
        raise invalid_arg("sequence id must be an unsigned 64-bit integer or a string")
    payload.sequence_id = sequence_id
    payload.sequence_start = bool(request.sequence_start)
    payload.sequence_end = bool(request.sequence_end)


def _version_status(name: str, number: int, version: ModelVersion) -> VersionStatus:
    snapshot = version.stats.snapshot()
    last_ms = 0
    if snapshot["last_inference_ns"]:
        age_ns = _core.monotonic_ns() - snapshot["last_inference_ns"]
        last_ms = (time.time_ns() - age_ns) // 1_000_000
    return VersionStatus(name, number, _STATE_NAMES.get(version.state, "UNKNOWN"),
                         version.reason, snapshot["execution_count"],
                         snapshot["inference_count"], last_ms,
                         dict(snapshot["by_batch_size"]),
                         snapshot["cache_hit_count"], snapshot["cache_hit_ns"],
                         snapshot["cache_miss_count"], snapshot["cache_miss_ns"])


async def _in_daemon_thread(work: Callable[[], None], timeout: float) -> bool:
    """Runs ``work`` in a daemon thread (one that cannot hold up the
    process's exit) and waits at most ``timeout`` seconds for it. True if it
    returned in time; its exceptions are logged."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def target() -> None:
        try:
            work()
        except Exception:
            log.exception("%s failed", getattr(work, "__qualname__", "shutdown step"))
        finally:
            try:
                loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))
            except RuntimeError:  # the loop closed while this thread was stuck
                pass

    threading.Thread(target=target, name="pyserver-unload", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(finished), timeout)
        return True
    except asyncio.TimeoutError:
        return False
