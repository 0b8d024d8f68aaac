"""FrameSink: frames read straight into its buffer, in reads of any size, come out whole and in
order, whatever their size (a frame larger than the buffer included); a frame too large is
refused before its body is read."""

import random

import pytest

from reference.wire import framing
from reference.wire.errors import ProtocolError


def feed(data, sizes):
    got = []
    sink = framing.FrameSink(lambda header, body: got.append((header, body)))
    pos = 0
    while pos < len(data):
        space = sink.space()
        n = min(len(space), next(sizes), len(data) - pos)
        space[:n] = data[pos:pos + n]
        del space
        sink.filled(n)
        pos += n
    return got, sink


@pytest.mark.parametrize("seed", range(5))
def test_frames_come_out_whole_and_in_order_whatever_the_reads(seed):
    rng = random.Random(seed)
    frames = [({"op": "x", "i": i, "pad": "p" * rng.randrange(0, 3000)},
               rng.randbytes(rng.choice([0, 1, 10, 70000, 300000]))) for i in range(40)]
    data = b"".join(framing.encode(header, body) for header, body in frames)
    sizes = iter(lambda: rng.choice([1, 7, 100, 5000, 70000, 1 << 20]), None)
    got, sink = feed(data, sizes)
    assert got == frames
    assert not sink.pending()


def test_a_partial_frame_is_pending_until_its_last_byte():
    data = framing.encode({"op": "x"}, b"body")
    got, sink = feed(data[:-1], iter(lambda: 3, None))
    assert got == [] and sink.pending()
    space = sink.space()
    space[:1] = data[-1:]
    del space
    sink.filled(1)
    assert got == [({"op": "x"}, b"body")] and not sink.pending()


def test_a_frame_too_large_or_not_json_is_a_protocol_error():
    too_large = framing.PREFIX.pack(2, framing.MAX_BODY + 1) + b"{}"
    with pytest.raises(ProtocolError, match="too large"):
        feed(too_large, iter(lambda: 100, None))
    with pytest.raises(ProtocolError, match="not JSON"):
        feed(framing.PREFIX.pack(3, 0) + b"{x}", iter(lambda: 100, None))
