"""A trivial HTTP/1.1 server that answers every request like the gateway's /invoke, as fast as
Python can: uvloop, one protocol object per connection, a canned answer. The injector's
benchmark drives it to show how much more than the stack the injector can send.

    python trivial_server.py PORT     (prints "ready" once it listens)
"""

import asyncio
import sys

import uvloop

BODY = b'{"ok":true,"output":"hi","worker":0,"cold":false}'
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY


class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(ANSWER)


async def main(port):
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
