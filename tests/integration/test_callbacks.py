"""X-Callback-Url: an async call's result POSTed to a receiver when it is done, retried with
backoff when the receiver fails, bounded, http:// only, never to the gateway's own machine or
link unless FAAS_CALLBACK_HOSTS names the host, and restricted by FAAS_CALLBACK_HOSTS."""

from http import server as http_server
import json
import socket
import threading

import pytest
from support import deploy, http, started
from test_faults import wait_for

from reference.gateway import callbacks as callbacks_mod
from reference.gateway.callbacks import Callbacks, allowed_hosts_from_env
from reference.gateway.calls import Calls
from reference.gateway.metrics import Metrics
from reference.gateway.records import InvocationRecords
from reference.wire.errors import BadRequest, Overloaded
from reference.wire.jobs import Outcome

ECHO = b"import sys\nprint(sys.stdin.read())\n"


class Receiver(http_server.ThreadingHTTPServer):
    """Takes callbacks: answers 500 to the first `failures` POSTs, then 204; keeps what came."""
    daemon_threads = True

    def __init__(self, failures=0):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.failures = failures
        self.posts = []   # (path, headers, parsed body, status answered)
        self.lock = threading.Lock()
        self.url = "http://127.0.0.1:%d" % self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def received(self):
        with self.lock:
            return list(self.posts)


class ReceiverHandler(http_server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with self.server.lock:
            status = 500 if len(self.server.posts) < self.server.failures else 204
            self.server.posts.append((self.path, dict(self.headers), body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver_factory():
    made = []

    def make(failures=0):
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for receiver in made:
        receiver.shutdown()
        receiver.server_close()


@pytest.fixture(scope="module")
def loopback_stack():
    """A stack whose operator lets callbacks reach 127.0.0.1, where the test receivers listen."""
    stack = started(strategy="RR", workers=2, env={"FAAS_CALLBACK_HOSTS": "127.0.0.1"})
    yield stack
    stack.close()


def test_the_result_is_posted_to_the_callback_url(loopback_stack, receiver_factory):
    url, receiver = loopback_stack.url, receiver_factory()
    deploy(url, "echo", "python", ECHO)
    status, accepted, _ = http("POST", url + "/invoke?fn=echo&async=1", json.dumps({"input": "hi"}),
                               {"X-Callback-Url": receiver.url + "/done?x=1"})
    assert status == 202, accepted
    call_id = accepted["call_id"]
    wait_for(lambda: receiver.received())
    path, headers, body, _ = receiver.received()[0]
    assert path == "/done?x=1" and headers["X-Call-Id"] == call_id
    assert headers["Content-Type"] == "application/json"
    view = wait_for(lambda: (lambda v: v if v["callback"]["state"] == "delivered" else None)(
        http("GET", url + "/call/" + call_id)[1]))
    assert view["callback"]["attempts"] == 1 and view["callback"]["url"] == receiver.url + "/done?x=1"
    view.pop("callback")
    assert body == view   # the same JSON as GET /call/ID
    assert body["output"] == "hi\n" and body["ok"] is True and body["state"] == "done"


def test_a_failing_receiver_gets_the_callback_again_until_it_takes_it(loopback_stack, receiver_factory):
    url, receiver = loopback_stack.url, receiver_factory(failures=2)
    deploy(url, "echo2", "python", ECHO)
    status, accepted, _ = http("POST", url + "/invoke?fn=echo2&async=1", json.dumps({"input": "again"}),
                               {"X-Callback-Url": receiver.url})
    assert status == 202
    view = wait_for(lambda: (lambda v: v if v.get("callback", {}).get("state") != "pending" else None)(
        http("GET", url + "/call/" + accepted["call_id"])[1]), timeout=60)
    assert view["callback"]["state"] == "delivered" and view["callback"]["attempts"] == 3
    posts = receiver.received()
    assert [status for *_, status in posts] == [500, 500, 204]
    assert all(body["output"] == "again\n" for _, _, body, _ in posts)


def test_callback_urls_are_checked(shared_stack):
    url = shared_stack.url
    deploy(url, "echo3", "python", ECHO)
    for bad in ("https://example.com/x", "ftp://h/", "http:///nohost", "http://h:99999/", "http://h/a b"):
        status, body, _ = http("POST", url + "/invoke?fn=echo3&async=1", b"", {"X-Callback-Url": bad})
        assert status == 400 and "X-Callback-Url" in body["error"], (bad, body)
    status, body, _ = http("POST", url + "/invoke?fn=echo3", b"", {"X-Callback-Url": "http://h/"})
    assert status == 400 and "async" in body["error"]
    only = Callbacks(senders=0, allowed_hosts=("hooks.example",))
    assert only.check_url("http://hooks.example:8000/x") == "http://hooks.example:8000/x"
    with pytest.raises(BadRequest) as info:
        only.check_url("http://127.0.0.1:22/")
    assert "FAAS_CALLBACK_HOSTS" in info.value.message
    assert allowed_hosts_from_env({"FAAS_CALLBACK_HOSTS": " Hooks.example, [::1] ,"}) == ("hooks.example", "::1")
    assert allowed_hosts_from_env({}) == ()


def test_callbacks_do_not_reach_the_gateways_own_machine_or_link_by_default(shared_stack, receiver_factory):
    """An invoker must not make the gateway POST to its loopback services or a cloud's metadata
    address: refused with 400 (a stack started without FAAS_CALLBACK_HOSTS), the receiver
    listening there gets nothing."""
    url, receiver = shared_stack.url, receiver_factory()
    deploy(url, "echo4", "python", ECHO)
    port = receiver.server_address[1]
    for target in ("http://127.0.0.1:%d/" % port, "http://localhost:%d/" % port, "http://[::1]:%d/" % port,
                   "http://[::ffff:127.0.0.1]:%d/" % port, "http://0.0.0.0:%d/" % port,
                   "http://169.254.169.254/latest/meta-data/", "http://127.1:%d/" % port):
        status, body, _ = http("POST", url + "/invoke?fn=echo4&async=1", b"x", {"X-Callback-Url": target})
        assert status == 400 and "FAAS_CALLBACK_HOSTS" in body["error"], (target, body)
    assert receiver.received() == []
    assert Callbacks(senders=0).check_url("http://10.1.2.3:8000/x") == "http://10.1.2.3:8000/x"


def test_a_name_that_resolves_to_loopback_when_sent_gets_nothing(monkeypatch, receiver_factory):
    """DNS rebinding: a name public when the call is accepted and loopback when the callback
    is sent. Each attempt resolves it again and connects only to an address it checked."""
    receiver = receiver_factory()
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 80))]])
    loopback = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", receiver.server_address[1]))]
    monkeypatch.setattr(callbacks_mod.socket, "getaddrinfo", lambda *a, **k: next(answers, loopback))
    callbacks = Callbacks(senders=1, attempts=2, first_backoff_s=0.01)
    calls = Calls(Quick(), InvocationRecords(), Metrics(), callbacks=callbacks)
    try:
        target = "http://rebind.example:%d/" % receiver.server_address[1]
        first, _ = calls.submit(META, b"1", callback_url=callbacks.check_url(target))
        wait_for(lambda: first.callback["state"] == "failed")
        assert "127.0.0.1" in first.callback["error"] and "loopback" in first.callback["error"], first.callback
        assert receiver.received() == []
    finally:
        calls.close()


class Quick:
    def invoke(self, meta, payload):
        return Outcome(stdout=payload, worker=0)


META = {"id": "f_1", "name": "f", "timeout_ms": 1000, "memory_mb": 64}


def test_callbacks_owed_are_bounded_and_given_up_after_the_attempts():
    # A port bound but not listening: every attempt is refused.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    nowhere = "http://127.0.0.1:%d/" % closed.getsockname()[1]
    callbacks = Callbacks(senders=1, max_pending=1, attempts=2, first_backoff_s=0.01, allowed_hosts=("127.0.0.1",))
    calls = Calls(Quick(), InvocationRecords(), Metrics(), callbacks=callbacks)
    try:
        first, _ = calls.submit(META, b"1", callback_url=nowhere)
        # The first callback is owed until it is given up on: a second call with one is refused ...
        with pytest.raises(Overloaded):
            calls.submit(META, b"2", callback_url=nowhere)
        assert calls.submit(META, b"3")[0]   # ... one without a callback is not
        wait_for(lambda: first.callback["state"] == "failed")
        assert first.callback["attempts"] == 2 and first.callback["error"]
        assert callbacks.owed() == 0
        second, _ = calls.submit(META, b"4", callback_url=nowhere)
        assert second.done.wait(30)
    finally:
        calls.close()
        closed.close()
