"""Length-prefixed frames: the one wire format between every pair of platform processes.

A frame is `!II` (header length, body length), a JSON header (a dict), then raw body bytes.
The header is JSON through orjson: each request crosses seven frames, and the standard json
module's encode and decode cost about 9 us a frame against orjson's 1.
Payloads and outputs travel as bytes in the body, never re-encoded inside the JSON. Header and
body go out in one write. End of file between frames is a clean close (`EOFError`); inside a
frame it is a `ProtocolError`. Sizes are checked before the body is read.
"""

import os
import struct

import orjson

from reference.errors import ProtocolError

PREFIX = struct.Struct("!II")
MAX_HEADER = 1 << 20
MAX_BODY = 32 << 20


def encode(header, body=b""):
    """One frame as bytes, ready for a single write."""
    head = orjson.dumps(header, option=orjson.OPT_NON_STR_KEYS)
    if len(head) > MAX_HEADER or len(body) > MAX_BODY:
        raise ProtocolError("frame too large: header %d bytes, body %d bytes" % (len(head), len(body)))
    return b"".join((PREFIX.pack(len(head), len(body)), head, body))


def _check_sizes(prefix):
    head_len, body_len = PREFIX.unpack(prefix)
    if head_len > MAX_HEADER or body_len > MAX_BODY:
        raise ProtocolError("frame too large: header %d bytes, body %d bytes" % (head_len, body_len))
    return head_len, body_len


def _decode_header(raw):
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("frame header is not JSON: %s" % exc) from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not a JSON object")
    return header


def _read_exactly(fd, n, at_boundary):
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            if at_boundary and remaining == n:
                raise EOFError("peer closed the connection")
            raise ProtocolError("connection closed inside a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
        at_boundary = False
    return b"".join(chunks)


def read_frame(fd):
    """Read one frame from a blocking file descriptor (a pipe or a socket's fileno())."""
    head_len, body_len = _check_sizes(_read_exactly(fd, PREFIX.size, True))
    rest = _read_exactly(fd, head_len + body_len, False)
    return _decode_header(rest[:head_len]), rest[head_len:]


class FrameReader:
    """Frames from a blocking socket, read through a buffer: under load one recv brings many
    frames, where `read_frame` costs two reads a frame."""

    CHUNK = 1 << 16

    def __init__(self, sock):
        self.sock, self.buffer = sock, bytearray()

    def _fill(self, n, at_boundary):
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(self.CHUNK, n - len(self.buffer)))
            if not chunk:
                if at_boundary and not self.buffer:
                    raise EOFError("peer closed the connection")
                raise ProtocolError("connection closed inside a frame")
            self.buffer += chunk

    def read_frame(self):
        self._fill(PREFIX.size, True)
        head_len, body_len = _check_sizes(self.buffer[:PREFIX.size])
        end = PREFIX.size + head_len + body_len
        self._fill(end, False)
        header = _decode_header(bytes(self.buffer[PREFIX.size:PREFIX.size + head_len]))
        body = bytes(self.buffer[PREFIX.size + head_len:end])
        del self.buffer[:end]
        return header, body


def write_frame(fd, header, body=b""):
    """Write one frame to a blocking file descriptor, all of it."""
    data = memoryview(encode(header, body))
    while data:
        written = os.write(fd, data)
        data = data[written:]


async def read_frame_async(reader):
    """Read one frame from an asyncio StreamReader."""
    import asyncio

    try:
        prefix = await reader.readexactly(PREFIX.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("peer closed the connection") from None
        raise ProtocolError("connection closed inside a frame") from None
    head_len, body_len = _check_sizes(prefix)
    try:
        rest = await reader.readexactly(head_len + body_len)
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a frame") from None
    return _decode_header(rest[:head_len]), rest[head_len:]
