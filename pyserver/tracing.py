"""Request tracing, Triton's trace extension: settings a client reads and changes while the
server runs (``GET``/``POST /v2[/models/<model>]/trace/setting``, gRPC ``TraceSetting``),
and the timestamps of sampled requests written to the trace file.

Settings (Triton's names and JSON forms): ``trace_file`` (where traces go), ``trace_level``
(a list: ``["OFF"]`` or ``["TIMESTAMPS"]``), ``trace_rate`` (one request in that many is
traced), ``trace_count`` (traces left to take, ``-1`` no limit), ``log_frequency`` (write
every that many traces to ``<trace_file>.<n>``; ``0``: write ``<trace_file>`` at shutdown).
Values are strings in JSON, as Triton gives them. A model's own settings override the
global ones key by key; ``null`` for a key drops the override (for the global settings:
back to the default).

A trace is two JSON objects in the file's array, Triton's layout: ``{"id", "model_name",
"model_version", "request_id"}`` and ``{"id", "timestamps": [{"name", "ns"}, ...]}`` with
REQUEST_START (received), QUEUE_START (handed to the scheduler), COMPUTE_START,
COMPUTE_END and REQUEST_END (answered), in the core's monotonic clock. Each trace is
written as it is recorded (to ``<file>.partial``, renamed when the file is complete), so
memory stays flat however many traces the settings ask for. Tensors are not
traced (``TENSORS`` is refused). Requests answered from the response cache are not traced.

Event-loop thread only, but for ``flush``, which shutdown may call from another thread once
the loop has stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Mapping

from pyserver.errors import invalid_arg

log = logging.getLogger("pyserver.trace")

LEVELS = ("OFF", "TIMESTAMPS")
_KEYS = ("trace_file", "trace_level", "trace_rate", "trace_count", "log_frequency")


@dataclasses.dataclass(frozen=True)
class TraceSettings:
    trace_file: str = ""
    trace_level: tuple[str, ...] = ("OFF",)
    trace_rate: int = 1000
    trace_count: int = -1
    log_frequency: int = 0

    @property
    def on(self) -> bool:
        return "TIMESTAMPS" in self.trace_level and self.trace_count != 0

    def as_dict(self) -> dict[str, Any]:
        """Triton's JSON form: numbers as strings, the level a list."""
        return {"trace_file": self.trace_file, "trace_level": list(self.trace_level),
                "trace_rate": str(self.trace_rate), "trace_count": str(self.trace_count),
                "log_frequency": str(self.log_frequency), "trace_mode": "triton"}


def _number(name: str, value: Any, lowest: int) -> int:
    if isinstance(value, bool):
        raise invalid_arg(f"trace setting '{name}' must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid_arg(f"trace setting '{name}' must be an integer, got "
                          f"{str(value)[:100]!r}") from None
    if number < lowest:
        raise invalid_arg(f"trace setting '{name}' must be >= {lowest}, got {number}")
    return number


def _level(value: Any) -> tuple[str, ...]:
    levels = [value] if isinstance(value, str) else value
    if not isinstance(levels, (list, tuple)) or not levels or \
            not all(isinstance(v, str) for v in levels):
        raise invalid_arg("trace setting 'trace_level' must be a list of strings")
    for level in levels:
        if level == "TENSORS":
            raise invalid_arg("trace level TENSORS is not supported: only TIMESTAMPS (or OFF)")
        if level not in LEVELS:
            raise invalid_arg(f"trace setting 'trace_level': unknown level "
                              f"{level[:100]!r}; known: {', '.join(LEVELS)}")
    if "TIMESTAMPS" in levels:
        return ("TIMESTAMPS",)
    return ("OFF",)


def clean(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` checked and in TraceSettings' types (None kept: drop the key); raises
    INVALID_ARG naming the first bad setting."""
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "trace_mode" and value in (None, "triton"):
            continue  # Triton's only mode here
        if name not in _KEYS:
            raise invalid_arg(f"unknown trace setting '{str(name)[:100]}'; known: "
                              f"{', '.join(_KEYS)}")
        if value is None:
            out[name] = None
        elif name == "trace_file":
            if not isinstance(value, str):
                raise invalid_arg("trace setting 'trace_file' must be a string")
            out[name] = value
        elif name == "trace_level":
            out[name] = _level(value)
        elif name == "trace_rate":
            out[name] = _number(name, value, 1)
        elif name == "trace_count":
            out[name] = _number(name, value, -1)
        else:
            out[name] = _number(name, value, 0)
    return out


class _TraceFile:
    """One trace file being written. Traces go out as they are recorded (none is kept in
    memory, whatever the settings), to ``<path>.partial``, renamed to ``<path>`` when
    closed: a reader only ever finds whole files. Raises OSError when it cannot be
    opened."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._partial = f"{path}.partial"
        self._out = open(self._partial, "w", encoding="utf-8")
        self._out.write("[")
        self.traces = 0

    def add(self, head: dict, stamps: dict) -> None:
        self._out.write((", " if self.traces else "") + json.dumps(head) + ", " +
                        json.dumps(stamps))
        self.traces += 1

    def close(self) -> None:
        self._out.write("]")
        self._out.close()
        os.replace(self._partial, self.path)


class _Scope:
    """The traces of one setting (the global one, or one model's): the file being
    written, the sampling counter, the traces left and the next file index."""

    def __init__(self, settings: TraceSettings) -> None:
        self.settings = settings
        self.seen = 0
        self.left = settings.trace_count
        self.file: _TraceFile | None = None
        self.file_index = 0

    def open(self) -> _TraceFile | None:
        """The file this scope's next trace goes to (None: it cannot be written). With a
        log frequency or a trace count the files are indexed (``<trace_file>.<n>``), else
        it is ``<trace_file>`` itself, closed at shutdown."""
        if self.file is None:
            settings = self.settings
            if not settings.trace_file:
                log.warning("a sampled trace is dropped: no trace_file is set")
                return None
            path = settings.trace_file
            if settings.log_frequency or settings.trace_count >= 0:
                path = f"{path}.{self.file_index}"
                self.file_index += 1
            try:
                self.file = _TraceFile(path)
            except OSError as exc:
                log.error("cannot write traces to %s: %s", path, exc.strerror)
        return self.file

    def close(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError as exc:
                log.error("cannot write traces to %s: %s", file.path, exc.strerror)


class Tracer:
    """The server's trace settings and the traces they sample."""

    def __init__(self) -> None:
        self.global_settings = TraceSettings()
        self._overrides: dict[str, dict[str, Any]] = {}  # model -> keys it sets itself
        self._global = _Scope(self.global_settings)
        self._models: dict[str, _Scope] = {}
        self._next_id = 1
        self.active = False  # any scope on: infer asks sample()

    # -- settings -----------------------------------------------------------------------

    def settings(self, model: str = "") -> dict[str, Any]:
        """The settings in force for ``model`` (the global ones without); trace_count is
        the number of traces still to take, as Triton reports it."""
        out = self._settings_of(model).as_dict()
        out["trace_count"] = str(self._scope(model).left)
        return out

    def update(self, changes: Mapping[str, Any], model: str = "") -> dict[str, Any]:
        """Applies ``changes`` (see the module) and returns the settings now in force for
        ``model`` (the global ones without); raises INVALID_ARG, changing nothing, when
        one is bad. Traces collected under the old settings are written first."""
        checked = clean(changes)
        if model:
            override = dict(self._overrides.get(model, {}))
            for name, value in checked.items():
                if value is None:
                    override.pop(name, None)
                else:
                    override[name] = value
            if model in self._models:
                self._models[model].close()
            if override:
                self._overrides[model] = override
            else:
                self._overrides.pop(model, None)
            self._models.pop(model, None)
        else:
            base = dataclasses.asdict(self.global_settings)
            for name, value in checked.items():
                base[name] = getattr(TraceSettings, name) if value is None else value
            self.flush()
            self.global_settings = TraceSettings(**base)
            self._global = _Scope(self.global_settings)
            self._models.clear()
        self._refresh_active()
        return self.settings(model)

    def _settings_of(self, model: str) -> TraceSettings:
        override = self._overrides.get(model) if model else None
        if not override:
            return self.global_settings
        return dataclasses.replace(self.global_settings, **override)

    def _scope(self, model: str) -> _Scope:
        if model not in self._overrides:
            return self._global
        scope = self._models.get(model)
        if scope is None:
            scope = self._models[model] = _Scope(self._settings_of(model))
        return scope

    def _refresh_active(self) -> None:
        self.active = self.global_settings.on or any(
            self._settings_of(m).on for m in self._overrides)

    # -- traces -------------------------------------------------------------------------

    def sample(self, model: str) -> tuple[int, _Scope] | None:
        """A trace for this request of ``model``, or None when it is not sampled."""
        scope = self._scope(model)
        settings = scope.settings
        if not settings.on or scope.left == 0:
            return None
        scope.seen += 1
        if (scope.seen - 1) % settings.trace_rate:
            return None
        if scope.left > 0:
            scope.left -= 1
        trace_id = self._next_id
        self._next_id += 1
        return trace_id, scope

    def record(self, trace: tuple[int, _Scope], model: str, version: int, request_id: Any,
               timings: tuple[int, int, int, int], end_ns: int) -> None:
        """Writes the timestamps of a sampled request to its scope's file; closes the file
        when the log frequency or the count says so."""
        trace_id, scope = trace
        file = scope.open()
        if file is None:
            return
        received, enqueued, compute_start, compute_end = timings
        try:
            file.add({"id": trace_id, "model_name": model, "model_version": version,
                      "request_id": "" if request_id is None else str(request_id)},
                     {"id": trace_id, "timestamps": [
                         {"name": "REQUEST_START", "ns": received},
                         {"name": "QUEUE_START", "ns": enqueued},
                         {"name": "COMPUTE_START", "ns": compute_start},
                         {"name": "COMPUTE_END", "ns": compute_end},
                         {"name": "REQUEST_END", "ns": end_ns}]})
        except OSError as exc:
            log.error("cannot write traces to %s: %s", file.path, exc.strerror)
            scope.close()
            return
        frequency = scope.settings.log_frequency
        if (frequency and file.traces >= frequency) or scope.left == 0:
            scope.close()

    def flush(self) -> None:
        """Closes every trace file being written (at shutdown, and before new settings)."""
        self._global.close()
        for scope in list(self._models.values()):
            scope.close()
