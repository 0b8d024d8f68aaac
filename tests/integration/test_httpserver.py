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
    path = environ["PATH_INFO"]
    if path == "/noread":           # answers from the headers alone, as a refused key would be
        start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"no"]
    body = environ["wsgi.input"].read()
    if path == "/slow":             # busy for a while, the time for the client to send more
        import gevent
        gevent.sleep(0.3)
    if path == "/stream":           # more than the 8 MiB output buffer, with no length
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"s" * (1 << 20) for _ in range(9))
    if path == "/big":
        out = b"x" * int(environ["QUERY_STRING"])
    else:
        seen = {k: v for k, v in environ.items() if k.isupper()}
        seen["body"] = body.decode("latin-1")
        out = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]

HTTPServer(("127.0.0.1", int(sys.argv[1])), app, max_body=1000, idle_timeout=2.0, header_timeout=1.0,
           send_timeout=1.0, max_connections=int(sys.argv[2])).serve_forever()
"""


def start_server(max_connections):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(port), str(max_connections)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_listening(port, proc, lambda: proc.stderr.read().decode(errors="replace"))
    except BaseException:
        stop_group(proc)
        raise
    return port, proc


@pytest.fixture(scope="module")
def server():
    port, proc = start_server(1000)
    try:
        yield port
    finally:
        stop_group(proc)
        proc.stderr.close()


@pytest.fixture
def small_server():
    """A server of its own that takes at most 4 connections."""
    port, proc = start_server(4)
    try:
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


def test_what_arrives_while_a_request_is_answered_is_kept_even_the_end(server):
    """Bytes that come while the connection's greenlet is busy are read ahead in the hub and
    kept until it asks: a second request in two writes during a slow answer, then a third and
    the client's end of sending, all during the app's 0.3 s. Nothing is lost, nothing doubled,
    and the end comes after the answers."""
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        time.sleep(0.1)
        sock.sendall(b"POST /two HTTP/1.1\r\nHost: h\r\nContent-")
        time.sleep(0.05)
        sock.sendall(b"Length: 3\r\n\r\nabc")
        time.sleep(0.05)
        sock.sendall(b"GET /three HTTP/1.1\r\nHost: h\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answers = [read_response(f) for _ in range(3)]
        rest = f.read()
    assert [a[0] for a in answers] == [200, 200, 200]
    assert [json.loads(a[2])["PATH_INFO"] for a in answers] == ["/slow", "/two", "/three"]
    assert json.loads(answers[1][2])["body"] == "abc"
    assert rest == b""


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


def error_of(f):
    """(status, kind, headers) of an error answer, which is JSON with a `kind`."""
    status, headers, body = read_response(f)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)["kind"], headers


def test_answers_carry_a_date(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /d HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, _ = read_response(f)
    assert status == 200 and headers["date"].endswith(" GMT")


def test_a_request_line_over_8_kib_is_a_414(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        status, kind, headers = error_of(f)
    assert (status, kind, headers["connection"]) == (414, "uri_too_long", "close")


def test_a_request_line_that_never_ends_is_a_414_before_it_ends(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /" + b"a" * 200_000)        # no end of line, and the server answers anyway
        assert error_of(f)[:2] == (414, "uri_too_long")


def test_headers_over_64_kib_or_100_fields_are_a_431(server):
    too_big = b"X-Big: " + b"v" * (65 * 1024) + b"\r\n"
    too_many = b"".join(b"X-F%d: v\r\n" % i for i in range(101))
    for extra in (too_big, too_many):
        sock, f = connect(server)
        with sock, f:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n" + extra + b"\r\n")
            assert error_of(f)[:2] == (431, "headers_too_large")
    sock, f = connect(server)
    with sock, f:                                   # 100 fields and 60 KiB are still fine
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(98))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"X-Big: " + b"v" * (60 * 1024) + b"\r\n\r\n")
        assert read_response(f)[0] == 200


def test_a_huge_header_value_is_refused_while_it_arrives(server):
    sock, f = connect(server)
    with sock, f:                                   # 1 MiB of a value that never ends
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nX-Huge: " + b"v" * (1 << 20))
        assert error_of(f)[:2] == (431, "headers_too_large")


def test_headers_dripped_a_byte_at_a_time_time_out_with_408(server):
    """The header timeout (1 s here) runs from the first byte; more bytes do not restart it."""
    sock, f = connect(server)
    with sock, f:
        start = time.monotonic()
        try:
            for byte in b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: " + b"v" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass
        status, kind, headers = error_of(f)
    assert (status, kind, headers["connection"]) == (408, "request_timeout", "close")
    assert time.monotonic() - start < 5


def test_a_body_over_the_limit_is_refused_from_its_length_before_it_is_sent(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n")
        assert error_of(f)[:2] == (413, "too_large")
    sock, f = connect(server)
    with sock, f:                                   # and with Expect: no 100 Continue first
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        assert error_of(f)[:2] == (413, "too_large")


def test_100_continue_goes_out_only_when_the_app_reads_the_body(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"POST /noread HTTP/1.1\r\nHost: h\r\nContent-Length: 500\r\nExpect: 100-continue\r\n\r\n")
        status, headers, body = read_response(f)    # the answer, and no 100 before it
        assert (status, body, headers["connection"]) == (401, b"no", "close")


def test_a_chunked_body_over_the_limit_is_a_413(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"400\r\n" + b"x" * 1024 + b"\r\n")
        assert error_of(f)[:2] == (413, "too_large")


def test_chunked_trailers_are_read_and_dropped(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\nAuthorization: Bearer forged\r\nX-Late: 1\r\n\r\n"
                     b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        seen = json.loads(read_response(f)[2])
        after = json.loads(read_response(f)[2])
    assert seen["body"] == "abc" and "HTTP_AUTHORIZATION" not in seen and "HTTP_X_LATE" not in seen
    assert after["PATH_INFO"] == "/next"


def test_a_bad_request_behind_good_ones_is_answered_after_them(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /two HTTP/1.1\r\nHost: h\r\n\r\n"
                     b"NOT HTTP AT ALL\r\n\r\n")
        first, second = read_response(f), read_response(f)
        status, kind, headers = error_of(f)
        assert f.read() == b""                      # and then the server closed
    assert [json.loads(r[2])["PATH_INFO"] for r in (first, second)] == ["/one", "/two"]
    assert (status, kind, headers["connection"]) == (400, "bad_request", "close")


def test_an_unparsable_url_is_a_400(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET http://[::1/x HTTP/1.1\r\nHost: h\r\n\r\n")
        assert error_of(f)[:2] == (400, "bad_request")


def test_an_answer_the_client_does_not_read_is_dropped_after_the_send_timeout(server):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    with sock:
        sock.connect(("127.0.0.1", server))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n".replace(b"/big", b"/big?%d" % (64 << 20)))
        time.sleep(4)                               # the send stalls past the 1 s send timeout
        got = 0
        try:
            while (data := sock.recv(1 << 20)):
                got += len(data)
        except ConnectionResetError:
            pass
    assert got < 64 << 20                           # the server gave up and closed
    sock, f = connect(server)
    with sock, f:                                   # and it serves others
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(f)[0] == 200


def test_at_the_connection_limit_an_idle_connection_makes_room(small_server):
    idle = [socket.create_connection(("127.0.0.1", small_server), timeout=10) for _ in range(4)]
    try:
        time.sleep(0.2)
        sock, f = connect(small_server)
        with sock, f:
            sock.sendall(b"GET /new HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(f)[0] == 200
        assert idle[0].recv(10) == b""              # the oldest idle one was closed for it
    finally:
        for s in idle:
            s.close()


def test_at_the_connection_limit_with_every_connection_busy_a_new_one_gets_503(small_server):
    busy = []
    try:
        for _ in range(4):                          # each inside a body: none can be closed
            s = socket.create_connection(("127.0.0.1", small_server), timeout=10)
            s.sendall(b"POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 500\r\n\r\nabc")
            busy.append(s)
        time.sleep(0.2)
        sock, f = connect(small_server)
        with sock, f:
            sock.sendall(b"GET /new HTTP/1.1\r\nHost: h\r\n\r\n")
            status, kind, headers = error_of(f)
        assert (status, kind, headers["connection"]) == (503, "unavailable", "close")
        busy[0].sendall(b"x" * 497)                 # the busy ones carry on
        f = busy[0].makefile("rb")
        with f:
            assert json.loads(read_response(f)[2])["CONTENT_LENGTH"] == "500"
    finally:
        for s in busy:
            s.close()


def test_an_answer_past_the_output_buffer_is_streamed_and_ends_at_the_close(server):
    sock, f = connect(server)
    with sock, f:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, _ = read_response_head(f)
        body = f.read()
    assert status == 200 and "content-length" not in headers and headers["connection"] == "close"
    assert body == b"s" * (9 << 20)
