"""POST /invoke without bottle (reference/gateway/fast.py) against the bottle route it stands in
for: two real stacks, one with the fast path and one with FAAS_GATEWAY_FAST=0, sent the same
raw requests, answer alike (status line, headers in order, JSON keys in order and values), but
for what differs from call to call (ids, timings, the date). And in-process, on a real server:
which requests the fast path takes and which it leaves to bottle, and that it takes them at all.
"""

import json
import socket

import pytest
from support import deploy, started

from reference.config import LIMITS
from reference.functions.storage import Storage
from reference.gateway.app import make_app
from reference.gateway.client import ServerClient

ECHO = b"import sys\nprint(sys.stdin.read())\n"
FAILS = b"import sys\nsys.stderr.write('bad input\\n')\nsys.exit(3)\n"
SLOW = b"import time\ntime.sleep(5)\n"
# Header values and body fields that differ from call to call.
CHANGING_HEADERS = {"date", "x-call-id", "x-queue-ms", "x-exec-ms", "content-length"}
CHANGING_FIELDS = {"duration_ms", "queue_ms", "init_ms", "exec_ms", "cold", "worker", "call_id", "status_url"}


@pytest.fixture(scope="module")
def stacks():
    fast = started(workers=1)
    slow = None
    try:
        slow = started(workers=1, env={"FAAS_GATEWAY_FAST": "0"})
        for stack in (fast, slow):
            deploy(stack.url, "echo", "python", ECHO)
            deploy(stack.url, "fails", "python", FAILS)
            deploy(stack.url, "slow", "python", SLOW, timeout_ms=300)
        yield fast, slow
    finally:
        fast.close()
        if slow is not None:
            slow.close()


def exchange(port, request):
    """One raw request on a new connection: (status line, [(name, value)], body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], [tuple(line.split(": ", 1)) for line in lines[1:]], body


def post(target, body=b"", headers=()):
    lines = ["POST %s HTTP/1.1" % target, "Host: 127.0.0.1", "Content-Length: %d" % len(body),
             "Connection: close"] + ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def comparable(answer):
    status, headers, body = answer
    headers = [(n, "*" if n.lower() in CHANGING_HEADERS else v) for n, v in headers]
    doc = json.loads(body)
    return status, headers, [(k, "*" if k in CHANGING_FIELDS else v) for k, v in doc.items()]


REQUESTS = [
    ("a plain call", post("/invoke?fn=echo", json.dumps({"input": "hi"}).encode())),
    ("a raw body", post("/invoke?fn=echo", b"not json at all")),
    ("a JSON input", post("/invoke?fn=echo", b'{"input": {"b": [1, 2.5, null]}, "other": 1}')),
    ("a big integer", post("/invoke?fn=echo", b'{"input": 123456789012345678901234567890}')),
    ("UTF-8 text", post("/invoke?fn=echo", json.dumps({"input": "h\u00e9llo \u2603"}).encode())),
    ("a lone surrogate", post("/invoke?fn=echo", b'{"input": "\\ud800"}')),
    ("an empty body", post("/invoke?fn=echo")),
    ("a failing function", post("/invoke?fn=fails", b"x")),
    ("a timeout", post("/invoke?fn=slow")),
    ("an unknown function", post("/invoke?fn=ghost", b"x")),
    ("no fn", post("/invoke", b"x")),
    ("an empty fn", post("/invoke?fn=", b"x")),
    ("an escaped fn", post("/invoke?fn=%65cho", b"x")),
    ("another parameter", post("/invoke?fn=echo&x=1", b"x")),
    ("async", post("/invoke?fn=echo&async=1", b"x")),
    ("an idempotency key", post("/invoke?fn=echo", b"x", [("Idempotency-Key", "k1")])),
    ("a callback without async", post("/invoke?fn=echo", b"x", [("X-Callback-Url", "http://127.0.0.1:1/")])),
    ("another Host", post("/invoke?fn=echo", b"x", [("Host", "evil.example")]).replace(
        b"Host: 127.0.0.1\r\n", b"", 1)),
    ("GET on /invoke", post("/invoke?fn=echo").replace(b"POST", b"GET", 1)),
    ("kept alive", post("/invoke?fn=echo", b"x").replace(b"Connection: close\r\n", b"")),
    ("HTTP/1.0 kept alive", post("/invoke?fn=echo", b"x").replace(b"HTTP/1.1", b"HTTP/1.0").replace(
        b"Connection: close", b"Connection: keep-alive")),
    ("HTTP/1.0", post("/invoke?fn=echo", b"x").replace(b"HTTP/1.1", b"HTTP/1.0").replace(
        b"Connection: close\r\n", b"")),
]


@pytest.mark.parametrize("what, request_bytes", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_the_fast_path_answers_as_bottle_does(stacks, what, request_bytes):
    fast, slow = stacks
    ours, bottles = exchange(fast.port, request_bytes), exchange(slow.port, request_bytes)
    assert comparable(ours) == comparable(bottles)
    if what in ("a plain call", "a raw body", "an empty body", "UTF-8 text", "kept alive", "HTTP/1.0"):
        assert ours[0] == "HTTP/1.1 200 OK", ours


@pytest.fixture
def app_on_a_real_server(stacks, tmp_path):
    """An in-process gateway app over the fast stack's server and functions (no store)."""
    fast, _ = stacks
    client = ServerClient(fast.server_sock, LIMITS)
    apps = []

    def build(**options):
        apps.append(make_app(Storage(fast.functions_dir, LIMITS), client, durable=False, **options))
        return apps[-1]

    yield build
    for app in apps:
        app.calls.close()
    client.close()


def headers_of(*pairs):
    return [(n.encode(), v.encode()) for n, v in pairs]


def test_the_fast_path_takes_plain_calls_and_leaves_the_rest_to_bottle(app_on_a_real_server):
    fast = app_on_a_real_server().fast
    host = headers_of(("Host", "127.0.0.1"))
    status, headers, body = fast("POST", b"/invoke", b"fn=echo", host, b'{"input": "hi"}')
    assert status == "200 OK" and json.loads(body)["output"] == "hi\n"
    assert [n for n, _ in headers][-3:] == ["Content-Type", "Content-Length", "X-Content-Type-Options"]
    assert fast("POST", b"/invoke", b"fn=fails", host, b"")[0] == "500 Internal Server Error"   # it ran: ours
    declined = [
        ("GET", b"/invoke", b"fn=echo", host, b""),
        ("POST", b"/invoke/", b"fn=echo", host, b""),
        ("POST", b"/invoke", b"fn=echo&async=1", host, b""),
        ("POST", b"/invoke", b"fn=ghost", host, b""),
        ("POST", b"/invoke", None, host, b""),
        ("POST", b"/invoke", b"fn=echo", headers_of(("Host", "evil.example")), b""),
        ("POST", b"/invoke", b"fn=echo", host + host, b""),
        ("POST", b"/invoke", b"fn=echo", host + headers_of(("idempotency-key", "k")), b""),
        ("POST", b"/invoke", b"fn=echo", host, b'{"input": "\\udfff"}'),
        ("POST", b"/invoke", b"fn=echo", host, b"x" * (LIMITS.payload_bytes + 1)),
    ]
    for request in declined:
        assert fast(*request) is None, request[:3]


def test_the_fast_path_asks_for_the_invoke_key(app_on_a_real_server):
    fast = app_on_a_real_server(invoke_key="s3cret", api_key="admin").fast
    host = headers_of(("Host", "127.0.0.1"))
    for authorization in (None, "Bearer wrong", "s3cret"):
        extra = headers_of(("Authorization", authorization)) if authorization else []
        assert fast("POST", b"/invoke", b"fn=echo", host + extra, b"x") is None, authorization
    for key in ("s3cret", "admin"):
        answer = fast("POST", b"/invoke", b"fn=echo", host + headers_of(("Authorization", "Bearer " + key)), b"x")
        assert answer[0] == "200 OK", key
