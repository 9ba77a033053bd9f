"""Tensors between the server and a Python model's stub process.

Each direction has one ``SharedRegion``: an anonymous memory file (memfd)
that both processes map. The writer lays the batch's tensors out in it and
sends only small descriptors over the control socket; the reader views them
in place. A region only grows, and only its writer grows it; the reader maps
the new size when a message says so.

A descriptor is ``(name, dtype, shape, offset, nbytes)``; tensors of Python
objects (TYPE_STRING's bytes) travel in the descriptor itself as
``(name, None, shape, None, list_of_bytes)``.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable

import numpy as np

ALIGNMENT = 64
INITIAL_SIZE = 1 << 20


def _aligned(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


class SharedRegion:
    """One memfd mapped into this process."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = 0
        self.map: mmap.mmap | None = None
        self.remap(size)

    @classmethod
    def create(cls, name: str, size: int = INITIAL_SIZE) -> "SharedRegion":
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return cls(fd, size)

    def remap(self, size: int) -> None:
        """Maps ``size`` bytes (after the writer grew the file). Views of the
        old mapping stay valid until they are dropped."""
        if size != self.size:
            self.map = mmap.mmap(self.fd, size)
            self.size = size

    def reserve(self, size: int) -> None:
        """Writer side: makes the region at least ``size`` bytes."""
        if size > self.size:
            new_size = max(size, 2 * self.size)
            os.ftruncate(self.fd, new_size)
            self.remap(new_size)

    def write(self, arrays: Iterable[tuple[str, np.ndarray]]) -> list[tuple]:
        """Lays ``(name, array)`` pairs out from offset 0; returns their descriptors."""
        arrays = list(arrays)
        offsets = []
        total = 0
        for _, array in arrays:
            offsets.append(total)
            if array.dtype != np.object_:
                total += _aligned(array.nbytes)
        self.reserve(total)
        descriptors = []
        for (name, array), offset in zip(arrays, offsets):
            if array.dtype == np.object_:
                descriptors.append((name, None, array.shape, None,
                                    [_as_bytes(v) for v in array.reshape(-1)]))
                continue
            if array.nbytes:
                target = np.ndarray(array.shape, array.dtype, buffer=self.map, offset=offset)
                np.copyto(target, array, casting="no")
            descriptors.append((name, array.dtype.str, array.shape, offset, array.nbytes))
        return descriptors

    def read(self, descriptor: tuple, copy: bool) -> np.ndarray:
        """The array a descriptor names: a read-only view into the region, or
        a private copy."""
        name, dtype, shape, offset, payload = descriptor
        if dtype is None:
            out = np.empty(len(payload), dtype=np.object_)
            out[:] = payload
            return out.reshape(shape)
        if not payload:
            return np.empty(shape, dtype)
        view = np.ndarray(shape, np.dtype(dtype), buffer=self.map, offset=offset)
        if copy:
            return view.copy()
        view.flags.writeable = False
        return view

    def close(self) -> None:
        self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _as_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value) if isinstance(value, (bytearray, memoryview)) else str(value).encode()
