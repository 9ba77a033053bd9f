"""The blocking v1 client: :class:`InferenceServerClient`."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from pyserver.client import errors
from pyserver.client._grpc import GrpcTransport, infer_request, unpack
from pyserver.client._http import HttpTransport
from pyserver.client._infer import InferResult, Inputs, Outputs, model_config, prepare, result
from pyserver.protos import model_config_pb2 as mc, request_status_pb2, server_status_pb2

DEFAULT_TIMEOUT_S = 60.0


def _protocol(protocol: str) -> str:
    name = protocol.lower()
    if name not in ("http", "grpc"):
        raise errors.invalid_arg(f"unknown protocol '{protocol}': expected http or grpc")
    return name


class InferenceServerClient:
    """A v1 client over HTTP (one keep-alive connection) or gRPC (one
    channel). Every failure raises :class:`InferenceServerException`.

    ``url`` is ``host:port`` (default port 8000 for HTTP, 8001 for gRPC);
    ``timeout`` bounds each call in seconds (None: no bound). Model configs
    are fetched once per model (for batching and output types) and cached.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, url: str = "localhost:8000", protocol: str = "http",
                 timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.protocol = _protocol(protocol)
        self._transport: Any = (HttpTransport(url, timeout) if self.protocol == "http"
                                else GrpcTransport(url, timeout))
        self._configs: dict[str, mc.ModelConfig] = {}
        self._ids = itertools.count(1)
        self._ids_lock = threading.Lock()

    def __enter__(self) -> "InferenceServerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    # -- health and status ----------------------------------------------------------

    def is_live(self) -> bool:
        return self._transport.health("live")

    def is_ready(self) -> bool:
        return self._transport.health("ready")

    def get_status(self, model: str | None = None) -> server_status_pb2.ServerStatus:
        """The ServerStatus proto: every model, or only ``model``."""
        status = self._transport.status(model)
        for name, model_status in status.model_status.items():
            self._configs[name] = model_status.config
        return status

    def get_model_config(self, model: str) -> mc.ModelConfig:
        """``model``'s config (cached after the first call)."""
        if model not in self._configs:
            self._configs[model] = model_config(self._transport.status(model), model)
        return self._configs[model]

    # -- inference ----------------------------------------------------------------

    def _next_id(self) -> int:
        with self._ids_lock:
            return next(self._ids)

    def infer(self, model: str, inputs: Inputs, outputs: Outputs = None, *,
              batch_size: int | None = None, version: int | None = None,
              request_id: int | None = None) -> InferResult:
        """Run ``model`` (``version``, default latest) on named numpy
        ``inputs`` (dict or (name, array) pairs, whole batch each).

        ``outputs``: None for every output raw, a list of names (raw), or a
        dict name -> None (raw) | k (top-k classes with labels).
        ``request_id`` (default: a per-client counter) comes back as
        ``result.request_id``.
        """
        prepared = prepare(self.get_model_config(model), inputs, outputs, batch_size,
                           self._next_id() if request_id is None else request_id)
        header, raw = self._transport.infer(model, version, prepared.header, prepared.buffers)
        return result(prepared.config, header, raw)

    def stream_infer(self, model: str, requests: Iterable[Inputs], outputs: Outputs = None, *,
                     version: int | None = None) -> Iterator[InferResult]:
        """gRPC only: run each inputs set of ``requests`` on one StreamInfer
        stream; results come back in request order."""
        if self.protocol != "grpc":
            raise errors.InferenceServerException(
                request_status_pb2.UNSUPPORTED, "streaming is only available over gRPC")
        config = self.get_model_config(model)

        def messages():
            for inputs in requests:
                prepared = prepare(config, inputs, outputs, None, self._next_id())
                yield infer_request(model, version, prepared.header, prepared.buffers)

        for response in self._transport.stream(messages()):
            header, raw = unpack(response)
            yield result(config, header, raw)
