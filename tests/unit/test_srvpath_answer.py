"""The local executor passes a worker's Outcome frame on without decoding it: the gateway must
get the very bytes it got when the server decoded the frame into an Outcome and encoded it again."""

import asyncio

import pytest

from reference.executors.local import LocalWorkers, Worker
from reference.server.server import answer_of
from reference.wire import framing
from reference.wire.jobs import Outcome
from reference.worker.main import outcome_frame

OUTCOMES = [
    Outcome(stdout=b"hello\n"),
    Outcome(exit_code=7, stdout=b"out", stderr=b"err\xff", truncated=True, cold=True,
            init_ms=12.5, exec_ms=0.123456789),
    Outcome(exit_code=-1, error="timeout", message="function exceeded its 10 ms time limit",
            extra={"limit_ms": 10}),
    Outcome(exit_code=-1, error="memory", message="\u00e9t\u00e9 \"quoted\"", stderr=b"x" * 70000),
]


def decoded_then_encoded(header, body, wid):
    """What the server answered before: the worker's frame decoded into an Outcome, `worker` set."""
    outcome = Outcome.from_wire(header, body)
    outcome.worker = wid
    return outcome


def finished(header, body, wid):
    """What the local executor's future holds once worker `wid` sent this frame."""
    async def main():
        pool = LocalWorkers(1, on_up=None, on_down=None)
        worker = pool.workers[wid] = Worker(wid)
        future = asyncio.get_running_loop().create_future()
        worker.state, worker.current = "busy", (None, future)
        pool._finish(worker, header, body)
        assert worker.state == "idle" and worker.jobs == 1
        return future.result()
    return asyncio.run(main())


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_the_passed_on_frame_is_byte_for_byte_the_decoded_and_encoded_one(outcome):
    # The worker's frame, through the pipe's framing and back.
    sent = framing.encode(*outcome_frame(41, outcome))
    header, body = framing._split(bytearray(sent))
    old_header, old_body = answer_of(decoded_then_encoded(dict(header), body, 3), 1.23456)
    new_header, new_body = answer_of(finished(header, body, 3), 1.23456)
    old_header["req"] = new_header["req"] = 5
    assert framing.encode(new_header, new_body) == framing.encode(old_header, old_body)
    assert "job_id" not in new_header and new_header["worker"] == 3 and new_header["queue_ms"] == 1.235
    back = Outcome.from_wire(new_header, new_body)
    assert (back.stdout, back.stderr, back.exit_code, back.error) == (
        outcome.stdout, outcome.stderr, outcome.exit_code, outcome.error)
