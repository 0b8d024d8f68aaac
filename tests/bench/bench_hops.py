"""Micro-benchmarks of the hops that need no process: a frame round trip through a pipe, a
strategy decision (submit + done) and a gateway request through the bottle app in-process."""

import io
import os

import pytest
from wsgi_serve import InstantClient

from reference.functions.storage import Storage
from reference.gateway.app import make_app
from reference.scheduling import strategies
from reference.wire import framing
from reference.wire.jobs import Job

FN_DIR = "/srv/functions/hello_1728435600"


@pytest.mark.parametrize("size", [9, 32 << 10], ids=["9B", "32KiB"])
def test_framing_round_trip(benchmark, size):
    """A Job as the server sends it to a worker: encode, write to a pipe, read and decode."""
    header, body = Job(7, "hello_1728435600", FN_DIR, "c", b"x" * size).to_wire()
    r, w = os.pipe()
    frames = framing.FrameReader(r)
    try:
        def round_trip():
            framing.write_frame(w, header, body)
            return frames.read_frame()

        got_header, got_body = benchmark(round_trip)
    finally:
        os.close(r)
        os.close(w)
    assert got_header == header and got_body == body


@pytest.mark.parametrize("name", ["RR", "FIFO"])
def test_strategy_decision(benchmark, name):
    """One job through a strategy with 4 workers: submit (where does it go?) then done."""
    strategy = strategies.create(name)
    for worker in range(4):
        strategy.add_worker(worker)
    jobs = iter(range(1 << 62))

    def decide():
        job = next(jobs)
        worker = strategy.submit(job, "hello_1728435600")
        strategy.done(worker, job)
        return worker

    assert benchmark(decide) in range(4)


def test_gateway_request(benchmark, tmp_path):
    """POST /invoke through the bottle app in-process, the server replaced by an instant answer:
    the cost of routing, lookup, input decoding and the JSON answer, without HTTP or sockets."""
    storage = Storage(str(tmp_path))
    storage.deploy("hello", "python", {"code.py": b"print('hi')\n"}, {"timeout_ms": 5000, "memory_mb": 128})
    app = make_app(storage, InstantClient())
    body = b'{"input": "test data"}'
    status = []

    def start_response(line, headers, exc_info=None):
        status.append(line)

    def request():
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/invoke", "QUERY_STRING": "fn=hello",
                   "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                   "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
                   "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(),
                   "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False}
        return b"".join(app(environ, start_response))

    answer = benchmark(request)
    assert status[-1].startswith("200"), (status[-1], answer)
    assert b"Hello from FAAS!\\ntest data" in answer
