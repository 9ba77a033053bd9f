"""The stub's side of the shared memory between the core and a Python
model's stub process (the core's side is csrc/python_stub_runtime.cc).

Each direction has one ``SharedRegion``: an anonymous memory file (memfd)
that both processes map. The writer lays the batch's tensors out in it and
sends only small descriptors over the control socket; the reader views them
in place. A region only grows, and only its writer grows it; the reader maps
the new size when a message says so.

What lies where is said by the messages of csrc/python_stub_runtime.h.
"""

from __future__ import annotations

import mmap
import os

ALIGNMENT = 64
INITIAL_SIZE = 1 << 20


def aligned(n: int) -> int:
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

    def close(self) -> None:
        self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

