"""A bare asyncio + h11 server echoing POST bodies: the HTTP parser's ceiling.

Serves on 127.0.0.1 until stopped. The scenarios that measure pyserver beside it run it by
path (``python perf/scenarios/h11_echo.py --port N``): it needs nothing but h11.
"""

from __future__ import annotations

import argparse
import asyncio

import h11


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.conn = h11.Connection(h11.SERVER)
        self.body = bytearray()

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                body = bytes(self.body)
                self.body = bytearray()
                out = self.conn.send(h11.Response(status_code=200, headers=[
                    (b"content-length", str(len(body)).encode())]))
                out += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
                self.transport.write(out)
                self.conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8090)


def run(args: argparse.Namespace) -> int:
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(cli)
    raise SystemExit(run(cli.parse_args()))
