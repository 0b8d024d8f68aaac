"""Fixtures shared by the tests: real stacks on private sockets and free ports, and an HTTP helper."""

import json
import os
import pathlib
import urllib.error
import urllib.request

import pytest

from harness.stack import Stack, StackError

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


@pytest.fixture
def start_stack():
    """Factory: start_stack(strategy="RR", workers=2, ...) -> a started Stack, stopped at teardown."""
    stacks = []

    def start(**kwargs):
        kwargs.setdefault("workers", 2)
        stack = Stack(**kwargs)
        stacks.append(stack)
        try:
            return stack.start()
        except StackError as exc:
            pytest.fail(str(exc))

    yield start
    for stack in stacks:
        stack.close()


@pytest.fixture(scope="module")
def shared_stack():
    """One RR stack with 2 workers for a whole test module (tests that do not disturb it)."""
    stack = Stack(strategy="RR", workers=2)
    try:
        stack.start()
    except StackError as exc:
        stack.close()
        pytest.fail(str(exc))
    yield stack
    stack.close()
