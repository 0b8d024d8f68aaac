"""Length-prefixed frames: the one wire format between every pair of platform processes.

A frame is `!II` (header length, body length), a JSON header (a dict), then raw body bytes.
The header is JSON through orjson: each request crosses seven frames, and the standard json
module's encode and decode cost about 9 us a frame against orjson's 1.
Payloads and outputs travel as bytes in the body, never re-encoded inside the JSON. Header and
body go out in one write. End of file between frames is a clean close (`EOFError`); inside a
frame it is a `ProtocolError`. Sizes are checked before the body is read.
"""

import asyncio
import functools
import os
import struct

import orjson

from reference.wire.errors import ProtocolError

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


CHUNK = 1 << 16


def _split(buffer):
    """Take the first frame out of `buffer` (a bytearray): (header, body), or None while it is
    not all there."""
    if len(buffer) < PREFIX.size:
        return None
    head_len, body_len = _check_sizes(bytes(buffer[:PREFIX.size]))
    end = PREFIX.size + head_len + body_len
    if len(buffer) < end:
        return None
    header = _decode_header(bytes(buffer[PREFIX.size:PREFIX.size + head_len]))
    body = bytes(buffer[PREFIX.size + head_len:end])
    del buffer[:end]
    return header, body


def _ended(buffer):
    """The error for a peer that closed with `buffer` left unread."""
    if buffer:
        return ProtocolError("connection closed inside a frame")
    return EOFError("peer closed the connection")


class FrameReader:
    """Frames from a blocking socket or pipe (`source`: a socket or an fd), read through a
    buffer: one read brings every frame that has arrived. Keep one reader per connection: bytes
    of the next frame may already be in its buffer."""

    def __init__(self, source):
        self.recv = source.recv if hasattr(source, "recv") else functools.partial(os.read, source)
        self.buffer = bytearray()

    def read_frame(self):
        while (frame := _split(self.buffer)) is None:
            chunk = self.recv(CHUNK)
            if not chunk:
                raise _ended(self.buffer)
            self.buffer += chunk
        return frame


class AsyncFrameReader:
    """Frames from an asyncio StreamReader through a buffer of our own: a frame that has already
    arrived is returned without suspending, and one read takes in every frame that is there."""

    def __init__(self, reader):
        self.reader, self.buffer = reader, bytearray()

    async def read_frame(self):
        while (frame := _split(self.buffer)) is None:
            chunk = await self.reader.read(CHUNK)
            if not chunk:
                raise _ended(self.buffer)
            self.buffer += chunk
        return frame


def send_all(sock, data):
    """sock.sendall(data), without gevent's sendall asking the kernel for the socket's buffer
    size on every call (a system call a message): plain sends, looped for the rare short one."""
    view = memoryview(data)
    while view:
        view = view[sock.send(view):]


def write_frame(fd, header, body=b""):
    """Write one frame to a blocking file descriptor, all of it."""
    data = memoryview(encode(header, body))
    while data:
        written = os.write(fd, data)
        data = data[written:]


class FrameSink:
    """Frames parsed out of a buffer that the bytes are read straight into (`recv_into`,
    `os.readv`, an asyncio BufferedProtocol), each handed to `on_frame(header, body)` as soon
    as it is all there: no bytes object made per read, no StreamReader, no task woken per frame.

    `space()` is where the next read goes; `filled(n)` says it brought n bytes, and hands on
    every frame now complete (raising ProtocolError, like `_split`, on a frame too large).
    `pending()` is True while part of a frame is held (the peer closing then is an error)."""

    SIZE = 1 << 18

    def __init__(self, on_frame):
        self.on_frame = on_frame
        self.buffer = bytearray(self.SIZE)
        self.start = self.end = 0    # the unparsed bytes are buffer[start:end]
        self.need = PREFIX.size      # the bytes from `start` that the next frame needs at least

    def space(self):
        """A writable view of the buffer's free part, room for the next frame's rest at least."""
        free = len(self.buffer) - self.end
        if free < CHUNK or self.start + self.need > len(self.buffer):
            # Move the partial frame to the front, into a new buffer if it needs more room.
            # Never resized in place: a view handed out earlier may still be alive.
            rest = self.end - self.start
            size = max(self.SIZE, self.need + CHUNK)
            if size > len(self.buffer) or rest:
                buffer = bytearray(size)
                buffer[:rest] = self.buffer[self.start:self.end]
                self.buffer = buffer
            self.start, self.end = 0, rest
        return memoryview(self.buffer)[self.end:]

    def filled(self, n):
        self.end += n
        buffer, start, end = self.buffer, self.start, self.end
        try:
            while end - start >= PREFIX.size:
                head_len, body_len = PREFIX.unpack_from(buffer, start)
                if head_len > MAX_HEADER or body_len > MAX_BODY:
                    raise ProtocolError("frame too large: header %d bytes, body %d bytes" % (head_len, body_len))
                stop = start + PREFIX.size + head_len + body_len
                if stop > end:
                    self.need = stop - start
                    return
                at = start + PREFIX.size
                with memoryview(buffer) as view:
                    header = _decode_header(view[at:at + head_len])
                    body = view[at + head_len:stop].tobytes() if body_len else b""
                start = self.start = stop
                self.on_frame(header, body)
                buffer, end = self.buffer, self.end
            self.need = PREFIX.size
        finally:
            if self.start == self.end:
                self.start = self.end = 0

    def pending(self):
        return self.end > self.start


class SinkProtocol(asyncio.BufferedProtocol):
    """An asyncio connection whose frames are read straight into a FrameSink and handed to
    `frame(header, body)` from the read callback itself. A subclass says what a frame does, and
    what happens on `broken(exc)` (a frame too large: the connection must close) and on
    `ended(inside_frame)` (the peer closed; inside_frame: in the middle of one). The transport
    closes after `ended`."""

    def __init__(self):
        self.transport = None
        self.sink = FrameSink(self.frame)

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.sink.space()

    def buffer_updated(self, nbytes):
        try:
            self.sink.filled(nbytes)
        except ProtocolError as exc:
            self.broken(exc)

    def eof_received(self):
        self.ended(self.sink.pending())
        return False   # the transport closes

    def frame(self, header, body):
        raise NotImplementedError

    def broken(self, exc):
        self.transport.close()

    def ended(self, inside_frame):
        pass
