"""A front-end worker process: ``python -m pyserver.workers.worker
--worker-index=K --worker-count=N --hop-fds=A,B,C,D,E,F -- <pyserver args>``,
started by the engine (pyserver.workers.pool), never by hand.

It serves HTTP (SO_REUSEPORT on the shared port) and gRPC with the
engine's arguments, over a RemoteServer. It stops when the engine says so
(a graceful drain of its own connections), and exits when the engine is
gone. SIGINT is the engine's to handle; SIGTERM stops the worker as the
engine's stop would (the engine then starts another).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import signal
import socket
import sys

from pyserver import cli, log_settings, process_limits
from pyserver.workers.control import AsyncCaller, SyncCaller
from pyserver.workers.remote import RemoteServer
from pyserver.workers.ring import Doorbell, RingReader, RingWriter, SharedRegion
from pyserver.workers.tally import BODY_BYTES, CONNECTIONS, SharedTallies

log = logging.getLogger("pyserver.worker")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """The kernel kills this process when the engine dies, however it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the doorbell's end still stops it
        pass


async def serve(index: int, count: int, fds: list[int], args: argparse.Namespace) -> int:
    requests_fd, responses_fd, bell_fd, sync_fd, control_fd, tallies_fd = fds
    tallies = SharedTallies.attach(tallies_fd, count)
    requests_region = SharedRegion.attach(requests_fd)
    responses_region = SharedRegion.attach(responses_fd)
    sync = SyncCaller(socket.socket(fileno=sync_fd))
    hello = sync.call("hello")
    log_settings.apply(log_settings.LogSettings(**hello["log_settings"]))
    server = RemoteServer(hello, sync, Doorbell(socket.socket(fileno=bell_fd)),
                          RingWriter(requests_region.view), RingReader(responses_region.view),
                          index, count)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_notice(name: str, notice_args: tuple) -> None:
        if name == "record":
            server.deliver_record(notice_args[0])
        elif name == "log-settings":
            log_settings.apply(log_settings.LogSettings(**notice_args[0]))
        elif name in ("stop", "engine-gone"):
            stop.set()

    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=control_fd))
    caller = AsyncCaller(reader, writer, on_notice)
    server.attach(loop, caller)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    http_tls, grpc_tls = cli.tls_settings(args)
    args.allow_metrics = False  # the engine serves the one /metrics
    endpoints = cli.Endpoints(reuse_port=True, announce=False,
                              connection_tally=tallies.tally(CONNECTIONS, index),
                              body_tally=tallies.tally(BODY_BYTES, index))
    try:
        await endpoints.start(server, args, http_tls, grpc_tls)
    except OSError as exc:
        log.error("front-end worker %d: %s", index, exc)
        return 1
    caller.send((0, "listening", (str(index),)))
    waiter = loop.create_task(server.engine_gone.wait())
    stopper = loop.create_task(stop.wait())
    await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
    await endpoints.stop(server)
    server.detach()
    writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--")
    own = argparse.ArgumentParser(prog="pyserver.workers.worker")
    own.add_argument("--worker-index", type=int, required=True)
    own.add_argument("--worker-count", type=int, required=True)
    own.add_argument("--hop-fds", required=True)
    mine = own.parse_args(argv[:split])
    args = cli.build_parser().parse_args(argv[split + 1:])
    _die_with_parent()
    # The flags' settings until the engine's hello brings its current ones.
    log_settings.configure(cli.log_settings_of(args), tag=f"w{mine.worker_index}")
    process_limits.rate_limit_repeated_logs()
    fds = [int(fd) for fd in mine.hop_fds.split(",")]
    return cli.run_with_loop(serve(mine.worker_index, mine.worker_count, fds, args),
                             cli.event_loop_for(args))


if __name__ == "__main__":
    sys.exit(main())
