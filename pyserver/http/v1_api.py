"""The v1 HTTP API: /api/health, /api/status and /api/infer.

Every answer except routing and method errors carries ``NV-Status``; infer
answers carry ``NV-InferResponse`` too. Status codes are v1's: 200 on
SUCCESS, 400 otherwise (errors.v1_http_status).
"""

from __future__ import annotations

import logging

from google.protobuf import text_format

from pyserver.api.request import LATEST
from pyserver.api.response import InferenceResponse
from pyserver.errors import Code, ServerError, invalid_arg, v1_http_status
from pyserver.http.connection import RequestCycle
from pyserver.protocol import v1_infer, v1_shared_memory, v1_status
from pyserver.server import InferenceServer

log = logging.getLogger("pyserver.http")

_OCTET = (b"content-type", b"application/octet-stream")
_TEXT = (b"content-type", b"text/plain")
_API_PREFIXES = (b"/api/health", b"/api/status", b"/api/infer", b"/api/modelcontrol",
                 b"/api/repository", b"/api/sharedmemorycontrol")


class V1HttpApi:
    """Routes requests to the v1 handlers. Runs on the event loop."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        self._status_prefix = f'server_id: "{server.id}" request_id: '
        self._templates = v1_infer.TemplateCache()

    def handle(self, cycle: RequestCycle) -> None:
        path = cycle.path
        if path.startswith(b"/api/infer/"):
            if cycle.method != b"POST":
                return _method_not_allowed(cycle)
            return self._infer(cycle, path[len(b"/api/infer/"):])
        if path.startswith(b"/api/health"):
            if cycle.method != b"GET":
                return _method_not_allowed(cycle)
            return self._health(cycle, path[len(b"/api/health"):])
        if path == b"/api/status" or path.startswith(b"/api/status/"):
            if cycle.method != b"GET":
                return _method_not_allowed(cycle)
            return self._status(cycle, path[len(b"/api/status"):].strip(b"/"))
        if path.startswith(b"/api/modelcontrol/"):
            if cycle.method != b"POST":
                return _method_not_allowed(cycle)
            return self._model_control(cycle, path[len(b"/api/modelcontrol/"):])
        if path.startswith(b"/api/sharedmemorycontrol/"):
            return self._shared_memory_control(cycle, path[len(b"/api/sharedmemorycontrol/"):])
        if path == b"/api/repository/index":
            if cycle.method != b"GET":
                return _method_not_allowed(cycle)
            return self._repository_index(cycle)
        if path.startswith(_API_PREFIXES):
            if path == b"/api/infer" and cycle.method != b"POST":
                return _method_not_allowed(cycle)
            return cycle.respond(400, [_TEXT], b"malformed request path: " + path)
        cycle.respond(400, [_TEXT], b"unknown API path: " + path)

    # -- health ---------------------------------------------------------------

    def _health(self, cycle: RequestCycle, mode: bytes) -> None:
        if mode == b"/live":
            healthy = self.server.v1_live
        elif mode == b"/ready":
            healthy = self.server.v1_ready
        else:
            return cycle.respond(400, [_TEXT], b"health mode must be /live or /ready")
        code, message = Code.SUCCESS, ""
        if not healthy and self.server.draining:
            code, message = Code.UNAVAILABLE, "Server exiting"
        cycle.respond(200 if healthy else 400, [self._nv_status(code, message)])

    # -- status ---------------------------------------------------------------

    def _status(self, cycle: RequestCycle, model: bytes) -> None:
        fmt = (cycle.query_param(b"format") or b"").decode("latin-1")
        if not fmt:
            accept = cycle.header(b"accept") or b""
            fmt = "json" if b"application/json" in accept else "text"
        try:
            if fmt not in ("text", "binary", "json"):
                raise invalid_arg(f"unknown status format '{fmt}'; use text, binary or json")
            status = v1_status.server_status(self.server, model.decode("utf-8", "replace"))
        except ServerError as exc:
            return cycle.respond(400, [self._nv_status(exc.code, exc.message)])
        body, content_type = v1_status.encode(status, fmt)
        cycle.respond(200, [self._nv_status(Code.SUCCESS, ""),
                            (b"content-type", content_type.encode())], body)

    # -- model control and repository -------------------------------------------

    def _model_control(self, cycle: RequestCycle, route: bytes):
        action, _, model = route.partition(b"/")
        if action not in (b"load", b"unload") or not model or b"/" in model:
            return cycle.respond(400, [_TEXT], b"model control path must be "
                                               b"/api/modelcontrol/load|unload/<model>")
        return self._run_model_control(cycle, action, model.decode("utf-8", "replace"))

    async def _run_model_control(self, cycle: RequestCycle, action: bytes, model: str) -> None:
        try:
            if action == b"load":
                await self.server.load_model(model)
            else:
                await self.server.unload_model(model)
        except ServerError as exc:
            return cycle.respond(400, [self._nv_status(exc.code, exc.message)])
        cycle.respond(200, [self._nv_status(Code.SUCCESS, "")])

    def _shared_memory_control(self, cycle: RequestCycle, route: bytes) -> None:
        try:
            status = v1_shared_memory.http_control(self.server.shared_memory, cycle.method,
                                                   route.decode("utf-8", "replace"), cycle.body)
        except v1_shared_memory.MethodNotAllowed:
            return _method_not_allowed(cycle)
        except ServerError as exc:
            return cycle.respond(400, [self._nv_status(exc.code, exc.message)])
        if status is None:
            return cycle.respond(200, [self._nv_status(Code.SUCCESS, "")])
        fmt = (cycle.query_param(b"format") or b"text").decode("latin-1")
        body, content_type = v1_status.encode(status, fmt if fmt in ("binary", "json")
                                              else "text")
        cycle.respond(200, [self._nv_status(Code.SUCCESS, ""),
                            (b"content-type", content_type.encode())], body)

    def _repository_index(self, cycle: RequestCycle) -> None:
        index = v1_status.repository_index(self.server)
        fmt = cycle.query_param(b"format")
        if fmt == b"binary":
            body, content_type = index.SerializeToString(), b"application/octet-stream"
        else:
            body, content_type = text_format.MessageToString(index).encode(), b"text/plain"
        cycle.respond(200, [self._nv_status(Code.SUCCESS, ""), (b"content-type", content_type)],
                      body)

    # -- infer ----------------------------------------------------------------

    def _infer(self, cycle: RequestCycle, route: bytes) -> None:
        request_id = 0
        try:
            raw_header = cycle.header(b"nv-inferrequest")
            if raw_header is None:
                raise invalid_arg("inference request is missing the NV-InferRequest header")
            template, request_id = self._templates.from_text(raw_header.decode("utf-8",
                                                                               "replace"))
            model, version = _parse_infer_route(route)
        except ServerError as exc:
            return self._infer_error(cycle, exc.code, exc.message, request_id)
        answer = _InferAnswer(self, cycle, request_id, cycle.query_param(b"format") == b"binary")
        request = template.request(model, version, request_id, cycle.body)
        cycle.inflight = self.server.infer(request, answer.done)

    def _infer_error(self, cycle: RequestCycle, code: int, message: str, request_id: int) -> None:
        response_header = f"id: {request_id}" if request_id else ""
        cycle.respond(v1_http_status(code), [self._nv_status(code, message),
                                             (b"nv-inferresponse", response_header.encode())],
                      message.encode())

    def _nv_status(self, code: int, message: str) -> tuple[bytes, bytes]:
        request_id = self.server.next_request_id()
        if code == Code.SUCCESS:
            text = f"code: SUCCESS {self._status_prefix}{request_id}"
        else:
            text = v1_infer.status_text(code, message, self.server.id, request_id)
        return (b"nv-status", text.encode())


def _parse_infer_route(route: bytes) -> tuple[str, int]:
    """``<model>`` or ``<model>/<version>``."""
    model, _, version = route.partition(b"/")
    if not model or b"/" in version:
        raise invalid_arg("infer path must be /api/infer/<model>[/<version>]")
    if not version:
        return model.decode("utf-8", "replace"), LATEST
    if not version.isdigit():
        raise invalid_arg(f"model version must be a number, got '{version.decode('latin-1')}'")
    return model.decode("utf-8", "replace"), int(version)


def _method_not_allowed(cycle: RequestCycle) -> None:
    cycle.respond(405, [_TEXT], b"method not allowed")



class _InferAnswer:
    """Writes the answer of one infer request."""

    __slots__ = ("api", "cycle", "request_id", "binary")

    def __init__(self, api: V1HttpApi, cycle: RequestCycle, request_id: int, binary: bool) -> None:
        self.api = api
        self.cycle = cycle
        self.request_id = request_id
        self.binary = binary

    def done(self, response: InferenceResponse) -> None:
        error = response.error
        if error is not None:
            return self.api._infer_error(self.cycle, error.code, error.message, self.request_id)
        result = v1_infer.encode_response(response, self.request_id, views=True)
        result.raw.append(result.binary if self.binary else result.text.encode())
        self.cycle.respond(200, [_OCTET, self.api._nv_status(Code.SUCCESS, ""),
                                 (b"nv-inferresponse", result.one_line.encode())],
                           result.raw)
