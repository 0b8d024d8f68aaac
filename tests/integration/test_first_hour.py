"""The first hour of a new user (issue 19): what deploying and calling say when something is
wrong. On one real stack: syntax errors refused at deploy, tracebacks that name the user's own
file, a failed async call that polls as failed, what a forgotten name or a bad path gets."""

import json
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest
from needs import need_toolchain
from support import deploy, http, invoke
from test_runtimes import make_function, run_jobs

from reference.functions import toolchains
from reference.wire.errors import CompileError

# Fails in a function of its own, called from line 8: a traceback must show both frames.
BOOM = (b"import sys\n"
        b"\n"
        b"def helper(x):\n"
        b"    return 1 / x\n"
        b"\n"
        b"data = sys.stdin.read()\n"
        b"print('before')\n"
        b"helper(0)\n")

# (lang, source, what the interpreter's message must say, the line it must name)
SYNTAX_ERRORS = [
    ("python", b"import sys\n\nprint(sys.stdin.read()\n", "'(' was never closed", 'File "function.py", line 3'),
    ("php", b"<?php\necho 'hi';\nfunction f() {}\nfunction f() {}\n", "Cannot redeclare f()", "code.php on line 4"),
    ("js", b"const a = 1;\nconst b = ;\n", "SyntaxError: Unexpected token", "code.js:2"),
]


def _name(prefix):
    return "%s%d" % (prefix, time.monotonic_ns() % 10**9)


# -- syntax errors, refused at deploy ------------------------------------------------------------

@pytest.mark.parametrize("lang,source,message,where", SYNTAX_ERRORS, ids=[c[0] for c in SYNTAX_ERRORS])
def test_a_syntax_error_is_refused_at_deploy_with_the_interpreters_message(shared_stack, lang, source, message,
                                                                          where):
    need_toolchain(lang)
    url, name = shared_stack.url, _name("bad" + lang)
    status, body, _ = http("POST", "%s/deploy?name=%s&lang=%s" % (url, name, lang), source)
    assert status == 422, body
    assert body["ok"] is False and body["kind"] == "compile_error"
    assert message in body["details"] and where in body["details"], body["details"]
    assert message in body["error"] or "Error" in body["error"], body["error"]
    # No sandbox path leaks into the message, and nothing was stored.
    assert "/build" not in body["details"] and "minifaas-check" not in body["details"]
    assert http("GET", "%s/function/%s" % (url, name))[0] == 404
    # The same name with the error fixed deploys.
    fixed = {"python": b"import sys\nprint(sys.stdin.read())\n", "php": b"<?php\necho 'hi';\n",
             "js": b"const a = 1;\nconsole.log(a);\n"}[lang]
    assert deploy(url, name, lang, fixed)["ok"] is True


@pytest.mark.parametrize("lang,source", [("python", b"import time\ntime.sleep(60)\nprint('ran')\n"),
                                         ("php", b"<?php\nsleep(60);\necho 'ran';\n"),
                                         ("js", b"const end = Date.now() + 60000;\nwhile (Date.now() < end) {}\n")],
                         ids=["python", "php", "js"])
def test_the_check_runs_none_of_the_code(shared_stack, lang, source):
    # Run, each of these would outlast the check's time limit and be refused.
    need_toolchain(lang)
    answer = deploy(shared_stack.url, _name("sleepy" + lang), lang, source)
    assert answer["ok"] is True


def test_a_source_that_exhausts_the_parser_is_refused_and_the_gateway_carries_on(shared_stack):
    url = shared_stack.url
    status, body, _ = http("POST", "%s/deploy?name=%s&lang=python" % (url, _name("nested")), b"x = " + b"(" * 200_000)
    assert status == 422 and "too many nested parentheses" in body["details"], body
    assert len(body["details"]) < 1000     # the offending line is quoted cut, not whole
    assert http("GET", url + "/health")[0] == 200


def test_check_syntax_refuses_what_python3_refuses_and_passes_the_rest():
    need_toolchain("python")
    assert toolchains.check_syntax("python", BOOM) is not None
    with pytest.raises(CompileError) as refused:
        toolchains.check_syntax("python", b"x = 1\x00\n")
    assert "null bytes" in refused.value.extra["details"]
    assert toolchains.check_syntax("html", b"<p>not checked") is None
    assert toolchains.check_syntax("c", b"int main(") is None     # compiled languages fail at compile


# -- tracebacks name the user's own file ---------------------------------------------------------

def _assert_users_traceback(stderr):
    text = stderr.decode()
    assert text.startswith('Traceback (most recent call last):\n  File "function.py", line 8, in <module>\n'
                           '    helper(0)\n'), text
    assert '  File "function.py", line 4, in helper\n    return 1 / x\n' in text, text
    assert text.rstrip().endswith("ZeroDivisionError: division by zero"), text
    # Neither the platform's frames nor the standard library's code.py.
    for word in ("warm_python", "run_as_main", "code.py", "import sys", "minifaas", "/call"):
        assert word not in text, (word, text)


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_traceback_names_function_py_with_its_lines_and_no_platform_frame(tmp_path, warm):
    need_toolchain("python")
    fn = make_function(tmp_path, "boom", "python", _write(tmp_path, BOOM))
    # Warm: the fork server's first call, then a forked call of the same server.
    results = run_jobs(*[dict(fn_dir=fn, lang="python") for _ in range(2)], warm=warm)
    for out in results:
        assert out["exit_code"] == 1 and out["stdout"] == b"before\n", out
        _assert_users_traceback(out["stderr"])


def test_a_failing_call_over_http_shows_the_users_traceback(shared_stack):
    url, name = shared_stack.url, _name("boom")
    deploy(url, name, "python", BOOM)
    for _ in range(2):
        status, body, _ = invoke(url, name, "x")
        assert status == 500 and body["exit_code"] == 1, body
        _assert_users_traceback(body["stderr"].encode())


def _write(tmp_path, source):
    path = tmp_path / "source.py"
    path.write_bytes(source)
    return path


# -- async calls: the top-level ok is the call's ------------------------------------------------

def _poll(url, call_id):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body, _ = http("GET", "%s/call/%s" % (url, call_id))
        assert status == 200 and body["call_id"] == call_id, body
        if body["state"] != "done":
            assert body["ok"] is True and body["state"] in ("queued", "running"), body
        else:
            return body
        time.sleep(0.02)
    raise AssertionError("call %s not done" % call_id)


def test_a_failed_async_call_polls_as_failed_and_a_good_one_as_ok(shared_stack):
    url = shared_stack.url
    bad, good = _name("exits3"), _name("fine")
    deploy(url, bad, "python", b"import sys\nprint('partial')\nsys.exit(3)\n")
    deploy(url, good, "python", b"print('fine')\n")
    status, started, _ = http("POST", url + "/invoke?fn=%s&async=1" % bad, b"")
    assert status == 202 and started["ok"] is True
    done = _poll(url, started["call_id"])
    assert done["ok"] is False and done["status"] == 500 and done["kind"] == "function_error", done
    assert "exited with code 3" in done["error"] and done["exit_code"] == 3 and done["output"] == "partial\n"
    assert list(done)[0] == "ok"
    status, started, _ = http("POST", url + "/invoke?fn=%s&async=1" % good, b"")
    done = _poll(url, started["call_id"])
    assert done["ok"] is True and done["status"] == 200 and done["output"] == "fine\n", done


# -- messages that say what happened -------------------------------------------------------------

def test_deploy_without_a_name_says_the_name_is_missing(shared_stack):
    status, body, _ = http("POST", shared_stack.url + "/deploy?lang=c", b"int main(void) { return 0; }\n")
    assert status == 400 and body["ok"] is False, body
    assert "name is missing" in body["error"] and "?name=N&lang=L" in body["error"], body
    assert "JSON" in body["error"]      # and the other way to give it
    # A JSON deploy body that is broken still says so.
    status, body, _ = http("POST", shared_stack.url + "/deploy", b'{"name": "x", "lang": ',
                           {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in body["error"], body


def _raw_request(port, request_line):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request_line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode("latin1").lower(), body


@pytest.mark.parametrize("path", [b"/\x80", b"/%80", b"/\xff\xfe", b"/run/a%80b", b"/functions%C3"])
def test_a_path_that_is_not_utf8_is_404_json_not_the_dashboard(shared_stack, path):
    port = urllib.parse.urlsplit(shared_stack.url).port
    status, head, body = _raw_request(port, b"GET " + path + b" HTTP/1.1")
    assert status in (400, 404), (status, body[:200])
    assert "content-type: application/json" in head, head
    answer = json.loads(body)
    assert answer["ok"] is False and answer["error"], answer
    assert b"<html" not in body.lower()
    # The dashboard itself is still there.
    status, _, body = _raw_request(port, b"GET / HTTP/1.1")
    assert status == 200 and b"<html" in body.lower()


def test_compile_ms_is_the_whole_compile_with_its_parts(shared_stack):
    need_toolchain("c")
    from support import EXAMPLES

    answer = deploy(shared_stack.url, _name("hello"), "c", EXAMPLES / "hello.c")
    assert answer["precompile_ms"] > 0 and answer["compiler_ms"] > 0, answer
    # The whole is what the deploy waited for: at least both parts (rounded to 0.1 ms each).
    assert answer["compile_ms"] >= answer["compiler_ms"] + answer["precompile_ms"] - 0.2, answer
    status, meta, _ = http("GET", "%s/function/%s" % (shared_stack.url, answer["name"]))
    assert status == 200 and meta["compile_ms"] == answer["compile_ms"]


# Checks one after another in a gevent-patched process, as the gateway runs them: each must come
# back with its answer (a wait that missed the end came back as "ran longer than 5 s").
GEVENT_CHECKS = r"""
from gevent import monkey
monkey.patch_all()
import sys
from reference.functions.toolchains import check_syntax
from reference.wire.errors import CompileError
refused = []
for i in range(int(sys.argv[1])):
    try:
        check_syntax("python", b"print(%d)\n" % i, timeout_s=5)
    except CompileError as exc:
        refused.append(exc.extra.get("details"))
print(len(refused), refused[:1])
"""


def test_checks_in_the_gevent_gateway_all_come_back_with_their_answer():
    need_toolchain("python")
    from support import ROOT

    out = subprocess.run([sys.executable, "-c", GEVENT_CHECKS, "40"], cwd=ROOT, capture_output=True, timeout=400,
                         start_new_session=True)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().split()[0] == "0", out.stdout.decode()
