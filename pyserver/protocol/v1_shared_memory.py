"""v1 shared-memory control: gRPC SharedMemoryControlRequests and the HTTP
/api/sharedmemorycontrol/... paths as calls of the server's region
registry, and its regions as a v1 SharedMemoryStatus (facts §2.1, §3.2).

No sockets here; the registry (pyserver.shared_memory) does the checking.
"""

from __future__ import annotations

from pyserver.errors import invalid_arg
from pyserver.protos import grpc_service_pb2 as gs
from pyserver.protos import server_status_pb2 as ss
from pyserver.shared_memory import SharedMemoryRegistry

_HTTP_PATHS = ("sharedmemorycontrol path must be register/<name>/<key>/<offset>/<byte_size>, "
               "cudaregister/<name>/<byte_size>/<device_id>, unregister/<name>, unregisterall "
               "or status")


def status(registry: SharedMemoryRegistry) -> ss.SharedMemoryStatus:
    """Every registered region, by name."""
    out = ss.SharedMemoryStatus()
    for region in registry.status(None):
        entry = out.shared_memory_region.add(name=region["name"], byte_size=region["byte_size"])
        if "key" in region:
            entry.system_shared_memory.shared_memory_key = region["key"]
            entry.system_shared_memory.offset = region["offset"]
        else:
            entry.cuda_shared_memory.device_id = region["device_id"]
    return out


def grpc_control(registry: SharedMemoryRegistry,
                 request: gs.SharedMemoryControlRequest) -> ss.SharedMemoryStatus | None:
    """Runs one SharedMemoryControlRequest; the status for a ``status``
    request, else None. Raises ServerError."""
    action = request.WhichOneof("shared_memory_control")
    if action == "register":
        register = request.register
        kind = register.WhichOneof("shared_memory_types")
        if kind == "system_shared_memory":
            system = register.system_shared_memory
            registry.register_system(register.name, system.shared_memory_key, system.offset,
                                     register.byte_size)
        elif kind == "cuda_shared_memory":
            cuda = register.cuda_shared_memory
            registry.register_cuda(register.name, cuda.raw_handle, cuda.device_id,
                                   register.byte_size)
        else:
            raise invalid_arg("register needs system_shared_memory or cuda_shared_memory")
        return None
    if action == "unregister":
        if not request.unregister.name:
            raise invalid_arg("unregister needs the name of a region")
        registry.unregister(None, request.unregister.name)
        return None
    if action == "unregister_all":
        registry.unregister(None)
        return None
    if action == "status":
        return status(registry)
    raise invalid_arg("shared memory control request names no action")


def http_control(registry: SharedMemoryRegistry, method: bytes, route: str,
                 body: bytes) -> ss.SharedMemoryStatus | None:
    """Runs the request of path /api/sharedmemorycontrol/<route>; the status
    for ``status``, else None. Raises ServerError."""
    action, _, rest = route.partition("/")
    if action == "status" and not rest:
        _method(method, b"GET")
        return status(registry)
    if action == "unregisterall" and not rest:
        _method(method, b"POST")
        registry.unregister(None)
        return None
    if action == "unregister" and rest and "/" not in rest:
        _method(method, b"POST")
        registry.unregister(None, rest)
        return None
    if action == "register":
        # <name>/<key>/<offset>/<byte_size>: the key keeps its leading '/'.
        name, _, remainder = rest.partition("/")
        fields = remainder.rsplit("/", 2)
        if not name or len(fields) != 3:
            raise invalid_arg(_HTTP_PATHS)
        _method(method, b"POST")
        key, offset, byte_size = fields
        registry.register_system(name, key, _number(offset, "offset"),
                                 _number(byte_size, "byte_size"))
        return None
    if action == "cudaregister":
        fields = rest.split("/")
        if len(fields) != 3 or not fields[0]:
            raise invalid_arg(_HTTP_PATHS)
        _method(method, b"POST")
        registry.register_cuda(fields[0], bytes(body), _number(fields[2], "device_id"),
                               _number(fields[1], "byte_size"))
        return None
    raise invalid_arg(_HTTP_PATHS)


class MethodNotAllowed(Exception):
    """The path exists but not for this HTTP method (405)."""


def _method(method: bytes, wanted: bytes) -> None:
    if method != wanted:
        raise MethodNotAllowed()


def _number(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise invalid_arg(f"{what} must be a non-negative integer")
    return int(text)
