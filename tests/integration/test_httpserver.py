"""The gateway's HTTP server (reference/gateway/http/server.py) in a real process, spoken to over raw
sockets: keep-alive, pipelining, chunked bodies, Expect: 100-continue, HTTP/1.0, HEAD, limits
and malformed requests. The app behind it echoes what WSGI gave it."""

import json
import socket
import subprocess
import sys
import time

import pytest
from support import stop_group, wait_listening

from harness.run.stack import free_port

SERVE = r"""
import sys
from gevent import monkey
monkey.patch_all()
import json
from reference.gateway.http.server import HTTPServer

def app(environ, start_response):
    body = environ["wsgi.input"].read()
    seen = {k: v for k, v in environ.items() if k.isupper()}
    seen["body"] = body.decode("latin-1")
    out = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]

HTTPServer(("127.0.0.1", int(sys.argv[1])), app, max_body=1000, idle_timeout=2.0).serve_forever()
"""


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_listening(port, proc, lambda: proc.stderr.read().decode(errors="replace"))
        yield port
    finally:
        stop_group(proc)
        proc.stderr.close()


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock, sock.makefile("rb")


def read_response(f):
    """(status code, headers dict with lower-case names, body) of one response."""
    status = int(f.readline().split()[1])
    headers = {}
    while True:
        line = f.readline().decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    body = f.read(int(headers.get("content-length", 0)))
    return status, headers, body


def test_keep_alive_and_pipelined_requests_are_answered_in_order(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /one?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        first = read_response(f)
        sock.sendall(b"POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /three HTTP/1.1\r\nHost: h\r\n\r\n")
        second, third = read_response(f), read_response(f)
    assert first[0] == 200 and json.loads(first[2])["PATH_INFO"] == "/one"
    assert json.loads(first[2])["QUERY_STRING"] == "x=1"
    seen = json.loads(second[2])
    assert (seen["REQUEST_METHOD"], seen["body"], seen["CONTENT_LENGTH"]) == ("POST", "abc", "3")
    assert json.loads(third[2])["PATH_INFO"] == "/three"


def test_a_chunked_body_reaches_the_app_whole(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        status, _, body = read_response(f)
    seen = json.loads(body)
    assert status == 200 and seen["body"] == "abcdefg" and seen["CONTENT_LENGTH"] == "7"
    assert "HTTP_TRANSFER_ENCODING" not in seen


def test_expect_100_continue_is_answered_before_the_body(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n" and f.readline() == b"\r\n"
        sock.sendall(b"hello")
        status, _, body = read_response(f)
    assert status == 200 and json.loads(body)["body"] == "hello"


def test_http_1_0_closes_unless_asked_to_keep_alive(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        status, headers, _ = read_response(f)
        assert status == 200 and headers["connection"] == "close"
        assert f.read() == b""                      # and the server closed it
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_response(f)[1]["connection"] == "keep-alive"
        sock.sendall(b"GET /again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert json.loads(read_response(f)[2])["PATH_INFO"] == "/again"


def test_head_has_the_length_but_no_body(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, _ = read_response_head(f)
        assert status == 200 and int(headers["content-length"]) > 0
        # No body followed the HEAD answer: the next bytes are the next answer.
        assert json.loads(read_response(f)[2])["PATH_INFO"] == "/after"


def read_response_head(f):
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline().decode("latin-1").rstrip("\r\n")):
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return status, headers, None


def test_a_body_over_the_limit_is_refused_with_413(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 1500\r\n\r\n" + b"x" * 1500)
        status, headers, body = read_response(f)
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["ok"] is False


def test_a_malformed_request_is_a_400_and_the_server_carries_on(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        assert read_response(f)[0] == 400
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /fine HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(f)[0] == 200


def test_headers_become_cgi_variables_and_underscored_names_are_dropped(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /%41b HTTP/1.1\r\nHost: h\r\nX-Thing: 1\r\nX-Thing: 2\r\nX_Forged: evil\r\n"
                     b"Content-Type: text/plain\r\n\r\n")
        seen = json.loads(read_response(f)[2])
    assert seen["PATH_INFO"] == "/Ab"                 # percent-decoded, as WSGI asks
    assert seen["HTTP_X_THING"] == "1,2" and seen["CONTENT_TYPE"] == "text/plain"
    assert "evil" not in json.dumps(seen)


def test_an_idle_connection_is_closed_and_a_busy_one_is_not(server):
    idle, idle_file = connect(server)
    busy, busy_file = connect(server)
    with idle, idle_file, busy, busy_file:
        for _ in range(12):         # 12 x 0.25 s of requests: longer than the 2 s idle timeout
            busy.sendall(b"GET /busy HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(busy_file)[0] == 200
            time.sleep(0.25)
        assert idle_file.read() == b""             # the server closed the one that sent nothing
