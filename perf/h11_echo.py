"""The parser ceiling: a bare asyncio + h11 server that echoes POST bodies.

    python perf/h11_echo.py --port 8090
"""

import argparse
import asyncio

import h11


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.conn = h11.Connection(h11.SERVER)
        self.body = bytearray()

    def data_received(self, data):
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


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8090)
    asyncio.run(main(p.parse_args().port))
