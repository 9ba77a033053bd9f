"""The v2 HTTP API (/v2/...): KServe / Open Inference Protocol with Triton's
binary-tensor, classification, statistics and model-repository extensions.

Errors are JSON ``{"error": "..."}`` with Triton's HTTP statuses
(errors.v2_http_status). Inference goes through the same server API as
v1: protocol.v2 translates the body into an InferenceRequest for ``infer``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from urllib.parse import unquote

from pyserver.api.request import LATEST
from pyserver.api.response import InferenceResponse
from pyserver.errors import Code, ServerError, invalid_arg, v2_http_status
from pyserver.http.connection import HeaderBlock, RequestCycle
from pyserver.protocol import v2
from pyserver.server import InferenceServer
from pyserver.shared_memory import CudaRegion, SystemRegion

log = logging.getLogger("pyserver.http")

_JSON = HeaderBlock([(b"content-type", b"application/json")])
_OCTET = (b"content-type", b"application/octet-stream")
_HEADER_LENGTH = b"inference-header-content-length"
# The headers of a binary answer, per length of its JSON part (few distinct).
_BINARY_HEADERS: dict[int, HeaderBlock] = {}
_BINARY_HEADERS_KEPT = 4096


def _binary_headers(json_length: int) -> HeaderBlock:
    block = _BINARY_HEADERS.get(json_length)
    if block is None:
        block = HeaderBlock([_OCTET, (_HEADER_LENGTH, b"%d" % json_length)])
        if len(_BINARY_HEADERS) < _BINARY_HEADERS_KEPT:
            _BINARY_HEADERS[json_length] = block
    return block


class V2HttpApi:
    """Routes /v2 requests. Runs on the event loop."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    def handle(self, cycle: RequestCycle):
        try:
            path = cycle.path
            if path.endswith(b"/infer") and path.startswith(b"/v2/models/") and \
                    cycle.method == b"POST":
                model = path[11:-6]  # the hot path: /v2/models/<model>/infer
                if model and b"/" not in model:
                    return self._infer(cycle, model.decode("utf-8", "replace"), LATEST)
            return self._route(cycle)
        except ServerError as exc:
            return _error(cycle, v2_http_status(exc.code), exc.message)
        except Exception:  # a fault of ours: the client learns only that
            log.exception("v2 HTTP %s failed", cycle.path[:200])
            return _error(cycle, 500, "internal error")

    def _route(self, cycle: RequestCycle):
        parts = cycle.path.decode("utf-8", "replace").strip("/").split("/")
        method = cycle.method
        n = len(parts)
        if n == 1:
            return self._get(cycle, method, lambda: v2.server_metadata(self.server))
        if parts[1] == "health" and n == 3 and parts[2] in ("live", "ready"):
            if method != b"GET":
                return _error(cycle, 405, "method not allowed")
            healthy = self.server.live if parts[2] == "live" else self.server.ready
            return cycle.respond(200 if healthy else 400, _JSON, b"")
        if parts[1] == "models" and n == 3 and parts[2] == "stats":
            return self._get(cycle, method, lambda: v2.statistics(self.server.statistics()))
        if parts[1] == "models" and n >= 3:
            return self._model(cycle, method, parts[2], parts[3:])
        if parts[1] == "repository":
            return self._repository(cycle, method, parts[2:])
        if parts[1] in ("systemsharedmemory", "cudasharedmemory"):
            return self._shared_memory(cycle, method, parts[1], parts[2:])
        if parts[1] == "logging" and n == 2:
            return self._logging(cycle, method)
        if parts[1:] == ["trace", "setting"]:
            return self._trace_setting(cycle, method, "")
        return _error(cycle, 400, f"unknown API path: {cycle.path.decode('latin-1')[:200]}")

    def _get(self, cycle: RequestCycle, method: bytes, build) -> None:
        if method != b"GET":
            return _error(cycle, 405, "method not allowed")
        cycle.respond(200, _JSON, json.dumps(build()).encode())

    def _model(self, cycle: RequestCycle, method: bytes, model: str, rest: list[str]):
        version = LATEST
        number = 0
        if len(rest) >= 2 and rest[0] == "versions":
            number = v2.parse_version(rest[1]) if rest[1] else -2
            if number < 0:
                raise invalid_arg("model version must be a number, got ''")
            version = number
            rest = rest[2:]
        server = self.server
        if not rest:
            return self._get(cycle, method,
                             lambda: v2.model_metadata(server.model_metadata(model, version)))
        if len(rest) == 1:
            action = rest[0]
            if action == "ready":
                if method != b"GET":
                    return _error(cycle, 405, "method not allowed")
                return cycle.respond(200 if server.model_ready(model, version) else 400, _JSON,
                                     b"")
            if action == "config":
                return self._get(cycle, method,
                                 lambda: v2.model_config(server.model_config(model, version)))
            if action == "stats":
                return self._get(cycle, method,
                                 lambda: v2.statistics(server.statistics(model, number)))
            if action == "infer":
                if method != b"POST":
                    return _error(cycle, 405, "method not allowed")
                return self._infer(cycle, model, version)
        if rest == ["trace", "setting"] and not number:
            return self._trace_setting(cycle, method, model)
        return _error(cycle, 400, f"unknown API path: {cycle.path.decode('latin-1')}")

    # -- repository ---------------------------------------------------------------

    def _repository(self, cycle: RequestCycle, method: bytes, rest: list[str]):
        if method != b"POST":
            return _error(cycle, 405, "method not allowed")
        body = _json_body(cycle)
        if rest == ["index"]:
            ready = body.get("ready", False)
            if not isinstance(ready, bool):
                raise invalid_arg("'ready' must be true or false")
            index = v2.repository_index(self.server.index(ready))
            return cycle.respond(200, _JSON, json.dumps(index).encode())
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            params = body.get("parameters") or {}
            if not isinstance(params, dict):
                raise invalid_arg("'parameters' must be a JSON object")
            if rest[2] == "load" and any(k == "config" or k.startswith("file:") for k in params):
                raise ServerError(Code.UNSUPPORTED, "load with a config or file override is "
                                                    "not supported")
            return self._control(cycle, rest[2], rest[1])
        return _error(cycle, 400, f"unknown API path: {cycle.path.decode('latin-1')}")

    async def _control(self, cycle: RequestCycle, action: str, model: str) -> None:
        try:
            if action == "load":
                await self.server.load_model(model)
            else:
                await self.server.unload_model(model)
        except ServerError as exc:
            # Triton answers a failed load / unload with INVALID_ARG (400),
            # whatever the cause; only a refused mode is 503.
            status = 503 if exc.code == Code.UNAVAILABLE else 400
            return _error(cycle, status, exc.message)
        cycle.respond(200, _JSON, b"")

    # -- log settings -----------------------------------------------------------------

    def _logging(self, cycle: RequestCycle, method: bytes) -> None:
        """GET: the log settings; POST a JSON object of some of them: changes those and
        answers with all (Triton's logging extension)."""
        if method == b"GET":
            settings = self.server.log_settings()
        elif method == b"POST":
            settings = self.server.update_log_settings(_json_body(cycle))
        else:
            return _error(cycle, 405, "method not allowed")
        cycle.respond(200, _JSON, json.dumps(settings).encode())

    def _trace_setting(self, cycle: RequestCycle, method: bytes, model: str) -> None:
        """GET: the trace settings (the model's when one is named); POST a JSON object of
        some of them (null drops a model's own value): changes those, answers with all."""
        if method == b"GET":
            settings = self.server.trace_settings(model)
        elif method == b"POST":
            settings = self.server.update_trace_settings(_json_body(cycle), model)
        else:
            return _error(cycle, 405, "method not allowed")
        cycle.respond(200, _JSON, json.dumps(settings).encode())

    # -- shared memory ----------------------------------------------------------------

    def _shared_memory(self, cycle: RequestCycle, method: bytes, family: str,
                       rest: list[str]):
        """[region/<name>/]status (GET), region/<name>/register and
        [region/<name>/]unregister (POST)."""
        name = ""
        if len(rest) == 3 and rest[0] == "region":
            name = unquote(rest[1])
            if not name:
                raise invalid_arg("shared memory region name must not be empty")
            rest = rest[2:]
        if len(rest) != 1 or rest[0] not in ("status", "register", "unregister") or (
                rest[0] == "register" and not name):
            return _error(cycle, 400, f"unknown API path: {cycle.path.decode('latin-1')[:200]}")
        action = rest[0]
        registry = self.server.shared_memory
        kind = SystemRegion if family == "systemsharedmemory" else CudaRegion
        if action == "status":
            return self._get(cycle, method, lambda: registry.status(kind, name))
        if method != b"POST":
            return _error(cycle, 405, "method not allowed")
        if action == "unregister":
            registry.unregister(kind, name)
            return cycle.respond(200, _JSON, b"")
        body = _json_body(cycle)
        if kind is SystemRegion:
            registry.register_system(name, body.get("key"), body.get("offset", 0),
                                     body.get("byte_size"))
        else:
            registry.register_cuda(name, _raw_handle(body.get("raw_handle")),
                                   body.get("device_id", 0), body.get("byte_size"))
        return cycle.respond(200, _JSON, b"")

    # -- infer ----------------------------------------------------------------------

    def _infer(self, cycle: RequestCycle, model: str, version: int) -> None:
        request = v2.parse_http_body(cycle.body, cycle.header(_HEADER_LENGTH), model, version)
        cycle.inflight = self.server.infer(request.request, _InferAnswer(cycle, request).done)


class _InferAnswer:
    """Writes the answer of one infer request."""

    __slots__ = ("cycle", "request")

    def __init__(self, cycle: RequestCycle, request: v2.V2Request) -> None:
        self.cycle = cycle
        self.request = request

    def done(self, response: InferenceResponse) -> None:
        cycle = self.cycle
        if response.error is not None:
            return _error(cycle, v2_http_status(response.error.code), response.error.message)
        doc, parts = v2.encode_response(response, self.request)
        head = json.dumps(doc).encode()
        if parts:
            parts.insert(0, head)
            cycle.respond(200, _binary_headers(len(head)), parts)
        else:
            cycle.respond(200, _JSON, head)


class HttpRouter:
    """One listener, two APIs: /v2 goes to the v2 app, the rest to v1."""

    def __init__(self, v1_app, v2_app: V2HttpApi) -> None:
        self.v1 = v1_app
        self.v2 = v2_app

    def handle(self, cycle: RequestCycle):
        path = cycle.path
        if path.startswith(b"/v2") and (len(path) == 3 or path[3:4] == b"/"):
            return self.v2.handle(cycle)
        return self.v1.handle(cycle)


def _json_body(cycle: RequestCycle) -> dict:
    if not cycle.body:
        return {}
    doc = v2.load_json(cycle.body)
    if not isinstance(doc, dict):
        raise invalid_arg("request body must be a JSON object")
    return doc


def _raw_handle(value) -> bytes:
    """A CUDA IPC handle as Triton's JSON carries it: {"b64": "<base64>"}."""
    if not isinstance(value, dict) or not isinstance(value.get("b64"), str):
        raise invalid_arg("raw_handle must be a JSON object {\"b64\": \"<base64 handle>\"}")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_arg("raw_handle: 'b64' is not base64") from None


def _error(cycle: RequestCycle, status: int, message: str) -> None:
    cycle.respond(status, _JSON, v2.error_body(message))
