"""Counts that bound the whole server while N front-end workers hold the
pieces: open HTTP connections and request-body bytes in memory.

Each worker owns one 8-byte slot per count in a shared region the engine
creates and passes on by file descriptor; a worker writes only its own
slots and reads the sum of everyone's. Between two workers accepting at
the same instant a bound can be passed by what those accepts add (a sum is
read, then a slot written, with no lock across processes): the bound
stays a bound, exact for one worker, overshot by at most one connection
(or one body reservation) per other worker at once.
"""

from __future__ import annotations

from pyserver.workers.ring import SharedRegion

CONNECTIONS = 0
BODY_BYTES = 1
COUNTS = 2


class SharedTallies:
    """The region of every worker's slots (``COUNTS`` int64 each). The
    engine creates it (``create``) and clears a dead worker's slots
    (``clear``); a worker attaches to it and takes its ``Tally`` views."""

    def __init__(self, region: SharedRegion, workers: int) -> None:
        self.region = region
        self.workers = workers
        self.slots = region.view.cast("q")

    @classmethod
    def create(cls, workers: int) -> "SharedTallies":
        return cls(SharedRegion.create(8 * COUNTS * workers, "pyserver-tallies"), workers)

    @classmethod
    def attach(cls, fd: int, workers: int) -> "SharedTallies":
        return cls(SharedRegion.attach(fd), workers)

    @property
    def fd(self) -> int:
        return self.region.fd

    def tally(self, count: int, worker: int) -> "Tally":
        return Tally(self.slots, count, worker, self.workers)

    def clear(self, worker: int) -> None:
        """Zeroes ``worker``'s slots (it is gone, and so is what it held)."""
        for count in range(COUNTS):
            self.slots[count * self.workers + worker] = 0

    def close(self) -> None:
        self.slots.release()
        self.region.close()


class Tally:
    """One count across every worker, as one worker sees it. Event-loop
    thread of that worker only."""

    __slots__ = ("_slots", "_mine", "_first", "_end")

    def __init__(self, slots: memoryview, count: int, worker: int, workers: int) -> None:
        self._slots = slots
        self._first = count * workers
        self._end = self._first + workers
        self._mine = self._first + worker

    @property
    def mine(self) -> int:
        return self._slots[self._mine]

    def set_mine(self, value: int) -> None:
        self._slots[self._mine] = value

    def total(self) -> int:
        return sum(self._slots[self._first:self._end])
