"""Call ids (reference/gateway/calls.py new_call_id): uuid4 hex strings, never repeated, and a
forked child draws its own."""

import os
import uuid

from reference.gateway.calls import RANDOM_READ, new_call_id


def test_call_ids_are_uuid4_hex_and_all_different():
    ids = [new_call_id() for _ in range(3 * RANDOM_READ // 16 + 5)]   # across several reads
    assert len(set(ids)) == len(ids)
    for call_id in ids:
        parsed = uuid.UUID(hex=call_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == call_id


def test_a_forked_child_does_not_repeat_its_parents_next_ids():
    new_call_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, "".join(new_call_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = "".join(new_call_id() for _ in range(4))
    assert len(child) == 128 and child != mine
    assert not {child[i:i + 32] for i in range(0, 128, 32)} & {mine[i:i + 32] for i in range(0, 128, 32)}
