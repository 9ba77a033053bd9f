"""A single-producer single-consumer byte ring in shared memory, and the
doorbell that publishes its positions.

Positions are cumulative byte counts (they only grow; the offset in the
ring is the position modulo its capacity). The writer owns ``tail``, the
reader owns ``head``. Neither side reads the other's position from shared
memory: each sends its positions through the doorbell socket after it has
written or consumed, and the socket's send/receive pair orders the memory
accesses on every architecture (a record's bytes are written before the
doorbell that announces them is sent, and read after it is received).

A new tail is always announced (the other side has records to read); a new
head only once it moved a quarter of the ring, so that a request and its
answer cost one wake-up of each side, not two, or at once while the other
side says it waits for room. A writer without room for its next record
says so (a flag beside its tail): the head it knows may be held back by up
to a quarter of the ring, and a record that skips the ring's end may need
more room than the reader has left unread.

A record is an 8-byte little-endian length, then its bytes, padded to 8.
A record that would cross the end of the ring starts at offset 0 instead;
a WRAP length marks the skipped tail (at least 8 bytes are always left,
since records are 8-aligned).
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
from typing import Callable, Iterator, Sequence

_LENGTH = struct.Struct("<Q")
_POSITIONS = struct.Struct("<QQ")  # (my outgoing ring's tail, my incoming ring's head)
_WAITING = 1 << 63  # in the tail: records wait for room in my outgoing ring
WRAP = (1 << 64) - 1
DOORBELL_BYTES = _POSITIONS.size


def _padded(size: int) -> int:
    return (size + 7) & ~7


class SharedRegion:
    """``size`` bytes of anonymous shared memory (a memfd), mapped. The file
    descriptor is inherited by a worker process, which maps the same pages
    with ``SharedRegion.attach``. Owns the mapping and the descriptor."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size)
        self.view = memoryview(self.map)

    @classmethod
    def create(cls, size: int, name: str = "pyserver-hop") -> "SharedRegion":
        fd = os.memfd_create(name, 0)  # not inheritable until passed on purpose
        try:
            os.ftruncate(fd, size)
            return cls(fd, size)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, fd: int) -> "SharedRegion":
        return cls(fd, os.fstat(fd).st_size)

    def close(self) -> None:
        self.view.release()
        try:
            self.map.close()
        except BufferError:  # a view handed out is still alive; the pages go with it
            pass
        os.close(self.fd)


class RingWriter:
    """The producing side of a ring over ``view`` (its length is the
    capacity, a multiple of 8). Not thread-safe: one event loop writes."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.capacity = len(view)
        self.tail = 0
        self.head = 0  # the reader's position as last announced

    def largest_record(self) -> int:
        """Records bigger than this never fit (callers send them another way)."""
        return self.capacity // 2 - _LENGTH.size

    def write(self, parts: Sequence, size: int) -> bool:
        """Appends one record made of ``parts`` (buffers whose lengths sum to
        ``size``); False, writing nothing, when the ring has no room now."""
        need = _LENGTH.size + _padded(size)
        capacity = self.capacity
        tail = self.tail
        offset = tail % capacity
        skip = capacity - offset if offset + need > capacity else 0
        if tail + skip + need - self.head > capacity:
            return False
        view = self.view
        if skip:
            _LENGTH.pack_into(view, offset, WRAP)
            tail += skip
            offset = 0
        _LENGTH.pack_into(view, offset, size)
        at = offset + _LENGTH.size
        for part in parts:
            n = len(part) if type(part) is not memoryview else part.nbytes
            view[at:at + n] = part if type(part) is not memoryview or part.format == "B" \
                else part.cast("B")
            at += n
        self.tail = tail + need
        return True


class RingReader:
    """The consuming side: yields the records up to a tail the writer
    announced. A record's view is valid until ``head`` passes it, i.e.
    until the caller announces the new head; copy what must outlive that."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.capacity = len(view)
        self.head = 0

    def records(self, tail: int) -> Iterator[memoryview]:
        view = self.view
        capacity = self.capacity
        while self.head < tail:
            offset = self.head % capacity
            (size,) = _LENGTH.unpack_from(view, offset)
            if size == WRAP:
                self.head += capacity - offset
                continue
            start = offset + _LENGTH.size
            self.head += _LENGTH.size + _padded(size)
            yield view[start:start + size]


class Doorbell:
    """One end of the doorbell socket (a non-blocking stream socket pair).
    ``ring`` sends this side's positions and whether it waits for room;
    ``received`` reads what the other side sent and returns the latest
    (older ones are superseded, positions only grow). Event-loop thread only."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._partial = b""
        self._unsent = False
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def ring(self, tail: int, head: int, waiting: bool = False) -> bool:
        """Sends (tail, head, waiting). False when the socket is full: the
        caller rings again once it drains (``add_writer``); the newest
        positions are what counts, so nothing is queued."""
        try:
            self.sock.send(_POSITIONS.pack(tail | _WAITING if waiting else tail, head))
        except BlockingIOError:
            self._unsent = True
            return False
        except OSError:
            self.closed = True
            return False
        self._unsent = False
        return True

    @property
    def unsent(self) -> bool:
        return self._unsent

    def received(self) -> tuple[int, int, bool] | None:
        """The newest (tail, head, waiting) the other side sent, None when
        nothing complete arrived. Sets ``closed`` when the other side is gone."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            self.closed = True
            return None
        if not data:
            self.closed = True
            return None
        data = self._partial + data if self._partial else data
        whole = len(data) - len(data) % DOORBELL_BYTES
        self._partial = data[whole:]
        if not whole:
            return None
        tail, head = _POSITIONS.unpack_from(data, whole - DOORBELL_BYTES)
        return tail & ~_WAITING, head, bool(tail & _WAITING)


class Announcer:
    """Rings ``doorbell`` with ``positions()`` and ``waiting()`` at most once
    per event-loop turn, however many records were written or consumed in
    it: when the tail or ``waiting`` changed, or the head moved ``slack``
    bytes (a quarter of the incoming ring) since it was last announced, or
    moved at all while ``peer_waiting`` (the other side's latest ring said it
    waits for room; the receiving code sets it). Never with nothing new: a
    ring answered by a ring that says nothing new would bounce between the
    two sides for ever. Retries when the socket is full. ``stopped`` ends it.
    Event-loop thread only."""

    def __init__(self, loop, doorbell: Doorbell, positions: Callable[[], tuple[int, int]],
                 waiting: Callable[[], bool], slack: int) -> None:
        self.loop = loop
        self.doorbell = doorbell
        self.positions = positions
        self.waiting = waiting
        self.slack = slack
        self.peer_waiting = False
        self.stopped = False
        self._scheduled = False
        self._announced: tuple[int, int, bool] = (0, 0, False)

    def schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._ring)

    def _ring(self) -> None:
        self._scheduled = False
        if self.stopped:
            return
        tail, head = self.positions()
        waiting = self.waiting()
        last_tail, last_head, last_waiting = self._announced
        if tail == last_tail and waiting == last_waiting and (
                head == last_head or (head - last_head < self.slack and not self.peer_waiting)):
            return
        if self.doorbell.ring(tail, head, waiting):
            self._announced = (tail, head, waiting)
        elif self.doorbell.unsent:
            self.loop.add_writer(self.doorbell.fileno(), self._ring_again)

    def _ring_again(self) -> None:
        self.loop.remove_writer(self.doorbell.fileno())
        self._ring()
