"""Calls the real v1 client (tensorrtserver 1.11.0) and prints the outcome as
JSON. Runs under the client's own venv (tests/v1client/setup.sh), never
under the server's: it imports neither pyserver nor pytest.

    python client_calls.py '{"call": "infer", "url": "127.0.0.1:8001", ...}'

Calls: ``health``, ``status``, ``repository_index``, ``model_control``
(``action`` load | unload), ``infer`` (``mode`` run | async | stream |
stream_async; ``repeat`` runs the same request that many times).
Errors print ``{"error": message}``; the exit code is 0 either way.

Quirks of the client under today's Python that this script works around
(found by running it): ``ServerStatusContext`` (and
``ModelRepositoryContext``) hand a ctypes array to ``ParseFromString``, which
pure-Python protobuf rejects, so those messages are parsed from
``bytes(buf)``; map fields may read as lists of key/value entries, so they
are read through ``_items``.
"""

import json
import sys
import threading

import numpy as np
from tensorrtserver.api import (InferContext, InferenceServerException, ModelControlContext,
                                ModelRepositoryContext, ProtocolType, ServerHealthContext,
                                ServerStatusContext)
from tensorrtserver.api import server_status_pb2


def _parse_bytes(message_type):
    parse = message_type.ParseFromString
    message_type.ParseFromString = lambda self, buf: parse(self, bytes(buf))


_parse_bytes(server_status_pb2.ServerStatus)
_parse_bytes(server_status_pb2.ModelRepositoryIndex)


def _items(field):
    """(key, value) pairs of a map field, read as a map or as entries."""
    if hasattr(field, "items"):
        return list(field.items())
    return [(entry.key, entry.value) for entry in field]


def _protocol(spec):
    return ProtocolType.from_str(spec["protocol"])


def health(spec):
    with ServerHealthContext(spec["url"], _protocol(spec)) as ctx:
        return {"live": ctx.is_live(), "ready": ctx.is_ready()}


def status(spec):
    with ServerStatusContext(spec["url"], _protocol(spec), spec.get("model")) as ctx:
        server_status = ctx.get_server_status()
        request_id = ctx.get_last_request_id()
    models = {}
    for name, model in _items(server_status.model_status):
        config = model.config
        models[name] = {
            "platform": config.platform,
            "max_batch_size": config.max_batch_size,
            "inputs": [i.name for i in config.input],
            "outputs": [o.name for o in config.output],
            "versions": {str(v): s.ready_state for v, s in _items(model.version_status)},
            "success": {str(v): sum(stats.success.count for _, stats in _items(s.infer_stats))
                        for v, s in _items(model.version_status)},
        }
    return {"id": server_status.id, "ready_state": server_status.ready_state,
            "request_id": request_id, "models": models}


def repository_index(spec):
    with ModelRepositoryContext(spec["url"], _protocol(spec)) as ctx:
        index = ctx.get_model_repository_index()
    return {"models": [model.name for model in index.models]}


def model_control(spec):
    with ModelControlContext(spec["url"], _protocol(spec)) as ctx:
        if spec["action"] == "load":
            ctx.load(spec["model"])
        else:
            ctx.unload(spec["model"])
        return {"request_id": ctx.get_last_request_id()}


def _outputs(spec):
    outputs = {}
    for name, kind in spec["outputs"].items():
        if kind == "raw":
            outputs[name] = InferContext.ResultFormat.RAW
        else:
            outputs[name] = (InferContext.ResultFormat.CLASS, int(kind[1]))
    return outputs


def _inputs(spec):
    inputs = {}
    for name, tensor in spec["inputs"].items():
        array = np.array(tensor["data"], dtype=tensor["dtype"])
        inputs[name] = [array[b] for b in range(array.shape[0])]
    return inputs


def _encode_results(results):
    encoded = {}
    for name, values in results.items():
        if values and isinstance(values[0], np.ndarray):
            encoded[name] = {"dtype": str(values[0].dtype),
                             "data": [v.tolist() for v in values]}
        else:
            encoded[name] = {"classes": [[[int(i), float(p), l] for i, p, l in element]
                                         for element in values]}
    return encoded


def infer(spec):
    mode = spec.get("mode", "run")  # run | async | stream | stream_async
    version = spec.get("version")
    ctx = InferContext(spec["url"], _protocol(spec), spec["model"], version,
                       streaming=mode.startswith("stream"))
    try:
        inputs, outputs = _inputs(spec), _outputs(spec)
        batch_size = int(spec.get("batch_size", 1))
        repeat = int(spec.get("repeat", 1))
        answers = []
        if mode.endswith("async"):
            done = threading.Semaphore(0)
            ids = []

            def callback(context, request_id):
                ids.append(request_id)
                done.release()

            for _ in range(repeat):
                ctx.async_run(callback, inputs, outputs, batch_size)
            for _ in range(repeat):
                if not done.acquire(timeout=20):
                    return {"error": "async_run callback did not come within 20 s"}
            for request_id in sorted(ids):
                answers.append(_encode_results(ctx.get_async_run_results(request_id)))
        else:
            for _ in range(repeat):
                answers.append(_encode_results(ctx.run(inputs, outputs, batch_size)))
        return {"results": answers, "model_name": ctx.get_last_request_model_name(),
                "model_version": ctx.get_last_request_model_version()}
    finally:
        ctx.close()


CALLS = {"health": health, "status": status, "repository_index": repository_index,
         "model_control": model_control, "infer": infer}


def main():
    spec = json.loads(sys.argv[1])
    try:
        out = CALLS[spec["call"]](spec)
    except InferenceServerException as exc:
        out = {"error": exc.message(), "server_id": exc.server_id(),
               "request_id": exc.request_id()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
