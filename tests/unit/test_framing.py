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


def test_when_a_job_was_handed_over_stays_in_the_process_that_knows_it():
    job = Job(job_id=1, fn_id="f_1", fn_dir="/x/f_1", lang="python")
    job.started = 12.5  # the server's monotonic clock: meaningless anywhere else
    header, _ = job.to_wire()
    assert "started" not in header
    assert Job.from_wire(dict(header, started=99.0), b"").started is None


def test_every_op_built_has_a_handler_on_the_side_that_receives_it():
    from reference.scheduling.balancer import Balancer
    from reference.server.balancer_link import BalancerLink
    from reference.server.server import Server
    from reference.wire import ops

    receivers = {
        Server: [ops.invoke("f_1", "/x/f_1", "python", 100, 64, 1024), ops.health(), ops.stats()],
        Balancer: [ops.register([0, 1]), ops.unregister([1]), ops.submit(1, "f_1"), ops.done(1, 0),
                   ops.stats(req=3)],
        BalancerLink: [ops.assign(1, 0), ops.reject(1, "no worker available"),
                       ops.balancer_stats(3, "RR", 0, [])],
    }
    for receiver, headers in receivers.items():
        for header in headers:
            assert callable(getattr(receiver, "op_%s" % header["op"], None)), (receiver.__name__, header)


def test_op_frames_have_the_fields_their_receivers_read():
    from reference.wire import ops

    assert ops.register([0, 2]) == {"op": "register", "workers": [{"id": 0}, {"id": 2}]}
    assert ops.submit(5, "f_1") == {"op": "submit", "job": 5, "fn": "f_1"}
    assert ops.assign(5, 2) == {"op": "assign", "job": 5, "worker": 2}
    invoke = ops.invoke("f_1", "/x/f_1", "python", 100, 64, 1024)
    job = Job.from_wire(dict(invoke, job_id=9), b"in")
    assert (job.fn_id, job.lang, job.timeout_ms, job.memory_mb, job.output_limit) == ("f_1", "python", 100, 64, 1024)
