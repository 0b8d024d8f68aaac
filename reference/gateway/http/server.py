"""The gateway's HTTP/1.1 server: WSGI on gevent greenlets, requests parsed by httptools.

Why not gevent's own pywsgi: it parses each request's headers with the standard library's email
parser and builds everything else in Python too, about 0.25 ms of CPU a request, a sixth of the
whole stack's (docs/PERFORMANCE.md). httptools (llhttp, the parser of Node.js and uvicorn) does
the parsing in C; what is left here is the WSGI contract (PEP 3333), keep-alive and the limits.

What it does: keep-alive (HTTP/1.1 by default, HTTP/1.0 when asked), pipelined requests in
order, chunked request bodies (handed to the app de-chunked, with CONTENT_LENGTH; trailers are
read and dropped), `Expect: 100-continue` (the 100 goes out only when the app reads the body),
HEAD, `Date` headers. Not done: TLS, chunked responses (an answer without a length that does
not fit the output buffer ends at the close of the connection).

The limits (../shared/DESIGN.md, "The gateway's HTTP limits"), each answered as JSON with `kind`:

    request line (its URL)            8 KiB                                  414
    header lines together             64 KiB, 100 fields                     431
    request line and headers          10 s from the first byte, not reset    408, close
                                      by each byte
    body                              max_body, from Content-Length before   413, close
                                      a byte of it is read
    an answer the client does not     8 MiB buffered; a send that makes no   close
    read                              progress for 30 s
    connections                       max_connections; at the limit the      503, close
                                      oldest idle or still-sending-headers
                                      one is closed to make room
    a bad request behind good ones    the good ones are answered first       400, close

A connection's state decides how long a read may wait: a new connection, 10 s for its first
request to begin; between requests (idle keep-alive), two minutes; from the first byte of a
request to the end of its headers, what is left of the 10 s; inside a body, two minutes a read.
"""

import collections
import email.utils
import io
import logging
import os
import socket
import sys
import time
import urllib.parse

import gevent
import httptools
from gevent.hub import Waiter
from gevent.server import StreamServer

log = logging.getLogger(__name__)

SERVER = "minifaas"
READ_CHUNK = 1 << 16
MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100
HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 120.0
SEND_TIMEOUT_S = 30.0
MAX_OUTPUT_BUFFER = 8 << 20
MAX_CONNECTIONS = 10_000
SWEEP_S = 0.25              # how often waits past their deadline are ended (at most)
# Answers up to this size go out in one write with their head; larger bodies are sent from the
# app's own bytes, never copied.
_JOIN_BELOW = 1 << 16
# After an error, what the client still sends is read and dropped for this long (and up to this
# much), so that closing with unread bytes does not reset the connection before the client has
# read the answer: a client sends its whole body before it reads, and a body may be refused.
_LINGER_S = 2.0
_LINGER_BYTES = 8 << 20
NO_BODY_STATUSES = (204, 304)
# Bytes between a request's first byte and the end of its headers, checked while they arrive:
# the line and headers limits plus one read of slack (a read may end a previous request's body).
_MAX_HEAD_BYTES = MAX_REQUEST_LINE + MAX_HEADER_BYTES + READ_CHUNK

_ERRORS = {
    400: ("Bad Request", "bad_request"),
    408: ("Request Timeout", "request_timeout"),
    413: ("Content Too Large", "too_large"),
    414: ("URI Too Long", "uri_too_long"),
    431: ("Request Header Fields Too Large", "headers_too_large"),
    500: ("Internal Server Error", "internal"),
    503: ("Service Unavailable", "unavailable"),
}


class _Close(Exception):
    """The connection ends here (after `answer`, an error status and text, when there is one)."""

    def __init__(self, code=None, text=""):
        super().__init__(text)
        self.code, self.text = code, text


_date = [0, ""]


def http_date():
    """The Date header's value, formatted once a second."""
    now = int(time.time())
    if now != _date[0]:
        _date[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return _date[1]


class _Message:
    """One request as the parser hands it over (the parser's callbacks land here)."""

    def __init__(self):
        self.url, self.headers, self.body = b"", [], []
        self.size = self.header_bytes = 0
        self.error = None                   # (status, text): answer this and close
        self.headers_done = self.complete = self.lazy = False
        self.continue_sent = self.broken = False
        self.deadline = None                # for the request line and headers


class _Connection:
    """The parser's callbacks for one connection and its loop: requests are queued as they
    complete (or, with `Expect: 100-continue`, once their headers are in) and answered in order."""

    def __init__(self, server, sock, peer):
        self.server, self.sock, self.peer = server, sock, peer
        self.parser = httptools.HttpRequestParser(self)
        self.current, self.ready = None, collections.deque()
        self.head_bytes = 0                 # of the request whose headers are still arriving
        self.greenlet = gevent.getcurrent()
        # The client's bytes are read in the hub, by this watcher's callback (`_readable`), and
        # handed to the connection's greenlet waiting in `_recv` (through `waiter`), or kept in
        # `pending` until it asks (the watcher stopped meanwhile: one read ahead at most).
        self.fd = sock.fileno()
        self.watcher = gevent.get_hub().loop.io(self.fd, 1)     # 1: readable
        self.waiter = self.pending = None
        # While this connection waits on its socket (a read or a send), when that wait ends: the
        # server's sweep (HTTPServer._sweep) ends it with socket.timeout. None when not waiting.
        self.deadline = None
        # A new connection has the header timeout from its start to send its first request.
        self.first_deadline = time.monotonic() + server.header_timeout

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self):
        self.current = _Message()
        self.head_bytes = 0

    def on_url(self, url):
        message = self.current
        if len(message.url) + len(url) > MAX_REQUEST_LINE:
            message.error = message.error or (414, "request line too long: at most %d bytes" % MAX_REQUEST_LINE)
        else:
            message.url += url

    def on_header(self, name, value):
        message = self.current
        if message.headers_done:
            return                          # a chunked trailer: read, never merged into the headers
        message.header_bytes += len(name) + len(value) + 4
        if len(message.headers) >= MAX_HEADER_FIELDS:
            message.error = message.error or (431, "too many header fields: at most %d" % MAX_HEADER_FIELDS)
        elif message.header_bytes > MAX_HEADER_BYTES:
            message.error = message.error or (431, "headers too large: at most %d bytes" % MAX_HEADER_BYTES)
        else:
            message.headers.append((name, value))

    def on_headers_complete(self):
        message = self.current
        message.headers_done = True
        self.server.waiting.pop(self, None)
        message.method = self.parser.get_method().decode("latin-1")
        message.version = self.parser.get_http_version()
        message.keep_alive = self.parser.should_keep_alive()
        if message.error:
            return
        length = expect = None
        for name, value in message.headers:
            low = name.lower()
            if low == b"content-length":
                length = value
            elif low == b"expect":
                expect = value.lower() == b"100-continue"
        if length is not None and length.strip().isdigit():
            if int(length) > self.server.max_body:
                message.error = (413, "request body too large: %s bytes, at most %d"
                                 % (int(length), self.server.max_body))
            elif expect and message.version == "1.1":
                # The app runs now and the 100 goes out when it reads the body: a request it
                # refuses from its headers alone (size, key) is answered before any body is sent.
                message.lazy = True
                self.ready.append(message)
        elif expect:
            self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body):
        message = self.current
        message.size += len(body)
        if message.size > self.server.max_body:
            message.error = message.error or (413, "request body too large: at most %d bytes" % self.server.max_body)
        elif not message.error:
            message.body.append(body)

    def on_message_complete(self):
        message = self.current
        message.complete = True
        if not message.lazy:
            self.ready.append(message)
        self.current = None

    # -- the connection's loop ----------------------------------------------------------------

    def serve(self):
        try:
            while True:
                self._read()
                while self.ready:
                    message = self.ready.popleft()
                    if message.error:
                        raise _Close(*message.error)
                    self.first_deadline = None
                    if not self._respond(message):
                        self.stop_reading()
                        _linger(self.sock)
                        return
        except _Close as close:
            if close.code:
                self._error(close.code, close.text)
        except (ConnectionError, OSError) as exc:
            log.debug("connection closed: %s", exc)

    def _read(self):
        """Wait for bytes (as long as the connection's state allows) and parse them. Raises _Close
        when the connection must end; requests that completed before an error stay queued, and
        the error is queued behind them."""
        message = self.current
        if message is None or not message.headers_done:
            # Idle, or sending a request's line and headers: one of those the server may close
            # to make room for a new connection (the oldest first).
            self.server.waiting.setdefault(self)
        if message is None:
            if self.first_deadline is None:
                timeout = self.server.idle_timeout
            else:
                timeout = self.first_deadline - time.monotonic()
                if timeout <= 0:
                    raise _Close()
        elif not message.headers_done:
            if message.deadline is None:
                message.deadline = time.monotonic() + self.server.header_timeout
            timeout = message.deadline - time.monotonic()
            if timeout <= 0:
                raise _Close(408, "request line and headers not received within %g s" % self.server.header_timeout)
        else:
            timeout = self.server.idle_timeout
        self.deadline = time.monotonic() + timeout
        try:
            data = self._recv()
        except socket.timeout:
            if message is not None and not message.headers_done and not message.complete:
                raise _Close(408, "request line and headers not received within %g s" % self.server.header_timeout)
            raise _Close()
        finally:
            self.deadline = None
        if not data:
            raise _Close()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_behind(400, "protocol upgrades are not served here")
        except httptools.HttpParserError as exc:
            self._fail_behind(400, "bad request: %s" % exc)
        message = self.current
        if message is not None and not message.error and not message.headers_done:
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD_BYTES:
                message.error = (414, "request line too long: at most %d bytes" % MAX_REQUEST_LINE) \
                    if not message.headers else (431, "headers too large: at most %d bytes" % MAX_HEADER_BYTES)
        if message is not None and message.error and not message.lazy:
            self._fail_behind(*message.error)

    def _recv(self):
        """The client's next bytes (b"" at its end), as sock.recv would give them. Waiting costs
        one switch to the hub and back; gevent's own recv tries a read that fails first, then
        starts and stops a watcher each time (about 8 % of the gateway's CPU per request
        through the stack: docs/PERFORMANCE.md, "A ninth look")."""
        data = self.pending
        if data is None:
            if not self.watcher.active:
                self.watcher.start(self._readable)
            self.waiter = Waiter()
            try:
                data = self.waiter.get()
            finally:
                self.waiter = None
        else:
            self.pending = None
        if isinstance(data, OSError):
            raise data
        return data

    def _readable(self):
        """In the hub: the client sent bytes (or closed, or failed)."""
        try:
            data = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            data = exc
        if self.waiter is not None:
            self.waiter.switch(data)     # the greenlet runs now, until it waits again
        else:
            self.pending = data
            self.watcher.stop()

    def stop_reading(self):
        """No more reads in the hub (before the socket is closed, or read in another way)."""
        self.watcher.stop()
        self.watcher.close()

    def _fail_behind(self, code, text):
        """Queue an error answer behind the requests already complete; the connection closes after it."""
        failed = _Message()
        failed.error = (code, text)
        self.ready.append(failed)
        self.current = None

    def _read_body(self, message):
        """For a request answered before its body (`Expect: 100-continue`): the 100, then its body."""
        if not message.continue_sent:
            message.continue_sent = True
            self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not message.complete:
            try:
                if self.current is not message:
                    raise _Close()
                self._read()
            except _Close:
                message.broken = True
                raise ConnectionError("the connection ended inside a request body") from None
        return b"".join(message.body)

    def _respond(self, message):
        """Run the app on one request and send its answer; False when the connection must close."""
        status_headers = []
        chunks = []

        def start_response(status, headers, exc_info=None):
            if exc_info and status_headers:
                raise exc_info[1].with_traceback(exc_info[2])
            status_headers[:] = [status, headers]
            return chunks.append    # the legacy write() callable

        if self.server.fast is not None and message.complete:
            answered = self._fast(message)
            if answered is not None:
                return answered
        try:
            environ = self._environ(message)
        except httptools.HttpParserInvalidURLError:
            raise _Close(400, "bad request: the URL cannot be parsed") from None
        try:
            result = self.server.application(environ, start_response)
            try:
                size, streaming = 0, False
                for chunk in result:
                    if chunk:
                        chunks.append(chunk)
                        size += len(chunk)
                    if size >= MAX_OUTPUT_BUFFER:
                        # Past the output buffer: what is there goes out before more is made.
                        self._send_part(message, status_headers, chunks, streaming)
                        streaming, size = True, 0
                        del chunks[:]
            finally:
                if hasattr(result, "close"):
                    result.close()
        except _Close:
            raise
        except Exception:
            if message.broken:
                raise _Close() from None    # the client left inside its body: no one to answer
            log.exception("the app failed on %s %.200r", message.method, message.url)
            raise _Close(500, "internal error in the gateway") from None
        if message.broken:
            raise _Close()
        if streaming:
            self._send_part(message, status_headers, chunks, streaming)
            return False
        keep_alive = message.keep_alive and (message.complete or not message.lazy)
        return self._head(message, status_headers, keep_alive, chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _send(self, data):
        """All of `data`, or socket.timeout (from the server's sweep) when the client takes none
        of it for the send timeout. Plain sends, looped for a short one."""
        view = memoryview(data)
        while view:
            self.deadline = time.monotonic() + self.server.send_timeout
            try:
                sent = self.sock.send(view)
            finally:
                self.deadline = None
            view = view[sent:]

    def _fast(self, message):
        """The server's `fast` handler's answer to a complete request, sent: whether the
        connection stays open; None when the handler declined it (the app answers it)."""
        try:
            url = httptools.parse_url(message.url)
        except httptools.HttpParserInvalidURLError:
            return None
        try:
            answer = self.server.fast(message.method, url.path, url.query, message.headers,
                                      b"".join(message.body))
        except Exception:
            log.exception("the fast path failed on %s %.200r", message.method, message.url)
            raise _Close(500, "internal error in the gateway") from None
        if answer is None:
            return None
        # The head _head would build, without its checks: the handler's headers are its own
        # (no line breaks; Content-Length given; no Connection or Date).
        status, headers, body = answer
        head = "HTTP/1.1 %s\r\n%s%s\r\n" % (status, "".join(["%s: %s\r\n" % header for header in headers]),
                                             _head_end(message, message.keep_alive))
        self._send_answer(head.encode("latin-1"), body)
        return message.keep_alive

    def _send_answer(self, head, body):
        """An answer's head and body (None: none), joined in one send when the body is small;
        _Close when the client is gone or does not read for the send timeout."""
        try:
            if body is None:
                self._send(head)
            elif len(body) < _JOIN_BELOW:
                self._send(head + body)
            else:
                self._send(head)
                self._send(body)
        except OSError:
            raise _Close() from None

    def _head(self, message, status_headers, keep_alive, body, length=True):
        """Send the answer's status and headers, and `body` unless it is None; returns whether
        the connection stays open. Without `length`, the answer ends at the close."""
        status, headers = status_headers
        code = int(status[:3])
        lines = ["HTTP/1.1 %s" % status]
        has_length = False
        for name, value in headers:
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise _Close(500, "the app's answer has a header with a line break")
            low = name.lower()
            if low == "content-length":
                has_length = True
            elif low == "connection":
                keep_alive = keep_alive and value.lower() != "close"
                continue
            elif low == "date":
                continue
            lines.append("%s: %s" % (name, value))
        if not has_length and code not in NO_BODY_STATUSES and code >= 200:
            if length:
                lines.append("Content-Length: %d" % len(body))
            else:
                keep_alive = False
        head = ("\r\n".join(lines) + "\r\n" + _head_end(message, keep_alive) + "\r\n").encode("latin-1")
        if message.method == "HEAD" or code in NO_BODY_STATUSES:
            body = None
        self._send_answer(head, body)
        return keep_alive

    def _send_part(self, message, status_headers, chunks, streaming):
        """Send the next part of an answer too large for the output buffer (its head first)."""
        if not streaming:
            self._head(message, status_headers, False, None, length=False)
        if message.method != "HEAD":
            try:
                for chunk in chunks:
                    self._send(chunk)
            except OSError:
                raise _Close() from None

    def _environ(self, message):
        url = httptools.parse_url(message.url)
        if message.lazy and not message.complete:
            body_input = _LazyBody(self, message)
            length = next(v for n, v in message.headers if n.lower() == b"content-length").strip().decode()
        else:
            body = b"".join(message.body)
            body_input, length = io.BytesIO(body), str(len(body))
        host, port = self.server.server_host, self.server.server_port
        environ = {
            "REQUEST_METHOD": message.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote_to_bytes(url.path or b"/").decode("latin-1"),
            "QUERY_STRING": (url.query or b"").decode("latin-1"),
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/%s" % message.version,
            "REMOTE_ADDR": self.peer[0] if self.peer else "",
            "CONTENT_LENGTH": length,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": body_input,
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in message.headers:
            key = name.decode("latin-1").upper()
            if "_" in key:
                continue            # as other servers do: HTTP_X_Y must not be forged by X_Y
            key = key.replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value.decode("latin-1")
            elif key not in ("CONTENT_LENGTH", "TRANSFER_ENCODING", "EXPECT"):   # the server's business
                key = "HTTP_" + key
                text = value.decode("latin-1")
                environ[key] = environ[key] + "," + text if key in environ else text
        return environ

    def _error(self, code, text):
        reason, kind = _ERRORS[code]
        body = ('{"ok": false, "error": "%s", "kind": "%s"}' % (text.replace('"', "'"), kind)).encode()
        head = ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nServer: %s\r\n"
                "Date: %s\r\nConnection: close\r\n\r\n" % (code, reason, len(body), SERVER, http_date()))
        try:
            self._send(head.encode() + body)
            self.stop_reading()
            _linger(self.sock)
        except OSError:
            pass

    def evict(self):
        """Close this connection (idle, or still sending headers) to make room for a new one."""
        self.greenlet.kill(_Close(), block=False)


def _head_end(message, keep_alive):
    """The lines every answer's head ends with (before its blank line): Server, Date and, when
    the connection closes or is an HTTP/1.0 one kept alive, Connection."""
    if not keep_alive:
        connection = "Connection: close\r\n"
    elif message.version == "1.0":
        connection = "Connection: keep-alive\r\n"
    else:
        connection = ""
    return "Server: %s\r\nDate: %s\r\n%s" % (SERVER, http_date(), connection)


class _LazyBody(io.RawIOBase):
    """wsgi.input of a request with `Expect: 100-continue`: the first read sends the 100 and
    reads the body, which the client sends only then."""

    def __init__(self, connection, message):
        self.connection, self.message, self.data = connection, message, None

    def readable(self):
        return True

    def _body(self):
        if self.data is None:
            self.data = io.BytesIO(self.connection._read_body(self.message))
        return self.data

    def read(self, size=-1):
        return self._body().read(size)

    def readline(self, size=-1):
        return self._body().readline(size)

    def readinto(self, buffer):
        return self._body().readinto(buffer)


def send_all(sock, data, timeout):
    """All of `data`, or socket.timeout when the client takes none of it for `timeout` seconds.
    Plain sends, looped for a short one (gevent's sendall asks the kernel for the socket's buffer
    size on every call)."""
    sock.settimeout(timeout)
    view = memoryview(data)
    while view:
        view = view[sock.send(view):]


def _linger(sock):
    """Half-close, then drop what the client still sends for a moment: a close with unread bytes
    would reset the connection and could take the answer with it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        dropped = 0
        with gevent.Timeout(_LINGER_S, False):
            sock.settimeout(_LINGER_S)
            while dropped < _LINGER_BYTES and (data := sock.recv(READ_CHUNK)):
                dropped += len(data)
    except OSError:
        pass


class HTTPServer(StreamServer):
    """`HTTPServer((host, port), app, max_body=..., max_connections=N, fast=None)`: a greenlet per
    connection, at most `max_connections` of them. At the limit, the connection that has waited
    longest idle or sending its headers is closed for the new one; when every connection is busy
    (in a body, the app or an answer), the new one gets 503 at once.

    The timeouts and limits are the module's constants; the tests shorten the timeouts."""

    def __init__(self, listener, application, max_body, max_connections=MAX_CONNECTIONS,
                 idle_timeout=IDLE_TIMEOUT_S, header_timeout=HEADER_TIMEOUT_S,
                 send_timeout=SEND_TIMEOUT_S, fast=None, **kwargs):
        super().__init__(listener, **kwargs)
        self.application, self.max_body, self.max_connections = application, max_body, max_connections
        # fast(method, path, query, headers, body) -> (status, headers, body) or None: a handler
        # offered each complete request before the WSGI app (reference/gateway/fast.py). Its
        # headers are sent as they are: no line breaks, its own Content-Length, no Connection
        # or Date (the server adds those).
        self.fast = fast
        self.idle_timeout, self.header_timeout, self.send_timeout = idle_timeout, header_timeout, send_timeout
        self.connections = set()
        # One timer for every connection's wait (a read or a send), instead of one armed and
        # cancelled per wait (about 5 % of the gateway's CPU per call): a wait ends within
        # sweep_s after its deadline.
        self.sweep_s = min(SWEEP_S, idle_timeout / 4, header_timeout / 4, send_timeout / 4)
        self._sweeper = None
        # Idle connections and those still sending headers, the longest waiting first (dicts
        # keep insertion order; a connection is put back at the end each time it starts waiting).
        self.waiting = {}

    def handle(self, sock, address):
        connection = None
        if self._sweeper is None:
            self._sweeper = gevent.get_hub().loop.timer(self.sweep_s, self.sweep_s)
            self._sweeper.start(self._sweep)
        try:
            if len(self.connections) >= self.max_connections and not self._make_room():
                _refuse(sock, self.send_timeout)
                return
            # Answers go out in one write; NODELAY keeps the kernel from holding a small one back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)           # its waits end by the sweep (_sweep)
            connection = _Connection(self, sock, address)
            self.connections.add(connection)
            connection.serve()
        except _Close:
            pass                            # evicted
        finally:
            if connection is not None:
                connection.stop_reading()
                self.connections.discard(connection)
                self.waiting.pop(connection, None)
            sock.close()

    def _sweep(self):
        """Runs in the hub every sweep_s: a connection past its wait's deadline gets socket.timeout
        thrown into that wait, as a gevent Timeout of its own would (a connection with a
        deadline is blocked in its read or send: the deadline is cleared when the wait ends)."""
        now = time.monotonic()
        late = [c for c in self.connections if c.deadline is not None and c.deadline <= now]
        for connection in late:
            if connection.deadline is not None and connection.deadline <= now:
                connection.deadline = None
                connection.greenlet.throw(socket.timeout("timed out"))

    def stop(self, timeout=None):
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper.close()
            self._sweeper = None
        super().stop(timeout)

    def _make_room(self):
        """Close the connection that has waited longest idle or sending its headers; False when
        there is none."""
        while self.waiting:
            victim = next(iter(self.waiting))
            del self.waiting[victim]
            if victim in self.connections:
                self.connections.discard(victim)
                victim.evict()
                return True
        return False


def _refuse(sock, timeout):
    body = b'{"ok": false, "error": "too many connections; try again shortly", "kind": "unavailable"}'
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            "Retry-After: 1\r\nServer: %s\r\nDate: %s\r\nConnection: close\r\n\r\n"
            % (len(body), SERVER, http_date())).encode()
    try:
        send_all(sock, head + body, timeout)
    except OSError:
        pass
