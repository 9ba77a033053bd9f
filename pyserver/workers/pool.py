"""The engine's side of the front-end workers: ``WorkerPool`` starts N
worker processes, serves their hop rings and control sockets on the
engine's event loop, and restarts a worker that dies (its requests still
queued are cancelled, the answers of those running are dropped: its
clients' connections died with it; the other workers keep serving).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
from collections import deque
from typing import Any, Sequence

from pyserver.api.response import InferenceResponse
from pyserver.errors import Code, ServerError, internal
from pyserver.server import InferenceServer
from pyserver.shared_memory import CudaRegion, SystemRegion
from pyserver.workers import hop
from pyserver.workers.control import frame, read_frame
from pyserver.workers.ring import Announcer, Doorbell, RingReader, RingWriter, SharedRegion
from pyserver.workers.tally import SharedTallies

log = logging.getLogger("pyserver.workers")

# Per direction and worker; pages are touched only as used. Tests shrink it
# (PYSERVER_TEST_HOP_RING_BYTES, off unless set) to drive full rings.
RING_BYTES = int(os.environ.get("PYSERVER_TEST_HOP_RING_BYTES") or 32 * 1024 * 1024)
RESTART_DELAY_SECS = 0.5
_KINDS = {None: None, "system": SystemRegion, "cuda": CudaRegion}
_CACHE_ID = "pyserver.workers.cache_id"  # the key of a response cache dict's hop id
_cache_ids = itertools.count(1)


def _cache_id(cache: dict) -> int:
    found = cache.get(_CACHE_ID)
    if found is None:
        found = cache[_CACHE_ID] = next(_cache_ids)
    return found


def _calls(server: InferenceServer) -> dict[str, Any]:
    """What a worker may call, by name."""
    registry = server.shared_memory
    return {
        "hello": lambda: {"id": server.id, "version": server.version,
                          "start_ns": server.start_ns, "options": server.options,
                          "log_settings": server.log_settings()},
        "state": lambda: server.state,
        "draining": lambda: server.draining,
        "live": lambda: server.live,
        "ready": lambda: server.ready,
        "v1_live": lambda: server.v1_live,
        "v1_ready": lambda: server.v1_ready,
        "model_ready": server.model_ready,
        "model_config": server.model_config,
        "model_metadata": server.model_metadata,
        "model_status": server.model_status,
        "statistics": server.statistics,
        "index": server.index,
        "log_settings": server.log_settings,
        "update_log_settings": server.update_log_settings,
        "trace_settings": server.trace_settings,
        "update_trace_settings": server.update_trace_settings,
        "shm.register_system": registry.register_system,
        "shm.register_cuda": registry.register_cuda,
        "shm.unregister": lambda kind, name: registry.unregister(_KINDS[kind], name),
        "shm.status": lambda kind, name: registry.status(_KINDS[kind], name),
    }


def _answer(call_id: int, work, args: Sequence) -> tuple:
    try:
        return (call_id, True, work(*args))
    except ServerError as exc:
        return (call_id, False, (int(exc.code), exc.message))
    except Exception:
        log.exception("a worker's control call failed")
        return (call_id, False, (int(Code.INTERNAL), "internal error"))


class _Answer:
    """on_done of one request from a worker."""

    __slots__ = ("link", "ticket", "done")

    def __init__(self, link: "WorkerLink", ticket: int) -> None:
        self.link = link
        self.ticket = ticket
        self.done = False

    def __call__(self, response: InferenceResponse) -> None:
        self.done = True
        self.link.answer(self.ticket, response)


class WorkerLink:
    """One worker process and its hop: the request ring it writes and the
    engine reads, the response ring the engine writes, the doorbell, and
    the two control sockets. Event-loop thread only."""

    def __init__(self, pool: "WorkerPool", index: int) -> None:
        self.pool = pool
        self.index = index
        self.server = pool.server
        self.loop = pool.loop
        self.calls = pool.calls
        self.requests_region = SharedRegion.create(RING_BYTES, f"pyserver-w{index}-requests")
        self.responses_region = SharedRegion.create(RING_BYTES, f"pyserver-w{index}-responses")
        self.requests = RingReader(self.requests_region.view)
        self.responses = RingWriter(self.responses_region.view)
        bell, worker_bell = socket.socketpair()
        sync, worker_sync = socket.socketpair()
        control, worker_control = socket.socketpair()
        self.doorbell = Doorbell(bell)
        self._sockets = (sync, control)
        self._worker_fds = [self.requests_region.fd, self.responses_region.fd,
                            worker_bell.fileno(), worker_sync.fileno(), worker_control.fileno(),
                            pool.tallies.fd]
        self._worker_sockets = (worker_bell, worker_sync, worker_control)
        self.handles: dict[int, Any] = {}
        self.backlog: deque = deque()
        self.announcer = Announcer(self.loop, self.doorbell,
                                   lambda: (self.responses.tail, self.requests.head),
                                   lambda: bool(self.backlog), RING_BYTES // 4)
        self.closed = False
        self.listening = self.loop.create_future()
        self.proc: subprocess.Popen | None = None
        self._tasks: list[asyncio.Task] = []
        self._control_writer: asyncio.StreamWriter | None = None

    def start(self, argv: Sequence[str]) -> None:
        # The engine's own interpreter flags (-P, -I, -O...): a worker imports
        # pyserver from where the engine did.
        command = [sys.executable, *subprocess._args_from_interpreter_flags(),
                   "-m", "pyserver.workers.worker",
                   f"--worker-index={self.index}", f"--worker-count={self.pool.count}",
                   f"--hop-fds={','.join(map(str, self._worker_fds))}", "--", *argv]
        self.proc = subprocess.Popen(command, pass_fds=self._worker_fds, stdin=subprocess.DEVNULL)
        for sock in self._worker_sockets:
            sock.close()
        self.loop.add_reader(self.doorbell.fileno(), self._on_doorbell)
        sync, control = self._sockets
        self._tasks = [self.loop.create_task(self._serve_sync(sync)),
                       self.loop.create_task(self._serve_control(control)),
                       self.loop.create_task(self._watch())]

    # -- the hop ---------------------------------------------------------------------

    def _on_doorbell(self) -> None:
        positions = self.doorbell.received()
        if self.doorbell.closed:
            self.lost("its hop closed")
            return
        if positions is None:
            return
        tail, head, self.announcer.peer_waiting = positions
        self.responses.head = head
        for record in self.requests.records(tail):
            self.take(record)
        backlog = self.backlog
        while backlog and self.responses.write(*backlog[0]):
            backlog.popleft()
        self.announcer.schedule()

    def take(self, record: memoryview) -> None:
        """Runs one request record (or cancels, for a CANCEL record)."""
        try:
            kind, ticket, request = hop.decode_request(record)
        except Exception:
            log.exception("worker %d sent a record that does not decode", self.index)
            return
        if kind == hop.CANCEL:
            handle = self.handles.get(ticket)
            if handle is not None:
                handle.cancel()
            return
        answer = _Answer(self, ticket)
        handle = self.server.infer(request, answer)
        if not answer.done:
            self.handles[ticket] = handle

    def answer(self, ticket: int, response: InferenceResponse) -> None:
        self.handles.pop(ticket, None)
        if self.closed:
            return
        try:
            parts, size = hop.encode_response(ticket, response, _cache_id(response.cache))
        except Exception:
            log.exception("encoding a response for worker %d failed", self.index)
            parts, size = hop.encode_response(ticket, InferenceResponse.failure(
                response.model, response.version, response.id, internal("internal error")), 0)
        if size > self.responses.largest_record():
            if self._control_writer is not None:
                self._control_writer.write(frame((0, "record", (b"".join(map(bytes, parts)),))))
            return
        if self.backlog or not self.responses.write(parts, size):
            self.backlog.append((parts, size))
        self.announcer.schedule()  # the new tail, or that records wait for room

    # -- control -----------------------------------------------------------------------

    async def _serve_sync(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        calls = self.calls
        while True:
            message = await read_frame(reader)
            if message is None:
                break
            call_id, name, args = message
            work = calls.get(name)
            if work is None:
                writer.write(frame((call_id, False, (int(Code.INTERNAL), "unknown call"))))
                continue
            try:
                writer.write(frame(_answer(call_id, work, args)))
            except Exception:  # an answer that does not pickle: a fault of ours
                log.exception("answering a worker's '%s' call failed", name)
                writer.write(frame((call_id, False, (int(Code.INTERNAL), "internal error"))))
        writer.close()
        self.lost("its control channel closed")

    async def _serve_control(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        self._control_writer = writer
        while True:
            message = await read_frame(reader)
            if message is None:
                break
            call_id, name, args = message
            if call_id == 0:
                if name == "record":
                    self.take(memoryview(args[0]))
                elif name == "listening":
                    if not self.listening.done():
                        self.listening.set_result(args[0] if args else "")
                continue
            self.loop.create_task(self._model_control(writer, call_id, name, args))
        self._control_writer = None
        writer.close()

    async def _model_control(self, writer: asyncio.StreamWriter, call_id: int, name: str,
                             args: Sequence) -> None:
        if name not in ("load_model", "unload_model"):
            answer = (call_id, False, (int(Code.INTERNAL), "unknown call"))
        else:
            try:
                await getattr(self.server, name)(*args)
                answer = (call_id, True, None)
            except ServerError as exc:
                answer = (call_id, False, (int(exc.code), exc.message))
            except Exception:
                log.exception("model control from worker %d failed", self.index)
                answer = (call_id, False, (int(Code.INTERNAL), "internal error"))
        if not writer.is_closing():
            writer.write(frame(answer))

    def notify(self, name: str, *args: Any) -> None:
        if self._control_writer is not None and not self._control_writer.is_closing():
            self._control_writer.write(frame((0, name, args)))

    async def _watch(self) -> None:
        code = await self.loop.run_in_executor(None, self.proc.wait)
        self.lost(f"it exited with {code}")

    # -- the end -----------------------------------------------------------------------

    def lost(self, why: str) -> None:
        """The worker is gone (or going): its queued requests are
        cancelled, answers still to come are dropped."""
        if self.closed:
            return
        self.closed = True
        self.announcer.stopped = True
        try:
            self.loop.remove_reader(self.doorbell.fileno())
            self.loop.remove_writer(self.doorbell.fileno())
        except (ValueError, OSError):
            pass
        handles, self.handles = self.handles, {}
        for handle in handles.values():
            handle.cancel()
        if not self.listening.done():
            self.listening.set_exception(RuntimeError(f"worker {self.index} failed to start: "
                                                      f"{why}"))
        self.pool.link_lost(self, why)

    def close(self) -> None:
        for task in self._tasks:
            if not task.done() and task is not asyncio.current_task():
                task.cancel()
        self.doorbell.sock.close()
        for sock in self._sockets:
            sock.close()
        self.requests.view = self.responses.view = None
        self.requests_region.close()
        self.responses_region.close()


class WorkerPool:
    """N front-end worker processes for ``server``, each started with the
    engine's own command-line arguments ``argv``. Event-loop thread only."""

    def __init__(self, server: InferenceServer, count: int, argv: Sequence[str]) -> None:
        self.server = server
        self.count = count
        self.argv = list(argv)
        self.loop = asyncio.get_running_loop()
        self.calls = _calls(server)
        self.links: list[WorkerLink | None] = [None] * count
        # Every worker's open connections and held body bytes, so that the
        # bounds on them hold for the server, not per worker (pool-owned).
        self.tallies = SharedTallies.create(count)
        self.stopping = False
        self.restarts = 0
        server.log_settings_listeners.append(self._tell_log_settings)

    async def start(self, timeout: float = 60.0) -> None:
        """Starts every worker and waits until each listens. Raises
        RuntimeError with the reason when one fails to start."""
        for index in range(self.count):
            self._spawn(index)
        await asyncio.wait_for(asyncio.gather(*(link.listening for link in self.links)),
                               timeout)

    def _tell_log_settings(self, settings) -> None:
        for link in self.links:
            if link is not None:
                link.notify("log-settings", settings.as_dict())

    def _spawn(self, index: int) -> WorkerLink:
        link = self.links[index] = WorkerLink(self, index)
        link.start(self.argv)
        return link

    def link_lost(self, link: WorkerLink, why: str) -> None:
        self.tallies.clear(link.index)
        if self.stopping or not link.listening.done() or link.listening.exception():
            self.loop.call_soon(link.close)
            return
        log.error("front-end worker %d (pid %d) is gone (%s): restarting it", link.index,
                  link.proc.pid if link.proc else -1, why)
        self.loop.call_soon(link.close)
        if link.proc is not None and link.proc.poll() is None:
            link.proc.kill()
        self.restarts += 1
        self.loop.call_later(RESTART_DELAY_SECS, self._restart, link.index)

    def _restart(self, index: int) -> None:
        if self.stopping:
            return
        self.tallies.clear(index)  # and what the old process wrote as it was killed
        link = self._spawn(index)
        link.listening.add_done_callback(lambda f: f.exception() is None and log.info(
            "front-end worker %d restarted (pid %d)", index, link.proc.pid))

    def pids(self) -> list[int]:
        return [link.proc.pid for link in self.links if link is not None and link.proc]

    def begin_stop(self) -> None:
        """Tells every worker to stop accepting and to finish what it has."""
        self.stopping = True
        for link in self.links:
            if link is not None and not link.closed:
                link.notify("stop")

    async def wait_stopped(self, timeout: float) -> None:
        """Waits for the workers to exit (kills those still there after
        ``timeout``)."""
        procs = [link.proc for link in self.links if link is not None and link.proc]
        deadline = self.loop.time() + timeout
        for proc in procs:
            while proc.poll() is None and self.loop.time() < deadline:
                await asyncio.sleep(0.02)
            if proc.poll() is None:
                log.error("front-end worker pid %d did not stop in time: killing it", proc.pid)
                proc.kill()
        for link in self.links:
            if link is not None and not link.closed:
                link.closed = True
                link.close()
        self.tallies.close()
