"""The gateway's HTTP/1.1 server: WSGI on gevent greenlets, requests parsed by httptools.

Why not gevent's own pywsgi: it parses each request's headers with the standard library's email
parser and builds everything else in Python too, about 0.25 ms of CPU a request, a sixth of the
whole stack's (docs/PERFORMANCE.md). httptools (llhttp, the parser of Node.js and uvicorn) does
the parsing in C; what is left here is the WSGI contract (PEP 3333) and keep-alive.

What it does: keep-alive (HTTP/1.1 by default, HTTP/1.0 when asked), pipelined requests in
order, chunked request bodies (handed to the app de-chunked, with CONTENT_LENGTH), `Expect:
100-continue`, HEAD, a body limit (answered 413; a body past twice the limit is not read to its
end), idle connections closed after two minutes. Responses are sent in one write with a
Content-Length. Not done: TLS, chunked responses (the app's answers are bytes).
"""

import io
import logging
import socket
import sys
import urllib.parse

import httptools
from gevent.server import StreamServer

from reference.wire.framing import send_all

log = logging.getLogger(__name__)

SERVER = "minifaas"
READ_CHUNK = 1 << 16
IDLE_TIMEOUT_S = 120.0
NO_BODY_STATUSES = (204, 304)
_REASONS = {400: "Bad Request", 413: "Content Too Large", 500: "Internal Server Error"}


class _Message:
    """One request as the parser hands it over (the parser's callbacks land here)."""

    def __init__(self):
        self.url, self.headers, self.body = b"", [], []
        self.size, self.too_large = 0, False


class _Connection:
    """The parser's callbacks for one connection: requests are queued as they complete."""

    def __init__(self, server, sock, peer):
        self.server, self.sock, self.peer = server, sock, peer
        self.parser = httptools.HttpRequestParser(self)
        self.current, self.ready = None, []

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self):
        self.current = _Message()

    def on_url(self, url):
        self.current.url += url

    def on_header(self, name, value):
        self.current.headers.append((name, value))

    def on_headers_complete(self):
        message = self.current
        message.method = self.parser.get_method().decode("latin-1")
        message.version = self.parser.get_http_version()
        message.keep_alive = self.parser.should_keep_alive()
        length = next((v for n, v in message.headers if n.lower() == b"content-length"), None)
        if length is not None and length.strip().isdigit() and int(length) > self.server.max_body:
            message.too_large = True            # answered 413 once the body has gone by
        elif any(n.lower() == b"expect" and v.lower() == b"100-continue" for n, v in message.headers):
            # The client waits for this before it sends the body (curl does for bodies > 1 KiB).
            send_all(self.sock, b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body):
        message = self.current
        message.size += len(body)
        if message.size > self.server.max_body:
            message.too_large = True
        if not message.too_large:
            message.body.append(body)

    def on_message_complete(self):
        self.ready.append(self.current)
        self.current = None

    # -- the connection's loop ----------------------------------------------------------------

    def serve(self):
        try:
            while True:
                data = self.sock.recv(READ_CHUNK)
                if not data:
                    return
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    self._error(400, "protocol upgrades are not served here")
                    return
                except httptools.HttpParserError as exc:
                    self._error(400, "bad request: %s" % exc)
                    return
                # Too large, and still coming: past twice the limit, stop reading and close.
                if self.current is not None and self.current.size > 2 * self.server.max_body:
                    self._too_large()
                    return
                while self.ready:
                    message = self.ready.pop(0)
                    if message.too_large:
                        self._too_large()
                        return
                    if not self._respond(message):
                        return
        except (ConnectionError, OSError) as exc:
            log.debug("connection closed: %s", exc)

    def _respond(self, message):
        """Run the app on one request and send its answer; False when the connection must close."""
        status_headers = []

        def start_response(status, headers, exc_info=None):
            if exc_info and status_headers:
                raise exc_info[1].with_traceback(exc_info[2])
            status_headers[:] = [status, headers]
            return chunks.append    # the legacy write() callable

        chunks = []
        environ = self._environ(message)
        try:
            result = self.server.application(environ, start_response)
            try:
                for chunk in result:
                    chunks.append(chunk)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:
            log.exception("the app failed on %s %s", message.method, message.url[:200])
            self._error(500, "internal error in the gateway")
            return False
        status, headers = status_headers
        code = int(status[:3])
        keep_alive = message.keep_alive
        body = b"".join(chunks)
        lines = ["HTTP/1.1 %s" % status]
        has_length = False
        for name, value in headers:
            low = name.lower()
            if low == "content-length":
                has_length = True
            elif low == "connection":
                keep_alive = keep_alive and value.lower() != "close"
                continue
            lines.append("%s: %s" % (name, value))
        if not has_length and code not in NO_BODY_STATUSES and code >= 200:
            lines.append("Content-Length: %d" % len(body))
        lines.append("Server: %s" % SERVER)
        if not keep_alive:
            lines.append("Connection: close")
        elif message.version == "1.0":
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if message.method == "HEAD" or code in NO_BODY_STATUSES:
            body = b""
        send_all(self.sock, head + body)
        return keep_alive

    def _environ(self, message):
        url = httptools.parse_url(message.url)
        body = b"".join(message.body)
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
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
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
            elif key not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):   # the body is whole by now
                key = "HTTP_" + key
                text = value.decode("latin-1")
                environ[key] = environ[key] + "," + text if key in environ else text
        return environ

    def _too_large(self):
        self._error(413, "request body too large: at most %d bytes" % self.server.max_body)

    def _error(self, code, text):
        body = ('{"ok": false, "error": "%s"}' % text.replace('"', "'")).encode()
        head = ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                "Server: %s\r\nConnection: close\r\n\r\n" % (code, _REASONS[code], len(body), SERVER))
        try:
            send_all(self.sock, head.encode() + body)
        except OSError:
            pass


class HTTPServer(StreamServer):
    """`HTTPServer((host, port), app, max_body=..., spawn=N)`: a greenlet per connection, at
    most `spawn` of them at once. A connection that sends nothing (or reads nothing) for
    `idle_timeout` seconds is closed, so idle ones cannot fill the pool (waitress does the same
    after 120 s); the time an answer takes to compute does not count."""

    def __init__(self, listener, application, max_body, idle_timeout=IDLE_TIMEOUT_S, **kwargs):
        super().__init__(listener, **kwargs)
        self.application, self.max_body, self.idle_timeout = application, max_body, idle_timeout

    def handle(self, sock, address):
        # Answers go out in one write; NODELAY keeps the kernel from holding a small one back.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.idle_timeout)
        _Connection(self, sock, address).serve()
