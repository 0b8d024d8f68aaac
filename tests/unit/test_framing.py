"""Frames between processes: round trips, clean close, truncation and size limits."""

import asyncio
import os
import socket
import struct

import pytest

from reference.wire import framing
from reference.wire.errors import ProtocolError
from reference.wire.jobs import Job, Outcome


def pipe_with(data):
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


def test_round_trip_over_a_pipe_keeps_header_and_binary_body():
    body = bytes(range(256)) * 3
    fd = pipe_with(framing.encode({"op": "invoke", "req": 7}, body) + framing.encode({"op": "x"}))
    try:
        frames = framing.FrameReader(fd)
        assert frames.read_frame() == ({"op": "invoke", "req": 7}, body)
        assert frames.read_frame() == ({"op": "x"}, b"")
        with pytest.raises(EOFError):
            frames.read_frame()
    finally:
        os.close(fd)


def test_end_of_file_inside_a_frame_is_a_protocol_error():
    whole = framing.encode({"op": "invoke"}, b"payload")
    for cut in (3, framing.PREFIX.size + 2, len(whole) - 1):
        fd = pipe_with(whole[:cut])
        try:
            with pytest.raises(ProtocolError):
                framing.FrameReader(fd).read_frame()
        finally:
            os.close(fd)


def test_oversized_frames_are_refused_before_reading_the_body():
    fd = pipe_with(struct.pack("!II", 10, framing.MAX_BODY + 1))  # no body follows: must not wait for it
    try:
        with pytest.raises(ProtocolError, match="too large"):
            framing.FrameReader(fd).read_frame()
    finally:
        os.close(fd)
    with pytest.raises(ProtocolError):
        framing.encode({}, b"x" * (framing.MAX_BODY + 1))


def test_a_header_that_is_not_a_json_object_is_refused():
    for head in (b"[1,2]", b"{not json"):
        fd = pipe_with(struct.pack("!II", len(head), 0) + head)
        try:
            with pytest.raises(ProtocolError):
                framing.FrameReader(fd).read_frame()
        finally:
            os.close(fd)


def test_async_reader_reads_what_the_blocking_writer_wrote():
    a, b = socket.socketpair()

    async def read_two():
        reader, writer = await asyncio.open_connection(sock=b)
        frames = framing.AsyncFrameReader(reader)
        first = await frames.read_frame()
        second = await frames.read_frame()
        with pytest.raises(EOFError):
            await frames.read_frame()
        writer.close()
        return first, second

    big = os.urandom(3 << 20)  # larger than any socket buffer: the write must go out in pieces
    import threading

    def write():
        framing.write_frame(a.fileno(), {"n": 1}, big)
        framing.write_frame(a.fileno(), {"n": 2})
        a.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=write)
    t.start()
    first, second = asyncio.run(read_two())
    t.join()
    a.close()
    assert first == ({"n": 1}, big)
    assert second == ({"n": 2}, b"")


def test_job_and_outcome_survive_the_wire():
    job = Job(job_id=3, fn_id="f_1", fn_dir="/x/f_1", lang="c", input=b"\x00\xffhi", timeout_ms=10)
    assert Job.from_wire(*job.to_wire()) == job
    out = Outcome(exit_code=2, stdout=b"out\x00", stderr=b"err", truncated=True, error="timeout", worker=1)
    assert Outcome.from_wire(*out.to_wire()) == out


def test_buffered_reader_takes_many_frames_from_one_read_and_knows_a_cut_frame():
    r, w = os.pipe()
    frames = [({"n": i}, bytes([i]) * i) for i in range(3)]
    cut = framing.encode({"n": 3}, b"x" * 100)[:-10]
    os.write(w, b"".join(framing.encode(h, b) for h, b in frames) + cut)
    os.close(w)
    reader = framing.FrameReader(r)
    try:
        assert [reader.read_frame() for _ in range(3)] == frames
        with pytest.raises(ProtocolError):
            reader.read_frame()
    finally:
        os.close(r)


def test_buffered_reader_sees_a_clean_close_between_frames():
    a, b = socket.socketpair()
    a.sendall(framing.encode({"op": "one"}))
    a.close()
    reader = framing.FrameReader(b)
    assert reader.read_frame() == ({"op": "one"}, b"")
    with pytest.raises(EOFError):
        reader.read_frame()
    b.close()
