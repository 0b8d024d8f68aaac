"""Helpers shared by the tests: paths and a small HTTP client for the real stack."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from harness.run.stack import Stack, StackError

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TEST_FUNCTIONS = ROOT / "tests" / "functions"


def http(method, url, body=None, headers=None, timeout=30):
    """(status, parsed JSON or text, headers) of one request; HTTP errors are answers too."""
    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, raw, hdrs = e.code, e.read(), e.headers
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw.decode(errors="replace"), hdrs


def deploy(url, name, lang, source, **params):
    """Deploy `source` (bytes, or a path) and return the answer; fails the test on an error."""
    if isinstance(source, (str, os.PathLike)) and os.path.exists(source):
        source = pathlib.Path(source).read_bytes()
    query = "&".join("%s=%s" % kv for kv in dict(name=name, lang=lang, **params).items())
    status, answer, _ = http("POST", "%s/deploy?%s" % (url, query), source)
    assert status == 201, answer
    return answer


def invoke(url, fn, data=None, raw=None):
    body = raw if raw is not None else json.dumps({"input": data}).encode() if data is not None else b""
    return http("POST", "%s/invoke?fn=%s" % (url, fn), body)


def started(why="", **kwargs):
    """A started Stack(**kwargs), or the test fails with what its processes printed (and
    `why`, extra context such as a worker host's log). The caller closes it."""
    try:
        return Stack(**kwargs).start()
    except StackError as exc:
        pytest.fail("%s%s" % (exc, "\n" + why() if callable(why) else why))


def wait_listening(port, proc, output, timeout=30):
    """Wait until something accepts connections on 127.0.0.1:port; fail the test with `output()`
    (what the process printed) if `proc` exits first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("nothing listens on port %d:\n%s" % (port, output()))
            time.sleep(0.05)


def stop_group(proc, wait=10):
    """TERM the process group a test started (start_new_session=True), wait, then KILL it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
