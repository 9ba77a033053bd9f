"""Shared-memory regions for tensors: the server's registry of system
(POSIX ``shm_open``) and CUDA (``cudaIpcMemHandle_t``) regions, and the
resolution of a request's shared-memory references into input buffers and
output destinations.

Front ends translate their wire form into ``SharedMemoryRef``s on
InferInput / RequestedOutput and into the calls of ``SharedMemoryRegistry``;
only the registry opens, maps and checks memory.

Security rules (the class of Triton's CVE-2024-0088):
- off unless the server runs with ``--allow-shared-memory``;
- a key is an shm_open name: a leading '/', no other '/', not '.' or '..',
  no NUL, at most NAME_MAX bytes; it is opened through shm_open (on Linux:
  a file directly in /dev/shm, never following a link) and must be a regular
  object: no other path can be reached through it;
- offset + byte_size is checked (integers, no overflow) against the object's
  real size (fstat) at registration, and every tensor's offset + byte size
  against the region before any access; at each use the object is fstat'ed
  again, so that one shrunk after registration is refused, not read past;
- a name is registered once; errors name only the caller's region, never a
  key or another region;
- the mapping is referenced by every request using the region, so that an
  unregister during a request leaves it mapped until the request is done;
  only the registered window is mapped, nothing is copied whole.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from typing import Any

import numpy as np

from pyserver.api.limits import UINT64_MAX, is_int
from pyserver.api.request import InferenceRequest, InferInput
from pyserver.errors import Code, ServerError, invalid_arg, not_found

try:  # CPython's binding of shm_open(3) (multiprocessing.shared_memory uses it)
    import _posixshmem
except ImportError:  # pragma: no cover - every POSIX CPython has it
    _posixshmem = None

# Regions registered at once (system and CUDA together): each holds a file
# descriptor and a mapping.
MAX_REGIONS = 1024
MAX_NAME_BYTES = 255  # NAME_MAX: the longest shm_open name, and region name
CUDA_IPC_HANDLE_BYTES = 64
# Largest BYTES (string) input copied out of a CUDA region: its size is not
# fixed by its shape, so this bounds the host copy.
MAX_CUDA_STRING_BYTES = 1 << 30
DISABLED_MESSAGE = ("shared memory is disabled on this server: start it with "
                    "--allow-shared-memory to use shared-memory regions")


class SharedMemoryRef:
    """A tensor's place in a registered region, as a request names it."""

    __slots__ = ("region", "offset", "byte_size")

    def __init__(self, region: str, offset: int = 0, byte_size: int = 0) -> None:
        self.region = region
        self.offset = offset
        self.byte_size = byte_size

    def __repr__(self) -> str:
        return f"SharedMemoryRef({self.region!r}, {self.offset}, {self.byte_size})"


class OutputDestination:
    """Where one output of a request is written: a resolved region (kept
    alive by this object) and the reference the request gave."""

    __slots__ = ("name", "region", "ref")

    def __init__(self, name: str, region: "SystemRegion | CudaRegion",
                 ref: SharedMemoryRef) -> None:
        self.name = name
        self.region = region
        self.ref = ref


def check_key(key: Any) -> str:
    """``key`` if it is an shm_open name; ServerError(INVALID_ARG) otherwise.
    The message never repeats the key."""
    if not isinstance(key, str) or not key:
        raise invalid_arg("shared memory key must be a non-empty string")
    encoded = key.encode("utf-8", "surrogatepass")
    if (not key.startswith("/") or "/" in key[1:] or key[1:] in ("", ".", "..")
            or "\0" in key or len(encoded) > MAX_NAME_BYTES + 1):
        raise invalid_arg("shared memory key must be a POSIX shared memory name: one leading "
                          "'/' and a name without '/' or NUL, not '.' or '..', at most "
                          f"{MAX_NAME_BYTES} bytes")
    return key


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise invalid_arg("shared memory region name must be a non-empty string")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES or "\0" in name:
        raise invalid_arg(f"shared memory region name must be at most {MAX_NAME_BYTES} bytes "
                          f"without NUL")
    return name


def _check_uint64(value: Any, what: str) -> int:
    if not is_int(value) or not 0 <= value <= UINT64_MAX:
        raise invalid_arg(f"{what} must be an integer from 0 to {UINT64_MAX}")
    return value


def _check_range(region: str, size: int, offset: Any, byte_size: Any, what: str) -> None:
    """offset and byte_size (integers) lie within a region of ``size``."""
    _check_uint64(offset, f"{what}: shared memory offset")
    _check_uint64(byte_size, f"{what}: shared memory byte size")
    if offset > size or byte_size > size - offset:
        raise invalid_arg(f"{what}: offset {offset} and byte size {byte_size} pass the end of "
                          f"shared memory region '{region}' ({size} bytes)")


def _open_object(key: str) -> int:
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    if _posixshmem is not None:
        return _posixshmem.shm_open(key, flags, 0o600)
    return os.open("/dev/shm" + key, flags)  # pragma: no cover - glibc's shm_open does this


def _open_error(name: str, exc: OSError) -> ServerError:
    reason = {errno.ENOENT: "no such object", errno.EACCES: "permission denied",
              errno.ELOOP: "the key names a link", errno.EISDIR: "the key names a directory",
              errno.EMFILE: "too many open files", errno.ENFILE: "too many open files"
              }.get(exc.errno, "it cannot be opened")
    code = Code.UNAVAILABLE if exc.errno in (errno.EMFILE, errno.ENFILE) else Code.INVALID_ARG
    return ServerError(code, f"failed to open the shared memory object of region '{name}': "
                             f"{reason}")


class SystemRegion:
    """A registered window [offset, offset + byte_size) of a POSIX shared
    memory object, mapped read-write. ``view`` checks every access."""

    __slots__ = ("name", "key", "offset", "byte_size", "registered", "_fd", "_map", "_start")

    def __init__(self, name: str, key: str, offset: int, byte_size: int, fd: int,
                 mapping: mmap.mmap, start: int) -> None:
        self.name = name
        self.key = key
        self.offset = offset
        self.byte_size = byte_size
        self.registered = True
        self._fd = fd
        self._map = mapping
        self._start = start  # where the window starts in the mapping (page alignment)

    @classmethod
    def open(cls, name: str, key: str, offset: int, byte_size: int) -> "SystemRegion":
        """Opens and maps the window. Raises ServerError(INVALID_ARG) for a
        bad key, a missing or non-regular object, or a window past its end."""
        check_key(key)
        _check_uint64(offset, "offset")
        _check_uint64(byte_size, "byte_size")
        if byte_size == 0:
            raise invalid_arg("byte_size must be at least 1")
        try:
            fd = _open_object(key)
        except OSError as exc:
            raise _open_error(name, exc) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise invalid_arg(f"the shared memory object of region '{name}' is not a "
                                  f"shared memory object")
            if offset > info.st_size or byte_size > info.st_size - offset:
                raise invalid_arg(f"offset {offset} and byte_size {byte_size} pass the end of "
                                  f"the shared memory object of region '{name}' "
                                  f"({info.st_size} bytes)")
            start = offset % mmap.ALLOCATIONGRANULARITY
            try:
                mapping = mmap.mmap(fd, start + byte_size, mmap.MAP_SHARED,
                                    mmap.PROT_READ | mmap.PROT_WRITE, offset=offset - start)
            except (OSError, OverflowError, ValueError):
                raise ServerError(Code.INVALID_ARG, f"failed to map the shared memory object "
                                                    f"of region '{name}'") from None
        except BaseException:
            os.close(fd)
            raise
        return cls(name, key, offset, byte_size, fd, mapping, start)

    def view(self, offset: int, byte_size: int, what: str) -> memoryview:
        """A writable view of ``byte_size`` bytes at ``offset`` of the
        region; it keeps the mapping alive. Raises ServerError(INVALID_ARG)
        when the range passes the region or the object shrank below it.
        Works after ``close`` too, for the requests that resolved the region
        before."""
        _check_range(self.name, self.byte_size, offset, byte_size, what)
        try:
            size = os.fstat(self._fd).st_size
        except OSError:
            size = -1
        if size < self.offset + offset + byte_size:
            raise invalid_arg(f"{what}: the shared memory object of region '{self.name}' "
                              f"shrank below its registered size")
        start = self._start + offset
        return memoryview(self._map)[start:start + byte_size]

    def close(self) -> None:
        """Unregisters. The registry forgets the region; requests that
        resolved it keep it (and its mapping) until they are done."""
        self.registered = False

    def __del__(self) -> None:
        mapping = getattr(self, "_map", None)
        if mapping is not None:
            try:
                mapping.close()
            except BufferError:
                pass  # an input view is still out: unmapped with the last one
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            os.close(fd)

    def status(self) -> dict:
        return {"name": self.name, "key": self.key, "offset": self.offset,
                "byte_size": self.byte_size}


class CudaRegion:
    """A registered CUDA allocation of a client (cudaIpcOpenMemHandle). Inputs
    are copied to host memory, outputs copied back; the core checks ranges."""

    __slots__ = ("name", "device_id", "byte_size", "registered", "_ipc")

    def __init__(self, name: str, device_id: int, byte_size: int, ipc: Any) -> None:
        self.registered = True
        self.name = name
        self.device_id = device_id
        self.byte_size = byte_size
        self._ipc = ipc

    @classmethod
    def open(cls, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> "CudaRegion":
        from pyserver import _core
        if not isinstance(raw_handle, (bytes, bytearray)) or \
                len(raw_handle) != CUDA_IPC_HANDLE_BYTES:
            raise invalid_arg(f"raw_handle must be a {CUDA_IPC_HANDLE_BYTES}-byte "
                              f"cudaIpcMemHandle_t")
        if not is_int(device_id) or not 0 <= device_id < 2**31:
            raise invalid_arg("device_id must be a GPU number")
        _check_uint64(byte_size, "byte_size")
        return cls(name, device_id, byte_size,
                   _core.CudaIpcRegion.open(bytes(raw_handle), device_id, byte_size))

    def read(self, offset: int, byte_size: int, what: str) -> bytearray:
        """A host copy of ``byte_size`` bytes at ``offset``; the caller has
        checked ``byte_size`` against the tensor (fetch_cuda_inputs)."""
        _check_range(self.name, self.byte_size, offset, byte_size, what)
        out = bytearray(byte_size)
        self._ipc.read_into(offset, out)
        return out

    def write(self, offset: int, data, what: str) -> None:
        """Copies buffer ``data`` to ``offset`` (the core checks the range)."""
        _check_range(self.name, self.byte_size, offset, memoryview(data).nbytes, what)
        self._ipc.write_from(offset, data)

    def close(self) -> None:
        """Unregisters; the device memory is unmapped when the last request
        holding the region is done."""
        self.registered = False

    def status(self) -> dict:
        return {"name": self.name, "device_id": self.device_id, "byte_size": self.byte_size}


class CudaInput:
    """An input in a CUDA region, not copied yet: the copy waits until the
    request's plan knows how many bytes the tensor has (fetch_cuda_inputs),
    so that a byte size a client declares is never allocated unchecked."""

    __slots__ = ("region", "ref")

    def __init__(self, region: CudaRegion, ref: SharedMemoryRef) -> None:
        self.region = region
        self.ref = ref


def fetch_cuda_inputs(request: InferenceRequest, plan_inputs: list) -> None:
    """Copies the request's CUDA inputs to host memory once their sizes are
    checked against ``plan_inputs`` (the plan's InputPlans, in request
    order). Raises ServerError(INVALID_ARG) for a size that is not the
    tensor's (BYTES tensors: more than MAX_CUDA_STRING_BYTES)."""
    for item, spec in zip(request.inputs, plan_inputs):
        pending = item.data
        if type(pending) is not CudaInput:
            continue
        size = pending.ref.byte_size
        what = f"input '{item.name}'"
        if spec.datatype == "BYTES":
            if size > (spec.byte_size or MAX_CUDA_STRING_BYTES):
                raise invalid_arg(f"{what}: shared memory byte size {size} exceeds "
                                  f"{spec.byte_size or MAX_CUDA_STRING_BYTES} bytes")
        elif size != spec.byte_size:
            raise invalid_arg(f"unexpected size {size} for input '{item.name}', expecting "
                              f"{spec.byte_size}")
        item.data = pending.region.read(pending.ref.offset, size, what)


class SharedMemoryRegistry:
    """The server's regions, by name (one namespace for system and CUDA).
    Runs on the event loop's thread."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._regions: dict[str, SystemRegion | CudaRegion] = {}

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise ServerError(Code.FORBIDDEN, DISABLED_MESSAGE)

    # -- registration -----------------------------------------------------------------

    def register_system(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self._check_enabled()
        self._check_new(_check_name(name))
        self._regions[name] = SystemRegion.open(name, key, offset, byte_size)

    def register_cuda(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        self._check_enabled()
        self._check_new(_check_name(name))
        self._regions[name] = CudaRegion.open(name, raw_handle, device_id, byte_size)

    def _check_new(self, name: str) -> None:
        if name in self._regions:
            raise ServerError(Code.ALREADY_EXISTS,
                              f"shared memory region '{name}' is already registered")
        if len(self._regions) >= MAX_REGIONS:
            raise ServerError(Code.UNAVAILABLE, f"{MAX_REGIONS} shared memory regions are "
                                                f"registered: unregister some first")

    def unregister(self, kind: type | None, name: str = "") -> None:
        """Unregisters region ``name`` of ``kind`` (SystemRegion, CudaRegion,
        None: either), or every one of that kind when ``name`` is empty. An
        unknown name is no error (as Triton)."""
        self._check_enabled()
        if name:
            region = self._regions.get(name)
            if region is not None and (kind is None or type(region) is kind):
                del self._regions[name]
                region.close()
            return
        for key, region in list(self._regions.items()):
            if kind is None or type(region) is kind:
                del self._regions[key]
                region.close()

    def status(self, kind: type | None, name: str = "") -> list[dict]:
        """Status of region ``name`` (NOT_FOUND if there is none of that kind)
        or of every region of ``kind``, sorted by name."""
        self._check_enabled()
        if name:
            region = self._regions.get(name)
            if region is None or (kind is not None and type(region) is not kind):
                raise not_found(f"no {_kind_name(kind)}shared memory region '{name}' is "
                                f"registered")
            return [region.status()]
        return [r.status() for _, r in sorted(self._regions.items())
                if kind is None or type(r) is kind]

    def regions(self, kind: type | None = None) -> list[SystemRegion | CudaRegion]:
        return [r for _, r in sorted(self._regions.items()) if kind is None or type(r) is kind]

    def close(self) -> None:
        for region in self._regions.values():
            region.close()
        self._regions.clear()

    # -- requests -------------------------------------------------------------------

    def _region(self, ref: Any, what: str) -> SystemRegion | CudaRegion:
        if not isinstance(ref, SharedMemoryRef) or not isinstance(ref.region, str):
            raise invalid_arg(f"{what}: shared memory reference needs a region name")
        self._check_enabled()
        region = self._regions.get(ref.region)
        if region is None:
            raise invalid_arg(f"{what}: no shared memory region '{ref.region[:256]}' is "
                              f"registered")
        return region

    def resolve(self, request: InferenceRequest) -> list[OutputDestination]:
        """Replaces ``request.inputs`` by inputs whose shared-memory data is
        a buffer (a view of the mapping) or, for CUDA, a CudaInput that
        fetch_cuda_inputs copies once the plan is known; returns the
        destinations of its shared-memory outputs. Raises
        ServerError(INVALID_ARG) for an unknown region or a range past one."""
        inputs = request.inputs
        if any(getattr(i, "shared_memory", None) is not None for i in inputs):
            resolved = []
            for item in inputs:
                ref = getattr(item, "shared_memory", None)
                if ref is None:
                    resolved.append(item)
                    continue
                what = f"input '{item.name}'"
                region = self._region(ref, what)
                if type(region) is SystemRegion:
                    data = region.view(ref.offset, ref.byte_size, what)
                else:
                    _check_range(region.name, region.byte_size, ref.offset, ref.byte_size, what)
                    data = CudaInput(region, ref)
                resolved.append(InferInput(item.name, item.datatype, item.shape, data,
                                           item.byte_size))
            request.inputs = resolved
        destinations = []
        for out in request.outputs:
            ref = getattr(out, "shared_memory", None)
            if ref is not None:
                what = f"output '{out.name}'"
                region = self._region(ref, what)
                _check_range(region.name, region.byte_size, ref.offset, ref.byte_size, what)
                destinations.append(OutputDestination(out.name, region, ref))
        return destinations


def write_outputs(outputs: list, destinations: list[OutputDestination]) -> None:
    """Writes each output with a destination into its region and marks it
    (``InferOutput.shared_memory``). Raises ServerError(INVALID_ARG) when an
    output does not fit the byte size the request gave for it."""
    by_name = {d.name: d for d in destinations}
    for output in outputs:
        destination = by_name.get(output.name)
        if destination is None:
            continue
        ref = destination.ref
        what = f"output '{output.name}'"
        if output.datatype == "BYTES":
            data = memoryview(output.to_bytes())
        else:
            data = memoryview(np.ascontiguousarray(output.data)).cast("B")
        if data.nbytes > ref.byte_size:
            raise invalid_arg(f"shared memory size {ref.byte_size} given for {what} is too "
                              f"small: the output needs {data.nbytes} bytes")
        region = destination.region
        if type(region) is SystemRegion:
            region.view(ref.offset, data.nbytes, what)[:] = data
        else:
            region.write(ref.offset, data, what)
        output.shared_memory = SharedMemoryRef(ref.region, ref.offset, data.nbytes)


def _kind_name(kind: type | None) -> str:
    return {SystemRegion: "system ", CudaRegion: "CUDA "}.get(kind, "")
