"""Async invocation and idempotency keys: on the real stack where a call runs, in-process for
the bounds (a blocked stand-in server fills the pool without waiting on anything real)."""

import json
import threading
import time

import pytest
from support import deploy, http, invoke

from reference.gateway.calls import Calls
from reference.gateway.metrics import Metrics
from reference.gateway.records import InvocationRecords
from reference.wire.errors import Conflict, Overloaded
from reference.wire.jobs import Outcome

# Prints a value unique to each run: two runs never print the same thing.
UNIQUE = b"import os, sys\nprint(sys.stdin.read(), os.urandom(8).hex())\n"
SLEEPY = b"import sys, time\ntime.sleep(float(sys.stdin.read() or 0))\nprint('slept')\n"


def wait_done(url, call_id, deadline_s=60.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status, body, _ = http("GET", "%s/call/%s" % (url, call_id))
        assert status == 200 and body["call_id"] == call_id, body
        assert body["state"] in ("queued", "running", "done")
        if body["state"] == "done":
            # The top-level ok is the call's, as in its sync answer.
            assert body["ok"] is (body["status"] == 200), body
            return body
        assert body["ok"] is True, body
        time.sleep(0.02)
    raise AssertionError("call %s not done: %s" % (call_id, body))


def test_async_call_answers_at_once_then_gives_the_sync_answer(shared_stack):
    url = shared_stack.url
    deploy(url, "uniq", "python", UNIQUE)
    status, body, _ = http("POST", url + "/invoke?fn=uniq&async=1", json.dumps({"input": "hi"}))
    assert status == 202, body
    assert body["ok"] is True and body["status_url"] == "/call/" + body["call_id"]
    done = wait_done(url, body["call_id"])
    assert done["status"] == 200 and done["output"].startswith("hi ") and done["exit_code"] == 0
    assert {"worker", "duration_ms", "queue_ms", "exec_ms", "cold", "truncated"} <= set(done)
    # A failing function: the call is found and says how it went (ok false, status, error).
    deploy(url, "fails", "python", b"import sys\nsys.exit(3)\n")
    status, body, _ = http("POST", url + "/invoke?fn=fails&async=1", b"")
    done = wait_done(url, body["call_id"])
    assert done["ok"] is False and done["status"] == 500 and done["exit_code"] == 3
    assert "exited with code 3" in done["error"]
    assert http("GET", url + "/call/nope")[0] == 404


def test_idempotency_key_runs_a_sync_call_once(shared_stack):
    url = shared_stack.url
    deploy(url, "once", "python", UNIQUE)
    key = {"Idempotency-Key": "order-42"}
    first = http("POST", url + "/invoke?fn=once", json.dumps({"input": "a"}), key)
    again = http("POST", url + "/invoke?fn=once", json.dumps({"input": "a"}), key)
    assert first[0] == again[0] == 200
    assert again[1]["output"] == first[1]["output"] and again[1]["call_id"] == first[1]["call_id"]
    assert again[2]["Idempotent-Replayed"] == "true"
    # Without a key the same input runs again, and prints something else.
    assert invoke(url, "once", "a")[1]["output"] != first[1]["output"]
    records = http("GET", url + "/function/once/invocations")[1]["invocations"]
    assert len(records) == 2  # the replay did not run the function
    # The same key for another input or another function is refused.
    status, body, _ = http("POST", url + "/invoke?fn=once", json.dumps({"input": "b"}), key)
    assert status == 409 and "Idempotency-Key" in body["error"]
    deploy(url, "other", "python", UNIQUE)
    assert http("POST", url + "/invoke?fn=other", json.dumps({"input": "a"}), key)[0] == 409


def test_idempotent_async_retry_while_running_gets_the_same_call(shared_stack):
    url = shared_stack.url
    deploy(url, "sleepy", "python", SLEEPY)
    key = {"Idempotency-Key": "sleepy-1"}
    status, first, _ = http("POST", url + "/invoke?fn=sleepy&async=1", b"2", key)
    assert status == 202
    status, again, headers = http("POST", url + "/invoke?fn=sleepy&async=1", b"2", key)
    assert status == 202 and again["call_id"] == first["call_id"]
    assert headers["Idempotent-Replayed"] == "true"
    # A sync retry with the key waits for the same call and gets its answer.
    status, sync, _ = http("POST", url + "/invoke?fn=sleepy", b"2", key)
    assert status == 200 and sync["call_id"] == first["call_id"] and sync["output"] == "slept\n"
    assert wait_done(url, first["call_id"])["output"] == "slept\n"
    assert len(http("GET", url + "/function/sleepy/invocations")[1]["invocations"]) == 1


class BlockedServer:
    """A stand-in server whose invocations wait until released: it holds async calls running."""

    def __init__(self):
        self.release = threading.Event()
        self.runs = 0

    def invoke(self, meta, payload):
        self.runs += 1
        self.release.wait(30)
        return Outcome(stdout=payload, worker=0)

    def stats(self):
        return {"strategy": "RR", "queue": 0, "workers": [], "balancer": True}


META = {"id": "f_1", "name": "f", "timeout_ms": 1000, "memory_mb": 64}


def test_async_pool_is_bounded_and_answers_429_past_it():
    server = BlockedServer()
    calls = Calls(server, InvocationRecords(), Metrics(), threads=1, max_pending=2)
    try:
        first, _ = calls.submit(META, b"1")
        calls.submit(META, b"2")
        with pytest.raises(Overloaded) as info:
            calls.submit(META, b"3")
        assert info.value.status == 429 and info.value.extra["retry_after"] >= 1
        server.release.set()
        assert first.done.wait(30) and first.status == 200 and first.body["output"] == "1"
    finally:
        server.release.set()
        calls.close()


def test_idempotency_in_process_rules():
    server = BlockedServer()
    server.release.set()
    calls = Calls(server, InvocationRecords(), Metrics(), keep=2)
    try:
        call, replayed = calls.invoke(META, b"x", key="k")
        assert not replayed and call.status == 200
        again, replayed = calls.invoke(dict(META, id="f_2"), b"x", key="k")  # a new version, same name
        assert replayed and again is call and server.runs == 1
        with pytest.raises(Conflict):
            calls.invoke(dict(META, name="g"), b"x", key="k")
        # Kept calls are bounded: past `keep`, the oldest finished ones (and their keys) go.
        for i in range(3):
            calls.invoke(META, b"%d" % i, key="k%d" % i)
        assert calls.get(call.call_id) is None
        assert not calls.invoke(META, b"x", key="k")[1] and server.runs == 5
    finally:
        calls.close()


def test_async_over_http_shape_in_process(tmp_path):
    from wsgi_app import call

    from reference.functions.storage import Storage
    from reference.gateway.app import make_app

    server = BlockedServer()
    app = make_app(Storage(tmp_path), server)
    assert call(app, "POST", "/deploy", b"print(1)", query="name=f&lang=py").status == 201
    app.calls.max_pending = 0
    answer = call(app, "POST", "/invoke", b"", query="fn=f&async=1")
    assert answer.status == 429 and answer.headers["retry-after"] == "1" and answer.json["ok"] is False
    answer = call(app, "POST", "/invoke", b"", query="fn=f", headers={"Idempotency-Key": "k" * 256})
    assert answer.status == 400
    app.calls.close()


def test_a_polled_call_is_ok_while_it_runs_and_then_as_its_answer_says():
    server = BlockedServer()
    calls = Calls(server, InvocationRecords(), Metrics(), threads=1)
    failing = Calls(StandInFailure(), InvocationRecords(), Metrics(), threads=1)
    try:
        running, _ = calls.submit(META, b"1")
        view = calls.fetch(running.call_id)
        assert view["ok"] is True and view["state"] in ("queued", "running") and "error" not in view
        server.release.set()
        assert running.done.wait(30)
        view = calls.fetch(running.call_id)
        assert view["ok"] is True and view["state"] == "done" and view["status"] == 200
        failed, _ = failing.submit(META, b"x")
        assert failed.done.wait(30)
        view = failing.fetch(failed.call_id)
        assert view["ok"] is False and view["status"] == 500 and view["kind"] == "function_error"
        assert view["error"] == "function exited with code 3" and view["stderr"] == "bad\n"
    finally:
        server.release.set()
        calls.close()
        failing.close()


class StandInFailure:
    """A stand-in server whose function exits 3."""

    def invoke(self, meta, payload):
        return Outcome(stderr=b"bad\n", exit_code=3, worker=0)
