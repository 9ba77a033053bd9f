"""The response cache (Triton's): the responses of models whose config says
``response_cache { enable: true }``, kept by the exact request, in front of
the scheduler.

One cache for the whole server, bounded in bytes (``--cache-size``), the
least recently used entries evicted first; an entry larger than the whole
cache is not stored. The key is the model version's load generation, every
input's name, datatype, shape and bytes (the validated tensors, so JSON and
binary data of the same tensor are one key) and the requested outputs with
their classification counts. The key is kept whole as the dict key
(``_core.CacheKey``): the core hashes it at about memory speed (KeyHash,
seeded per process) and the dict compares it byte for byte on a hash match,
so a hash collision can never serve another request's answer.

Entries belong to one loaded version (its ``generation``): they are dropped
when it starts unloading, and a response that completes after that is not
stored, so a reload (same version number, new files) never serves an old
answer.

Thread safety: one lock around the table. Lookups and insertions run on the
event loop; ``drop`` runs on the thread that unloads a model.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict

import numpy as np

from pyserver import _core, tensors
from pyserver.api.plan import InferPayload, InferPlan
from pyserver.api.response import InferOutput
from pyserver.protos import server_status_pb2 as ss

# Bytes charged per entry, and per output, beyond the key and the tensor
# bytes: the table slot and the Python objects that hold an entry.
ENTRY_OVERHEAD_BYTES = 256
OUTPUT_OVERHEAD_BYTES = 160
# Per element of a BYTES tensor (the bytes object and the array's pointer)
# and per class of a classification output.
STRING_OVERHEAD_BYTES = 48
CLASS_OVERHEAD_BYTES = 120

# The plan.cache slot of a plan's memoized key header.
_HEADER_SLOT = "pyserver.response_cache.header"


class _Entry:
    __slots__ = ("outputs", "size", "generation")

    def __init__(self, outputs: list[InferOutput], size: int, generation: int) -> None:
        self.outputs = outputs
        self.size = size
        self.generation = generation


class ResponseCache:
    """An LRU table of responses, at most ``capacity_bytes`` in all."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"a response cache needs a size > 0, not {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[_core.CacheKey, _Entry] = OrderedDict()
        self._keys_of: dict[int, set[_core.CacheKey]] = {}  # generation -> its keys
        self._lock = threading.Lock()
        self.bytes_used = 0
        self.insertions = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- keys ----------------------------------------------------------------------

    def key(self, plan: InferPlan, payload: InferPayload) -> _core.CacheKey | None:
        """The key of a validated request, or None when its inputs alone
        are larger than the cache (then it can neither hit nor be stored)."""
        memo = plan.cache.get(_HEADER_SLOT)
        if memo is None:
            memo = plan.cache[_HEADER_SLOT] = _header(plan)
        header, names = memo
        inputs = payload.inputs
        parts = [header, b""]
        sizes = []
        total = 0
        for name in names:
            array = inputs[name]
            if array.dtype == np.object_:
                data = tensors.serialize_strings(array)
                size = len(data)
            else:
                data = array if array.flags.c_contiguous else np.ascontiguousarray(array)
                size = data.nbytes
            total += size
            if total > self.capacity_bytes:
                return None
            sizes.append(size)
            parts.append(data)
        parts[1] = struct.pack(f"<{len(sizes)}Q", *sizes)
        return _core.CacheKey(b"".join(parts))

    # -- the table -----------------------------------------------------------------

    def lookup(self, key: _core.CacheKey) -> list[InferOutput] | None:
        """The outputs stored under ``key`` (now the most recently used),
        or None. The outputs are shared and read-only."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry.outputs

    def insert(self, version, key: _core.CacheKey, outputs: list[InferOutput]) -> bool:
        """Stores a copy of ``outputs`` (a successful response of
        ``version``) under ``key``, evicting the least recently used entries
        to make room. False when it is not stored: larger than the whole
        cache, or the version is no longer READY (it is unloading)."""
        size = ENTRY_OVERHEAD_BYTES + len(key) + sum(_output_bytes(o) for o in outputs)
        if size > self.capacity_bytes or version.state != ss.MODEL_READY:
            return False
        if key in self._entries:  # an identical request already stored it
            return True
        stored = [_frozen(o) for o in outputs]
        generation = version.generation
        with self._lock:
            # Checked again under the lock: ``drop`` runs after the state
            # turns UNLOADING, so an entry is either refused here or dropped.
            if version.state != ss.MODEL_READY:
                return False
            if key in self._entries:
                return True
            entries = self._entries
            while self.bytes_used + size > self.capacity_bytes:
                old_key, old = entries.popitem(last=False)
                self._forget(old_key, old)
                self.evictions += 1
            entries[key] = _Entry(stored, size, generation)
            self._keys_of.setdefault(generation, set()).add(key)
            self.bytes_used += size
            self.insertions += 1
        return True

    def drop(self, generation: int) -> int:
        """Removes every entry of one loaded version. Returns how many."""
        with self._lock:
            keys = self._keys_of.pop(generation, ())
            for key in keys:
                self.bytes_used -= self._entries.pop(key).size
            return len(keys)

    def _forget(self, key: _core.CacheKey, entry: _Entry) -> None:
        self.bytes_used -= entry.size
        keys = self._keys_of.get(entry.generation)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_of[entry.generation]


def _header(plan: InferPlan) -> tuple[bytes, tuple[str, ...]]:
    """What a plan fixes of its requests' keys: the version's generation,
    each input's name, datatype and shape (by name: the order a request
    lists its inputs in does not matter), each requested output and its
    classification count; and the input names in key order."""
    specs = sorted(plan.inputs, key=lambda i: i.name)
    described = (plan.version.generation,
                 tuple((i.name, i.datatype, i.shape) for i in specs),
                 tuple((o.name, o.cls_count) for o in plan.outputs))
    text = repr(described).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(text)) + text, tuple(i.name for i in specs)


def _output_bytes(output: InferOutput) -> int:
    """The bytes an output is charged in the cache."""
    data = output.data
    size = OUTPUT_OVERHEAD_BYTES + data.nbytes
    if data.dtype == np.object_:
        size += sum(len(x) if isinstance(x, (bytes, str)) else 64 for x in data.reshape(-1))
        size += STRING_OVERHEAD_BYTES * data.size
    if output.classes is not None:
        size += sum(CLASS_OVERHEAD_BYTES + len(c.label)
                    for row in output.classes for c in row)
    return size


def fresh_outputs(stored: list[InferOutput]) -> list[InferOutput]:
    """New output objects over the stored (read-only) arrays, for one
    response: whatever a response's handling marks on its outputs (the
    shared-memory region an output was written to) stays off the entry."""
    return [InferOutput(o.name, o.datatype, o.data, o.classes, o.classified) for o in stored]


def _frozen(output: InferOutput) -> InferOutput:
    """A read-only copy in memory of its own (not a view into the core's
    memory pool, which the response's arrays may be)."""
    data = np.array(output.data, copy=True)
    data.flags.writeable = False
    classes = [list(row) for row in output.classes] if output.classes is not None else None
    return InferOutput(output.name, output.datatype, data, classes, output.classified)
