"""Driving the gateway's WSGI app in-process, with no server (as bottle's own tests do), and
the stand-ins these tests put behind it: a server client that answers a given Outcome and a
compiler that answers at once. Shared by tests/unit and tests/integration."""

import io
import json
import wsgiref.util

from reference.wire.errors import CompileError, ToolchainMissing
from reference.wire.jobs import Outcome

HELLO_PY = b'print("hello")\n'


class Answer:
    def __init__(self, status, headers, raw, header_list=()):
        self.status, self.headers, self.raw = status, headers, raw
        self.header_list = list(header_list)  # as the app gave them, duplicates included
        try:
            self.json = json.loads(raw)
        except ValueError:
            self.json = None


def call(app, method, path, body=b"", query="", headers=None, content_type=None):
    """One request through the WSGI app, with no server: status, headers and body."""
    if isinstance(body, str):
        body = body.encode()
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    wsgiref.util.setup_testing_defaults(environ)
    started = {}

    def start_response(status, headers, exc_info=None):
        # Header names are case-insensitive; bottle writes "Www-Authenticate".
        started["status"] = int(status.split()[0])
        started["headers"] = {name.lower(): value for name, value in headers}
        started["list"] = list(headers)

    raw = b"".join(app(environ, start_response))
    return Answer(started["status"], started["headers"], raw, started["list"])


class StandInClient:
    """Answers invoke with a given Outcome (or raises a given error): this tests only the
    Outcome -> HTTP mapping; the real invoke path is tested end to end with real processes."""

    def __init__(self, outcome=None, error=None, health=None, stats=None):
        self.outcome, self.error = outcome or Outcome(stdout=b"ok\n"), error
        self._health, self._stats = health, stats
        self.calls = []

    def invoke(self, meta, payload):
        self.calls.append((meta, payload))
        if self.error:
            raise self.error
        return self.outcome

    def stats(self):
        if self.error:
            raise self.error
        return dict(self._stats or {"strategy": "RR", "queue": 0, "workers": [], "balancer": True}, req=1)

    def health(self):
        if self.error:
            raise self.error
        return dict(self._health or {"server": True, "balancer": True, "workers": 2, "size": 2}, req=2)


class Compiled:
    def __init__(self, wasm, compile_ms, toolchain):
        self.wasm, self.compile_ms, self.toolchain = wasm, compile_ms, toolchain


def fake_compiler(lang, source):
    """Stands in for the toolchain where only the deploy answer's shape is under test."""
    if b"syntax error" in source:
        raise CompileError("compilation failed", details="code.c:1: error: expected ';'")
    if b"no toolchain" in source:
        raise ToolchainMissing("no c toolchain found: apt-get install clang lld", install="apt-get install clang lld")
    return Compiled(b"\0asm\1\0\0\0", 3.5, "fake-cc")
